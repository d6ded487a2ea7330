"""What the benchmarks time: building a store and a model of the suite's size.

``python -m benchmarks.compare`` runs this suite against the sisa of *any* commit, so the
calls here must work on old and new APIs alike: where the API changed, ops ask the sisa
at hand what it takes (a signature, an attribute) instead of assuming today's form.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

# Where IngestOptions lives once Store.create takes one (first found wins); older sisa
# has none and takes the layout as keywords.
_OPTIONS_MODULES = ("sisa", "sisa.store", "sisa.store.write.options")


def _ingest_options_class():
    for name in _OPTIONS_MODULES:
        try:
            cls = getattr(importlib.import_module(name), "IngestOptions", None)
        except ImportError:
            continue
        if cls is not None:
            return cls
    raise RuntimeError("Store.create takes options= but no IngestOptions was found in "
                       f"{', '.join(_OPTIONS_MODULES)}")


def make_store(uri: str, parquet: Path, size: dict):
    from sisa import Store

    layout = {"label": "label", "n_shards": size["shards"], "n_slices": size["slices"]}
    if "options" in inspect.signature(Store.create).parameters:
        return Store.create(uri, str(parquet), options=_ingest_options_class()(**layout))
    return Store.create(uri, str(parquet), **layout)


def read_slice(store, shard: int, slice_: int):
    """One slice's rows: ``store.rows.read_slice`` once the read side is a composed object,
    ``store.read_slice`` on older sisa (where reading was a mixin of the store)."""
    rows = getattr(store, "rows", None)
    if rows is not None and hasattr(rows, "read_slice"):
        return rows.read_slice(shard, slice_)
    return store.read_slice(shard, slice_)


def rows_retrained(receipt) -> int:
    """A forget's rows retrained: a dict key on older sisa, an attribute on typed records."""
    if isinstance(receipt, dict):
        return receipt["rows_retrained"]
    return receipt.rows_retrained


def make_model(size: dict):
    from sklearn.linear_model import SGDClassifier

    from sisa import SISAClassifier

    return SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=size["shards"],
                          n_slices=size["slices"], backend="local")
