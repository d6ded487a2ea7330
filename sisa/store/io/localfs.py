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
from concurrent.futures import Future, ThreadPoolExecutor

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
                _current().start(os.path.dirname(d) or ".", True)
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
# :func:`batched`, a write does not wait for its own fsyncs. Each file's fsync and its
# folder's are started in a pool as soon as the file is renamed into place (they run
# beside whatever the batch does next: a forget's retrain), and :func:`flush` (run
# before a manifest's root is published, and when the outermost batch ends) waits for
# them and for the rest, the new root's temporary file included (:func:`publish`).
# Nothing orders files and folders among themselves: a folder's fsync covers the
# entries renamed into it before it starts, so a folder gets a new fsync only when one
# already under way might have missed an entry; what must follow them all is only the
# root's rename, after the wait. Concurrent fsyncs share the disk's flushes, so what the
# commit waits for is about one fsync's latency, less what ran during the retrain. A
# batch belongs to the thread that opened it; a helper thread the owner hands work to
# (:func:`beside`) joins it (:func:`joined`), so its files are in the same round.
_PENDING = threading.local()  # .batch: this thread's open batch (None: no batch)
_POOL: ThreadPoolExecutor | None = None
_WRITER: ThreadPoolExecutor | None = None


class _Batch:
    """One group commit's outstanding work, shared by the threads that joined it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.syncs: list[Future] = []  # fsyncs started (files and folders)
        self.queued: dict[str, Future] = {}  # folder -> its fsync, not yet begun
        self.handed: list[tuple] = []  # writes for the writer thread, not yet released
        self.writes: list[Future] = []  # writes released to the writer thread (beside)
        self.vouched: dict[tuple, tuple] = {}  # see vouch
        self.staged: dict[tuple, object] = {}  # (path, sha256) -> bytes being written
        self.late: dict[tuple[str, bool], None] = {}  # fsyncs held for the wait (held)
        self.held = 0  # > 0: fsyncs are held (held)
        self.n = 0  # fsyncs issued

    def start(self, path: str, folder: bool, now: bool = False) -> None:
        """Start the fsync of ``path`` (unless :func:`held`, and not ``now``); a folder's
        is shared with one queued, not begun."""
        with self.lock:
            if self.held and not now:
                self.late.setdefault((path, folder))
                return
        with self.lock:
            if folder and path in self.queued:
                return
            if folder:
                def job(p=path):
                    with self.lock:
                        self.queued.pop(p, None)  # from here on it may miss a new entry
                    _fsync_path(p, directory=True)
            else:
                def job(p=path):
                    _fsync_path(p)
            fut = _pool().submit(job)
            self.n += 1
            self.syncs.append(fut)
            if folder:
                self.queued[path] = fut

    def release(self) -> None:
        """Submit the writes collected by :func:`beside`, in order, as one job."""
        with self.lock:
            todo, self.handed = self.handed, []
        if not todo:
            return

        def job():
            with joined(self):
                for fn, args in todo:
                    fn(*args)

        fut = _writer().submit(job)
        with self.lock:
            self.writes.append(fut)

    def settle(self) -> None:
        """Wait for the writes handed off so far (raising the first error)."""
        self.release()
        while True:
            with self.lock:
                if not self.writes:
                    return
                todo, self.writes = self.writes, []
            _wait_all(todo)

    def wait(self) -> None:
        """Wait for every write and fsync started so far (raising the first error)."""
        self.settle()
        with self.lock:
            late, self.late = list(self.late), {}
        for path, folder in late:  # the held ones, together (see held)
            self.start(path, folder, now=True)
        with self.lock:
            todo, self.syncs = self.syncs, []
            n, self.n = self.n, 0
        with _waiting(n):
            _wait_all(todo)


@contextlib.contextmanager
def held():
    """Inside, this thread's batch holds the fsyncs of what is written until its wait,
    then starts them together: for files written just before a commit (a manifest's
    leaves), whose fsyncs cannot run beside anything; started one by one they would
    spread over more of the disk's flushes than one round does."""
    batch = _current()
    if batch is None:
        yield
        return
    with batch.lock:
        batch.held += 1
    try:
        yield
    finally:
        with batch.lock:
            batch.held -= 1


def _wait_all(futures: list[Future]) -> None:
    """Wait for all of ``futures`` (none is left running), then raise the first error."""
    errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


def _current() -> _Batch | None:
    return getattr(_PENDING, "batch", None)


