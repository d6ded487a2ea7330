"""Local-disk primitives of :class:`sisa.store.io.fs.Location`: no-follow reads and walks
(a link planted under a store is never followed), durable directory creation, and
grouped fsyncs (:func:`batched`)."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from ...errors import CorruptStoreError


class UnsafePathError(CorruptStoreError):
    """A store path that leaves the store, or a symbolic link inside the store."""


def link_error(path: str) -> UnsafePathError:
    return UnsafePathError(
        f"{path} is a symbolic link inside the store: sisa never reads, writes or deletes "
        f"through links (they can point outside the store); remove the link (rm {path}) and "
        "restore the real file from backup if it was one")


def map_nofollow(path: str, stamped: bool = False):
    """Memory-map a regular file (zero-copy) opened with ``O_NOFOLLOW``. ``O_NONBLOCK``
    keeps a FIFO planted under a store's file name from hanging the reader. With
    ``stamped``, returns ``(buffer, (inode, size, mtime, ctime))``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_error(path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is not a regular file: it was replaced; remove it "
                                  f"(rm -r {path}) and restore the store's file from backup")
        size = st.st_size
        buf = (pa.py_buffer(b"") if size == 0 else
               pa.py_buffer(mmap.mmap(fd, size, access=mmap.ACCESS_READ)))
        if stamped:
            return buf, (st.st_ino, size, st.st_mtime_ns, st.st_ctime_ns)
        return buf
    finally:
        os.close(fd)


def walk_nofollow(root: str, base: str):
    """Paths (relative to ``root``) of every non-directory below ``base``, links
    included as entries and never followed."""
    if not os.path.lexists(base):
        return
    if not os.path.isdir(base) or os.path.islink(base):
        yield base[len(root) + 1:]
        return
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        rel = dirpath[len(root) + 1:]
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in filenames + links:
            yield f"{rel}/{name}" if rel else name




def makedirs_durable(path: str) -> None:
    """Create missing directories and fsync each new one's parent: a file fsynced
    inside a new directory is lost on power failure if the directory entry is."""
    missing = []
    p = path
    while p and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    if missing:
        os.makedirs(path, exist_ok=True)
        for d in reversed(missing):
            fsync_dir(os.path.dirname(d) or ".")


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Grouped durability. A file that only a later manifest will name need not be on disk
# before the next write starts, only before that manifest: inside :func:`batched`, writes
# skip their own fsyncs and :func:`flush` (run before a manifest's root is written, and
# when the outermost batch ends) fsyncs every file, then every folder they landed in, in
# parallel: two rounds of fsyncs instead of two per file.
_PENDING = threading.local()  # this thread's paths awaiting fsync (None: no batch)
_POOL: ThreadPoolExecutor | None = None


@contextlib.contextmanager
def batched():
    """Defer the fsyncs of local writes made in this thread to one :func:`flush`. Nested
    batches join the outermost; an error inside drops the pending list (what a failed
    step wrote is never committed)."""
    if batching():
        yield
        return
    _PENDING.paths = []
    try:
        yield
        flush()
    finally:
        _PENDING.paths = None


def batching() -> bool:
    """Whether this thread is in a :func:`batched` block."""
    return getattr(_PENDING, "paths", None) is not None


def make_durable(path: str) -> None:
    """fsync ``path`` (written) and its folder: with the current batch's :func:`flush`,
    or now outside a batch."""
    if batching():
        _PENDING.paths.append(path)
    else:
        _sync([path])


def flush() -> None:
    """Make every write of the current batch durable (no-op without one)."""
    paths = getattr(_PENDING, "paths", None)
    if paths:
        files = list(dict.fromkeys(paths))
        paths.clear()
        _sync(files)


def _sync(files: list[str]) -> None:
    """fsync the files, then their folders; several at a time in parallel threads."""
    global _POOL
    dirs = sorted({os.path.dirname(f) for f in files})
    if len(files) == 1:
        _fsync_file(files[0])
        fsync_dir(dirs[0])
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(8, thread_name_prefix="sisa-fsync")
    list(_POOL.map(_fsync_file, files))
    list(_POOL.map(fsync_dir, dirs))


def file_stamp(path: str) -> tuple | None:
    """A file's identity: device, inode, size, mtime and its first 80 bytes (a manifest's
    begin with its checksum, so the stamp changes with every commit even where a freed
    inode is reused and mtimes are coarse; the open also revalidates NFS attributes).
    None if it cannot be opened (missing, or a link: the caller's full read reports it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st, head = os.fstat(fd), os.pread(fd, 80, 0)
    finally:
        os.close(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, head


def _forget_pool() -> None:
    """A forked child has none of the pool's threads: it makes its own."""
    global _POOL
    _POOL = None


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


os.register_at_fork(after_in_child=_forget_pool)
