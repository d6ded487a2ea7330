"""``sisa predict`` of a large Parquet file: peak memory and time, S shards vs one model.

Trains ``SGDClassifier(loss="log_loss")`` on 200,000 x 50 float32 rows twice, as a SISA
ensemble of ``--shards`` shards (one slice each) and as one model (S = 1), then scores a
``--rows``-row Parquet file of the same 50 features with each through the same command,
``sisa predict STORE FILE --out OUT``, in a child process. Reported per run: wall time,
rows/s, CPU seconds (user + system), the child's peak RSS (``os.wait4``'s
``ru_maxrss``, this child only) and the output's row groups; then the ratios of the times.

    PYTHONPATH=$PWD python -m benchmarks.predict_file --rows 10000000 --shards 256
    PYTHONPATH=$PWD python -m benchmarks.predict_file --rows 10000000 --before /work/main

``--phases`` instead times, in this process, where ``sisa predict``'s time goes for each
store: reading a batch (Parquet decode and validation), turning it into the float64
matrix, ``predict_proba``, making the output columns, and writing them.

``--before PATH`` also runs each store with the sisa at PATH (a checkout: the child's
PYTHONPATH), interleaved with this one's runs: before and after in one run.

Data and stores are cached under ``$SISA_BENCH_DIR`` (default ``/tmp/sisa-bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks._data import CACHE, synthetic_parquet


def train(shards: int, train_file: Path) -> Path:
    """The store of an S-shard SGD log-loss ensemble of ``train_file`` (cached)."""
    from sklearn.linear_model import SGDClassifier

    from sisa import SISAClassifier

    store = CACHE / f"predict-sgd-S{shards}"
    if (store / "manifest.json").exists():
        return store
    t0 = time.perf_counter()
    # the file itself with its label column: the store keeps its column names f0..f49
    SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=shards,
                   n_slices=1, backend="local", store=str(store)).fit(str(train_file), "label")
    print(f"trained S={shards} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return store


def run(store: Path, data: Path, batch_rows: int, code: str | None = None) -> dict:
    """One ``sisa predict`` in a child process (with the sisa at ``code``, else this
    one): its wall time and peak RSS."""
    out = CACHE / f"pred-{store.name}.parquet"
    cmd = [sys.executable, "-m", "sisa.cli", "predict", str(store), str(data), "--out",
           str(out), "--batch-rows", str(batch_rows), "--json", "--quiet"]
    env = dict(os.environ, PYTHONPATH=code or os.environ.get("PYTHONPATH", os.getcwd()))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    t0 = time.perf_counter()
    # cwd too: `python -m` puts the working folder first on sys.path, before PYTHONPATH
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=code or os.getcwd())
    # wait4: the rusage of this child alone (RUSAGE_CHILDREN is the max over all of them)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    text = p.stdout.read().decode()
    p.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    rows = json.loads(text)["rows"]
    meta = pq.ParquetFile(out).metadata
    out.unlink()
    return {"code": code or "this", "load_before": float(load),
            "shards": int(store.name.rsplit("S", 1)[1]), "rows": rows,
            "seconds": round(wall, 2), "rows_per_s": round(rows / wall),
            # CPU seconds: what the run costs on a machine shared with other work
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "row_groups": meta.num_row_groups,
            "out_columns": meta.num_columns}


def phases(store: Path, data: Path, batch_rows: int) -> dict:
    """Seconds per step of ``sisa predict``'s loop (sisa.cli.predict), in this process."""
    import numpy as np
    import pyarrow as pa

    from sisa.cli.predict import _feature_columns, _model_input
    from sisa.cli.predict_io import AtomicOutput, Input
    from sisa.estimators import columns_by_name
    from sisa.estimators import load as open_model

    model = open_model(str(store))
    schema = model.store_.manifest.schema
    src = Input(str(data), None)
    features = _feature_columns(src, schema)
    names = [f"proba_{c}" for c in model.classes_]
    t = dict.fromkeys(["read", "to_matrix", "predict_proba", "columns", "write"], 0.0)
    stream, done = src.batches(src.names, batch_rows), 0
    clock = time.perf_counter
    with AtomicOutput(str(CACHE / "phases.parquet")) as out:
        while True:
            t0 = clock()
            rb = next(stream, None)
            t1 = clock()
            t["read"] += t1 - t0
            if rb is None:
                break
            X = _model_input(rb, features, schema, src.what)
            t2 = clock()
            with columns_by_name():
                p = model.predict_proba(X)
            t3 = clock()
            cols = {"row": pa.array(np.arange(done, done + rb.num_rows)),
                    "prediction": pa.array(model.classes_[p.argmax(axis=1)]),
                    **{n: pa.array(p[:, k]) for k, n in enumerate(names)}}
            t4 = clock()
            out.write(pa.RecordBatch.from_pydict(cols))
            t5 = clock()
            for k, a, b in (("to_matrix", t1, t2), ("predict_proba", t2, t3),
                            ("columns", t3, t4), ("write", t4, t5)):
                t[k] += b - a
            done += rb.num_rows
        t0 = clock()
        out.commit()
        t["write"] += clock() - t0
    (CACHE / "phases.parquet").unlink()
    return {"store": store.name, "rows": done, **{k: round(v, 2) for k, v in t.items()},
            "total": round(sum(t.values()), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=256)
    ap.add_argument("--batch-rows", type=int, default=4096)
    ap.add_argument("--build-only", action="store_true", help="make the data and stores")
    ap.add_argument("--phases", action="store_true",
                    help="time each step of the loop in this process instead")
    ap.add_argument("--before", default=None, metavar="PATH",
                    help="also run the sisa checkout at PATH, interleaved (before/after)")
    args = ap.parse_args()
    train_file = synthetic_parquet(200_000, 50, seed=1)
    data = synthetic_parquet(args.rows, 50, seed=0)
    stores = [train(args.shards, train_file), train(1, train_file)]
    if args.build_only:
        return
    if args.phases:
        for s in stores:
            print(json.dumps(phases(s, data, args.batch_rows)), flush=True)
        return
    codes = [args.before, None] if args.before else [None]
    results: dict = {}
    for s in stores:  # interleaved: before and after of one store back to back
        for code in codes:
            r = run(s, data, args.batch_rows, code)
            results[(code, s)] = r
            print(json.dumps(r), flush=True)
    for code in codes:
        a, b = results[(code, stores[0])], results[(code, stores[1])]
        print(f"{code or 'this'}: S={args.shards} vs S=1: {a['seconds'] / b['seconds']:.2f}x "
              f"the wall time, {a['cpu_seconds'] / b['cpu_seconds']:.2f}x the CPU time; peak "
              f"RSS {a['peak_rss_mb']} MB vs {b['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
