"""Building a store: ingest rows into a new store beside whatever is at its location.

A build writes every slice and index file first, then :meth:`sisa.store.Store.publish`
switches to it with one manifest write. Two passes, in memory bounded by the budget
whatever the number of rows: assign rows as they stream in and spill them in sorted runs
(:mod:`sisa.store.write.spill`), then merge each index bucket and each slice from the runs
(:mod:`sisa.store.write.merge`). In this process, or, for Parquet/Arrow files when Ray is in
use, as Ray tasks (:mod:`sisa.store.write.parallel_ingest`): the same files either way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..._crash import crashpoint
from ...errors import InputError, LocationError, SisaError, StoreError
from ...progress import bar as progress_bar
from .. import manifest as mf
from ..format import columns, keys
from ..format.assign import AssignmentConfig
from ..format.index import n_index_buckets
from ..io.fs import TEMP_DIR, Location
from ..manifest import BucketFile, Manifest, SliceFile, slice_key
from . import ingest, merge, spill
from .options import IngestOptions
from .parallel_ingest import ParallelIngest, choose
from .spill import Job, Scratch, Shape, Spilled

if TYPE_CHECKING:
    from ...tasks.settings import ExecutionSettings
    from ..store import Store

CHUNK_MIN = 4 << 20  # slices up to this size are always merged in memory


@dataclass
class Site:
    """A location about to receive a new store: what was there before the build, so a
    failed build removes exactly what it wrote."""

    loc: Location
    before: set[str]
    dirs_before: set[str]
    made_root: bool
    replaced_generation: int  # the replaced store's generation (-1: none), for readers


def site(uri: str, *, overwrite: bool = False) -> Site:
    """Check that a store may be built at ``uri`` and note what is there; writes nothing."""
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
    replaced = -1
    if mf.MANIFEST in before:  # the replaced store's generation: readers see the switch
        with contextlib.suppress(SisaError, OSError):  # damaged: replaced all the same
            replaced = mf.load(loc).generation
    return Site(loc, before, _local_dirs(loc), loc.is_local and not os.path.exists(loc.root),
                replaced)


def clean(where: Site) -> None:
    """Remove every file and directory a failed (or never published) build wrote."""
    loc = where.loc
    for rel in sorted(set(loc.list_files()) - where.before - {".lock"}):
        loc.delete(rel)
    for d in sorted(_local_dirs(loc) - where.dirs_before, reverse=True):
        with contextlib.suppress(OSError):  # deepest first; only if empty
            os.rmdir(d)
    if where.made_root:
        shutil.rmtree(loc.root, ignore_errors=True)


SchemaCheck = Callable[[dict[str, object]], None]


def ingest_rows(store: Store, data, y=None, *, options: IngestOptions,
                settings: ExecutionSettings | None = None, sample_ids=None, groups=None,
                deletion_prob=None, check: SchemaCheck | None = None
                ) -> tuple[Manifest, keys.KeyPair | None]:
    """Write the data of a staged store; returns its manifest (one generation past the
    store it replaces, if any) and the owner's key that will sign it.

    Parameters
    ----------
    store : Store
        Staged (:meth:`sisa.store.Store.building`).
    data : array-like, DataFrame, pyarrow.Table or path
        Features (with ``y``) or a table/file holding the ``options.label`` column.
    y : array-like, optional
        Labels when ``data`` is an array.
    options : IngestOptions
        The layout and how the input is read (:class:`~sisa.store.write.options.IngestOptions`).
    settings : sisa.ExecutionSettings, optional
        Where the work runs (default: here) and whether progress bars show.
        ``backend="ray"``: Ray tasks, for Parquet/Arrow files (same bytes); ``"auto"``: Ray
        tasks if Ray is in use and the file is large.
    sample_ids, groups, deletion_prob : array-like, optional
        With array data, one value per row: a stable id (int or str; default: the row
        numbers 0..n-1 in input order), a group key (all rows of a group land in one
        (shard, slice)), a deletion probability. A table names columns in ``options``.
    check : callable, optional
        ``check(schema)`` before any row is read (the model's check of the column kinds).
    """
    if not store.staged:
        raise StoreError("internal: ingest needs a staged store (use Store.building)")
    if not isinstance(options, IngestOptions):
        raise InputError(f"options must be an IngestOptions, got {type(options).__name__}: "
                         "pass options=IngestOptions(n_shards=..., n_slices=...)")
    if options.hot_shards and deletion_prob is None and not options.has_deletion_prob:
        raise InputError("hot_shards > 0 needs deletion probabilities: pass deletion_prob= or "
                         "deletion_prob_column=")
    source = _source(data, y, options, sample_ids, groups, deletion_prob)
    parallel = choose(source, settings, options.batch_rows)
    progress = settings is not None and settings.progress
    key = keys.configured()
    new = _Builder(store.loc, options.assignment, source, options.memory_budget_mb, progress,
                   secrets.token_hex(16), key, options.batch_rows, check).build(parallel)
    if key is None:  # unsigned: the audit key lives beside the data, owner-only
        store.loc.write_atomic(new.audit_files()["key"], secrets.token_hex(32).encode(),
                               mode=0o600)
    return new.stamped(store.replaced_generation + 1), key


def _source(data, y, options: IngestOptions, sample_ids, groups, deletion_prob
            ) -> ingest.Source:
    """The rows to ingest: arrays with ``y``, or a table/file with a ``label`` column."""
    if options.label is None:
        if y is None:
            raise InputError("pass y= with array data, or IngestOptions(label='column') with a "
                             "table/file")
        return ingest.from_arrays(data, y, sample_ids, groups, deletion_prob, options.dtype,
                                  options.allow_missing)
    for name, given in (("sample_ids", sample_ids), ("groups", groups),
                        ("deletion_prob", deletion_prob)):
        if given is not None:
            column = {"sample_ids": "id_column", "groups": "group_column"}.get(
                name, "deletion_prob_column")
            raise InputError(f"pass {name}= with array data, or IngestOptions({column}=...) "
                             "with a table")
    if y is not None:
        raise InputError("pass y= with array data, or IngestOptions(label='column') with a "
                         "table/file, not both")
    return ingest.from_table(
        data, options.label, id_column=options.id_column, group_column=options.group_column,
        deletion_prob_column=options.deletion_prob_column, dtype=options.dtype,
        feature_columns=list(options.feature_columns) if options.feature_columns else None,
        batch_rows=options.batch_rows, allow_missing=options.allow_missing, csv=options.csv)


# The column a table gets for ``fit(table, "label", groups=keys)``: a store names it "groups"
GROUPS_COLUMN = "__groups"


def columns_group_name(source: ingest.Source) -> str:
    """The group column's name in the schema ("groups" when the keys were an array)."""
    table = source.table
    name = table.columns.group_column if table is not None else None
    return "groups" if name in (None, GROUPS_COLUMN) else name


def _local_dirs(loc: Location) -> set[str]:
    """Every folder below a local store's root (object stores have none)."""
    if not loc.is_local or not os.path.isdir(loc.root):
        return set()
    return {d for d, _, _ in os.walk(loc.root, followlinks=False)} - {loc.root}


class _Builder:
    """Two passes in bounded memory (module doc): spill runs, then merge each index bucket
    and each slice from them. Here, or on Ray (:mod:`sisa.store.write.parallel_ingest`)."""

    def __init__(self, loc: Location, config: AssignmentConfig, source: ingest.Source,
                 budget_mb: int, progress: bool, store_id: str, key: keys.KeyPair | None,
                 batch_rows: int = 65_536, check=None) -> None:
        self.loc, self.config, self.source, self.progress = loc, config, source, progress
        self.store_id, self.key, self.check = store_id, key, check
        self.budget = max(int(budget_mb), 0) * 2**20
        self.batch_rows = batch_rows
        self.schema_info: dict[str, object] = {
            "feature_names": source.feature_names, "label_name": source.label_name,
            "label_type": str(source.label_type), "id_name": source.id_name,
            "dtype": "float32" if source.dtype == np.float32 else "float64",
            "id_type": source.id_type,
        }
        if source.columns is not None:  # typed columns: kinds and types, nothing from rows
            self.schema_info.update(layout=source.layout, columns=source.columns)
        if source.group_type:  # only then: a store without groups keeps its bytes
            self.schema_info.update(group_name=columns_group_name(source),
                                    group_type=source.group_type)

    def job(self, scratch: Scratch) -> Job:
        """What every task of this build shares."""
        shape = Shape(self.source.id_type, self.source.label_type,
                      len(self.source.feature_names), np.dtype(self.source.dtype),
                      columns.struct_type(self.schema_info, run=True)
                      if self.source.columns is not None else None,
                      self.source.group_type is not None)
        # a slice above a quarter of the budget is merged range by range: sorting and
        # serialising it takes about three times its size
        chunk = max(self.budget // 4, CHUNK_MIN)
        return Job(self.loc.uri, scratch, self.config, shape, self.schema_info, self.budget,
                   chunk, self.batch_rows)

    def build(self, parallel: ParallelIngest | None = None) -> Manifest:
        """Write the slices and the index; returns the new (unpublished) manifest."""
        if self.check is not None:  # the model's check of the column kinds: before any row
            self.check(self.schema_info)
        scratch, tmp = _scratch(self.loc)
        try:
            return self._build(self.job(scratch), parallel)
        finally:
            scratch.clear()
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, job: Job, parallel: ParallelIngest | None) -> Manifest:
        S, R = self.config.n_shards, self.config.n_slices
        run = parallel or _Here(self.source, self.progress)
        spilled = run.spill(job)
        crashpoint("ingest:after-spill")
        n = sum(sp.rows for sp in spilled)
        if n == 0:
            raise InputError("the input has no rows: there is nothing to train on")
        if n < S * R:
            raise InputError(
                f"{S} shards x {R} slices = {S * R} slices for only {n} rows: use fewer shards "
                "or slices (each slice should hold many rows)"
            )
        n_buckets = n_index_buckets(n)
        parts, n_dups, smallest = run.index(job, spilled, n_buckets)
        if n_dups:  # before any slice is written
            raise merge.duplicates_error(n_dups, smallest)
        index_meta = {"parts": [parts[b] for b in range(n_buckets)], "rows": n}
        crashpoint("ingest:after-index")
        entries = run.slices(job, spilled)
        slices = {slice_key(s, r): entries[s * R + r] for s in range(S) for r in range(R)}
        crashpoint("ingest:after-slices")
        return mf.initial(
            store_id=self.store_id, signer_key=self.key.public_hex if self.key else None,
            assignment=self.config.to_dict(), schema=self.schema_info, slices=slices,
            index=index_meta)


class _Here:
    """The three phases of a build in this process (:class:`~sisa.store.write.parallel_ingest.
    ParallelIngest` runs them as Ray tasks)."""

    def __init__(self, source: ingest.Source, progress: bool) -> None:
        self.source, self.progress = source, progress

    def spill(self, job: Job) -> list[Spilled]:
        bar = progress_bar(desc="ingesting", unit="rows", unit_scale=True,
                           enabled=self.progress)
        known = self.source.rows  # one index bucket: its keys need no hashing
        hashed = known is None or n_index_buckets(known) > 1
        try:
            out = spill.spill(job, "d", self.source.batches, 0, hashed, tick=bar.update)
        finally:
            bar.close()
        if not hashed and n_index_buckets(out.rows) > 1:
            raise InputError(f"the input grew while it was read ({known} rows, then "
                             f"{out.rows}): ingest a file nobody writes to")
        return [out]

    def index(self, job: Job, spilled: list[Spilled], n_buckets: int
              ) -> tuple[dict[int, BucketFile], int, list]:
        return merge.write_index(job, spilled, range(n_buckets), n_buckets)

    def slices(self, job: Job, spilled: list[Spilled]) -> dict[int, SliceFile]:
        S, R = job.config.n_shards, job.config.n_slices
        bar = progress_bar(total=S * R, desc="writing slices", unit="slice",
                           enabled=self.progress)
        try:
            return merge.write_slices(job, spilled, range(S * R), tick=lambda: bar.update(1))
        finally:
            bar.close()


def _scratch(loc: Location) -> tuple[Scratch, str | None]:
    """Where runs go: the store's ``.tmp/`` when it is local (the next writer clears what a
    killed build leaves there); a local temp dir when the store is remote (removed after)."""
    prefix = f"ingest-{secrets.token_hex(6)}-"
    if loc.is_local:
        return Scratch(loc.uri, TEMP_DIR, prefix), None
    tmp = tempfile.mkdtemp(prefix="sisa-ingest-")
    return Scratch(tmp, "", prefix), tmp
