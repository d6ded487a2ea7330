"""The service behind ``sisa serve``: the model that answers predictions, and the worker
that drains the erasure queue in batches through :func:`sisa.unlearn.forget`."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import InputError, SisaError, StoreLockedError
from ..store import Store
from ..store.format import ids as idmod
from ..store.manifest import now_iso
from ..tasks.settings import ExecutionSettings
from ..unlearn import forget, receipts, repair
from ..unlearn.records import SealedReceipt, ServiceRequest
from .bodies import HTTPError, Limits
from .metrics import Metrics
from .queue import ErasureQueue, QueueEntry

log = logging.getLogger("sisa.serve")
BUSY_RETRY_S = 1.0  # pause before retrying a batch when another writer holds the store


@dataclass
class _Request:
    request_id: str
    queued_at: str
    ids: list | None
    ids_sha256: str = ""
    n_ids: int = 0
    arrived: float = field(default_factory=time.monotonic)
    state: str = "queued"
    receipt: dict | None = None
    reason: str | None = None


class Service:
    """The model, the erasure queue and the worker that drains it.

    Parameters
    ----------
    uri : str
        The store.
    batch_window : float
        Seconds the worker waits after the oldest queued request for others to join it.
    max_batch : int
        A batch starts as soon as this many requests are queued.
    settings : ExecutionSettings, optional
        Where retraining runs (default: ``ExecutionSettings()``).
    limits : Limits, optional
        How much one request may carry (default: ``Limits()``).
    """

    def __init__(self, uri: str, *, batch_window: float = 2.0, max_batch: int = 100,
                 settings: ExecutionSettings | None = None,
                 limits: Limits | None = None) -> None:
        self.uri = uri
        self.batch_window = batch_window
        self.max_batch = max_batch
        self.settings = settings or ExecutionSettings()
        self.limits = limits or Limits()
        self.metrics = Metrics()
        self.store = Store.open(uri)  # the worker's writer
        self.reader = Store.open(uri)  # validates ids of new requests
        self.reader_lock = threading.Lock()
        self.io_lock = threading.Lock()
        self.queue = ErasureQueue(self.store, self.io_lock)
        self.cond = threading.Condition()
        self.pending: deque[_Request] = deque()
        self.requests: dict[str, _Request] = {}
        self.done_by_log: dict[str, dict] = {}
        self.forget_running = False
        self.stopping = False
        self.model = None
        self.fingerprint = ""
        self.worker: threading.Thread | None = None
        self.recovered: dict = {}

    # -------------------------------------------------------------- start / stop
    def start(self) -> dict:
        """Finish any interrupted forget (as ``sisa repair``), resume the queue, load the
        model and start the worker.

        Returns
        -------
        dict
            ``completed_request`` (the forget repair finished, or None) and ``resumed``
            (queued requests taken up again).
        """
        # Check every queue file before anything runs: one planted or edited file (its MAC
        # does not check) stops the start, and no request of the queue is run. The MAC key
        # needs a signed store's owner key: without it, refuse now, not at the first 202.
        self.queue.key()
        entries = self.queue.entries()
        summary = repair(self.store, settings=self.settings)
        self._index_log()
        resumed = 0
        for entry in entries:
            rid = entry.request_id
            if rid in self.done_by_log:  # its receipt landed (before a crash, or by repair)
                self.queue.remove(rid)
            elif entry.ids is None:
                self.requests[rid] = _Request(rid, entry.queued_at, None, state="failed",
                                              reason=entry.failed)
            else:
                req = self._request(rid, entry.queued_at, list(entry.ids))
                self.requests[rid] = req
                self.pending.append(req)
                resumed += 1
        self._load_model()
        self.worker = threading.Thread(target=self._work, name="sisa-serve-worker")
        self.worker.start()
        return {"completed_request": summary["completed_request"], "resumed": resumed}

    def stop(self) -> None:
        """Stop taking batches; a batch under way finishes (its receipt is committed)."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.worker is not None:
            self.worker.join()

    def _index_log(self) -> None:
        for r in receipts.history(self.store):
            for q in r.get("requests") or ():
                self.done_by_log[q["request_id"]] = r

    def _load_model(self) -> None:
        from ..estimators import load as open_model

        model = open_model(self.uri)
        # one reference swap: a prediction uses the old or the new pair, never a mix
        self.model = (model, model.store_.fingerprint)

    def _request(self, rid: str, queued_at: str, ids: list) -> _Request:
        with self.reader_lock:
            digest, canon = receipts.ids_digest(self.reader, ids)
        return _Request(rid, queued_at, ids, ids_sha256=digest, n_ids=len(canon))

    # -------------------------------------------------------------- requests
    def predict(self, X: np.ndarray) -> dict:
        """Predictions of the model now served, with its fingerprint (and, for a soft
        vote, the probabilities and classes)."""
        from ..estimators import columns_by_name

        model, fp = self.model
        t0 = time.perf_counter()
        during = self.forget_running
        with columns_by_name():
            out: dict = {"model": fp}
            try:
                if hasattr(model, "predict_proba") and getattr(model, "aggregation_",
                                                               "") == "soft":
                    proba = model.predict_proba(X)
                    out["predictions"] = model.classes_[proba.argmax(axis=1)].tolist()
                    out["probabilities"] = proba.tolist()
                    out["classes"] = model.classes_.tolist()
                else:
                    out["predictions"] = model.predict(X).tolist()
            except InputError:  # rows the typed columns refuse; its text may quote them
                raise HTTPError(400, "the rows do not fit the model's feature columns: send "
                                "each feature in the type it was trained on ("
                                + self._kinds() + ")") from None
        self.metrics.observe_prediction(time.perf_counter() - t0, during)
        return out

    def typed(self) -> bool:
        """Whether the served model takes typed columns (rows as JSON records, by name)."""
        from ..store.format import columns as colmod

        return colmod.is_columns(self.model[0].store_.manifest.schema)

    def _kinds(self) -> str:
        schema = self.model[0].store_.manifest.schema
        kinds = [c.get("kind", "number") for c in schema.get("columns") or []] or \
            ["number"] * len(schema["feature_names"])
        pairs = [f"{n!r}: {k}" for n, k in zip(schema["feature_names"], kinds, strict=False)]
        return ", ".join(pairs[:8]) + (", ..." if len(pairs) > 8 else "")

    def n_features(self) -> int:
        """Features the served model takes."""
        return int(self.model[0].n_features_in_)

    def feature_names(self) -> list[str]:
        """The served model's feature names, in training order."""
        return list(self.model[0].store_.manifest.schema["feature_names"])

    def submit(self, ids: list) -> str:
        """Check ids by the store's id type only, queue them durably, and return the
        request id.

        Whether an id is stored is not looked at here: an id not in the store is already
        absent, so erasing it is satisfied, and the answer must not tell a client which
        ids exist (the worker erases the ones still stored; see :meth:`_stored`).

        Raises
        ------
        InputError
            Ids not of the store's id type; nothing was queued. The message names the
            position of the first bad id, never its value.
        """
        with self.reader_lock:
            try:
                arr = self.reader.rows.id_array(ids)  # the id boundary: by the store's id type
            except (InputError, UnicodeError):  # UnicodeError: a lone surrogate ("\ud800")
                raise InputError(self._bad_id(ids)) from None
            if len(arr) == 0:
                raise InputError("no ids given: send {\"ids\": [id, ...]}")
            digest, canon = receipts.ids_digest(self.reader, arr)
        rid = secrets.token_hex(16)  # unguessable: the id is the handle on the request
        req = _Request(rid, now_iso(), canon.to_pylist(), ids_sha256=digest, n_ids=len(canon))
        self.queue.put(QueueEntry(request_id=rid, queued_at=req.queued_at, ids=tuple(req.ids)))
        with self.cond:
            self.requests[rid] = req
            self.pending.append(req)
            self.cond.notify_all()
        return rid

    def _bad_id(self, ids: list) -> str:
        """Which id the store's id type refuses, by position (an error never echoes what
        the client sent)."""
        id_type = self.reader.manifest.id_type
        want = ("JSON integers in the signed 64-bit range" if id_type == "int64" else
                "JSON strings of Unicode text (no lone surrogates)")
        for k, v in enumerate(ids):
            try:
                self.reader.rows.id_array([v])
            except (InputError, UnicodeError):
                return (f"id #{k + 1} of {len(ids)} is not an id of this store: its ids are "
                        f"{id_type}, send {want}; nothing was queued")
        return f"these ids are not ids of this store (its ids are {id_type}, send {want})"

    def status(self, rid: str) -> dict | None:
        """A request's state (``queued``, ``running``, ``done`` with its receipt, ``failed``
        with the reason), or None for an unknown request."""
        req = self.requests.get(rid)
        if req is None:
            receipt = self.done_by_log.get(rid)
            return None if receipt is None else {"request_id": rid, "state": "done",
                                                 "receipt": receipt}
        out: dict = {"request_id": rid, "state": req.state, "queued_at": req.queued_at}
        if req.state == "done":
            out["receipt"] = req.receipt
        if req.state == "failed":
            out["reason"] = req.reason
        return out

    def queue_depth(self) -> tuple[int, float]:
        """Requests queued or running, and the age in seconds of the oldest of them."""
        with self.cond:
            waiting = [r for r in self.requests.values() if r.state in ("queued", "running")]
        oldest = min((r.arrived for r in waiting), default=None)
        return len(waiting), 0.0 if oldest is None else time.monotonic() - oldest

    def metrics_text(self) -> str:
        """``/metrics`` in the Prometheus text format."""
        depth, age = self.queue_depth()
        return self.metrics.render(depth, age, self.forget_running)

    # -------------------------------------------------------------- the worker
    def _next_batch(self) -> list[_Request] | None:
        with self.cond:
            while not self.pending and not self.stopping:
                self.cond.wait()
            if self.stopping:
                return None
            deadline = self.pending[0].arrived + self.batch_window
            while (len(self.pending) < self.max_batch and not self.stopping
                   and (left := deadline - time.monotonic()) > 0):
                self.cond.wait(left)
            if self.stopping:
                return None
            batch = [self.pending.popleft() for _ in range(min(self.max_batch,
                                                               len(self.pending)))]
            for r in batch:
                r.state = "running"
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._run(batch)
            except Exception as exc:  # the worker must outlive one bad batch
                log.exception("erasure batch failed")
                self._fail(batch, f"internal error: {type(exc).__name__}: {exc}")

    def _run(self, batch: list[_Request]) -> None:
        receipt = self._forget(batch)
        if receipt is None:  # requeued or failed: nothing more to do for this batch
            return
        # Serve the new model before saying "done": a client told its erasure completed
        # never gets a prediction from a model that saw its rows.
        self._load_model()
        logged = SealedReceipt.from_json(receipts.as_logged(receipt)).receipt
        with self.metrics.lock:
            self.metrics.forgets += not receipt.get("replayed")
            self.metrics.rows_retrained += logged.rows_retrained
            self.metrics.shard_retrains += len(logged.request.affected)
            self.metrics.requests_done += len(batch)
        named = {q.request_id for q in logged.request.requests or ()}
        for r in batch:
            if r.request_id not in named:  # never expected: a 202 ends in a receipt naming it
                self._fail([r], "internal error: the batch's receipt does not name it")
                continue
            self.done_by_log[r.request_id] = receipt
            r.receipt, r.ids, r.state = receipt, None, "done"
            self.queue.remove(r.request_id)

    def _forget(self, batch: list[_Request]) -> dict | None:
        """Forget a batch's ids as one request; the receipt, or None when the batch went
        back to the queue (store busy) or was failed or split request by request."""
        requests = [ServiceRequest(request_id=r.request_id, ids_sha256=r.ids_sha256,
                                   n_ids=r.n_ids) for r in batch]
        try:
            self.forget_running = True
            with self._locked():
                return forget(self.store, self._stored(batch), settings=self.settings,
                              requests=requests)
        except StoreLockedError as exc:  # another writer: try the batch again later
            log.warning("store busy, retrying the batch: %s", exc)
            with self.cond:
                for r in reversed(batch):
                    r.state = "queued"
                    self.pending.appendleft(r)
            time.sleep(BUSY_RETRY_S)
        except InputError as exc:
            if len(batch) > 1:  # one request's problem must not fail the others
                for r in batch:
                    self._run([r])
            else:
                # the reason is shown to clients: it names the store, not the server's path
                self._fail(batch, self._public(str(exc)))
        except Exception:  # whatever stopped it (a crash, an OSError), the receipt may have landed
            receipt = self._landed(batch)
            if receipt is None:
                raise
            return receipt
        finally:
            self.forget_running = False
        return None

    def _public(self, message: str) -> str:
        """An error's first line as a client may see it: the store, not the server's path."""
        return message.splitlines()[0].replace(f"store {self.uri}", "the store").replace(
            str(self.uri), "the store")

    def _stored(self, batch: list[_Request]) -> pa.Array:
        """The batch's ids still stored (under the store's lock, on its committed state).

        Ids erased before or never stored are already absent: they are left out, so the
        receipt tells an erased-before id from a never-stored one in no field (its
        ``n_ids`` counts the rows this batch erased; each request's entry counts the ids
        it named). A batch with none left still gets its own receipt (one that changes
        nothing), so every request ends in a receipt that names it."""
        canon = idmod.unique_sorted(self.store.rows.id_array([i for r in batch for i in r.ids]))
        return canon.filter(pa.array(self.store.rows.locate(canon)[0]))

    def _landed(self, batch: list[_Request]) -> dict | None:
        """After a forget raised: an interrupted forget leaves a journal, so finish it and
        return the batch's receipt if it landed (None if not)."""
        with contextlib.suppress(SisaError), self._locked():
            repair(self.store, settings=self.settings)
        self._index_log()
        if all(r.request_id in self.done_by_log for r in batch):
            return self.done_by_log[batch[0].request_id]
        return None

    @contextlib.contextmanager
    def _locked(self):
        """The store's write lock, taken while no queue write is half-way through
        ``.tmp`` (taking the lock clears it)."""
        with contextlib.ExitStack() as stack:
            with self.io_lock:
                stack.enter_context(self.store.lock())
            yield

    def _fail(self, batch: list[_Request], reason: str) -> None:
        for r in batch:
            # the reason survives a restart; the ids not
            self.queue.put(QueueEntry(request_id=r.request_id, queued_at=r.queued_at,
                                      failed=reason))
            r.ids, r.reason, r.state = None, reason, "failed"
        with self.metrics.lock:
            self.metrics.requests_failed += len(batch)

