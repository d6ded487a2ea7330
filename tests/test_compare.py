"""Tests for sisa.compare: split, model family, ε runs, report, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from sisa.compare import cli, per_example_epsilon
from sisa.compare.gap import run_gap, snap_float_noise
from sisa.compare.run import (
    METHODS,
    checkpoint_hashes,
    default_family,
    fixed_features,
    method_metrics,
    prepare,
    train_methods,
)
from sisa.datasets import Dataset
from sisa.errors import InputError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sisa")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["compare", *argv])


@pytest.fixture(scope="module")
def synth():
    split = prepare("synthetic", rows=300)
    return split, default_family(split, n_shards=3, n_slices=2)


# -- pieces -------------------------------------------------------------------------------------


def test_prepare_synthetic_forgets_the_unwanted_rows_and_tests_on_wanted_ones(synth):
    split, _ = synth
    info = split.info
    assert info["forget_rule"] == "the dataset's unwanted rows"
    assert info["n_train"] + round(0.25 * 300) == 300
    assert 0.25 < split.forget.mean() < 0.45
    # Test rows follow the wanted curve sin(pi x) (column 0 is x): unwanted ones left out.
    assert np.abs(split.y_test - np.sin(np.pi * split.X_test[:, 0])).max() < 0.6
    assert len(split.y_test) == info["n_test"]


def test_prepare_random_forget_is_seeded_and_validated():
    a = prepare("synthetic", rows=200, forget=10, seed=3)
    b = prepare("synthetic", rows=200, forget=10, seed=3)
    assert a.forget.sum() == 10 and np.array_equal(a.forget, b.forget)
    c = prepare("synthetic", rows=200, forget_fraction=0.1)
    assert c.info["forget_rule"].startswith("random 10.0%")
    with pytest.raises(InputError, match="not both"):
        prepare("synthetic", forget=5, forget_fraction=0.1)
    with pytest.raises(InputError, match="forget must be between"):
        prepare("synthetic", rows=200, forget=1)


def test_fixed_features_learn_nothing_from_rows():
    rng = np.random.default_rng(0)
    img = Dataset(rng.random((3, 784)).astype(np.float32), np.arange(3), [], "classification",
                  "fashion-mnist", "")
    Phi, _ = fixed_features(img)
    assert Phi.shape == (3, 196)
    assert np.isclose(Phi[0, 0], img.X[0, [0, 1, 28, 29]].mean())
    # Row by row: a row's features do not depend on which other rows are present.
    Phi1, _ = fixed_features(img.subset(np.array([1])))
    np.testing.assert_array_equal(Phi1[0], Phi[1])


def test_snap_float_noise_only_merges_float_noise():
    ref = np.array([[1.0, 100.0], [2.0, -3.0]])
    unl = ref + np.array([[1e-12, 1e-6], [0.0, 1e-14]])
    snapped, _ = snap_float_noise(unl, ref)
    assert snapped[0, 0] == 1.0 and snapped[1, 1] == -3.0
    assert snapped[0, 1] == unl[0, 1]  # 1e-8 relative: kept


def test_train_methods_one_seed(synth):
    split, fam = synth
    out = train_methods(split, fam, seed=0)
    assert tuple(out) == METHODS
    assert out["sisa"].extra["byte_identical"]
    assert checkpoint_hashes(out["sisa"].model) == checkpoint_hashes(out["sisa"].reference)
    assert out["newton"].formal_epsilon == 0.0  # least squares: the Newton step is exact
    assert out["original"].time_s == 0 and out["original"].rows_read == 0
    m = {k: method_metrics(o.model, split, fam.sigma) for k, o in out.items()}
    # The EMSE example's story: the mixed fit explains W poorly, the fine-tune repairs it.
    assert m["original"]["r2_wanted"] < 0.6 < 0.9 < m["emse"]["r2_wanted"]
    assert m["sisa"]["r2_wanted"] > 0.9 and m["retrain"]["r2_wanted"] > 0.9
    assert m["retrain"]["fair_r2"] > m["original"]["fair_r2"]


def test_classification_metrics_use_one_minus_p_true():
    split = prepare("adult", rows=1200)
    fam = default_family(split, n_shards=2, n_slices=2)
    out = train_methods(split, fam, seed=0, methods=("retrain",))
    m = method_metrics(out["retrain"].model, split, sigma=fam.sigma)
    assert set(m) == {"accuracy_wanted", "accuracy_unwanted", "accuracy_test", "exp_r2_wanted",
                      "exp_r2_unwanted", "fair_r2"}
    assert m["accuracy_test"] > 0.75
    w = ~split.forget
    p = out["retrain"].model.predict_proba(split.X[w])[:, 1]
    r = 1 - np.where(split.y[w] == 1, p, 1 - p)  # probability mass off the true class
    assert m["exp_r2_wanted"] == pytest.approx(np.mean(np.exp(-(r**2) / (2 * fam.sigma**2))))


# -- the SISA floor -----------------------------------------------------------------------------


def test_sisa_forget_is_byte_identical_per_seed_and_its_epsilon_is_exactly_zero(synth,
                                                                               ray_session):
    split, fam = synth
    gap = run_gap(split, fam, n_models=6, progress=False)
    assert gap.sisa_identical == [True] * 6
    unl, ref, _ = gap.stats["sisa"]
    np.testing.assert_array_equal(unl, ref)  # identical models, identical statistics
    # The estimator agrees: identical samples are at the floor, 0 on every row (unsnapped).
    assert (gap.eps["sisa"] == 0).all() and (gap.eps_raw["sisa"] == 0).all()
    assert (per_example_epsilon(unl, ref) == 0).all()
    # Approximate methods and doing nothing are not at the floor.
    assert np.median(gap.eps["emse"]) > 0.5
    assert np.median(gap.eps["original"]) > 0.5
    # The independent-seeds floor is positive even for exact methods.
    assert np.median(gap.eps_indep["retrain"]) > 0


# -- end to end ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset", "rows", "extra"), [
    ("synthetic", 300, []),
    ("adult", 1200, ["--forget-fraction", "0.03"]),
])
def test_cli_end_to_end(tmp_path, ray_session, capsys, dataset, rows, extra):
    out = tmp_path / dataset
    args = _parse(["--dataset", dataset, "--models", "6", "--rows", str(rows), "--shards", "3",
                   "--out", str(out), "--quiet", "--json", *extra])
    assert cli.run_from_args(args) == 0
    printed = json.loads(capsys.readouterr().out)
    for name in ("report.json", "report.md", "metrics.png", "epsilon_hist.png",
                 "time_vs_eps.png"):
        assert (out / name).stat().st_size > 0
    rep = json.loads((out / "report.json").read_text())
    assert rep == printed
    assert rep["sisa_check"]["ok"] and rep["sisa_check"]["seeds_byte_identical"] == 6
    methods = rep["methods"]
    assert list(methods) == list(METHODS)
    assert set(methods["sisa"]["eps_per_row"]) == {0.0}
    assert methods["sisa"]["epsilon"]["forgetting_quality"] == 1.0
    assert methods["emse"]["epsilon"]["median"] > 0
    assert methods["original"]["epsilon"]["median"] > 0
    assert methods["newton"]["formal_epsilon"] is not None
    md = (out / "report.md").read_text()
    assert all(f"| {m} |" in md for m in METHODS if m != "retrain")
    assert "SISA check** (passed)" in md


def test_cli_help_has_an_example_and_errors_are_one_line(capsys, monkeypatch, tmp_path):
    parser = argparse.ArgumentParser(prog="sisa")
    sub = cli.add_parser(parser.add_subparsers())
    assert "sisa compare --dataset adult" in sub.format_help()
    assert cli.run_from_args(_parse(["--dataset", "synthetic", "--models", "2", "--quiet",
                                     "--out", str(tmp_path)])) == 1
    err = capsys.readouterr().err
    assert "n_models must be an integer >= 4" in err and err.count("\n") == 1
    monkeypatch.setenv("SISA_ADULT_PATH", str(tmp_path / "missing.data"))
    assert cli.run_from_args(_parse(["--dataset", "adult", "--quiet",
                                     "--out", str(tmp_path)])) == 1
    assert "pip install" in capsys.readouterr().err
