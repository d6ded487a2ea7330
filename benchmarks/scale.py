"""Scale benchmark: ingest, fit and single-row forgets at S = 256, R = 8.

For each N: ingest N x 50 float32 rows from Parquet (wall time and the driver's peak RSS,
in a fresh process), fit an SGDClassifier per shard through a warm Ray (2 CPUs), then
forget single random rows (median and p90 of the wall time as the caller sees it, rows
retrained, and the manifest bytes each forget commits: the root plus the leaves it wrote).
With ``--compare-shards 16`` the same fit at S = 16 is timed for the fit-ratio target.
Last, a paper figure for 100M rows from the cost model and the per-row constants measured
here (a least-squares fit of forget time = fixed + per-row x rows retrained).

Run: python -m benchmarks.scale --rows 1000000 10000000 [--forgets 30] [--compare-shards 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.linear_model import SGDClassifier

from benchmarks._data import synthetic_parquet

INGEST = """
import sys, time
from sisa import IngestOptions, Store
t = time.perf_counter()
Store.create(sys.argv[1], sys.argv[2], options=IngestOptions(
    label="label", n_shards=int(sys.argv[3]), n_slices=int(sys.argv[4]),
    memory_budget_mb=int(sys.argv[5])))
print(time.perf_counter() - t)
"""


def ingest(src, uri: str, S: int, R: int, budget_mb: int) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of a Store.create in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run([sys.executable, "-c", INGEST, uri, str(src), str(S), str(R),
                          str(budget_mb)], capture_output=True, text=True, check=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited children: this one is the largest
    # so far unless an earlier one was bigger, which the order of runs (small N first)
    # rules out
    return float(out.stdout.strip().splitlines()[-1]), max(peak_kb, before) / 2**20


def count_manifest_bytes():
    """Patch Location.write_atomic to count the bytes written to the root and leaves."""
    from sisa.store.io.fs import Location

    counter = {"bytes": 0}
    original = Location.write_atomic

    def counting(self, rel, data, **kw):
        if rel == "manifest.json" or rel.startswith("meta/"):
            counter["bytes"] += len(memoryview(data))
        return original(self, rel, data, **kw)

    Location.write_atomic = counting
    return counter


def time_train_shard() -> list[float]:
    """Patch the driver's shard task to record its wall time (it runs in this process
    for a single-shard forget): a forget's training against everything else."""
    from sisa.engine import driver

    seconds: list[float] = []
    original = driver.train_shard

    def timed(*args, **kw):
        t = time.perf_counter()
        try:
            return original(*args, **kw)
        finally:
            seconds.append(time.perf_counter() - t)

    driver.train_shard = timed
    return seconds


def fit(store, S: int, R: int, E: int) -> tuple[object, float]:
    from sisa import SISAClassifier

    m = SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=S, n_slices=R,
                       epochs=E, backend="ray")
    t = time.perf_counter()
    m.fit(store)
    return m, time.perf_counter() - t


