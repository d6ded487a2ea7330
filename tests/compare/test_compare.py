"""Tests for sisa.compare: features, forget sets, the SISA statistic, one seed, the report."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from scipy.special import expit

from sisa.aggregate import mean_proba
from sisa.baselines.linear import L2LogisticRegression
from sisa.compare import cli
from sisa.compare.data import SCENARIOS, adult_features, make_scenario
from sisa.compare.head2head import run
from sisa.compare.methods.exact import ensemble_logit
from sisa.compare.methods.linear_family import METHODS, LinearFamily
from sisa.compare.options import CompareOptions
from sisa.compare.report.report import verdict
from sisa.compare.runs.gap import seed_run
from sisa.errors import InputError
from sisa.tasks.settings import ExecutionSettings


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sisa")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["compare", *argv])


@pytest.fixture(scope="module")
def adult():
    return adult_features(1200, seed=0)


def test_features_are_standardised_on_test_rows_only(adult):
    Xtr, _, Xte, _, _, info = adult
    assert len(Xte) == 300 and len(Xtr) == 900 and Xtr.shape[1] == info["n_features"]
    live = Xte.std(axis=0) > 0
    np.testing.assert_allclose(Xte.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(Xte.std(axis=0)[live], 1, atol=1e-9)
    assert np.abs(Xtr.mean(axis=0)).max() > 1e-3  # training rows did not set the scaling


def test_forget_sets(adult):
    Xtr, ytr, Xte, yte, names, _ = adult
    sc = {s: make_scenario(s, Xtr, ytr, Xte, yte, names, seed=1) for s in SCENARIOS}
    assert sc["random"].forget.sum() == 18 and np.array_equal(sc["random"].y, ytr)
    flipped = sc["mislabeled"].u_idx
    np.testing.assert_array_equal(sc["mislabeled"].y[flipped], 1 - ytr[flipped])
    assert (sc["mislabeled"].y[~sc["mislabeled"].forget] == ytr[~sc["mislabeled"].forget]).all()
    col = names.index("native-country=Mexico")
    sub = sc["subgroup"]
    assert (Xtr[sub.u_idx, col] > Xtr[:, col].min()).all()
    assert (Xtr[sub.w_idx, col] == Xtr[:, col].min()).all()
    dup = sc["duplicated"]
    assert len(dup.y) == len(ytr) + 4 * len(dup.stat_rows) and dup.forget.sum() == 5 * 9
    for r in dup.stat_rows:  # every copy of a duplicated row is in U
        same = (dup.X[r] == dup.X).all(axis=1)
        assert same.sum() == 5 and dup.forget[same].all()
    inj = sc["injected"]
    assert inj.injected == Xtr.shape[1] and (inj.y[inj.u_idx] == 1).all()
    assert (inj.X[inj.u_idx, -1] == 1).all() and (inj.X[inj.w_idx, -1] == 0).all()
    assert (inj.X_test[:, -1] == 0).all()
    with pytest.raises(InputError, match="scenario must be one of"):
        make_scenario("outliers", Xtr, ytr, Xte, yte, names)


def test_ensemble_logit_is_the_vote_log_odds_and_never_clamped():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] > 0).astype(int)
    models = [L2LogisticRegression(lam=1.0).fit(X[i::3], y[i::3]) for i in range(3)]
    p = mean_proba(models, X, np.array([0, 1]))[:, 1]
    z = ensemble_logit(models, X, y)
    ok = (p > 1e-6) & (p < 1 - 1e-6)
    np.testing.assert_allclose(z[ok], np.where(y == 1, 1, -1)[ok] * np.log(p / (1 - p))[ok],
                               rtol=1e-6)
    far = np.array([[40.0, 0.0, 0.0]])  # p rounds to 1: 1 - p would clamp the log-odds
    assert expit(models[0].decision_function(far))[0] == 1.0
    assert np.isfinite(ensemble_logit(models, far, np.array([1]))).all()
    assert ensemble_logit(models, far, np.array([1]))[0] > 40


def test_one_seed_every_method_and_sisa_byte_identity(adult):
    Xtr, ytr, Xte, yte, names, _ = adult
    sc = make_scenario("injected", Xtr, ytr, Xte, yte, names)
    out = seed_run(sc, LinearFamily(), 0, 8, check_bytes=True)
    assert set(out["stats"]) == set(METHODS)
    assert set(out["ref"]) == set(out["ref2"]) == {"monolithic", "noisy", "sisa"}
    assert out["extra"]["sisa_byte_identical"] is True
    assert np.isfinite(out["extra"]["certified_epsilon"])
    w = out["injected_weight"]
    assert w["retrain"] == 0 and w["sisa"] == 0 and abs(w["newton"]) < 1e-8
    assert w["original"] > 0.1 and w["finetune"] > 0.1
    # The references are independent of the unlearned seed: retrain(0) differs from ref(8).
    assert not np.allclose(out["stats"]["retrain"], out["ref"]["monolithic"])
    assert all(0.5 < a[2] <= 1 for a in out["acc"].values())  # test accuracies


def test_verdict_rules():
    floor = {"eps": 1.0, "lo": 0.9, "hi": 1.1}
    assert verdict({"eps": 2.0, "lo": 1.8, "hi": 2.2, "p_value": 0.02}, floor) == "above floor"
    assert verdict({"eps": 1.1, "lo": 1.0, "hi": 1.3, "p_value": 0.02}, floor) == \
        "distinguishable"
    assert verdict({"eps": 2.0, "lo": 1.8, "hi": 2.2, "p_value": 0.3}, floor) == "at floor"


def test_run_end_to_end_writes_a_consistent_report(tmp_path):
    rep = run(CompareOptions(n_models=5, eps_rows=700, cost_rows=700,
                             scenarios=("random", "duplicated"), sisa_scenarios=("duplicated",),
                             repeats=2, n_boot=3, n_perm=3),
              settings=ExecutionSettings(backend="local"), out=tmp_path, figures=False)
    d = json.loads((tmp_path / "report.json").read_text())
    assert set(d["scenarios"]) == {"random", "duplicated"}
    assert "sisa" not in d["scenarios"]["random"]["methods"]
    assert d["scenarios"]["duplicated"]["methods"]["sisa"]["reference"] == "sisa"
    assert set(d["scenarios"]["duplicated"]["floors"]) == {"monolithic", "noisy", "sisa"}
    for s in d["scenarios"].values():
        for r in s["methods"].values():
            assert r["eps"]["lo"] <= r["eps"]["eps"] <= r["eps"]["hi"] + 1e-9
            assert 0 < r["eps"]["p_value"] <= 1
            assert r["acc"]["test"]["n"] == 5
    assert d["sisa_check"]["seeds_checked"] == 2 and rep.sisa_ok
    assert set(d["costs"]["requests"]) == {"2%", "1 row"}
    md = (tmp_path / "report.md").read_text()
    assert "Deviations from the challenge" in md and "byte-identity" in md
    assert md.count("| original |") == 5  # two forget sets (ε̂, attacks) and the cost table


def test_cli_parses_lists_and_errors_are_one_line(capsys, tmp_path):
    args = _parse(["--forget-sets", "random,mislabeled", "--models", "8", "--local"])
    assert args.forget_sets == ("random", "mislabeled") and args.models == 8 and args.local
    # N and the forget sets default to the family's (linear: 256, all five forget sets).
    assert _parse([]).models is None and _parse([]).family == "linear"
    assert LinearFamily.defaults["n_models"] == 256
    assert _parse(["--family", "torch"]).family == "torch"
    args = _parse(["--forget-sets", "outliers", "--out", str(tmp_path), "--quiet", "--local"])
    assert args.func(args) == 2  # bad input
    err = capsys.readouterr().err.strip()
    assert err.startswith("sisa compare: error:") and "outliers" in err and "\n" not in err


def _compare_imports() -> dict[str, set[str]]:
    """Module -> the sisa.compare modules it imports anywhere (function bodies and
    TYPE_CHECKING blocks included), both as dotted names below ``sisa.compare``
    (``stats.epsilon``); importing a package (``sisa.compare``, ``sisa.compare.runs``)
    is an edge to that package's ``__init__`` (``__init__``, ``runs.__init__``)."""
    import ast
    from pathlib import Path

    import sisa.compare

    root = Path(sisa.compare.__file__).parent
    names = {".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.py")}

    def resolve(dotted: str) -> str | None:
        rel = dotted.removeprefix("sisa.compare").lstrip(".")
        if dotted.split(".")[:2] != ["sisa", "compare"]:
            return None
        if rel in names:
            return rel
        return f"{rel}.__init__" if rel else "__init__"

    def targets(node, here: list[str]) -> list[str]:
        if isinstance(node, ast.Import):
            return [t for n in node.names if (t := resolve(n.name))]
        if not isinstance(node, ast.ImportFrom):
            return []
        base = ".".join(here[:len(here) - node.level + 1]) if node.level else ""
        module = ".".join(x for x in (base, node.module or "") if x)
        out = []
        for a in node.names:
            full = resolve(f"{module}.{a.name}")
            out.append(full if full in names else resolve(module))
        return [t for t in out if t]

    graph = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.relative_to(root).with_suffix("").parts)
        here = ["sisa", "compare", *p.relative_to(root).parent.parts]
        tree = ast.parse(p.read_text(encoding="utf-8"))
        graph[name] = {t for node in ast.walk(tree) for t in targets(node, here)} - {name}
    return graph


def test_compare_modules_keep_their_layering():
    """Cycles are tests/test_architecture.py's job (every package); here, the order the
    comparison is built on."""
    graph = _compare_imports()
    assert {"stats.epsilon", "runs.gap", "report.report", "report.plots", "head2head"} <= set(
        graph)
    assert "__init__" not in set().union(*(graph[m] for m in graph if m != "__init__"))
    # The layering the package is built on: figures and text know nothing of the runs.
    assert graph["report.plots"] == set() and graph["report.markdown"] == set()
    assert not {"head2head", "runs.gap", "report.report"} & graph["runs.costs"]
