"""``sisa predict`` of a large Parquet file: peak memory and time, S shards vs one model.

Trains ``SGDClassifier(loss="log_loss")`` on 200,000 x 50 float32 rows twice, as a SISA
ensemble of ``--shards`` shards (one slice each) and as one model (S = 1), then scores a
``--rows``-row Parquet file of the same 50 features with each through the same command,
``sisa predict STORE FILE --out OUT``, in a child process. Reported per run: wall time,
rows/s, CPU seconds (user + system), the child's peak RSS (``os.wait4``'s
``ru_maxrss``, this child only) and the output's row groups; then the ratios of the times.

    PYTHONPATH=$PWD python -m benchmarks.predict_file --rows 10000000 --shards 256
    PYTHONPATH=$PWD python -m benchmarks.predict_file --rows 10000000 --before /work/main

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
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=256)
    ap.add_argument("--batch-rows", type=int, default=4096)
    ap.add_argument("--build-only", action="store_true", help="make the data and stores")
    ap.add_argument("--before", default=None, metavar="PATH",
                    help="also run the sisa checkout at PATH, interleaved (before/after)")
    args = ap.parse_args()
    train_file = synthetic_parquet(200_000, 50, seed=1)
    data = synthetic_parquet(args.rows, 50, seed=0)
    stores = [train(args.shards, train_file), train(1, train_file)]
    if args.build_only:
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
