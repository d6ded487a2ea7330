"""The durable erasure queue: one file per accepted request, in the store, each carrying a
MAC only the service can compute."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading

from ..errors import CorruptStoreError
from ..store import Store
from ..store.format.layout import QUEUE_FILE

MAC_LABEL = b"sisa-serve-queue/1"  # the queue key is the audit key's, for this use only
FIELDS = {frozenset({"request_id", "queued_at", "ids"}),  # queued
          frozenset({"request_id", "queued_at", "failed"})}  # failed, with its reason


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
        """The MAC of an entry's fields other than ``mac``."""
        body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True,
                          separators=(",", ":")).encode()
        return hmac.new(self.key(), body, hashlib.sha256).hexdigest()

    @staticmethod
    def rel(request_id: str) -> str:
        """The queue file of a request, relative to the store."""
        return f"queue/{request_id}.json"

    def put(self, entry: dict) -> None:
        """Write (or replace) a request's file durably, with its MAC."""
        doc = {**entry, "mac": self.mac(entry)}
        with self.io_lock:
            self.store.loc.write_atomic(self.rel(entry["request_id"]),
                                        json.dumps(doc, sort_keys=True).encode())

    def remove(self, request_id: str) -> None:
        """Delete a request's file (its receipt is committed)."""
        with self.io_lock:
            self.store.loc.delete(self.rel(request_id))

    def entries(self) -> list[dict]:
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
        return sorted(out, key=lambda e: e["queued_at"])

    def _checked(self, rel: str) -> dict:
        path = self.store.loc.path(rel)
        try:
            entry = json.loads(self.store.loc.read_bytes(rel).to_pybytes())
            if not isinstance(entry, dict) or frozenset(entry) - {"mac"} not in FIELDS:
                raise ValueError("not the fields of a queued request")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise CorruptStoreError(
                f"{path} is not a queued request ({str(exc)[:80]}): it was damaged or "
                "edited; nothing in the queue was run. Move it out of the store, then start "
                "again") from None
        mac = entry.get("mac")
        if not (isinstance(mac, str) and mac.isascii()
                and hmac.compare_digest(mac.encode(), self.mac(entry).encode())
                and entry["request_id"] == rel[6:-5]):
            raise CorruptStoreError(
                f"{path} is not a request this service accepted (its MAC does not check "
                "under the store's audit key): someone who can write the storage planted or "
                "edited it; nothing in the queue was run. Move it out of the store, then "
                "start again")
        return entry
