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

One job per module: :mod:`.queue` (the durable queue), :mod:`.service` (the model and
the worker), :mod:`.app` (HTTP routes), :mod:`.bodies` (request limits and parsing),
:mod:`.arrow_ipc` (Arrow bodies, checked message by message),
:mod:`.auth` (tokens), :mod:`.metrics` (``/metrics``), :mod:`.server` (uvicorn).
"""

from __future__ import annotations

from .app import build_app
from .auth import SCOPES, is_loopback, read_tokens
from .bodies import ARROW_STREAM, HTTPError, Limits, parse_rows
from .metrics import Metrics
from .queue import ErasureQueue
from .server import make_server, serve
from .service import Service

__all__ = ["ARROW_STREAM", "SCOPES", "ErasureQueue", "HTTPError", "Limits", "Metrics",
           "Service", "build_app", "is_loopback", "make_server", "parse_rows", "read_tokens",
           "serve"]
