"""``sisa serve``: a model that answers predictions and erasure requests, with a receipt
for every request.

One process on one machine: a Starlette app under uvicorn answers HTTP, and one worker
thread drains the durable erasure queue in batches through :func:`sisa.unlearn.forget`.
Design, durability argument and security model: ``docs/serve.md``.

Endpoints (JSON; errors are ``{"error": "<one line>"}``):

* ``POST /v1/predict`` (scope ``predict``): ``{"rows": [[x, ...], ...]}`` or
  ``{"rows": [{"feature": x, ...}, ...]}``, or an Arrow IPC stream
  (``application/vnd.apache.arrow.stream``) with the feature columns.
* ``POST /v1/erasures`` (scope ``erase``): ``{"ids": [...]}`` → ``202`` with
  ``request_id`` once the request is fsynced in ``<store>/queue/``.
* ``GET /v1/erasures/{request_id}`` (scope ``erase``): ``queued``, ``running``, ``done``
  (with the receipt) or ``failed`` (with the reason).
* ``GET /healthz`` and ``GET /metrics`` (Prometheus text), no token.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .engine.settings import ExecutionSettings
from .errors import InputError, SisaError, StoreLockedError
from .store import Store, deletion
from .store.layout import QUEUE_FILE
from .store.manifest import now_iso
from .unlearn import forget, receipts, repair

log = logging.getLogger("sisa.serve")

SCOPES = ("predict", "erase")
ARROW_STREAM = "application/vnd.apache.arrow.stream"
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
# Prometheus histogram buckets for prediction latency (seconds).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# ---------------------------------------------------------------------------- tokens
def read_tokens(path: str) -> dict[str, frozenset[str]]:
    """Bearer tokens and their scopes from ``path``: one ``SCOPE[,SCOPE] TOKEN`` per line
    (``#`` comments). The file must not be readable by group or others: it is a secret.

    Raises
    ------
    InputError
        The file is missing, too open, empty, or a line is malformed.
    """
    try:
        st = os.stat(path)
        text = open(path, encoding="utf-8").read()  # noqa: SIM115 - one read
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read token file {path!r} ({exc}): write one 'SCOPES TOKEN' "
                         "per line") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"token file {path} is readable by others (mode "
                         f"{stat.S_IMODE(st.st_mode):o}): chmod 600 {path}")
    tokens: dict[str, frozenset[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        scopes = frozenset(parts[0].split(",")) if len(parts) == 2 else frozenset()
        if len(parts) != 2 or not scopes <= set(SCOPES) or len(parts[1]) < 16:
            raise InputError(f"line {n} of token file {path} is not 'SCOPE[,SCOPE] TOKEN' with "
                             f"scopes from {SCOPES} and a token of at least 16 characters")
        tokens[parts[1]] = scopes
    if not tokens:
        raise InputError(f"token file {path} holds no tokens: write 'predict,erase TOKEN'")
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------- the queue
class ErasureQueue:
    """Accepted erasure requests as files ``<store>/queue/<request id>.json``.

    Each file is written with the store's atomic write (temporary file, fsync, rename,
    fsync of the directory) before the service answers 202, so an accepted request
    survives a crash. A file holds only what processing needs: the request id, when it
    was accepted and its raw ids (like ``audit/intent.json``); it is deleted once the
    receipt naming the request is committed. A request that failed keeps a file with its
    reason and no ids, so its status survives a restart.
    """

    def __init__(self, store: Store, io_lock: threading.Lock) -> None:
        self.store = store
        # The store's lock holder clears <store>/.tmp (debris of killed writers) when it
        # takes the lock: a queue write in flight must not race that, within this process.
        self.io_lock = io_lock

    @staticmethod
    def rel(request_id: str) -> str:
        return f"queue/{request_id}.json"

    def put(self, entry: dict) -> None:
        with self.io_lock:
            self.store.loc.write_atomic(self.rel(entry["request_id"]),
                                        json.dumps(entry, sort_keys=True).encode())

    def remove(self, request_id: str) -> None:
        with self.io_lock:
            self.store.loc.delete(self.rel(request_id))

    def entries(self) -> list[dict]:
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


# ---------------------------------------------------------------------------- the service
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


@dataclass
class Limits:
    max_body: int = 1 << 20  # bytes of any request body
    max_ids: int = 10_000  # ids in one erasure request
    max_rows: int = 10_000  # rows in one prediction request


class Metrics:
    """Counters for ``/metrics`` (Prometheus text exposition format 0.0.4)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forgets = 0
        self.rows_retrained = 0
        self.shard_retrains = 0
        self.requests_done = 0
        self.requests_failed = 0
        self.predictions = 0
        self.predictions_during_forget = 0
        self.latency_buckets = [0] * len(_BUCKETS)
        self.latency_sum = 0.0

    def observe_prediction(self, seconds: float, during_forget: bool) -> None:
        with self.lock:
            self.predictions += 1
            self.predictions_during_forget += during_forget
            self.latency_sum += seconds
            for i, b in enumerate(_BUCKETS):
                if seconds <= b:
                    self.latency_buckets[i] += 1


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
        model and start the worker. Returns what was recovered."""
        summary = repair(self.store, settings=self.settings)
        self._index_log()
        resumed = 0
        for entry in self.queue.entries():
            rid = entry["request_id"]
            if "failed" in entry:
                self.requests[rid] = _Request(rid, entry["queued_at"], None, state="failed",
                                              reason=entry["failed"])
            elif rid in self.done_by_log:  # its receipt landed before the crash
                self.queue.remove(rid)
            else:
                req = self._request(rid, entry["queued_at"], entry["ids"])
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
        from .cli import _open_model

        model = _open_model(self.uri)
        # one reference swap: a prediction uses the old or the new pair, never a mix
        self.model = (model, model.store_.fingerprint)

    def _request(self, rid: str, queued_at: str, ids: list) -> _Request:
        with self.reader_lock:
            digest, canon = receipts.ids_digest(self.reader, ids)
        return _Request(rid, queued_at, ids, ids_sha256=digest, n_ids=len(canon))

    # -------------------------------------------------------------- requests
    def predict(self, X: np.ndarray) -> dict:
        model, fp = self.model
        t0 = time.perf_counter()
        during = self.forget_running
        with _no_name_warning():
            out: dict = {"model": fp}
            if hasattr(model, "predict_proba") and getattr(model, "aggregation_", "") == "soft":
                proba = model.predict_proba(X)
                out["predictions"] = model.classes_[proba.argmax(axis=1)].tolist()
                out["probabilities"] = proba.tolist()
                out["classes"] = model.classes_.tolist()
            else:
                out["predictions"] = model.predict(X).tolist()
        self.metrics.observe_prediction(time.perf_counter() - t0, during)
        return out

    def n_features(self) -> int:
        return int(self.model[0].n_features_in_)

    def feature_names(self) -> list[str]:
        return list(self.model[0].store_.manifest.schema["feature_names"])

    def submit(self, ids: list) -> str:
        """Validate ids by the store's id type (unknown ids too), queue them durably, and
        return the request id. Raises InputError (nothing queued) on bad ids."""
        with self.reader_lock:
            self.reader.reload()
            arr = self.reader.id_array(ids)  # the id boundary: by the store's id type
            if len(arr) == 0:
                raise InputError("no ids given: send {\"ids\": [id, ...]}")
            self.reader.read_consistent(lambda st: deletion.resolve(st, arr))  # unknown ids
            digest, canon = receipts.ids_digest(self.reader, arr)
        rid = secrets.token_hex(16)  # unguessable: the id is the handle on the request
        req = _Request(rid, now_iso(), canon.to_pylist(), ids_sha256=digest, n_ids=len(canon))
        self.queue.put({"request_id": rid, "queued_at": req.queued_at, "ids": req.ids})
        with self.cond:
            self.requests[rid] = req
            self.pending.append(req)
            self.cond.notify_all()
        return rid

    def status(self, rid: str) -> dict | None:
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
        with self.cond:
            waiting = [r for r in self.requests.values() if r.state in ("queued", "running")]
        oldest = min((r.arrived for r in waiting), default=None)
        return len(waiting), 0.0 if oldest is None else time.monotonic() - oldest

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
        ids = [i for r in batch for i in r.ids]
        requests = [{"request_id": r.request_id, "ids_sha256": r.ids_sha256, "n_ids": r.n_ids}
                    for r in batch]
        try:
            self.forget_running = True
            with self._locked():
                receipt = forget(self.store, ids, settings=self.settings, requests=requests)
        except StoreLockedError as exc:  # another writer: try the batch again later
            log.warning("store busy, retrying the batch: %s", exc)
            with self.cond:
                for r in reversed(batch):
                    r.state = "queued"
                    self.pending.appendleft(r)
            time.sleep(1.0)
            return
        except InputError as exc:
            if len(batch) > 1:  # one request's problem must not fail the others
                for r in batch:
                    self._run([r])
            else:
                self._fail(batch, str(exc).splitlines()[0])
            return
        except SisaError:
            # an interrupted forget leaves a journal: finish it, then see what landed
            with contextlib.suppress(SisaError), self._locked():
                repair(self.store, settings=self.settings)
            self._index_log()
            landed = [r for r in batch if r.request_id in self.done_by_log]
            if len(landed) == len(batch):
                receipt = self.done_by_log[batch[0].request_id]
            else:
                raise
        finally:
            self.forget_running = False
        # Serve the new model before saying "done": a client told its erasure completed
        # never gets a prediction from a model that saw its rows.
        self._load_model()
        with self.metrics.lock:
            self.metrics.forgets += not receipt.get("replayed")
            self.metrics.rows_retrained += int(receipt.get("rows_retrained", 0))
            self.metrics.shard_retrains += len(receipt.get("affected", ()))
            self.metrics.requests_done += len(batch)
        for r in batch:
            if not receipt.get("replayed"):
                self.done_by_log[r.request_id] = receipt
            r.receipt, r.ids, r.state = receipt, None, "done"
            self.queue.remove(r.request_id)

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
            self.queue.put({"request_id": r.request_id, "queued_at": r.queued_at,
                            "failed": reason})  # the reason survives a restart; the ids not
            r.ids, r.reason, r.state = None, reason, "failed"
        with self.metrics.lock:
            self.metrics.requests_failed += len(batch)

    # -------------------------------------------------------------- metrics
    def metrics_text(self) -> str:
        depth, age = self.queue_depth()
        m = self.metrics
        lines = []

        def metric(name: str, kind: str, help_: str, value) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"])

        with m.lock:
            metric("sisa_serve_queue_depth", "gauge", "Erasure requests queued or running.",
                   depth)
            metric("sisa_serve_oldest_request_age_seconds", "gauge",
                   "Age of the oldest queued or running erasure request.", round(age, 3))
            metric("sisa_serve_forgets_total", "counter", "Forget batches committed.",
                   m.forgets)
            metric("sisa_serve_shard_retrains_total", "counter",
                   "Shard retrains run by forget batches.", m.shard_retrains)
            metric("sisa_serve_rows_retrained_total", "counter",
                   "Rows retrained by forget batches.", m.rows_retrained)
            metric("sisa_serve_erasures_done_total", "counter", "Erasure requests done.",
                   m.requests_done)
            metric("sisa_serve_erasures_failed_total", "counter", "Erasure requests failed.",
                   m.requests_failed)
            metric("sisa_serve_forget_running", "gauge", "1 while a forget batch runs.",
                   int(self.forget_running))
            metric("sisa_serve_predictions_during_forget_total", "counter",
                   "Prediction requests answered while a forget batch ran.",
                   m.predictions_during_forget)
            name = "sisa_serve_prediction_latency_seconds"
            lines += [f"# HELP {name} Time to compute one prediction request.",
                      f"# TYPE {name} histogram"]
            for b, c in zip(_BUCKETS, m.latency_buckets, strict=True):
                lines.append(f'{name}_bucket{{le="{b}"}} {c}')
            lines += [f'{name}_bucket{{le="+Inf"}} {m.predictions}',
                      f"{name}_sum {m.latency_sum:.6f}", f"{name}_count {m.predictions}"]
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _no_name_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        yield


# ---------------------------------------------------------------------------- HTTP
class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_rows(body: bytes, content_type: str, names: list[str], n_features: int,
               max_rows: int) -> np.ndarray:
    """The feature matrix of a prediction request (JSON rows or records, or Arrow IPC)."""
    if content_type.startswith(ARROW_STREAM):
        import pyarrow as pa

        try:
            table = pa.ipc.open_stream(body).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise HTTPError(400, f"body is not an Arrow IPC stream ({exc})") from None
        missing = [c for c in names if c not in table.column_names]
        if missing:
            raise HTTPError(400, f"Arrow body lacks feature column(s) {missing[:5]}")
        if table.num_rows > max_rows:
            raise HTTPError(413, f"{table.num_rows} rows: at most {max_rows} per request")
        try:
            X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(
                np.float64) for c in names])
        except (TypeError, ValueError, pa.ArrowInvalid) as exc:
            raise HTTPError(400, f"feature columns must be numeric ({exc})") from None
    else:
        doc = _json(body)
        rows = doc.get("rows") if isinstance(doc, dict) else None
        if not isinstance(rows, list) or not rows:
            raise HTTPError(400, 'body must be {"rows": [[x, ...], ...]} or {"rows": '
                            '[{"feature": x, ...}, ...]} with at least one row')
        if len(rows) > max_rows:
            raise HTTPError(413, f"{len(rows)} rows: at most {max_rows} per request")
        if all(isinstance(r, dict) for r in rows):
            missing = [c for c in names if c not in rows[0]]
            if missing:
                raise HTTPError(400, f"row 0 lacks feature(s) {missing[:5]}")
            try:
                rows = [[r[c] for c in names] for r in rows]
            except KeyError as exc:
                raise HTTPError(400, f"a row lacks feature {exc}") from None
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, list)
                    or len(r) != n_features or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)),
                   None)
        if bad is not None:
            raise HTTPError(400, f"row {bad} is not a list of {n_features} numbers")
        X = np.asarray(rows, dtype=np.float64)
    if X.shape[1] != n_features:
        raise HTTPError(400, f"rows have {X.shape[1]} features, the model takes {n_features}")
    if not np.isfinite(X).all():
        raise HTTPError(400, "rows hold NaN or infinite values")
    return X


def _json(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"body is not valid JSON ({exc})") from None


def build_app(service: Service, tokens: dict[str, frozenset[str]] | None):
    """The Starlette app. ``tokens=None`` runs without authentication (loopback only)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorize(request: Request, scope: str) -> None:
        if tokens is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        found = None
        for tok, scopes in tokens.items():  # compare every token: no timing hint
            if hmac.compare_digest(tok.encode(), given.encode()):
                found = scopes
        if found is None:
            raise HTTPError(401, "missing or unknown bearer token: send 'Authorization: "
                            "Bearer TOKEN'")
        if scope not in found:
            raise HTTPError(403, f"this token lacks the {scope!r} scope")

    async def body(request: Request) -> bytes:
        limit = service.limits.max_body
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise HTTPError(413, f"body larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"body larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def handler(fn):
        async def wrapped(request: Request):
            try:
                return await fn(request)
            except HTTPError as exc:
                return error(exc.status, str(exc))
        return wrapped

    @handler
    async def predict(request: Request):
        authorize(request, "predict")
        raw = await body(request)
        X = parse_rows(raw, request.headers.get("content-type", ""), service.feature_names(),
                       service.n_features(), service.limits.max_rows)
        return JSONResponse(await run_in_threadpool(service.predict, X))

    @handler
    async def erase(request: Request):
        authorize(request, "erase")
        doc = _json(await body(request))
        if not isinstance(doc, dict) or set(doc) != {"ids"} or not isinstance(doc["ids"], list):
            raise HTTPError(400, 'body must be {"ids": [id, ...]}')
        if not doc["ids"]:
            raise HTTPError(400, "no ids given: send at least one id")
        if len(doc["ids"]) > service.limits.max_ids:
            raise HTTPError(413, f"{len(doc['ids'])} ids: at most {service.limits.max_ids} "
                            "per request")
        try:
            rid = await run_in_threadpool(service.submit, doc["ids"])
        except InputError as exc:  # wrong id type, unknown ids: nothing was queued
            # the message names the store's path: a client has no business knowing it
            msg = str(exc).splitlines()[0].replace(str(service.reader.uri), "the store")
            raise HTTPError(422, msg) from None
        return JSONResponse({"request_id": rid, "state": "queued"}, status_code=202,
                            headers={"Location": f"/v1/erasures/{rid}"})

    @handler
    async def erasure_status(request: Request):
        authorize(request, "erase")
        rid = request.path_params["request_id"]
        st = service.status(rid) if _REQUEST_ID.fullmatch(rid) else None
        if st is None:
            raise HTTPError(404, f"no erasure request {rid[:40]!r}")
        return JSONResponse(st)

    async def healthz(request: Request):
        depth, _ = service.queue_depth()
        ok = service.worker is not None and service.worker.is_alive()
        return JSONResponse({"ok": ok, "model": service.model[1], "queue_depth": depth,
                             "id_type": service.reader.manifest.id_type},
                            status_code=200 if ok else 503)

    async def metrics(request: Request):
        return PlainTextResponse(service.metrics_text(),
                                 media_type="text/plain; version=0.0.4")

    return Starlette(routes=[
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/erasures", erase, methods=["POST"]),
        Route("/v1/erasures/{request_id}", erasure_status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ])


def make_server(uri: str, *, host: str = "127.0.0.1", port: int = 8080,
                batch_window: float = 2.0, max_batch: int = 100, token_file: str | None = None,
                settings: ExecutionSettings | None = None, limits: Limits | None = None):
    """Check the options, start the :class:`Service` (repair, resume the queue, worker) and
    return it with a ``uvicorn.Server`` not yet running. ``server.run()`` serves until
    SIGINT/SIGTERM (main thread) or ``server.should_exit = True``; then call
    ``service.stop()``."""
    import uvicorn

    if batch_window < 0 or max_batch < 1 or not math.isfinite(batch_window):
        raise InputError("--batch-window must be >= 0 and --max-batch >= 1")
    tokens = read_tokens(token_file) if token_file else None
    if tokens is None and not is_loopback(host):
        raise InputError(f"refusing to serve on {host} without --token-file: anyone who can "
                         "reach it could erase rows; pass --token-file FILE")
    service = Service(uri, batch_window=batch_window, max_batch=max_batch, settings=settings,
                      limits=limits)
    recovered = service.start()

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            # uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown; the
            # worker's batch must finish first, and a clean stop exits 0
            getattr(self, "_captured_signals", []).clear()

    config = uvicorn.Config(build_app(service, tokens), host=host, port=port,
                            log_level="warning", access_log=False)
    service.recovered = recovered
    return service, _Server(config)


def serve(uri: str, *, announce=None, **kw) -> None:
    """Run the service until SIGINT/SIGTERM; the worker finishes the batch under way, so
    a clean stop leaves no journal behind. ``kw``: see :func:`make_server`."""
    service, server = make_server(uri, **kw)
    try:
        if announce:
            announce(service, service.recovered)
        server.run()
    finally:
        service.stop()
