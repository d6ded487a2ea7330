"""Building a store: ingest rows into a new store beside whatever is at its location.

A build writes every slice and index file first, then :meth:`sisa.store.Store.publish`
switches to it with one manifest write. Two passes: assign rows and spill batches to
local temp files (memory holds at most the budget plus one slice), then write each
slice sorted by its hash order.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError, LocationError, SisaError, StoreError
from ..progress import bar as progress_bar
from . import ids as idmod
from . import ingest, keys
from . import manifest as mf
from .assign import AssignmentConfig, assign
from .fs import Location
from .index import bucketed, n_index_buckets
from .layout import (
    FEATURES,
    ID,
    LABEL,
    index_dir,
    ipc_bytes,
    slice_dir,
    slice_labels,
    slice_schema,
)
from .manifest import Manifest, slice_key

if TYPE_CHECKING:
    from .store import Store

ORDER = "__order"  # a row's place in its slice (assign's hash order), dropped on write


@contextlib.contextmanager
def building(store_cls: type[Store], uri: str, *, overwrite: bool = False) -> Iterator[Store]:
    """See :meth:`sisa.store.Store.building`."""
    loc = Location(str(uri))
    if loc.is_local and os.path.exists(loc.root) and not os.path.isdir(loc.root):
        raise LocationError(f"store path {uri} is a file: a store is a directory; pick "
                            "another path")
    before = set(loc.list_files())
    if mf.MANIFEST not in before and before - {".lock"}:
        # never mix a store into, or let repair later sweep, files that are not ours
        raise LocationError(f"{uri} is not empty and holds no sisa store: pick a new or "
                            "empty path (if it is a half-built store, delete it first)")
    if mf.MANIFEST in before and not overwrite:
        raise InputError(
            f"a store already exists at {uri}: open it with Store.open, pick another "
            "path, or replace it with overwrite=True (--overwrite on the CLI)")
    made_root = loc.is_local and not os.path.exists(loc.root)
    dirs_before = _local_dirs(loc)
    store = store_cls(str(uri), None)
    if mf.MANIFEST in before:  # the replaced store's generation: readers see the switch
        with contextlib.suppress(SisaError, OSError):  # damaged: replaced all the same
            store.replaced_generation = mf.load(loc).generation
    with store.lock():
        store.staged = True
        try:
            yield store
        finally:
            if store.staged:  # failed (or never published): remove what the build wrote
                for rel in sorted(set(loc.list_files()) - before - {".lock"}):
                    loc.delete(rel)
                for d in sorted(_local_dirs(loc) - dirs_before, reverse=True):
                    with contextlib.suppress(OSError):  # deepest first; only if empty
                        os.rmdir(d)
                if made_root:
                    shutil.rmtree(loc.root, ignore_errors=True)
                store.staged = False


def ingest_rows(store: Store, data, y=None, *, label: str | None = None, n_shards: int,
                n_slices: int, random_state: int = 0, sample_ids=None,
                id_column: str | None = None, group_column: str | None = None,
                deletion_prob_column: str | None = None, groups=None, deletion_prob=None,
                hot_shards: int = 0, hot_threshold: float = 0.5,
                feature_columns: list[str] | None = None, dtype=None,
                memory_budget_mb: int = 256, batch_rows: int = 65_536,
                progress: bool = False) -> tuple[Manifest, keys.KeyPair | None]:
    """Write the data of a staged store; returns its manifest (one generation past the
    store it replaces, if any) and the owner's key that will sign it.

    Parameters
    ----------
    store : Store
        Staged (:meth:`sisa.store.Store.building`).
    data : array-like, DataFrame, pyarrow.Table or path
        Features (with ``y``) or a table/file holding the ``label`` column.
    y : array-like, optional
        Labels, when ``data`` is an array.
    label : str, optional
        Label column, when ``data`` is a table or file.
    n_shards, n_slices : int
        S and R.
    random_state : int, default=0
        Seed of the keyed assignment hash (and later of training).
    sample_ids : array-like, optional
        Stable id per row (int or str). ``id_column`` names a column instead.
        Default: the row numbers 0..n-1 in input order.
    group_column, groups : optional
        Group key per row: all rows of a group land in one (shard, slice).
    deletion_prob_column, deletion_prob, hot_shards, hot_threshold : optional
        Distribution-aware sharding; see :class:`~sisa.store.assign.AssignmentConfig`.
    feature_columns : list of str, optional
        Feature columns of a table (default: every other column).
    dtype : {numpy.float32, numpy.float64}, optional
        Feature type stored (default: float32 input stays float32, else float64).
    memory_budget_mb : int, default=256
        Rows are spilled to temporary files beyond this, so inputs larger than memory
        stream through.
    batch_rows : int, default=65536
        Rows read from a file at a time.
    progress : bool, default=False
        Show rows ingested and slices written.
    """
    if not store.staged:
        raise StoreError("internal: ingest needs a staged store (use Store.building)")
    config = AssignmentConfig(int(n_shards), int(n_slices), int(random_state),
                              int(hot_shards), float(hot_threshold))
    if hot_shards and deletion_prob is None and not deletion_prob_column:
        raise InputError("hot_shards > 0 needs deletion probabilities: pass deletion_prob= or "
                         "deletion_prob_column=")
    source = _source(data, y, label, sample_ids, groups, deletion_prob, dtype, batch_rows,
                     id_column=id_column, group_column=group_column,
                     deletion_prob_column=deletion_prob_column, feature_columns=feature_columns)
    key = keys.configured()
    new = _Builder(store.loc, config, source, memory_budget_mb, progress, secrets.token_hex(16),
                   key).build()
    if key is None:  # unsigned: the audit key lives beside the data, owner-only
        store.loc.write_atomic(new.audit_files()["key"], secrets.token_hex(32).encode(),
                               mode=0o600)
    return new.stamped(store.replaced_generation + 1), key


def _source(data, y, label, sample_ids, groups, deletion_prob, dtype, batch_rows,
            **columns) -> ingest.Source:
    """The rows to ingest: arrays with ``y``, or a table/file with a ``label`` column."""
    if label is None:
        if y is None:
            raise InputError("pass y= with array data, or label='column' with a table/file")
        return ingest.from_arrays(data, y, sample_ids, groups, deletion_prob, dtype)
    if sample_ids is not None:
        raise InputError("pass sample_ids= with array data, or id_column= with a table")
    return ingest.from_table(data, label, dtype=dtype, batch_rows=batch_rows, **columns)


def _local_dirs(loc: Location) -> set[str]:
    """Every folder below a local store's root (object stores have none)."""
    if not loc.is_local or not os.path.isdir(loc.root):
        return set()
    return {d for d, _, _ in os.walk(loc.root, followlinks=False)} - {loc.root}


