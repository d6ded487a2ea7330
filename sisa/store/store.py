"""The Arrow-backed shard/slice store: the single source of truth for training rows.

Layout under the store URI::

    manifest.json                          the commit point: names every live file + its sha256
    data/shard=0003/slice=005/<hash>.arrow one uncompressed Arrow IPC file per (shard, slice)
    index/bucket=0003/<hash>.arrow         sample_id -> (shard, slice), sorted by id
    audit/tombstones/bucket=0003/<hash>.arrow  keyed hashes of deleted ids (never the ids)
    audit/receipts-<store id>.jsonl        hash-chained, signed log of forget receipts
    checkpoints/shard=0003/slice=005/<hash>.pkl   (written by the engine; the estimator itself
                                           is a declarative spec in the manifest)

The index and the tombstones are split into buckets by a hash of the id (about
64k ids per bucket), so a forget reads and rewrites the buckets of its ids, not
files that grow with the whole store.

Every file but the manifest is content-addressed and immutable. A change writes
new files, then replaces the manifest (atomic), then removes the files only the
old manifest named. A crash before the manifest lands leaves the old state plus
unreferenced files; after it, the new state plus leftovers. ``collect_garbage``
(run by ``repair``) removes leftovers either way.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._crash import crashpoint
from .._version import __version__
from ..errors import (
    CorruptStoreError,
    InputError,
    KeyFileError,
    LocationError,
    StoreError,
    StoreLockedError,
    UnknownIdError,
)
from ..progress import bar as progress_bar
from . import ids as idmod
from . import ingest, keys
from .assign import AssignmentConfig, assign, keyed_hash, spread
from .fs import Location, MissingFileError, ObjectLock
from .layout import check_manifest_paths, slice_labels, union

FORMAT = "sisa-store/3"
MANIFEST = "manifest.json"
ID, LABEL, FEATURES = "sample_id", "label", "features"
_ORDER = "__order"
INTENT = "audit/intent.json"
# Bookkeeping files that are not content-addressed and never hold training rows (the audit
# log and a keyless store's audit key are named per store; see `audit_files`).
KEEP = {MANIFEST, ".lock", INTENT}
# `sisa serve`'s durable erasure queue (sisa.serve): one file per accepted request, holding
# its raw ids until its receipt is committed, like INTENT. Only this exact shape is
# bookkeeping; anything else under queue/ is a stray file like any other.
QUEUE_FILE = re.compile(r"queue/[0-9a-f]{32}\.json")


def audit_files(manifest: dict) -> dict[str, str]:
    """The store's own audit log and (unsigned stores only) audit-key file. Named by the
    store id, so a store built over an old one never appends to the old one's log."""
    sid = manifest["store_id"]
    out = {"log": f"audit/receipts-{sid}.jsonl"}
    if not manifest.get("signer"):
        out["key"] = f"audit/key-{sid}"
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def slice_key(shard: int, sl: int) -> str:
    return f"{shard}/{sl}"


def editable(manifest: dict) -> dict:
    """A copy of ``manifest`` safe to change at the levels sisa edits: the top level,
    ``slices``, ``model``, its ``checkpoints`` and ``pending``."""
    new = dict(manifest)
    new["slices"] = dict(manifest["slices"])
    if manifest.get("model"):
        new["model"] = {**manifest["model"], "checkpoints": dict(manifest["model"]["checkpoints"])}
    if manifest.get("pending"):
        new["pending"] = dict(manifest["pending"])
    return new


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass
class SliceData:
    """Rows of one or more slices as numpy arrays (features are zero-copy when local)."""

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class DeleteResult:
    """What :meth:`Store.delete` changed."""

    deleted: int
    already_deleted: list
    changed: dict[int, int]  # shard -> earliest changed slice
    rows_before: dict[int, int]  # shard -> rows before the delete
    fingerprint_before: str
    fingerprint_after: str
    # {"removed": [...]} when the delete took a classifier's last rows of some class
    classes_changed: dict | None = None


