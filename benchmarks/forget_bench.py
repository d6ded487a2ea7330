"""Forget benchmark (issue: exact unlearning): 1M x 50, S=32, R=8, SGDClassifier.

Prints the wall time of a full SISA retrain, a monolithic retrain, forgetting 1 random id
(median of >= 10, Ray warm) and a batch of 100 ids, each with its speed-up next to the cost
model's ideal.

Run: python benchmarks/forget_bench.py [--rows 1000000] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
from sklearn.linear_model import SGDClassifier

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _data import synthetic_parquet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=32)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    from sisa import SISAClassifier, Store, cost
    from sisa.engine import connect

    S, R, E = args.shards, args.slices, args.epochs
    src = synthetic_parquet(args.rows, 50)
    root = tempfile.mkdtemp(prefix="sisa-bench-forget-")
    store = Store.create(f"{root}/store", src, label="label", n_shards=S, n_slices=R)
    N = store.n_rows
    connect(num_cpus=2)
    model = SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=S, n_slices=R,
                           epochs=E, backend="ray")
    t = time.perf_counter()
    model.fit(store)
    full_s = time.perf_counter() - t
    X = np.concatenate([store.read_slices(s, range(R)).X for s in range(S)])
    y = np.concatenate([store.read_slices(s, range(R)).y for s in range(S)])
    mono = SGDClassifier(loss="log_loss", alpha=1e-5, random_state=0)
    t = time.perf_counter()
    for _ in range(E):
        mono.partial_fit(X, y, classes=np.unique(y))
    mono_s = time.perf_counter() - t
    del X, y
    rng = np.random.default_rng(0)
    ids = store.read_index().column("sample_id").to_numpy()
    picks = rng.choice(ids, size=args.repeats + 100, replace=False)
    single, rows = [], []
    for i in picks[: args.repeats]:
        r = model.forget([int(i)])
        single.append(r["wall_time_s"])
        rows.append(r["rows_retrained"])
    batch = model.forget(picks[args.repeats:].tolist())
    ideal_1 = cost.speedup(N, S, R, schedule="streaming", epochs=E, k=1)
    ideal_100 = cost.speedup(N, S, R, schedule="streaming", epochs=E, k=100)
    med = float(np.median(single))
    res = {
        "rows": N, "shards": S, "slices": R, "epochs_per_slice": E,
        "full_sisa_retrain_s": round(full_s, 2), "monolithic_retrain_s": round(mono_s, 2),
        "forget_1_median_s": round(med, 3), "forget_1_all_s": single,
        "forget_1_rows_median": int(np.median(rows)),
        "forget_1_speedup_vs_full_sisa": round(full_s / med, 1),
        "forget_1_ideal_speedup": round(ideal_1, 1),
        "forget_1_speedup_vs_monolithic": round(mono_s / med, 1),
        "forget_100_s": batch["wall_time_s"], "forget_100_rows": batch["rows_retrained"],
        "forget_100_shards": len(batch["affected"]),
        "forget_100_speedup_vs_full_sisa": round(full_s / batch["wall_time_s"], 1),
        "forget_100_ideal_speedup": round(ideal_100, 1),
    }
    res["forget_1_reaches_half_ideal"] = res["forget_1_speedup_vs_full_sisa"] >= ideal_1 / 2
    print(json.dumps(res, indent=1))
    print(f"full SISA retrain {res['full_sisa_retrain_s']} s | monolithic retrain "
          f"{res['monolithic_retrain_s']} s | forget 1 id: median {res['forget_1_median_s']} s, "
          f"{res['forget_1_speedup_vs_full_sisa']}x vs full SISA "
          f"(ideal {res['forget_1_ideal_speedup']}x)"
          f" | forget 100 ids: {res['forget_100_s']} s, {res['forget_100_speedup_vs_full_sisa']}x "
          f"(ideal {res['forget_100_ideal_speedup']}x)")


if __name__ == "__main__":
    main()
