"""The Arrow-backed shard/slice store: the single source of truth for training rows.

:class:`Store` is the face of a store at one location (:mod:`sisa.store.layout` has the
files): it opens and reads it, holds its write lock (:mod:`sisa.store.lock`) and commits
new states, each a :class:`~sisa.store.manifest.Manifest` made by that module's
``with_*`` methods. Building (:mod:`sisa.store.builder`) and deleting rows
(:mod:`sisa.store.deletion`) are modules of their own.

Every file but the manifest is content-addressed and immutable. A change writes new
files, then replaces the manifest (atomic), then removes the files only the old
manifest named. A crash before the manifest lands leaves the old state plus
unreferenced files; after it, the new state plus leftovers. ``collect_garbage`` (run by
``repair`` and by every writer that finds them) removes leftovers either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .._crash import crashpoint
from ..errors import CorruptStoreError, KeyFileError, LocationError, StoreError, StoreLockedError
from . import builder, deletion, keys
from . import ids as idmod
from . import index as idx
from . import manifest as mf
from .assign import AssignmentConfig, spread
from .fs import Location, MissingFileError
from .layout import FEATURES, ID, KEEP, LABEL, QUEUE_FILE, read_ipc, slice_schema
from .lock import WriteLock
from .manifest import Manifest


@dataclass
class SliceData:
    """Rows of one or more slices as numpy arrays (features are zero-copy when local)."""

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


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
    loc : sisa.store.fs.Location
        Where the files are.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> X, y = np.random.default_rng(0).normal(size=(100, 3)), np.arange(100) % 2
    >>> st = Store.create(tempfile.mkdtemp(), X, y, n_shards=2, n_slices=2)
    >>> st.n_rows, st.delete([0, 1]).deleted
    (100, 2)
    """

    def __init__(self, uri: str, manifest: Mapping | None) -> None:
        self.loc = Location(str(uri))
        self.manifest = (manifest if isinstance(manifest, Manifest) or manifest is None
                         else Manifest(manifest))
        self.staged = False  # commits stay in memory until `publish` (a fit being built)
        self.replaced_generation = -1  # a build's predecessor at this location
        self._lock: WriteLock | None = None
        self._lock_depth = 0
        self._lock_owner: int | None = None
        self._thread_lock = threading.RLock()  # threads sharing this object take turns
        self._index_cache: dict[str, pa.Table] = {}
        self._key: keys.KeyPair | None = None  # the owner's key, looked up on first need
        self._audit_key: bytes | None = None

    def __getstate__(self) -> dict:  # pickled with estimators: no caches, no lock
        state = {**self.__dict__, "_index_cache": {}, "_lock": None, "_lock_depth": 0,
                 "_lock_owner": None, "_key": None, "_audit_key": None}
        del state["_thread_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.RLock()

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

    def reload(self) -> None:
        """Read the committed manifest again."""
        self.manifest = mf.load(self.loc)

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
            if wanted is not None and meta.get("shard") not in wanted and "shard" in meta:
                continue
            info = listed.get(rel) or self.loc.info(rel)
            if info.size is None or info.type.name == "NotFound":
                raise MissingFileError(
                    f"missing file {self.loc.path(rel)}: the store is damaged; restore it from "
                    f"backup, or run `sisa repair {self.uri}` if a write was interrupted")
            if info.size != meta["bytes"]:
                raise CorruptStoreError(
                    f"file {self.loc.path(rel)} has {info.size} bytes, the manifest says "
                    f"{meta['bytes']}: it was truncated or changed; restore it from backup")
            if hashes:
                self.loc.read_verified(rel, meta["sha256"])

    # ------------------------------------------------------------------ building
    @classmethod
    def create(cls, uri: str, data, y=None, *, overwrite: bool = False, **ingest_kw) -> Store:
        """Ingest rows into a new store (built beside anything at ``uri``, then switched
        to in one step).

        Parameters
        ----------
        uri : str
            Local path or URI (``file://``, ``s3://``...). Must not hold a store unless
            ``overwrite=True``.
        data : array-like, DataFrame, pyarrow.Table or path
            Features (with ``y``) or a table/file holding the ``label`` column.
        y : array-like, optional
            Labels, when ``data`` is an array.
        overwrite : bool, default=False
            Replace a store already at ``uri``.
        **ingest_kw
            ``n_shards`` and ``n_slices`` (required), and the options of :meth:`ingest`:
            ``label``, ``random_state``, ``sample_ids``/``id_column``,
            ``groups``/``group_column``, ``deletion_prob``/``deletion_prob_column``,
            ``hot_shards``, ``hot_threshold``, ``feature_columns``, ``dtype``,
            ``memory_budget_mb``, ``batch_rows``, ``progress``.

        Returns
        -------
        Store
        """
        with cls.building(uri, overwrite=overwrite) as store:
            store.ingest(data, y, **ingest_kw)
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
        ...     _ = st.ingest(X, y, n_shards=2, n_slices=2)
        ...     st.publish()
        >>> st.n_rows
        100
        """
        with builder.building(cls, uri, overwrite=overwrite) as store:
            yield store

    def ingest(self, data, y=None, *, n_shards: int, n_slices: int, label: str | None = None,
               random_state: int = 0, sample_ids=None, id_column: str | None = None,
               group_column: str | None = None, deletion_prob_column: str | None = None,
               groups=None, deletion_prob=None, hot_shards: int = 0, hot_threshold: float = 0.5,
               feature_columns: list[str] | None = None, dtype=None,
               memory_budget_mb: int = 256, batch_rows: int = 65_536,
               progress: bool = False) -> Store:
        """Write the data of a staged store (see :meth:`building`); every row is read and
        validated before anything is published.

        Parameters
        ----------
        data, y, label
            As in :meth:`create`.
        n_shards, n_slices : int
            S and R.
        random_state : int, default=0
            Seed of the keyed assignment hash (and later of training).
        sample_ids : array-like, optional
            Stable id per row (int or str). ``id_column`` names a column instead.
            Default: 0..n-1 in input order.
        group_column, groups : optional
            Group key per row: all rows of a group land in one (shard, slice).
        deletion_prob_column, deletion_prob, hot_shards, hot_threshold : optional
            Distribution-aware sharding; see :class:`AssignmentConfig`.
        feature_columns : list of str, optional
            Feature columns of a table (default: every other column).
        dtype : {numpy.float32, numpy.float64}, optional
            Feature type stored (default: float32 input stays float32, else float64).
        memory_budget_mb : int, default=256
            Rows are spilled to temporary files beyond this, so inputs larger than
            memory stream through.
        batch_rows : int, default=65536
            Rows read from a file at a time.
        progress : bool, default=False
            Show rows ingested and slices written.

        Returns
        -------
        Store
            ``self``.
        """
        new, key = builder.ingest_rows(
            self, data, y, label=label, n_shards=n_shards, n_slices=n_slices,
            random_state=random_state, sample_ids=sample_ids, id_column=id_column,
            group_column=group_column, deletion_prob_column=deletion_prob_column, groups=groups,
            deletion_prob=deletion_prob, hot_shards=hot_shards, hot_threshold=hot_threshold,
            feature_columns=feature_columns, dtype=dtype, memory_budget_mb=memory_budget_mb,
            batch_rows=batch_rows, progress=progress)
        self.manifest, self._key, self._audit_key = new, key, None
        self._index_cache.clear()
        return self

    def publish(self) -> None:
        """Make a staged store the store at its location: one manifest write, then the
        files of the store it replaces (data, checkpoints, audit log) are removed."""
        self._require_lock()
        if not self.staged or not self.manifest:
            raise StoreError("internal: nothing staged to publish (use Store.building)")
        new = self.manifest.stamped(self.manifest.generation)
        mf.write(self.loc, new, self._key)
        self.manifest, self.staged = new, False
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
        return sum(m["rows"] for m in self.manifest.slices.values())

    @property
    def n_features(self) -> int:
        return len(self.manifest.schema["feature_names"])

    @property
    def fingerprint(self) -> str:
        """Content hash of the training data (assignment, schema, every slice's hash)."""
        return self.manifest.fingerprint

    def slice_rows(self, shard: int, sl: int) -> int:
        return self.manifest.slice(shard, sl)["rows"]

    def shard_rows(self, shard: int) -> int:
        return sum(self.slice_rows(shard, r) for r in range(self.n_slices))

    def shard_sizes(self) -> np.ndarray:
        return np.array([self.shard_rows(s) for s in range(self.n_shards)])

    def slice_hash(self, shard: int, sl: int) -> str:
        return self.manifest.slice(shard, sl)["sha256"]

    def spread(self) -> dict:
        """Actual balance of shard sizes (expected equal under the uniform hash)."""
        return spread(self.shard_sizes())

    def referenced_files(self) -> dict[str, dict]:
        """Every file the manifest vouches for: relative path -> {sha256, bytes, ...}."""
        return self.manifest.referenced_files()

    # ------------------------------------------------------------------ reading rows
    def _read_table(self, rel: str, sha: str) -> pa.Table:
        return read_ipc(self.loc.read_verified(rel, sha))

    def read_slice_table(self, shard: int, sl: int) -> pa.Table:
        """One slice as an Arrow table (``sample_id, label, features``), hash-checked."""
        m = self.manifest.slice(shard, sl)
        return self._read_table(m["file"], m["sha256"])

    def read_slice(self, shard: int, sl: int) -> SliceData:
        """One slice as numpy ``X, y, ids``; hash-checked, zero-copy over mmap locally."""
        return self._to_numpy(self.read_slice_table(shard, sl))

    def read_slices(self, shard: int, slices: Iterable[int]) -> SliceData:
        """Several slices of one shard concatenated in slice order."""
        tables = [self.read_slice_table(shard, r) for r in slices]
        return self._to_numpy(pa.concat_tables(tables) if tables else self.empty_table())

    def _to_numpy(self, table: pa.Table) -> SliceData:
        d = self.n_features
        feats = table.column(FEATURES).combine_chunks()
        X = feats.flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
        y = table.column(LABEL).to_numpy(zero_copy_only=False)
        ids = table.column(ID).to_numpy(zero_copy_only=False)
        return SliceData(X, y, ids)

    def empty_table(self) -> pa.Table:
        """A slice table with no rows."""
        return slice_schema(self.manifest.schema).empty_table()

    def classes(self) -> list:
        """Sorted distinct labels of the stored rows (from the manifest's per-slice label
        lists; read from the data only for slices that record none: float labels)."""
        return deletion.label_union(self)

    # ------------------------------------------------------------------ ids
    def id_array(self, ids) -> pa.Array:
        """``ids`` as this store's Arrow id array (the one id boundary: :mod:`sisa.store.ids`)."""
        return idmod.to_store_ids(ids, self.manifest.id_type)

    @property
    def index_buckets(self) -> int:
        return len(self.manifest.index_parts)

    def read_index_part(self, bucket: int) -> pa.Table:
        """One index bucket: the ids hashing to it, sorted, with their (shard, slice)."""
        m = self.manifest.index_parts[bucket]
        table = self._index_cache.get(m["sha256"])
        if table is None:  # immutable file: cache by its hash, keep only live buckets
            live = {p["sha256"] for p in self.manifest.index_parts}
            for sha in [k for k in self._index_cache if k not in live]:
                del self._index_cache[sha]
            table = self._index_cache[m["sha256"]] = self._read_table(m["file"], m["sha256"])
        return table

    def read_index(self) -> pa.Table:
        """The whole index (every bucket): ``sample_id, shard, slice``."""
        return pa.concat_tables([self.read_index_part(b) for b in range(self.index_buckets)])

    def locate(self, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where ``ids`` live: ``(found_mask, shard, slice)``, the last two for found ids
        only, in query order. Reads only the index buckets of these ids."""
        return idx.locate(self.id_array(ids), self.index_buckets, self.read_index_part)

    def read_tombstones(self, buckets: Iterable[int] | None = None) -> list[bytes]:
        """Keyed hashes of every deleted id (or of those in ``buckets``)."""
        parts = self.manifest.tombstone_parts
        names = sorted(parts, key=int) if buckets is None else [str(b) for b in buckets]
        out: list[bytes] = []
        for k in (k for k in names if k in parts):
            out += self._read_table(parts[k]["file"], parts[k]["sha256"]).column("h").to_pylist()
        return out

    def tombstones_digest(self) -> str:
        """One hash over the tombstone files' hashes: what a receipt commits of the set of
        deleted ids (a swapped tombstone file changes it)."""
        hashes = sorted(p["sha256"] for p in self.manifest.tombstone_parts.values())
        return hashlib.sha256(mf.canonical_json(hashes)).hexdigest()

    # ------------------------------------------------------------------ keys
    @property
    def signer(self) -> str | None:
        """The hex Ed25519 public key that signs this store, or None (unsigned)."""
        return self.manifest.signer_key

    def signing_key(self) -> keys.KeyPair | None:
        """The owner's key, required to change a signed store (None for unsigned ones)."""
        if self.signer is None:
            return None
        if self._key is None:
            key = keys.configured()
            if key is None or key.public_hex != self.signer:
                raise KeyFileError(mf.wrong_key(self.uri, self.signer, key))
            self._key = key
        return self._key

    def audit_key(self) -> bytes:
        """The key of the keyed hashes of deleted ids. Never in the manifest or a pickle:
        derived from the owner's key file for signed stores, else read from the store's
        0600 audit-key file."""
        if self._audit_key is None:
            if self.signer is not None:
                self._audit_key = self.signing_key().audit_key(self.manifest.store_id)
            else:
                rel = self.manifest.audit_files()["key"]
                if not self.loc.exists(rel):
                    raise CorruptStoreError(f"the audit key file {self.loc.path(rel)} is missing: "
                                            "restore the store from backup")
                self._audit_key = bytes.fromhex(self.loc.read_bytes(rel).to_pybytes().decode())
        return self._audit_key

    def has_audit_key(self) -> bool:
        """Whether this process can compute the keyed id hashes (a third party checking a
        signed store with only its public key cannot)."""
        try:
            self.audit_key()
            return True
        except (KeyFileError, CorruptStoreError):
            return False

    def keyed_id_hashes(self, ids) -> list[bytes]:
        """Keyed hashes (16 bytes each) under which deleted ids are remembered."""
        key = self.audit_key()
        return [hmac.new(key, b, hashlib.sha256).digest()[:16]
                for b in idmod.id_bytes(self.id_array(ids))]

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def lock(self) -> Iterator[Store]:
        """Exclusive write lock: re-entrant in the thread holding it; other threads using
        this object wait for it, other objects and processes get
        :class:`StoreLockedError` (see :mod:`sisa.store.lock`). Taking it clears the
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
                if self.manifest and mf.exists(self.loc):
                    self.reload()  # see what the previous holder committed
                yield self
            finally:
                self._lock_depth, self._lock_owner = 0, None
                self._lock.release()
                self._lock = None

    def _require_lock(self) -> None:
        if not self._lock_depth or self._lock_owner != threading.get_ident():
            raise StoreError("internal: store writes must run inside `with store.lock():`")

    def put_blob(self, rel_dir: str, suffix: str, data: bytes | pa.Buffer) -> dict:
        """Write a content-addressed file; returns its manifest entry (file, sha256,
        bytes)."""
        return self.loc.write_content(rel_dir, suffix, data)

    def get_blob(self, meta: Mapping) -> pa.Buffer:
        """The bytes of a manifest entry's file, after checking its sha256."""
        return self.loc.read_verified(meta["file"], meta["sha256"])

    def commit(self, manifest: Mapping) -> None:
        """Atomically make ``manifest`` the store's state, then drop files only the old
        state used. Refuses if another writer committed since this one last read.

        In a staged store (a fit being built beside the published state) the commit only
        replaces the in-memory manifest; :meth:`publish` writes it."""
        self._require_lock()
        new = manifest if isinstance(manifest, Manifest) else Manifest(manifest)
        if self.staged:
            self.manifest = new.stamped(self.manifest.generation)
            return
        on_disk = mf.load(self.loc)
        if on_disk.generation != self.manifest.generation:
            raise StoreLockedError(
                f"store {self.uri} was changed by another writer (generation "
                f"{on_disk.generation}, expected {self.manifest.generation}); reopen it and "
                "retry")
        self._lock.check()  # object stores have no CAS: re-check we still hold the lock
        old = self.manifest
        new = new.stamped(old.generation + 1)
        mf.write(self.loc, new, self.signing_key())
        self.manifest = new
        crashpoint("commit:after-manifest")
        for rel in sorted(set(old.referenced_files()) - set(new.referenced_files())):
            self.loc.delete(rel)

    def collect_garbage(self) -> list[str]:
        """Remove every file the manifest does not name (leftovers of interrupted
        writes, which may hold deleted rows). Returns what was removed."""
        self._require_lock()
        removed = self.unreferenced_files()
        for rel in removed:
            self.loc.delete(rel)
        return removed

    def unreferenced_files(self) -> list[str]:
        """Files below the store that the manifest does not name (bookkeeping aside)."""
        keep = (set(self.manifest.referenced_files()) | KEEP
                | set(self.manifest.audit_files().values()))
        return [rel for rel in self.loc.list_files()
                if rel not in keep and not QUEUE_FILE.fullmatch(rel)]

    def delete(self, ids) -> deletion.DeleteResult:
        """Physically remove rows by sample id (:mod:`sisa.store.deletion`).

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
            return deletion.apply(self, deletion.prepare(self, deletion.resolve(self, ids)))