def ipc_bytes(table: pa.Table) -> pa.Buffer:
    """Serialise deterministically: same rows and schema give the same bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table.combine_chunks() if table.num_rows else table)
    return sink.getvalue()


def read_ipc(buf: pa.Buffer) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(buf)).read_all()


class Store:
    """An on-disk training set split into ``n_shards`` × ``n_slices`` Arrow files.

    Build one with :meth:`Store.create`, reopen it with :meth:`Store.open`.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> X, y = np.random.default_rng(0).normal(size=(100, 3)), np.arange(100) % 2
    >>> st = Store.create(tempfile.mkdtemp(), X, y, n_shards=2, n_slices=2)
    >>> st.n_rows, sorted(st.delete([0, 1]).changed) != []
    (100, True)
    """

    def __init__(self, uri: str, manifest: dict) -> None:
        self.loc = Location(str(uri))
        self.manifest = manifest
        self._lock_depth = 0
        self._lock_owner: int | None = None
        self._thread_lock = threading.RLock()  # threads sharing this object take turns
        self._lock_fd: int | None = None
        self._index_cache: dict[str, pa.Table] = {}
        self._object_lock: ObjectLock | None = None
        self._key: keys.KeyPair | None = None  # the owner's key, looked up on first need
        self._audit_key: bytes | None = None
        self.staged = False  # commits stay in memory until `publish` (a fit being built)

    def __getstate__(self) -> dict:  # pickled with estimators: no caches, no lock
        state = {**self.__dict__, "_index_cache": {}, "_lock_fd": None, "_lock_depth": 0,
                 "_lock_owner": None, "_object_lock": None, "_key": None, "_audit_key": None}
        del state["_thread_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.RLock()

    # ------------------------------------------------------------------ opening
    @property
    def uri(self) -> str:
        return self.loc.uri

    @classmethod
    def exists(cls, uri: str) -> bool:
        return Location(str(uri)).exists(MANIFEST)

    @classmethod
    def open(cls, uri: str, *, check_files: bool = True) -> Store:
        """Open an existing store, checking the manifest's own checksum and that every
        file it names is present with the recorded size (hashes are checked on read)."""
        loc = Location(str(uri))
        if not loc.exists(MANIFEST):
            raise LocationError(
                f"no sisa store at {uri} (no {MANIFEST}): check the path, or create one with "
                "`sisa train` / Store.create"
            )
        store = cls(str(uri), _load_manifest(loc))
        if check_files:
            store.check_files(hashes=False)
        return store

    def read_consistent(self, fn, attempts: int = 8):
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
                generation = self.manifest.get("generation")
                if self._lock_depth or attempt == attempts - 1:
                    raise  # a lock holder sees no other writer: this is damage
                self.reload()
                if self.manifest.get("generation") == generation:
                    raise
        raise AssertionError("unreachable")

    def reload(self) -> None:
        self.manifest = _load_manifest(self.loc)

    def check_files(self, hashes: bool = True, *, shards: Iterable[int] | None = None) -> None:
        """Raise :class:`CorruptStoreError` naming the first missing, resized or (with
        ``hashes``) altered file. A file missing because a writer committed (and removed
        it) after this store's manifest was read is not damage: the check reruns on the
        new manifest (see :meth:`read_consistent`)."""
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
                    f"backup, or run `sisa repair {self.uri}` if a write was interrupted"
                )
            if info.size != meta["bytes"]:
                raise CorruptStoreError(
                    f"file {self.loc.path(rel)} has {info.size} bytes, the manifest says "
                    f"{meta['bytes']}: it was truncated or changed; restore it from backup"
                )
            if hashes:
                self.loc.read_verified(rel, meta["sha256"])

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(
        cls,
        uri: str,
        data,
        y=None,
        *,
        label: str | None = None,
        n_shards: int,
        n_slices: int,
        random_state: int = 0,
        sample_ids=None,
        id_column: str | None = None,
        group_column: str | None = None,
        deletion_prob_column: str | None = None,
        groups=None,
        deletion_prob=None,
        hot_shards: int = 0,
        hot_threshold: float = 0.5,
        feature_columns: list[str] | None = None,
        dtype=None,
        overwrite: bool = False,
        memory_budget_mb: int = 256,
        batch_rows: int = 65_536,
        progress: bool = False,
    ) -> Store:
        """Ingest rows into a new store.

        Parameters
        ----------
        uri : str
            Local path or URI (``file://``, ``s3://``...). Must not hold a store unless
            ``overwrite=True``.
        data : array-like, DataFrame, pyarrow.Table or path
            Features (with ``y``) or a table/file holding the ``label`` column.
        y : array-like, optional
            Labels, when ``data`` is an array.
        label : str, optional
            Label column, when ``data`` is a table or file.
        n_shards, n_slices : int
            S and R.
        random_state : int
            Seed of the keyed assignment hash (and later of training).
        sample_ids : array-like, optional
            Stable id per row (int or str). ``id_column`` names a column instead.
            Default: 0..n-1 in input order.
        group_column / groups : optional
            Group key per row: all rows of a group land in one (shard, slice).
        deletion_prob_column / deletion_prob, hot_shards, hot_threshold : optional
            Distribution-aware sharding; see :class:`AssignmentConfig`.
        memory_budget_mb : int
            Rows are spilled to temporary files beyond this, so inputs larger than
            memory stream through.
        progress : bool
            Show rows ingested and slices written.

        Returns
        -------
        Store
        """
        with cls.building(uri, overwrite=overwrite) as store:
            store.ingest(data, y, label=label, n_shards=n_shards, n_slices=n_slices,
                         random_state=random_state, sample_ids=sample_ids, id_column=id_column,
                         group_column=group_column, deletion_prob_column=deletion_prob_column,
                         groups=groups, deletion_prob=deletion_prob, hot_shards=hot_shards,
                         hot_threshold=hot_threshold, feature_columns=feature_columns,
                         dtype=dtype, memory_budget_mb=memory_budget_mb, batch_rows=batch_rows,
                         progress=progress)
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
        loc = Location(str(uri))
        if loc.is_local and os.path.exists(loc.root) and not os.path.isdir(loc.root):
            raise LocationError(f"store path {uri} is a file: a store is a directory; pick "
                             "another path")
        before = set(loc.list_files())
        if MANIFEST not in before and before - {".lock"}:
            # never mix a store into, or let repair later sweep, files that are not ours
            raise LocationError(f"{uri} is not empty and holds no sisa store: pick a new or "
                             "empty path (if it is a half-built store, delete it first)")
        if MANIFEST in before and not overwrite:
            raise InputError(
                f"a store already exists at {uri}: open it with Store.open, pick another "
                "path, or replace it with overwrite=True (--overwrite on the CLI)"
            )
        made_root = loc.is_local and not os.path.exists(loc.root)
        dirs_before = _local_dirs(loc)
        store = cls(str(uri), {})
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

    def ingest(self, data, y=None, *, label: str | None = None, n_shards: int, n_slices: int,
               random_state: int = 0, sample_ids=None, id_column: str | None = None,
               group_column: str | None = None, deletion_prob_column: str | None = None,
               groups=None, deletion_prob=None, hot_shards: int = 0, hot_threshold: float = 0.5,
               feature_columns: list[str] | None = None, dtype=None,
               memory_budget_mb: int = 256, batch_rows: int = 65_536,
               progress: bool = False) -> Store:
        """Build the data of a staged store (see :meth:`building`); every row is read and
        validated before anything is published. Parameters as in :meth:`create`."""
        if not self.staged:
            raise StoreError("internal: ingest needs a staged store (use Store.building)")
        config = AssignmentConfig(int(n_shards), int(n_slices), int(random_state),
                                  int(hot_shards), float(hot_threshold))
        if hot_shards and deletion_prob is None and not deletion_prob_column:
            raise InputError(
                "hot_shards > 0 needs deletion probabilities: pass deletion_prob= or "
                "deletion_prob_column="
            )
        if label is None:
            if y is None:
                raise InputError("pass y= with array data, or label='column' with a table/file")
            source = ingest.from_arrays(data, y, sample_ids, groups, deletion_prob, dtype)
        else:
            if sample_ids is not None:
                raise InputError("pass sample_ids= with array data, or id_column= with a table")
            source = ingest.from_table(
                data, label, id_column=id_column, group_column=group_column,
                deletion_prob_column=deletion_prob_column, feature_columns=feature_columns,
                dtype=dtype, batch_rows=batch_rows,
            )
        key = keys.configured()
        store_id = secrets.token_hex(16)
        manifest = _Builder(self.loc, config, source, memory_budget_mb, progress, store_id,
                            key).build()
        if key is None:  # unsigned: the audit key lives beside the data, owner-only
            self.loc.write_atomic(audit_files(manifest)["key"], secrets.token_hex(32).encode(),
                                  mode=0o600)
        published = self.manifest
        manifest["generation"] = published["generation"] + 1 if published else 0
        self.manifest, self._key, self._audit_key = manifest, key, None
        self._index_cache.clear()
        return self

    def publish(self) -> None:
        """Make a staged store the store at its location: one manifest write, then the
        files of the store it replaces (data, checkpoints, audit log) are removed."""
        self._require_lock()
        if not self.staged or not self.manifest:
            raise StoreError("internal: nothing staged to publish (use Store.building)")
        manifest = {**self.manifest, "updated": now_iso()}
        manifest["fingerprint"] = fingerprint(manifest)
        _write_manifest(self.loc, manifest, self._key)
        self.manifest, self.staged = manifest, False
        crashpoint("publish:after-manifest")
        self.collect_garbage()

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> AssignmentConfig:
        return AssignmentConfig(**self.manifest["assignment"])

    @property
    def n_shards(self) -> int:
        return self.manifest["assignment"]["n_shards"]

    @property
    def n_slices(self) -> int:
        return self.manifest["assignment"]["n_slices"]

    @property
    def random_state(self) -> int:
        return self.manifest["assignment"]["random_state"]

    @property
    def n_rows(self) -> int:
        return sum(m["rows"] for m in self.manifest["slices"].values())

    @property
    def n_features(self) -> int:
        return len(self.manifest["schema"]["feature_names"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def slice_rows(self, shard: int, sl: int) -> int:
        return self.manifest["slices"][slice_key(shard, sl)]["rows"]

    def shard_rows(self, shard: int) -> int:
        return sum(self.slice_rows(shard, r) for r in range(self.n_slices))

    def shard_sizes(self) -> np.ndarray:
        return np.array([self.shard_rows(s) for s in range(self.n_shards)])

    def slice_hash(self, shard: int, sl: int) -> str:
        return self.manifest["slices"][slice_key(shard, sl)]["sha256"]

    def spread(self) -> dict:
        """Actual balance of shard sizes (expected equal under the uniform hash)."""
        return spread(self.shard_sizes())

    def referenced_files(self) -> dict[str, dict]:
        """Every file the manifest vouches for: relative path -> {sha256, bytes, ...}."""
        return referenced_files(self.manifest)

    # ------------------------------------------------------------------ reading
    def _read_table(self, rel: str, sha: str) -> pa.Table:
        return read_ipc(self.loc.read_verified(rel, sha))

    def read_slice_table(self, shard: int, sl: int) -> pa.Table:
        m = self.manifest["slices"][slice_key(shard, sl)]
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
        return _slice_schema(self.manifest["schema"]).empty_table()

    @property
    def index_buckets(self) -> int:
        return len(self.manifest["index"]["parts"])

    def read_index_part(self, bucket: int) -> pa.Table:
        """One index bucket: the ids hashing to it, sorted, with their (shard, slice)."""
        m = self.manifest["index"]["parts"][bucket]
        table = self._index_cache.get(m["sha256"])
        if table is None:  # immutable file: cache by its hash, keep only live buckets
            live = {p["sha256"] for p in self.manifest["index"]["parts"]}
            for sha in [k for k in self._index_cache if k not in live]:
                del self._index_cache[sha]
            table = self._index_cache[m["sha256"]] = self._read_table(m["file"], m["sha256"])
        return table

    def read_index(self) -> pa.Table:
        """The whole index (every bucket): ``sample_id, shard, slice``."""
        return pa.concat_tables([self.read_index_part(b) for b in range(self.index_buckets)])

    def iter_shard_tables(self, shard: int) -> Iterator[tuple[int, pa.Table]]:
        for r in range(self.n_slices):
            yield r, self.read_slice_table(shard, r)

    def locate(self, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where ``ids`` live: ``(found_mask, shard, slice)``, the last two for found ids
        only, in query order. Reads only the index buckets of these ids."""
        q = self.id_array(ids)
        buckets = id_buckets(q, self.index_buckets)
        found = np.zeros(len(q), bool)
        shard = np.zeros(len(q), np.int64)
        sl = np.zeros(len(q), np.int64)
        for b in np.unique(buckets).tolist():
            at = np.flatnonzero(buckets == b)
            part = self.read_index_part(b)
            ok, pos = _find(part.column(ID), q.take(pa.array(at)))
            found[at] = ok
            shard[at[ok]] = part.column("shard").to_numpy()[pos]
            sl[at[ok]] = part.column("slice").to_numpy()[pos]
        return found, shard[found], sl[found]

    # ------------------------------------------------------------------ tombstones
    # ------------------------------------------------------------------ keys
    @property
    def signer(self) -> str | None:
        """The hex Ed25519 public key that signs this store, or None (unsigned)."""
        signer = self.manifest.get("signer")
        return signer["public_key"] if signer else None

    def signing_key(self) -> keys.KeyPair | None:
        """The owner's key, required to change a signed store (None for unsigned ones)."""
        if self.signer is None:
            return None
        if self._key is None:
            key = keys.configured()
            if key is None or key.public_hex != self.signer:
                raise KeyFileError(_wrong_key(self.uri, self.signer, key))
            self._key = key
        return self._key

    def audit_key(self) -> bytes:
        """The key of the keyed hashes of deleted ids. Never in the manifest or a pickle:
        derived from the owner's key file for signed stores, else read from the store's
        0600 audit-key file."""
        if self._audit_key is None:
            if self.signer is not None:
                self._audit_key = self.signing_key().audit_key(self.manifest["store_id"])
            else:
                rel = audit_files(self.manifest)["key"]
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
        arr = self.id_array(ids)
        key = self.audit_key()
        return [hmac.new(key, b, hashlib.sha256).digest()[:16] for b in idmod.id_bytes(arr)]

    def tombstones_digest(self) -> str:
        """One hash over the tombstone files' hashes: what a receipt commits of the set of
        deleted ids (a swapped tombstone file changes it)."""
        parts = (self.manifest.get("tombstones") or {}).get("parts", {})
        return hashlib.sha256(canonical_json(sorted(p["sha256"] for p in parts.values())
                                             )).hexdigest()

    def id_array(self, ids) -> pa.Array:
        """``ids`` as this store's Arrow id array (the one id boundary: :mod:`sisa.store.ids`)."""
        return idmod.to_store_ids(ids, self.manifest["schema"]["id_type"])

    def read_tombstones(self, buckets: Iterable[int] | None = None) -> list[bytes]:
        """Keyed hashes of every deleted id (or of those in ``buckets``)."""
        parts = (self.manifest.get("tombstones") or {}).get("parts", {})
        keys = sorted(parts, key=int) if buckets is None else [str(b) for b in buckets]
        out: list[bytes] = []
        for k in (k for k in keys if k in parts):
            out += self._read_table(parts[k]["file"], parts[k]["sha256"]).column("h").to_pylist()
        return out

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def lock(self) -> Iterator[Store]:
        """Exclusive write lock: re-entrant in the thread holding it; other threads using
        this object wait for it, other objects and processes get :class:`StoreLockedError`.

        Locally an ``flock`` on ``<store>/.lock``: released by the kernel if the holder
        dies, so a crashed writer never leaves the store locked. On object stores a
        lock object plus a generation check at commit.
        """
        with self._thread_lock:
            yield from self._lock()

    def _lock(self) -> Iterator[Store]:
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}
        if self.loc.is_local:
            fd = self.loc.open_lock_fd()  # O_NOFOLLOW: a planted .lock link is refused
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise StoreLockedError(_locked_message(self.uri, info)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            self._lock_fd = fd
        else:  # object store: token + settle/read-back + heartbeat (see sisa.store.fs.ObjectLock)
            obj_lock = ObjectLock(self.loc, self.uri)
            obj_lock.acquire(holder["since"])
            self._object_lock = obj_lock
        self._lock_depth, self._lock_owner = 1, threading.get_ident()
        try:
            self.loc.clear_temp()  # debris of a writer killed mid-write: never ours to keep
            if self.manifest and self.loc.exists(MANIFEST):
                self.reload()  # see what the previous holder committed
            yield self
        finally:
            self._lock_depth, self._lock_owner = 0, None
            if self._lock_fd is not None:
                # an idle store's lock file is empty: a refused or failed command leaves
                # every byte of the store as it found it
                os.ftruncate(self._lock_fd, 0)
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
            elif self._object_lock is not None:
                self._object_lock.release()
                self._object_lock = None

    def _require_lock(self) -> None:
        if not self._lock_depth or self._lock_owner != threading.get_ident():
            raise StoreError("internal: store writes must run inside `with store.lock():`")

    # ------------------------------------------------------------------ committing
    def put_blob(self, rel_dir: str, suffix: str, data: bytes | pa.Buffer) -> dict:
        rel, digest = self.loc.write_content(rel_dir, suffix, data)
        return {"file": rel, "sha256": digest, "bytes": len(memoryview(data))}

    def get_blob(self, meta: dict) -> pa.Buffer:
        return self.loc.read_verified(meta["file"], meta["sha256"])

    def commit(self, manifest: dict) -> None:
        """Atomically make ``manifest`` the store's state, then drop files only the old
        state used. Refuses if another writer committed since this one last read.

        In a staged store (a fit being built beside the published state) the commit only
        replaces the in-memory manifest; :meth:`publish` writes it."""
        self._require_lock()
        if self.staged:
            self.manifest = {**manifest, "generation": self.manifest["generation"],
                             "fingerprint": fingerprint(manifest)}
            return
        on_disk = _load_manifest(self.loc)
        if on_disk["generation"] != self.manifest["generation"]:
            raise StoreLockedError(
                f"store {self.uri} was changed by another writer (generation "
                f"{on_disk['generation']}, expected {self.manifest['generation']}); reopen it "
                "and retry"
            )
        if self._object_lock is not None:
            self._object_lock.check()  # no CAS on object stores: re-check we still hold it
        old = self.manifest
        manifest = dict(manifest)
        manifest["generation"] = old["generation"] + 1
        manifest["updated"] = now_iso()
        manifest["fingerprint"] = fingerprint(manifest)
        _write_manifest(self.loc, manifest, self.signing_key())
        self.manifest = manifest
        crashpoint("commit:after-manifest")
        stale = set(referenced_files(old)) - set(referenced_files(manifest))
        for rel in sorted(stale):
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
        keep = set(referenced_files(self.manifest)) | KEEP | set(audit_files(self.manifest)
                                                                  .values())
        return [rel for rel in self.loc.list_files()
                if rel not in keep and not QUEUE_FILE.fullmatch(rel)]

    # ------------------------------------------------------------------ deleting
    def delete(self, ids, *, extra=None) -> DeleteResult:
        """Physically remove rows by sample id.

        Each affected slice is rewritten without the rows, the index and tombstones
        are updated, checkpoints from the earliest affected slice of each shard on are
        dropped (they saw the rows), and all of it lands in one manifest commit.

        Parameters
        ----------
        ids : iterable of int or str
        extra : callable, optional
            ``extra(changed) -> dict`` of keys merged into the same manifest commit
            (``forget`` uses it to journal its retrain atomically with the data change).

        Returns
        -------
        DeleteResult
            Ids deleted before are listed in ``already_deleted``, not an error.

        Raises
        ------
        UnknownIdError
            Some ids never existed; nothing is changed.
        """
        with self.lock():
            return self._delete(ids, extra or (lambda changed: {}))

    def check_ids(self, ids) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray, list]:
        """Resolve ids for a delete without changing anything.

        Returns ``(unique ids, found mask, shard, slice, already deleted ids)``; raises
        :class:`UnknownIdError` naming ids that are neither stored nor tombstoned.
        """
        q = self.id_array(ids)
        if len(pc.unique(q)) != len(q):
            q = pc.unique(q)
        found, shard, sl = self.locate(q)
        missing = np.asarray(q.to_pylist(), dtype=object)[~found]
        already: list = []
        if len(missing):
            hashes = self.keyed_id_hashes(pc.filter(q, pa.array(~found)))
            gone = set(self.read_tombstones(
                set(hash_buckets(hashes, self.index_buckets).tolist())))
            known = np.array([h in gone for h in hashes], dtype=bool)
            already = missing[known].tolist()
            unknown = missing[~known].tolist()
            if unknown:
                shown = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
                raise UnknownIdError(
                    f"{len(unknown)} sample id(s) are not in store {self.uri} and were never "
                    f"deleted from it: {shown}; check the ids (nothing was changed)"
                )
        return q, found, shard, sl, already

    def _delete(self, ids, extra) -> DeleteResult:
        q, found, shard, sl, already = self.check_ids(ids)
        q_found = pc.filter(q, pa.array(found))
        before = self.fingerprint
        if len(q_found) == 0:
            return DeleteResult(0, already, {}, {}, before, before)

        # Compute the remaining rows before writing anything: a delete that leaves a
        # classifier fewer than two classes is refused with the store untouched.
        kept = self._kept_rows(q_found, shard, sl)
        classes, removed = self._classes_after(kept)
        new = editable(self.manifest)
        changed: dict[int, int] = {}
        rows_before = {int(s): self.shard_rows(int(s)) for s in np.unique(shard)}
        label_type = self.manifest["schema"]["label_type"]
        for (s, r), table in kept.items():
            new["slices"][slice_key(s, r)] = {
                **self.put_blob(_slice_dir(s, r), ".arrow", ipc_bytes(table)),
                "rows": table.num_rows, "shard": s, "labels": slice_labels(table, label_type)}
            changed[s] = min(changed.get(s, r), r)
        crashpoint("delete:after-slices")
        B = self.index_buckets
        n_left = sum(p["rows"] for p in self.manifest["index"]["parts"]) - len(q_found)
        if n_index_buckets(n_left) != B:
            # The bucket count follows the row count; a delete that crosses a power of two
            # re-buckets the whole index and the tombstones (keyed by the same count), so
            # the store holds the files a fresh build of the remaining rows would.
            B = n_index_buckets(n_left)
            index = self.read_index().sort_by(ID)  # as the builder has it: sorted by id
            index = index.filter(pc.invert(pc.is_in(index.column(ID), value_set=q_found)))
            parts = [{**self.put_blob(_index_dir(b), ".arrow", ipc_bytes(part)),
                      "rows": part.num_rows} for b, part in enumerate(_bucketed(index, B))]
            old_tombs, tparts = self.read_tombstones(), {}
        else:
            parts = list(new["index"]["parts"])
            for b in np.unique(id_buckets(q_found, B)).tolist():
                part = self.read_index_part(b)
                part = part.filter(pc.invert(pc.is_in(part.column(ID), value_set=q_found)))
                parts[b] = {**self.put_blob(_index_dir(b), ".arrow", ipc_bytes(part)),
                            "rows": part.num_rows}
            old_tombs, tparts = None, dict((new.get("tombstones") or {}).get("parts", {}))
        new["index"] = {"parts": parts, "rows": sum(p["rows"] for p in parts)}
        gone = self.keyed_id_hashes(q_found)
        if old_tombs is not None:
            gone = old_tombs + gone
        where = hash_buckets(gone, B)
        for b in np.unique(where).tolist():
            added = [gone[i] for i in np.flatnonzero(where == b)]
            hashes = sorted(added + (self.read_tombstones([b]) if old_tombs is None else []))
            table = pa.table({"h": pa.array(hashes, pa.binary(16))})
            tparts[str(b)] = {**self.put_blob(_tombstone_dir(b), ".arrow", ipc_bytes(table)),
                              "rows": table.num_rows}
        new["tombstones"] = {"parts": tparts, "rows": sum(p["rows"] for p in tparts.values())}
        new["n_deleted"] = new.get("n_deleted", 0) + len(q_found)
        model = new.get("model")
        if model and classes is not None and classes != model["classes"]:
            # The class list is part of what a fresh fit learns (classes_, the columns of
            # predict_proba, every partial_fit call): every shard retrains from scratch.
            model["classes"] = classes
            model["checkpoints"] = {}
            changed = {s: 0 for s in range(self.n_shards)}
        elif model:
            model["checkpoints"] = {
                k: v for k, v in model["checkpoints"].items()
                if not (v["shard"] in changed and v["slice"] >= changed[v["shard"]])
            }
        new.update(extra(changed))
        crashpoint("delete:before-commit")
        self.commit(new)
        crashpoint("delete:after-commit")
        return DeleteResult(len(q_found), already, changed, rows_before, before, self.fingerprint,
                            {"removed": removed} if removed else None)

    def _kept_rows(self, q_found: pa.Array, shard: np.ndarray, sl: np.ndarray
                   ) -> dict[tuple[int, int], pa.Table]:
        """(shard, slice) -> the slice's rows without ``q_found``, for every slice holding
        one of them (read, not written)."""
        out = {}
        for s, r in sorted(set(zip(shard.tolist(), sl.tolist(), strict=True))):
            table = self.read_slice_table(s, r)
            out[(s, r)] = table.filter(pc.invert(pc.is_in(table.column(ID), value_set=q_found)))
        return out

    def _classes_after(self, kept: dict[tuple[int, int], pa.Table]) -> tuple[list | None, list]:
        """``(class list once the rows are gone, classes that vanish)`` for a store holding
        a classifier, ``(None, [])`` otherwise. Raises :class:`InputError` (nothing is
        written yet) if fewer than two classes would remain: a fresh fit would refuse."""
        model = self.manifest.get("model")
        if not model or model.get("task") != "classification" or model.get("classes") is None:
            return None, []
        classes = self._label_union(kept)
        left = set(classes)
        removed = [c for c in model["classes"] if c not in left]
        if len(classes) < 2:
            raise InputError(
                f"forgetting these rows would leave {len(classes)} class ({classes[:1]}) in "
                f"store {self.uri}, and a classifier needs at least two (a fresh fit on the "
                "remaining rows would refuse too): nothing was changed; forget fewer rows, or "
                "delete the whole store")
        return classes, removed

    def class_change(self, ids) -> dict | None:
        """What deleting ``ids`` would do to the model's class list, without writing:
        ``{"removed": [...]}`` if some class loses its last rows, else None.

        Raises
        ------
        InputError
            Fewer than two classes would remain for a classifier.
        """
        model = self.manifest.get("model")
        if not model or model.get("task") != "classification":
            return None
        q, found, shard, sl, _ = self.check_ids(ids)
        kept = self._kept_rows(pc.filter(q, pa.array(found)), shard, sl)
        removed = self._classes_after(kept)[1]
        return {"removed": removed} if removed else None

    def classes(self) -> list:
        """Sorted distinct labels of the stored rows, from the manifest's per-slice label
        lists (read from the data only for slices that record none: float labels)."""
        return self._label_union({})

    def _label_union(self, kept: dict) -> list:
        """Union of every slice's labels, ``kept`` replacing the slices it names."""
        lists = []
        for key, meta in self.manifest["slices"].items():
            cell = _key_order(key)
            if cell in kept or meta.get("labels") is None:  # float labels: read them
                table = kept.get(cell)
                table = self.read_slice_table(*cell) if table is None else table
                lists.append(pc.unique(table.column(LABEL)).to_pylist())
            else:
                lists.append(meta["labels"])
        return union(lists)


