"""Parallel ingest on Ray: the two passes of :mod:`sisa.store.write.builder` as Ray tasks.

1. **Plan** (driver): the input's parts: runs of Parquet row groups (about
   :data:`PART_ROWS` rows each) or whole Arrow files, each with its first global row
   number, read from the files' metadata, so default ids (row numbers) are those of a
   serial read.
2. **Spill** (one task per part): read the part, check and assign its rows (the keyed hash
   of a row depends on that row alone) and spill sorted runs into the store's ``.tmp/``:
   :func:`sisa.store.write.spill.spill`, the serial code.
3. **Merge**: tasks over groups of index buckets, then over groups of slices, each reading
   its buckets or slices from every task's runs (:func:`sisa.store.write.merge.write_index`,
   :func:`~sisa.store.write.merge.write_slices`, the serial code) and writing the final files.
4. The driver only checks counts and assembles the manifest; the runs are deleted.

Every file is the one a serial ingest writes, byte for byte: rows are sorted by (order
hash, id) within a slice and ids within a bucket, whatever run they came from. A row
problem is reported as a serial read reports it: parts never fail at the Ray level on bad
input but return the error, and the driver raises the one of the earliest part. Runs
live on the store's filesystem, so every node must reach the store (a shared path or an
object store) and the input path.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from ...errors import InputError
from ...tasks import backend
from ..format import arrow_checks
from ..format.index import n_index_buckets
from ..manifest.entries import BucketFile, SliceFile
from . import ingest, merge, pages, spill
from .spill import Job, Spilled

PARALLEL_MIN_ROWS = 1_000_000  # "auto" ingests smaller files in this process
PART_ROWS = 1_000_000  # rows per spill task (whole row groups)
LAST_RUN: dict = {}  # figures of the last parallel ingest in this process (benchmarks)


@dataclass(frozen=True)
class Part:
    """Rows ``first_row .. first_row + rows`` of the input: ``row_groups`` of a Parquet
    file (None: the whole file)."""

    path: str
    row_groups: tuple[int, ...] | None
    first_row: int
    rows: int


@dataclass(frozen=True)
class Reader:
    """How a task reads a part (picklable)."""

    parquet: bool
    schema: pa.Schema
    columns: ingest.Columns
    what: str
    batch_rows: int

    def batches(self, part: Part):
        fs = pafs.LocalFileSystem()
        if self.parquet:  # page by page, not whole row groups
            names = self.columns.names
            assert part.row_groups is not None  # plan() lists a Parquet file's row groups
            stream = pages.parquet_batches(fs, part.path, list(part.row_groups),
                                            pa.schema([self.schema.field(n) for n in names]),
                                            self.batch_rows)
        else:
            fmt = ds.IpcFileFormat()
            stream = fmt.make_fragment(part.path, fs).to_batches(
                schema=self.schema, columns=self.columns.names, batch_size=self.batch_rows,
                **pages.scan_options(fmt))
        return ingest.checked_batches(stream, self.columns, self.what, part.first_row)


def unsupported(source: ingest.Source) -> str | None:
    """Why ``source`` cannot be read in parts (None: it can)."""
    table = source.table
    if table is None or not isinstance(table.dataset, ds.FileSystemDataset):
        return "the input is in memory (arrays, a DataFrame or a Table)"
    if not isinstance(table.dataset.format, (ds.ParquetFileFormat, ds.IpcFileFormat)):
        return f"{table.what} is CSV (its row numbers need a full read)"
    if not isinstance(table.dataset.filesystem, pafs.LocalFileSystem):
        return f"{table.what} is not a local path"
    return None


def choose(source: ingest.Source, settings, batch_rows: int) -> ParallelIngest | None:
    """The parallel ingest ``settings`` ask for, or None for one in this process."""
    if settings is None or settings.backend == "local":
        return None
    why = unsupported(source)
    if settings.backend == "ray" and why:
        raise InputError(f"parallel ingest (backend='ray') reads Parquet or Arrow files, and "
                         f"{why}: write it to Parquet first, or pass backend='auto' to ingest "
                         "it in this process")
    small = (source.rows or 0) < PARALLEL_MIN_ROWS
    if settings.backend == "auto" and (why or small or backend.choose(settings, 2) != "ray"):
        return None
    t = source.table
    assert t is not None  # unsupported(source) said why otherwise, and we returned or raised
    return ParallelIngest(t, settings, Reader(isinstance(t.dataset.format, ds.ParquetFileFormat),
                                              t.dataset.schema, t.columns, t.what, batch_rows))


def plan(dataset: ds.Dataset, what: str, n_parts: int = 1,
         max_rows: int = PART_ROWS) -> list[Part]:
    """The parts of a Parquet or Arrow dataset in scan order, each with its first row: at
    least ``n_parts`` where row groups allow, of at most ``max_rows`` rows (and
    :data:`PART_ROWS`)."""
    units = []  # (path, row group or None, rows) in scan order
    with arrow_checks.reading(what):
        for frag in dataset.get_fragments():
            if isinstance(frag, ds.ParquetFileFragment):
                frag.ensure_complete_metadata()
                units += [(frag.path, rg.id, rg.num_rows) for rg in frag.row_groups]
            else:
                units.append((frag.path, None, frag.count_rows()))
    target = min(PART_ROWS, max_rows, -(-sum(u[2] for u in units) // max(n_parts, 1)))
    parts: list[Part] = []
    first = 0
    for path, rg, rows in units:
        last = parts[-1] if parts else None
        if (last and last.path == path and rg is not None and last.row_groups is not None
                and last.rows + rows <= max(target, 1)):
            parts[-1] = Part(path, (*last.row_groups, rg), last.first_row, last.rows + rows)
        else:
            parts.append(Part(path, None if rg is None else (rg,), first, rows))
        first += rows
    return [p for p in parts if p.rows]


def _where() -> dict:
    """This process's peak RSS (MB) and, in a Ray worker, its node: for the figures."""
    ray = sys.modules.get("ray")
    node = ray.get_runtime_context().get_node_id() if ray and ray.is_initialized() else None
    return {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "node": node}


