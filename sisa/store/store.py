"""The Arrow-backed shard/slice store: the single source of truth for training rows.

Layout under the store URI::

    manifest.json                          the commit point: names every live file + its sha256
    data/shard=0003/slice=005/<hash>.arrow one uncompressed Arrow IPC file per (shard, slice)
    index/bucket=0003/<hash>.arrow         sample_id -> (shard, slice), sorted by id
    audit/tombstones/bucket=0003/<hash>.arrow  keyed hashes of deleted ids (never the ids)
    audit/receipts.jsonl                   append-only log of forget receipts
    checkpoints/shard=0003/slice=005/<hash>.pkl, model/<hash>.pkl   (written by the engine)

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
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .._crash import crashpoint
from .._version import __version__
from ..errors import CorruptStoreError, InputError, StoreError, StoreLockedError, UnknownIdError
from ..fs import Location, ObjectLock
from . import ingest
from .assign import AssignmentConfig, assign, keyed_hash, spread

FORMAT = "sisa-store/2"
MANIFEST = "manifest.json"
ID, LABEL, FEATURES = "sample_id", "label", "features"
_ORDER = "__order"
# Bookkeeping files that are not content-addressed and never hold training rows.
KEEP = {MANIFEST, ".lock", "audit/receipts.jsonl", "audit/intent.json"}


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

    def __getstate__(self) -> dict:  # pickled with estimators: no caches, no lock
        state = {**self.__dict__, "_index_cache": {}, "_lock_fd": None, "_lock_depth": 0,
                 "_lock_owner": None, "_object_lock": None}
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
            raise StoreError(
                f"no sisa store at {uri} (no {MANIFEST}): check the path, or create one with "
                "`sisa train` / Store.create"
            )
        store = cls(str(uri), _load_manifest(loc))
        if check_files:
            store.check_files(hashes=False)
        return store

    def reload(self) -> None:
        self.manifest = _load_manifest(self.loc)

    def check_files(self, hashes: bool = True, *, shards: Iterable[int] | None = None) -> None:
        """Raise :class:`CorruptStoreError` naming the first missing, resized or (with
        ``hashes``) altered file."""
        wanted = None if shards is None else {int(s) for s in shards}
        listed = {} if self.loc.is_local else self.loc.file_infos()  # 1 LIST, not N HEADs
        for rel, meta in self.referenced_files().items():
            if wanted is not None and meta.get("shard") not in wanted and "shard" in meta:
                continue
            info = listed.get(rel) or self.loc.fs.get_file_info(self.loc.path(rel))
            if info.size is None or info.type.name == "NotFound":
                raise CorruptStoreError(
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
            source = ingest.from_table(
                data, label, id_column=id_column, group_column=group_column,
                deletion_prob_column=deletion_prob_column, feature_columns=feature_columns,
                dtype=dtype, batch_rows=batch_rows,
            )
            if sample_ids is not None:
                raise InputError("pass sample_ids= with array data, or id_column= with a table")
        loc = Location(str(uri))
        if loc.is_local and os.path.exists(loc.root) and not os.path.isdir(loc.root):
            raise StoreError(f"store path {uri} is a file: a store is a directory; pick "
                             "another path")
        if not loc.exists(MANIFEST) and loc.list_files():
            # never mix a store into, or let repair later sweep, files that are not ours
            raise StoreError(f"{uri} is not empty and holds no sisa store: pick a new or "
                             "empty path (if it is a half-built store, delete it first)")
        if loc.exists(MANIFEST):
            if not overwrite:
                raise InputError(
                    f"a store already exists at {uri}: open it with Store.open, pick another "
                    "path, or replace it with overwrite=True (--overwrite on the CLI)"
                )
            try:
                old = cls.open(str(uri), check_files=False)
            except StoreLockedError:
                raise
            except StoreError:  # corrupt or another format: replacing it is the way out
                old = cls(str(uri), {})
            with old.lock():
                loc.delete_all()
        builder = _Builder(loc, config, source, memory_budget_mb, progress)
        return builder.build()

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
        q = _id_array(ids, self.manifest["schema"]["id_type"])
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
    def tombstone_hashes(self, ids) -> list[bytes]:
        """Keyed hashes (16 bytes each) under which deleted ids are remembered."""
        key = bytes.fromhex(self.manifest["audit_key"])
        return [hmac.new(key, _id_bytes(v), hashlib.sha256).digest()[:16] for v in ids]

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
            path = self.loc.path(".lock")
            os.makedirs(self.loc.root, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise StoreLockedError(_locked_message(self.uri, info)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            self._lock_fd = fd
        else:  # object store: token + settle/read-back + heartbeat (see sisa.fs.ObjectLock)
            obj_lock = ObjectLock(self.loc, self.uri)
            obj_lock.acquire(holder["since"])
            self._object_lock = obj_lock
        self._lock_depth, self._lock_owner = 1, threading.get_ident()
        try:
            if self.manifest and self.loc.exists(MANIFEST):
                self.reload()  # see what the previous holder committed
            yield self
        finally:
            self._lock_depth, self._lock_owner = 0, None
            if self._lock_fd is not None:
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
        state used. Refuses if another writer committed since this one last read."""
        self._require_lock()
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
        _write_manifest(self.loc, manifest)
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
        keep = set(referenced_files(self.manifest)) | KEEP
        return [rel for rel in self.loc.list_files() if rel not in keep]

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
        q = _id_array(ids, self.manifest["schema"]["id_type"])
        if len(pc.unique(q)) != len(q):
            q = pc.unique(q)
        found, shard, sl = self.locate(q)
        missing = np.asarray(q.to_pylist(), dtype=object)[~found]
        already: list = []
        if len(missing):
            hashes = self.tombstone_hashes(missing.tolist())
            gone = set(self.read_tombstones(
                set(hash_buckets(hashes, self.index_buckets).tolist())))
            known = np.array([h in gone for h in hashes], dtype=bool)
            already = missing[known].tolist()
            unknown = missing[~known].tolist()
            if unknown:
                shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
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

        new = editable(self.manifest)
        changed: dict[int, int] = {}
        rows_before = {int(s): self.shard_rows(int(s)) for s in np.unique(shard)}
        for s, r in sorted(set(zip(shard.tolist(), sl.tolist(), strict=True))):
            table = self.read_slice_table(s, r)
            keep = pc.invert(pc.is_in(table.column(ID), value_set=q_found))
            kept = table.filter(keep)
            key = slice_key(s, r)
            new["slices"][key] = {**self.put_blob(_slice_dir(s, r), ".arrow", ipc_bytes(kept)),
                                  "rows": kept.num_rows, "shard": s}
            changed[s] = min(changed.get(s, r), r)
        crashpoint("delete:after-slices")
        B = self.index_buckets
        parts = list(new["index"]["parts"])
        for b in np.unique(id_buckets(q_found, B)).tolist():
            part = self.read_index_part(b)
            part = part.filter(pc.invert(pc.is_in(part.column(ID), value_set=q_found)))
            parts[b] = {**self.put_blob(_index_dir(b), ".arrow", ipc_bytes(part)),
                        "rows": part.num_rows}
        new["index"] = {"parts": parts, "rows": sum(p["rows"] for p in parts)}
        gone = self.tombstone_hashes(q_found.to_pylist())
        where = hash_buckets(gone, B)
        tparts = dict((new.get("tombstones") or {}).get("parts", {}))
        for b in np.unique(where).tolist():
            added = [gone[i] for i in np.flatnonzero(where == b)]
            hashes = sorted(self.read_tombstones([b]) + added)
            table = pa.table({"h": pa.array(hashes, pa.binary(16))})
            tparts[str(b)] = {**self.put_blob(_tombstone_dir(b), ".arrow", ipc_bytes(table)),
                              "rows": table.num_rows}
        new["tombstones"] = {"parts": tparts, "rows": sum(p["rows"] for p in tparts.values())}
        new["n_deleted"] = new.get("n_deleted", 0) + len(q_found)
        model = new.get("model")
        if model:
            model["checkpoints"] = {
                k: v for k, v in model["checkpoints"].items()
                if not (v["shard"] in changed and v["slice"] >= changed[v["shard"]])
            }
        new.update(extra(changed))
        crashpoint("delete:before-commit")
        self.commit(new)
        crashpoint("delete:after-commit")
        return DeleteResult(len(q_found), already, changed, rows_before, before, self.fingerprint)


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


