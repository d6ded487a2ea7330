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
(:func:`sisa.store.io.lock.live_holder`) and no live process is writing a temporary file,
and keeps what it read only if that still holds afterwards and the committed manifest
did not change meanwhile; otherwise it looks again, a bounded number of times. What a
look at rest shows that does not belong is real: a killed writer's debris, a planted
file, an interrupted forget.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import manifest as mf
from ..io import localfs
from ..io.fs import TEMP_DIR, Location, MissingFileError
from ..io.lock import live_holder, pid_alive

# How often and how long :func:`look` waits for a moment at rest: a poll reads only the
# lock (a file locally, an object's GET elsewhere), so it can be frequent enough to catch
# the gap between two batches of a busy writer. ~20 s in all; a store never at rest for
# that long is reported as busy, never as damaged.
POLL_S = {"local": 0.005, "object": 0.05}
POLLS = {"local": 4000, "object": 400}


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
    file's stamp (:func:`sisa.store.io.localfs.file_stamp`), on object stores its head
    (the root's checksum)."""
    if loc.is_local:
        return localfs.file_stamp(loc.path(mf.MANIFEST))
    try:
        return loc.read_bytes(mf.MANIFEST).to_pybytes()[:80]
    except MissingFileError:
        return None


def busy(store, files: Sequence[str] = ()) -> str:
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


def look(store, polls: int | None = None) -> AtRest | str:
    """Reload ``store`` to the committed manifest at a moment the store is at rest and
    return what was seen then, or, if none of ``polls`` (default :data:`POLLS`) found it
    at rest, why not (the store is reloaded either way)."""
    kind = "local" if store.loc.is_local else "object"
    why = ""
    for i in range(POLLS[kind] if polls is None else polls):
        if i:
            time.sleep(POLL_S[kind])
        try:
            why = busy(store)
            if why:
                continue
            token = manifest_token(store.loc)
            store.reload()
            files = store.loc.list_files()
            rel = store.manifest.audit_files()["log"]
            log = store.loc.read_bytes(rel).to_pybytes() if rel in files else None
            why = busy(store, files) or ("" if manifest_token(store.loc) == token
                                         else "a commit landed while looking")
        except (MissingFileError, OSError) as exc:  # a commit meanwhile, or (object
            if store.loc.is_local and not isinstance(exc, MissingFileError):  # stores) a
                raise  # GET racing a replacement; a local OSError is no race
            why = f"a read failed while looking ({str(exc)[:80]})"
            continue
        if not why:
            return AtRest(files, log, token)
    with contextlib.suppress(MissingFileError):
        store.reload()
    return why


def missing(loc: Location, rel: str, attempts: int = 8) -> bool:
    """Whether ``rel`` is absent although the committed manifest names it (damage), as
    opposed to removed by a commit after a reader's manifest was read (not damage)."""
    for _ in range(attempts):
        try:
            token = manifest_token(loc)
            named = rel in mf.load(loc).referenced_files()
            gone = not loc.exists(rel)
            if manifest_token(loc) == token:
                return named and gone
        except (MissingFileError, OSError):
            continue  # a commit (or an object GET racing it) meanwhile: look again
    return False  # changing at every look: whoever reads it again will know


@dataclass
class Vanished:
    """Files found missing while reading one pinned generation at ``loc``, kept apart
    from the problems found until :meth:`settle` knows which are damage."""

    loc: Location
    found: list[tuple[list[str], str, str | None]] = field(default_factory=list)

    def failed(self, exc: Exception, problems: list[str], *, raise_damage: bool = False
               ) -> None:
        """Record a read's error: a :class:`MissingFileError` here until :meth:`settle`
        (``problems`` is where it goes if it is damage), any other in ``problems``. With
        ``raise_damage``, a file really missing is raised at once."""
        if not isinstance(exc, MissingFileError):
            problems.append(str(exc))
        elif raise_damage and (exc.rel is None or missing(self.loc, exc.rel)):
            raise exc
        else:
            self.found.append((problems, str(exc), exc.rel))

    @contextlib.contextmanager
    def reading(self, problems: list[str], *, raise_damage: bool = False):
        """Record a :class:`MissingFileError` of the block (see :meth:`failed`)."""
        try:
            yield
        except MissingFileError as exc:
            self.failed(exc, problems, raise_damage=raise_damage)

    def settle(self) -> int:
        """Put each file still named by the committed manifest into its problems (damage);
        return how many were removed by a newer commit (the read must be redone)."""
        moved = 0
        for problems, message, rel in self.found:
            if rel is None or missing(self.loc, rel):
                problems.append(message)
            else:
                moved += 1
        return moved
