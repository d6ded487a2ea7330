"""``sisa predict`` reads, scores and writes a batch at a time: ids and class probabilities
in the output, bounded batches, no output (and no temporary file) from a failed or
interrupted run, sparse stores."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import MultinomialNB
from threadpoolctl import threadpool_limits

from sisa import SISAClassifier, SISARegressor
from sisa.estimators import columns_by_name
from sisa.store.write.text import CsvOptions
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


def _table(n: int, d: int = 5, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.5, 0.5])  # three classes
    return pa.table({"uid": np.arange(n) * 7 + 1000, "name": [f"r{i}" for i in range(n)],
                     **{f"f{i}": X[:, i] for i in range(d)}, "y": y})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-class SGD log-loss ensemble fit through the CLI on a file with an id column."""
    tmp = tmp_path_factory.mktemp("stream")
    pq.write_table(_table(3000), tmp / "train.parquet")
    code, _, err = run_cli("train", str(tmp / "train.parquet"), "--label", "y", "--id", "uid",
                           "--features", "f0,f1,f2,f3,f4", "--model", "logistic",
                           "--shards", "3", "--slices", "2", "--store", str(tmp / "st"),
                           "--backend", "local", "--quiet")
    assert code == 0, err
    return tmp, str(tmp / "st")


def test_output_has_ids_and_the_in_memory_probabilities(trained, tmp_path):
    _, store = trained
    data = _table(2000, seed=1)
    pq.write_table(data, tmp_path / "rows.parquet", row_group_size=700)
    model = SISAClassifier.load(store)
    X = np.column_stack([data.column(f"f{i}").to_numpy() for i in range(5)])
    with columns_by_name():
        want, labels = model.predict_proba(X), model.predict(X)
    for out, flags, id_col in (("p.parquet", [], "uid"),  # the store's id column, kept
                               ("p.csv", ["--id-column", "name"], "name")):
        code, _, err = run_cli("predict", store, str(tmp_path / "rows.parquet"), "--out",
                               str(tmp_path / out), "--batch-rows", "97", "--quiet", *flags)
        assert code == 0, err
        got = (pacsv.read_csv if out.endswith(".csv") else pq.read_table)(tmp_path / out)
        assert got.column_names == [id_col, "prediction", "proba_0", "proba_1", "proba_2"]
        assert got.column(id_col).to_pylist() == data.column(id_col).to_pylist()
        P = np.column_stack([got.column(f"proba_{k}").to_numpy() for k in range(3)])
        np.testing.assert_allclose(P, want, rtol=1e-12, atol=0)  # CSV: text round trip
        assert np.array_equal(got.column("prediction").to_numpy(), labels)
    # no id column in DATA and none named: the row number
    pq.write_table(data.drop(["uid"]), tmp_path / "noid.parquet")
    code, _, err = run_cli("predict", store, str(tmp_path / "noid.parquet"), "--out",
                           str(tmp_path / "r.parquet"), "--batch-rows", "300", "--quiet")
    assert code == 0, err
    got = pq.read_table(tmp_path / "r.parquet")
    assert got.column_names[0] == "row"
    assert got.column("row").to_pylist() == list(range(2000))


def _peak_while_reading(path: Path, batch_rows: int) -> tuple[int, list[int]]:
    """Arrow memory held at most while DATA's batches are read, and the batch sizes."""
    from sisa.cli.predict_io import Input

    src = Input(str(path), CsvOptions.of(None, True))
    base, peak, sizes = pa.total_allocated_bytes(), 0, []
    for rb in src.batches(["uid", "f0", "f1", "f2", "f3", "f4"], batch_rows):
        sizes.append(rb.num_rows)
        peak = max(peak, pa.total_allocated_bytes() - base)
        del rb
    return peak, sizes