def _id_array(ids, id_type: str) -> pa.Array:
    try:
        arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(
            np.atleast_1d(np.asarray(ids, dtype=object)).tolist())
        if not (pa.types.is_integer(arr.type) or pa.types.is_string(arr.type)
                or pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type)):
            # a boolean mask or float ids would cast "successfully" to the wrong ids
            raise InputError(
                f"sample ids must be integers or strings, got {arr.type} values: pass the ids "
                "themselves (for a boolean mask, ids[mask])")
        out = arr.cast(pa.int64() if id_type == "int64" else pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError,
            OverflowError) as exc:
        raise InputError(
            f"sample ids of this store are {id_type}; could not read the given ids as such: {exc}"
        ) from exc
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    if out.null_count:
        raise InputError("sample ids must not be missing (None/NaN)")
    return out


def _id_bytes(v) -> bytes:
    return (f"i:{int(v)}" if isinstance(v, (int, np.integer)) else f"s:{v}").encode()


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
        out[model["estimator"]["file"]] = model["estimator"]
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


_HEAD = re.compile(rb'\{"checksum":"([0-9a-f]{64})","manifest":')


def _write_manifest(loc: Location, manifest: dict) -> None:
    """``{"checksum": sha256(body), "manifest": body}``, the checksum over body's exact bytes,
    so reading verifies it without re-serialising."""
    body = canonical_json(manifest)
    digest = hashlib.sha256(body).hexdigest().encode()
    loc.write_atomic(MANIFEST, b'{"checksum":"' + digest + b'","manifest":' + body + b"}")