# ---------------------------------------------------------------------- helpers
def _slice_dir(shard: int, sl: int) -> str:
    return f"data/shard={shard:04d}/slice={sl:03d}"


def _index_dir(bucket: int) -> str:
    return f"index/bucket={bucket:04d}"


def _tombstone_dir(bucket: int) -> str:
    return f"audit/tombstones/bucket={bucket:04d}"


INDEX_BUCKET_ROWS = 1 << 16
MAX_INDEX_BUCKETS = 4096


def n_index_buckets(n_rows: int) -> int:
    """A power of two giving buckets of at most ~64k ids (up to 4096 buckets)."""
    b = 1
    while b * INDEX_BUCKET_ROWS < n_rows and b < MAX_INDEX_BUCKETS:
        b *= 2
    return b


def id_buckets(ids: pa.Array, n_buckets: int) -> np.ndarray:
    """Index bucket of each id: a hash of the id alone, so it never moves."""
    if n_buckets == 1:
        return np.zeros(len(ids), np.int64)
    h = keyed_hash(ids.to_numpy(zero_copy_only=False), 0, "index")
    return (h % np.uint64(n_buckets)).astype(np.int64)


def _bucketed(index: pa.Table, n_buckets: int) -> list[pa.Table]:
    """The index (sorted by id) split into its ``n_buckets`` buckets, each still sorted by
    id: one layout for a build and for a delete that re-buckets."""
    bucket = id_buckets(index.column(ID).combine_chunks(), n_buckets)
    order = np.argsort(bucket, kind="stable")  # by bucket, still by id within one
    ends = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
    # `take`, not `slice`: Arrow IPC pads a sliced buffer with the bytes that follow it in
    # its parent, so a slice's file would depend on its neighbours; a taken (or filtered)
    # table owns its buffers and serialises the same however it was derived.
    return [index.take(pa.array(order[ends[b]:ends[b + 1]])) for b in range(n_buckets)]


