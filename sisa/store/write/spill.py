"""Spill runs: ingested rows, assigned and sorted, in temporary files of bounded size.

Pass 1 of a build, in the driver (:mod:`sisa.store.write.builder`) or in a Ray task per input
fragment (:mod:`sisa.store.write.parallel_ingest`). Rows are assigned as they stream in and held
up to the memory budget; each full buffer becomes one *run* of two files:

* rows, sorted by (shard, slice) and then by the in-slice order hash, in record batches
  that never mix two slices and hold at most :data:`WINDOW` rows, so a slice (or one
  range of its order hashes) is read back from every run without reading the rest;
* index entries (sample id, shard, slice), grouped by index bucket: by the id's index hash
  modulo 4096 with its 12 bits reversed, so that for every power-of-two bucket count B the
  ids of one bucket (hash mod B) are one contiguous range of the run.

Pass 2 (:mod:`sisa.store.write.merge`) reads one slice or one index bucket at a time from every
run. Runs are flat files named ``<prefix><name>`` in a :class:`Scratch` folder.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..format import ids as idmod
from ..format.assign import AssignmentConfig, assign, group_hash, keyed_hash
from ..format.layout import FEATURES, GROUP, ID, LABEL
from ..io.fs import Location

ORDER = "__order"  # a row's place in its slice (assign's hash order), dropped on write
WINDOW = 8192  # rows per record batch of a run, at most
INDEX_BATCH = 8192  # index entries per record batch of a run
FINE_BITS = 12  # index keys: 4096 groups (sisa.store.format.index.MAX_INDEX_BUCKETS)
REV = np.array([int(f"{i:0{FINE_BITS}b}"[::-1], 2) for i in range(1 << FINE_BITS)], np.uint16)


@dataclass(frozen=True)
class Scratch:
    """Where an ingest's run files live: flat names ``<prefix>…`` in ``folder`` of the
    location ``uri`` (the store's ``.tmp/``, cleared by the next writer if this one is
    killed, or a local temp dir). Picklable, so Ray tasks write and read them too."""

    uri: str
    folder: str
    prefix: str

    @property
    def loc(self) -> Location:
        return Location(self.uri)

    def rel(self, name: str) -> str:
        return f"{self.folder}/{self.prefix}{name}" if self.folder else f"{self.prefix}{name}"

    def open_output(self, name: str):
        loc, rel = self.loc, self.rel(name)
        if loc.is_local:
            loc.exists(rel)  # refuses a planted link on the way (UnsafePathError)
            os.makedirs(loc.path(self.folder), exist_ok=True)
        return loc.fs.open_output_stream(loc.path(rel), compression=None)

    def open_input(self, name: str):
        return self.loc.fs.open_input_file(self.loc.path(self.rel(name)))

    def clear(self) -> None:
        """Delete every file of this ingest."""
        loc = self.loc
        for rel in loc.list_files(self.folder):
            if rel.rsplit("/", 1)[-1].startswith(self.prefix):
                loc.delete(rel)


@dataclass(frozen=True)
class Shape:
    """What a row holds: its id, label and feature types (and, ``grouped``, the hash of
    its group key)."""

    id_type: idmod.IdType
    label_type: pa.DataType
    n_features: int
    dtype: np.dtype
    columns: pa.StructType | None = None  # typed columns' run type (None: a float matrix)
    grouped: bool = False

    @property
    def run_schema(self) -> pa.Schema:
        ftype = self.columns or pa.list_(pa.from_numpy_dtype(self.dtype), self.n_features)
        group = [(GROUP, pa.uint64())] if self.grouped else []
        return pa.schema([(ID, idmod.arrow_type(self.id_type)), (LABEL, self.label_type),
                          (FEATURES, ftype), *group, (ORDER, pa.uint64())])

    @property
    def row_bytes(self) -> int:
        """Bytes a buffered row takes besides its text: features, id, label, hashes, and
        the copies of the small columns a run's sort makes."""
        return self.n_features * self.dtype.itemsize + 100 + 16 * self.grouped


@dataclass(frozen=True)
class Job:
    """Everything a build's tasks share (picklable: Ray tasks get it once).

    Attributes
    ----------
    uri : str
        The store's location.
    scratch : Scratch
        Where the runs go.
    config : AssignmentConfig
        The assignment.
    shape : Shape
        Column types.
    schema_info : dict
        The manifest's ``schema`` entry.
    budget : int
        Bytes of rows a task holds before it spills a run.
    chunk_bytes : int
        Slices above this size are merged range by range; also the bytes of pending writes.
    batch_rows : int
        Rows converted and assigned at a time.
    """

    uri: str
    scratch: Scratch
    config: AssignmentConfig
    shape: Shape
    schema_info: dict
    budget: int
    chunk_bytes: int
    batch_rows: int

    @property
    def loc(self) -> Location:
        return Location(self.uri)


