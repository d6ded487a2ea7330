"""Training benchmark (issue: engine): a sliced SISA fit through Ray on 2 CPUs, the same
shards trained one after another in one process, and a monolithic fit on all rows.

Run: python -m benchmarks.train [--rows 1000000] [--shards 16] [--slices 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
from sklearn.linear_model import SGDClassifier

from benchmarks._data import synthetic_parquet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    from sisa import IngestOptions, SISAClassifier, Store
    from sisa.engine import connect

    src = synthetic_parquet(args.rows, 50)
    root = tempfile.mkdtemp(prefix="sisa-bench-train-")
    # The order SISAClassifier.fit(X, y) uses: start Ray (its workers warm up in the
    # background), then build the store.
    t = time.perf_counter()
    connect(num_cpus=2)
    ray_init_s = time.perf_counter() - t
    t = time.perf_counter()
    store = Store.create(f"{root}/store", src,
                         options=IngestOptions(label="label", n_shards=args.shards,
                                               n_slices=args.slices))
    ingest_s = time.perf_counter() - t
    est = SGDClassifier(loss="log_loss", alpha=1e-5)
    res = {"rows": store.n_rows, "shards": args.shards, "slices": args.slices,
           "epochs_per_slice": args.epochs, "ingest_s": round(ingest_s, 2),
           "ray_init_s": round(ray_init_s, 2)}
    for key, backend in (("sisa_ray_first_fit_s", "ray"), ("sisa_ray_fit_s", "ray"),
                         ("sisa_local_fit_s", "local")):
        m = SISAClassifier(est, n_shards=args.shards, n_slices=args.slices, backend=backend,
                           epochs=args.epochs)
        t = time.perf_counter()
        m.fit(store)
        res[key] = round(time.perf_counter() - t, 2)
    data = store.rows.read_slices(0, range(args.slices))  # warm up I/O path
    parts = [store.rows.read_slices(s, range(args.slices)) for s in range(args.shards)]
    X, y = np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts])
    del data
    mono = SGDClassifier(loss="log_loss", alpha=1e-5, random_state=0)
    t = time.perf_counter()
    for _ in range(args.epochs):  # the same passes over the rows as the sliced fit
        mono.partial_fit(X, y, classes=np.unique(y))
    res["monolithic_same_passes_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    SGDClassifier(loss="log_loss", alpha=1e-5, random_state=0).fit(X, y)
    res["monolithic_fit_default_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(res, indent=1))
    print(f"SISA via Ray on 2 CPUs: {res['sisa_ray_fit_s']} s (first fit of the process: "
          f"{res['sisa_ray_first_fit_s']} s) | same shards one after another in one process: "
          f"{res['sisa_local_fit_s']} s | monolithic, same passes: "
          f"{res['monolithic_same_passes_s']} s | monolithic SGD .fit(): "
          f"{res['monolithic_fit_default_s']} s | Ray start: {res['ray_init_s']} s")

if __name__ == "__main__":
    main()
