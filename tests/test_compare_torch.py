"""The torch family of sisa compare: a network's ε gap (retrain, SISA, fine-tune, NegGrad+)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from sisa.compare.data import adult_features, make_scenario
from sisa.compare.head2head import run
from sisa.compare.methods.exact import checkpoint_hashes
from sisa.compare.methods.families import make_family
from sisa.compare.methods.torch_family import METHODS, TorchFamily, descend
from sisa.compare.runs.gap import seed_run
from sisa.compare.stats.epsilon import per_example_epsilon
from sisa.errors import InputError
from sisa.tasks.settings import ExecutionSettings

# Small and quick: a few epochs of a narrow MLP, two shards.
FAM = TorchFamily(hidden=8, epochs=3, n_shards=2)


@pytest.fixture(scope="module")
def mislabeled():
    Xtr, ytr, Xte, yte, names, _ = adult_features(400, seed=0)
    return make_scenario("mislabeled", Xtr, ytr, Xte, yte, names, fraction=0.03)


def test_sisa_forget_is_the_fit_without_u_for_the_same_seed(mislabeled):
    sc = mislabeled
    rows, Xs, ys = sc.stat_rows, sc.X[sc.stat_rows], sc.y[sc.stat_rows]
    forgot, refit = [], []
    for seed in range(3):
        out = FAM.unlearn(sc, seed, ("sisa",), check_bytes=seed == 0)
        assert out["extra"].get("sisa_byte_identical", seed != 0) is True
        model = out["models"]["sisa"]
        ref = FAM.reference("sisa", sc, seed)
        assert checkpoint_hashes(model) == checkpoint_hashes(ref)
        forgot.append(FAM.statistic(model, Xs, ys))
        refit.append(FAM.statistic(ref, Xs, ys))
        assert out["extra"]["sisa_rows_retrained"] > 0
    np.testing.assert_array_equal(np.array(forgot), np.array(refit))
    # Against retraining without U with the same seeds, SISA's ε̂ is exactly 0 on every row.
    assert per_example_epsilon(np.array(forgot), np.array(refit)).tolist() == [0.0] * len(rows)


def test_one_seed_of_every_method(mislabeled):
    sc = mislabeled
    out = seed_run(sc, FAM, 0, 4, check_bytes=True)
    assert set(out["stats"]) == set(METHODS) and set(out["ref"]) == {"monolithic", "sisa"}
    assert out["extra"]["sisa_byte_identical"] is True
    assert out["injected_weight"] == {}
    stats = out["stats"]
    assert all(np.isfinite(s).all() for s in stats.values())
    # The approximate methods move the original, and NegGrad+'s ascent pushes the forgotten
    # rows' (flipped) labels further down than plain fine-tuning with the same budget.
    assert not np.array_equal(stats["finetune"], stats["original"])
    assert stats["neggrad"].mean() < stats["finetune"].mean()
    assert all(0.5 < a[2] <= 1 for a in out["acc"].values())  # test accuracies
    # The references are independent of the unlearned seed.
    assert not np.array_equal(stats["retrain"], out["ref"]["monolithic"])


def test_descend_leaves_the_original_alone_and_is_seeded(mislabeled):
    sc = mislabeled
    w, u = sc.w_idx, sc.u_idx
    orig = FAM.network(0).fit(sc.X, sc.y)
    before = orig.decision_function(sc.X[:5])
    a = descend(orig, sc.X[w], sc.y[w], (sc.X[u], sc.y[u]), alpha=0.95, seed=3)
    b = descend(orig, sc.X[w], sc.y[w], (sc.X[u], sc.y[u]), alpha=0.95, seed=3)
    np.testing.assert_array_equal(orig.decision_function(sc.X[:5]), before)
    np.testing.assert_array_equal(a.decision_function(sc.X), b.decision_function(sc.X))
    with pytest.raises(InputError, match="alpha"):
        descend(orig, sc.X[w], sc.y[w], (sc.X[u], sc.y[u]), alpha=1.0)


def test_torch_run_end_to_end_writes_the_family_report(tmp_path):
    rep = run(family=FAM, n_models=4, eps_rows=400, scenarios=("random", "mislabeled"),
              sisa_scenarios=("mislabeled",), n_boot=3, n_perm=3,
              settings=ExecutionSettings(backend="local"), out=tmp_path, figures=False)
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["config"]["family"] == "torch" and d["family"]["name"] == "torch"
    assert d["costs"] is None and rep.sisa_ok and d["sisa_check"]["seeds_checked"] == 2
    assert list(d["scenarios"]["mislabeled"]["methods"]) == list(METHODS)
    assert "sisa" not in d["scenarios"]["random"]["methods"]
    assert set(d["scenarios"]["mislabeled"]["floors"]) == {"monolithic", "sisa"}
    for s in d["scenarios"].values():
        for m, r in s["methods"].items():
            e = r["eps"]
            assert np.isfinite([e["eps"], e["lo"], e["hi"]]).all(), m
            assert e["lo"] <= e["eps"] <= e["hi"] + 1e-9 and 0 < e["p_value"] <= 1
            assert r["reference"] == ("sisa" if m == "sisa" else "monolithic")
    md = (tmp_path / "report.md").read_text()
    assert "an MLP, one hidden layer of 8 ReLU units" in md and "| neggrad |" in md
    assert "No full-data cost run for the torch family" in md and "Certified Newton" not in md


def test_family_settings_are_checked():
    with pytest.raises(InputError, match="no setting noise_std"):
        make_family("torch", noise_std=1.0)
    with pytest.raises(InputError, match="family must be one of"):
        make_family("forest")
    with pytest.raises(InputError, match="subsample"):
        TorchFamily(subsample=0.0)
    with pytest.raises(InputError, match="to the family object"):
        run(family=FAM, n_shards=3, settings=ExecutionSettings(backend="local"))