def test_reads_and_writes_in_bounded_batches(trained, tmp_path):
    _, store = trained
    peaks = []
    for n in (100_000, 800_000):  # row groups of 100k rows, pyarrow's default encoding
        pq.write_table(_table(n, seed=2).drop(["name"]), tmp_path / f"{n}.parquet",
                       row_group_size=100_000)
        peak, sizes = _peak_while_reading(tmp_path / f"{n}.parquet", 1000)
        assert sum(sizes) == n and len(sizes) == n // 1000 and max(sizes) == 1000
        peaks.append(peak)
    decoded = 800_000 * 6 * 8  # the five features and the id as 8-byte numbers: 38 MB
    # a page reader's buffers: the same for a file 8x longer, and never the file
    assert peaks[1] < 1.2 * peaks[0] and peaks[1] < decoded / 2, peaks
    code, _, err = run_cli("predict", store, str(tmp_path / "800000.parquet"), "--out",
                           str(tmp_path / "p.parquet"), "--batch-rows", "5000", "--quiet")
    assert code == 0, err
    meta = pq.ParquetFile(tmp_path / "p.parquet").metadata
    # written as it is scored: row groups of 14 batches of 5,000 (the first >= 65,536)
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert groups == [70_000] * 11 + [30_000], groups


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_failed_write_leaves_the_old_output_and_no_temporary_file(trained, tmp_path):
    _, store = trained
    pq.write_table(_table(20_000, seed=3), tmp_path / "rows.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "p.parquet").write_bytes(b"an earlier run's output")

    def small_files():  # a file size limit (a full disk, deterministically): EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    r = subprocess.run([sys.executable, "-m", "sisa.cli", "predict", store,
                        str(tmp_path / "rows.parquet"), "--out", str(out / "p.parquet"),
                        "--batch-rows", "1000", "--quiet"], capture_output=True, text=True,
                       preexec_fn=small_files, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "cannot write" in lines[0], r.stderr
    assert _files(out) == ["p.parquet"]
    assert (out / "p.parquet").read_bytes() == b"an earlier run's output"


def test_bad_input_in_a_late_batch_leaves_no_output(trained, tmp_path):
    _, store = trained
    data = _table(5000, seed=4)
    f1 = data.column("f1").to_numpy().copy()
    f1[4321] = np.nan
    pq.write_table(data.set_column(3, "f1", pa.array(f1)), tmp_path / "rows.parquet")
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli("predict", store, str(tmp_path / "rows.parquet"), "--out",
                           str(out / "p.csv"), "--batch-rows", "100")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "['f1']" in err
    assert _files(out) == []


