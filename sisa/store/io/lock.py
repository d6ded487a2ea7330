"""The store's write lock: one writer per store, on a local disk or an object store.

Locally an ``flock`` on ``<store>/.lock``, released by the kernel if the holder dies, so
a crashed writer never leaves the store locked. Object stores have no ``flock``;
:class:`ObjectLock` stands in for it there (a ``.lock`` object with an owner token, a
settle-and-read-back check, a heartbeat, and a token re-check before every manifest
commit). :class:`WriteLock` picks one and is what :meth:`sisa.store.Store.lock` holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import threading
import time

from ...errors import CorruptStoreError, StoreLockedError
from .fs import Location


class WriteLock:
    """An acquired write lock on a store location (see the module doc).

    Parameters
    ----------
    loc : Location
    uri : str
        Named in the errors.
    since : str
        When it was taken (written into ``.lock`` for whoever is refused).
    """

    def __init__(self, loc: Location, uri: str, since: str) -> None:
        self.loc, self.uri = loc, uri
        self._fd: int | None = None
        self._object: ObjectLock | None = None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        if loc.is_local:
            fd = loc.open_lock_fd()  # O_NOFOLLOW: a planted .lock link is refused
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise StoreLockedError(_locked_message(uri, info)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            self._fd = fd
        else:  # object store: token + settle/read-back + heartbeat
            self._object = ObjectLock(loc, uri)
            self._object.acquire(since)

    def check(self) -> None:
        """Raise :class:`StoreLockedError` if the lock was lost (object stores; a held
        ``flock`` cannot be)."""
        if self._object is not None:
            self._object.check()

    def release(self) -> None:
        if self._fd is not None:
            # an idle store's lock file is empty: a refused or failed command leaves every
            # byte of the store as it found it
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._object is not None:
            self._object.release()
            self._object = None


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


class ObjectLock:
    """A store's write lock on an object store, where there is no ``flock``.

    Protocol (``.lock`` holds ``{token, pid, host, since, t}``):

    1. If ``.lock`` exists, is fresh (rewritten within :attr:`ttl` seconds) and its
       holder is not a dead process on this host (same host name, boot and pid
       namespace), refuse with the holder's name.
    2. PUT our own ``.lock``, wait :attr:`settle` seconds, read it back: if another
       writer's token is there, it won the race and we refuse. (Without a
       compare-and-swap this closes the race unless a writer stalls longer than
       ``settle`` between its check and its PUT.)
    3. While held, a daemon thread rewrites ``.lock`` every :attr:`heartbeat` seconds,
       so a long training run never looks stale; a dead holder's lock goes stale
       after ``ttl``.
    4. :meth:`check` runs before every manifest commit: a writer whose lock was taken
       over commits nothing. :meth:`release` stops the heartbeat and deletes ``.lock``
       only if it is still ours.
    """

    ttl: float = 300.0
    heartbeat: float = 30.0
    settle: float = 0.5
    name: str = ".lock"

    def __init__(self, loc: Location, uri: str) -> None:
        self.loc, self.uri = loc, uri
        self.token = secrets.token_hex(16)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io = threading.Lock()  # heartbeat vs release

    # -- helpers ---------------------------------------------------------------------
    def _read(self) -> dict | None:
        """The current lock object, or None; unreadable content counts as a holder."""
        try:
            raw = self.loc.read_stable(self.name, _is_json_object)
        except (FileNotFoundError, CorruptStoreError):
            return None
        if _is_json_object(raw):
            return json.loads(raw)
        return {"t": time.time(), "raw": raw[:200].decode(errors="replace")}

    def _write(self, since: str) -> None:
        body = {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                "ns": _pid_namespace(), "since": since, "t": time.time()}
        self.loc.write_atomic(self.name, json.dumps(body).encode())

    def _is_stale(self, info: dict) -> bool:
        if time.time() - float(info.get("t", 0)) > self.ttl:
            return True
        here = _pid_namespace()
        if (here and info.get("ns") == here and info.get("host") == socket.gethostname()
                and isinstance(info.get("pid"), int)):
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                return True  # its holder died on this very machine
            except OSError:
                return False
        return False

    def _refuse(self, info: dict, why: str = "") -> StoreLockedError:
        who = (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}"
               if "pid" in info else "another process")
        expiry = ""
        if "t" in info:
            at = time.strftime("%H:%M:%S", time.localtime(float(info["t"]) + self.ttl))
            expiry = f"; if it died, its lock expires at {at}"
        return StoreLockedError(
            f"store {self.uri} is locked by {who}{why}: wait for that job to finish (one writer "
            f"per store at a time){expiry}"
        )

    # -- protocol --------------------------------------------------------------------
    def acquire(self, since: str) -> None:
        """Take the lock or raise :class:`StoreLockedError`."""
        info = self._read()
        if info is not None and not self._is_stale(info):
            raise self._refuse(info)
        self._write(since)
        time.sleep(self.settle)
        info = self._read()
        if info is None or info.get("token") != self.token:
            raise self._refuse(info or {}, " (it took the lock at the same moment)")
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(since,), daemon=True,
                                        name=f"sisa-lock-heartbeat-{self.token[:6]}")
        self._thread.start()

    def _beat(self, since: str) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._io:
                if self._stop.is_set():
                    return
                try:
                    info = self._read()
                    if info is None or info.get("token") != self.token:
                        return  # released by delete_all, or taken over: check() will tell
                    self._write(since)
                except OSError:
                    continue  # transient; the next beat (or check()) tries again

    def check(self) -> None:
        """Raise unless ``.lock`` still carries our token (call before committing)."""
        with self._io:  # not while our own heartbeat is rewriting it
            info = self._read()
        if info is None or info.get("token") != self.token:
            raise StoreLockedError(
                f"store {self.uri}: this writer lost its lock (the lock object was "
                + ("removed" if info is None else
                   f"taken over by pid {info.get('pid')} on host {info.get('host')}")
                + "), so nothing more was committed; reopen the store and retry"
            )

    def release(self) -> None:
        """Stop the heartbeat and delete ``.lock`` if it is still ours."""
        self._stop.set()
        with self._io:
            pass  # wait for a beat in flight
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError):
            info = self._read()
            if info is not None and info.get("token") == self.token:
                self.loc.delete(self.name)


def live_holder(loc: Location) -> str | None:
    """Who holds the store's write lock, seen without taking it, or None if nobody alive
    does. A reader must not probe the ``flock`` itself: a writer's non-blocking attempt
    at that moment would be refused. Locally a holder writes ``{pid, host, since}`` into
    ``.lock`` once it has the lock and empties it before letting go; content left by a
    killed writer names a dead process. A holder on another host cannot be checked and
    counts as alive. On object stores: a fresh lock object (:class:`ObjectLock`)."""
    if not loc.is_local:
        probe = ObjectLock(loc, loc.uri)
        try:
            info = probe._read()
        except OSError as exc:  # a GET racing the object's replacement: ask again later
            return f"a lock object that could not be read ({str(exc)[:80]})"
        return None if info is None or probe._is_stale(info) else _who(info)
    try:
        fd = os.open(loc.path(".lock"), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None  # no lock file (or a planted link, which no writer can lock through)
    try:
        raw = os.pread(fd, 4096, 0)
    finally:
        os.close(fd)
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return "another process"
    if not isinstance(info, dict):
        return "another process"
    pid = info.get("pid")
    if info.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return None
    return _who(info)


def _who(info: dict) -> str:
    return (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}"
            if "pid" in info else "another process")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host's pid namespace runs (a zombie does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _pid_namespace() -> str:
    """This boot and pid namespace ("" where unknown): a pid means the same process
    only within them (containers on one host share its name, not its pids)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False