@dataclass
class RowRun:
    """One run's row file: per record batch its slice (``cell`` = shard·R + slice), rows,
    first and last order hash, and text bytes of its string id and label columns."""

    name: str
    cells: np.ndarray
    rows: np.ndarray
    first: np.ndarray
    last: np.ndarray
    text: np.ndarray  # (batches, 2): id and label text bytes (0 for non-string columns)

    def batches_of(self, cell: int) -> range:
        return range(int(np.searchsorted(self.cells, cell, "left")),
                     int(np.searchsorted(self.cells, cell, "right")))


@dataclass
class IndexRun:
    """One run's index file: ``starts[k]`` is the first entry whose reversed index key is
    ``k`` (4097 entries); record batches of :data:`INDEX_BATCH` entries."""

    name: str
    starts: np.ndarray


@dataclass
class Spilled:
    """What pass 1 produced: rows read and the runs holding them."""

    rows: int = 0
    row_runs: list[RowRun] = field(default_factory=list)
    index_runs: list[IndexRun] = field(default_factory=list)


def index_keys(ids: np.ndarray) -> np.ndarray:
    """Reversed 12-bit index key of each id: bucket ``b`` of ``B = 2**k`` buckets is the
    key range ``[rev_k(b) << (12-k), (rev_k(b)+1) << (12-k))``."""
    h = keyed_hash(ids, 0, "index")  # the hash of sisa.store.format.index.id_buckets
    return REV[(h & np.uint64((1 << FINE_BITS) - 1)).astype(np.int64)]


def key_range(bucket: int, n_buckets: int) -> tuple[int, int]:
    """Reversed-key range of index bucket ``bucket`` of ``n_buckets`` (a power of two)."""
    k = n_buckets.bit_length() - 1
    rev = int(f"{bucket:0{k}b}"[::-1], 2) if k else 0
    return rev << (FINE_BITS - k), (rev + 1) << (FINE_BITS - k)


def _text_ends(arr: pa.Array) -> np.ndarray | None:
    """Cumulative text bytes before each row of a string array (None for other types)."""
    if not pa.types.is_string(arr.type):
        return None
    return np.frombuffer(arr.buffers()[1], np.int32, count=len(arr) + 1, offset=4 * arr.offset)