def hash_buckets(hashes: list[bytes], n_buckets: int) -> np.ndarray:
    """Tombstone bucket of each keyed id hash (already uniform: use its first bytes)."""
    return np.array([int.from_bytes(h[:8], "little") % n_buckets for h in hashes], np.int64)


def _find(keys: pa.ChunkedArray | pa.Array, q: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(found, positions of the found ones)`` of ``q`` in sorted, unique ``keys``."""
    if pa.types.is_integer(q.type):  # sorted by id: binary search
        k = keys.to_numpy()
        qs = q.to_numpy()
        pos = np.minimum(np.searchsorted(k, qs), max(len(k) - 1, 0))
        found = (k[pos] == qs) if len(k) else np.zeros(len(qs), bool)
        return found, pos[found]
    pos = pc.index_in(q, value_set=keys).to_numpy(zero_copy_only=False)
    found = ~np.isnan(pos.astype(np.float64))
    return found, pos[found].astype(np.int64)


def _slice_schema(schema: dict) -> pa.Schema:
    ftype = pa.float32() if schema["dtype"] == "float32" else pa.float64()
    return pa.schema([
        (ID, pa.int64() if schema["id_type"] == "int64" else pa.string()),
        (LABEL, pa.type_for_alias(schema["label_type"])),
        (FEATURES, pa.list_(ftype, len(schema["feature_names"]))),
    ])


def _local_dirs(loc: Location) -> set[str]:
    """Every folder below a local store's root (object stores have none)."""
    if not loc.is_local or not os.path.isdir(loc.root):
        return set()
    return {d for d, _, _ in os.walk(loc.root, followlinks=False)} - {loc.root}


def _locked_message(uri: str, info: str) -> str:
    try:
        h = json.loads(info)
        who = f"pid {h.get('pid')} on host {h.get('host')} since {h.get('since')}"
    except (ValueError, AttributeError):
        who = "another process"
    return (
        f"store {uri} is locked by {who}: wait for that job to finish (one writer per store "
        "at a time)"
    )


def referenced_files(manifest: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for meta in manifest["slices"].values():
        out[meta["file"]] = meta
    for meta in manifest["index"]["parts"]:
        out[meta["file"]] = meta
    for meta in (manifest.get("tombstones") or {}).get("parts", {}).values():
        out[meta["file"]] = meta
    model = manifest.get("model")
    if model:
        for meta in model["checkpoints"].values():
            out[meta["file"]] = meta
    return out


def fingerprint(manifest: dict) -> str:
    """Content hash of the training data state: assignment, schema and every slice hash."""
    slices = [manifest["slices"][k]["sha256"] for k in sorted(manifest["slices"], key=_key_order)]
    payload = {"assignment": manifest["assignment"], "schema": manifest["schema"],
               "slices": slices}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def _key_order(k: str) -> tuple[int, int]:
    a, b = k.split("/")
    return int(a), int(b)


_HEAD = re.compile(rb'\{"checksum":"([0-9a-f]{64})","signature":"([0-9a-f]*)","manifest":')


def _write_manifest(loc: Location, manifest: dict, key: keys.KeyPair | None) -> None:
    """``{"checksum": sha256(body), "signature": ed25519(body), "manifest": body}`` over
    body's exact bytes, so reading verifies both without re-serialising. A signed store
    (``manifest["signer"]``) is only ever written with its owner's key."""
    body = canonical_json(manifest)
    digest = hashlib.sha256(body).hexdigest().encode()
    signer = manifest.get("signer")
    sig = b""
    if signer:
        if key is None or key.public_hex != signer["public_key"]:
            raise KeyFileError(_wrong_key(loc.uri, signer["public_key"], key))
        sig = key.sign(body).encode()
    loc.write_atomic(MANIFEST, b'{"checksum":"' + digest + b'","signature":"' + sig
                     + b'","manifest":' + body + b"}")


def _wrong_key(uri: str, public_hex: str, key: keys.KeyPair | None) -> str:
    have = f"your key is ed25519:{key.public_hex[:16]}..." if key else "no key is configured"
    return (f"store {uri} is signed by ed25519:{public_hex[:16]}... and {have}: point "
            f"${keys.KEY_FILE_ENV} at its owner's key file (only the owner can change a signed "
            "store)")


def _split_manifest(raw: bytes) -> tuple[bytes, str] | None:
    """``(body, signature hex)`` if the bytes match their own checksum (a torn object-store
    read or a corrupted file does not), else None."""
    head = _HEAD.match(raw)
    body = raw[head.end():-1] if head and raw.endswith(b"}") else b""
    if head and hashlib.sha256(body).hexdigest().encode() == head.group(1):
        return body, head.group(2).decode()
    return None


def _load_manifest(loc: Location) -> dict:
    raw = loc.read_stable(MANIFEST, lambda b: _split_manifest(b) is not None)  # torn S3 reads
    parts = _split_manifest(raw)
    m = None
    if parts is not None:
        with contextlib.suppress(ValueError):
            m = json.loads(parts[0])
    if not isinstance(m, dict):
        fmt = re.search(rb'"format":"(sisa-store/[0-9]+)"', raw)
        if fmt and fmt.group(1).decode() != FORMAT:
            raise StoreError(_old_format(loc, fmt.group(1).decode()))
        raise CorruptStoreError(
            f"manifest {loc.path(MANIFEST)} is corrupt (bad JSON or checksum): restore it from "
            "backup; sisa will not guess which files are valid"
        )
    if m.get("format") != FORMAT:
        raise StoreError(_old_format(loc, m.get("format")))
    signer = m.get("signer")
    if signer is not None and not (
            isinstance(signer, dict) and signer.get("alg") == keys.ALG
            and isinstance(signer.get("public_key"), str)
            and re.fullmatch(r"[0-9a-f]{64}", signer["public_key"])):
        raise CorruptStoreError(f"manifest {loc.path(MANIFEST)} names a malformed signer "
                                f"({str(signer)[:60]}): it was edited; restore the store from "
                                "backup")
    audit = m.get("audit")
    if not (isinstance(audit, dict) and isinstance(audit.get("receipts"), int)
            and (audit.get("head") is None or isinstance(audit.get("head"), str))
            and isinstance(m.get("last_receipt") or {}, dict)):
        raise CorruptStoreError(f"manifest {loc.path(MANIFEST)} has a malformed audit section: "
                                "it was edited; restore the store from backup")
    if signer and not keys.check_signature(signer["public_key"], parts[0], parts[1]):
        raise CorruptStoreError(
            f"manifest {loc.path(MANIFEST)} does not carry a valid signature of the key it names "
            "(ed25519:" + signer["public_key"][:16] + "...): it was changed by someone without "
            "the owner's key; restore the store from backup")
    if not signer and parts[1]:
        raise CorruptStoreError(f"manifest {loc.path(MANIFEST)} carries a signature but names no "
                                "signer: it was edited; restore the store from backup")
    check_manifest_paths(m, loc.path(MANIFEST))  # no entry may name a path outside the store
    return m


def _old_format(loc: Location, fmt) -> str:
    return (f"{loc.path(MANIFEST)} has format {fmt!r}; this sisa reads {FORMAT}: rebuild the "
            "store from the source data (`sisa train ... --overwrite`, or "
            "Store.create(..., overwrite=True)), or open it with the sisa version that wrote it")


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

    def build(self) -> dict:
        """Write the slices and the index; returns the new (unpublished) manifest."""
        tmp = Path(tempfile.mkdtemp(prefix="sisa-ingest-"))
        try:
            return self._build(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, tmp: Path) -> dict:
        S, R = self.config.n_shards, self.config.n_slices
        buffers: dict[tuple[int, int], list[pa.Table]] = {}
        chunks: dict[tuple[int, int], list[Path]] = {}
        all_ids, all_shard, all_slice = [], [], []
        buffered, n, n_flush = 0, 0, 0
        d = len(self.source.feature_names)
        bar = progress_bar(desc="ingesting", unit="rows", unit_scale=True,
                           enabled=self.progress)
        for batch in self.source.batches:
            m = len(batch.y)
            bar.update(m)
            id_arr = idmod.to_store_ids(
                batch.ids if batch.ids is not None else np.arange(n, n + m, dtype=np.int64),
                self.source.id_type)
            shard, sl, order = assign(self.config, idmod.as_numpy(id_arr), batch.groups,
                                      batch.deletion_prob)
            all_ids.append(id_arr)
            all_shard.append(shard)
            all_slice.append(sl)
            feats = pa.FixedSizeListArray.from_arrays(pa.array(batch.X.reshape(-1)), d)
            table = pa.table({ID: id_arr, LABEL: pa.array(batch.y).cast(self.source.label_type),
                              FEATURES: feats, _ORDER: pa.array(order)})
            cell = shard.astype(np.int64) * R + sl
            perm = np.argsort(cell, kind="stable")
            bounds = np.flatnonzero(np.diff(cell[perm])) + 1
            for part in np.split(perm, bounds):
                c = int(cell[part[0]])
                buffers.setdefault((c // R, c % R), []).append(table.take(part))
            buffered += table.nbytes
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
        manifest = {
            "format": FORMAT, "sisa_version": __version__, "generation": 0, "created": now_iso(),
            "store_id": self.store_id,
            "signer": {"alg": keys.ALG, "public_key": self.key.public_hex} if self.key else None,
            "assignment": self.config.to_dict(), "schema": self.schema_info, "slices": slices,
            "index": index_meta, "tombstones": None, "n_deleted": 0, "model": None,
            "pending": None, "audit": {"receipts": 0, "head": None}, "last_receipt": None,
        }
        manifest["fingerprint"] = fingerprint(manifest)
        return manifest

    def _spill(self, tmp: Path, buffers, chunks, n_flush: int) -> None:
        for key, parts in buffers.items():
            path = tmp / f"{key[0]}_{key[1]}_{n_flush}.arrow"
            t = pa.concat_tables(parts)
            with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
                w.write_table(t)
            chunks.setdefault(key, []).append(path)

    def _write_slices(self, tmp: Path, buffers, chunks, index: pa.Table) -> dict:
        S, R = self.config.n_shards, self.config.n_slices
        schema = _slice_schema(self.schema_info)
        slices: dict[str, dict] = {}
        cells = progress_bar([(s, r) for s in range(S) for r in range(R)],
                             desc="writing slices", unit="slice", enabled=self.progress)
        for s, r in cells:
            parts = [pa.ipc.open_file(pa.memory_map(str(p))).read_all()
                     for p in chunks.get((s, r), [])]
            parts += buffers.get((s, r), [])
            if parts:
                t = pa.concat_tables(parts).sort_by([(_ORDER, "ascending"), (ID, "ascending")])
                t = t.drop_columns([_ORDER]).cast(schema)
            else:
                t = schema.empty_table()
            # the slice's distinct labels: the class set is a union of manifest entries
            slices[slice_key(s, r)] = {**self._put(_slice_dir(s, r), ipc_bytes(t)),
                                       "rows": t.num_rows, "shard": s,
                                       "labels": slice_labels(t, self.schema_info["label_type"])}
        parts = [{**self._put(_index_dir(b), ipc_bytes(part)), "rows": part.num_rows}
                 for b, part in enumerate(_bucketed(index, n_index_buckets(index.num_rows)))]
        index_meta = {"parts": parts, "rows": index.num_rows}
        return slices, index_meta

    def _put(self, rel_dir: str, data: pa.Buffer) -> dict:
        rel, digest = self.loc.write_content(rel_dir, ".arrow", data)
        return {"file": rel, "sha256": digest, "bytes": len(memoryview(data))}
