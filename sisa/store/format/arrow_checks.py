"""Arrow data from outside is fully validated before any value is read.

Arrow trusts the offsets and buffer sizes an Arrow IPC or Parquet file declares, and
reading them does not check them: a forged string offset then reads memory outside the
file (a crash, or other memory's bytes in an error message). Every record batch of an
input file (:mod:`sisa.store.write.ingest`) and every table a store reads back
(:mod:`sisa.store.read.reading`) passes :func:`damage` first. Messages name the column and
the kind of damage, never a value (Arrow's own text may quote one).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pyarrow as pa

from ...errors import InputError

# Arrow's full-validation messages by what they mean
_KINDS = (("utf8", "text that is not valid UTF-8"), ("offset", "offsets outside its data"),
          ("dictionary", "dictionary codes out of range"),
          ("too small", "buffers shorter than its length"), ("length", "a wrong length"))


def damage(data: pa.RecordBatch | pa.Table) -> str | None:
    """What is wrong with the buffers of ``data``, or None if ``validate(full=True)``
    passes.

    Parameters
    ----------
    data : pyarrow.RecordBatch or pyarrow.Table

    Returns
    -------
    str or None
        E.g. ``"column 'y' has offsets outside its data"``.

    Examples
    --------
    >>> damage(pa.record_batch({"y": ["a", "b"]})) is None
    True
    """
    try:
        data.validate(full=True)
    except pa.ArrowException as exc:
        bad = next((f.name for f, c in zip(data.schema, data.columns, strict=True)
                    if not _valid(c)), None)
        text = str(exc).lower()
        kind = next((k for word, k in _KINDS if word in text),
                    "buffers that do not match its type")
        return f"{f'column {bad[:80]!r}' if bad is not None else 'a record batch'} has {kind}"
    return None


def _valid(col: pa.Array | pa.ChunkedArray) -> bool:
    try:
        col.validate(full=True)
    except pa.ArrowException:
        return False
    return True


def validated(rb: pa.RecordBatch, what) -> pa.RecordBatch:
    """``rb``, once :func:`damage` finds nothing: call it on every record batch read
    from an input, before any of its values is used.

    Raises
    ------
    InputError
        One line naming ``what``, the column and the kind of damage.
    """
    problem = damage(rb)
    if problem:
        raise InputError(f"cannot read {what}: {problem}, so the file is damaged or forged; "
                         "check it, or write it again with an Arrow/Parquet writer")
    return rb


# Reading a file from outside: Arrow's errors as one line naming the file, never its data.
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError,
                 UnicodeDecodeError)


@contextlib.contextmanager
def reading(what) -> Iterator[None]:
    """Arrow's errors on a malformed file, as one line naming the file and the fix."""
    try:
        yield
    except ARROW_ERRORS as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # a nested error's cause, not Arrow's wrapping ("Error creating dataset. ...")
        first = _no_values(first.rsplit("Invalid: ", 1)[-1][:200])
        raise InputError(f"cannot read {what} ({first}): check that it is a valid, non-empty "
                         "Parquet, CSV (with a header row) or Arrow file") from None


def _no_values(text: str) -> str:
    """Arrow's message without the cells it quotes (a CSV row, an unparsable value):
    an error names the problem, never the data."""
    text = re.sub(r"(got \d+ columns?|got \d+):.*", r"\1", text)  # a ragged CSV row
    return re.sub(r"(?<![A-Za-z])('[^']*'|\"[^\"]*\")(?![A-Za-z])", "'...'", text)
