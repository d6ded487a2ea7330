"""Reading an Arrow IPC stream sent by a client, with no trust in what it declares.

A stream is read message by message. Every record batch's metadata (a flatbuffer: its row
count, field nodes, buffer locations and compression) is checked here *before* pyarrow
touches the body, so a forged row count or a compressed buffer that claims to grow to
gigabytes is refused before any memory is allocated for it; each batch is then checked
in full (``RecordBatch.validate(full=True)``) before any value is read, so forged
offsets or lengths can neither read nor crash the server. Only the model's feature
columns, in plain integer or floating-point types, are accepted: no dictionaries, no
nested or extension types, no other columns.

Every refusal is a fixed sentence: nothing the client sent, and nothing pyarrow said
about it, is echoed.
"""

from __future__ import annotations

import struct

import numpy as np

from .refusal import HTTPError

# Message.fbs: the MessageHeader union's members this reader meets
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3
_CODECS = (0, 1)  # CompressionType: LZ4_FRAME, ZSTD
NOT_ARROW = ("body is not a valid Arrow IPC stream: send one schema message, then record "
             "batches of the feature columns")


class _Malformed(Exception):
    """A flatbuffer or a buffer description that does not hold together."""


def _read(fmt: str, buf: bytes, pos: int):
    size = struct.calcsize(fmt)
    if pos < 0 or pos + size > len(buf):
        raise _Malformed
    return struct.unpack_from(fmt, buf, pos)[0]