def test_an_interrupted_run_leaves_no_output_and_no_temporary_file(trained, tmp_path):
    _, store = trained
    pq.write_table(_table(100_000, seed=5), tmp_path / "rows.parquet")
    out = tmp_path / "out"
    out.mkdir()
    # one row a batch: far more batches than the time between the first write and SIGTERM
    p = subprocess.Popen([sys.executable, "-m", "sisa.cli", "predict", store,
                          str(tmp_path / "rows.parquet"), "--out", str(out / "p.parquet"),
                          "--batch-rows", "1", "--quiet"], stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(6000):  # until the first batch is written beside --out
            if _files(out) or p.poll() is not None:
                break
            time.sleep(0.01)
        assert [f.endswith(".partial") for f in _files(out)] == [True], _files(out)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 1 and "interrupted" in err
    assert _files(out) == []


@pytest.mark.parametrize("argv, words", [
    (["--id-column", "nope"], ["nope", "--id-column"]),
    (["--id-column", "prediction"], ["prediction", "output column"]),
    (["--batch-rows", "0"], ["--batch-rows"]),
])
def test_bad_options_are_one_line_exit_2_and_no_output(trained, tmp_path, argv, words):
    _, store = trained
    data = _table(50)
    pq.write_table(data.append_column("prediction", data.column("y")), tmp_path / "rows.parquet")
    code, _, err = run_cli("predict", store, str(tmp_path / "rows.parquet"), "--out",
                           str(tmp_path / "p.parquet"), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert _files(tmp_path) == ["rows.parquet"]


@threadpool_limits.wrap(limits=1)  # OpenMP threads of HGB on a shared machine: slower, not faster
def test_typed_csv_with_na_values_streams_as_it_predicts_whole(tmp_path):
    rng = np.random.default_rng(6)
    n = 1200
    color = rng.choice(["red", "green", "blue", "?"], size=n)
    x = rng.normal(size=n)
    y = np.where((color == "red") | (x > 1), "yes", "no")
    rows = pa.table({"color": color, "x": x, "y": y})
    pacsv.write_csv(rows, tmp_path / "train.csv")
    code, _, err = run_cli("train", str(tmp_path / "train.csv"), "--label", "y", "--model",
                           "hgb", "--na-values", "?", "--shards", "2", "--slices", "1",
                           "--store", str(tmp_path / "st"), "--backend", "local", "--quiet")
    assert code == 0, err
    code, _, err = run_cli("predict", str(tmp_path / "st"), str(tmp_path / "train.csv"),
                           "--na-values", "?", "--batch-rows", "50", "--out",
                           str(tmp_path / "p.parquet"), "--quiet")
    assert code == 0, err
    got = pq.read_table(tmp_path / "p.parquet")
    model = SISAClassifier.load(str(tmp_path / "st"))
    whole = pa.table({"color": pa.array(np.where(color == "?", None, color)), "x": x})
    assert got.column("prediction").to_pylist() == model.predict(whole).tolist()
    np.testing.assert_allclose(
        np.column_stack([got.column(f"proba_{c}").to_numpy() for c in ("no", "yes")]),
        model.predict_proba(whole), rtol=1e-12)
    assert got.column("row").to_pylist() == list(range(n))


def test_a_sparse_store_predicts_rows_kept_as_the_store_keeps_them(tmp_path):
    X = sp.random(900, 40, density=0.1, format="csr", random_state=7)
    y = np.asarray(X[:, :20].sum(axis=1)).ravel() > np.asarray(X[:, 20:].sum(axis=1)).ravel()
    model = SISAClassifier(MultinomialNB(), n_shards=3, n_slices=1, backend="local",
                           store=str(tmp_path / "st")).fit(X, y.astype(int))
    offsets = pa.array(X.indptr.astype(np.int32))
    rows = pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(offsets, pa.array(X.indices.astype(np.int32))),
         pa.ListArray.from_arrays(offsets, pa.array(X.data))], names=["indices", "values"])
    pq.write_table(pa.table({"doc": np.arange(900) + 5, "features": rows}),
                   tmp_path / "rows.parquet")
    code, _, err = run_cli("predict", str(tmp_path / "st"), str(tmp_path / "rows.parquet"),
                           "--id-column", "doc", "--batch-rows", "64", "--out",
                           str(tmp_path / "p.parquet"), "--quiet")
    assert code == 0, err
    got = pq.read_table(tmp_path / "p.parquet")
    assert got.column("doc").to_pylist() == list(range(5, 905))
    assert np.array_equal(got.column("prediction").to_numpy(), model.predict(X))
    np.testing.assert_allclose(got.column("proba_1").to_numpy(),
                               model.predict_proba(X)[:, 1], rtol=1e-12)
    # an index outside the store's 40 columns: one line, exit 2, no output
    bad = pa.StructArray.from_arrays(
        [pa.array([[1, 40]], pa.list_(pa.int32())), pa.array([[1.0, 2.0]])],
        names=["indices", "values"])
    pq.write_table(pa.table({"features": bad}), tmp_path / "bad.parquet")
    code, _, err = run_cli("predict", str(tmp_path / "st"), str(tmp_path / "bad.parquet"),
                           "--out", str(tmp_path / "q.parquet"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "40" in err
    assert not (tmp_path / "q.parquet").exists()


def test_sgd_probabilities_match_a_plain_sgd_ensemble(tmp_path):
    # the estimator as given, not a preset: SGD log-loss, as the benchmark scores it
    t = _table(1500, seed=8)
    pq.write_table(t.drop(["name"]), tmp_path / "rows.parquet")
    model = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=4,
                           n_slices=1, backend="local", store=str(tmp_path / "st"))
    model.fit(str(tmp_path / "rows.parquet"), "y")
    code, _, err = run_cli("predict", str(tmp_path / "st"), str(tmp_path / "rows.parquet"),
                           "--batch-rows", "128", "--out", str(tmp_path / "p.parquet"),
                           "--quiet")
    assert code == 0, err
    got = pq.read_table(tmp_path / "p.parquet")
    X = t.select(["uid"] + [f"f{i}" for i in range(5)])  # the order of fit
    assert got.column_names[:2] == ["row", "prediction"]  # uid is a feature here
    P = np.column_stack([got.column(f"proba_{k}").to_numpy() for k in range(3)])
    np.testing.assert_allclose(P, model.predict_proba(X), rtol=1e-12)


def test_a_regressor_writes_ids_and_predictions_only(tmp_path):
    t = _table(1000, seed=9).drop(["name", "y"])
    t = t.append_column("target", pa.array(t.column("f0").to_numpy() * 3 + 1))
    pq.write_table(t, tmp_path / "rows.parquet")
    model = SISARegressor(n_shards=2, n_slices=1, backend="local",
                          store=str(tmp_path / "st")).fit(str(tmp_path / "rows.parquet"),
                                                          "target")
    code, _, err = run_cli("predict", str(tmp_path / "st"), str(tmp_path / "rows.parquet"),
                           "--id-column", "uid", "--batch-rows", "64", "--out",
                           str(tmp_path / "p.parquet"), "--quiet")
    assert code == 0, err
    got = pq.read_table(tmp_path / "p.parquet")
    assert got.column_names == ["uid", "prediction"]
    X = t.select(["uid"] + [f"f{i}" for i in range(5)])
    np.testing.assert_allclose(got.column("prediction").to_numpy(), model.predict(X),
                               rtol=1e-12)
