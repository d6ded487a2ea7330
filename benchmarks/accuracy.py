"""Accuracy benchmark (issue: engine): Fashion-MNIST, SGDClassifier, S shards (default 20),
hard- and soft-vote accuracy next to the same estimator trained monolithically.

Needs the Debian package dataset-fashion-mnist.
Run: python -m benchmarks.accuracy [--shards 20] [--slices 4] [--rows 60000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.linear_model import SGDClassifier


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=None)
    args = ap.parse_args()
    from sisa import SISAClassifier
    from sisa.datasets import load

    train, test = load("fashion-mnist", n_rows=args.rows), load("fashion-mnist", kind="t10k")
    est = SGDClassifier(loss="log_loss", alpha=1e-4)
    res = {"train_rows": len(train.y), "test_rows": len(test.y), "shards": args.shards,
           "slices": args.slices, "epochs_per_slice": args.epochs}
    t = time.perf_counter()
    soft = SISAClassifier(est, n_shards=args.shards, n_slices=args.slices, epochs=args.epochs,
                          aggregation="soft").fit(train.X, train.y)
    res["sisa_fit_s"] = round(time.perf_counter() - t, 1)
    res["sisa_soft_accuracy"] = round(soft.score(test.X, test.y), 4)
    hard = SISAClassifier(est, n_shards=args.shards, n_slices=args.slices, epochs=args.epochs,
                          aggregation="hard").fit(soft.store_)  # same store, same shard models
    res["sisa_hard_accuracy"] = round(hard.score(test.X, test.y), 4)
    mono = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0)
    t = time.perf_counter()
    for _ in range(args.epochs):
        mono.partial_fit(train.X, train.y, classes=np.arange(10))
    res["monolithic_same_passes_s"] = round(time.perf_counter() - t, 1)
    res["monolithic_same_passes_accuracy"] = round(mono.score(test.X, test.y), 4)
    t = time.perf_counter()
    full = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0).fit(train.X, train.y)
    res["monolithic_fit_s"] = round(time.perf_counter() - t, 1)
    res["monolithic_fit_accuracy"] = round(full.score(test.X, test.y), 4)
    print(json.dumps(res, indent=1))
    print(f"Fashion-MNIST test accuracy: SISA S={args.shards} soft {res['sisa_soft_accuracy']:.4f}"
          f", hard {res['sisa_hard_accuracy']:.4f} | monolithic SGD, same passes "
          f"{res['monolithic_same_passes_accuracy']:.4f}, SGD .fit() "
          f"{res['monolithic_fit_accuracy']:.4f}")


if __name__ == "__main__":
    main()
