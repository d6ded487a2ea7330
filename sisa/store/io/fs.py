"""One place where sisa touches storage: URIs resolved through ``pyarrow.fs``.

Every file sisa writes is either content-addressed (its name carries its hash, so
a rewrite with the same bytes is a no-op and a Ray retry is safe) or the small
``manifest.json`` that names them. Commits therefore need only one atomic step:
replacing the manifest. Locally that is write-to-temp, fsync, ``os.replace``;
on object stores (no rename) it is a single PUT, which S3 applies atomically.

The store's write lock lives in :mod:`sisa.store.io.lock`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from ...errors import CorruptStoreError
from . import localfs
from .localfs import (
    UnsafePathError,
    fsync_dir,
    link_error,
    makedirs_durable,
    map_nofollow,
    walk_nofollow,
)
from .uris import resolve


class MissingFileError(CorruptStoreError):
    """A file the manifest names (``rel``, relative to the store) is not there: damage, or
    a reader that raced a commit (:meth:`sisa.store.Store.read_consistent` tells them apart)."""

    def __init__(self, message: str, rel: str | None = None) -> None:
        super().__init__(message)
        self.rel = rel

    def __reduce__(self):  # raised in a Ray task: ``rel`` crosses back with it
        return type(self), (str(self), self.rel)


def check_rel(rel: str) -> str:
    """``rel`` if it is a plain relative path that stays inside the store, lexically.

    Every path sisa uses below a store root is built from fixed names and hashes, so a
    ``..``, an absolute path, a backslash or a NUL can only come from an edited
    manifest (or a bug); refusing them here covers every read, write and delete.
    """
    parts = rel.split("/") if isinstance(rel, str) else None
    if (parts is None or rel.startswith("/") or "\\" in rel or "\x00" in rel
            or (rel and any(p in ("", ".", "..") for p in parts))):
        raise UnsafePathError(
            f"refusing store path {rel!r}: it would leave the store (.., absolute path, "
            "backslash or NUL); the manifest naming it was edited, restore it from backup")
    return rel


def sha256_bytes(data: bytes | memoryview | pa.Buffer) -> str:
    """Hex sha256 of a bytes-like object (zero-copy for Arrow buffers and memoryviews)."""
    return hashlib.sha256(memoryview(data)).hexdigest()


@dataclass(frozen=True)
class Location:
    """A directory on some filesystem: local, ``file://``, ``s3://``, ``gs://``, ``hdfs://``.

    Parameters
    ----------
    uri : str
        What the user gave; kept so it can be passed to Ray tasks and other processes.
    """

    uri: str

    @property
    def _resolved(self) -> tuple[pafs.FileSystem, str, bool]:
        return resolve(self.uri)

    @property
    def fs(self) -> pafs.FileSystem:
        return self._resolved[0]

    @property
    def root(self) -> str:
        return self._resolved[1]

    @property
    def is_local(self) -> bool:
        return self._resolved[2]

    @property
    def is_flat(self) -> bool:
        """An object store without real directories (S3, GCS)."""
        return self.fs.type_name in ("s3", "gcs")

    def path(self, rel: str) -> str:
        return f"{self.root}/{check_rel(rel)}" if rel else self.root

    def _no_links(self, rel: str, *, final: bool = True) -> str:
        """The local path of ``rel`` after checking that no component below the root is
        a symbolic link (``final=False``: the last component may be one, for callers
        that act on the link itself, never through it).

        A link inside a store can point anywhere, so reading, writing or deleting
        through one would touch files outside the store. The root itself was resolved
        when the location was opened, so a store reached through a link the user made
        is fine. (This checks a store at rest; it does not defend against someone
        swapping directories for links while sisa runs.)
        """
        path = self.path(rel)
        if not self.is_local or not rel:
            return path
        parts = rel.split("/")
        cur = self.root
        for i, part in enumerate(parts):
            cur = f"{cur}/{part}"
            if not final and i == len(parts) - 1:
                break
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                break  # nothing below a missing component exists, links included
            except NotADirectoryError:
                break
            if stat.S_ISLNK(st.st_mode):
                raise link_error(cur)
        return path

    # -- reading -----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.is_local:
            try:
                os.lstat(self._no_links(rel))
            except (FileNotFoundError, NotADirectoryError):
                return False
            return True
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def info(self, rel: str) -> pafs.FileInfo:
        """``FileInfo`` of one file, refusing links locally (pyarrow's follows them)."""
        if self.is_local:
            path = self._no_links(rel)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return pafs.FileInfo(path, pafs.FileType.NotFound)
            kind = pafs.FileType.Directory if stat.S_ISDIR(st.st_mode) else pafs.FileType.File
            return pafs.FileInfo(path, kind, size=st.st_size)
        return self.fs.get_file_info(self.path(rel))

    def read_bytes(self, rel: str) -> pa.Buffer:
        """Whole file as an Arrow buffer; memory-mapped when local (zero-copy)."""
        try:
            if self.is_local:
                return map_nofollow(self._no_links(rel))
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read_buffer()
        except FileNotFoundError as exc:
            raise MissingFileError(
                f"missing file {self.path(rel)}: the store is damaged; run `sisa repair "
                f"{self.uri}` or restore the file from backup", rel) from exc

    def read_stable(self, rel: str, intact: Callable[[bytes], bool]) -> bytes:
        """Read a small file that writers replace in place (the manifest, the lock) and
        re-read it, a bounded number of times, while ``intact`` rejects the bytes.

        pyarrow reads an S3 object by sizing it with HEAD and then GETting that many
        bytes, so a read that races a replace can return the start of the new object cut
        to the old one's length. S3 itself replaces atomically; such a torn read only
        needs a retry. Local reads see the old or the new inode and are not retried.
        """
        data = self.read_bytes(rel).to_pybytes()
        if self.is_local:
            return data
        for delay in _REREAD_DELAYS:
            if intact(data):
                break
            time.sleep(delay)
            data = self.read_bytes(rel).to_pybytes()
        return data

    def read_verified(self, rel: str, sha256: str) -> pa.Buffer:
        """Read a file and check it against the hash the manifest vouches for.

        Locally a file this process already verified is not hashed again while its
        inode, size, mtime and ctime are unchanged (a content-addressed file never
        changes; any write to it changes its ctime, which no user can set back); nor is
        one this thread wrote in the current batch (:meth:`write_content`)."""
        if self.is_local:
            try:
                buf, stamp = map_nofollow(self._no_links(rel), stamped=True)
            except FileNotFoundError as exc:
                raise MissingFileError(
                    f"missing file {self.path(rel)}: the store is damaged; run `sisa repair "
                    f"{self.uri}` or restore the file from backup", rel) from exc
            key = (self.path(rel), sha256)
            if _VERIFIED.get(key) == stamp or localfs.vouched(key) == stamp:
                return buf
        else:
            buf, key, stamp = self.read_bytes(rel), None, None
        got = sha256_bytes(buf)
        if got != sha256:
            raise CorruptStoreError(
                f"hash mismatch for {self.path(rel)} (manifest {sha256[:12]}, file {got[:12]}): "
                f"the file was changed or damaged; run `sisa repair {self.uri}` or restore it"
            )
        if key is not None:
            if len(_VERIFIED) > _MAX_VERIFIED:
                _VERIFIED.clear()
            _VERIFIED[key] = stamp
        return buf

    def list_files(self, rel: str = "") -> list[str]:
        """All files below ``rel``, as paths relative to the root (sorted).

        Locally a symbolic link is listed as an entry of its own and never followed
        (pyarrow's listing follows links into directories outside the store), so
        ``verify`` reports it as a stray file and ``repair`` removes the link itself.
        """
        if self.is_local:
            return sorted(walk_nofollow(self.root, self._no_links(rel)))
        base = self.path(rel)
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        n = len(self.root) + 1
        return sorted(
            i.path[n:] for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File
        )

    # -- writing -----------------------------------------------------------------------
    def write_atomic(self, rel: str, data: bytes | pa.Buffer, *, mode: int = 0o644,
                     durable: bool = True, fsync_file: bool = False,
                     deferrable: bool = False, commit: bool = False) -> None:
        """Write a whole file so that readers see the old bytes or the new, never a mix.

        Locally the bytes go to a temporary file in ``<root>/.tmp/`` first, so a writer
        killed before its rename leaves its debris in one folder that the next writer
        clears (:meth:`clear_temp`) without listing the whole store. With ``durable``
        (the default) the file and its directory entry are fsynced before returning;
        ``fsync_file`` alone fsyncs the file only. A ``deferrable`` write (a file that only
        a later manifest names) inside a :meth:`batch` leaves its fsyncs to the batch's
        grouped round; any other write is durable when it returns. A ``commit`` write
        (a manifest's root) is the batch's commit point: its bytes are fsynced in the
        batch's round, with every file it names and their folders, and renamed into place
        after it (:func:`sisa.store.io.localfs.publish`)."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        if self.is_local:
            self._no_links(rel)  # not through a linked directory, not onto a link
            self._no_links(TEMP_DIR)  # nor through a planted .tmp link
            deferred = durable and deferrable and localfs.batching()
            makedirs_durable(parent, defer=deferred)
            makedirs_durable(self.path(TEMP_DIR), defer=deferred or commit)
            tmp = self.path(f"{TEMP_DIR}/{os.getpid()}-{secrets.token_hex(6)}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
                with open(fd, "wb") as f:
                    f.write(memoryview(data))
                    f.flush()
                    if (durable and not deferred and not commit) or fsync_file:
                        localfs.fsync_fd(f.fileno())
                if commit:  # fsynced with the batch, renamed after it
                    localfs.publish(tmp, target)
                else:
                    os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            if deferred:
                localfs.make_durable(target)  # by the batch's round, with its folder
            elif durable and not commit:
                fsync_dir(parent)
        else:
            if not self.is_flat:  # HDFS has real directories; S3/GCS need no markers
                self.fs.create_dir(parent, recursive=True)
            # One PutObject below the part size, else a multipart upload that appears
            # only when completed: either way readers see the old object or the new.
            with self.fs.open_output_stream(target) as f:
                f.write(data)

    def write_many(self, files: list[tuple[str, bytes]]) -> None:
        """:meth:`write_atomic` for several files, made durable together (:meth:`batch`)."""
        with self.batch():
            for rel, data in files:
                self.write_atomic(rel, data, deferrable=True)

    def batch(self):
        """A context in which this thread's durable writes defer their fsyncs to one
        grouped round (:func:`sisa.store.io.localfs.batched`); :meth:`flush` runs that round
        early (before a manifest that names the files). A no-op on object stores, whose
        PUTs are durable when they return."""
        return localfs.batched() if self.is_local else contextlib.nullcontext()

    @staticmethod
    def flush() -> None:
        """fsync what the current batch wrote (see :meth:`batch`)."""
        localfs.flush()

    def clear_temp(self) -> int:
        """Remove the temporary files of interrupted writes (local stores; object stores
        have none). Only a writer holding the store's lock may call it."""
        if not self.is_local:
            return 0
        try:
            names = os.listdir(self._no_links(TEMP_DIR))  # a .tmp link: refused, not emptied
        except FileNotFoundError:
            return 0
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(f"{TEMP_DIR}/{name}"))
        return len(names)

    def write_content(self, rel_dir: str, suffix: str, data: bytes | pa.Buffer) -> dict:
        """Store ``data`` under a name derived from its hash; returns the manifest entry
        ``{"file": relative path, "sha256": ..., "bytes": ...}``."""
        digest = sha256_bytes(data)
        rel = f"{rel_dir}/{digest[:32]}{suffix}"
        size = len(memoryview(data))
        info = self.info(rel)
        # same name, same size: the bytes of an earlier attempt (a retried task); skip.
        # Other sizes mean a damaged leftover: write it again.
        if info.type == pafs.FileType.NotFound or info.size != size:
            self.write_atomic(rel, data, deferrable=True)
            if self.is_local:
                self._vouch(rel, digest, size)
        elif self.is_local:  # an earlier attempt's file, perhaps from a batch that failed
            localfs.make_durable(self.path(rel))
        return {"file": rel, "sha256": digest, "bytes": size}

    def _vouch(self, rel: str, sha256: str, size: int) -> None:
        """Inside a :meth:`batch`, count a file this thread just wrote from bytes it hashed
        as verified until the batch ends (see :meth:`read_verified`): a forget's retrain
        reads back the slice it wrote without hashing it again. The stamp is taken after
        the rename: a later write to the file changes it. Not kept past the batch: file
        times are coarse (a jiffy), so a same-size write soon after could keep the
        stamp, and reads after the batch hash as before."""
        if not localfs.batching():
            return
        try:  # the path's folders were checked for links by the write just made
            st = os.lstat(self.path(rel))
        except OSError:
            return
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            localfs.vouch((self.path(rel), sha256),
                          (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))

    def size(self, rel: str) -> int:
        """A local file's size in bytes, 0 if it does not exist (no links followed)."""
        try:
            return os.lstat(self._no_links(rel)).st_size
        except FileNotFoundError:
            return 0

    def append_line(self, rel: str, line: str, *, durable: bool = True) -> None:
        """Append one line (read-modify-PUT on object stores). Locally it is fsynced unless
        not ``durable``: then the caller makes it durable later (:meth:`sync_later`); a
        file it creates is made durable, folder entry included, either way."""
        payload = (line.rstrip("\n") + "\n").encode()
        if self.is_local:
            target = self._no_links(rel)
            makedirs_durable(os.path.dirname(target))
            new = not os.path.lexists(target)
            with open(localfs.open_append(target), "ab") as f:
                f.write(payload)
                f.flush()
                if durable or new:
                    localfs.fsync_fd(f.fileno())
            if new:
                fsync_dir(os.path.dirname(target))
        else:
            old = self.read_bytes(rel).to_pybytes() if self.exists(rel) else b""
            self.write_atomic(rel, old + payload)

    def sync_later(self, rel: str) -> None:
        """fsync the data of a local file whose folder entry is durable (one
        :meth:`append_line` made): in the current :meth:`batch`'s round, or now. No-op
        for a missing file and on object stores."""
        if self.is_local and self.exists(rel):
            localfs.make_durable(self._no_links(rel), folder=False)

    def delete(self, rel: str) -> None:
        """Delete one file. Locally a link is removed itself (``unlink`` never follows
        the last component); a linked directory on the way is refused, so a delete
        never reaches outside the store."""
        if self.is_local:
            path = self._no_links(rel, final=False)
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(path)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def delete_all(self) -> None:
        if self.fs.get_file_info(self.root).type == pafs.FileType.NotFound:
            return
        if self.is_local:  # rmtree removes links, never what they point to
            shutil.rmtree(self.root)
            return
        if not self.is_local and "/" not in self.root:  # a whole bucket: keep the bucket
            self.fs.delete_dir_contents(self.root)
        else:
            self.fs.delete_dir(self.root)

    def file_infos(self, rel: str = "") -> dict[str, pafs.FileInfo]:
        """Every file below ``rel`` (relative path -> ``FileInfo``) from one recursive
        listing: on object stores far cheaper than a HEAD request per file."""
        if self.is_local:
            return {r: self.info(r) for r in self.list_files(rel)
                    if not os.path.islink(self.path(r))}
        sel = pafs.FileSelector(self.path(rel), recursive=True, allow_not_found=True)
        n = len(self.root) + 1
        return {i.path[n:]: i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File}


    def open_lock_fd(self, rel: str = ".lock") -> int:
        """Open (creating) the local lock file for reading and writing, never through a
        link: a ``.lock`` link planted in the store would otherwise have its target
        truncated and overwritten by the next writer."""
        path = self._no_links(rel, final=False)
        os.makedirs(self.root, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise link_error(path) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafePathError(f"{path} is not a regular file: remove it (rm {path}); sisa "
                                  "recreates its lock file")
        return fd


TEMP_DIR = ".tmp"
# (path, sha256) -> stat stamp of files this process hash-checked (see read_verified)
_VERIFIED: dict[tuple[str, str], tuple] = {}
_MAX_VERIFIED = 200_000
_REREAD_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # ~3 s in all, then give up
