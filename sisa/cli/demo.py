"""``sisa demo``: the main job end to end on a real dataset (train, forget, verify)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..errors import InputError
from ..store.write.holdout import split
from .common import estimator_params, load_builtin, ratio, settings

INDENT = "      "  # under the "[k/4] " step headings


def cmd_demo(args: argparse.Namespace) -> int:
    """Train on a real dataset, forget one row and then a batch, verify, print each step.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa demo`` options.

    Returns
    -------
    int
        0 when the final verify passes, 1 otherwise.
    """
    from ..unlearn import verify
    from ..unlearn.receipts import log_path

    ds = load_builtin(args.dataset, args.rows)
    if ds.task != "classification":
        raise InputError("the demo trains a classifier: use --dataset adult or fashion-mnist")
    store = args.store or f"runs/demo-{args.dataset}"
    tr, te = split(len(ds.y), 0.2, 0)
    clf = _train(args, ds, tr, te, store)
    r = _forget(args, clf, tr)
    print(f"{INDENT}holdout accuracy now {clf.score(ds.X[te], ds.y[te]):.4f}")
    print("[3/4] verifying: retrain every shard from scratch, compare checkpoint bytes, scan for "
          "deleted ids")
    rep = verify(clf.store_, settings=settings(args).replace(progress=True))  # always shown
    print("\n".join(INDENT + line for line in rep.table().splitlines()))
    print(f"[4/4] receipt {r['request_id']} written to {store}/{log_path(clf.store_)}; inspect "
          f"with `sisa status {store}` and `sisa history {store}`")
    return 0 if rep.ok else 1


def _train(args: argparse.Namespace, ds, tr: np.ndarray, te: np.ndarray, store: str):
    """Step 1: fit on the training rows and record the holdout accuracy in the store."""
    from ..engine.presets import from_preset
    from ..estimators import SISAClassifier

    print(f"[1/4] {ds.name}: {len(tr):,} training rows, {len(te):,} holdout rows, "
          f"{ds.X.shape[1]} features")
    t0 = time.perf_counter()
    clf = SISAClassifier(from_preset("sgd"), n_shards=args.shards, n_slices=args.slices,
                         store=store, **estimator_params(args, progress=True))  # always shown
    clf.fit(ds.X[tr], ds.y[tr], sample_ids=tr)
    acc = clf.score(ds.X[te], ds.y[te])
    holdout = {"rows": len(te), "metric": "accuracy", "score": round(acc, 4), "at": "training"}
    with clf.store_.lock():
        clf.store_.commit(clf.store_.manifest.with_holdout(holdout))
    print(f"{INDENT}trained {args.shards} shards x {args.slices} slices in "
          f"{time.perf_counter() - t0:.1f}s; holdout accuracy {acc:.4f}")
    return clf


def _forget(args: argparse.Namespace, clf, tr: np.ndarray) -> dict:
    """Step 2: one person's request (one row), then a batch as one request; returns the
    last receipt."""
    rng = np.random.default_rng(0)
    U = rng.choice(tr, size=min(args.forget + 1, len(tr) // 2), replace=False)
    print("[2/4] forgetting: one person's erasure request (1 row), then a batch of "
          f"{len(U) - 1} rows as one request")
    for ids in (U[:1], U[1:]):
        r = clf.forget(ids.tolist(), progress=True)
        print(f"{INDENT}{len(ids):,} row(s): {len(r['affected'])} of {args.shards} shards "
              f"retrained from the slice that held them, {r['rows_retrained']:,} row-passes "
              f"instead of {r['rows_full_retrain']:,} "
              f"({ratio(r['rows_full_retrain'], r['rows_retrained'])}), {r['wall_time_s']:.2f}s")
        if len(r["affected"]) == args.shards and len(ids) > 1:
            print(f"{INDENT}(random rows spread over every shard: SISA saves most on few or "
                  "clustered deletions; see `sisa plan`)")
    return r
