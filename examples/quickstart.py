"""Quickstart: train a SISA model on UCI Adult, predict, forget rows, prove it.

Run: python examples/quickstart.py [--rows 8000]
"""

import argparse

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler

from sisa import IncrementalPipeline, SISAClassifier
from sisa.datasets import load

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=None, help="subsample for a quick run")
ap.add_argument("--store", default="runs/quickstart")
args = ap.parse_args()

adult = load("adult", n_rows=args.rows)  # from the mglearn wheel, no download
ids = np.arange(len(adult.y))  # stable sample ids: what an erasure request names
model = IncrementalPipeline([("scale", StandardScaler()),  # scaling lives inside each shard
                             ("sgd", SGDClassifier(loss="log_loss"))])
clf = SISAClassifier(model, n_shards=8, n_slices=4, store=args.store, verbose=True)
clf.fit(adult.X, adult.y, sample_ids=ids)
print(f"accuracy {clf.score(adult.X, adult.y):.4f}; first predictions {clf.predict(adult.X[:5])}")

receipt = clf.forget(ids[:25])  # e.g. 25 users asked to be erased
print(f"forgot 25 rows: retrained {receipt['rows_retrained']:,} rows instead of "
      f"{receipt['rows_full_retrain']:,}, shards {[s for s, _ in receipt['affected']]}")

report = clf.verify()  # retrain from scratch, compare checkpoint bytes, scan for the ids
print(report.table())
assert report.ok
