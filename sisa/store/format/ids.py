"""Sample ids: the one place that decides what an id is.

A store records its id type when it is built, ``"int64"`` or ``"string"``, and every
entry point converts ids through this module *by that type*: API lists and arrays
(:func:`to_store_ids`), CLI flags and ids files (:func:`parse_text_ids`,
:func:`read_ids_file`), table columns and ``sample_ids=`` at ingest
(:func:`column_id_type`, :func:`values_id_type`). Nothing guesses a type from how a
value looks: on a string store ``"007"`` and ``"7"`` are two ids, and on an integer
store the text ``007`` is refused rather than read as 7, so a script's typo never
deletes a different row. The keyed hashes of tombstones and receipts take their bytes
from :func:`id_bytes`, so one id has one encoding everywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import InputError

IdType = Literal["int64", "string"]  # a store's one id type, in its schema
INT: IdType = "int64"
STR: IdType = "string"
ID_TYPES: tuple[IdType, ...] = get_args(IdType)
_INT64 = (-(2**63), 2**63 - 1)
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)", re.ASCII)


def describe(id_type: IdType) -> str:
    return "integers" if id_type == INT else "strings"


def arrow_type(id_type: IdType) -> pa.DataType:
    return pa.int64() if id_type == INT else pa.string()


def column_id_type(t: pa.DataType, column: str) -> IdType:
    """The id type a table column of Arrow type ``t`` gives a store."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return INT
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return STR
    raise InputError(f"id column {column!r} holds {t} values: sample ids must be integers or "
                     "strings; pass an integer or string column as the id")


def values_id_type(values: np.ndarray) -> IdType:
    """The id type of ``sample_ids=`` given at ingest (every element must agree)."""
    kind = values.dtype.kind
    if kind in "iu":
        return INT
    if kind == "U":
        return STR
    if kind == "O" and values.size:
        types = {_scalar_kind(v) for v in values.ravel().tolist()}
        if types == {INT}:
            return INT
        if types == {STR}:
            return STR
        if None not in types:
            raise InputError("sample ids mix integers and strings: give every row an id of one "
                             "type (e.g. convert them all with str())")
    raise InputError(f"sample ids must be integers or strings, got {_dtype_name(values)}: pass "
                     "one int or str id per row")


def _scalar_kind(v) -> str | None:
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        return INT
    if isinstance(v, (str, np.str_)):
        return STR
    return None


def _dtype_name(values: np.ndarray) -> str:
    if values.dtype.kind == "O":
        bad = next((v for v in values.ravel().tolist() if _scalar_kind(v) is None), None)
        return f"a {type(bad).__name__} value ({bad!r})"
    return f"dtype {values.dtype}"


def to_store_ids(values, id_type: IdType) -> pa.Array:
    """Ids given through the API (an id, a list, a numpy or Arrow array), as the store's
    Arrow id array; a value of another type is an :class:`InputError` naming the store's
    id type. Strings are never parsed into integers, nor integers turned into strings."""
    if id_type not in ID_TYPES:
        raise InputError(f"unknown id type {id_type!r}: expected one of {ID_TYPES}")
    want = arrow_type(id_type)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        try:
            values.validate(full=True)  # an array built from raw buffers: maybe not UTF-8
        except pa.ArrowException:
            raise InputError("sample ids are an Arrow array whose buffers are invalid (e.g. "
                             "text that is not UTF-8): pass ids built by pyarrow") from None
        if values.type == want and not values.null_count:
            return values
        ok = (pa.types.is_integer(values.type) if id_type == INT else
              pa.types.is_string(values.type) or pa.types.is_large_string(values.type))
        if not ok:
            raise InputError(f"sample ids of this store are {describe(id_type)}, got an Arrow "
                             f"array of {values.type}: {_fix(id_type)}")
        if values.null_count:
            raise InputError("sample ids must not be missing (None/null)")
        return _cast(values, want)
    if isinstance(values, Mapping):
        raise InputError("sample ids must be a list (or array) of ids, not a mapping: pass "
                         "list(d) or list(d.values())")
    if isinstance(values, (str, bytes, bytearray, memoryview)) or not isinstance(values, Iterable):
        values = [values]  # one id (a wrong one is named below); bytes are no list of ints
    arr = np.atleast_1d(values) if isinstance(values, np.ndarray) else None
    if arr is not None and arr.dtype.kind in "bf":
        what = "bool" if arr.dtype.kind == "b" else f"float ({arr.dtype})"
        raise InputError(f"sample ids must be integers or strings, got {what} values: pass the "
                         "ids themselves (for a boolean mask, ids[mask])")
    if arr is not None and arr.dtype.kind in ("iu" if id_type == INT else "U"):
        if arr.ndim != 1:
            raise InputError(f"sample ids must be a flat list, got shape {arr.shape}")
        return _cast(pa.array(arr), want) if id_type == INT else _text_array(arr, "sample id")
    items = arr.tolist() if arr is not None else list(values)
    for v in items:
        if _scalar_kind(v) != id_type:
            raise InputError(f"sample id {v!r} is {_what(v)}, but this store's ids are "
                             f"{describe(id_type)}: {_fix(id_type, v)}")
    if id_type == INT:
        out = [int(v) for v in items]
        bad = next((v for v in out if not _INT64[0] <= v <= _INT64[1]), None)
        if bad is not None:
            raise InputError(f"sample id {bad} is out of range: integer ids fit in a signed "
                             "64-bit integer")
        return pa.array(out, want)
    return _text_array([str(v) for v in items], "sample id")