class _Builder:
    """Two passes: assign and spill batches to local temp files, then write each slice
    sorted by its hash order. Memory holds at most the budget plus one slice."""

    def __init__(self, loc: Location, config: AssignmentConfig, source: ingest.Source,
                 budget_mb: int, progress: bool, store_id: str,
                 key: keys.KeyPair | None) -> None:
        self.loc, self.config, self.source, self.progress = loc, config, source, progress
        self.store_id, self.key = store_id, key
        self.budget = budget_mb * 2**20
        ftype = pa.float32() if source.dtype == np.float32 else pa.float64()
        self.schema_info = {
            "feature_names": source.feature_names, "label_name": source.label_name,
            "label_type": str(source.label_type), "id_name": source.id_name,
            "dtype": "float32" if ftype == pa.float32() else "float64", "id_type": None,
        }
        self.ftype = ftype

    def build(self) -> Manifest:
        """Write the slices and the index; returns the new (unpublished) manifest."""
        tmp = Path(tempfile.mkdtemp(prefix="sisa-ingest-"))
        try:
            return self._build(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, tmp: Path) -> Manifest:
        S, R = self.config.n_shards, self.config.n_slices
        buffers: dict[tuple[int, int], list[pa.Table]] = {}
        chunks: dict[tuple[int, int], list[Path]] = {}
        all_ids, all_shard, all_slice = [], [], []
        buffered, n, n_flush = 0, 0, 0
        bar = progress_bar(desc="ingesting", unit="rows", unit_scale=True,
                           enabled=self.progress)
        for batch in self.source.batches:
            m = len(batch.y)
            bar.update(m)
            id_arr, shard, sl, nbytes = self._assign(batch, n, buffers)
            all_ids.append(id_arr)
            all_shard.append(shard)
            all_slice.append(sl)
            buffered += nbytes
            n += m
            if buffered > self.budget:
                self._spill(tmp, buffers, chunks, n_flush)
                buffers, buffered, n_flush = {}, 0, n_flush + 1
        bar.close()
        if n == 0:
            raise InputError("the input has no rows: there is nothing to train on")
        if n < S * R:
            raise InputError(
                f"{S} shards x {R} slices = {S * R} slices for only {n} rows: use fewer shards "
                "or slices (each slice should hold many rows)"
            )
        self.schema_info["id_type"] = self.source.id_type
        ids = pa.chunked_array(all_ids, idmod.arrow_type(self.source.id_type)).combine_chunks()
        index = pa.table({ID: ids, "shard": np.concatenate(all_shard),
                          "slice": np.concatenate(all_slice)}).sort_by(ID)
        sorted_ids = index.column(ID).combine_chunks()
        dup = pc.equal(sorted_ids[1:], sorted_ids[:-1]) if n > 1 else pa.array([], pa.bool_())
        if pc.any(dup).as_py():
            dups = pc.unique(pc.filter(sorted_ids[1:], dup)).to_pylist()
            raise InputError(
                f"{len(dups)} duplicate sample id(s), e.g. {dups[:5]}: sample ids must be unique "
                "(drop duplicate rows or pass a unique id column)"
            )
        slices, index_meta = self._write_slices(tmp, buffers, chunks, index)
        return mf.initial(
            store_id=self.store_id, signer_key=self.key.public_hex if self.key else None,
            assignment=self.config.to_dict(), schema=self.schema_info, slices=slices,
            index=index_meta)

    def _assign(self, batch, n: int, buffers: dict) -> tuple[pa.Array, np.ndarray, np.ndarray,
                                                             int]:
        """Assign one batch's rows (ids default to their row numbers from ``n``) and add
        them to ``buffers`` by (shard, slice); returns ids, shards, slices and bytes."""
        R, m, d = self.config.n_slices, len(batch.y), len(self.source.feature_names)
        id_arr = idmod.to_store_ids(
            batch.ids if batch.ids is not None else np.arange(n, n + m, dtype=np.int64),
            self.source.id_type)
        shard, sl, order = assign(self.config, idmod.as_numpy(id_arr), batch.groups,
                                  batch.deletion_prob)
        feats = pa.FixedSizeListArray.from_arrays(pa.array(batch.X.reshape(-1)), d)
        table = pa.table({ID: id_arr, LABEL: pa.array(batch.y).cast(self.source.label_type),
                          FEATURES: feats, ORDER: pa.array(order)})
        cell = shard.astype(np.int64) * R + sl
        perm = np.argsort(cell, kind="stable")
        bounds = np.flatnonzero(np.diff(cell[perm])) + 1
        for part in np.split(perm, bounds):
            c = int(cell[part[0]])
            buffers.setdefault((c // R, c % R), []).append(table.take(part))
        return id_arr, shard, sl, table.nbytes

    def _spill(self, tmp: Path, buffers, chunks, n_flush: int) -> None:
        for key, parts in buffers.items():
            path = tmp / f"{key[0]}_{key[1]}_{n_flush}.arrow"
            t = pa.concat_tables(parts)
            with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
                w.write_table(t)
            chunks.setdefault(key, []).append(path)

    def _write_slices(self, tmp: Path, buffers, chunks, index: pa.Table) -> dict:
        S, R = self.config.n_shards, self.config.n_slices
        schema = slice_schema(self.schema_info)
        slices: dict[str, dict] = {}
        cells = progress_bar([(s, r) for s in range(S) for r in range(R)],
                             desc="writing slices", unit="slice", enabled=self.progress)
        for s, r in cells:
            parts = [pa.ipc.open_file(pa.memory_map(str(p))).read_all()
                     for p in chunks.get((s, r), [])]
            parts += buffers.get((s, r), [])
            if parts:
                t = pa.concat_tables(parts).sort_by([(ORDER, "ascending"), (ID, "ascending")])
                t = t.drop_columns([ORDER]).cast(schema)
            else:
                t = schema.empty_table()
            # the slice's distinct labels: the class set is a union of manifest entries
            slices[slice_key(s, r)] = {**self._put(slice_dir(s, r), ipc_bytes(t)),
                                       "rows": t.num_rows, "shard": s,
                                       "labels": slice_labels(t, self.schema_info["label_type"])}
        parts = [{**self._put(index_dir(b), ipc_bytes(part)), "rows": part.num_rows}
                 for b, part in enumerate(bucketed(index, n_index_buckets(index.num_rows)))]
        index_meta = {"parts": parts, "rows": index.num_rows}
        return slices, index_meta

    def _put(self, rel_dir: str, data: pa.Buffer) -> dict:
        return self.loc.write_content(rel_dir, ".arrow", data)
