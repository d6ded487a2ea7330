"""Building manifests: a new store's, one from an inline (format-3 shaped) dict, and the
in-place upgrade of a format-3 store. Part of :mod:`sisa.store.manifest`, which
re-exports these names."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import manifest_io as io
from .manifest_io import MANIFEST, canonical_json, key_cell

if TYPE_CHECKING:
    from .manifest import Manifest

PAGE = 64  # index/tombstone buckets per page leaf


def _pages(n_buckets: int) -> int:
    return (n_buckets + PAGE - 1) // PAGE


def _page_edits(kind: str, old: Mapping | list, changed: Mapping[int, dict], full: bool
                ) -> dict:
    """New page leaves for the buckets in ``changed`` (every page, when ``full``)."""
    current = dict(enumerate(old)) if isinstance(old, list) else {int(b): m
                                                                  for b, m in old.items()}
    current.update(changed)
    pages = {b // PAGE for b in (current if full else changed)}
    return {(kind, p): ({"page": p, "parts": {str(b): m for b, m in sorted(current.items())
                                              if b // PAGE == p}}, io.page_leaf_dir(kind, p))
            for p in sorted(pages)}


def initial(*, store_id: str, signer_key: str | None, assignment: dict, schema: dict,
            slices: dict, index: dict) -> Manifest:
    """The manifest of a freshly ingested store: data, no model, an empty audit log.
    ``slices`` maps :func:`slice_key` to entries; ``index`` is ``{"parts": [...], "rows"}``."""
    from .._version import __version__
    from .keys import ALG
    from .manifest import now_iso

    return from_flat({
        "format": io.format_of(schema), "sisa_version": __version__, "generation": 0,
        "created": now_iso(),
        "store_id": store_id,
        "signer": {"alg": ALG, "public_key": signer_key} if signer_key else None,
        "assignment": assignment, "schema": schema, "slices": slices, "index": index,
        "tombstones": None, "n_deleted": 0, "model": None, "pending": None,
        "audit": {"receipts": 0, "head": None, "log_bytes": 0}, "last_receipt": None,
    })


def from_flat(d: Mapping) -> Manifest:
    """A manifest from one dict holding every section inline (:meth:`Manifest.flat`, or
    a format-3 manifest being upgraded); its leaves are built here, not yet written."""
    d = dict(d)
    n_shards = d["assignment"]["n_shards"]
    shard_leaves: dict[int, dict] = {s: {"shard": s, "slices": {}, "checkpoints": {}}
                                     for s in range(n_shards)}
    for key, meta in d.pop("slices").items():
        s, r = key_cell(key)
        shard_leaves[s]["slices"][str(r)] = meta
    model = d.get("model")
    if model:
        model = dict(model)
        for key, meta in model.pop("checkpoints", {}).items():
            s, r = key_cell(key)
            shard_leaves[s]["checkpoints"][str(r)] = meta
    index = d.pop("index")
    tombs = d.pop("tombstones") or {"parts": {}, "rows": 0}
    n_buckets = len(index["parts"])
    root = {**d, "format": io.format_of(d["schema"]), "model": model,
            "shards": [{"file": "", "sha256": "", "bytes": 0, "rows": 0}] * n_shards,
            "index": {"rows": index["rows"], "buckets": n_buckets,
                      "pages": [None] * _pages(n_buckets)},
            "tombstones": {"rows": tombs["rows"], "pages": {}}}
    leaves = {("shards", s): (leaf, io.shard_leaf_dir(s)) for s, leaf in shard_leaves.items()}
    leaves.update(_page_edits("index", index["parts"], {}, True))
    leaves.update(_page_edits("tombstones", tombs["parts"], {}, True))
    from .manifest import Manifest

    new = Manifest(root, {})._with(leaves=leaves)
    return new._with(fingerprint=fingerprint(new))


def fingerprint(manifest) -> str:
    """Content hash of the training data state: assignment, schema and every slice hash
    (the same value format 3 gave)."""
    # canonical_json({"assignment", "schema", "slices": [every slice's sha256]}), streamed
    # from per-shard parts kept by leaf hash: a forget re-encodes only its shards' parts
    parts = manifest.shard_parts("fingerprint", lambda leaf: canonical_json(
        [leaf["slices"][str(r)]["sha256"] for r in range(len(leaf["slices"]))])[1:-1])
    return hashlib.sha256(b'{"assignment":' + canonical_json(manifest["assignment"])
                          + b',"schema":' + canonical_json(manifest["schema"])
                          + b',"slices":[' + b",".join(parts) + b"]}").hexdigest()


def upgrade(loc, key):
    """Convert a format-3 store (one manifest file) to this format in place: the same
    data files, checkpoints and audit log, now named by leaves. Checks the old
    manifest's checksum, signature and paths first; a signed store needs its owner's
    ``key``. Returns the new manifest, or None if the store is already current."""
    root = io.read_root(loc, formats=(*io.READABLE, io.OLD_FORMAT))
    if root["format"] in io.READABLE:
        return None
    from .manifest import now_iso, write

    io.check_manifest_paths(root, loc.path(MANIFEST))
    new = from_flat(root)
    new = new._with(generation=root["generation"] + 1, updated=now_iso(),
                    upgraded_from=io.OLD_FORMAT)
    write(loc, new, key)
    return new.written()
