"""A small client for ``sisa serve`` (standard library only).

Examples
--------
>>> from sisa.client import Client                                   # doctest: +SKIP
>>> c = Client("http://127.0.0.1:8080", token="...")                 # doctest: +SKIP
>>> rid = c.erase([17, 42])                                          # doctest: +SKIP
>>> c.wait(rid)["receipt"]["ids_sha256"]                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from .errors import InputError, SisaError


class ServerError(SisaError):
    """The server answered with an error status; ``status`` holds it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}")
        self.status = status


def token_from_file(path: str, scope: str = "erase") -> str:
    """The bearer token in ``path``: the file holds the token alone, or the server's
    ``--token-file`` lines (``SCOPES TOKEN``, ``#`` comments), of which the first with
    ``scope`` is taken.

    Raises
    ------
    InputError
        The file cannot be read, or holds neither form (the message says which it must
        hold, never what it holds).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(f"cannot read token file {path} ({why}): write the bearer token in "
                         "it") from None
    lines = [p for p in (line.split("#", 1)[0].split() for line in text.splitlines()) if p]
    if len(lines) == 1 and len(lines[0]) == 1:
        return lines[0][0]  # the token alone
    for parts in lines:
        if len(parts) == 2 and scope in parts[0].split(","):
            return parts[1]
    raise InputError(f"token file {path} holds no token with the {scope!r} scope: write the "
                     f"bearer token alone, or the server's 'SCOPES TOKEN' lines with {scope}")


class Client:
    """Talk to a ``sisa serve`` endpoint.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:8080``.
    token : str, optional
        Bearer token (default ``$SISA_TOKEN``).
    timeout : float
        Seconds per HTTP request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("SISA_TOKEN")
        self.timeout = timeout

    def _call(self, method: str, path: str, doc=None) -> tuple[int, dict]:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            if not (self.token.isascii() and self.token.isprintable()):
                raise InputError("the bearer token holds characters an HTTP header cannot "
                                 "carry: a token is printable ASCII (check the token file or "
                                 "$SISA_TOKEN)")  # never echoed: it is a secret
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = str(exc.reason)
            raise ServerError(exc.code, message) from None
        except urllib.error.URLError as exc:
            raise SisaError(f"cannot reach {self.url} ({exc.reason}): is `sisa serve` "
                            "running there?") from None

    def predict(self, rows) -> dict:
        """Predictions (and, for soft-voting classifiers, probabilities) for ``rows``: a
        list of feature lists or of {feature: value} dicts, or a 2-D array."""
        rows = rows.tolist() if hasattr(rows, "tolist") else rows
        return self._call("POST", "/v1/predict", {"rows": rows})[1]

    def erase(self, ids) -> str:
        """Queue an erasure of ``ids``; returns the request id once the server has stored
        it durably (202)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self._call("POST", "/v1/erasures", {"ids": ids})[1]["request_id"]

    def health(self) -> dict:
        """``/healthz``: whether the worker runs, the model fingerprint, the queue depth and
        the store's id type (``int64`` or ``string``)."""
        return self._call("GET", "/healthz")[1]

    def status(self, request_id: str) -> dict:
        return self._call("GET", f"/v1/erasures/{request_id}")[1]

    def wait(self, request_id: str, timeout: float = 600.0, poll: float = 0.2) -> dict:
        """Poll until the request is ``done`` or ``failed``; returns its status."""
        end = time.monotonic() + timeout
        while True:
            st = self.status(request_id)
            if st["state"] in ("done", "failed"):
                return st
            if time.monotonic() > end:
                raise SisaError(f"erasure {request_id} still {st['state']} after {timeout}s")
            time.sleep(poll)
