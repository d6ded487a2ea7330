"""The Arrow-backed shard/slice store: the single source of truth for training rows.

:class:`Store` is the face of a store at one location (:mod:`sisa.store.format.layout` has the
files): it opens and reads it, holds its write lock (:mod:`sisa.store.io.lock`) and commits
new states, each a :class:`~sisa.store.manifest.Manifest` made by that module's
``with_*`` methods. Building (:mod:`sisa.store.write.builder`) and deleting rows
(:mod:`sisa.store.write.deletion`) are modules of their own.

Every file but the manifest is content-addressed and immutable. A change writes new
files, then replaces the manifest (atomic), then removes the files only the old
manifest named. A crash before the manifest lands leaves the old state plus
unreferenced files; after it, the new state plus leftovers. ``collect_garbage`` (run by
``repair`` and by every writer that finds them) removes leftovers either way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .._crash import crashpoint
from ..errors import CorruptStoreError, LocationError, StoreError, StoreLockedError
from . import manifest as mf
from .format import keys, sparse
from .format.assign import AssignmentConfig, spread
from .format.layout import KEEP, QUEUE_FILE
from .io import localfs
from .io.fs import Location, MissingFileError
from .io.lock import WriteLock
from .manifest import Blob, Manifest, RetrainPlan
from .read.audit_keys import AuditKeys, KeyCache
from .read.reading import RowReader
from .write import builder, deletion
from .write.options import IngestOptions

if TYPE_CHECKING:
    from ..tasks.settings import ExecutionSettings


class Store:
    """An on-disk training set split into ``n_shards`` × ``n_slices`` Arrow files.

    Build one with :meth:`Store.create`, reopen it with :meth:`Store.open`.

    Parameters
    ----------
    uri : str
        Local path or URI (``file://``, ``s3://``...).
    manifest : Manifest or mapping, optional
        The state to read (what :meth:`open` loaded, or a Ray task's snapshot).

    Attributes
    ----------
    manifest : Manifest
        The state this object reads; replaced by :meth:`commit` and :meth:`reload`.
    loc : sisa.store.io.fs.Location
        Where the files are.
    rows : RowReader
        Reads the current state's rows: slices, labels (``classes``), the id index
        (``locate``) and tombstones.
    audit : AuditKeys
        The current state's signer and the keyed hashes of deleted ids.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> X, y = np.random.default_rng(0).normal(size=(100, 3)), np.arange(100) % 2
    >>> st = Store.create(tempfile.mkdtemp(), X, y,
    ...                   options=IngestOptions(n_shards=2, n_slices=2))
    >>> st.n_rows, st.delete([0, 1]).deleted
    (100, 2)
    """

    def __init__(self, uri: str, manifest: Mapping | None) -> None:
        self.loc = Location(str(uri))
        self._manifest: Manifest | None = (
            manifest if isinstance(manifest, Manifest) or manifest is None
            else mf.from_flat(manifest))
        self.staged = False  # commits stay in memory until `publish` (a fit being built)
        self.replaced_generation = -1  # a build's predecessor at this location
        self._lock: WriteLock | None = None
        self._lock_depth = 0
        self._lock_owner: int | None = None
        self._thread_lock = threading.RLock()  # threads sharing this object take turns
        self._index_cache: dict[str, pa.Table] = {}
        self._keys = KeyCache()  # the owner's and the audit key, looked up on first need
        self._seen: tuple | None = None  # the manifest file's identity when last read

    def __getstate__(self) -> dict:  # pickled with estimators: no caches, no lock
        state = {**self.__dict__, "_index_cache": {}, "_lock": None, "_lock_depth": 0,
                 "_lock_owner": None, "_seen": None}
        del state["_thread_lock"]
        # Pickled under their former names, in place: models saved before `manifest` became
        # a property and the keys moved to `_keys` load unchanged; the pickled bytes are
        # the same (and hold no key).
        out: dict[str, object] = {}
        for k, v in state.items():
            if k == "_keys":
                out.update(_key=None, _audit_key=None)
            else:
                out["manifest" if k == "_manifest" else k] = v
        return out

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state.pop("_key", None), state.pop("_audit_key", None)
        self.__dict__.update({("_manifest" if k == "manifest" else k): v
                              for k, v in state.items()})
        self._keys = KeyCache()
        self._thread_lock = threading.RLock()

    @property
    def manifest(self) -> Manifest:
        """The state this object reads (a store being built has none until it ingests).

        Raises
        ------
        StoreError
            The store has no manifest yet (a staged store before :meth:`ingest`).
        """
        if self._manifest is None:
            raise StoreError(f"internal: store {self.uri} has no manifest yet (a store being "
                             "built needs `ingest` first)")
        return self._manifest

    @manifest.setter
    def manifest(self, manifest: Manifest) -> None:
        self._manifest = manifest

    @property
    def rows(self) -> RowReader:
        """The rows of the current state (:class:`~sisa.store.read.reading.RowReader`): a
        new reader per access, so one reader sees one generation."""
        return RowReader(self.loc, self.manifest, self._index_cache)

    @property
    def audit(self) -> AuditKeys:
        """The current state's signer and audit key
        (:class:`~sisa.store.read.audit_keys.AuditKeys`); keys looked up once per store."""
        return AuditKeys(self.loc, self.manifest, self._keys)

    # ------------------------------------------------------------------ opening
    @property
    def uri(self) -> str:
        """The store's location as given."""
        return self.loc.uri

    @classmethod
    def exists(cls, uri: str) -> bool:
        """Whether ``uri`` holds a store (a manifest)."""
        return mf.exists(Location(str(uri)))

    @classmethod
    def open(cls, uri: str, *, check_files: bool = True) -> Store:
        """Open an existing store, checking the manifest's own checksum (and signature)
        and, with ``check_files``, that every file it names is present with the recorded
        size (hashes are checked on read).

        Raises
        ------
        LocationError
            No store at ``uri``.
        CorruptStoreError
            The manifest or a file it names is damaged.
        """
        loc = Location(str(uri))
        if not mf.exists(loc):
            raise LocationError(f"no sisa store at {uri} (no {mf.MANIFEST}): check the path, or "
                                "create one with `sisa train` / Store.create")
        store = cls(str(uri), mf.load(loc))
        if check_files:
            store.check_files(hashes=False)
        return store

    def read_consistent(self, fn: Callable[[Store], object], attempts: int = 8):
        """``fn(self)``, rerun on the newest manifest while a file it needs is missing
        because another process committed meanwhile.

        A reader holds no lock: it reads the manifest of generation g, and a writer may
        commit g+1 and delete g's superseded files before the reader opens them. Every
        file is immutable and named by its hash, so a missing file means either that
        race (the generation moved on: retry on the new manifest, all of ``fn`` again
        so nothing mixes two generations) or real damage (same generation: raise).
        Bounded: a store changing faster than ``attempts`` reads is reported.
        """
        for attempt in range(attempts):
            try:
                return fn(self)
            except MissingFileError:
                generation = self.manifest.generation
                if self._lock_depth or attempt == attempts - 1:
                    raise  # a lock holder sees no other writer: this is damage
                self.reload()
                if self.manifest.generation == generation:
                    raise
        raise AssertionError("unreachable")

    def check_files(self, hashes: bool = True, *, shards: Iterable[int] | None = None) -> None:
        """Raise :class:`CorruptStoreError` naming the first missing, resized or (with
        ``hashes``) altered file (of ``shards`` only, if given). A file missing because a
        writer committed after this store's manifest was read is not damage: the check
        reruns on the new manifest (see :meth:`read_consistent`)."""
        self.read_consistent(lambda st: st._check_files(hashes, shards))

    def _check_files(self, hashes: bool, shards: Iterable[int] | None) -> None:
        wanted = None if shards is None else {int(s) for s in shards}
        listed = {} if self.loc.is_local else self.loc.file_infos()  # 1 LIST, not N HEADs
        for rel, meta in self.referenced_files().items():
            shard = getattr(meta, "shard", None)  # slices and checkpoints belong to a shard
            if wanted is not None and shard is not None and shard not in wanted:
                continue
            info = listed.get(rel) or self.loc.info(rel)
            if info.size is None or info.type.name == "NotFound":
                raise MissingFileError(
                    f"missing file {self.loc.path(rel)}: the store is damaged; restore it from "
                    f"backup, or run `sisa repair {self.uri}` if a write was interrupted", rel)
            if info.size != meta.bytes:
                raise CorruptStoreError(
                    f"file {self.loc.path(rel)} has {info.size} bytes, the manifest says "
                    f"{meta.bytes}: it was truncated or changed; restore it from backup")
            if hashes:
                self.loc.read_verified(rel, meta.sha256)

    @classmethod
    def upgrade(cls, uri: str) -> bool:
        """Convert a store written by an older sisa (format ``sisa-store/3``) to the current
        format in place, under the write lock; a signed store needs its owner's key.
        Data files, checkpoints and the audit log are kept byte for byte.

        Returns
        -------
        bool
            True if the store was converted, False if it was already current.
        """
        loc = Location(str(uri))
        if not mf.exists(loc):
            raise LocationError(f"no sisa store at {uri} (no {mf.MANIFEST}): check the path")
        store = cls(str(uri), None)
        with store.lock():
            return mf.upgrade(loc, keys.configured()) is not None

    def reload(self) -> None:
        """Read the committed manifest again."""
        seen = self._stamp()  # before the read: a commit in between only costs a reload
        self.manifest = mf.load(self.loc)
        self._seen = seen

    def _stamp(self) -> tuple | None:
        """The manifest file's identity (:func:`localfs.file_stamp`); None on object
        stores, which are always re-read."""
        return localfs.file_stamp(self.loc.path(mf.MANIFEST)) if self.loc.is_local else None

    # ------------------------------------------------------------------ building
    @classmethod
    def create(cls, uri: str, data, y=None, *, options: IngestOptions,
               settings: ExecutionSettings | None = None, sample_ids=None, groups=None,
               deletion_prob=None, overwrite: bool = False) -> Store:
        """Ingest rows into a new store (built beside anything at ``uri``, then switched
        to in one step).

        Parameters
        ----------
        uri : str
            Local path or URI (``file://``, ``s3://``...). Must not hold a store unless
            ``overwrite=True``.
        data : array-like, DataFrame, pyarrow.Table or path
            Features (with ``y``) or a table/file holding the ``options.label`` column.
        y : array-like, optional
            Labels, when ``data`` is an array.
        options : IngestOptions
            The layout (``n_shards``, ``n_slices``, ``random_state``...) and how the input
            is read (columns, CSV text, memory bounds): :class:`IngestOptions`.
        settings : ExecutionSettings, optional
            Where the build runs (default: in this process) and whether progress bars
            show (``progress``).
        sample_ids, groups, deletion_prob : array-like, optional
            With array data, one value per row (a table names these columns in
            ``options``): see :func:`sisa.store.write.builder.ingest_rows`.
        overwrite : bool, default=False
            Replace a store already at ``uri``.

        Returns
        -------
        Store
        """
        with cls.building(uri, overwrite=overwrite) as store:
            store.ingest(data, y, options=options, settings=settings, sample_ids=sample_ids,
                         groups=groups, deletion_prob=deletion_prob)
            store.publish()
        return store

    @classmethod
    @contextlib.contextmanager
    def building(cls, uri: str, *, overwrite: bool = False) -> Iterator[Store]:
        """Build a new store at ``uri`` beside whatever is there, and switch to it in one
        step.

        Yields a staged :class:`Store` holding the location's write lock: fill it with
        :meth:`ingest`, train on it (its commits stay in memory), then :meth:`publish`
        it, which writes the new manifest (the one atomic switch) and removes the
        replaced store's files. If anything fails before that, every file the build
        wrote is removed and a store already at ``uri`` is left byte for byte as it was.

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> X, y = np.random.default_rng(0).normal(size=(100, 3)), np.arange(100) % 2
        >>> with Store.building(tempfile.mkdtemp()) as st:
        ...     _ = st.ingest(X, y, options=IngestOptions(n_shards=2, n_slices=2))
        ...     st.publish()
        >>> st.n_rows
        100
        """
        where = builder.site(uri, overwrite=overwrite)
        store = cls(str(uri), None)
        store.replaced_generation = where.replaced_generation
        with store.lock():
            store.staged = True
            try:
                yield store
            finally:
                if store.staged:  # failed (or never published)
                    builder.clean(where)
                    store.staged = False

    def ingest(self, data, y=None, *, options: IngestOptions,
               settings: ExecutionSettings | None = None, sample_ids=None, groups=None,
               deletion_prob=None, check: builder.SchemaCheck | None = None) -> Store:
        """Write the data of a staged store (see :meth:`building`); every row is read and
        validated before anything is published.

        Parameters
        ----------
        data, y, options, settings, sample_ids, groups, deletion_prob
            As in :meth:`create`.
        check : callable, optional
            ``check(schema)`` before any row is read (a model's check of the column kinds).

        Returns
        -------
        Store
            ``self``.
        """
        new, key = builder.ingest_rows(self, data, y, options=options, settings=settings,
                                       sample_ids=sample_ids, groups=groups,
                                       deletion_prob=deletion_prob, check=check)
        self.manifest, self._keys = new, KeyCache(key=key)
        self._index_cache.clear()
        return self

    def publish(self) -> None:
        """Make a staged store the store at its location: one manifest write, then the
        files of the store it replaces (data, checkpoints, audit log) are removed."""
        self._require_lock()
        if not self.staged or not self._manifest:
            raise StoreError("internal: nothing staged to publish (use Store.building)")
        new = self.manifest.stamped(self.manifest.generation)
        mf.write(self.loc, new, self._keys.key)
        self._seen = self._stamp()
        self.manifest, self.staged = new.written(), False
        crashpoint("publish:after-manifest")
        self.collect_garbage()

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> AssignmentConfig:
        """The row assignment (S, R, seed, distribution-aware options)."""
        return AssignmentConfig(**self.manifest.assignment)

    @property
    def n_shards(self) -> int:
        return self.manifest.assignment["n_shards"]

    @property
    def n_slices(self) -> int:
        return self.manifest.assignment["n_slices"]

    @property
    def random_state(self) -> int:
        return self.manifest.assignment["random_state"]

    @property
    def n_rows(self) -> int:
        return sum(m.rows for m in self.manifest.slices.values())

    @property
    def n_features(self) -> int:
        return sparse.width(self.manifest.schema)

    @property
    def fingerprint(self) -> str:
        """Content hash of the training data (assignment, schema, every slice's hash)."""
        return self.manifest.fingerprint

    def slice_rows(self, shard: int, sl: int) -> int:
        return self.manifest.slice(shard, sl).rows

    def shard_rows(self, shard: int) -> int:
        return sum(self.slice_rows(shard, r) for r in range(self.n_slices))

    def shard_sizes(self) -> np.ndarray:
        return np.array([self.shard_rows(s) for s in range(self.n_shards)])

    def slice_hash(self, shard: int, sl: int) -> str:
        return self.manifest.slice(shard, sl).sha256

    def spread(self) -> dict:
        """Actual balance of shard sizes (expected equal under the uniform hash)."""
        return spread(self.shard_sizes())

    def referenced_files(self) -> dict[str, Blob]:
        """Every file the manifest vouches for: relative path -> its entry (sha256,
        bytes, ...)."""
        return self.manifest.referenced_files()

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self) -> Iterator[Store]:
        """Exclusive write lock: re-entrant in the thread holding it; other threads using
        this object wait for it, other objects and processes get
        :class:`StoreLockedError` (see :mod:`sisa.store.io.lock`). Taking it clears the
        debris of a writer killed mid-write and reloads the committed manifest."""
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield self
                finally:
                    self._lock_depth -= 1
                return
            self._lock = WriteLock(self.loc, self.uri, mf.now_iso())
            self._lock_depth, self._lock_owner = 1, threading.get_ident()
            try:
                self.loc.clear_temp()  # debris of a writer killed mid-write: never ours to keep
                changed = self._seen is None or self._stamp() != self._seen
                if self._manifest and changed and mf.exists(self.loc):
                    self.reload()  # see what the previous holder committed
                yield self
            finally:
                self._lock_depth, self._lock_owner = 0, None
                self._lock.release()
                self._lock = None

    def _require_lock(self) -> WriteLock:
        if (not self._lock_depth or self._lock_owner != threading.get_ident()
                or self._lock is None):  # (held: the lock is set while the depth is)
            raise StoreError("internal: store writes must run inside `with store.lock():`")
        return self._lock

    def put_blob(self, rel_dir: str, suffix: str, data: bytes | pa.Buffer) -> Blob:
        """Write a content-addressed file; returns its manifest entry (file, sha256,
        bytes)."""
        return Blob(**self.loc.write_content(rel_dir, suffix, data))

    def get_blob(self, meta: Blob) -> pa.Buffer:
        """The bytes of a manifest entry's file, after checking its sha256."""
        return self.loc.read_verified(meta.file, meta.sha256)

    def commit(self, manifest: Mapping) -> None:
        """Atomically make ``manifest`` the store's state, then drop files only the old
        state used. Refuses if another writer committed since this one last read.

        In a staged store (a fit being built beside the published state) the commit only
        replaces the in-memory manifest; :meth:`publish` writes it."""
        held = self._require_lock()
        new = manifest if isinstance(manifest, Manifest) else mf.from_flat(manifest)
        if self.staged:
            self.manifest = new.stamped(self.manifest.generation)
            return
        if not self.loc.is_local:  # locally the flock held since the reload excludes writers
            on_disk = mf.load(self.loc)
            if on_disk.generation != self.manifest.generation:
                raise StoreLockedError(
                    f"store {self.uri} was changed by another writer (generation "
                    f"{on_disk.generation}, expected {self.manifest.generation}); reopen it "
                    "and retry")
            held.check()  # object stores have no CAS: re-check we still hold the lock
        old = self.manifest
        new = new.stamped(old.generation + 1)
        mf.write(self.loc, new, self.audit.signing_key())
        self._seen = self._stamp()  # ours: the lock excludes other writers
        self.manifest = new = new.written()
        crashpoint("commit:after-manifest")
        # several at a time: each unlink waits for the journal on its own, and files that
        # only the old state named go in any order
        localfs.each(self.loc.delete, old.dropped_files(new), parallel=self.loc.is_local)

    def collect_garbage(self) -> list[str]:
        """Remove every file the manifest does not name (leftovers of interrupted
        writes, which may hold deleted rows). Returns what was removed."""
        self._require_lock()
        removed = self.unreferenced_files()
        for rel in removed:
            self.loc.delete(rel)
        return removed

    def unreferenced_files(self, files: list[str] | None = None) -> list[str]:
        """Files below the store (or of ``files``, a listing of it) that the manifest does
        not name (bookkeeping aside)."""
        keep = (set(self.manifest.referenced_files()) | KEEP
                | set(self.manifest.audit_files().values()))
        return [rel for rel in (self.loc.list_files() if files is None else files)
                if rel not in keep and not QUEUE_FILE.fullmatch(rel)]

    def delete(self, ids) -> deletion.DeleteResult:
        """Physically remove rows by sample id (:mod:`sisa.store.write.deletion`).

        Each affected slice is rewritten without the rows, the index and tombstones are
        updated, checkpoints from the earliest affected slice of each shard on are
        dropped (they saw the rows), and all of it lands in one manifest commit. Ids
        deleted before are listed in ``already_deleted``, not an error.

        Raises
        ------
        UnknownIdError
            Some ids never existed; nothing is changed.
        InputError
            A classifier's store would keep fewer than two classes; nothing is changed.
        """
        with self.lock():
            change = deletion.prepare(self, deletion.resolve(self, ids))
            before, found = self.fingerprint, change.resolved
            if len(found.found_ids) == 0:
                return deletion.DeleteResult(0, found.already_deleted, RetrainPlan(), {},
                                             before, before)
            rows_before = {int(s): self.shard_rows(int(s)) for s in np.unique(found.shard)}
            new = deletion.stage(self, change)  # the producer: new files, a new manifest
            crashpoint("delete:before-commit")
            self.commit(new)
            crashpoint("delete:after-commit")
            return deletion.result(change, rows_before, before, self.fingerprint)