def run_one(n: int, args, root: str) -> dict:
    from sisa import IngestOptions, Store

    S, R, E = args.shards, args.slices, args.epochs
    src = synthetic_parquet(n, 50)
    uri = f"{root}/s{n}"
    ingest_s, rss_gb = ingest(src, uri, S, R, args.memory_budget_mb)
    store = Store.open(uri)
    fit(store, S, R, E)  # warm: Ray workers import the training stack, caches fill
    model, fit_s = fit(store, S, R, E)
    model.set_params(backend="auto")
    counter = count_manifest_bytes()
    trained = time_train_shard()
    ids = store.rows.read_index().column("sample_id").to_numpy()
    picks = np.random.default_rng(0).choice(ids, size=args.forgets, replace=False)
    times, rows, mbytes = [], [], []
    for i in picks:
        counter["bytes"] = 0
        t = time.perf_counter()
        r = model.forget([int(i)])
        times.append(time.perf_counter() - t)
        rows.append(r["rows_retrained"])
        mbytes.append(counter["bytes"])
    train = np.array(trained[-len(times):])  # one shard task per single-row forget
    res = {"rows": n, "shards": S, "slices": R, "epochs_per_slice": E,
           "ingest_s": round(ingest_s, 2), "ingest_peak_rss_gb": round(rss_gb, 3),
           "fit_s": round(fit_s, 2),
           "forget_1_median_ms": round(1000 * float(np.median(times)), 1),
           "forget_1_p90_ms": round(1000 * float(np.percentile(times, 90)), 1),
           "forget_1_rows_median": int(np.median(rows)),
           "forget_1_train_shard_median_ms": round(1000 * float(np.median(train)), 1),
           "forget_1_rest_median_ms": round(1000 * float(np.median(np.array(times) - train)), 1),
           "manifest_bytes_per_forget_median": int(np.median(mbytes)),
           "forget_times_ms": [round(1000 * x, 1) for x in times], "forget_rows": rows}
    if args.compare_shards:
        store16 = Store.create(f"{root}/c{n}", src,
                               options=IngestOptions(label="label", n_shards=args.compare_shards,
                                                     n_slices=R))
        fit(store16, args.compare_shards, R, E)
        res[f"fit_s_at_{args.compare_shards}_shards"] = round(
            fit(store16, args.compare_shards, R, E)[1], 2)
        res["fit_ratio"] = round(fit_s / res[f"fit_s_at_{args.compare_shards}_shards"], 2)
        shutil.rmtree(f"{root}/c{n}", ignore_errors=True)
    shutil.rmtree(uri, ignore_errors=True)
    return res


def paper_figure(results: list[dict], n: int, S: int, R: int, E: int) -> dict:
    """100M rows from the cost model with the constants measured at the largest N."""
    from sisa.engine import cost

    big = results[-1]
    t = np.array(big["forget_times_ms"]) / 1000
    rows = np.array(big["forget_rows"], float)
    per_row, fixed = np.polyfit(rows, t, 1) if len(set(rows)) > 1 else (0.0, float(t.mean()))
    expected_rows = cost.expected_rows_single(n, S, R, schedule="streaming", epochs=E)
    return {"rows": n, "model": "forget = fixed + per_row x rows retrained",
            "fixed_ms": round(1000 * fixed, 1), "per_row_us": round(1e6 * per_row, 3),
            "expected_rows_retrained": int(expected_rows),
            "forget_1_estimate_ms": round(1000 * (fixed + per_row * expected_rows), 1),
            "ingest_estimate_s": round(big["ingest_s"] * n / big["rows"], 0),
            "fit_estimate_s": round(big["fit_s"] * n / big["rows"], 0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--shards", type=int, default=256)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--forgets", type=int, default=30)
    ap.add_argument("--compare-shards", type=int, default=0)
    ap.add_argument("--memory-budget-mb", type=int, default=256)
    args = ap.parse_args()
    from sisa.engine import connect

    connect(num_cpus=2)
    root = tempfile.mkdtemp(prefix="sisa-bench-scale-")
    try:
        results = [run_one(n, args, root) for n in sorted(args.rows)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    paper = paper_figure(results, 100_000_000, args.shards, args.slices, args.epochs)
    print(json.dumps({"results": results, "paper_100M": paper}, indent=1))
    for r in results:
        print(f"N={r['rows']:>11,}  ingest {r['ingest_s']} s, peak RSS {r['ingest_peak_rss_gb']}"
              f" GB | fit {r['fit_s']} s | forget-1 median {r['forget_1_median_ms']} ms, p90 "
              f"{r['forget_1_p90_ms']} ms (train_shard {r['forget_1_train_shard_median_ms']} ms,"
              f" rest {r['forget_1_rest_median_ms']} ms) | manifest bytes/forget "
              f"{r['manifest_bytes_per_forget_median']:,}"
              + (f" | fit ratio vs S={args.compare_shards}: {r['fit_ratio']}x"
                 if "fit_ratio" in r else ""))
    print(f"100M (cost model + measured constants): forget-1 ~{paper['forget_1_estimate_ms']} "
          f"ms, ingest ~{paper['ingest_estimate_s']} s, fit ~{paper['fit_estimate_s']} s")


if __name__ == "__main__":
    main()
