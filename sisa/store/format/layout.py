"""The store's layout: file and column names, folders, the slice schema, Arrow IPC
bytes, what a manifest may name, and the label sets it records per slice.

Layout under the store URI::

    manifest.json                          the commit point (sisa.store.manifest)
    data/shard=0003/slice=005/<hash>.arrow one uncompressed Arrow IPC file per (shard, slice)
    index/bucket=0003/<hash>.arrow         sample_id -> (shard, slice), sorted by id
    audit/tombstones/bucket=0003/<hash>.arrow  keyed hashes of deleted ids (never the ids)
    audit/receipts-<store id>.jsonl        hash-chained, signed log of forget receipts
    audit/intent.json                      a forget request being applied (sisa.unlearn)
    checkpoints/shard=0003/slice=005/<hash>.pkl   one shard model per (shard, slice)
    queue/<request id>.json                `sisa serve`'s accepted erasure requests

Paths: every file a manifest names is built by sisa from fixed folder names and the
file's own hash, so each kind has one exact shape. A manifest is checked against
those shapes when it is loaded, before any file is read or deleted: an entry such as
``"file": "../../x"`` (or a name whose hash is not the entry's sha256) is an edited
manifest, and acting on it would read or delete files outside the store.

Labels: each slice entry carries ``"labels"``, the sorted distinct labels of its rows
(int or string label types), so the class set of the whole store is a union of
manifest entries rather than a scan of every slice. Float labels (regression
targets) and slices with very many distinct labels record ``None``; whoever needs
their set reads the data.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from ...errors import CorruptStoreError
from . import columns, sparse

# Columns of a slice file (and of the index: ID, "shard", "slice").
ID, LABEL, FEATURES = "sample_id", "label", "features"
# A store built with groups: the keyed hash of each row's group key, after the features
# (sisa.store.format.assign.group_hash; the key itself is never stored).
GROUP = "group_hash"
INTENT = "audit/intent.json"
# Bookkeeping files that are not content-addressed and never hold training rows (the audit
# log and a keyless store's audit key are named per store: Manifest.audit_files).
KEEP = {"manifest.json", ".lock", INTENT}
# `sisa serve`'s durable erasure queue (sisa.serve): one file per accepted request, holding
# its raw ids until its receipt is committed, like INTENT. Only this exact shape is
# bookkeeping; anything else under queue/ is a stray file like any other.
QUEUE_FILE = re.compile(r"queue/[0-9a-f]{32}\.json")


def slice_dir(shard: int, sl: int) -> str:
    return f"data/shard={shard:04d}/slice={sl:03d}"


def checkpoint_dir(shard: int, sl: int) -> str:
    return f"checkpoints/shard={shard:04d}/slice={sl:03d}"


def index_dir(bucket: int) -> str:
    return f"index/bucket={bucket:04d}"


def tombstone_dir(bucket: int) -> str:
    return f"audit/tombstones/bucket={bucket:04d}"


def slice_schema(schema: dict) -> pa.Schema:
    """The Arrow schema of a slice file, from the manifest's ``schema`` entry: features
    as one float list per row (dense), or a struct of typed columns
    (:mod:`sisa.store.format.columns`)."""
    if columns.is_columns(schema) or sparse.is_sparse(schema):
        features = columns.struct_type(schema)
    else:
        ftype = pa.float32() if schema["dtype"] == "float32" else pa.float64()
        features = pa.list_(ftype, len(schema["feature_names"]))
    return pa.schema([
        (ID, pa.int64() if schema["id_type"] == "int64" else pa.string()),
        (LABEL, pa.type_for_alias(schema["label_type"])),
        (FEATURES, features),
    ] + ([(GROUP, pa.uint64())] if schema.get("group_type") else []))


def ipc_bytes(table: pa.Table) -> pa.Buffer:
    """Serialise deterministically: same rows and schema give the same bytes (category
    columns are re-encoded from the rows themselves:
    :func:`sisa.store.format.columns.canonical`)."""
    table = columns.canonical(table)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=columns.write_options(table)) as w:
        w.write_table(table.combine_chunks() if table.num_rows else table)
    return sink.getvalue()


def read_ipc(buf: pa.Buffer) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(buf)).read_all()

_HEX32 = r"([0-9a-f]{32})"
SLICE_FILE = re.compile(rf"data/shard=(\d{{4,}})/slice=(\d{{3,}})/{_HEX32}\.arrow")
CHECKPOINT_FILE = re.compile(rf"checkpoints/shard=(\d{{4,}})/slice=(\d{{3,}})/{_HEX32}\.pkl")
INDEX_FILE = re.compile(rf"index/bucket=(\d{{4,}})/{_HEX32}\.arrow")
TOMBSTONE_FILE = re.compile(rf"audit/tombstones/bucket=(\d{{4,}})/{_HEX32}\.arrow")
MODEL_FILE = re.compile(rf"model/{_HEX32}\.pkl")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_STORE_ID = re.compile(r"[0-9a-f]{32}")
_KEY = re.compile(r"(\d+)/(\d+)")

# Above this many distinct labels in one slice the label is no class label (an integer
# regression target, an id): the manifest records None instead of a list that could
# grow with the rows.
MAX_SLICE_LABELS = 4096


def check_manifest_paths(m: dict, where: str) -> None:
    """Raise :class:`CorruptStoreError` naming the first entry of manifest ``m`` whose
    file is not exactly the path sisa would have written for it.

    Parameters
    ----------
    m : dict
        The manifest body.
    where : str
        The manifest's path, for the message.
    """
    def bad(entry: str, meta, shape: str) -> CorruptStoreError:
        f = meta.get("file") if isinstance(meta, dict) else meta
        return CorruptStoreError(
            f"manifest {where}: {entry} names file {f!r}, which is not a store path of the form "
            f"{shape} named by its sha256: the manifest was edited; restore the store from "
            "backup (nothing was read or deleted)")

    def check(entry: str, meta, pattern: re.Pattern, shape: str, *want: int) -> None:
        if not isinstance(meta, dict) or not isinstance(meta.get("file"), str) \
                or not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(meta["sha256"]):
            raise bad(entry, meta, shape)
        hit = pattern.fullmatch(meta["file"])
        if (hit is None or hit.groups()[-1] != meta["sha256"][:32]
                or tuple(int(g) for g in hit.groups()[:-1]) != want):
            raise bad(entry, meta, shape)

    def cell(key) -> tuple[int, int]:
        hit = _KEY.fullmatch(key) if isinstance(key, str) else None
        if hit is None:
            raise CorruptStoreError(f"manifest {where}: entry key {key!r} is not 'shard/slice': "
                                    "the manifest was edited; restore the store from backup")
        return int(hit.group(1)), int(hit.group(2))

    try:
        for key, meta in (m.get("slices") or {}).items():
            check(f"slice {key}", meta, SLICE_FILE, "data/shard=NNNN/slice=NNN/<hash>.arrow",
                  *cell(key))
        parts = (m.get("index") or {}).get("parts") or []  # a list, or a page's {bucket: }
        for b, meta in (parts.items() if isinstance(parts, dict) else enumerate(parts)):
            check(f"index bucket {b}", meta, INDEX_FILE, "index/bucket=NNNN/<hash>.arrow", int(b))
        for key, meta in ((m.get("tombstones") or {}).get("parts") or {}).items():
            if not (isinstance(key, str) and key.isdigit()):
                raise bad(f"tombstone bucket {key!r}", meta, "a bucket number")
            check(f"tombstone bucket {key}", meta, TOMBSTONE_FILE,
                  "audit/tombstones/bucket=NNNN/<hash>.arrow", int(key))
        model = m.get("model")
        if model:
            est = model.get("estimator")
            if isinstance(est, dict) and "file" in est:  # a pickled prototype (older layouts)
                check("the estimator", est, MODEL_FILE, "model/<hash>.pkl")
            for key, meta in (model.get("checkpoints") or {}).items():
                check(f"checkpoint {key}", meta, CHECKPOINT_FILE,
                      "checkpoints/shard=NNNN/slice=NNN/<hash>.pkl", *cell(key))
    except (AttributeError, TypeError) as exc:  # a list where a dict belongs, and so on
        raise CorruptStoreError(f"manifest {where} is malformed ({exc}): the manifest was "
                                "edited; restore the store from backup") from None
    sid = m.get("store_id")
    if sid is not None and not (isinstance(sid, str) and _STORE_ID.fullmatch(sid)):
        # the audit log and key file are named by the store id
        raise CorruptStoreError(f"manifest {where}: store_id {sid!r} is not 32 hex digits: "
                                "the manifest was edited; restore the store from backup")


# ---------------------------------------------------------------------- labels
def records_labels(label_type: str) -> bool:
    """Label types whose distinct values the manifest records per slice."""
    return label_type in ("int64", "string", "large_string")


def slice_labels(table: pa.Table, label_type: str, column: str = "label") -> list | None:
    """Sorted distinct labels of one slice as JSON values, or None (float labels, or
    more than :data:`MAX_SLICE_LABELS` of them)."""
    if not records_labels(label_type):
        return None
    values = pc.unique(table.column(column)).to_pylist()
    if len(values) > MAX_SLICE_LABELS:
        return None
    return sorted(values)


def union(label_lists) -> list:
    """Sorted union of label lists, ordered as ``np.unique`` orders them (the order a
    fresh fit gives ``classes_``)."""
    out: set = set()
    for labels in label_lists:
        out.update(labels)
    return sorted(out)
