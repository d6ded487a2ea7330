"""What a store holds, as one plain dict: rows, shards, deletions, model, holdout, size.

``sisa status`` prints it; anything else that reports on a store (a dashboard, a
monitoring job) reads the same facts from here instead of from the manifest's layout.
"""

from __future__ import annotations

from ..engine.driver import ensure_servable
from ..errors import StaleModelError
from ..store.store import Store
from .receipts import history


def describe(store: Store) -> dict:
    """Summarise a store.

    Parameters
    ----------
    store : Store
        An open store.

    Returns
    -------
    dict
        ``store`` (its URI), ``fingerprint``, ``rows``, ``shards``, ``slices``,
        ``rows_per_shard``, ``spread`` (min, max, relative std of the shard sizes),
        ``deleted_rows``, ``forget_requests`` (receipts in the audit log), ``model`` (the
        estimator class), ``aggregation``, ``schedule``, ``epochs``, ``holdout`` (the
        score recorded at training, or None), ``bytes`` and ``files`` (every file the
        manifest names), ``pending`` (an unfinished forget's journal, or None),
        ``unservable`` (why the model will not predict: an interrupted request or missing
        checkpoints; None when it serves or there is no model), ``signed_by``
        (``ed25519:<hex>`` or None), ``id_type``, and ``group_column`` and ``group_type``
        (None for a store built without groups).
    """
    # The receipts module owns the audit log, whose receipts are counted (the manifest's
    # count can run one ahead of the log after a crash before the append).
    model = store.manifest.model or {}
    sizes = store.shard_sizes()
    files = store.referenced_files()
    return {
        "store": store.uri, "fingerprint": store.fingerprint, "rows": int(sizes.sum()),
        "shards": store.n_shards, "slices": store.n_slices, "rows_per_shard": sizes.tolist(),
        "spread": store.spread(), "deleted_rows": store.manifest.n_deleted,
        "forget_requests": len(history(store)),
        "model": model.get("estimator", {}).get("class"),
        "aggregation": model.get("aggregation"), "schedule": model.get("schedule"),
        "epochs": model.get("epochs"), "holdout": store.manifest.get("holdout"),
        "bytes": int(sum(m.bytes for m in files.values())), "files": len(files),
        "pending": _journal(store), "unservable": _unservable(store),
        "signed_by": f"ed25519:{store.audit.signer}" if store.audit.signer else None,
        "id_type": store.manifest.id_type,
        "group_column": store.manifest.schema.get("group_name"),
        "group_type": store.manifest.schema.get("group_type"),
    }


def _unservable(store: Store) -> str | None:
    if not store.manifest.model:
        return None
    try:
        ensure_servable(store)
    except StaleModelError as exc:
        return str(exc)
    return None


def _journal(store: Store) -> dict | None:
    """The journal as the manifest holds it (JSON, for ``sisa status --json``)."""
    pending = store.manifest.pending
    return None if pending is None else pending.to_json()
