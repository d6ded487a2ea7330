"""Sparse input kept sparse (issue 23): store size, the two candidate encodings, accuracy
against a plain fit, and exact forget, on UCI Adult one-hot with crosses (>= 3,000 columns).

    python -m benchmarks.sparse [--rows 32561]

No text corpus ships with the installed packages, so the matrix is Adult (from the
mglearn wheel) one-hot: each column (numbers in buckets) and eleven crosses of two, the
same recipe as tests/store/test_sparse.py, 25 stored values a row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.preprocessing import OneHotEncoder

from sisa import SISAClassifier
from sisa.datasets._dataset import package_file
from sisa.store.format import sparse
from sisa.store.format.layout import read_ipc

NAMES = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
         "occupation", "relationship", "race", "gender", "capital-gain", "capital-loss",
         "hours-per-week", "native-country"]
CROSSES = [("native-country", "occupation"), ("education", "occupation"),
           ("age", "occupation"), ("hours-per-week", "occupation"),
           ("native-country", "education"), ("age", "education"),
           ("hours-per-week", "education"), ("workclass", "occupation"),
           ("age", "native-country"), ("fnlwgt", "occupation"), ("fnlwgt", "education")]


def adult_onehot(n: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """The first ``n`` rows of the published adult.data, one-hot: each column (numbers in
    buckets) and eleven crosses of two, as a CSR matrix of >= 3,000 columns (also the
    data of tests/store/test_sparse.py)."""
    path = package_file("mglearn", "data/adult.data", "SISA_ADULT_PATH", None, "UCI Adult")
    with open(path) as f:
        rows = [[v.strip() for v in ln.split(",")] for ln in f.read().splitlines()
                if ln.strip()][:n]
    cols = {c: np.array([r[i] for r in rows], dtype=object) for i, c in enumerate(NAMES)}
    for c in ("age", "hours-per-week"):
        cols[c] = (np.array(cols[c], float) // 5).astype(int).astype(str)
    cols["fnlwgt"] = (np.log(np.array(cols["fnlwgt"], float)) * 4).astype(int).astype(str)
    table = np.column_stack([cols[c] for c in NAMES] +
                            [np.char.add(np.char.add(cols[a].astype(str), "|"),
                                         cols[b].astype(str)) for a, b in CROSSES])
    X = OneHotEncoder(dtype=np.float64).fit_transform(table).tocsr()
    return X, np.array([r[14] == ">50K" for r in rows], dtype=int)


def encodings(X: sp.csr_matrix, reps: int = 15) -> dict:
    """File bytes and fastest read (IPC bytes -> CSR) of the two candidate encodings, each
    uncompressed and zstd-compressed (what sisa writes for a struct ``features``)."""
    struct = pa.concat_arrays(list(sparse.blocks(X, 65_536)))
    offsets = pa.array(X.indptr.astype(np.int32))
    pairs = pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(
        [pa.array(X.indices), pa.array(X.data)], names=["index", "value"]))
    out = {}
    for name, col in (("struct<indices: list, values: list>", struct),
                      ("list<struct<index, value>>", pairs)):
        for codec in (None, "zstd"):
            table = pa.table({"features": col})
            sink = pa.BufferOutputStream()
            opts = pa.ipc.IpcWriteOptions(compression=codec) if codec else None
            with pa.ipc.new_file(sink, table.schema, options=opts) as w:
                w.write_table(table)
            buf = sink.getvalue()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                csr = _to_csr(read_ipc(buf).column("features").combine_chunks(), X.shape)
                times.append(time.perf_counter() - t0)
            assert (csr != X).nnz == 0
            out[f"{name}, {codec or 'uncompressed'}"] = {
                "bytes": buf.size, "read_ms_min": round(1e3 * min(times), 2)}
    return out


def _to_csr(c: pa.Array, shape) -> sp.csr_matrix:
    if pa.types.is_struct(c.type):
        return sparse.to_csr(c, {"layout": "sparse", "columns": [{"n_features": shape[1]}]})
    flat = c.flatten()
    return sp.csr_matrix((flat.field("value").to_numpy(), flat.field("index").to_numpy(),
                          np.asarray(c.offsets)), shape=shape)


def fit(est, X, y, path, shards, slices, ids=None):
    t0 = time.perf_counter()
    m = SISAClassifier(est, n_shards=shards, n_slices=slices, backend="local",
                       store=str(path)).fit(X, y, sample_ids=ids)
    return m, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32_561)
    args = ap.parse_args()
    X, y = adult_onehot(args.rows)
    n, d = X.shape
    csr_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    res: dict = {"shape": [n, d], "nnz": X.nnz, "csr_bytes": csr_bytes,
                 "dense_float64_bytes": n * d * 8, "encodings": encodings(X)}
    cut = int(n * 0.8)
    tr, te = np.arange(cut), np.arange(cut, n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, make in (("sgd", lambda: SGDClassifier(loss="log_loss", random_state=0)),
                           ("multinomial_nb", MultinomialNB)):
            plain = make().fit(X[tr], y[tr]).score(X[te], y[te])
            row = {"plain_fit_accuracy": round(plain, 4)}
            for shards, slices in ((1, 1), (8, 4)):
                path = tmp / f"{name}-{shards}"
                m, secs = fit(make(), X[tr], y[tr], path, shards, slices)
                store = sum(p.stat().st_size for p in (path / "data").rglob("*.arrow"))
                row[f"S{shards}_R{slices}"] = {
                    "accuracy": round(m.score(X[te], y[te]), 4), "fit_s": round(secs, 2),
                    "store_data_bytes": store,
                    "store_vs_csr_train_rows": round(store / _bytes(X[tr]), 3)}
            # forget 10 rows at S=8, R=4; byte-identical to a fresh fit without them
            gone = np.random.default_rng(0).choice(cut, 10, replace=False)
            t0 = time.perf_counter()
            m.forget(gone.tolist())
            forget_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ok = m.verify().ok
            verify_s = time.perf_counter() - t0
            keep = np.setdiff1d(tr, gone)
            fresh, _ = fit(make(), X[keep], y[keep], tmp / f"{name}-fresh", 8, 4, ids=keep)
            same = ({k: v.sha256 for k, v in m.store_.manifest.checkpoints.items()} ==
                    {k: v.sha256 for k, v in fresh.store_.manifest.checkpoints.items()})
            row["forget_10"] = {"seconds": round(forget_s, 2), "verify_ok": ok,
                                "verify_s": round(verify_s, 2),
                                "checkpoints_identical_to_fresh_fit": same}
            res[name] = row
    print(json.dumps(res, indent=1))


def _bytes(X) -> int:
    return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes


if __name__ == "__main__":
    main()
