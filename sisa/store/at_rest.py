"""Reading a whole store while writers commit: one generation, seen at rest.

A reader takes no lock, so a check of a whole store (``sisa verify``) can meet two
things a live writer does that are not damage:

- a commit of generation g+1 deletes files only g named, perhaps before the reader,
  still on g, opens them (:class:`Vanished` tells that from a file really missing);
- a change in progress shows as files no manifest names yet (new slices and
  checkpoints being written), ``audit/intent.json``, a journaled run, or an audit log
  one receipt behind the commit that the writer is about to append.

:func:`look` takes the second kind of check only at rest: it reads the committed
manifest, the list of files and the audit log when nobody alive holds the write lock
(:func:`sisa.store.lock.live_holder`) and no live process is writing a temporary file,
and keeps what it read only if that still holds afterwards and the committed manifest
did not change meanwhile; otherwise it looks again, a bounded number of times. What a
look at rest shows that does not belong is real: a killed writer's debris, a planted
file, an interrupted forget.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

from . import localfs
from . import manifest as mf
from .fs import TEMP_DIR, Location, MissingFileError
from .lock import live_holder, pid_alive

# Pauses between looks: ~20 s in all, so a writer's longest batch usually ends within
# them; a store never at rest for that long is reported as busy, never as damaged.
LOOK_DELAYS = (0.005, 0.01, 0.02, 0.05) + (0.1,) * 10 + (0.25,) * 20 + (1.0,) * 14


@dataclass(frozen=True)
class AtRest:
    """What :func:`look` saw at rest: every file below the store, the audit log's bytes
    (None: no log yet) and the committed manifest's identity (:func:`manifest_token`);
    the manifest itself is the store's ``manifest``."""

    files: list[str]
    log: bytes | None
    token: object


def manifest_token(loc: Location):
    """An identity of the committed manifest that changes with every commit: locally the
    file's stamp (:func:`sisa.store.localfs.file_stamp`), on object stores its head
    (the root's checksum)."""
    if loc.is_local:
        return localfs.file_stamp(loc.path(mf.MANIFEST))
    try:
        return loc.read_bytes(mf.MANIFEST).to_pybytes()[:80]
    except MissingFileError:
        return None


def busy(store, files: list[str] = ()) -> str:
    """Why the store is not at rest ("" if it is): the write lock is held by a live
    process other than ``store`` itself, or a live process is writing one of ``files``
    (a temporary file ``.tmp/<pid>-...``; `sisa serve` writes queue files this way
    without the lock)."""
    if store._lock_depth and store._lock_owner == threading.get_ident():
        return ""  # this thread holds the lock: no other writer can be at work
    holder = live_holder(store.loc)
    if holder:
        return f"the write lock is held by {holder}"
    for rel in files:
        pid = rel[len(TEMP_DIR) + 1:].split("-", 1)[0] if rel.startswith(TEMP_DIR + "/") else ""
        if pid.isdigit() and pid_alive(int(pid)):
            return f"pid {pid} is writing {rel}"
    return ""


def look(store, delays: tuple[float, ...] | None = None) -> AtRest | str:
    """Reload ``store`` to the committed manifest at a moment the store is at rest and
    return what was seen then, or, if no look found it at rest, why not (each pause of
    ``delays``, default :data:`LOOK_DELAYS`, is one more look; the store is reloaded
    either way)."""
    why = ""
    for delay in (*(LOOK_DELAYS if delays is None else delays), None):
        why = busy(store)
        if not why:
            token = manifest_token(store.loc)
            try:
                store.reload()
                files = store.loc.list_files()
                rel = store.manifest.audit_files()["log"]
                log = store.loc.read_bytes(rel).to_pybytes() if rel in files else None
            except MissingFileError:
                why = "a file vanished while looking"  # a commit meanwhile: look again
            else:
                why = busy(store, files) or ("" if manifest_token(store.loc) == token
                                             else "a commit landed while looking")
                if not why:
                    return AtRest(files, log, token)
        if delay is None:
            break
        time.sleep(delay)
    with contextlib.suppress(MissingFileError):
        store.reload()
    return why


def missing(loc: Location, rel: str, attempts: int = 8) -> bool:
    """Whether ``rel`` is absent although the committed manifest names it (damage), as
    opposed to removed by a commit after a reader's manifest was read (not damage)."""
    for _ in range(attempts):
        token = manifest_token(loc)
        named = rel in mf.load(loc).referenced_files()
        gone = not loc.exists(rel)
        if manifest_token(loc) == token:
            return named and gone
    return False  # changing at every look: whoever reads it again will know


@dataclass
class Vanished:
    """Files found missing while reading one pinned generation, kept apart from the
    problems found until :meth:`settle` knows which are damage."""

    found: list[tuple[list[str], str, str | None]] = field(default_factory=list)

    def failed(self, exc: Exception, problems: list[str]) -> None:
        """Record a read's error: a :class:`MissingFileError` here until :meth:`settle`
        (``problems`` is where it goes if it is damage), any other in ``problems``."""
        if isinstance(exc, MissingFileError):
            self.found.append((problems, str(exc), exc.rel))
        else:
            problems.append(str(exc))

    @contextlib.contextmanager
    def reading(self, problems: list[str]):
        """Record a :class:`MissingFileError` of the block instead of raising it."""
        try:
            yield
        except MissingFileError as exc:
            self.failed(exc, problems)

    def settle(self, loc: Location) -> int:
        """Put each file still named by the committed manifest into its problems (damage);
        return how many were removed by a newer commit (the read must be redone)."""
        moved = 0
        for problems, message, rel in self.found:
            if rel is None or missing(loc, rel):
                problems.append(message)
            else:
                moved += 1
        return moved
