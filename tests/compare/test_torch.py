"""The torch family of sisa compare: a CNN's ε gap on Fashion-MNIST (retrain, SISA, fine-tune,
NegGrad+), its margin statistic and its data."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from sisa.compare.cli import main as compare_main
from sisa.compare.data import make_scenario
from sisa.compare.head2head import run
from sisa.compare.images import cnn_layers, fashion_features, margin
from sisa.compare.methods.exact import checkpoint_hashes
from sisa.compare.methods.families import make_family
from sisa.compare.methods.torch_family import METHODS, TorchFamily, descend
from sisa.compare.options import CompareOptions
from sisa.compare.runs.gap import seed_run
from sisa.compare.stats.epsilon import per_example_epsilon
from sisa.deep import TorchClassifier
from sisa.errors import InputError
from sisa.tasks.settings import ExecutionSettings

# Small and quick: the family's CNN, narrower, a few epochs, two shards, 400 rows.
FAM = TorchFamily(channels=(4, 8), epochs=3, n_shards=2)


@pytest.fixture(scope="module")
def fmnist():
    return fashion_features(400, seed=0)


@pytest.fixture(scope="module")
def mislabeled(fmnist):
    Xtr, ytr, Xte, yte, names, _ = fmnist
    return make_scenario("mislabeled", Xtr, ytr, Xte, yte, names, fraction=0.08)


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
    # Test accuracies, ten classes (chance 0.1): SISA's shards see 1/2 of the 368 rows each.
    assert all(0.25 < a[2] <= 1 for a in out["acc"].values()) and out["acc"]["retrain"][2] > 0.5
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
    # The torch family's own dataset (Fashion-MNIST) is the default.
    rep = run(CompareOptions(family=FAM, n_models=4, eps_rows=400, n_boot=3, n_perm=3),
              settings=ExecutionSettings(backend="local"), out=tmp_path, figures=False)
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["config"]["family"] == "torch" and d["family"]["name"] == "torch"
    assert d["config"]["dataset"] == "fashion-mnist" and d["config"]["fraction"] == 0.08
    assert d["data"]["rows"] == 400 and d["data"]["n_features"] == 784
    assert d["costs"] is None and rep.sisa_ok and d["sisa_check"]["seeds_checked"] == 2
    assert d["sisa_check"]["byte_identical"] == 2
    assert list(d["scenarios"]) == ["random", "mislabeled"]
    assert list(d["scenarios"]["mislabeled"]["methods"]) == list(METHODS)
    assert "sisa" not in d["scenarios"]["random"]["methods"]
    assert set(d["scenarios"]["mislabeled"]["floors"]) == {"monolithic", "sisa"}
    assert d["scenarios"]["mislabeled"]["info"]["n_stat_rows"] == 32  # 8% of 400
    for s in d["scenarios"].values():
        for m, r in s["methods"].items():
            e = r["eps"]
            assert np.isfinite([e["eps"], e["lo"], e["hi"]]).all(), m
            assert e["lo"] <= e["eps"] <= e["hi"] + 1e-9 and 0 < e["p_value"] <= 1
            assert r["reference"] == ("sisa" if m == "sisa" else "monolithic")
    # Ten classes: the test accuracy of retrain is far above chance (0.1).
    assert d["scenarios"]["random"]["methods"]["retrain"]["acc"]["test"]["mean"] > 0.5
    assert d["power"]["n_rows"] == 32 and "smallest" in d["power"]
    md = (tmp_path / "report.md").read_text()
    assert "rows of Fashion-MNIST (10 classes)" in md and "a CNN, conv 4 (5x5" in md
    assert "true class's margin" in md and "| neggrad |" in md
    assert "No full-data cost run for the torch family" in md and "Certified Newton" not in md


def test_the_network_is_convolutional(fmnist):
    import torch

    Xtr, ytr = fmnist[0], fmnist[1]
    net = FAM.network(0).fit(Xtr[:200], ytr[:200])
    convs = [m for m in net.module_ if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8] and net.input_shape_ == (1, 28, 28)
    assert net.decision_function(Xtr[:3]).shape == (3, 10)
    assert FAM.sisa.estimator.get_params()["layers"] == cnn_layers((4, 8))
    # The default family: the CNN of the report, two strided convolutions, 7x7 maps left.
    layers = TorchFamily().network(0).layers
    assert [x["layer"] for x in layers if isinstance(x, dict)] == ["conv2d", "conv2d", "linear"]
    from sisa.deep.layers import build_network
    seq = build_network(layers, (1, 28, 28), 10)
    assert seq[-1].in_features == 16 * 7 * 7 and seq[-1].out_features == 10


def test_margin_is_the_true_class_margin_and_its_sign_is_correctness(fmnist, mislabeled):
    Xtr, ytr, Xte, yte = fmnist[:4]
    net = FAM.network(1).fit(Xtr, ytr)
    z = net.decision_function(Xte)
    m = margin(net, Xte, yte)
    rows = np.arange(len(yte))
    other = z.copy()
    other[rows, yte] = -np.inf
    np.testing.assert_allclose(m, z[rows, yte] - other.max(axis=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(m > 0, net.predict(Xte) == yte)
    # Two classes: ±(z_1 - z_0), the binary families' statistic.
    two = (ytr == 0) | (ytr == 1)
    net2 = TorchClassifier(cnn_layers((2, 2)), max_epochs=1, random_state=0).fit(
        Xtr[two], ytr[two])
    d = net2.decision_function(Xte[:50])
    np.testing.assert_allclose(margin(net2, Xte[:50], yte[:50] % 2),
                               np.where(yte[:50] % 2 == 1, d, -d), rtol=1e-9, atol=1e-9)
    # SISA: the soft vote's margin, the mean of the shards' softmax.
    sc = mislabeled
    model = FAM.reference("sisa", sc, 0)
    p = model.predict_proba(Xte[:100])
    own = p[rows[:100], yte[:100]]
    p[rows[:100], yte[:100]] = 0
    np.testing.assert_allclose(margin(model, Xte[:100], yte[:100]),
                               np.log(own) - np.log(p.max(axis=1)), rtol=1e-6, atol=1e-6)


def test_mislabeled_moves_every_label_to_another_class(fmnist):
    Xtr, ytr, Xte, yte, names, _ = fmnist
    sc = make_scenario("mislabeled", Xtr, ytr, Xte, yte, names, fraction=0.2)
    u, w = sc.u_idx, sc.w_idx
    assert (sc.y[u] != ytr[u]).all() and np.array_equal(sc.y[w], ytr[w])
    assert set(np.unique(sc.y[u])) <= set(range(10)) and len(np.unique(sc.y[u])) > 5
    # Two classes: the flip is 1 - y, as before.
    yb = (ytr > 4).astype(int)
    sb = make_scenario("mislabeled", Xtr, yb, Xte, yte, names, fraction=0.2)
    assert np.array_equal(sb.y[sb.u_idx], 1 - yb[sb.u_idx])


def test_dataset_and_forget_sets_must_fit_the_family(tmp_path, capsys):
    local = ExecutionSettings(backend="local")
    with pytest.raises(InputError, match="torch family runs on 'fashion-mnist'"):
        run(CompareOptions(dataset="adult", family="torch"), settings=local)
    with pytest.raises(InputError, match="linear family runs on 'adult'"):
        run(CompareOptions(dataset="fashion-mnist", family="linear"), settings=local)
    with pytest.raises(InputError, match="subgroup and injected are defined on Adult"):
        run(CompareOptions(family="torch", scenarios=("random", "subgroup")), settings=local)
    code = compare_main(["compare", "--dataset", "adult", "--family", "torch", "--local",
                         "--quiet", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--dataset fashion-mnist" in err
    assert not (tmp_path / "x").exists()


def test_family_settings_are_checked():
    with pytest.raises(InputError, match="no setting noise_std"):
        make_family("torch", noise_std=1.0)
    with pytest.raises(InputError, match="family must be one of"):
        make_family("forest")
    with pytest.raises(InputError, match="subsample"):
        TorchFamily(subsample=0.0)
    with pytest.raises(InputError, match="channels"):
        TorchFamily(channels=(8, 0))
    with pytest.raises(InputError, match="to the family object"):
        run(CompareOptions(family=FAM, n_shards=3), settings=ExecutionSettings(backend="local"))


def test_default_size_passes_the_power_check():
    # The report's power line for the defaults: N models a side, the 8% forget set's rows.
    from sisa.compare.stats.intervals import detectable_shift

    d = TorchFamily.defaults
    rows = round(d["fraction"] * d["eps_rows"])
    assert d["dataset"] == "fashion-mnist" and rows == 200
    assert detectable_shift(d["n_models"], rows, n_boot=30)["smallest"] <= 0.25


def test_a_diverged_network_reads_as_maximally_wrong_not_nan(fmnist):
    """NegGrad+ at a large budget can drive a network's weights to NaN; its margin must be
    a finite "maximally wrong" value, not NaN (the ε estimator refuses NaN, which stopped
    a whole default run)."""
    import torch

    from sisa.compare.images import MARGIN_CLIP

    Xtr, ytr, Xte, yte = fmnist[:4]
    net = FAM.network(1).fit(Xtr, ytr)
    with torch.no_grad():
        next(net.module_.parameters()).fill_(float("nan"))
    m = margin(net, Xte[:20], yte[:20])
    assert np.all(np.isfinite(m)) and np.all(m == -MARGIN_CLIP)
