"""The manifest on disk: root and leaf files, their checks, signing, and format 3.

Only :mod:`sisa.store.manifest` calls this module; see it for the structure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping

from ...errors import CorruptStoreError, KeyFileError, StoreError
from ..format import keys
from ..format.layout import check_manifest_paths
from ..io.fs import MissingFileError
from .entries import (
    Blob,
    BucketFile,
    CheckpointFile,
    LeafRef,
    ShardRef,
    SliceFile,
    entry_json,
)

FORMAT = "sisa-store/4"
# Format 4 plus slice files an older sisa would misread: typed columns, a sparse block or a
# group-hash column. A store needing none of them keeps format 4 (and its bytes), so an
# older sisa still reads it; one that does is refused by an older sisa instead of misread.
FORMAT_LAYOUTS = "sisa-store/5"
READABLE = (FORMAT, FORMAT_LAYOUTS)
OLD_FORMAT = "sisa-store/3"  # one file holding every entry: `sisa upgrade` converts it
MANIFEST = "manifest.json"
_HEAD = re.compile(rb'\{"checksum":"([0-9a-f]{64})","signature":"([0-9a-f]*)","manifest":')
_HEX32 = r"([0-9a-f]{32})"
# Leaves share one folder, so a commit's new leaves cost one directory fsync.
SHARD_LEAF = re.compile(rf"meta/shard-(\d{{4,}})-{_HEX32}\.json")
PAGE_LEAF = {"index": re.compile(rf"meta/index-(\d{{4,}})-{_HEX32}\.json"),
             "tombstones": re.compile(rf"meta/tombstones-(\d{{4,}})-{_HEX32}\.json")}
_DIGITS = re.compile(r"\d+")
_LOAD_ATTEMPTS = 8  # roots read while leaves vanish under newer commits, then give up
# Parsed leaves by sha256: immutable content, so a process reads each leaf once.
_LEAVES: dict[tuple[str, str], dict] = {}  # (kind, sha256) -> body, shape and paths checked
_MAX_CACHED = 50_000
_PARTS: dict[str, dict[str, object]] = {}  # name -> shard leaf sha256 -> shard_parts value
_MISS = object()


def canonical_json(obj) -> bytes:
    """Sorted keys, no spaces: the same value always gives the same bytes (a file entry
    as its JSON object, :func:`~sisa.store.manifest.entries.entry_json`)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=entry_json).encode()


# Canonical bytes of file entries by the record itself (identity: a frozen record always
# gives the same bytes; states share their unchanged records), so a commit re-encodes only
# the entries and leaf references that changed.
_ENCODED: dict[int, tuple[Blob, bytes]] = {}
_ENTRY_SECTIONS = frozenset({"shards", "index", "tombstones"})  # the root's leaf references


def root_json(root: Mapping) -> bytes:
    """``canonical_json(dict(root))``, the same bytes, with each leaf reference's encoding
    kept (a 10M-row store's root names 256 shard leaves and 64 pages: encoding them all
    again took ~0.8 ms of each commit)."""
    if any(type(k) is not str for k in root):
        return canonical_json(dict(root))
    return b"{" + b",".join(_key(k) + b":" + (
        _refs_json(root[k]) if k in _ENTRY_SECTIONS else canonical_json(root[k]))
        for k in sorted(root)) + b"}"


def _key(k: str) -> bytes:
    # letters and digits need no escaping: the bytes json.dumps gives them
    return b'"' + k.encode() + b'"' if k.isascii() and k.isalnum() else canonical_json(k)


def _refs_json(obj) -> bytes:
    """``canonical_json(obj)`` for a leaf body or a root section of leaf references (dicts
    and lists of entries), each entry's bytes kept."""
    if isinstance(obj, Blob):
        hit = _ENCODED.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        if len(_ENCODED) > _MAX_CACHED:
            _ENCODED.clear()
        raw = canonical_json(obj)
        _ENCODED[id(obj)] = (obj, raw)
        return raw
    if type(obj) is list:
        return b"[" + b",".join(map(_refs_json, obj)) + b"]"
    if type(obj) is dict and all(type(k) is str for k in obj):
        return b"{" + b",".join(_key(k) + b":" + _refs_json(obj[k])
                                for k in sorted(obj)) + b"}"
    return canonical_json(obj)


def slice_key(shard: int, sl: int) -> str:
    """The key of a (shard, slice) cell in the merged views (slices, checkpoints)."""
    return f"{shard}/{sl}"


def key_cell(key: str) -> tuple[int, int]:
    """``(shard, slice)`` of a :func:`slice_key`."""
    a, b = key.split("/")
    return int(a), int(b)


def shard_leaf_dir(shard: int) -> str:
    """The name prefix of shard ``shard``'s leaf files."""
    return f"meta/shard-{shard:04d}"


