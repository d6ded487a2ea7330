"""Built-in dataset loaders: shapes, dtypes, encodings and the missing-file errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from sisa.datasets import (
    DIAMOND_CUTS,
    Dataset,
    load,
    load_adult,
    load_diamonds,
    load_fashion_mnist,
    load_synthetic,
)
from sisa.errors import InputError, MissingDatasetError


def _check(ds: Dataset, n: int, p: int, task: str) -> None:
    assert ds.X.shape == (n, p)
    assert ds.y.shape == (n,)
    assert len(ds.feature_names) == p == len(set(ds.feature_names))
    assert ds.task == task
    assert np.all(np.isfinite(ds.X))
    for extra in ds.extras.values():
        assert len(extra) == n


def test_synthetic_mixes_two_curves():
    ds = load_synthetic(n=500, unwanted_fraction=0.3, noise=0.0)
    _check(ds, 500, 1, "regression")
    assert ds.unwanted.dtype == bool and 0.2 < ds.unwanted.mean() < 0.4
    x = ds.X[:, 0]
    w = ~ds.unwanted
    np.testing.assert_allclose(ds.y[w], np.sin(np.pi * x[w]))
    np.testing.assert_allclose(ds.y[~w], 1.4 + 0.5 * np.sin(np.pi * x[~w]))
    dep = load_synthetic(n=500, unwanted_fraction=0.3, noise=0.0, dependent=True)
    np.testing.assert_array_equal(dep.unwanted, ds.unwanted)  # same draw, only U's curve moves
    np.testing.assert_allclose(dep.y, np.sin(np.pi * x))
    np.testing.assert_array_equal(load_synthetic(n=50).y, load_synthetic(n=50).y)
    with pytest.raises(InputError, match="unwanted_fraction"):
        load_synthetic(unwanted_fraction=1.0)


def test_adult_encoding():
    ds = load_adult()
    _check(ds, 32561, 105, "classification")
    assert ds.y.dtype == np.int64 and ds.y.mean() == pytest.approx(7841 / 32561)
    names = ds.feature_names
    assert names[0] == "age" and ds.X[0, 0] == 39  # first row: 39, State-gov, ...
    assert ds.X[0, names.index("workclass=State-gov")] == 1
    onehot = [i for i, n in enumerate(names) if n.startswith("workclass=")]
    assert "workclass=?" not in names
    assert set(ds.X[:, onehot].sum(axis=1).tolist()) == {0.0, 1.0}  # '?' rows: no indicator
    assert int((ds.X[:, onehot].sum(axis=1) == 0).sum()) == 1836


def test_diamonds_encoding_and_corrupted_subset():
    ds = load_diamonds()
    _check(ds, 53940, 9, "regression")
    fair = ds.X[:, ds.feature_names.index("cut")] == DIAMOND_CUTS.index("Fair")
    np.testing.assert_array_equal(ds.unwanted, fair)
    assert ds.unwanted.sum() == 1610
    shift = ds.y - ds.extras["y_clean"]
    assert np.all(shift[~ds.unwanted] == 0)
    assert np.all((shift[ds.unwanted] >= np.log(2.5)) & (shift[ds.unwanted] <= np.log(4.0)))
    assert ds.extras["y_clean"][0] == pytest.approx(np.log(326))
    assert set(np.unique(ds.X[:, 3]).tolist()) == set(range(8))  # 8 clarity levels
    clean = load_diamonds(corruption=(1.0, 1.0), unwanted_cut="Ideal")
    np.testing.assert_allclose(clean.y, ds.extras["y_clean"])
    assert clean.unwanted.sum() == 21551


def test_fashion_mnist_test_split():
    ds = load_fashion_mnist("t10k")
    _check(ds, 10000, 784, "classification")
    assert ds.X.dtype == np.float32 and ds.X.min() >= 0.0 and ds.X.max() == 1.0
    assert np.bincount(ds.y).tolist() == [1000] * 10


def test_load_dispatch_and_subsampling():
    ds = load("fashion_mnist", n_rows=300, kind="t10k")
    _check(ds, 300, 784, "classification")
    small = load("diamonds", n_rows=200, sample_seed=4)
    _check(small, 200, 9, "regression")
    assert small.unwanted.shape == (200,) and small.extras["y_clean"].shape == (200,)
    np.testing.assert_array_equal(small.X, load("diamonds", n_rows=200, sample_seed=4).X)
    assert len(load("synthetic", n_rows=10_000, n=100)) == 100  # more rows than exist: all
    assert load("synthetic", dependent=True).name == "synthetic-dependent"
    assert not np.array_equal(load("synthetic", random_state=1).y, load("synthetic").y)
    with pytest.raises(InputError, match="unknown dataset 'iris'"):
        load("iris")


def test_missing_files_name_the_install_command(tmp_path, monkeypatch):
    with pytest.raises(MissingDatasetError, match=r"pip install 'sisa\[datasets\]'"):
        load_adult(path=tmp_path / "adult.data")
    monkeypatch.setenv("SISA_DIAMONDS_PATH", str(tmp_path / "nope.csv"))
    with pytest.raises(MissingDatasetError, match=r"pip install 'sisa\[datasets\]'"):
        load("diamonds")
    with pytest.raises(MissingDatasetError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(data_dir=tmp_path)
    monkeypatch.setenv("SISA_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load("fashion-mnist")


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mglearn" else real(name, *a)
    )
    with pytest.raises(MissingDatasetError, match=r"mglearn .*pip install 'sisa\[datasets\]'"):
        load_adult()


def test_corrupt_idx_file_is_reported(tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(tmp_path / name, "wb") as fh:
            fh.write(b"\x00\x00\x00\x00garbage")
    with pytest.raises(MissingDatasetError, match="not an IDX file"):
        load_fashion_mnist("t10k", data_dir=tmp_path)
