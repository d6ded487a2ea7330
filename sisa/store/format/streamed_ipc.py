"""An Arrow IPC file written chunk by chunk, byte-identical to
:func:`~sisa.store.format.layout.ipc_bytes` of the whole table, for slices larger than the
memory budget.

``ipc_bytes`` writes one record batch: a header (magic, schema, the batch's metadata), the
body (every column's buffers in order, each padded to 8 bytes) and a footer. Only the body
depends on the values; the rest depends on the schema, the row count and the byte length
of each buffer. So pyarrow writes that file for *placeholder* arrays of the right sizes,
backed by anonymous memory that nobody reads (no RAM is used), into a sink that keeps the
header and footer bytes and records where each placeholder buffer lands. The real values
then go to those places, chunk after chunk of rows, with ``pwrite``.

Supported columns: fixed-width primitives, ``string`` and fixed-size lists of primitives
(what a slice holds). Anything else raises :class:`Unsupported` and the caller writes the
slice in memory instead.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

CHUNK = 8 << 20  # bytes read at a time when hashing the finished file


class Unsupported(Exception):
    """A column type this writer does not lay out."""


@dataclass
class Layout:
    """Where everything goes in the file of ``n`` rows.

    Attributes
    ----------
    size : int
        File size.
    fixed : list of (int, bytes)
        Header, metadata, padding and footer bytes at their file offsets.
    places : dict
        ``(column, "data" | "offsets")`` → file offset of that body buffer.
    """

    size: int
    fixed: list
    places: dict


class _Recorder:
    """A write-only file object that keeps what pyarrow writes except placeholder buffers."""

    def __init__(self, placeholders: dict[int, tuple]) -> None:
        self.pos = 0
        self.fixed: list[tuple[int, bytes]] = []  # (offset, bytes) written as they are
        self.places: dict[tuple, int] = {}  # (column, role) -> offset of its placeholder
        self.placeholders = placeholders  # address -> (column, role, region end)
        self.closed = False

    def write(self, data) -> int:
        if isinstance(data, pa.Buffer) and data.size:
            hit = self.placeholders.get(data.address)
            if hit is not None:
                self.places[hit[:2]] = self.pos
            elif any(a <= data.address < end for a, (_, _, end) in self.placeholders.items()):
                raise Unsupported("a placeholder buffer was written from an unexpected offset")
            else:
                self.fixed.append((self.pos, data.to_pybytes()))
            self.pos += data.size
            return data.size
        raw = bytes(data)
        if raw:
            self.fixed.append((self.pos, raw))
        self.pos += len(raw)
        return len(raw)

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def layout(schema: pa.Schema, n: int, text_bytes: dict[int, int]) -> Layout:
    """The file layout of ``n`` rows of ``schema`` whose string column ``i`` holds
    ``text_bytes[i]`` bytes of text."""
    keep, placeholders, arrays = [], {}, []

    def region(size: int, col: int, role: str) -> pa.Buffer:
        mem = mmap.mmap(-1, max(size, 1))  # untouched anonymous pages: no RAM
        keep.append(mem)
        buf = pa.py_buffer(mem)
        if size:  # pyarrow writes no empty buffer
            placeholders[buf.address] = (col, role, buf.address + size)
        return buf.slice(0, size)

    for i, field in enumerate(schema):
        t = field.type
        if pa.types.is_fixed_size_list(t) and _width(t.value_type):
            child = pa.Array.from_buffers(
                t.value_type, n * t.list_size,
                [None, region(n * t.list_size * _width(t.value_type), i, "data")], null_count=0)
            arrays.append(pa.Array.from_buffers(t, n, [None], null_count=0, children=[child]))
        elif pa.types.is_string(t):
            offsets = region(4 * (n + 1), i, "offsets")
            ends = np.frombuffer(keep[-1], np.int32)  # pyarrow reads the first and last offset
            ends[0], ends[n] = 0, text_bytes[i]
            arrays.append(pa.Array.from_buffers(
                t, n, [None, offsets, region(text_bytes[i], i, "data")], null_count=0))
        elif _width(t):
            arrays.append(pa.Array.from_buffers(t, n, [None, region(n * _width(t), i, "data")],
                                                null_count=0))
        else:
            raise Unsupported(f"column {field.name} of type {t}")
    rec = _Recorder(placeholders)
    with pa.PythonFile(rec, mode="w") as sink, pa.ipc.new_file(sink, schema) as w:
        w.write_batch(pa.record_batch(arrays, schema=schema))
    if len(rec.places) != len(placeholders):
        raise Unsupported("pyarrow laid out the buffers differently")
    del arrays
    return Layout(rec.pos, rec.fixed, rec.places)


def _width(t: pa.DataType) -> int:
    """Byte width of a fixed-width primitive type (0 for any other)."""
    if pa.types.is_boolean(t) or not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return 0
    return t.bit_width // 8


class StreamedFile:
    """Write an Arrow IPC file of ``n`` rows at ``path`` from consecutive row chunks.

    Parameters
    ----------
    path : str
        A new local file.
    schema : pyarrow.Schema
        The table's schema (every chunk is cast to it).
    n : int
        Rows in all.
    text_bytes : dict
        Column index → total bytes of text, for each string column.
    """

    def __init__(self, path: str, schema: pa.Schema, n: int, text_bytes: dict[int, int]):
        self.schema, self.n = schema, n
        self.plan = layout(schema, n, text_bytes)
        self.text = dict(text_bytes)
        self.row, self.text_at = 0, {i: 0 for i in text_bytes}
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.ftruncate(self.fd, self.plan.size)  # padding stays zero, as pyarrow writes it
        for pos, raw in self.plan.fixed:
            _pwrite(self.fd, raw, pos)

    def write(self, chunk: pa.Table) -> None:
        """Append the next ``chunk.num_rows`` rows."""
        chunk = chunk.combine_chunks()
        m = chunk.num_rows
        if not m:
            return
        for i, field in enumerate(self.schema):
            arr = chunk.column(i).chunk(0)
            t = field.type
            if pa.types.is_string(t):
                self._write_text(i, arr, m)
            elif pa.types.is_fixed_size_list(t):
                vals = arr.flatten().to_numpy(zero_copy_only=True)
                _pwrite(self.fd, vals, self.plan.places[(i, "data")] + self.row * vals.nbytes // m)
            else:
                vals = arr.to_numpy(zero_copy_only=True)
                _pwrite(self.fd, vals, self.plan.places[(i, "data")] + self.row * _width(t))
        self.row += m

    def _write_text(self, i: int, arr: pa.Array, m: int) -> None:
        offs = np.frombuffer(arr.buffers()[1], np.int32, count=m + 1, offset=4 * arr.offset)
        start, end, base = int(offs[0]), int(offs[m]), self.text_at[i]
        _pwrite(self.fd, (offs - start + base).astype(np.int32),
                self.plan.places[(i, "offsets")] + 4 * self.row)
        if end > start:
            _pwrite(self.fd, memoryview(arr.buffers()[2])[start:end],
                    self.plan.places[(i, "data")] + base)
        self.text_at[i] = base + end - start

    def close(self) -> tuple[str, int]:
        """Check that every row and byte arrived; returns ``(sha256, size)``."""
        try:
            if self.row != self.n or self.text_at != self.text:
                raise RuntimeError(f"internal: streamed {self.row} of {self.n} rows "
                                   f"({self.text_at} of {self.text} text bytes)")
            h, pos = hashlib.sha256(), 0
            while pos < self.plan.size:
                block = os.pread(self.fd, min(CHUNK, self.plan.size - pos), pos)
                h.update(block)
                pos += len(block)
            return h.hexdigest(), self.plan.size
        finally:
            os.close(self.fd)


def _pwrite(fd: int, data, pos: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