def page_leaf_dir(kind: str, page: int) -> str:
    """The name prefix of an index or tombstone page's leaf files."""
    return f"meta/{kind}-{page:04d}"


def leaf_ref(body: dict, prefix: str) -> tuple[LeafRef, bytes]:
    """``(its reference, raw bytes)`` of a leaf body."""
    raw = _refs_json(body)  # canonical_json(body): unchanged entries' bytes are kept
    digest = hashlib.sha256(raw).hexdigest()
    return LeafRef(f"{prefix}-{digest[:32]}.json", digest, len(raw)), raw


def exists(loc) -> bool:
    return loc.exists(MANIFEST)


# -- writing ------------------------------------------------------------------------------
def write(loc, root: Mapping, leaves: Iterable[tuple[str, bytes]], key) -> None:
    """Write the new leaves, then the root (atomically, last: it is the commit)."""
    signer = root.get("signer")
    if signer and (key is None or key.public_hex != signer["public_key"]):
        raise KeyFileError(wrong_key(loc.uri, signer["public_key"], key))  # before any write
    body = root_json(root)
    digest = hashlib.sha256(body).hexdigest().encode()
    sig = key.sign(body).encode() if signer else b""
    # One group commit: the leaves, the root's bytes, every file the batch wrote before (a
    # forget's slices, buckets, checkpoints) and every folder holding a new entry are
    # fsynced in one parallel round, and only then is the root renamed into place (its
    # folder fsynced last): nothing the root names can be missing after a power loss.
    with loc.batch():
        loc.write_many(list(leaves))
        loc.write_atomic(MANIFEST, b'{"checksum":"' + digest + b'","signature":"' + sig
                         + b'","manifest":' + body + b"}", commit=True)


def wrong_key(uri: str, public_hex: str, key) -> str:
    """The error message for changing a signed store without its owner's key."""
    have = f"your key is ed25519:{key.public_hex[:16]}..." if key else "no key is configured"
    return (f"store {uri} is signed by ed25519:{public_hex[:16]}... and {have}: point "
            f"${keys.KEY_FILE_ENV} at its owner's key file (only the owner can change a signed "
            "store)")


# -- reading ------------------------------------------------------------------------------
def split(raw: bytes) -> tuple[bytes, str] | None:
    """``(body, signature hex)`` if the bytes match their own checksum (a torn object-store
    read or a corrupted file does not), else None."""
    head = _HEAD.match(raw)
    body = raw[head.end():-1] if head and raw.endswith(b"}") else b""
    if head and hashlib.sha256(body).hexdigest().encode() == head.group(1):
        return body, head.group(2).decode()
    return None


def format_of(schema: dict) -> str:
    """The format a store with this ``schema`` is written in (:data:`FORMAT_LAYOUTS` only
    when its slice files need it)."""
    plain = schema.get("layout", "dense") == "dense" and not schema.get("group_type")
    return FORMAT if plain else FORMAT_LAYOUTS


def read_root(loc, *, formats: tuple[str, ...] = READABLE) -> dict:
    """The root's body, its checksum, format and signature checked."""
    raw = loc.read_stable(MANIFEST, lambda b: split(b) is not None)  # torn S3 reads
    parts = split(raw)
    m = None
    if parts is not None:
        with contextlib.suppress(ValueError):
            m = json.loads(parts[0])
    where = loc.path(MANIFEST)
    if parts is None or not isinstance(m, dict):  # (m is a dict only if parts is not None)
        fmt = re.search(rb'"format":"(sisa-store/[0-9]+)"', raw)
        if fmt and fmt.group(1).decode() not in formats:
            raise StoreError(_old_format(where, fmt.group(1).decode(), loc.uri))
        raise CorruptStoreError(
            f"manifest {where} is corrupt (bad JSON or checksum): restore it from backup; sisa "
            "will not guess which files are valid")
    if m.get("format") not in formats:
        raise StoreError(_old_format(where, m.get("format"), loc.uri))
    _check_signer_and_audit(m, where)
    signer = m.get("signer")
    if signer and not keys.check_signature(signer["public_key"], parts[0], parts[1]):
        raise CorruptStoreError(
            f"manifest {where} does not carry a valid signature of the key it names "
            "(ed25519:" + signer["public_key"][:16] + "...): it was changed by someone without "
            "the owner's key; restore the store from backup")
    if not signer and parts[1]:
        raise CorruptStoreError(f"manifest {where} carries a signature but names no signer: it "
                                "was edited; restore the store from backup")
    return m


