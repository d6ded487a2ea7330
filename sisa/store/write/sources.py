"""Input → a ``pyarrow.dataset``: files by format (Parquet, CSV, Arrow IPC), pandas
DataFrames (by type), any Arrow producer (``__arrow_c_stream__``: polars, duckdb, pyarrow);
Arrow's read errors as one line that names the input and never its values."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from ...errors import InputError
from ..format.arrow_checks import reading, validated
from .text import CsvOptions, from_pandas


def format_for(path: Path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    exts = {p.suffix.lower() for p in files if not p.name.startswith((".", "_"))}
    for fmt, names in (("parquet", {".parquet", ".pq"}), ("csv", {".csv"}),
                       ("ipc", {".arrow", ".feather", ".ipc"})):
        if exts & names:
            return fmt
    raise InputError(
        f"cannot tell the format of {path}: expected .parquet, .csv or .arrow/.feather files"
    )


def csv_only(data, csv: CsvOptions | None) -> CsvOptions | None:
    """CSV options apply to CSV files only (a table or Parquet file keeps its values)."""
    if csv is None or not isinstance(data, (str, os.PathLike)) or not Path(data).exists():
        return None
    return csv if format_for(Path(data)) == "csv" else None


def read_table(data, csv: CsvOptions | None = None) -> pa.Table:
    """The whole input as one table (for holdout splits and predictions), every record
    batch validated before it joins the table (:func:`validated`); ``csv`` reads CSV text
    (:class:`CsvOptions`)."""
    csv = csv_only(data, csv)
    dataset = to_dataset(data, csv)
    what = data if isinstance(data, (str, os.PathLike)) else "the input"
    batches: list[pa.RecordBatch] = []
    stream = iter(dataset.to_batches())
    while True:
        with reading(what):
            rb = next(stream, None)
            if rb is not None:
                rb = validated(rb, what)
                if csv is not None:
                    rb = csv.tidy(rb)
        if rb is None:
            schema = batches[0].schema if batches else dataset.schema
            return pa.Table.from_batches(batches, schema)
        batches.append(rb)


def to_dataset(data, csv: CsvOptions | None = None) -> ds.Dataset:
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise InputError(f"input {path} does not exist: pass a Parquet, CSV or Arrow path")
        store = next((p for p in (path, *path.resolve().parents)
                      if (p / "manifest.json").is_file()), None)
        if store is not None:
            raise InputError(f"input {path} is {'a' if store == path else 'inside a'} sisa store "
                             f"({store}), not a data file: pass the raw Parquet/CSV/Arrow rows")
        fmt = format_for(path)
        with reading(path):
            dataset = ds.dataset(path, format=csv.file_format(path) if csv and fmt == "csv"
                                 else fmt)
        try:
            dataset.schema.names  # noqa: B018 (a forged file's names may not be UTF-8)
        except UnicodeDecodeError:
            raise InputError(f"cannot read {path}: a column name is not UTF-8 text, so the file "
                             "is damaged or forged; check it, or write it again") from None
        return dataset
    if isinstance(data, pa.Table):
        return ds.dataset(data)
    pd = sys.modules.get("pandas")  # imported by whoever made a pandas DataFrame
    if pd is not None and isinstance(data, pd.DataFrame):
        return ds.dataset(from_pandas(data))
    if hasattr(data, "__arrow_c_stream__"):  # polars, duckdb, any Arrow producer: no sniffing
        with reading("the input"):
            return ds.dataset(plain_strings(pa.RecordBatchReader.from_stream(data).read_all()))
    raise InputError(
        f"cannot read training data of type {type(data).__name__}: pass numpy arrays X and y, "
        "a DataFrame (pandas, polars, or any with __arrow_c_stream__), a pyarrow Table, or a "
        "Parquet/CSV/Arrow path"
    )


def plain_strings(table: pa.Table) -> pa.Table:
    """``string_view`` columns (polars exports its strings so) as ``string``: the type of
    every string label, id and group key in a store; a ``dictionary<string_view>`` column
    (a polars Categorical or Enum) keeps its codes with ``string`` values, as Arrow has no
    kernel to decode or cast it."""
    if not any(_is_view(t) for t in table.schema.types):
        return table
    fields, columns = [], []
    for f, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_string_view(f.type):
            f, col = f.with_type(pa.string()), col.cast(pa.string())
        elif _is_view(f.type):
            t = pa.dictionary(f.type.index_type, pa.string(), f.type.ordered)
            f, col = f.with_type(t), pa.chunked_array(
                [pa.DictionaryArray.from_arrays(c.indices, c.dictionary.cast(pa.string()),
                                               ordered=t.ordered)
                 for c in col.chunks], t)
        fields.append(f)
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


def _is_view(t: pa.DataType) -> bool:
    return pa.types.is_string_view(t) or (
        pa.types.is_dictionary(t) and pa.types.is_string_view(t.value_type))
