"""Pass 2 of a build: the final slice and index files, merged from the spill runs.

One slice at a time, its record batches from every run (:mod:`sisa.store.write.spill`) are
concatenated, sorted by (order hash, sample id), stripped of the order column and written
with :func:`~sisa.store.format.layout.ipc_bytes`: the bytes an all-in-memory build writes, whatever
the budget, the number of runs or of Ray tasks. A slice larger than ``chunk_bytes`` is
merged one range of order hashes at a time (rows of equal hash share a range) and written
through :mod:`sisa.store.format.streamed_ipc`, byte-identical. Index buckets likewise, sorted by
id, which is also where duplicate ids meet: an id has one bucket.

Files go to the store through :class:`Output`, several at a time: each write fsyncs, and
concurrent fsyncs share the disk's flushes (about 10x faster than one after another).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import InputError
from ..format import ids as idmod
from ..format.layout import (
    ID,
    MAX_SLICE_LABELS,
    index_dir,
    ipc_bytes,
    records_labels,
    slice_dir,
    slice_labels,
    slice_schema,
)
from ..format.streamed_ipc import StreamedFile, Unsupported
from ..io.fs import Location
from ..io.localfs import fsync_dir, makedirs_durable
from ..manifest.entries import Blob, BucketFile, SliceFile
from .spill import INDEX_BATCH, ORDER, Job, Scratch, Shape, Spilled, key_range

WRITERS = 8  # files written at a time
COPY = 8 << 20  # bytes per read when uploading a streamed file


class Runs:
    """Readers over every run of one ingest, opened on first use and kept open."""

    def __init__(self, scratch: Scratch, spilled: list[Spilled]) -> None:
        self.scratch = scratch
        self.row_runs = [r for s in spilled for r in s.row_runs]
        self.index_runs = [r for s in spilled for r in s.index_runs]
        self._open: dict[str, pa.ipc.RecordBatchFileReader] = {}

    def close(self) -> None:
        self._open.clear()  # readers close with their files

    def _batch(self, name: str, i: int) -> pa.RecordBatch:
        reader = self._open.get(name)
        if reader is None:
            reader = self._open[name] = pa.ipc.open_file(self.scratch.open_input(name))
        return reader.get_batch(i)

    def cell_size(self, cell: int) -> tuple[int, int, int]:
        """Rows of a slice and the bytes of its id and label text."""
        rows = ids = labels = 0
        for run in self.row_runs:
            at = run.batches_of(cell)
            rows += int(run.rows[at.start:at.stop].sum())
            ids += int(run.text[at.start:at.stop, 0].sum())
            labels += int(run.text[at.start:at.stop, 1].sum())
        return rows, ids, labels

    def cell_batches(self, cell: int, lo: int = 0, hi: int = 1 << 64) -> list[pa.RecordBatch]:
        """The rows of one slice whose order hash is in ``[lo, hi)``, from every run."""
        out = []
        for run in self.row_runs:
            for i in run.batches_of(cell):
                if int(run.last[i]) < lo or int(run.first[i]) >= hi:
                    continue
                b = self._batch(run.name, i)
                if lo or hi < 1 << 64:  # each batch is sorted by order hash
                    order = b.column(ORDER).to_numpy()
                    a = int(np.searchsorted(order, np.uint64(lo)))
                    e = len(order) if hi >= 1 << 64 else int(np.searchsorted(order, np.uint64(hi)))
                    b = b.slice(a, e - a)
                out.append(b)
        return out

    def bucket(self, b: int, n_buckets: int, schema: pa.Schema) -> pa.Table:
        """Index bucket ``b`` of ``n_buckets``, sorted by id."""
        lo, hi = key_range(b, n_buckets)
        pieces = []
        for run in self.index_runs:
            a, e = int(run.starts[lo]), int(run.starts[hi])
            for k in range(a // INDEX_BATCH, (e - 1) // INDEX_BATCH + 1 if e > a else 0):
                s, t = max(a - k * INDEX_BATCH, 0), min(e - k * INDEX_BATCH, INDEX_BATCH)
                pieces.append(self._batch(run.name, k).slice(s, t - s))
        if not pieces:  # as an all-in-memory build's `take` of no rows
            return schema.empty_table().take(pa.array([], pa.int64()))
        return pa.Table.from_batches(pieces, schema).sort_by(ID)


class Output:
    """Content-addressed writes into the store, :data:`WRITERS` at a time, holding at most
    ``max_bytes`` of pending data (the producer waits)."""

    def __init__(self, loc: Location, max_bytes: int) -> None:
        self.loc, self.max_bytes = loc, max(max_bytes, 1)
        self.pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="sisa-write")
        self.pending = 0
        self.cond = threading.Condition()
        self.futures: dict[object, Future] = {}

    def prepare(self, rel_dirs) -> None:
        """Create the folders of the files to come (local stores), syncing each parent
        once: one fsync per shard instead of one per slice folder."""
        if not self.loc.is_local:
            return
        created = []
        for rel in rel_dirs:
            path = self.loc.path(rel)
            self.loc.exists(rel)  # refuses links on the way
            while not os.path.isdir(path):
                created.append(path)
                path = os.path.dirname(path)
        for path in sorted(created, key=len):
            os.makedirs(path, exist_ok=True)
        list(self.pool.map(fsync_dir, sorted({os.path.dirname(p) for p in created})))

    def put(self, key, rel_dir: str, data: pa.Buffer, kind: type[Blob], **extra) -> None:
        """Write ``data`` as ``rel_dir/<hash>.arrow``; its entry is a ``kind`` (file,
        sha256, bytes and ``extra``)."""
        size = data.size
        with self.cond:
            self.cond.wait_for(lambda: self.pending == 0 or self.pending + size <= self.max_bytes)
            self.pending += size

        def write() -> Blob:
            try:
                return kind.of(Blob(**self.loc.write_content(rel_dir, ".arrow", data)), **extra)
            finally:
                with self.cond:
                    self.pending -= size
                    self.cond.notify_all()

        self.futures[key] = self.pool.submit(write)

    def put_file(self, key, rel_dir: str, path: str, sha256: str, size: int,
                 kind: type[Blob], **extra) -> None:
        """Move (local store) or upload a finished local file named by its hash."""
        rel = f"{rel_dir}/{sha256[:32]}.arrow"
        info = self.loc.info(rel)  # refuses links on the way
        if info.type.name != "NotFound" and info.size == size:
            os.unlink(path)  # the same bytes are there already (a retried task)
        elif self.loc.is_local:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            target = self.loc.path(rel)
            makedirs_durable(os.path.dirname(target))
            os.replace(path, target)
            fsync_dir(os.path.dirname(target))
        else:
            try:
                with open(path, "rb") as src, \
                        self.loc.fs.open_output_stream(self.loc.path(rel)) as dst:
                    while block := src.read(COPY):
                        dst.write(block)
            finally:
                os.unlink(path)
        done: Future = Future()
        done.set_result(kind(rel, sha256, size, **extra))
        self.futures[key] = done

    def entries(self) -> dict:
        """Every entry, once all writes are done (the first failure is raised)."""
        try:
            return {k: f.result() for k, f in self.futures.items()}
        finally:
            self.pool.shutdown(wait=True)


def local_dir(loc: Location) -> str:
    """Where a streamed file is written before it is moved or uploaded: the store's
    ``.tmp/`` when local (same filesystem: a rename; the next writer clears debris)."""
    if loc.is_local:
        path = loc.path(".tmp")
        loc.exists(".tmp/x")  # refuses a planted .tmp link
        os.makedirs(path, exist_ok=True)
        return path
    return tempfile.gettempdir()


def _sorted(batches: list[pa.RecordBatch], run_schema: pa.Schema,
            schema: pa.Schema) -> pa.Table:
    """Rows sorted as a slice stores them, in the slice's schema."""
    if not batches:
        return schema.empty_table()
    t = pa.Table.from_batches(batches, run_schema)
    if pa.types.is_integer(run_schema.field(ID).type):  # numpy sorts two int keys faster
        order = np.concatenate([b.column(ORDER).to_numpy() for b in batches])
        ids = np.concatenate([b.column(ID).to_numpy() for b in batches])
        t = t.drop_columns([ORDER]).take(np.lexsort((ids, order)))
    else:
        t = t.sort_by([(ORDER, "ascending"), (ID, "ascending")]).drop_columns([ORDER])
    return t if t.schema.equals(schema) else t.cast(schema)  # `take` owns its buffers