def load(loc) -> tuple[dict, dict[str, dict]]:
    """``(root, leaves by sha256)``: every leaf the root names, hash-checked, shape- and
    path-checked once per process (leaves are cached by kind and hash; a leaf's content
    fixes its place, so a cached leaf is only checked to stand where it did). The root's
    leaf references and the leaves' file entries are typed records (:mod:`.entries`).

    A reader holds no lock: between its read of the root and of a leaf, a writer may
    commit a new root and delete the leaves only the old one named. A missing leaf is
    damage only if the root is still the one read; otherwise the load starts over on
    the new root (a bounded number of times)."""
    for attempt in range(_LOAD_ATTEMPTS):
        root = read_root(loc)
        try:
            return _leaves(loc, root)
        except MissingFileError:
            if attempt == _LOAD_ATTEMPTS - 1 or read_root(loc) == root:
                raise
    raise AssertionError("unreachable")


def _leaves(loc, root: dict) -> tuple[dict, dict[str, dict]]:
    """The root with typed leaf references, and every leaf it names (typed entries)."""
    where = loc.path(MANIFEST)
    try:
        refs = _leaf_refs(root, where)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise CorruptStoreError(f"manifest {where} is malformed ({exc}): it was edited; "
                                "restore the store from backup") from None
    typed = [(kind, i, (ShardRef if kind == "shards" else LeafRef).from_json(
        ref, f"manifest {where}: {kind} leaf {i}")) for kind, i, ref in refs]
    leaves = {}
    for kind, i, ref in typed:
        body = _LEAVES.get((kind, ref.sha256))
        if body is None:
            path = loc.path(ref.file)
            body = json.loads(loc.read_verified(ref.file, ref.sha256).to_pybytes())
            _check_leaf(kind, i, body, root, path)
            body = _typed_leaf(kind, body, path)
            if len(_LEAVES) > _MAX_CACHED:
                _LEAVES.clear()
            _LEAVES[(kind, ref.sha256)] = body
        elif body.get("shard" if kind == "shards" else "page") != i or (
                kind == "shards" and len(body["slices"]) != root["assignment"]["n_slices"]):
            _check_shape(kind, i, body, root, loc.path(ref.file))  # a moved leaf: raises
        leaves[ref.sha256] = body
    # _leaf_refs lists the shards, then the index pages, then the tombstone pages, in order
    n, pages = len(root["shards"]), len(root["index"]["pages"])
    out = {**root, "shards": [ref for _, _, ref in typed[:n]],
           "index": {**root["index"], "pages": [ref for _, _, ref in typed[n:n + pages]]},
           "tombstones": {**root["tombstones"], "pages": dict(zip(
               root["tombstones"]["pages"], (ref for _, _, ref in typed[n + pages:]),
               strict=True))}}
    return out, leaves


def _typed_leaf(kind: str, body: dict, where: str) -> dict:
    """A checked leaf body with its file entries as records."""
    if kind == "shards":
        return {**body, "slices": {r: SliceFile.from_json(m, f"manifest leaf {where}: slice {r}")
                                   for r, m in body["slices"].items()},
                "checkpoints": {r: CheckpointFile.from_json(
                    m, f"manifest leaf {where}: checkpoint {r}")
                    for r, m in body["checkpoints"].items()}}
    return {**body, "parts": {b: BucketFile.from_json(m, f"manifest leaf {where}: {kind} "
                                                         f"bucket {b}")
                              for b, m in body["parts"].items()}}


def _leaf_refs(root: dict, where: str) -> list[tuple[str, int, dict]]:
    """Every leaf reference of the root, each checked against the path it must have."""
    a = root["assignment"]
    shards, index, tombs = root["shards"], root["index"], root["tombstones"]
    if len(shards) != a["n_shards"]:
        raise ValueError(f"{len(shards)} shard leaves for {a['n_shards']} shards")
    if len(index["pages"]) != (index["buckets"] + 63) // 64 or index["buckets"] < 1:
        raise ValueError("index pages do not cover its buckets")
    out = [("shards", s, ref) for s, ref in enumerate(shards)]
    out += [("index", p, ref) for p, ref in enumerate(index["pages"])]
    for p, ref in tombs["pages"].items():
        if not _DIGITS.fullmatch(p):
            raise ValueError(f"tombstone page {p!r} is not a number")
        out.append(("tombstones", int(p), ref))
    for kind, i, ref in out:
        pattern = SHARD_LEAF if kind == "shards" else PAGE_LEAF[kind]
        hit = pattern.fullmatch(ref.get("file", "")) if isinstance(ref.get("file"), str) else None
        if (hit is None or int(hit.group(1)) != i or not isinstance(ref.get("sha256"), str)
                or hit.group(2) != ref["sha256"][:32]):
            raise CorruptStoreError(
                f"manifest {where}: {kind} leaf {i} names file {ref.get('file')!r}, which is "
                "not the store path sisa writes for it: the manifest was edited; restore the "
                "store from backup (nothing was read or deleted)")
    return out


