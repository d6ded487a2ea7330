"""``sisa serve`` and ``sisa erase``: the HTTP erasure service and its command-line client."""

from __future__ import annotations

import argparse
import sys

from ..errors import SisaError
from .common import emit, read_ids, settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve predictions and erasure requests over HTTP until SIGINT/SIGTERM
    (:func:`sisa.serve.serve`; design in ``docs/serve.md``).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa serve`` options.

    Returns
    -------
    int
        0 after a clean stop; bad options raise (exit 2).
    """
    from ..serve import Limits, serve

    def announce(service, recovered) -> None:
        if not args.quiet:
            extra = (f"; finished interrupted request {recovered['completed_request']}"
                     if recovered["completed_request"] else "")
            sys.stderr.write(f"serving {args.store} (model {service.model[1][:16]}) on "
                             f"http://{args.host}:{args.port}; {recovered['resumed']} queued "
                             f"erasure(s) resumed{extra}\n")
            sys.stderr.flush()

    # no progress bars from the worker: they would interleave with the server's log
    serve(args.store, host=args.host, port=args.port, batch_window=args.batch_window,
          max_batch=args.max_batch, token_file=args.token_file,
          settings=settings(args).replace(progress=False),
          limits=Limits(args.max_body, args.max_ids, args.max_rows), announce=announce)
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Send an erasure request to a ``sisa serve`` endpoint; with ``--wait``, wait for it
    and print its receipt.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa erase`` options.

    Returns
    -------
    int
        0 once queued (or done, with ``--wait``); a failed request raises (exit 1).
    """
    from ..client import Client

    client = Client(args.server, token=_token(args))
    ids = read_ids(args, client.health()["id_type"])  # typed by the store, not the text
    rid = client.erase(ids.to_pylist())
    if not args.wait:
        emit(args, {"request_id": rid, "state": "queued"}, f"queued erasure request {rid}")
        return 0
    st = client.wait(rid, timeout=args.timeout)
    if st["state"] == "failed":
        raise SisaError(f"erasure request {rid} failed: {st['reason']}")
    emit(args, st, f"erasure request {rid} done: receipt {st['receipt']['request_id']} "
         f"(seq {st['receipt'].get('seq')}), ids sha256 {st['receipt']['ids_sha256'][:16]}...")
    return 0


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token of ``--token-file``: the token alone, or the server's token file
    (its first ``erase`` token). None: the client reads ``$SISA_TOKEN``."""
    from ..client import token_from_file

    return token_from_file(args.token_file) if args.token_file else None
