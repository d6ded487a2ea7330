"""Manifest pages and the data fingerprint: pure functions over leaf bodies, at the bottom
of :mod:`sisa.store.manifest` so the model and its builders both use them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from . import codec as io
from .codec import canonical_json
from .entries import BucketFile

PAGE = 64  # index/tombstone buckets per page leaf


def _pages(n_buckets: int) -> int:
    return (n_buckets + PAGE - 1) // PAGE


def _page_edits(kind: str, old: Mapping | list, changed: Mapping[int, BucketFile],
                full: bool) -> dict:
    """New page leaves for the buckets in ``changed`` (every page, when ``full``)."""
    current = dict(enumerate(old)) if isinstance(old, list) else {int(b): m
                                                                  for b, m in old.items()}
    current.update(changed)
    pages = {b // PAGE for b in (current if full else changed)}
    return {(kind, p): ({"page": p, "parts": {str(b): m for b, m in sorted(current.items())
                                              if b // PAGE == p}}, io.page_leaf_dir(kind, p))
            for p in sorted(pages)}


def fingerprint(manifest) -> str:
    """Content hash of the training data state: assignment, schema and every slice hash
    (the same value format 3 gave)."""
    # canonical_json({"assignment", "schema", "slices": [every slice's sha256]}), streamed
    # from per-shard parts kept by leaf hash: a forget re-encodes only its shards' parts
    parts = manifest.shard_parts("fingerprint", lambda leaf: canonical_json(
        [leaf["slices"][str(r)].sha256 for r in range(len(leaf["slices"]))])[1:-1])
    return hashlib.sha256(b'{"assignment":' + canonical_json(manifest["assignment"])
                          + b',"schema":' + canonical_json(manifest["schema"])
                          + b',"slices":[' + b",".join(parts) + b"]}").hexdigest()