def _text_array(values, source: str) -> pa.Array:
    """String ids as an Arrow array; an id UTF-8 cannot hold (a lone surrogate, as JSON's
    ``"\\ud800"`` or an undecodable byte in a command-line argument gives) is refused by
    position, not raised as a codec error."""
    try:
        out = pa.array(values, pa.string())
        # pyarrow ends a numpy str at its first NUL, numpy keeps inner ones: "a\x00b" would
        # become the id "a" (another row). Such arrays go through Python strings.
        if isinstance(values, np.ndarray) and np.any(
                pc.utf8_length(out).to_numpy(zero_copy_only=False) != np.char.str_len(values)):
            out = pa.array(values.tolist(), pa.string())
        return out
    except (UnicodeEncodeError, UnicodeDecodeError):
        texts = values.tolist() if isinstance(values, np.ndarray) else list(values)
        i = next(i for i, v in enumerate(texts) if not _is_utf8(v))
        raise InputError(f"{source} #{i + 1} ({ascii(texts[i])[:60]}) holds a lone surrogate, "
                         "which is not text: string ids must be valid Unicode; fix that id") \
            from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _what(v) -> str:
    if v is None:
        return "missing"
    name = type(v).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _fix(id_type: IdType, v=None) -> str:
    if id_type == INT:
        if isinstance(v, str) and _CANONICAL_INT.fullmatch(v.strip()):
            return f"pass {int(v)} (an int), not {v!r}"
        return "pass int ids"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"pass {str(v)!r} (a str), not {v}"
    return "pass str ids"


def _cast(arr: pa.Array, want: pa.DataType) -> pa.Array:
    try:
        return arr.cast(want)
    except (pa.ArrowInvalid, OverflowError) as exc:
        raise InputError(f"sample ids out of range for {want} ({exc}): ids must fit in a "
                         "signed 64-bit integer") from None


def parse_text_ids(texts: Iterable[str], id_type: IdType, *, source: str = "--id") -> pa.Array:
    """Ids typed as text (CLI flags, ids files), read by the store's id type.

    On a string store the text is the id, exactly. On an integer store each text must be
    a plain ASCII decimal in canonical form (``-12``, ``0``, ``7``; not ``007``, ``+7``,
    ``-0``, ``٣`` or ``²``), so that one id has one spelling."""
    texts = list(texts)
    if id_type == STR:
        return _text_array(texts, source)
    out = []
    for t in texts:
        if not _CANONICAL_INT.fullmatch(t) or t == "-0":
            loose = re.fullmatch(r"\s*[+-]?[0-9]+\s*", t, re.ASCII)
            hint = (f"write {int(t)}" if loose else
                    "write it in ASCII digits, without leading zeros or a + sign")
            raise InputError(f"{source} {t!r} is not an integer id (this store's ids are "
                             f"integers): {hint}")
        v = int(t) if len(t) <= 21 else _INT64[1] + 1  # (int() of 5000 digits raises)
        if not _INT64[0] <= v <= _INT64[1]:
            raise InputError(f"{source} {t} is out of range: integer ids fit in a signed 64-bit "
                             "integer")
        out.append(v)
    return pa.array(out, pa.int64())


def read_ids_file(path: str, id_type: IdType, data: bytes | str | None = None) -> pa.Array:
    """Ids from a file (or ``data`` already read, e.g. from stdin).

    ``*.json``: a JSON array of ids of the store's type. Otherwise, on an integer store,
    ids separated by whitespace or commas; on a string store, one id per line, exactly
    as stored: lines end at ``\\n`` (or ``\\r\\n``) only, so an id may hold spaces,
    commas or a lone ``\\r``. The file must be UTF-8 without a byte-order mark."""
    text = _decode(path, data)
    if text.startswith("\ufeff"):
        raise InputError(f"ids file {path} starts with a byte-order mark (U+FEFF), which would "
                         "become part of the first id: remove it (save the file as UTF-8 "
                         "without BOM)")
    if path.endswith(".json"):
        return to_store_ids(_json_ids(path, text), id_type)
    if id_type == INT:
        return parse_text_ids([t for t in re.split(r"[\s,]+", text) if t], id_type,
                              source=f"id in {path}")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line break
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    empty = [i + 1 for i, ln in enumerate(lines) if ln == ""]
    if empty:
        raise InputError(f"line {empty[0]} of ids file {path} is empty: string ids are one per "
                         "line, exactly as stored (use a .json array for unusual ids)")
    return _text_array(lines, f"id in {path}, line")