class Spiller:
    """Pass 1: assign rows as they come and spill them in runs (see the module doc).

    Parameters
    ----------
    scratch : Scratch
        Where the runs go.
    tag : str
        Run names start with it (one tag per task, so tasks never collide).
    config : AssignmentConfig
        The assignment.
    shape : Shape
        Column types.
    budget : int
        Bytes of rows held before a run is written.
    hash_index : bool, default=True
        False when the build is known to get a single index bucket (all keys 0).
    """

    def __init__(self, scratch: Scratch, tag: str, config: AssignmentConfig, shape: Shape,
                 budget: int, hash_index: bool = True) -> None:
        self.scratch, self.tag, self.config, self.shape = scratch, tag, config, shape
        self.budget, self.hash_index = budget, hash_index
        self.cap = max(1, budget // shape.row_bytes)
        self.X: np.ndarray | None = None  # features of the buffered rows, reused per run
        self.typed: list[pa.StructArray] = []  # or their typed columns (held as given)
        self.parts: list[tuple] = []
        self.used = self.text = 0
        self.out = Spilled()

    def add(self, ids: pa.Array, X: np.ndarray, y: pa.Array, groups=None,
            deletion_prob=None) -> None:
        """Assign and buffer one batch (ids already the store's type, labels Arrow)."""
        m = len(ids)
        if not m:
            return
        raw = idmod.as_numpy(ids)
        shard, sl, order = assign(self.config, raw, groups, deletion_prob)
        keys = index_keys(raw) if self.hash_index else np.zeros(m, np.uint16)
        if isinstance(X, pa.StructArray):
            if self.used and self.used + m > self.cap:
                self.flush()
            self.typed.append(X)
            self.text += X.nbytes
        else:
            if self.used and (self.X is None or self.used + m > len(self.X)):
                self.flush()
            if self.X is None or len(self.X) < m:  # allocated lazily: untouched pages are free
                self.X = np.empty((max(self.cap, m), self.shape.n_features), self.shape.dtype)
            self.X[self.used:self.used + m] = X
        cell = shard.astype(np.int64) * self.config.n_slices + sl
        ghash = group_hash(self.config, groups) if self.shape.grouped else None
        self.parts.append((ids, y, cell, order, shard, sl, keys, ghash))
        self.used += m
        self.out.rows += m
        self.text += sum(a.nbytes for a in (ids, y) if pa.types.is_string(a.type))
        if self.used * self.shape.row_bytes + self.text >= self.budget:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one run."""
        if not self.used:
            return
        col = list(zip(*self.parts, strict=True))
        ids, labels = pa.concat_arrays(col[0]), pa.concat_arrays(col[1])
        cell, order = np.concatenate(col[2]), np.concatenate(col[3])
        k = len(self.out.row_runs)
        perm = np.lexsort((order, cell))  # by slice, then order; ties are broken at merge
        ghash = np.concatenate(col[7])[perm] if self.shape.grouped else None
        self.out.row_runs.append(self._write_rows(f"{self.tag}-r{k}", perm, ids, labels,
                                                  cell[perm], order[perm], ghash))
        del cell, order, perm
        self.out.index_runs.append(self._write_index(
            f"{self.tag}-i{k}", ids, np.concatenate(col[4]), np.concatenate(col[5]),
            np.concatenate(col[6])))
        self.parts, self.typed, self.used, self.text = [], [], 0, 0
        pa.default_memory_pool().release_unused()

    def finish(self) -> Spilled:
        """Write what is left; returns the runs."""
        self.flush()
        self.X = None
        return self.out

    def _write_rows(self, name: str, perm: np.ndarray, ids: pa.Array, labels: pa.Array,
                    cell: np.ndarray, order: np.ndarray, ghash: np.ndarray | None) -> RowRun:
        n, d = len(perm), self.shape.n_features
        take = pa.array(perm)
        ids, labels = ids.take(take), labels.take(take)
        edges = np.concatenate([[0], np.flatnonzero(np.diff(cell)) + 1, [n]])
        starts = np.concatenate([np.arange(a, b, WINDOW) for a, b in itertools.pairwise(edges)])
        ends = np.append(starts[1:], n)
        texts = [_text_ends(ids), _text_ends(labels)]
        schema = self.shape.run_schema
        typed = pa.concat_arrays(self.typed).take(take) if self.typed else None
        with self.scratch.open_output(name) as sink, pa.ipc.new_file(sink, schema) as w:
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                if typed is not None:
                    feats = typed.slice(a, b - a)
                else:  # gathered one window at a time: no second copy
                    assert self.X is not None  # untyped rows are buffered in X
                    feats = pa.FixedSizeListArray.from_arrays(
                        pa.array(self.X[perm[a:b]].reshape(-1)), d)
                group = [] if ghash is None else [pa.array(ghash[a:b])]
                w.write_batch(pa.record_batch([
                    ids.slice(a, b - a), labels.slice(a, b - a), feats,
                    *group, pa.array(order[a:b])], schema=schema))
        text = np.zeros((len(starts), 2), np.int64)
        for j, ends_ in enumerate(texts):
            if ends_ is not None:
                text[:, j] = ends_[ends] - ends_[starts]
        return RowRun(name, cell[starts], ends - starts, order[starts], order[ends - 1], text)

    def _write_index(self, name: str, ids: pa.Array, shard: np.ndarray, sl: np.ndarray,
                     keys: np.ndarray) -> IndexRun:
        perm = np.argsort(keys, kind="stable")
        starts = np.searchsorted(keys[perm], np.arange((1 << FINE_BITS) + 1))
        table = pa.table({ID: ids.take(pa.array(perm)), "shard": shard[perm],
                          "slice": sl[perm]}).combine_chunks()
        with self.scratch.open_output(name) as sink, \
                pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=INDEX_BATCH)
        return IndexRun(name, starts.astype(np.int64))


def spill(job: Job, tag: str, batches, first_row: int = 0, hash_index: bool = True,
          tick=None) -> Spilled:
    """Pass 1 over checked :class:`~sisa.store.write.ingest.Batch` es: assign and spill them.
    Default ids are row numbers counted from ``first_row``; ``tick(rows)`` after each."""
    sp = Spiller(job.scratch, tag, job.config, job.shape, job.budget, hash_index)
    n, step = first_row, max(job.batch_rows, 1)
    label_type = job.shape.label_type
    for batch in batches:
        m = len(batch.y)
        for a in range(0, m, step):  # an in-memory input is one batch: take it in steps
            b = min(a + step, m)
            raw = np.arange(n + a, n + b, dtype=np.int64) if batch.ids is None else \
                batch.ids[a:b]
            sp.add(idmod.to_store_ids(raw, job.shape.id_type), batch.X[a:b],
                   pa.array(batch.y[a:b]).cast(label_type),
                   None if batch.groups is None else batch.groups[a:b],
                   None if batch.deletion_prob is None else batch.deletion_prob[a:b])
        n += m
        if tick:
            tick(m)
    return sp.finish()
