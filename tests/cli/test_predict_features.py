"""``sisa predict`` turns a batch's feature columns into the float64 matrix the model
scores in one row-major copy, whatever their numeric types (booleans by the column
path), and refuses NaN and infinities by column name, while finite values whose column
sum overflows pass (the finiteness check sums each column first)."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sisa import SISAClassifier
from sisa.estimators import columns_by_name
from tests.helpers import run_cli

NAMES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)  # two classes: the one-product path
    pq.write_table(pa.table({**{n: X[:, i] for i, n in enumerate(NAMES)}, "y": y}),
                   tmp / "train.parquet")
    code, _, err = run_cli("train", str(tmp / "train.parquet"), "--label", "y", "--features",
                           ",".join(NAMES), "--model", "logistic", "--shards", "5",
                           "--slices", "1", "--store", str(tmp / "st"), "--backend", "local",
                           "--quiet")
    assert code == 0, err
    return str(tmp / "st")


def _predict(store, table, tmp_path):
    pq.write_table(table, tmp_path / "rows.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an overflow is no user's warning
        return run_cli("predict", store, str(tmp_path / "rows.parquet"), "--out",
                       str(tmp_path / "p.parquet"), "--batch-rows", "64", "--quiet")


@pytest.mark.parametrize("types", [
    [pa.float64()] * 4,
    [pa.float32(), pa.int16(), pa.int64(), pa.float64()],  # a common type of float64
    [pa.float32(), pa.int16(), pa.float32(), pa.int16()],  # float32 rows, widened
    [pa.float64(), pa.bool_(), pa.int32(), pa.float32()]])  # no tensor: column by column
def test_every_numeric_type_scores_as_the_float64_matrix(store, types, tmp_path):
    rng = np.random.default_rng(1)
    cols = {}
    for n, t in zip(NAMES, types, strict=True):
        v = rng.normal(size=300) * 3
        cols[n] = pa.array(v > 0 if pa.types.is_boolean(t) else
                           np.round(v) if pa.types.is_integer(t) else v).cast(t)
    table = pa.table(cols)
    code, _, err = _predict(store, table, tmp_path)
    assert code == 0, err
    X = np.column_stack([table.column(n).to_numpy(zero_copy_only=False)
                         for n in NAMES]).astype(np.float64)
    with columns_by_name():
        want = SISAClassifier.load(store).predict_proba(X)
    got = pq.read_table(tmp_path / "p.parquet")
    P = np.column_stack([got.column(f"proba_{k}").to_numpy() for k in (0, 1)])
    assert np.array_equal(P, want)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_refused_by_column(store, bad, tmp_path):
    v = np.zeros((200, 4))
    v[150, 2] = bad
    code, _, err = _predict(store, pa.table({n: v[:, i] for i, n in enumerate(NAMES)}),
                            tmp_path)
    assert code == 2 and "f2" in err and "NaN or infinite" in err, err
    assert not (tmp_path / "p.parquet").exists()


def test_a_null_is_refused_and_an_overflowing_sum_is_not(store, tmp_path):
    v = np.zeros((200, 4))
    v[:, 3] = 1e308  # every value finite, the column's sum is not
    code, _, err = _predict(store, pa.table({n: v[:, i] for i, n in enumerate(NAMES)}),
                            tmp_path)
    assert code == 0, err
    cols = {n: pa.array(v[:, i]) for i, n in enumerate(NAMES)}
    cols["f1"] = pa.array([None] + [1.0] * 199, pa.float64())
    code, _, err = _predict(store, pa.table(cols), tmp_path)
    assert code == 2 and "f1" in err, err