def _decode(path: str, data: bytes | str | None) -> str:
    """The file's text, decoded as UTF-8 by hand: no universal newlines (Python's text
    mode would turn a lone ``\\r`` inside an id into a line break)."""
    if isinstance(data, str):
        return data
    try:
        raw = Path(path).read_bytes() if data is None else data
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot read the ids file {path!r} ({why}): pass a UTF-8 file with "
                         "one id per line, or - for stdin") from None


def _json_ids(path: str, text: str) -> list:
    """The JSON array of an ids file; integers as JSON spells them, only canonically."""
    def integer(t: str) -> int:
        if t == "-0":
            raise InputError(f"ids file {path} holds -0, which is not an integer id: write 0")
        return int(t) if len(t) <= 21 else _INT64[1] + 1  # (int() of 5000 digits raises)

    try:
        values = json.loads(text, parse_int=integer)
    except InputError:
        raise
    except (ValueError, RecursionError) as exc:
        raise InputError(f"ids file {path} is not valid JSON ({str(exc)[:100]}): write a JSON "
                         "array of ids") from None
    if not isinstance(values, list):
        raise InputError(f"ids file {path} must hold a JSON array of ids, got "
                         f"{type(values).__name__}")
    return values


def id_bytes(ids: pa.Array) -> list[bytes]:
    """The one byte encoding of each id that keyed hashes (tombstones, receipts) take."""
    if pa.types.is_integer(ids.type):
        return [b"i:%d" % v for v in ids.to_pylist()]
    return [b"s:" + v.encode() for v in ids.to_pylist()]


def unique_sorted(ids: pa.Array) -> pa.Array:
    """The distinct ids in sort order: the canonical form of a request."""
    uniq = pc.unique(ids)
    return uniq.take(pc.sort_indices(uniq))


def as_numpy(ids: pa.Array) -> np.ndarray:
    """int64 ids as an int64 array, string ids as an object array of str (for hashing)."""
    return ids.to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------- group keys
# A group key (``fit(groups=...)``, ``--group COL``: a person, a user id) has a type like an
# id, ``"int64"`` or ``"string"``, recorded as the schema's ``group_type``, and goes through
# the same conversions: the functions below are the id functions, their messages naming a
# group key instead of a sample id.
_AS_GROUP = (("sample ids", "group keys"), ("sample id", "group key"),
             ("this store's ids", "this store's group keys"), ("integer id", "integer group "
             "key"), ("int ids", "int group keys"), ("str ids", "str group keys"),
             ("an id", "a key"), ("id column", "group column"), ("as the id", "as the group"),
             ("the id", "the group key"), ("give the ids", "give the group keys"),
             ("ids file", "group keys file"), ("id per row", "key per row"),
             ("list (or array) of ids", "list (or array) of group keys"))


def group_wording(call, *args, **kw):
    """``call(*args, **kw)``, its :class:`InputError` reworded for a group key (the id
    functions' checks, and the CLI's ids reading, serve group keys as they are)."""
    try:
        return call(*args, **kw)
    except UnicodeEncodeError:  # Arrow refuses a lone surrogate: no text to compare or hash
        raise InputError("a group key is not valid text (it holds a lone surrogate): pass "
                         "well-formed strings") from None
    except InputError as exc:
        msg = str(exc)
        for a, b in _AS_GROUP:
            msg = msg.replace(a, b)
        raise InputError(msg) from None


def column_group_type(t: pa.DataType, column: str) -> str:
    """The group key type a table column of Arrow type ``t`` gives a store."""
    return group_wording(column_id_type, t, column)


def values_group_type(values: np.ndarray) -> str:
    """The group key type of ``groups=`` given at ingest (every element must agree)."""
    return group_wording(values_id_type, values)


def to_group_keys(values, group_type: str) -> pa.Array:
    """Group keys given through the API, as the store's Arrow array of that type (a key
    of another type is an :class:`InputError`, as for ids)."""
    return group_wording(to_store_ids, values, group_type)


def parse_text_groups(texts: Iterable[str], group_type: str, *, source: str = "--group"
                      ) -> pa.Array:
    """Group keys typed as text (``--group``, ``--groups FILE``), read as ids are."""
    return group_wording(parse_text_ids, texts, group_type, source=source)


def group_bytes(keys: pa.Array) -> list[bytes]:
    """The one byte encoding of each group key that keyed hashes (receipts) take: distinct
    from every id's (:func:`id_bytes`), so a group never hashes like an id."""
    return [b"g" + b for b in id_bytes(keys)]
