"""Arrow data from outside is fully validated before any value is read.

Arrow trusts the offsets and buffer sizes an Arrow IPC or Parquet file declares, and
reading them does not check them: a forged string offset then reads memory outside the
file (a crash, or other memory's bytes in an error message). Every record batch of an
input file (:mod:`sisa.store.ingest`) and every table a store reads back
(:mod:`sisa.store.reading`) passes :func:`damage` first. Messages name the column and
the kind of damage, never a value (Arrow's own text may quote one).
"""

from __future__ import annotations

import pyarrow as pa

from ..errors import InputError

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
