"""Training's fixed costs: per ``partial_fit`` call, per slice step, per shard, per forget.

Store: 1M x 50 float32 (``benchmarks/_data.py``), S=32, R=8, SGDClassifier(loss="log_loss",
alpha=1e-5), 5 epochs: each slice step is 5 ``partial_fit`` calls on ~3.9k rows.

"before" is the code this change replaced, put back in the same process: the slice step
that passed ``classes`` to every ``partial_fit`` call, the unpickler that resolved every
global a checkpoint names, and the shard task's re-reading of slices 0..r at every
cumulative step (``legacy()`` below). Before and after alternate call by call,
so the machine's load (other jobs on a shared machine) hits both alike; each figure is a
median. Prints:

- ``call``: one ``partial_fit`` on a trained model under the step's ``config_context``,
  with ``classes`` (before) and without (after), on a whole slice and on 16 of its rows:
  the 16-row call is the fixed cost (validation, class checks, allocations).
- ``step``: ``Schedule.step`` (seeds, config context, 5 calls) on a whole slice and on
  16 rows.
- ``load``: loading one checkpoint through the restricted unpickler.
- ``shard``: ``train_shard(store, s, k, write=False)`` from a random slice k (a forget's
  retrain minus the checkpoint writes).
- ``forget``: ``SISAClassifier.forget`` of one random id (retrain, store rewrite, commits,
  and reloading the S shard models).
- ``shard_cumul.``: as ``shard``, with the cumulative schedule (step r trains on slices
  0..r), whose slices were read (hash-checked) and concatenated again at every step
  before this change and are now read once per task.

Times are CPU time of this process (``time.process_time``; training runs on one thread)
and wall time.

Run: python -m benchmarks.train_overhead [--rows 1000000] [--repeats 200] [--forgets 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time

import numpy as np
from sklearn import config_context
from sklearn.base import clone, is_classifier
from threadpoolctl import threadpool_limits

from benchmarks._data import synthetic_parquet


def _old_step(self, model, prototype, X, y, classes, random_state, shard, sl):
    """``Schedule._step`` before this change: ``classes`` on every call."""
    from sisa.engine.schedule import _seeded, _set_seed, derive_seed

    if not self.incremental:
        est = clone(prototype)
        _set_seed(_seeded(est), derive_seed(random_state, shard, sl))
        return est.fit(X, y)
    est = clone(prototype) if model is None else model
    kw = {"classes": classes} if is_classifier(prototype) else {}
    owners = _seeded(est)
    for p in range(self.passes()):
        _set_seed(owners, derive_seed(random_state, shard, sl, p))
        est.partial_fit(X, y, **kw)
    return est


def _old_find_class(self, module, name):
    """The unpickler before this change: every global a checkpoint names, resolved again."""
    from sisa.engine.safe_pickle import resolve

    return resolve(module, name, trusted=self._trusted, source=self._source)


def _old_rows_of(self, slices):
    """A shard task's rows before this change: slices 0..r read again at every step."""
    data = self.store.rows.read_slices(self.shard, slices)
    return data.X, data.y


@contextlib.contextmanager
def legacy(on: bool):
    """Run the code this change replaced (``on``) or the current code."""
    from sisa.engine import safe_pickle, train
    from sisa.engine.schedule import Schedule

    saved = Schedule._step, safe_pickle._Unpickler.find_class, train._ShardRows.of
    if on:
        Schedule._step, safe_pickle._Unpickler.find_class, train._ShardRows.of = \
            _old_step, _old_find_class, _old_rows_of
    try:
        yield
    finally:
        Schedule._step, safe_pickle._Unpickler.find_class, train._ShardRows.of = saved


def ab(before, after, repeats: int) -> dict:
    """Median CPU and wall ms of ``before(i)`` and ``after(i)``, called alternately (which
    goes first alternates too); ``i`` numbers the pair, so both sides get the same work."""
    t = {k: [] for k in ("b_cpu", "b_wall", "a_cpu", "a_wall")}
    for i in range(repeats):
        for side, fn in (("b", before), ("a", after)) if i % 2 == 0 else \
                (("a", after), ("b", before)):
            c, w = time.process_time(), time.perf_counter()
            fn(i)
            t[f"{side}_cpu"].append(time.process_time() - c)
            t[f"{side}_wall"].append(time.perf_counter() - w)
    return {k: float(np.median(v)) * 1e3 for k, v in t.items()}  # ms


