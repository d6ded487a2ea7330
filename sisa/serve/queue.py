"""The durable erasure queue: one file per accepted request, in the store, each carrying a
MAC only the service can compute."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass

from ..errors import CorruptStoreError
from ..store import Store
from ..store.format.layout import QUEUE_FILE
from ..store.manifest.journal import Fields, is_sample_id, is_str, list_of, put

MAC_LABEL = b"sisa-serve-queue/1"  # the queue key is the audit key's, for this use only


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEntry:
    """One accepted erasure request, as its queue file holds it (less its ``mac``):
    queued with its raw ids, or failed with its reason (and no ids)."""

    request_id: str
    queued_at: str
    ids: tuple[int | str, ...] | None = None
    failed: str | None = None

    def __post_init__(self) -> None:
        if (self.ids is None) == (self.failed is None):
            raise ValueError("a queue entry holds ids (queued) or a reason (failed)")

    def to_json(self) -> dict:
        return put({"request_id": self.request_id, "queued_at": self.queued_at},
                   ids=None if self.ids is None else list(self.ids), failed=self.failed)

    @classmethod
    def from_json(cls, obj: object, where: str = "a queue file") -> QueueEntry:
        f = Fields(f"{where} (a queued erasure request)", obj,
                   fix="it was damaged or edited; nothing in the queue was run. Move it out of "
                       "the store, then start again")
        rid, at = f.req("request_id", is_str), f.req("queued_at", is_str)
        ids, failed = f.opt("ids", list_of(is_sample_id)), f.opt("failed", is_str)
        f.done()
        if (ids is None) == (failed is None):
            raise f.fail("must hold either field 'ids' or field 'failed'")
        return cls(request_id=rid, queued_at=at, ids=ids, failed=failed)


class ErasureQueue:
    """Accepted erasure requests as files ``<store>/queue/<request id>.json``.

    Each file is written with the store's atomic write (temporary file, fsync, rename,
    fsync of the directory) before the service answers 202, so an accepted request
    survives a crash. A file holds only what processing needs: the request id, when it
    was accepted and its raw ids (like ``audit/intent.json``); it is deleted once the
    receipt naming the request is committed. A request that failed keeps a file with its
    reason and no ids, so its status survives a restart.

    Every file carries ``mac``: an HMAC-SHA256 of its other fields under a key derived
    from the store's audit key. In a signed store that key comes from the owner's key
    file, so someone who can write the storage but lacks the key cannot plant or edit a
    request: :meth:`entries` refuses the whole queue instead of running it. In an
    unsigned store the audit key sits in the store, so this catches accidents only.

    Parameters
    ----------
    store : Store
        The store whose ``queue/`` holds the requests.
    io_lock : threading.Lock
        Held around every queue write (see :meth:`Service._locked
        <sisa.serve.service.Service._locked>`).
    """

    def __init__(self, store: Store, io_lock: threading.Lock) -> None:
        self.store = store
        # The store's lock holder clears <store>/.tmp (debris of killed writers) when it
        # takes the lock: a queue write in flight must not race that, within this process.
        self.io_lock = io_lock
        self._key: bytes | None = None

    def key(self) -> bytes:
        """The queue's MAC key (raises :class:`~sisa.errors.KeyFileError` when a signed
        store's owner key is not configured here)."""
        if self._key is None:
            self._key = hmac.new(self.store.audit.key(), MAC_LABEL, hashlib.sha256).digest()
        return self._key

    def mac(self, entry: dict) -> str:
        """The MAC of an entry's fields other than ``mac`` (JSON, as the file holds it)."""
        body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True,
                          separators=(",", ":")).encode()
        return hmac.new(self.key(), body, hashlib.sha256).hexdigest()

    @staticmethod
    def rel(request_id: str) -> str:
        """The queue file of a request, relative to the store."""
        return f"queue/{request_id}.json"

    def put(self, entry: QueueEntry) -> None:
        """Write (or replace) a request's file durably, with its MAC."""
        body = entry.to_json()
        doc = {**body, "mac": self.mac(body)}
        with self.io_lock:
            self.store.loc.write_atomic(self.rel(entry.request_id),
                                        json.dumps(doc, sort_keys=True).encode())

    def remove(self, request_id: str) -> None:
        """Delete a request's file (its receipt is committed)."""
        with self.io_lock:
            self.store.loc.delete(self.rel(request_id))

    def entries(self) -> list[QueueEntry]:
        """Every queued request, oldest first; each checked before any is returned.

        Raises
        ------
        CorruptStoreError
            A queue file is damaged, or was planted or edited by someone without the
            key (its MAC does not check): nothing of the queue may run.
        """
        out = []
        for rel in self.store.loc.list_files("queue"):
            if QUEUE_FILE.fullmatch(rel):
                out.append(self._checked(rel))
        return sorted(out, key=lambda e: e.queued_at)

    def _checked(self, rel: str) -> QueueEntry:
        path = self.store.loc.path(rel)
        try:
            entry = json.loads(self.store.loc.read_bytes(rel).to_pybytes())
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise CorruptStoreError(
                f"{path} is not a queued request ({str(exc)[:80]}): it was damaged or "
                "edited; nothing in the queue was run. Move it out of the store, then start "
                "again") from None
        mac = entry.pop("mac", None)
        typed = QueueEntry.from_json(entry, str(path))  # a missing or ill-typed field: named
        if not (isinstance(mac, str) and mac.isascii()
                and hmac.compare_digest(mac.encode(), self.mac(typed.to_json()).encode())
                and typed.request_id == rel[6:-5]):
            raise CorruptStoreError(
                f"{path} is not a request this service accepted (its MAC does not check "
                "under the store's audit key): someone who can write the storage planted or "
                "edited it; nothing in the queue was run. Move it out of the store, then "
                "start again")
        return typed
