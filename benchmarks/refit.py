"""Refit (non-``partial_fit``) shard models on Adult: fit time, forget-1 time, accuracy.

For each configuration: fit time (in process, one CPU), the number of checkpoints
stored, test accuracy (a fixed 80/20 split), and the median wall time of forgetting
one random training id (``--forgets`` forgets one after another), with the rows each
forget retrained (the receipt's ``rows_retrained``). Each time is given as wall time and
as this process's CPU time (``time.process_time``: training runs on one thread, so CPU
time is what a quiet machine's wall time would be, minus I/O waits; on a shared machine
it is the steadier figure).

``--hgb-options`` instead reports, for HistGradientBoostingClassifier options that stay
deterministic under sisa's seeds, the CPU time of one shard's fit (S=8: what a forget
refits) and the accuracy of the S=8 ensemble. sisa never changes the user's estimator:
these are for the user to choose.

Run: python -m benchmarks.refit [--forgets 20] [--only hgb-8x4,tree-32x4,tree-32x1]
     python -m benchmarks.refit --hgb-options
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings

import numpy as np

CONFIGS = {
    "hgb-8x4": ("hgb", 8, 4),
    "hgb-8x1": ("hgb", 8, 1),
    "tree-32x4": ("tree", 32, 4),
    "tree-32x1": ("tree", 32, 1),
    "hgb30-8x4": ("hgb30", 8, 4),  # HistGradientBoosting(max_iter=30, learning_rate=0.3)
}


def estimator(kind: str):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.tree import DecisionTreeClassifier

    if kind == "hgb30":
        return HistGradientBoostingClassifier(max_iter=30, learning_rate=0.3)
    return HistGradientBoostingClassifier() if kind == "hgb" else \
        DecisionTreeClassifier(max_depth=10)


def run(name: str, n_forgets: int, root: str) -> dict:
    from sisa import SISAClassifier
    from sisa.datasets import load

    kind, S, R = CONFIGS[name]
    d = load("adult")
    rng = np.random.default_rng(0)
    test = rng.random(len(d.y)) < 0.2
    Xtr, ytr, Xte, yte = d.X[~test], d.y[~test], d.X[test], d.y[test]
    ids = np.arange(len(ytr))
    model = SISAClassifier(estimator(kind), n_shards=S, n_slices=R, backend="local",
                           store=f"{root}/{name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, c = time.perf_counter(), time.process_time()
        model.fit(Xtr, ytr, sample_ids=ids)
        fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - c
    acc = float((model.predict(Xte) == yte).mean())
    n_ckpt = len(model.store_.manifest.checkpoints)
    times, cpus, rows = [], [], []
    for i in rng.choice(ids, size=n_forgets, replace=False):
        t, c = time.perf_counter(), time.process_time()
        receipt = model.forget([int(i)])
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        rows.append(receipt["rows_retrained"])
    return {"config": name, "n_shards": S, "n_slices": R, "fit_s": round(fit_s, 3),
            "fit_cpu_s": round(fit_cpu, 3),
            "forget_median_cpu_s": round(float(np.median(cpus)), 4),
            "checkpoints": n_ckpt, "accuracy": round(acc, 4),
            "forget_median_s": round(float(np.median(times)), 4),
            "forget_min_s": round(min(times), 4), "forget_max_s": round(max(times), 4),
            "rows_retrained_median": float(np.median(rows)),
            "accuracy_after_forgets": round(float((model.predict(Xte) == yte).mean()), 4)}


HGB_OPTIONS = {
    "defaults (100 iterations)": {},
    "early_stopping=True": {"early_stopping": True},
    "max_iter=50": {"max_iter": 50},
    "max_iter=50, learning_rate=0.2": {"max_iter": 50, "learning_rate": 0.2},
    "max_iter=30, learning_rate=0.3": {"max_iter": 30, "learning_rate": 0.3},
    "max_iter=50, lr=0.2, max_leaf_nodes=15": {"max_iter": 50, "learning_rate": 0.2,
                                                "max_leaf_nodes": 15},
    "max_bins=63": {"max_bins": 63},
    "max_leaf_nodes=15": {"max_leaf_nodes": 15},
}


def hgb_options(root: str) -> list[dict]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from sisa import SISAClassifier
    from sisa.datasets import load

    d = load("adult")
    test = np.random.default_rng(0).random(len(d.y)) < 0.2
    Xtr, ytr, Xte, yte = d.X[~test], d.y[~test], d.X[test], d.y[test]
    out = []
    for name, kw in HGB_OPTIONS.items():
        model = SISAClassifier(HistGradientBoostingClassifier(**kw), n_shards=8, n_slices=1,
                               backend="local", store=f"{root}/{len(out)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xtr, ytr)
        data = model.store_.rows.read_slices(0, range(1))
        cpu = []
        with threadpool_limits(limits=1):
            for _ in range(3):
                c = time.process_time()
                est = HistGradientBoostingClassifier(random_state=0, **kw).fit(data.X, data.y)
                cpu.append(time.process_time() - c)
        r = {"options": name, "shard_rows": len(data.y), "n_iter": int(est.n_iter_),
             "shard_fit_cpu_s": round(float(np.median(cpu)), 3),
             "accuracy": round(float((model.predict(Xte) == yte).mean()), 4)}
        out.append(r)
        print(f"{name:>40}: one shard's fit ({r['shard_rows']} rows, {r['n_iter']} "
              f"iterations) {r['shard_fit_cpu_s']:.3f} s cpu, S=8 accuracy "
              f"{r['accuracy']:.4f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--forgets", type=int, default=20)
    ap.add_argument("--only", default="hgb-8x4,hgb-8x1,tree-32x4,tree-32x1")
    ap.add_argument("--hgb-options", action="store_true")
    args = ap.parse_args()
    if args.hgb_options:
        print(json.dumps(hgb_options(tempfile.mkdtemp(prefix="sisa-bench-hgb-"))))
        return
    root = tempfile.mkdtemp(prefix="sisa-bench-refit-")
    out = []
    for name in args.only.split(","):
        r = run(name, args.forgets, root)
        out.append(r)
        print(f"{name:>10}: fit {r['fit_s']:.2f} s (cpu {r['fit_cpu_s']:.2f} s), "
              f"{r['checkpoints']} checkpoints, accuracy {r['accuracy']:.4f}, forget-1 median "
              f"{r['forget_median_s']:.3f} s [{r['forget_min_s']:.3f}-{r['forget_max_s']:.3f}]"
              f" (cpu {r['forget_median_cpu_s']:.3f} s), rows retrained "
              f"{r['rows_retrained_median']:.0f}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