def measure(store, model, args) -> dict:
    from sisa.engine import checkpoints as ck
    from sisa.engine.train import schedule_of, train_shard

    S, R = store.n_shards, store.n_slices
    sched, proto = schedule_of(store), ck.prototype(store)
    classes = store.manifest.model["classes"]
    data = store.rows.read_slice(0, 1)
    X, y = data.X, data.y
    out = {}
    with threadpool_limits(limits=1):
        trained = sched.step(None, proto, X, y, classes, 0, 0, 0)

        def call(n, **kw):
            with config_context(assume_finite=True, skip_parameter_validation=True):
                trained.partial_fit(X[:n], y[:n], **kw)

        out["call"] = ab(lambda i: call(len(y), classes=classes), lambda i: call(len(y)),
                         args.repeats)
        out["call_16_rows"] = ab(lambda i: call(16, classes=classes), lambda i: call(16),
                                 args.repeats)

        def step(n, old):
            with legacy(old):
                sched.step(trained, proto, X[:n], y[:n], classes, 0, 0, 1)

        reps = max(20, args.repeats // 5)
        out["step"] = ab(lambda i: step(len(y), True), lambda i: step(len(y), False), reps)
        out["step_16_rows"] = ab(lambda i: step(16, True), lambda i: step(16, False), reps)

    def load(old):
        with legacy(old):
            ck.load_verified(store, store.manifest.checkpoint(3, R - 1))

    out["load"] = ab(lambda i: load(True), lambda i: load(False), reps)
    rng = np.random.default_rng(0)
    jobs = [(int(rng.integers(S)), int(rng.integers(R))) for _ in range(args.shards)]

    def shard(i, old):
        with legacy(old):
            train_shard(store, *jobs[i], write=False)

    out["shard"] = ab(lambda i: shard(i, True), lambda i: shard(i, False), args.shards)
    # pairs of ids from one (shard, slice) cell: both sides retrain the same shard from
    # the same slice
    ids = store.rows.read_index().column("sample_id").to_numpy()
    _, shards, slices = store.rows.locate(ids)
    pairs = []
    for s, k in zip(rng.integers(S, size=args.forgets), rng.integers(R, size=args.forgets),
                    strict=True):
        pair = rng.choice(np.flatnonzero((shards == s) & (slices == k)), 2, replace=False)
        pairs.append([int(x) for x in ids[pair]])

    def forget(i, old):
        with legacy(old):
            model.forget([pairs[i][int(old)]])

    out["forget"] = ab(lambda i: forget(i, True), lambda i: forget(i, False), args.forgets)
    # the cumulative schedule (step r trains on slices 0..r): a shard from a random slice
    model.set_params(schedule="cumulative").fit(store)

    def cumulative(i, old):
        with legacy(old):
            train_shard(model.store_, *jobs[i], write=False)

    out["shard_cumul."] = ab(lambda i: cumulative(i, True), lambda i: cumulative(i, False),
                             args.shards)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--shards", type=int, default=16, help="shard retrains per side")
    ap.add_argument("--forgets", type=int, default=20, help="forgets per side")
    args = ap.parse_args()
    from sklearn.linear_model import SGDClassifier

    from sisa import IngestOptions, SISAClassifier, Store

    S, R, E = 32, 8, 5
    root = tempfile.mkdtemp(prefix="sisa-bench-overhead-")
    store = Store.create(f"{root}/store", synthetic_parquet(args.rows, 50),
                         options=IngestOptions(label="label", n_shards=S, n_slices=R))
    model = SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=S,
                           n_slices=R, epochs=E, backend="local")
    model.fit(store)
    out = measure(model.store_, model, args)
    print(f"{args.rows:,} rows, S={S}, R={R}, SGDClassifier(log_loss), {E} epochs; "
          f"a slice: {model.store_.slice_rows(0, 1):,} rows. Medians, ms:")
    print(f"{'':>14} {'before cpu':>11} {'after cpu':>10} {'saved':>7} "
          f"{'before wall':>12} {'after wall':>11}")
    for k, v in out.items():
        print(f"{k:>14} {v['b_cpu']:11.3f} {v['a_cpu']:10.3f} "
              f"{1 - v['a_cpu'] / v['b_cpu']:7.1%} {v['b_wall']:12.3f} {v['a_wall']:11.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
