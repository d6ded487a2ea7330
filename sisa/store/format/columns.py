"""Typed feature columns: the ``"columns"`` layout of a slice file.

A store has one of two layouts, recorded in its manifest schema:

* dense (no ``"layout"`` key): ``features`` is a ``fixed_size_list<float>``, one float
  row per sample. Every all-numeric input is stored so (a missing value is NaN there),
  byte for byte as stores were always written.
* ``"columns"``: ``features`` is a struct with one child per feature column, each its own
  Arrow type, nulls native. Chosen when any feature column is not a number: strings and
  dictionaries (kind ``category``), dates, timestamps. ``schema["columns"]`` lists each
  column's kind and type, never anything derived from the rows (no category list).

A category column is stored dictionary-encoded *per slice file*: the dictionary is
rebuilt from the slice's own rows every time the slice is written
(:func:`canonical`), so it holds exactly the values present in those rows, in order
of first appearance. A deleted row's category leaves the file with the row. Further
column kinds (a sparse block) are further entries of ``schema["columns"]``.

Typed slice files are zstd-compressed Arrow IPC (:func:`write_options`): their columns
are converted on every read anyway, so the zero-copy reads that keep dense slices
uncompressed buy nothing, and text and dictionary codes compress several times.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import InputError
from . import sparse

COLUMNS = "columns"
FEATURES = "features"
CATEGORY = pa.dictionary(pa.int32(), pa.string())


def is_columns(schema_info: dict) -> bool:
    """Whether a manifest schema is of the typed-columns layout."""
    return schema_info.get("layout") == COLUMNS


def is_number(t: pa.DataType) -> bool:
    """Types the dense float layout stores (as today: booleans are numbers there)."""
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def entry(name: str, t: pa.DataType) -> dict:
    """The manifest entry (kind and stored type) of feature column ``name`` of input type
    ``t``; an :class:`InputError` for a type sisa does not store."""
    if pa.types.is_integer(t):
        return {"kind": "number", "type": "int64"}
    if pa.types.is_floating(t):
        return {"kind": "number", "type": "float64" if t == pa.float64() else "float32"}
    if pa.types.is_boolean(t):
        return {"kind": "bool", "type": "bool"}
    if _is_text(t) or (pa.types.is_dictionary(t) and (
            _is_text(t.value_type) or pa.types.is_integer(t.value_type))):
        # a categorical of integers (pandas Categorical([3, 7])): its values as text
        return {"kind": "category", "type": "dictionary<string>"}
    if pa.types.is_date(t):
        return {"kind": "date", "type": "date32"}
    if pa.types.is_timestamp(t):
        return {"kind": "timestamp", "type": "timestamp", "unit": t.unit, "tz": t.tz}
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        raise InputError(f"feature column {name!r} has type {t} (bytes, not UTF-8 text), which "
                         "sisa cannot store: if it is text, re-encode the file as UTF-8; "
                         "otherwise drop the column (or name the others with --features)")
    raise InputError(
        f"feature column {name!r} has type {t}, which sisa cannot store as a feature: "
        "drop it (or name the others with feature_columns / --features), or convert it to "
        "numbers, strings (categories), booleans or dates")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def stored_type(e: dict) -> pa.DataType:
    """The Arrow type a slice file gives a column of manifest entry ``e``."""
    kind = e.get("kind")
    if kind == "number" and e.get("type") in ("int64", "float32", "float64"):
        return pa.type_for_alias(e["type"])
    if kind == "bool":
        return pa.bool_()
    if kind == "category":
        return CATEGORY
    if kind == "date":
        return pa.date32()
    if kind == "timestamp" and e.get("unit") in ("s", "ms", "us", "ns"):
        return pa.timestamp(e["unit"], e.get("tz"))
    raise InputError(f"the store's schema has a feature column entry {e!r} this version of "
                     "sisa does not know: upgrade sisa")


def run_type(e: dict) -> pa.DataType:
    """The type in spill runs: categories as plain strings (one dictionary per slice is
    built when the slice is written)."""
    return pa.string() if e.get("kind") == "category" else stored_type(e)


def struct_type(schema_info: dict, run: bool = False) -> pa.StructType:
    """The ``features`` struct of a slice file (``run``: of a spill run)."""
    if sparse.is_sparse(schema_info):
        return sparse.struct_type(schema_info)
    to = run_type if run else stored_type
    return pa.struct([pa.field(n, to(e)) for n, e in
                      zip(schema_info["feature_names"], schema_info["columns"], strict=True)])


def typed(arrays: list[pa.Array], names: list[str], entries: list[dict], offset: int,
          allow_missing: bool) -> pa.StructArray:
    """Input columns as the ``features`` struct of a run: dictionaries decoded, NaN made
    null (one missing marker), infinities and (unless ``allow_missing``) nulls refused
    with the first bad row (counted from ``offset``)."""
    out = []
    for a, n, e in zip(arrays, names, entries, strict=True):
        if isinstance(a, pa.ChunkedArray):
            a = a.combine_chunks()
        if pa.types.is_dictionary(a.type):
            a = a.dictionary_decode()
        if pa.types.is_floating(a.type):
            if pc.any(pc.is_inf(a)).as_py():
                raise InputError(f"feature column {n!r} holds infinite values, the first at row "
                                 f"{offset + _first(pc.is_inf(a))}: fix or drop those rows")
            a = pc.if_else(pc.is_nan(a), pa.scalar(None, a.type), a)
        _same_zone(a.type, n, e)
        if a.null_count and not allow_missing:
            raise InputError(
                f"feature column {n!r} has {a.null_count} missing value(s), the first at row "
                f"{offset + _first(a.is_null())}: use a model that allows missing values "
                "(e.g. HistGradientBoosting), put SimpleImputer in the shard pipeline, or "
                "impute or drop them before ingest")
        try:
            out.append(a.cast(run_type(e)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"feature column {n!r} does not fit its type {run_type(e)} "
                             f"({str(exc).splitlines()[0][:120]}): give it one type") from None
    return pa.StructArray.from_arrays(out, names=names)


def _same_zone(t: pa.DataType, name: str, e: dict) -> None:
    """Naive timestamps on a column of zoned ones (or the reverse) would be read as UTC
    wall times and silently shift: refused."""
    if e.get("kind") == "timestamp" and pa.types.is_timestamp(t) and (
            (t.tz is None) != (e.get("tz") is None)):
        stored = f"in time zone {e['tz']}" if e.get("tz") else "without a time zone"
        raise InputError(f"feature column {name!r} holds timestamps "
                         f"{'without' if t.tz is None else 'with'} a time zone, but the "
                         f"model's are {stored}: give them the same kind (pandas: "
                         "Series.dt.tz_localize / .dt.tz_convert(None))")


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.fill_null(False).to_numpy(zero_copy_only=False))[0])


def write_options(table: pa.Table) -> pa.ipc.IpcWriteOptions | None:
    """zstd for a slice of typed columns; None (uncompressed, as always) for any other
    file. The same rows give the same bytes: each buffer is compressed on its own."""
    if FEATURES in table.column_names and pa.types.is_struct(table.schema.field(FEATURES).type):
        return pa.ipc.IpcWriteOptions(compression="zstd")
    return None


def canonical(table: pa.Table) -> pa.Table:
    """``table`` with each category column of its ``features`` struct dictionary-encoded
    from its own rows: a dictionary holds the values present, in order of first
    appearance, whatever dictionaries (or unused entries after a filter) the table
    carried. Same rows, same bytes. Other tables are returned as they are."""
    if FEATURES not in table.column_names:
        return table
    col = table.column(FEATURES)
    if not pa.types.is_struct(col.type) or not any(
            pa.types.is_dictionary(f.type) for f in col.type):
        return table
    st: pa.StructType = col.type
    plain = pa.struct([pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type)
                                else f.type) for f in st])
    chunks = [pa.StructArray.from_arrays(
        [c.field(i).dictionary_decode() if pa.types.is_dictionary(f.type) else c.field(i)
         for i, f in enumerate(st)], fields=list(plain)) for c in col.chunks]
    whole = pa.concat_arrays(chunks) if chunks else pa.array([], plain)
    children = [pc.dictionary_encode(whole.field(i)).cast(CATEGORY)
                if pa.types.is_dictionary(f.type) else whole.field(i) for i, f in enumerate(st)]
    feats = pa.StructArray.from_arrays(children, fields=list(st))
    return table.set_column(table.column_names.index(FEATURES), FEATURES, feats)
