"""Ingest benchmark (issue: bounded-memory ingest that can run on Ray): N x 50 float32 rows
from one Parquet file into S=256 shards x R=8 slices; wall time and peak RSS.

Modes, each in a fresh driver process (its ``ru_maxrss`` is the ingest's alone):

* ``serial``: ``Store.create`` in one process (default budget, 256 MB);
* ``ray1`` / ``ray2``: ``settings=ExecutionSettings(backend="ray")`` against a local Ray
  cluster of one node, or of two nodes, 1 CPU each (``ray start`` on 127.0.0.1, as in
  tests/tasks/test_cluster.py); workers are started and warmed up before the clock starts, as
  on a running cluster, and run at nice 0 like the single process (Ray's default is 15).
  Workers' peak RSS comes from the tasks themselves.

``--files K`` reads a directory of K Parquet files of N/K rows each, written by
``pyarrow.parquet.write_table`` with its defaults (one row group of up to 1M rows per
file, as pyarrow and pandas write them) instead of one file of 100k-row row groups.

``--code PATH`` measures another checkout of sisa (for example the commit before this
change, for "before"); its modes must exist there (``serial`` always does).

Run: python -m benchmarks.ingest [--rows 1000000 10000000] [--modes serial ray1 ray2]
     [--files 10]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
from benchmarks._data import CACHE, synthetic_parquet  # noqa: E402

S, R = 256, 8

DRIVER = """
import json, os, resource, sys, time
from sisa import IngestOptions, Store
src, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
kw = {}
if mode != "serial":
    from sisa.engine import ExecutionSettings, connect
    from sisa.store.write import parallel_ingest
    ray = connect()
    want = int(mode[-1])
    while len([n for n in ray.nodes() if n["Alive"]]) < want:
        time.sleep(0.2)
    warm = ray.remote(num_cpus=1)(lambda: __import__("sisa.store.write.parallel_ingest") and 0)
    ray.get([warm.remote() for _ in range(4 * want)])  # workers up, sisa imported
    kw["settings"] = ExecutionSettings(backend="ray")
t = time.perf_counter()
st = Store.create(out, src, options=IngestOptions(label="label", n_shards=int(sys.argv[4]),
                                                  n_slices=int(sys.argv[5])), **kw)
res = {"seconds": round(time.perf_counter() - t, 1), "rows": st.n_rows,
       "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
if mode != "serial":
    run = parallel_ingest.LAST_RUN
    res.update(worker_peak_rss_mb=round(run["worker_peak_rss_mb"]), parts=run["parts"],
               nodes=len(run["nodes"]["ingesting"]), phases=run["seconds"])
print(json.dumps(res))
"""


def default_row_groups(n_rows: int, n_files: int, n_features: int = 50) -> Path:
    """A directory of ``n_files`` Parquet files of ``n_rows / n_files`` rows x
    ``n_features`` float32 + ``label``, each written with pyarrow's defaults."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = CACHE / f"pyarrow-default-{n_rows}x{n_features}-{n_files}-files"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k in range(n_files):
        rng = np.random.default_rng(k)
        X = rng.normal(size=(n_rows // n_files, n_features)).astype(np.float32)
        cols = {f"f{i}": X[:, i] for i in range(n_features)}
        pq.write_table(pa.table({**cols, "label": (X[:, 0] > 0).astype(np.int64)}),
                       tmp / f"part-{k:02d}.parquet")
        del X, cols
    tmp.rename(out)
    return out


def run(mode: str, src: Path, code: Path, env: dict) -> dict:
    out = Path(tempfile.mkdtemp(prefix="sisa-bench-ingest-")) / "store"
    try:
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(src), str(out), mode, str(S),
                               str(R)], env={**env, "PYTHONPATH": str(code)}, cwd=code,
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def on_cluster(nodes: int, fn):
    """``fn(env)`` with a local Ray cluster of ``nodes`` nodes (1 CPU each) up."""
    from tests.tasks.test_cluster import LocalCluster

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Ray starts workers at nice 15; on a machine other jobs share, they would then get a
    # small share of the CPU next to the nice-0 single-process ingest they are compared with
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness="0")
    cluster = LocalCluster(env)
    try:
        cluster.start_head()
        for _ in range(nodes - 1):
            cluster.add_worker()
        return fn({**env, "RAY_ADDRESS": cluster.address})
    finally:
        cluster.teardown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--modes", nargs="+", default=["serial", "ray1", "ray2"])
    ap.add_argument("--code", type=Path, default=HERE.parent,
                    help="the sisa checkout to measure (default: this one)")
    ap.add_argument("--files", type=int, default=0,
                    help="read K files written with pyarrow's defaults (1M-row row groups)")
    args = ap.parse_args()
    results = []
    for n in args.rows:
        src = default_row_groups(n, args.files) if args.files else synthetic_parquet(n, 50)
        for mode in args.modes:
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            if mode == "serial":
                res = run(mode, src, args.code.resolve(), env)
            else:
                res = on_cluster(int(mode[-1]), lambda e, m=mode, s=src:
                                 run(m, s, args.code.resolve(), e))
            results.append({"rows": n, "mode": mode, "code": str(args.code),
                            "files": args.files or 1, **res})
            print(json.dumps(results[-1]), flush=True)
    print("\n| rows | mode | seconds | driver peak RSS (MB) | worker peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {r['mode']} | {r['seconds']} | {r['driver_peak_rss_mb']} | "
              f"{r.get('worker_peak_rss_mb', '')} |")


if __name__ == "__main__":
    main()
