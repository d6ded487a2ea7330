"""What the benchmarks time: building a store and a model of the suite's size."""

from __future__ import annotations

from pathlib import Path


def make_store(uri: str, parquet: Path, size: dict):
    from sisa import IngestOptions, Store

    return Store.create(uri, str(parquet),
                        options=IngestOptions(label="label", n_shards=size["shards"],
                                              n_slices=size["slices"]))


def make_model(size: dict):
    from sklearn.linear_model import SGDClassifier

    from sisa import SISAClassifier

    return SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=size["shards"],
                          n_slices=size["slices"], backend="local")
