"""Tests for the estimator's statistics: the Clopper–Pearson lower bound on ε, the cap,
the permutation test with common random numbers, Holm's correction and the warning when
the permutations are too few."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sisa.compare import cli
from sisa.compare.head2head import run
from sisa.compare.options import CompareOptions
from sisa.compare.runs.gap import ScenarioRuns, estimate
from sisa.compare.stats.bounds import clopper_pearson_upper, epsilon_lower_bound
from sisa.compare.stats.epsilon import DELTA, max_epsilon, per_example_epsilon
from sisa.compare.stats.intervals import epsilon_interval
from sisa.compare.stats.permutation import holm, min_p_warning, permutation_test
from sisa.errors import InputError
from sisa.tasks.settings import ExecutionSettings


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_lower_bound_reads_zero_on_null_data_at_256_models(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(256, 45)), rng.normal(size=(256, 45))
    lb = epsilon_lower_bound(a, b)
    assert lb["mean"] <= 0.1 and lb["level"] == 0.95 and lb["n_eval"] == [128, 128]
    # ... where the challenge's ε̂ reads well above 1: it is an estimate, not a bound.
    assert per_example_epsilon(a, b).mean() > 1.0


def test_lower_bound_is_simultaneously_valid_on_null_data():
    # True ε = 0 on every row: any positive row is a miss of the 95% simultaneous bound.
    misses = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        misses += epsilon_lower_bound(rng.normal(size=(64, 10)),
                                      rng.normal(size=(64, 10)))["max"] > 0
    assert misses <= 12  # Binomial(100, 0.05) exceeds 12 with probability < 0.001


def test_lower_bound_covers_a_known_epsilon():
    # Statistics 0/1 with P(1) = 0.2 (unlearned) vs 0.8 (reference): the exact ε at δ is
    # log((0.8 - δ) / 0.2) (the set {1}; no rule does better on two points).
    true_eps = np.log((0.8 - DELTA) / 0.2)
    misses, values = 0, []
    for seed in range(100):
        rng = np.random.default_rng(100 + seed)
        lb = epsilon_lower_bound((rng.random((256, 4)) < 0.2).astype(float),
                                 (rng.random((256, 4)) < 0.8).astype(float), eps_max=50.0)
        misses += lb["max"] > true_eps
        values.append(lb["mean"])
    assert misses <= 12  # every row at once at 95%: Binomial(100, 0.05) > 12 is < 0.001
    assert 0.5 < np.mean(values) < true_eps  # and it is not vacuous


def test_lower_bound_is_positive_and_below_eps_hat_on_separated_data():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(256, 30)), rng.normal(3.0, 1.0, size=(256, 30))
    lb = epsilon_lower_bound(a, b)
    eps = per_example_epsilon(a, b)
    assert lb["mean"] > 1.0 and lb["max"] <= max_epsilon(256)
    assert (lb["per_row"] > 0).all() and (lb["per_row"] <= eps).all()
    assert lb["mean"] <= eps.mean()
    # A difference in spread only: the window rule (|s - median|) finds it.
    c = rng.normal(0.0, 4.0, size=(256, 30))
    assert epsilon_lower_bound(a, c)["mean"] > 0.5


def test_clopper_pearson_upper_matches_its_closed_forms():
    n, alpha = 50, 0.01
    assert clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n))
    assert clopper_pearson_upper(n, n, alpha) == 1.0
    # k = n - 1: the bound u solves 1 - u^n = alpha.
    assert clopper_pearson_upper(n - 1, n, alpha) == pytest.approx((1 - alpha) ** (1 / n))


def test_interval_ends_are_clipped_to_the_cap_and_ties_reported():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(64, 30))
    b = rng.normal(size=(64, 30)) + np.where(np.arange(30) < 27, 8.0, 1.5)
    ci = epsilon_interval(a, b, n_boot=40, random_state=0)
    cap = max_epsilon(64)
    eps = per_example_epsilon(a, b)
    assert ci["cap"] == cap and ci["lo"] <= ci["eps"] <= ci["hi"] <= cap
    assert ci["rows_at_cap"] == int((eps == cap).sum()) == 27
    assert ci["share_at_cap"] == pytest.approx(0.9) and ci["at_cap"]
    assert ci["row_max"] == cap and ci["row_q95"] == np.quantile(eps, 0.95)
    low = epsilon_interval(a, b - np.where(np.arange(30) < 27, 8.0, 1.5), n_boot=20)
    assert not low["at_cap"] and low["rows_at_cap"] == 0


def _runs(arrays: dict[str, np.ndarray], ref: np.ndarray, ref2: np.ndarray) -> ScenarioRuns:
    n = ref.shape[0]
    methods = tuple(arrays)
    return ScenarioRuns(None, methods, dict(arrays), {"monolithic": ref},
                        {"monolithic": ref2}, {m: np.zeros((n, 3)) for m in methods},
                        {m: np.zeros(n) for m in methods}, {},
                        {m: "monolithic" for m in methods})


def test_identical_statistics_get_identical_adjusted_p():
    rng = np.random.default_rng(11)
    n, rows = 64, 12
    ref, ref2 = rng.normal(size=(n, rows)), rng.normal(size=(n, rows))
    same = rng.normal(size=(n, rows)) + 0.15  # a p-value between the extremes
    # The PRU's statistics equal Newton's up to ~1e-9 (leave-k-out predictions on U).
    runs = {"subgroup": _runs({"newton": same, "pru": same + 1e-9 * rng.normal(size=same.shape),
                               "original": rng.normal(size=(n, rows)) + 1.0}, ref, ref2),
            "random": _runs({"newton": rng.normal(size=(n, rows))}, ref, ref2)}
    est = estimate(runs, n_boot=2, n_perm=60, settings=ExecutionSettings(backend="local"))
    newton, pru = est["subgroup"]["methods"]["newton"], est["subgroup"]["methods"]["pru"]
    assert 1 / 61 < newton["p_value"] < 1
    assert newton["p_value"] == pru["p_value"]
    assert abs(newton["p_holm"] - pru["p_holm"]) <= 0.01
    # Holm over the report's 4 tests: each adjusted p is at least the raw p and at most 4x.
    for s in est.values():
        for ci in s["methods"].values():
            assert ci["n_tests"] == 4 and ci["n_perm"] == 60
            assert ci["p_value"] <= ci["p_holm"] <= min(1.0, 4 * ci["p_value"]) + 1e-12
            assert 0 <= ci["eps_lower"] <= ci["eps_lower_max"]
    assert est["subgroup"]["floors"]["monolithic"]["eps_lower"] == 0.0


def test_permutations_share_their_draws_and_detect_a_shift():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(128, 20)), rng.normal(size=(128, 20))
    assert permutation_test(a, b + 1.0, n_perm=99)["p_value"] == 0.01
    ps = [permutation_test(a, b, n_perm=99, random_state=s)["p_value"] for s in range(3)]
    assert min(ps) > 0.05
    # Same seed, same data: the same p, whatever else ran before.
    assert permutation_test(a, b, n_perm=99, random_state=1)["p_value"] == ps[1]
    with pytest.raises(InputError, match="n_perm"):
        permutation_test(a, b, n_perm=0)


def _holm_by_hand(p: list[float]) -> list[float]:
    """Holm (1979): the k-th smallest of m p-values, adjusted, is
    min(1, max_{j <= k} (m - j + 1) p_(j)); written out with plain loops."""
    m = len(p)
    ranked = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for k, i in enumerate(ranked, start=1):
        running = max(running, (m - k + 1) * p[i])
        out[i] = min(1.0, running)
    return out


def test_holm_matches_the_hand_formula():
    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.3]
    assert holm(p) == pytest.approx(_holm_by_hand(p))
    # Written out: 0.005*6, 0.01*5, 0.03*4, max(0.04*3, 0.12), max(0.3*2, .), 0.5*1 -> max.
    assert holm(p) == pytest.approx([0.05, 0.12, 0.12, 0.03, 0.6, 0.6])
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 0.2, size=47).tolist()
    assert holm(q) == pytest.approx(_holm_by_hand(q))
    with pytest.raises(InputError, match="p_values"):
        holm([0.1, 1.5])


def test_warning_when_too_few_permutations_can_reject():
    warn = min_p_warning(10, 47, 0.05)
    assert warn is not None and "1/11" in warn and "--permutations 940" in warn
    assert min_p_warning(940, 47, 0.05) is None  # 47 / 941 < 0.05
    assert min_p_warning(939, 47, 0.05) is not None  # 47 / 940 = 0.05: never below
    assert min_p_warning(10, 0, 0.05) is None


def test_cli_warns_and_reports_too_few_permutations(tmp_path, capsys):
    rc = cli.main(["compare", "--models", "5", "--eps-rows", "700", "--cost-rows", "700",
                   "--forget-sets", "random", "--sisa-forget-sets", "random",
                   "--bootstrap", "2", "--permutations", "10", "--local", "--quiet",
                   "--out", str(tmp_path)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "sisa compare: warning: with 10 permutations" in err
    d = json.loads((tmp_path / "report.json").read_text())
    st = d["statistics"]
    assert st["n_perm"] == 10 and st["n_tests"] == len(d["scenarios"]["random"]["methods"])
    assert st["warnings"] and st["smallest_p_holm"] == pytest.approx(
        min(1.0, st["n_tests"] / 11))
    for r in d["scenarios"]["random"]["methods"].values():
        assert r["verdict"] == "at floor" and r["eps"]["p_holm"] >= r["eps"]["p_value"]
        assert r["eps"]["hi"] <= d["protocol"]["eps_max"]
    md = (tmp_path / "report.md").read_text()
    assert "**Warning:** with 10 permutations" in md
    assert "| ε lower bound (mean / max row) |" in md and "| p Holm |" in md


def test_bad_permutation_counts_fail_before_any_training(tmp_path):
    with pytest.raises(InputError, match="n_perm must be a positive integer"):
        run(CompareOptions(n_models=5, n_perm=0), out=tmp_path,
            settings=ExecutionSettings(backend="local"))
    assert not any(tmp_path.iterdir())
    assert _default_permutations() >= 1000


def _default_permutations() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="sisa")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["compare"]).permutations


def test_lower_bound_rejects_bad_input_in_one_line():
    ok = np.zeros((8, 3))
    for args, kwargs, match in [((np.zeros((3, 3)), ok), {}, "at least 4 models"),
                                ((ok, np.zeros((8, 2))), {}, "disagree on rows"),
                                ((ok, ok), {"alpha": 1.5}, "alpha must be in"),
                                ((ok, np.full((8, 3), np.nan)), {}, "NaN or inf")]:
        with pytest.raises(InputError, match=match) as info:
            epsilon_lower_bound(*args, **kwargs)
        assert "\n" not in str(info.value)
    # Identical constant samples: nothing to show.
    assert epsilon_lower_bound(ok, ok)["max"] == 0.0