def _check_leaf(kind: str, i: int, body, root: dict, where: str) -> None:
    """A parsed leaf is the leaf ``i`` of ``kind`` and every file it names has the exact
    path sisa writes for its place."""
    _check_shape(kind, i, body, root, where)
    if kind == "shards":  # every file it names has the exact shape sisa writes
        cells = {sec: {slice_key(i, int(r)): m for r, m in body[sec].items()}
                 for sec in ("slices", "checkpoints")}
        check_manifest_paths({"slices": cells["slices"],
                              "model": {"checkpoints": cells["checkpoints"]}}, where)
    else:
        check_manifest_paths({kind: {"parts": body["parts"]}}, where)


def _check_shape(kind: str, i: int, body, root: dict, where: str) -> None:
    key = "shard" if kind == "shards" else "page"
    ok = isinstance(body, dict) and body.get(key) == i
    if ok and kind == "shards":
        ok = all(isinstance(body.get(s), dict) and all(
            isinstance(r, str) and _DIGITS.fullmatch(r) for r in body[s])
            for s in ("slices", "checkpoints"))
        ok = ok and sorted(body["slices"], key=int) == [
            str(r) for r in range(root["assignment"]["n_slices"])]
    elif ok:
        ok = isinstance(body.get("parts"), dict) and all(
            isinstance(b, str) and _DIGITS.fullmatch(b) and int(b) // 64 == i
            for b in body["parts"])
    if not ok:
        raise CorruptStoreError(f"manifest leaf {where} is not a {kind} leaf for {key} {i}: it "
                                "was edited; restore the store from backup")


def shard_parts(manifest, name: str, part) -> list:
    """``part(leaf)`` for every shard leaf of ``manifest``, kept per process by ``(name,
    leaf sha256)``: values derived from all shards (the fingerprint, the class union, a
    full retrain's rows) are recomputed only for the leaves a commit changed. ``name``
    must say everything ``part`` depends on besides the leaf. The list is also kept with
    the manifest (and the states sharing its leaves), so asking again costs a copy."""
    memo = manifest._views.get(("parts", name))
    if memo is not None:
        return list(memo)
    cache = _PARTS.get(name)
    if cache is None or len(cache) > _MAX_CACHED:
        cache = _PARTS[name] = {}
    shas = [ref.sha256 for ref in manifest["shards"]]
    out = [cache.get(sha, _MISS) for sha in shas]
    for i in [i for i, v in enumerate(out) if v is _MISS]:
        out[i] = cache[shas[i]] = part(manifest._leaves[shas[i]])
    manifest._views[("parts", name)] = out
    return list(out)


def check_paths(manifest, loc) -> None:
    """The root's own entries have the shape sisa writes and the index covers every
    bucket (each leaf's paths are checked when it is first read: :func:`load`)."""
    where = loc.path(MANIFEST)
    if any(p is None for p in manifest.index_parts):
        raise CorruptStoreError(f"manifest {where}: an index bucket has no file: it was edited; "
                                "restore the store from backup")
    model = manifest.model
    check_manifest_paths({"model": {**model, "checkpoints": {}} if model else None,
                          "store_id": manifest.store_id}, where)


def _check_signer_and_audit(m: dict, where: str) -> None:
    signer = m.get("signer")
    if signer is not None and not (
            isinstance(signer, dict) and signer.get("alg") == keys.ALG
            and isinstance(signer.get("public_key"), str)
            and re.fullmatch(r"[0-9a-f]{64}", signer["public_key"])):
        raise CorruptStoreError(f"manifest {where} names a malformed signer "
                                f"({str(signer)[:60]}): it was edited; restore the store from "
                                "backup")
    audit = m.get("audit")
    if not (isinstance(audit, dict) and isinstance(audit.get("receipts"), int)
            and (audit.get("head") is None or isinstance(audit.get("head"), str))
            and isinstance(m.get("last_receipt") or {}, dict)):
        raise CorruptStoreError(f"manifest {where} has a malformed audit section: it was "
                                "edited; restore the store from backup")


def _old_format(where: str, fmt, uri: str) -> str:
    reads = " and ".join(READABLE)
    if fmt == OLD_FORMAT:
        return (f"{where} has format {fmt!r} (one manifest file); this sisa reads {reads}: "
                f"convert it in place with `sisa upgrade {uri}` (data and checkpoints are "
                "kept as they are)")
    return (f"{where} has format {fmt!r}; this sisa reads {reads}: rebuild the store from the "
            "source data (`sisa train ... --overwrite`, or Store.create(..., overwrite=True)), "
            "or open it with the sisa version that wrote it")
