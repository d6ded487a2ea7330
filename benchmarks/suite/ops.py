"""What the benchmarks time: building a store and a model of the suite's size."""

from __future__ import annotations

from pathlib import Path


def make_store(uri: str, parquet: Path, size: dict):
    import sisa

    layout = {"label": "label", "n_shards": size["shards"], "n_slices": size["slices"]}
    if not hasattr(sisa, "IngestOptions"):  # a baseline commit from before IngestOptions
        return sisa.Store.create(uri, str(parquet), **layout)
    return sisa.Store.create(uri, str(parquet), options=sisa.IngestOptions(**layout))


def rows(store):
    """The store's row reader: ``store.rows`` (the store itself at a baseline commit from
    before the reader was a composed object), so two commits compare either side."""
    return getattr(store, "rows", store)


def make_model(size: dict):
    from sklearn.linear_model import SGDClassifier

    from sisa import SISAClassifier

    return SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=size["shards"],
                          n_slices=size["slices"], backend="local")
