"""Tests for sisa.compare.stats.attacks (per-example LiRA, the white-box gradient statistic) and
their place in the report (sisa.compare.runs.fractions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sisa.compare.data import adult_features, make_scenario
from sisa.compare.head2head import run
from sisa.compare.methods.linear_family import LinearFamily
from sisa.compare.options import CompareOptions
from sisa.compare.stats.attacks import lira, tpr_at_fpr, whitebox
from sisa.errors import InputError
from sisa.tasks.settings import ExecutionSettings


def test_tpr_at_fpr_counts_and_resolution():
    neg = np.arange(100.0)
    pos = np.array([97.5, 98.5, 99.5, 200.0])
    r = tpr_at_fpr(pos, neg, 0.01)  # one negative (99) may sit above the threshold 98
    assert r["resolvable"] and r["n_neg_needed"] == 100 and r["tpr"] == 0.75
    assert tpr_at_fpr(pos, neg, 0.02)["tpr"] == 1.0  # threshold 97: 97.5 counts
    low = tpr_at_fpr(pos, neg, 0.001)  # 100 negatives cannot resolve 0.1 %
    assert not low["resolvable"] and low["tpr"] is None and low["n_neg_needed"] == 1000


def test_lira_separates_clearly_different_statistics():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(256, 30))
    unl = rng.normal(size=(256, 30)) + 3.0  # 3 sd per row
    res = lira(unl, ref)
    assert res["models"]["tpr_at"]["0.01"]["tpr"] >= 0.99
    # One pair at a 3 sd shift: TPR at 1 % FPR ≈ Φ(3 - 2.33) = 0.75.
    assert 0.6 <= res["pairs"]["tpr_at"]["0.01"]["tpr"] <= 0.9
    assert res["per_row"]["resolvable"] and res["per_row"]["mean"] >= 0.5
    assert res["models"]["auc"] > 0.999
    # 256 models per side cannot resolve 0.1 % per model; the pairs can.
    assert res["models"]["tpr_at"]["0.001"]["tpr"] is None
    assert res["pairs"]["tpr_at"]["0.001"]["resolvable"]


def test_lira_reads_the_fpr_on_null_statistics():
    rng = np.random.default_rng(1)
    tprs_pairs, tprs_models = [], []
    for _ in range(5):
        a, b = rng.normal(size=(256, 30)), rng.normal(size=(256, 30))
        res = lira(a, b, seed=int(rng.integers(1000)))
        tprs_pairs.append(res["pairs"]["tpr_at"]["0.01"]["tpr"])
        tprs_models.append(res["models"]["tpr_at"]["0.01"]["tpr"])
        assert 0.4 <= res["models"]["auc"] <= 0.6
    assert 0.004 <= np.mean(tprs_pairs) <= 0.025
    assert np.mean(tprs_models) <= 0.04


def test_lira_needs_models():
    with pytest.raises(InputError, match="at least 4 models"):
        lira(np.zeros((3, 2)), np.ones((8, 2)))


@pytest.fixture(scope="module")
def mislabeled():
    Xtr, ytr, Xte, yte, names, _ = adult_features(1200, seed=0)
    return make_scenario("mislabeled", Xtr, ytr, Xte, yte, names, seed=0)


def test_whitebox_separates_unnoised_newton_from_retrain(mislabeled):
    fam, sc, n = LinearFamily(), mislabeled, 100
    warm = fam.warm_start(sc)
    with threadpool_limits(limits=1):  # as the ε runs: many small fits, one thread each
        newton = [fam.whitebox(fam.unlearn(sc, s, ("newton",), warm)["models"]["newton"],
                               sc, s) for s in range(n)]
        retrain = [fam.whitebox(fam.reference("monolithic", sc, s, warm), sc, s)
                   for s in range(n, 2 * n)]
    # A converged fit with an unpenalised intercept has Σ_W(p - y) = 0; the Newton step
    # leaves its residual on that coordinate.
    assert max(np.abs(retrain)) < 1e-4 < min(np.abs(newton))
    res = whitebox(newton, retrain)
    assert res["auc"] == 1.0 and res["tpr_at"]["0.01"]["tpr"] == 1.0
    assert res["tpr_at"]["0.001"]["tpr"] is None  # 100 models cannot resolve 0.1 %
    assert res["eps"] == pytest.approx(5.0)  # the cap at N = 100: perfect separation


def test_report_carries_attacks_fractions_and_certificate(tmp_path):
    rep = run(CompareOptions(n_models=8, eps_rows=700, cost_rows=700, scenarios=("mislabeled",),
                             sisa_scenarios=(), repeats=2, n_boot=3, n_perm=3),
              settings=ExecutionSettings(backend="local"), out=tmp_path, figures=False)
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["config"]["fractions"] == [0.5, 0.99] and d["config"]["fraction_models"] == 8
    methods = d["scenarios"]["mislabeled"]["methods"]
    for m, r in methods.items():
        assert set(r["attacks"]) == {"lira", "whitebox"}, m  # every method here is a θ
        assert r["eps_row_q95"] <= r["eps_row_max"]
        assert not r["attacks"]["lira"]["models"]["tpr_at"]["0.01"]["resolvable"]  # N = 8
        want = {"0.5", "0.9", "0.99"} if m in d["config"]["fraction_methods"] else {"0.9"}
        assert (m in d["config"]["fraction_methods"]) == (m != "sisa"), m
        assert set(r["by_fraction"]) == want, m
    cert = methods["newton_noisy"]["certified_epsilon"]
    assert 0 < cert["median"] <= cert["max"] < np.inf
    assert set(d["fractions"]) == {"0.5", "0.99"} and rep.timings["fractions_s"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "LiRA TPR@1% (models)" in md and "n/r (N=8 < 100)" in md
    assert "ε̂, verdict @ 0.99" in md
    assert "(λ = 1000); its ε̂ " in md and cert["lam"] == 1000 and cert["noise_std"] == 30


def test_cli_fraction_options(capsys):
    import argparse

    from sisa.compare import cli

    parser = argparse.ArgumentParser(prog="sisa")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["compare", "--fractions", "0.5, 0.99", "--subsample", "0.8",
                              "--fraction-models", "64"])
    assert args.fractions == (0.5, 0.99) and args.subsample == 0.8
    assert args.fraction_models == 64
    assert parser.parse_args(["compare", "--fractions", "none"]).fractions == ()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["compare", "--fractions", "0.5,half"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--fractions: expected comma-separated numbers" in err
