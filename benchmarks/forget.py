"""Forget benchmark (issue: exact unlearning): 1M x 50, S=32, R=8, SGDClassifier.

Prints the wall time of a full SISA retrain (in one process on one CPU, the resources a
one-shard forget uses, and through Ray on 2 CPUs), a monolithic retrain, forgetting 1
random id (median of >= 10) and a batch of 100 ids, each speed-up next to its ideal:
the cost model's ratio of row-passes, and, against the 2-CPU fit, that ratio divided by
the 2 CPUs a full retrain can use and a one-shard retrain cannot.

Run: python -m benchmarks.forget [--rows 1000000] [--repeats 10]
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
    ap.add_argument("--shards", type=int, default=32)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    from sisa import IngestOptions, SISAClassifier, Store
    from sisa.engine import connect, cost

    S, R, E, P = args.shards, args.slices, args.epochs, 2
    src = synthetic_parquet(args.rows, 50)
    root = tempfile.mkdtemp(prefix="sisa-bench-forget-")
    connect(num_cpus=P)
    store = Store.create(f"{root}/store", src,
                         options=IngestOptions(label="label", n_shards=S, n_slices=R))
    N = store.n_rows

    def fit(backend: str) -> tuple[SISAClassifier, float]:
        m = SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=S,
                           n_slices=R, epochs=E, backend=backend)
        t = time.perf_counter()
        m.fit(store)
        return m, time.perf_counter() - t

    fit("ray")  # first fit of the process: Ray workers finish warming up
    ray_s = float(np.median([fit("ray")[1] for _ in range(2)]))
    model, local_s = fit("local")
    model.set_params(backend="auto")  # as users run it: one shard in process, many on Ray
    X = np.concatenate([store.rows.read_slices(s, range(R)).X for s in range(S)])
    y = np.concatenate([store.rows.read_slices(s, range(R)).y for s in range(S)])
    mono = SGDClassifier(loss="log_loss", alpha=1e-5, random_state=0)
    t = time.perf_counter()
    for _ in range(E):
        mono.partial_fit(X, y, classes=np.unique(y))
    mono_s = time.perf_counter() - t
    del X, y
    rng = np.random.default_rng(0)
    ids = store.rows.read_index().column("sample_id").to_numpy()
    picks = rng.choice(ids, size=args.repeats + 100, replace=False)
    single, rows = [], []
    for i in picks[: args.repeats]:
        r = model.forget([int(i)])  # one shard: trains in this process (backend "auto")
        single.append(r["wall_time_s"])
        rows.append(r["rows_retrained"])
    batch = model.forget(picks[args.repeats:].tolist())  # 29 shards: through Ray
    ideal_1 = cost.speedup(N, S, R, schedule="streaming", epochs=E, k=1)
    ideal_100 = cost.speedup(N, S, R, schedule="streaming", epochs=E, k=100)
    med = float(np.median(single))
    res = {
        "rows": N, "shards": S, "slices": R, "epochs_per_slice": E, "cpus": P,
        "full_sisa_retrain_1cpu_s": round(local_s, 2),
        "full_sisa_retrain_ray_2cpu_s": round(ray_s, 2),
        "monolithic_retrain_s": round(mono_s, 2),
        "forget_1_median_s": round(med, 3), "forget_1_all_s": single,
        "forget_1_rows_median": int(np.median(rows)),
        "forget_1_ideal_speedup": round(ideal_1, 1),
        "forget_1_speedup_vs_full_1cpu": round(local_s / med, 1),
        "forget_1_speedup_vs_ray_2cpu": round(ray_s / med, 1),
        "forget_1_ideal_speedup_vs_ray_2cpu": round(ideal_1 / P, 1),
        "forget_1_speedup_vs_monolithic": round(mono_s / med, 1),
        "forget_1_ideal_speedup_vs_monolithic": round(
            cost.speedup_vs_monolithic(N, S, R, schedule="streaming", epochs=E, k=1), 1),
        "forget_100_s": batch["wall_time_s"], "forget_100_rows": batch["rows_retrained"],
        "forget_100_shards": len(batch["affected"]),
        "forget_100_speedup_vs_ray_2cpu": round(ray_s / batch["wall_time_s"], 1),
        "forget_100_ideal_speedup": round(ideal_100, 1),
    }
    res["forget_1_reaches_half_ideal_same_cpus"] = (res["forget_1_speedup_vs_full_1cpu"]
                                                    >= ideal_1 / 2)
    res["forget_1_reaches_half_ideal_vs_ray"] = (res["forget_1_speedup_vs_ray_2cpu"]
                                                 >= ideal_1 / P / 2)
    print(json.dumps(res, indent=1))
    print(f"full SISA retrain: {res['full_sisa_retrain_1cpu_s']} s on 1 CPU, "
          f"{res['full_sisa_retrain_ray_2cpu_s']} s via Ray on 2 | monolithic retrain "
          f"{res['monolithic_retrain_s']} s | forget 1 id: median {med:.3f} s = "
          f"{res['forget_1_speedup_vs_full_1cpu']}x vs 1 CPU (ideal {ideal_1:.1f}x), "
          f"{res['forget_1_speedup_vs_ray_2cpu']}x vs Ray (ideal {ideal_1 / P:.1f}x), "
          f"{res['forget_1_speedup_vs_monolithic']}x vs monolithic "
          f"(ideal {res['forget_1_ideal_speedup_vs_monolithic']}x) | forget "
          f"100 ids: {res['forget_100_s']} s, {res['forget_100_speedup_vs_ray_2cpu']}x vs Ray "
          f"(ideal {ideal_100:.1f}x)")


if __name__ == "__main__":
    main()