def spill_part(job: Job, reader: Reader, i: int, part: Part, hash_index: bool) -> dict:
    """Task: spill one part; an input problem comes back as ``error``, not raised."""
    try:
        out = spill.spill(job, f"p{i}", reader.batches(part), part.first_row, hash_index)
    except InputError as exc:
        return {"error": str(exc), "spilled": None, **_where()}
    if out.rows != part.rows:
        raise InputError(f"{reader.what} changed while it was read ({out.rows} rows in a part "
                         f"of {part.rows}): ingest a file nobody writes to")
    return {"error": None, "spilled": out, **_where()}


def index_task(job: Job, spilled: list[Spilled], buckets: list[int], n_buckets: int) -> dict:
    """Task: check and write some index buckets."""
    parts, n_dups, smallest = merge.write_index(job, spilled, buckets, n_buckets)
    return {"parts": parts, "dups": n_dups, "smallest": smallest, **_where()}


def slices_task(job: Job, spilled: list[Spilled], cells: list[int]) -> dict:
    """Task: merge and write some slices."""
    return {"entries": merge.write_slices(job, spilled, cells), **_where()}


def _groups(items: list[int], n: int) -> list[list[int]]:
    """``items`` in ``n`` contiguous groups of near-equal size."""
    n = max(1, min(n, len(items)))
    return [items[len(items) * k // n:len(items) * (k + 1) // n] for k in range(n)]


class ParallelIngest:
    """The three phases of a build as Ray tasks (module doc); see
    :meth:`sisa.store.write.builder._Builder.build`."""

    def __init__(self, table: ingest.TableInput, settings, reader: Reader) -> None:
        self.table, self.settings, self.reader = table, settings, reader
        self.slots = 1
        LAST_RUN.clear()
        LAST_RUN.update(seconds={}, worker_peak_rss_mb=0.0, nodes={})

    def _map(self, phase: str, fn, calls: list[tuple], shared: tuple, **kw) -> list[dict]:
        t0 = time.perf_counter()
        out = backend.map_tasks(fn, calls, self.settings, shared=shared, desc=phase, **kw)
        LAST_RUN["seconds"][phase] = round(time.perf_counter() - t0, 2)
        LAST_RUN["worker_peak_rss_mb"] = max([LAST_RUN["worker_peak_rss_mb"]]
                                             + [r["rss"] for r in out])
        LAST_RUN["nodes"][phase] = sorted({str(r["node"]) for r in out})
        return out

    def spill(self, job: Job) -> list[Spilled]:
        ray = backend.connect(self.settings.address)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1) / self.settings.num_cpus))
        # parts that fit a task's budget: one run each, fewer runs for every merge to read
        parts = plan(self.table.dataset, self.table.what, 2 * self.slots,
                     max(job.budget // job.shape.row_bytes, 1))
        total = sum(p.rows for p in parts)
        LAST_RUN.update(parts=len(parts), slots=self.slots)
        res = self._map("ingesting", spill_part,
                        [(i, p, n_index_buckets(total) > 1) for i, p in enumerate(parts)],
                        (job, self.reader), unit="rows", units=[p.rows for p in parts])
        first = next((r["error"] for r in res if r["error"]), None)  # the earliest part's
        if first:
            raise InputError(first)
        return [r["spilled"] for r in res]

    def index(self, job: Job, spilled: list[Spilled], n_buckets: int
              ) -> tuple[dict[int, BucketFile], int, list]:
        groups = _groups(list(range(n_buckets)), 2 * self.slots)
        res = self._map("writing the index", index_task, [(g, n_buckets) for g in groups],
                        (job, spilled), unit="bucket", units=[len(g) for g in groups])
        parts = {b: e for r in res for b, e in r["parts"].items()}
        smallest = sorted(x for r in res for x in r["smallest"])[:5]
        return parts, sum(r["dups"] for r in res), smallest

    def slices(self, job: Job, spilled: list[Spilled]) -> dict[int, SliceFile]:
        S, R = job.config.n_shards, job.config.n_slices
        groups = _groups(list(range(S * R)), 4 * self.slots)
        res = self._map("writing slices", slices_task, [(g,) for g in groups], (job, spilled),
                        unit="slice", units=[len(g) for g in groups])
        return {c: e for r in res for c, e in r["entries"].items()}
