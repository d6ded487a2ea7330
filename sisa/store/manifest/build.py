"""Building and committing manifests: a new store's, one from an inline (format-3 shaped)
dict, the in-place upgrade of a format-3 store, and :func:`write` / :func:`load`, the
manifest's disk half (the only writer of ``manifest.json``, called by
:meth:`sisa.store.Store.commit`)."""

from __future__ import annotations

from collections.abc import Mapping

from ..._version import __version__
from ..format.keys import ALG
from . import codec as io
from .codec import MANIFEST, key_cell
from .entries import Blob, BucketFile, CheckpointFile, ShardRef, SliceFile
from .model import Manifest, now_iso
from .pages import _page_edits, _pages, fingerprint


def initial(*, store_id: str, signer_key: str | None, assignment: dict, schema: dict,
            slices: dict, index: dict) -> Manifest:
    """The manifest of a freshly ingested store: data, no model, an empty audit log.
    ``slices`` maps :func:`slice_key` to entries; ``index`` is ``{"parts": [...], "rows"}``."""
    return from_flat({
        "format": io.format_of(schema), "sisa_version": __version__, "generation": 0,
        "created": now_iso(),
        "store_id": store_id,
        "signer": {"alg": ALG, "public_key": signer_key} if signer_key else None,
        "assignment": assignment, "schema": schema, "slices": slices, "index": index,
        "tombstones": None, "n_deleted": 0, "model": None, "pending": None,
        "audit": {"receipts": 0, "head": None, "log_bytes": 0}, "last_receipt": None,
    })


def _entry(kind: type[Blob], meta, where: str):
    """An entry given as a record or as its JSON object (read strictly)."""
    return meta if isinstance(meta, kind) else kind.from_json(meta, f"manifest {where}")


def from_flat(d: Mapping) -> Manifest:
    """A manifest from one dict holding every section inline (:meth:`Manifest.flat`, or
    a format-3 manifest being upgraded), entries as records or their JSON objects; its
    leaves are built here, not yet written."""
    d = dict(d)
    n_shards = d["assignment"]["n_shards"]
    shard_leaves: dict[int, dict] = {s: {"shard": s, "slices": {}, "checkpoints": {}}
                                     for s in range(n_shards)}
    for key, meta in d.pop("slices").items():
        s, r = key_cell(key)
        shard_leaves[s]["slices"][str(r)] = _entry(SliceFile, meta, f"slice {key}")
    model = d.get("model")
    if model:
        model = dict(model)
        for key, meta in model.pop("checkpoints", {}).items():
            s, r = key_cell(key)
            shard_leaves[s]["checkpoints"][str(r)] = _entry(CheckpointFile, meta,
                                                            f"checkpoint {key}")
    index = d.pop("index")
    tombs = d.pop("tombstones") or {"parts": {}, "rows": 0}
    index_parts = [_entry(BucketFile, m, f"index bucket {b}") for b, m in enumerate(index["parts"])]
    tomb_parts = {b: _entry(BucketFile, m, f"tombstone bucket {b}")
                  for b, m in tombs["parts"].items()}
    n_buckets = len(index_parts)
    root = {**d, "format": io.format_of(d["schema"]), "model": model,
            "shards": [ShardRef("", "", 0, 0)] * n_shards,  # each replaced by its new leaf
            "index": {"rows": index["rows"], "buckets": n_buckets,
                      "pages": [None] * _pages(n_buckets)},
            "tombstones": {"rows": tombs["rows"], "pages": {}}}
    leaves = {("shards", s): (leaf, io.shard_leaf_dir(s)) for s, leaf in shard_leaves.items()}
    leaves.update(_page_edits("index", index_parts, {}, True))
    leaves.update(_page_edits("tombstones", tomb_parts, {}, True))
    new = Manifest(root, {})._with(leaves=leaves)
    return new._with(fingerprint=fingerprint(new))


def upgrade(loc, key):
    """Convert a format-3 store (one manifest file) to this format in place: the same
    data files, checkpoints and audit log, now named by leaves. Checks the old
    manifest's checksum, signature and paths first; a signed store needs its owner's
    ``key``. Returns the new manifest, or None if the store is already current."""
    root = io.read_root(loc, formats=(*io.READABLE, io.OLD_FORMAT))
    if root["format"] in io.READABLE:
        return None
    io.check_manifest_paths(root, loc.path(MANIFEST))
    new = from_flat(root)
    new = new._with(generation=root["generation"] + 1, updated=now_iso(),
                    upgraded_from=io.OLD_FORMAT)
    write(loc, new, key)
    return new.written()


def write(loc, manifest: Mapping, key) -> None:
    """Commit ``manifest`` at ``loc``: its new leaves (content-addressed), then the root,
    with its checksum and (for a signed store) the owner's signature. A plain dict is
    taken as a :meth:`Manifest.flat` state. The only writer of ``manifest.json``."""
    if not isinstance(manifest, Manifest):
        manifest = from_flat(manifest)
    io.write(loc, manifest, manifest._unwritten.values(), key)


def load(loc) -> Manifest:
    """Read and check the root and every leaf: checksum, format, signer and signature,
    audit section, leaf hashes, and that every path named stays inside the store."""
    root, leaves = io.load(loc)
    m = Manifest(root, leaves)
    io.check_paths(m, loc)
    return m
