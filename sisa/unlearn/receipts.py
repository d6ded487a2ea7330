"""The audit log: one JSON receipt per forget, appended and fsynced, never rewritten."""

from __future__ import annotations

import hashlib
import hmac
import json

from ..store.store import Store, canonical_json

LOG = "audit/receipts.jsonl"


def ids_digest(store: Store, ids) -> tuple[str, list]:
    """HMAC-SHA256, under the store's audit key, of the sorted, de-duplicated ids (ints
    and strings kept apart); and those ids.

    Keyed like the tombstones: a plain sha256 of one small id is reversed by trying
    every id, so a receipt shown to a third party would leak what was forgotten. Who
    holds the store (and so the key) and the ids can recompute it.
    """
    uniq = sorted({(0, int(v)) if isinstance(v, int) or (hasattr(v, "dtype") and v.dtype.kind in
                   "iu") else (1, str(v)) for v in ids})
    key = bytes.fromhex(store.manifest["audit_key"])
    digest = hmac.new(key, canonical_json(uniq), hashlib.sha256).hexdigest()
    return digest, [v for _, v in uniq]


def history(store: Store) -> list[dict]:
    """Every receipt in the store's audit log, oldest first."""
    if not store.loc.exists(LOG):
        return []
    text = store.loc.read_bytes(LOG).to_pybytes().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def find(store: Store, *, ids_sha256: str | None = None, request_id: str | None = None):
    for r in reversed(history(store)):
        if (ids_sha256 and r["ids_sha256"] == ids_sha256) or (
                request_id and r["request_id"] == request_id):
            return r
    return None


def append(store: Store, receipt: dict) -> None:
    """Log a receipt once: a repair that re-finishes a forget does not log it twice."""
    if find(store, request_id=receipt["request_id"]) is None:
        store.loc.append_line(LOG, json.dumps(receipt, sort_keys=True))