def _field(buf: bytes, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` is, or None if absent."""
    vtable = table - _read("<i", buf, table)
    slot = 4 + 2 * index
    if slot + 2 > _read("<H", buf, vtable):
        return None
    offset = _read("<H", buf, vtable + slot)
    return table + offset if offset else None


def _ref(buf: bytes, pos: int) -> int:
    """The position a flatbuffer offset at ``pos`` points to."""
    return pos + _read("<I", buf, pos)


def _structs(buf: bytes, table: int, index: int) -> list[tuple[int, int]]:
    """A vector of two-int64 structs (FieldNode, Buffer) as ``(a, b)`` pairs."""
    pos = _field(buf, table, index)
    if pos is None:
        return []
    vec = _ref(buf, pos)
    n = _read("<I", buf, vec)
    if vec + 4 + 16 * n > len(buf):
        raise _Malformed
    return [struct.unpack_from("<qq", buf, vec + 4 + 16 * k) for k in range(n)]


def _message_header(meta: bytes) -> tuple[int, int]:
    """``(header type, header table position)`` of a Message flatbuffer."""
    root = _ref(meta, 0)
    kind = _field(meta, root, 1)
    header = _field(meta, root, 2)
    if kind is None or header is None:
        raise _Malformed
    return _read("<B", meta, kind), _ref(meta, header)


def _batch_layout(meta: bytes, header: int) -> tuple[int, list, list, int | None]:
    """``(rows, field nodes, buffers, codec or None)`` of a RecordBatch header."""
    length = _field(meta, header, 0)
    rows = 0 if length is None else _read("<q", meta, length)
    codec = None
    compression = _field(meta, header, 3)
    if compression is not None:
        table = _ref(meta, compression)
        at = _field(meta, table, 0)
        codec = 0 if at is None else _read("<b", meta, at)
    return rows, _structs(meta, header, 1), _structs(meta, header, 2), codec


def _decoded_size(body: bytes, buffers: list, codec: int | None) -> int:
    """Bytes the batch's buffers take once decompressed, from what the body declares
    (each compressed buffer starts with its uncompressed length), checked before any
    decompression."""
    total = 0
    for offset, length in buffers:
        if offset < 0 or length < 0 or offset + length > len(body):
            raise _Malformed
        if codec is None or length == 0:
            total += length
            continue
        declared = _read("<q", body, offset)
        if declared == -1:  # stored uncompressed after the prefix
            declared = length - 8
        if declared < 0:
            raise _Malformed
        total += declared
    return total


def _messages(data: bytes):
    import pyarrow as pa

    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(data))
    while True:
        try:
            yield reader.read_next_message()
        except StopIteration:
            return


def _check_schema(schema, names: list[str]) -> list[str]:
    import pyarrow as pa

    fields = schema.names
    if len(set(fields)) != len(fields) or not set(fields) <= set(names):
        raise HTTPError(400, "Arrow body must hold only the model's feature columns, each "
                        "once (see the feature names in the store's schema)")
    missing = [c for c in names if c not in fields]
    if missing:
        raise HTTPError(400, f"Arrow body lacks feature column(s) {missing[:5]}")
    if not all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in schema.types):
        raise HTTPError(400, "Arrow feature columns must be plain integer or floating-point "
                        "columns (no dictionary, nested, extension or other types)")
    return fields


def _check_batch(msg, n_fields: int, rows_so_far: int, decoded_so_far: int,
                 max_rows: int, max_decoded: int) -> tuple[int, int]:
    """Rows and decoded bytes of a record batch message, from its metadata alone."""
    meta, body = msg.metadata.to_pybytes(), msg.body
    kind, header = _message_header(meta)
    if kind == _DICTIONARY_BATCH:
        raise HTTPError(400, "Arrow body holds a dictionary batch: send plain numeric "
                        "feature columns")
    if kind != _RECORD_BATCH:
        raise _Malformed
    rows, nodes, buffers, codec = _batch_layout(meta, header)
    if rows < 0 or rows_so_far + rows > max_rows:
        raise HTTPError(413, f"Arrow body has more than {max_rows} rows: at most "
                        f"{max_rows} per request")
    if (codec is not None and codec not in _CODECS) or len(nodes) != n_fields \
            or len(buffers) != 2 * n_fields \
            or any(n != rows or not 0 <= nulls <= rows for n, nulls in nodes):
        raise _Malformed
    size = _decoded_size(b"" if body is None else body.to_pybytes(), buffers, codec)
    if decoded_so_far + size > max_decoded:
        raise HTTPError(413, f"Arrow body decodes to more than {max_decoded} bytes: send "
                        "fewer rows")
    return rows, size


def arrow_rows(data: bytes, names: list[str], max_rows: int, max_decoded: int) -> np.ndarray:
    """The feature matrix of an Arrow IPC stream body, columns in ``names`` order.

    Parameters
    ----------
    data : bytes
        The body.
    names : list of str
        The model's feature names, in training order.
    max_rows : int
        Rows the body may hold (413 beyond, decided from the metadata).
    max_decoded : int
        Bytes the body's buffers may take once decompressed (413 beyond, decided from
        the metadata before anything is decompressed).

    Returns
    -------
    numpy.ndarray
        ``(rows, len(names))`` float64 values (nulls as NaN).

    Raises
    ------
    HTTPError
        400 for anything malformed or not plain numeric feature columns, 413 for too
        many rows or decoded bytes.
    """
    import pyarrow as pa

    try:
        messages = _messages(data)
        first = next(messages, None)
        if first is None or _message_header(first.metadata.to_pybytes())[0] != _SCHEMA:
            raise _Malformed
        schema = pa.ipc.read_schema(first)
        fields = _check_schema(schema, names)
        batches, rows, decoded = [], 0, 0
        for msg in messages:
            n, size = _check_batch(msg, len(fields), rows, decoded, max_rows, max_decoded)
            rows, decoded = rows + n, decoded + size
            batch = pa.ipc.read_record_batch(msg, schema)
            batch.validate(full=True)  # forged offsets, lengths, null counts: refused here
            batches.append(batch)
    except (_Malformed, pa.ArrowException, OSError, ValueError, TypeError, struct.error):
        raise HTTPError(400, NOT_ARROW) from None
    if rows == 0:
        raise HTTPError(400, "Arrow body has no rows: send at least one row")
    out = np.empty((rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        k = fields.index(name)
        out[:, j] = np.concatenate([b.column(k).to_numpy(zero_copy_only=False)
                                    for b in batches]).astype(np.float64)
    return out
