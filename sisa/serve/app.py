"""The HTTP face of ``sisa serve``: a Starlette app over a :class:`~.service.Service`."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING

from ..errors import InputError
from .auth import scopes_of
from .bodies import ARROW_STREAM, HTTPError, parse_ids, parse_records, parse_rows, read_body
from .service import Service

if TYPE_CHECKING:  # starlette is the serve extra: imported when an app is built
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

log = logging.getLogger("sisa.serve")
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
PARSERS = 2  # bodies parsed at once (the rest wait): bounds the memory parsing can hold


def build_app(service: Service, tokens: dict[str, frozenset[str]] | None) -> Starlette:
    """The Starlette app of a started service.

    Parameters
    ----------
    service : Service
        The service that answers.
    tokens : dict or None
        Bearer tokens and their scopes (:func:`~.auth.read_tokens`); None runs without
        authentication (loopback only, checked by :func:`~.server.make_server`).

    Returns
    -------
    starlette.applications.Starlette
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    handlers = _Handlers(service, tokens)
    return Starlette(exception_handlers={HTTPException: _starlette_error,
                                         Exception: _unexpected}, routes=[
        Route("/v1/predict", handlers.predict, methods=["POST"]),
        Route("/v1/erasures", handlers.erase, methods=["POST"]),
        Route("/v1/erasures/{request_id}", handlers.erasure_status, methods=["GET"]),
        Route("/healthz", handlers.healthz, methods=["GET"]),
        Route("/metrics", handlers.metrics, methods=["GET"]),
    ])


def _error(status: int, message: str) -> Response:
    from starlette.responses import JSONResponse

    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Any exception no endpoint answered: a generic one-line 500 that echoes nothing (the
    exception's text may hold the client's bytes or the server's memory); the server's
    log gets its type."""
    log.error("unexpected %s answering %s %s", type(exc).__name__, request.method,
              request.url.path)
    return _error(500, "internal server error (the server's log has its type)")


async def _starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) as one-line JSON too."""
    status = getattr(exc, "status_code", 500)
    reason = {404: "no such endpoint", 405: "method not allowed on this endpoint"}
    return _error(status, reason.get(status, "request refused"))


def _answers_errors(fn):
    """An endpoint whose :class:`HTTPError` becomes ``{"error": ...}`` with its status, and
    any other exception a generic 500."""
    async def wrapped(self, request: Request) -> Response:
        try:
            return await fn(self, request)
        except HTTPError as exc:
            return _error(exc.status, str(exc))
        except Exception as exc:  # nothing unplanned reaches the client as it is
            return await _unexpected(request, exc)
    return wrapped


def _json(doc: dict, status: int = 200, headers: dict | None = None) -> Response:
    """A JSON answer; a non-finite number in it (a model that overflowed on extreme
    inputs) is a 422, not a 500."""
    from starlette.responses import Response

    try:
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise HTTPError(422, "the model's answer for these rows is not finite: send "
                        "values in the range the model was trained on") from None
    return Response(text, status_code=status, headers=headers, media_type="application/json")


class _Handlers:
    """One method per endpoint; the service does the work, in a thread when it blocks."""

    def __init__(self, service: Service, tokens: dict[str, frozenset[str]] | None) -> None:
        self.service = service
        self.tokens = tokens
        self.parsers = None  # anyio.CapacityLimiter, made in the event loop on first use

    async def parse(self, fn, *args):
        """``fn(*args)`` in a worker thread, at most PARSERS at once: a 1 MiB body can take
        a second and 20 x its size in Python objects, so concurrent bodies must not
        multiply that (docs/serve.md, "Request bodies")."""
        import anyio

        if self.parsers is None:
            self.parsers = anyio.CapacityLimiter(PARSERS)
        return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self.parsers)

    def authorize(self, request: Request, scope: str) -> None:
        if self.tokens is None:
            return
        found = scopes_of(self.tokens, request.headers.get("authorization", ""))
        if found is None:
            raise HTTPError(401, "missing or unknown bearer token: send 'Authorization: "
                            "Bearer TOKEN'")
        if scope not in found:
            raise HTTPError(403, f"this token lacks the {scope!r} scope")

    @_answers_errors
    async def predict(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        self.authorize(request, "predict")
        raw = await read_body(request, self.service.limits.max_body)
        ctype = request.headers.get("content-type", "")
        if self.service.typed() and not ctype.startswith(ARROW_STREAM):
            X = await self.parse(parse_records, raw, self.service.feature_names(),
                                 self.service.limits.max_rows)
        else:
            X = await self.parse(parse_rows, raw, ctype, self.service.feature_names(),
                                 self.service.n_features(), self.service.limits.max_rows,
                                 self.service.limits.max_body)
        return _json(await run_in_threadpool(self.service.predict, X))

    @_answers_errors
    async def erase(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        self.authorize(request, "erase")
        limits = self.service.limits
        ids = await self.parse(parse_ids, await read_body(request, limits.max_body),
                               limits.max_ids)
        try:
            rid = await run_in_threadpool(self.service.submit, ids)
        except InputError as exc:  # wrong id type, unknown ids: nothing was queued
            # the message names the store's path: a client has no business knowing it
            msg = str(exc).splitlines()[0].replace(str(self.service.reader.uri), "the store")
            raise HTTPError(422, msg) from None
        return JSONResponse({"request_id": rid, "state": "queued"}, status_code=202,
                            headers={"Location": f"/v1/erasures/{rid}"})

    @_answers_errors
    async def erasure_status(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        self.authorize(request, "erase")
        rid = request.path_params["request_id"]
        st = self.service.status(rid) if REQUEST_ID.fullmatch(rid) else None
        if st is None:
            raise HTTPError(404, "no such erasure request: use the request_id of a 202")
        return JSONResponse(st)

    @_answers_errors
    async def healthz(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        depth, _ = self.service.queue_depth()
        ok = self.service.worker is not None and self.service.worker.is_alive()
        return JSONResponse({"ok": ok, "model": self.service.model[1], "queue_depth": depth,
                             "id_type": self.service.reader.manifest.id_type},
                            status_code=200 if ok else 503)

    @_answers_errors
    async def metrics(self, request: Request) -> Response:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(self.service.metrics_text(),
                                 media_type="text/plain; version=0.0.4")
