"""Deleting rows: resolve the ids once, compute the change, then write it in one commit.

A deletion has three steps, each a function of this module:

1. :func:`resolve`: the request's ids, converted once at the id boundary
   (:mod:`sisa.store.format.ids`), deduplicated and sorted, located through the index, and
   the missing ones checked against the tombstones. Unknown ids raise before
   anything is written. The :class:`Resolved` result is what the receipt digest, the
   deletion and the retrain plan all use.
2. :func:`prepare`: the remaining rows of every touched slice, the class list after
   the deletion (a classifier left with fewer than two classes is refused here,
   still before any write) and the :class:`~sisa.store.manifest.RetrainPlan`.
3. :func:`stage`: new slice, index and tombstone files beside the old, and the manifest
   naming them, which also drops every checkpoint that saw the rows; :func:`apply`
   commits it (a forget instead commits it once with the retrained checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..._crash import crashpoint
from ...errors import InputError, UnknownIdError
from ..format import ids as idmod
from ..format.index import bucketed, hash_buckets, id_buckets, n_index_buckets
from ..format.layout import (
    ID,
    index_dir,
    ipc_bytes,
    slice_dir,
    slice_labels,
    tombstone_dir,
)
from ..manifest import BucketFile, Manifest, RetrainPlan, SliceFile, slice_key
from ..read.reading import label_union

if TYPE_CHECKING:
    from ..store import Store


@dataclass(frozen=True)
class Resolved:
    """A request's ids, resolved once against one state of the store.

    Attributes
    ----------
    ids : pyarrow.Array
        The distinct ids in sort order, in the store's id type (the canonical request).
    found : numpy.ndarray of bool
        Which of ``ids`` are stored now.
    shard, slice : numpy.ndarray of int64
        Where the found ids live, in ``ids`` order.
    already_deleted : list
        Ids not stored but tombstoned: deleted by an earlier request.
    """

    ids: pa.Array
    found: np.ndarray
    shard: np.ndarray
    slice: np.ndarray
    already_deleted: list = field(default_factory=list)

    @property
    def found_ids(self) -> pa.Array:
        return pc.filter(self.ids, pa.array(self.found))

    @property
    def plan(self) -> RetrainPlan:
        """shard -> first slice holding one of the ids."""
        return RetrainPlan.of(zip(self.shard.tolist(), self.slice.tolist(), strict=True))


@dataclass(frozen=True)
class Deletion:
    """A deletion computed but not written: see :func:`prepare`."""

    resolved: Resolved
    kept: dict  # (shard, slice) -> the slice's rows without the ids
    plan: RetrainPlan
    classes: list | None  # the class list after (None: not a classifier's store)
    removed_classes: list  # classes that lose their last rows


@dataclass
class DeleteResult:
    """What a deletion changed (:func:`result`)."""

    deleted: int
    already_deleted: list
    plan: RetrainPlan  # shard -> earliest slice whose checkpoints were dropped
    rows_before: dict[int, int]  # shard -> rows before the delete
    fingerprint_before: str
    fingerprint_after: str
    # {"removed": [...]} when the delete took a classifier's last rows of some class
    classes_changed: dict | None = None


def resolve(store: Store, ids) -> Resolved:
    """Resolve ``ids`` (any spelling the id boundary accepts) against ``store``.

    Raises
    ------
    UnknownIdError
        Some ids are neither stored nor tombstoned; nothing is changed.
    """
    q = idmod.unique_sorted(store.rows.id_array(ids))
    found, shard, sl = store.rows.locate(q)
    already: list = []
    if not found.all():
        missing = pc.filter(q, pa.array(~found))
        hashes = store.audit.id_hashes(missing)
        gone = set(store.rows.read_tombstones(
            set(hash_buckets(hashes, store.rows.index_buckets).tolist())))
        known = np.array([h in gone for h in hashes], dtype=bool)
        names = np.asarray(missing.to_pylist(), dtype=object)
        already, unknown = names[known].tolist(), names[~known].tolist()
        if unknown:
            shown = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
            raise UnknownIdError(
                f"{len(unknown)} sample id(s) are not in store {store.uri} and were never "
                f"deleted from it: {shown}; check the ids (nothing was changed)")
    return Resolved(q, found, shard, sl, already)


def prepare(store: Store, resolved: Resolved) -> Deletion:
    """Compute the deletion of ``resolved`` without writing anything.

    Raises
    ------
    InputError
        A classifier's store would keep fewer than two classes (a fresh fit on the
        remaining rows would refuse too).
    """
    gone = resolved.found_ids
    kept = {}
    for s, r in sorted(set(zip(resolved.shard.tolist(), resolved.slice.tolist(), strict=True))):
        table = store.rows.read_slice_table(s, r)
        kept[(s, r)] = table.filter(pc.invert(pc.is_in(table.column(ID), value_set=gone)))
    classes, removed = _classes_after(store, kept)
    plan = resolved.plan
    model = store.manifest.model
    if model and classes is not None and classes != model["classes"]:
        # The class list is part of what a fresh fit learns (classes_, the columns of
        # predict_proba, every partial_fit call): every shard retrains from scratch.
        plan = RetrainPlan.everything(store.n_shards)
    return Deletion(resolved, kept, plan, classes, removed)


def _classes_after(store: Store, kept: dict) -> tuple[list | None, list]:
    """``(class list once the rows are gone, classes that vanish)`` for a store holding a
    classifier, ``(None, [])`` otherwise."""
    model = store.manifest.model
    if not model or model.get("task") != "classification" or model.get("classes") is None:
        return None, []
    classes = label_union(store.rows, kept)
    left = set(classes)
    removed = [c for c in model["classes"] if c not in left]
    if len(classes) < 2:
        raise InputError(
            f"forgetting these rows would leave {len(classes)} class ({classes[:1]}) in store "
            f"{store.uri}, and a classifier needs at least two (a fresh fit on the remaining "
            "rows would refuse too): nothing was changed; forget fewer rows, or delete the "
            "whole store")
    return classes, removed


def result(deletion: Deletion, rows_before: dict[int, int], before: str, after: str
           ) -> DeleteResult:
    """What ``deletion`` changed, once :meth:`sisa.store.Store.delete` committed it."""
    removed = deletion.removed_classes
    return DeleteResult(len(deletion.resolved.found_ids), deletion.resolved.already_deleted,
                        deletion.plan, rows_before, before, after,
                        {"removed": removed} if removed else None)


def stage(store: Store, deletion: Deletion, *, pending: dict | None = None) -> Manifest:
    """Write the new slice, index and tombstone files of ``deletion`` beside the old ones
    and return the manifest that names them (not committed: a forget commits it together
    with the retrained checkpoints)."""
    gone = deletion.resolved.found_ids
    label_type = store.manifest.schema["label_type"]
    slices = {}
    with store.loc.batch():  # fsynced together, before the manifest that names them
        for (s, r), table in deletion.kept.items():
            slices[slice_key(s, r)] = SliceFile.of(
                store.put_blob(slice_dir(s, r), ".arrow", ipc_bytes(table)),
                rows=table.num_rows, shard=s, labels=slice_labels(table, label_type))
        crashpoint("delete:after-slices")
        index_parts, tombstone_parts, n_buckets = _index_and_tombstones(store, gone)
    return store.manifest.with_deletion(
        slices=slices, index_parts=index_parts, tombstone_parts=tombstone_parts,
        n_buckets=n_buckets, deleted=len(gone), plan=deletion.plan, classes=deletion.classes,
        pending=pending)


def _index_and_tombstones(store: Store, gone: pa.Array
                          ) -> tuple[dict[int, BucketFile], dict[int, BucketFile], int]:
    """The index and tombstone buckets that change once ``gone`` is deleted (bucket ->
    entry, their files written) and the bucket count after."""
    B = store.rows.index_buckets
    n_left = sum(p.rows for p in store.manifest.index_parts) - len(gone)
    parts: dict[int, BucketFile] = {}
    if n_index_buckets(n_left) != B:
        # The bucket count follows the row count; a delete that crosses a power of two
        # re-buckets the whole index and the tombstones (keyed by the same count), so
        # the store holds the files a fresh build of the remaining rows would.
        B = n_index_buckets(n_left)
        index = store.rows.read_index().sort_by(ID)  # as the builder has it: sorted by id
        index = index.filter(pc.invert(pc.is_in(index.column(ID), value_set=gone)))
        for b, part in enumerate(bucketed(index, B)):
            parts[b] = BucketFile.of(store.put_blob(index_dir(b), ".arrow", ipc_bytes(part)),
                                     rows=part.num_rows)
        old_tombs = store.rows.read_tombstones()
    else:
        for b in np.unique(id_buckets(gone, B)).tolist():
            part = store.rows.read_index_part(b)
            part = part.filter(pc.invert(pc.is_in(part.column(ID), value_set=gone)))
            parts[b] = BucketFile.of(store.put_blob(index_dir(b), ".arrow", ipc_bytes(part)),
                                     rows=part.num_rows)
        old_tombs = None
    hashes = store.audit.id_hashes(gone)
    if old_tombs is not None:
        hashes = old_tombs + hashes
    where = hash_buckets(hashes, B)
    tparts: dict[int, BucketFile] = {}
    for b in np.unique(where).tolist():
        added = [hashes[i] for i in np.flatnonzero(where == b)]
        both = sorted(added + (store.rows.read_tombstones([b]) if old_tombs is None else []))
        table = pa.table({"h": pa.array(both, pa.binary(16))})
        tparts[b] = BucketFile.of(store.put_blob(tombstone_dir(b), ".arrow", ipc_bytes(table)),
                                  rows=table.num_rows)
    return parts, tparts, B