def write_slices(job: Job, spilled: list[Spilled], cells, tick=None
                 ) -> dict[int, SliceFile]:
    """Write the slices ``cells`` (shard·R + slice) from the runs; returns each one's
    manifest entry by cell. ``tick()`` after each."""
    runs, out = Runs(job.scratch, spilled), Output(job.loc, job.chunk_bytes)
    R = job.config.n_slices
    try:
        out.prepare(slice_dir(*divmod(cell, R)) for cell in cells)
        for cell in cells:
            _write_slice(job, runs, cell, out)
            if tick:
                tick()
    finally:
        runs.close()
        entries = out.entries()
    return entries


def _write_slice(job: Job, runs: Runs, cell: int, out: Output) -> None:
    s, r = divmod(cell, job.config.n_slices)
    shape, chunk = job.shape, max(job.chunk_bytes, 1)
    schema, label_type = slice_schema(job.schema_info), job.schema_info["label_type"]
    rows, id_text, label_text = runs.cell_size(cell)
    size = rows * shape.row_bytes + id_text + label_text
    if size > chunk:
        with contextlib.suppress(Unsupported):  # a column type it does not lay out: in memory
            path, sha, n_bytes, labels = _stream(runs, cell, shape, schema, rows,
                                                 (id_text, label_text),
                                                 min(-(-size // chunk), rows),
                                                 local_dir(out.loc), label_type)
            out.put_file(cell, slice_dir(s, r), path, sha, n_bytes, SliceFile,
                         rows=rows, shard=s, labels=labels)
            return
    t = _sorted(runs.cell_batches(cell), shape.run_schema, schema)
    # the slice's distinct labels: the class set is a union of manifest entries
    out.put(cell, slice_dir(s, r), ipc_bytes(t), SliceFile,
            rows=t.num_rows, shard=s, labels=slice_labels(t, label_type))


def _stream(runs: Runs, cell: int, shape: Shape, schema: pa.Schema, rows: int, text: tuple,
            parts: int, folder: str, label_type: str) -> tuple[str, str, int, list | None]:
    """One large slice, ``parts`` ranges of order hashes at a time, into a local file;
    returns its path, sha256, size and label list."""
    texts = {i: n for i, n in enumerate(text) if pa.types.is_string(schema.field(i).type)}
    path = os.path.join(folder, f"{runs.scratch.prefix}slice-{secrets.token_hex(8)}")
    labels: set | None = set() if records_labels(label_type) else None
    try:
        w = StreamedFile(path, schema, rows, texts)
        try:
            for p in range(parts):
                t = _sorted(runs.cell_batches(cell, (p << 64) // parts, ((p + 1) << 64) // parts),
                            shape.run_schema, schema)
                w.write(t)
                if labels is not None:
                    labels.update(pc.unique(t.column(1)).to_pylist())
                    labels = labels if len(labels) <= MAX_SLICE_LABELS else None
                del t
                pa.default_memory_pool().release_unused()
        finally:
            sha, size = w.close()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    return path, sha, size, None if labels is None else sorted(labels)


def write_index(job: Job, spilled: list[Spilled], buckets, n_buckets: int
                ) -> tuple[dict[int, BucketFile], int, list]:
    """Check and write index buckets; returns their entries by bucket, the number of
    duplicated ids and the smallest five of them (once a duplicate is found nothing more
    is written: the build fails)."""
    schema = pa.schema([(ID, idmod.arrow_type(job.shape.id_type)), ("shard", pa.int32()),
                        ("slice", pa.int32())])
    runs, out = Runs(job.scratch, spilled), Output(job.loc, job.chunk_bytes)
    n_dups, smallest = 0, list[object]()
    try:
        out.prepare(index_dir(b) for b in buckets)
        for b in buckets:
            table = runs.bucket(b, n_buckets, schema)
            ids = table.column(ID).combine_chunks()
            dup = pc.equal(ids[1:], ids[:-1]) if len(ids) > 1 else pa.array([], pa.bool_())
            if pc.any(dup).as_py():
                found = pc.unique(pc.filter(ids[1:], dup)).to_pylist()
                n_dups += len(found)
                smallest = sorted(smallest + found[:5])[:5]
            elif not n_dups:
                out.put(b, index_dir(b), ipc_bytes(table), BucketFile, rows=table.num_rows)
    finally:
        runs.close()
        entries = out.entries()
    return entries, n_dups, smallest


def duplicates_error(n_dups: int, smallest: list) -> InputError:
    return InputError(f"{n_dups} duplicate sample id(s), e.g. {smallest[:5]}: sample ids must be "
                      "unique (drop duplicate rows or pass a unique id column)")
