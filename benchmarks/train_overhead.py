"""Training's fixed costs: per ``partial_fit`` call, per slice step, per shard retrain.

Store: 1M x 50 float32 (``benchmarks/_data.py``), S=32, R=8, SGDClassifier(loss="log_loss",
alpha=1e-5), 5 epochs: each slice step is 5 ``partial_fit`` calls on ~3.9k rows. Prints:

- ``call``: one ``partial_fit`` on a trained model under the step's ``config_context``,
  with ``classes`` (every call, as before) and without (later calls, now), on a whole
  slice and on 16 of its rows. The 16-row call is the fixed cost (validation, class
  checks, allocations); its share of the whole-slice call is what a faster call path
  can save at most.
- ``step``: ``Schedule.step`` on a whole slice and on 16 rows (seeds, config context and
  5 calls), median.
- ``shard``: ``train_shard(store, s, k, write=False)`` from a random slice k (what a
  forget's retrain runs, minus the checkpoint writes), median over shards.
- ``forget``: ``SISAClassifier.forget`` of one random id, median.

All figures are medians of CPU time of this process (``time.process_time``; training runs
on one thread, so it is steadier than wall time on a shared machine) and of wall time.

Run: python benchmarks/train_overhead.py [--rows 1000000] [--repeats 200] [--forgets 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
from sklearn import config_context
from threadpoolctl import threadpool_limits

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _data import synthetic_parquet


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU s, wall s) of ``repeats`` calls of ``fn``."""
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return float(np.median(cpu)), float(np.median(wall))


def per_call(sched, proto, X, y, classes, repeats: int) -> dict:
    """One ``partial_fit`` call on a trained model (a later pass), as the step made it
    before this change (``classes`` on every call) and without ``classes``."""
    model = sched.step(None, proto, X, y, classes, 0, 0, 0)  # a trained model
    out = {"rows": len(y)}
    for name, kw in (("classes", {"classes": classes}), ("no_classes", {})):
        def call(n, kw=kw):
            with config_context(assume_finite=True, skip_parameter_validation=True):
                model.partial_fit(X[:n], y[:n], **kw)

        full = timed(lambda call=call: call(len(y)), repeats)
        small = timed(lambda call=call: call(16), repeats)
        out.update({f"call_{name}_cpu_ms": full[0] * 1e3, f"call_{name}_wall_ms": full[1] * 1e3,
                    f"fixed_{name}_cpu_ms": small[0] * 1e3,
                    f"fixed_{name}_wall_ms": small[1] * 1e3,
                    f"fixed_{name}_share": small[0] / full[0]})
    return out


def per_step(sched, proto, X, y, classes, repeats: int) -> dict:
    model = sched.step(None, proto, X, y, classes, 0, 0, 0)
    full = timed(lambda: sched.step(model, proto, X, y, classes, 0, 0, 1), repeats)
    small = timed(lambda: sched.step(model, proto, X[:16], y[:16], classes, 0, 0, 1), repeats)
    return {"step_cpu_ms": full[0] * 1e3, "step_wall_ms": full[1] * 1e3,
            "step_fixed_cpu_ms": small[0] * 1e3, "step_fixed_wall_ms": small[1] * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=32)
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--forgets", type=int, default=20)
    args = ap.parse_args()
    from sklearn.linear_model import SGDClassifier

    from sisa import SISAClassifier, Store
    from sisa.engine import checkpoints as ck
    from sisa.engine.train import schedule_of, train_shard

    S, R, E = args.shards, args.slices, args.epochs
    root = tempfile.mkdtemp(prefix="sisa-bench-overhead-")
    store = Store.create(f"{root}/store", synthetic_parquet(args.rows, 50), label="label",
                         n_shards=S, n_slices=R)
    model = SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=S,
                           n_slices=R, epochs=E, backend="local")
    t = time.perf_counter()
    model.fit(store)
    fit_s = time.perf_counter() - t
    store = model.store_
    sched, proto = schedule_of(store), ck.prototype(store)
    classes = store.manifest.model["classes"]
    data = store.read_slice(0, 1)
    out = {"rows": store.n_rows, "n_shards": S, "n_slices": R, "epochs": E,
           "fit_local_s": round(fit_s, 3), "X": f"{data.X.dtype} {data.X.shape}",
           "y": str(data.y.dtype)}
    with threadpool_limits(limits=1):
        out.update(per_call(sched, proto, data.X, data.y, classes, args.repeats))
        out.update(per_step(sched, proto, data.X, data.y, classes, max(20, args.repeats // 5)))
    rng = np.random.default_rng(0)
    jobs = [(int(s), int(k)) for s, k in zip(rng.integers(0, S, 16), rng.integers(0, R, 16),
                                             strict=True)]
    cpu, wall = [], []
    for s, k in jobs:
        c, w = time.process_time(), time.perf_counter()
        train_shard(store, s, k, write=False)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    out.update(shard_cpu_ms=float(np.median(cpu)) * 1e3, shard_wall_ms=float(np.median(wall)) * 1e3)
    ids = store.read_index().column("sample_id").to_numpy()
    cpu, wall = [], []
    for i in rng.choice(ids, size=args.forgets, replace=False):
        c, w = time.process_time(), time.perf_counter()
        model.forget([int(i)])
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    out.update(forget_cpu_ms=float(np.median(cpu)) * 1e3,
               forget_wall_ms=float(np.median(wall)) * 1e3)
    for k, v in out.items():
        print(f"{k:>20}: {round(v, 4) if isinstance(v, float) else v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
