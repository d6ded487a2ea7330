"""A PyTorch CNN per shard on Fashion-MNIST: train, forget exactly, prove it.

Each of the S shard models is a small CNN (``sisa.deep.TorchClassifier``), trained slice
by slice on the CPU as Ray tasks, deterministically: forgetting rows retrains only the
shards that held them, and the result is byte-identical to training without them, which
``verify`` proves by retraining from scratch. A few minutes on two CPU cores.

Needs ``pip install 'sisa[torch]'`` and ``apt-get install -y dataset-fashion-mnist``.
Run: python examples/deep_fashion_mnist.py [--rows 12000] [--epochs 3]
"""

import argparse
import time

import numpy as np

from sisa import SISAClassifier
from sisa.datasets import load
from sisa.deep import SMALL_CNN_LAYERS, TorchClassifier

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=12_000, help="training rows (of 60,000)")
ap.add_argument("--epochs", type=int, default=3, help="passes over every row")
ap.add_argument("--shards", type=int, default=5)
ap.add_argument("--slices", type=int, default=4)
ap.add_argument("--store", default="runs/deep-fashion-mnist")
ap.add_argument("--backend", default="auto", choices=("auto", "ray", "local"))
args = ap.parse_args()

train = load("fashion-mnist", n_rows=args.rows)  # from the Debian package, no download
test = load("fashion-mnist", kind="t10k", n_rows=2000)
ids = np.arange(len(train.y))  # stable sample ids: what an erasure request names

# The network is data (a list of layers), so the store records it declaratively and a
# checkpoint holds only numpy arrays: loading the store never runs code from it.
cnn = TorchClassifier(SMALL_CNN_LAYERS, optimizer="adam", lr=4e-3, batch_size=64)
clf = SISAClassifier(cnn, n_shards=args.shards, n_slices=args.slices, epochs=args.epochs,
                     store=args.store, backend=args.backend)
t = time.perf_counter()
clf.fit(train.X, train.y, sample_ids=ids)
print(f"trained {args.shards} CNNs x {args.slices} slices on {len(ids):,} images in "
      f"{time.perf_counter() - t:.1f}s; test accuracy {clf.score(test.X, test.y):.4f}")

for request in ([17], list(range(100, 150))):  # one user, then a batch of 50
    t = time.perf_counter()
    receipt = clf.forget(request)
    print(f"forgot {len(request)} row(s) in {time.perf_counter() - t:.1f}s: retrained "
          f"{receipt['rows_retrained']:,} rows instead of {receipt['rows_full_retrain']:,}, "
          f"shards {[s for s, _ in receipt['affected']]}")

report = clf.verify()  # retrain every shard from scratch and compare checkpoint bytes
print(report.table())
assert report.ok
print(f"test accuracy after forgetting: {clf.score(test.X, test.y):.4f}")
