"""Running ``sisa serve``: check the options, start the service, serve HTTP under uvicorn."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InputError
from ..tasks.settings import ExecutionSettings
from .app import build_app
from .auth import is_loopback, read_tokens
from .bodies import Limits
from .service import Service

if TYPE_CHECKING:
    import uvicorn


def make_server(uri: str, *, host: str = "127.0.0.1", port: int = 8080,
                batch_window: float = 2.0, max_batch: int = 100, token_file: str | None = None,
                settings: ExecutionSettings | None = None,
                limits: Limits | None = None) -> tuple[Service, uvicorn.Server]:
    """Check the options, start the :class:`~.service.Service` (repair, resume the queue,
    worker) and return it with a ``uvicorn.Server`` not yet running.

    ``server.run()`` serves until SIGINT/SIGTERM (main thread) or
    ``server.should_exit = True``; then call ``service.stop()``.

    Parameters
    ----------
    uri : str
        The store.
    host, port
        Where to listen; a host other than loopback needs ``token_file``.
    batch_window, max_batch
        As for :class:`~.service.Service`.
    token_file : str, optional
        Bearer tokens (:func:`~.auth.read_tokens`); without it, no authentication.
    settings : ExecutionSettings, optional
        Where retraining runs.
    limits : Limits, optional
        How much one request may carry.

    Returns
    -------
    service : Service
        Started; ``service.recovered`` says what the start recovered.
    server : uvicorn.Server

    Raises
    ------
    InputError
        Bad batching options, a bad token file, or a non-loopback host without tokens.
    """
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


def serve(uri: str, *, announce: Callable[[Service, dict], None] | None = None, **kw) -> None:
    """Run the service until SIGINT/SIGTERM; the worker finishes the batch under way, so a
    clean stop leaves no journal behind.

    Parameters
    ----------
    uri : str
        The store.
    announce : callable, optional
        Called as ``announce(service, recovered)`` once the service has started, before
        HTTP is served.
    **kw
        The options of :func:`make_server`.
    """
    service, server = make_server(uri, **kw)
    try:
        if announce:
            announce(service, service.recovered)
        server.run()
    finally:
        service.stop()
