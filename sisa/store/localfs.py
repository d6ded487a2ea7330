"""Local-disk primitives of :class:`sisa.store.fs.Location`: no-follow reads and walks
(a link planted under a store is never followed), and durable directory creation."""

from __future__ import annotations

import errno
import mmap
import os
import stat

import pyarrow as pa

from ..errors import CorruptStoreError


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
