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
import time
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




def open_append(path: str) -> int:
    """A descriptor of ``path`` opened to append (created if missing), refusing a link
    or anything but a regular file (a planted FIFO: an error, not a hang)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_error(path) from None
        if exc.errno != errno.ENXIO:  # ENXIO: a FIFO nobody reads
            raise
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd is not None:
            os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file: remove it (rm {path}) and "
                              "restore the store's file from backup")
    os.set_blocking(fd, True)
    return fd


def makedirs_durable(path: str, defer: bool = False) -> None:
    """Create missing directories and fsync each new one's parent: a file fsynced
    inside a new directory is lost on power failure if the directory entry is. With
    ``defer`` (for a file whose own fsyncs are deferred) inside a :func:`batched` block,
    the parents join the batch's round of fsyncs, which runs before any root that
    names the file."""
    missing = []
    p = path
    while p and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    if missing:
        os.makedirs(path, exist_ok=True)
        for d in reversed(missing):
            if defer and batching():
                _PENDING.more.append((os.path.dirname(d) or ".", True))
            else:
                fsync_dir(os.path.dirname(d) or ".")


# -- fsync accounting. Every fsync sisa makes locally goes through :func:`fsync_fd`,
# :func:`fsync_dir` or a batch's rounds, which tally (per thread: a forget's own count,
# whatever other threads of the process do) how many were issued and how long the
# thread waited for them. A round's fsyncs run in parallel: its wait is the round's.
_TALLY = threading.local()


def fsync_tally() -> tuple[int, float]:
    """``(fsyncs issued, seconds waited for them)`` by this thread so far, the parallel
    rounds of its batches included (each fsync of a round counts, the round's wall time
    is the wait)."""
    return getattr(_TALLY, "n", 0), getattr(_TALLY, "s", 0.0)


@contextlib.contextmanager
def _waiting(n: int):
    t = time.perf_counter()
    try:
        yield
    finally:
        _TALLY.n = getattr(_TALLY, "n", 0) + n
        _TALLY.s = getattr(_TALLY, "s", 0.0) + time.perf_counter() - t


def fsync_fd(fd: int) -> None:
    """``os.fsync`` of an open file, tallied."""
    with _waiting(1):
        os.fsync(fd)


def fsync_dir(path: str) -> None:
    """fsync a directory (its entries: files created, renamed into or removed from it),
    tallied. A directory that cannot be opened is skipped (nothing was written there)."""
    with _waiting(1):
        _fsync_path(path, directory=True)


def _fsync_path(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (0 if directory else os.O_NOFOLLOW))
    except OSError:
        if not directory:
            raise
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Grouped durability (a group commit). A file that only a later manifest will name need
# not be on disk before the next write starts, only before that manifest: inside
# :func:`batched`, writes skip their own fsyncs and :func:`flush` (run before a
# manifest's root is published, and when the outermost batch ends) makes them durable
# in one parallel round: every file's data (the new root's temporary file included,
# :func:`publish`) and every folder that got a new entry, each once. Files and folders
# share the round because nothing orders them: a content file was renamed into its
# folder before the round, and what must follow both is only the root's rename, after
# the round. Concurrent fsyncs share the disk's flushes, so a round costs about one
# fsync's latency whatever its size. The count of fsyncs is what POSIX asks (each new
# file's data, each folder holding a new entry); the waits are one round, then the
# root's folder, instead of two per file.
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
    # paths: files fsynced with their folder; more: (path, is a folder) fsynced alone;
    # vouched: files written in the batch from bytes hashed then (see vouch)
    _PENDING.paths, _PENDING.more, _PENDING.vouched = [], [], {}
    try:
        yield
        flush()
    finally:
        _PENDING.paths = _PENDING.more = _PENDING.vouched = None


def batching() -> bool:
    """Whether this thread is in a :func:`batched` block."""
    return getattr(_PENDING, "paths", None) is not None


def vouch(key: tuple, stamp: tuple) -> None:
    """Record, for this batch only, that the file ``key = (path, sha256)`` with this
    stamp holds bytes this thread hashed to that sha256 as it wrote them."""
    if batching():
        _PENDING.vouched[key] = stamp


def vouched(key: tuple) -> tuple | None:
    """The stamp :func:`vouch` recorded for ``key`` in this thread's batch, or None."""
    table = getattr(_PENDING, "vouched", None)
    return None if table is None else table.get(key)


def make_durable(path: str, folder: bool = True) -> None:
    """fsync ``path`` (written) and, with ``folder``, its folder: with the current
    batch's :func:`flush`, or now outside a batch."""
    if batching():
        if folder:
            _PENDING.paths.append(path)
        else:
            _PENDING.more.append((path, False))
    else:
        _sync([path] if folder else [], [] if folder else [(path, False)])


def flush() -> None:
    """Make every write of the current batch durable (no-op without one)."""
    if batching() and (_PENDING.paths or _PENDING.more):
        files, more = list(_PENDING.paths), list(_PENDING.more)
        _PENDING.paths.clear(), _PENDING.more.clear()
        _sync(files, more)


def publish(tmp: str, target: str) -> None:
    """Commit point of a batch: ``tmp`` (written, not yet fsynced) is fsynced in the
    batch's round with every file and folder of the batch, and only then is ``tmp``
    renamed onto ``target`` and ``target``'s folder fsynced. Two waits for the whole
    commit: what the root names is durable before the rename that publishes
    it, and the rename before this returns. ``tmp``'s own folder is not fsynced: the
    rename removes its entry there."""
    with batched():
        make_durable(tmp, folder=False)
        flush()
    os.replace(tmp, target)
    fsync_dir(os.path.dirname(target))


def each(fn, items: list, parallel: bool = True) -> None:
    """``fn(item)`` for every item, several at a time in the fsync pool's threads when
    ``parallel`` and there are several (errors propagate; all are attempted)."""
    if not parallel or len(items) < 2:
        for item in items:
            fn(item)
        return
    list(_pool().map(fn, items))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(16, thread_name_prefix="sisa-fsync")
    return _POOL


def _sync(files: list[str], more: list[tuple[str, bool]]) -> None:
    """fsync ``files`` and their folders, and ``more`` (``(path, is a folder)``), each
    once, in one parallel round."""
    jobs = list(dict.fromkeys([(f, False) for f in files] + more
                              + [(os.path.dirname(f), True) for f in files]))
    with _waiting(len(jobs)):
        if len(jobs) <= 2:  # one file and its folder: no thread hand-off
            for job in jobs:
                _fsync_path(*job)
            return
        list(_pool().map(lambda job: _fsync_path(*job), jobs))


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


os.register_at_fork(after_in_child=_forget_pool)
