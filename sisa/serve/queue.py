"""The durable erasure queue: one file per accepted request, in the store."""

from __future__ import annotations

import json
import threading

from ..errors import SisaError
from ..store import Store
from ..store.layout import QUEUE_FILE


class ErasureQueue:
    """Accepted erasure requests as files ``<store>/queue/<request id>.json``.

    Each file is written with the store's atomic write (temporary file, fsync, rename,
    fsync of the directory) before the service answers 202, so an accepted request
    survives a crash. A file holds only what processing needs: the request id, when it
    was accepted and its raw ids (like ``audit/intent.json``); it is deleted once the
    receipt naming the request is committed. A request that failed keeps a file with its
    reason and no ids, so its status survives a restart.

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

    @staticmethod
    def rel(request_id: str) -> str:
        """The queue file of a request, relative to the store."""
        return f"queue/{request_id}.json"

    def put(self, entry: dict) -> None:
        """Write (or replace) a request's file durably."""
        with self.io_lock:
            self.store.loc.write_atomic(self.rel(entry["request_id"]),
                                        json.dumps(entry, sort_keys=True).encode())

    def remove(self, request_id: str) -> None:
        """Delete a request's file (its receipt is committed)."""
        with self.io_lock:
            self.store.loc.delete(self.rel(request_id))

    def entries(self) -> list[dict]:
        """Every queued request, oldest first.

        Raises
        ------
        SisaError
            A queue file is damaged or was edited.
        """
        out = []
        for rel in self.store.loc.list_files("queue"):
            if not QUEUE_FILE.fullmatch(rel):
                continue
            try:
                entry = json.loads(self.store.loc.read_bytes(rel).to_pybytes())
                if entry["request_id"] != rel[6:-5]:
                    raise ValueError("request id differs from the file name")
            except (ValueError, KeyError, TypeError) as exc:
                raise SisaError(f"{self.store.loc.path(rel)} is not a queued request ({exc}): "
                                "it was damaged or edited") from None
            out.append(entry)
        return sorted(out, key=lambda e: e["queued_at"])