@contextlib.contextmanager
def batched():
    """Defer waiting for the fsyncs of local writes made in this thread to one
    :func:`flush`. Nested batches join the outermost; an error inside waits for the
    writes handed off and the fsyncs started (none is left running) and drops the held
    ones (what a failed step wrote is never committed)."""
    if batching():
        yield
        return
    batch = _PENDING.batch = _Batch()
    try:
        yield
        flush()
    finally:
        _PENDING.batch = None
        batch.handed.clear()  # after an error: writes not released never start
        with contextlib.suppress(Exception):  # the error raised is the step's
            batch.settle()
        with batch.lock:  # nor do the fsyncs started: no work outlives the batch
            left = batch.syncs
        with contextlib.suppress(Exception):
            _wait_all(left)


@contextlib.contextmanager
def joined(batch: _Batch | None):
    """Make ``batch`` (:func:`current_batch` of the thread that hands this one work) this
    thread's batch while inside: its writes are made durable by that batch's round."""
    if batch is None or _current() is batch:
        yield
        return
    outer, _PENDING.batch = _current(), batch
    try:
        yield
    finally:
        _PENDING.batch = outer


def current_batch() -> _Batch | None:
    """This thread's batch, for :func:`joined` in a helper thread (None: no batch)."""
    return _current()


def batching() -> bool:
    """Whether this thread is in a :func:`batched` block."""
    return _current() is not None


def beside(fn, *args) -> None:
    """Have ``fn(*args)`` run on the writer thread, inside this thread's batch, once
    :func:`release` hands it over: :func:`settle` and :func:`flush` (so every commit of
    the batch) release and wait for it. Runs it here, now, outside a batch. ``fn``
    writes files; it must not flush or publish (it would wait for itself)."""
    batch = _current()
    if batch is None:
        fn(*args)
        return
    with batch.lock:
        batch.handed.append((fn, args))


def release() -> None:
    """Hand the writes :func:`beside` collected to the writer thread, in one job: they
    run while this thread goes on (a forget's retrain), not while it is still
    serializing and hashing the next files."""
    batch = _current()
    if batch is not None:
        batch.release()


def settle() -> None:
    """Wait for the writes this thread's batch handed off (:func:`beside`)."""
    batch = _current()
    if batch is not None:
        batch.settle()


def vouch(key: tuple, stamp: tuple) -> None:
    """Record, for this batch only, that the file ``key = (path, sha256)`` with this
    stamp holds bytes this thread hashed to that sha256 as it wrote them."""
    batch = _current()
    if batch is not None:
        with batch.lock:
            batch.vouched[key] = stamp


def vouched(key: tuple) -> tuple | None:
    """The stamp :func:`vouch` recorded for ``key`` in this thread's batch, or None."""
    batch = _current()
    return None if batch is None else batch.vouched.get(key)


def stage_bytes(key: tuple, data) -> None:
    """Record, for this batch only, the bytes (hashed here to ``key = (path, sha256)``)
    being written to ``path`` beside the caller: :func:`staged` serves them meanwhile."""
    batch = _current()
    if batch is not None:
        with batch.lock:
            batch.staged[key] = data


def staged(key: tuple):
    """The bytes :func:`stage_bytes` recorded for ``key`` in this thread's batch, or None."""
    batch = _current()
    return None if batch is None else batch.staged.get(key)


def make_durable(path: str, folder: bool = True) -> None:
    """fsync ``path`` (written) and, with ``folder``, its folder: started now and waited
    for by the current batch's :func:`flush`, or now outside a batch."""
    batch = _current()
    if batch is None:
        _sync([path] if folder else [], [] if folder else [(path, False)])
        return
    batch.start(path, False)
    if folder:
        batch.start(os.path.dirname(path), True)


def flush() -> None:
    """Make every write of the current batch durable (no-op without one)."""
    batch = _current()
    if batch is not None:
        batch.wait()


def publish(tmp: str, target: str) -> None:
    """Commit point of a batch: ``tmp`` (written, not yet fsynced) is fsynced with what
    is left of the batch's round (every file and folder of the batch), and only then is
    ``tmp`` renamed onto ``target`` and ``target``'s folder fsynced. Two waits for the
    whole commit: what the root names is durable before the rename that publishes it,
    and the rename before this returns. ``tmp``'s own folder is not fsynced: the
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


def _writer() -> ThreadPoolExecutor:
    """One thread for the writes handed off (:func:`beside`): they run in order."""
    global _WRITER
    if _WRITER is None:
        _WRITER = ThreadPoolExecutor(1, thread_name_prefix="sisa-write")
    return _WRITER


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
    """A forked child has none of the pools' threads: it makes its own."""
    global _POOL, _WRITER
    _POOL = _WRITER = None


os.register_at_fork(after_in_child=_forget_pool)
