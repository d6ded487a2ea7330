"""What a request to ``sisa serve`` may carry, and how its body is read and checked.

Every problem is an :class:`HTTPError` with a status and a one-line reason, raised
before anything is predicted or queued.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .arrow_ipc import arrow_rows
from .refusal import HTTPError

if TYPE_CHECKING:
    import pyarrow as pa
    from starlette.requests import Request

ARROW_STREAM = "application/vnd.apache.arrow.stream"

__all__ = ["ARROW_STREAM", "HTTPError", "Limits", "parse_ids", "parse_records", "parse_rows",
           "read_body"]


@dataclass
class Limits:
    """How much one request may carry (larger ones get ``413``).

    Attributes
    ----------
    max_body : int, default=1 MiB
        Bytes of any request body.
    max_ids : int, default=10,000
        Ids in one erasure request.
    max_rows : int, default=10,000
        Rows in one prediction request.
    """

    max_body: int = 1 << 20  # bytes of any request body
    max_ids: int = 10_000  # ids in one erasure request
    max_rows: int = 10_000  # rows in one prediction request


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a Starlette request, refused (413) as soon as it passes ``limit`` bytes,
    whatever its ``Content-Length`` claims."""
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


def parse_json(body: bytes):
    """The JSON document of a body (400 when it is not JSON)."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:  # its position only: never the client's bytes
        raise HTTPError(400, f"body is not valid JSON (line {exc.lineno} column "
                        f"{exc.colno})") from None
    except UnicodeDecodeError:
        raise HTTPError(400, "body is not valid JSON: it must be UTF-8 text") from None
    except ValueError:  # an integer of more digits than Python converts
        raise HTTPError(400, "body is not valid JSON: a number is too long") from None
    except RecursionError:
        raise HTTPError(400, "body is not valid JSON: it is nested too deeply") from None


def parse_ids(body: bytes, max_ids: int) -> list:
    """The ids of an erasure request, ``{"ids": [...]}``, as the client sent them (their
    type is checked against the store's by the service)."""
    doc = parse_json(body)
    if not isinstance(doc, dict) or set(doc) != {"ids"} or not isinstance(doc["ids"], list):
        raise HTTPError(400, 'body must be {"ids": [id, ...]}')
    if not doc["ids"]:
        raise HTTPError(400, "no ids given: send at least one id")
    if len(doc["ids"]) > max_ids:
        raise HTTPError(413, f"{len(doc['ids'])} ids: at most {max_ids} per request")
    try:
        for i in doc["ids"]:
            if isinstance(i, str):
                i.encode()
    except UnicodeEncodeError:  # JSON may spell a lone surrogate; no stored id holds one
        raise HTTPError(400, "ids must be valid Unicode text (no lone surrogate "
                        "escapes such as \\ud800)") from None
    return doc["ids"]


def parse_rows(body: bytes, content_type: str, names: list[str], n_features: int,
               max_rows: int, max_decoded: int = Limits.max_body) -> np.ndarray:
    """The feature matrix of a prediction request.

    Parameters
    ----------
    body : bytes
        JSON ``{"rows": [[x, ...], ...]}`` or ``{"rows": [{"feature": x, ...}, ...]}``, or
        an Arrow IPC stream with the feature columns (``content_type`` :data:`ARROW_STREAM`).
    content_type : str
        The request's ``Content-Type``.
    names : list of str
        The model's feature names, in training order.
    n_features : int
        Features the model takes.
    max_rows : int
        Rows one request may hold.
    max_decoded : int, default=1 MiB
        Bytes a compressed Arrow body may decode to (checked before decompressing).

    Returns
    -------
    numpy.ndarray
        ``(rows, n_features)`` finite float64 values.

    Raises
    ------
    HTTPError
        400 for a malformed body or bad values, 413 for too many rows.
    """
    if content_type.startswith(ARROW_STREAM):
        # a compressed body may decode to no more than an uncompressed one may carry
        X = arrow_rows(body, names, max_rows, max_decoded)
    else:
        X = _json_rows(body, names, n_features, max_rows)
    if X.shape[1] != n_features:
        raise HTTPError(400, f"rows have {X.shape[1]} features, the model takes {n_features}")
    if not np.isfinite(X).all():
        raise HTTPError(400, "rows hold NaN or infinite values")
    return X


def parse_records(body: bytes, names: list[str], max_rows: int) -> pa.Table:
    """The rows of a prediction request to a model of typed columns (categories, dates,
    missing values): JSON ``{"rows": [{"feature": value, ...}, ...]}``, each value a
    number, string, boolean or null, as a table the model casts to its columns' types.

    Raises
    ------
    HTTPError
        400 for a malformed body or a value of no one type, 413 for too many rows.
    """
    import pyarrow as pa

    doc = parse_json(body)
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise HTTPError(400, 'this model takes typed columns: body must be {"rows": '
                        '[{"feature": value, ...}, ...]} with at least one row')
    if len(rows) > max_rows:
        raise HTTPError(413, f"{len(rows)} rows: at most {max_rows} per request")
    columns = {}
    for name in names:
        if any(name not in r for r in rows):
            raise HTTPError(400, f"row {next(i for i, r in enumerate(rows) if name not in r)} "
                            f"lacks feature {name!r}")
        values = [r[name] for r in rows]
        if not all(v is None or isinstance(v, (str, int, float)) for v in values):
            raise HTTPError(400, f"feature {name!r} holds a value that is not a number, "
                            "string, boolean or null")
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            raise HTTPError(400, f"feature {name!r} mixes value types across rows: give it "
                            "the one type it was trained on") from None
    return pa.table(columns)


def _json_rows(body: bytes, names: list[str], n_features: int, max_rows: int) -> np.ndarray:
    doc = parse_json(body)
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise HTTPError(400, 'body must be {"rows": [[x, ...], ...]} or {"rows": '
                        '[{"feature": x, ...}, ...]} with at least one row')
    if len(rows) > max_rows:
        raise HTTPError(413, f"{len(rows)} rows: at most {max_rows} per request")
    if all(isinstance(r, dict) for r in rows):  # records: put the values in training order
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
    try:
        return np.asarray(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float64's range
        raise HTTPError(400, "rows hold a number too large for a float64 value") from None