def _manifest_body(raw: bytes) -> bytes | None:
    """The manifest body if the bytes match their own checksum (a torn object-store read
    or a corrupted file does not), else None."""
    head = _HEAD.match(raw)
    body = raw[head.end():-1] if head and raw.endswith(b"}") else b""
    return body if head and hashlib.sha256(body).hexdigest().encode() == head.group(1) else None


def _load_manifest(loc: Location) -> dict:
    raw = loc.read_stable(MANIFEST, lambda b: _manifest_body(b) is not None)  # torn S3 reads
    body = _manifest_body(raw)
    ok = body is not None
    if ok:
        try:
            m = json.loads(body)
        except ValueError:
            ok = False
    if not ok:
        raise CorruptStoreError(
            f"manifest {loc.path(MANIFEST)} is corrupt (bad JSON or checksum): restore it from "
            "backup; sisa will not guess which files are valid"
        )
    if m.get("format") != FORMAT:
        raise StoreError(
            f"{loc.path(MANIFEST)} has format {m.get('format')!r}; this sisa reads {FORMAT}: "
            "rebuild the store from the source data (Store.create(..., overwrite=True), or a "
            "new `sisa train`), or open it with the sisa version that wrote it")
    return m


class _Builder:
    """Two passes: assign and spill batches to local temp files, then write each slice
    sorted by its hash order. Memory holds at most the budget plus one slice."""

    def __init__(self, loc: Location, config: AssignmentConfig, source: ingest.Source,
                 budget_mb: int, progress: bool = False) -> None:
        self.loc, self.config, self.source, self.progress = loc, config, source, progress
        self.budget = budget_mb * 2**20
        ftype = pa.float32() if source.dtype == np.float32 else pa.float64()
        self.schema_info = {
            "feature_names": source.feature_names, "label_name": source.label_name,
            "label_type": str(source.label_type), "id_name": source.id_name,
            "dtype": "float32" if ftype == pa.float32() else "float64", "id_type": None,
        }
        self.ftype = ftype

    def build(self) -> Store:
        tmp = Path(tempfile.mkdtemp(prefix="sisa-ingest-"))
        try:
            return self._build(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _build(self, tmp: Path) -> Store:
        S, R = self.config.n_shards, self.config.n_slices
        buffers: dict[tuple[int, int], list[pa.Table]] = {}
        chunks: dict[tuple[int, int], list[Path]] = {}
        all_ids, all_shard, all_slice = [], [], []
        buffered, n, n_flush = 0, 0, 0
        d = len(self.source.feature_names)
        bar = tqdm(desc="ingesting", unit="rows", unit_scale=True, disable=not self.progress,
                   leave=False, file=sys.stderr)
        for batch in self.source.batches:
            m = len(batch.y)
            bar.update(m)
            ids = batch.ids if batch.ids is not None else np.arange(n, n + m, dtype=np.int64)
            if ids.dtype.kind == "f":
                raise InputError("the id column must hold integers or strings, not floats")
            shard, sl, order = assign(self.config, ids, batch.groups, batch.deletion_prob)
            id_arr = _id_array(ids, "int64" if ids.dtype.kind in "iu" else "string")
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
        ids = pa.chunked_array(all_ids).combine_chunks()
        id_type = "int64" if pa.types.is_integer(ids.type) else "string"
        self.schema_info["id_type"] = id_type
        ids = ids.cast(pa.int64() if id_type == "int64" else pa.string())
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
        manifest = self._write_slices(tmp, buffers, chunks, index)
        _write_manifest(self.loc, manifest)
        return Store(self.loc.uri, manifest)

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
        cells = tqdm([(s, r) for s in range(S) for r in range(R)], desc="writing slices",
                     unit="slice", disable=not self.progress, leave=False, file=sys.stderr)
        for s, r in cells:
            parts = [pa.ipc.open_file(pa.memory_map(str(p))).read_all()
                     for p in chunks.get((s, r), [])]
            parts += buffers.get((s, r), [])
            if parts:
                t = pa.concat_tables(parts).sort_by([(_ORDER, "ascending"), (ID, "ascending")])
                t = t.drop_columns([_ORDER]).cast(schema)
            else:
                t = schema.empty_table()
            slices[slice_key(s, r)] = {**self._put(_slice_dir(s, r), ipc_bytes(t)),
                                       "rows": t.num_rows, "shard": s}
        B = n_index_buckets(index.num_rows)
        bucket = id_buckets(index.column(ID).combine_chunks(), B)
        order = np.argsort(bucket, kind="stable")  # by bucket, still by id within one
        ends = np.searchsorted(bucket[order], np.arange(B + 1))
        index = index.take(pa.array(order))
        parts = []
        for b in range(B):
            part = index.slice(ends[b], ends[b + 1] - ends[b])
            parts.append({**self._put(_index_dir(b), ipc_bytes(part)), "rows": part.num_rows})
        index_meta = {"parts": parts, "rows": index.num_rows}
        manifest = {
            "format": FORMAT, "sisa_version": __version__, "generation": 0, "created": now_iso(),
            "assignment": self.config.to_dict(), "schema": self.schema_info, "slices": slices,
            "index": index_meta, "tombstones": None, "audit_key": secrets.token_hex(32),
            "n_deleted": 0, "model": None, "pending": None,
        }
        manifest["fingerprint"] = fingerprint(manifest)
        return manifest

    def _put(self, rel_dir: str, data: pa.Buffer) -> dict:
        rel, digest = self.loc.write_content(rel_dir, ".arrow", data)
        return {"file": rel, "sha256": digest, "bytes": len(memoryview(data))}
