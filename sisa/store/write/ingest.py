"""Turn whatever the user has into a stream of validated column batches.

Accepted: numpy ``X`` (+ ``y``), pandas DataFrames, pyarrow Tables, and Parquet,
CSV or Arrow IPC files or directories (read through ``pyarrow.dataset`` in record
batches, so a file larger than memory streams through).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from ...errors import InputError
from ..format import columns as colmod
from ..format import ids as idmod
from ..format import sparse
from ..format.arrow_checks import ARROW_ERRORS, reading, validated
from .pages import table_batches
from .sources import csv_only, to_dataset
from .text import CsvOptions

SMALL_FLOATS = {pa.float16(), pa.float32(), pa.int8(), pa.uint8(), pa.int16(), pa.uint16(),
                pa.bool_()}


@dataclass
class Batch:
    """One validated chunk of rows, columns as numpy arrays."""

    ids: np.ndarray | pa.Array | None  # None: ids are row numbers in the input
    X: np.ndarray | pa.StructArray  # a float matrix, or typed columns (sisa.store.format.columns)
    y: np.ndarray
    groups: np.ndarray | None
    deletion_prob: np.ndarray | None


@dataclass
class Source:
    """A re-iterable description of the input: its columns and its batches."""

    feature_names: list[str]
    label_name: str
    label_type: pa.DataType
    id_name: str | None
    dtype: np.dtype
    batches: Iterator[Batch]
    id_type: idmod.IdType = idmod.INT  # row numbers unless the input names its ids
    rows: int | None = None  # the row count, when known without reading the rows
    table: TableInput | None = None  # a table or file: how to read parts of it elsewhere
    columns: list[dict] | None = None  # per feature column kind/type: the "columns" layout
    group_type: str | None = None  # the group keys' type (sisa.store.format.ids), if grouped
    layout: str = colmod.COLUMNS  # or sparse.SPARSE: one sparse block (sisa.store.format.sparse)


@dataclass(frozen=True)
class TableInput:
    """A table or file input, for readers of its parts (:mod:`sisa.store.write.parallel_ingest`).

    Attributes
    ----------
    dataset : pyarrow.dataset.Dataset
        The input.
    columns : Columns
        Which columns to read and how a record batch becomes a checked :class:`Batch`.
    what : str
        How error messages name the input.
    """

    dataset: ds.Dataset
    columns: Columns
    what: str


def checked_batches(record_batches, columns: Columns, what: str | os.PathLike,
                    first_row: int = 0) -> Iterator[Batch]:
    """Record batches as checked :class:`Batch` es; errors name rows from ``first_row``."""
    offset = first_row
    stream = iter(record_batches)
    while True:
        with reading(what):
            rb = next(stream, None)
            if rb is not None:  # validated before any value is used, CSV tidying included
                rb = validated(rb, what)
                if columns.csv is not None:  # text checks: invalid UTF-8
                    rb = columns.csv.tidy(rb)
        if rb is None:
            break
        if rb.num_rows:
            yield columns.batch(rb, offset)
            offset += rb.num_rows


def _dtype(dtype) -> np.dtype:
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out is None or out.name not in ("float32", "float64"):  # dtype == None is True
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    return out


def _check_label(y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"y must be 1-D with one label per row ({n}), got shape {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise InputError(f"y holds {int((~np.isfinite(y)).sum())} NaN/inf labels: drop or fix them")
    if y.dtype.kind == "O" and any(v is None for v in y.tolist()):
        raise InputError("y holds missing labels: drop or fill those rows first")
    return y


def _check_features(X: np.ndarray, names: list[str], offset: int,
                    allow_missing: bool = False) -> None:
    bad = np.isinf(X) if allow_missing else ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        col_list = sorted({names[c] for c in cols.tolist()})[:5]
        raise InputError(
            f"{int(bad.sum())} non-finite feature values (NaN or inf), first at row "
            f"{int(rows[0]) + offset}, in column(s) {col_list}: " + (
                "fix or drop them" if allow_missing else "use a model that allows missing "
                "values, put SimpleImputer in the shard pipeline, or impute or drop them "
                "before ingest"))


def _label_type(arr: np.ndarray) -> pa.DataType:
    if arr.dtype.kind in "iub":
        return pa.int64()
    if arr.dtype.kind == "f":
        return pa.float64()
    if arr.dtype.kind in "USO":
        return pa.string()
    raise InputError(f"labels must be integers, floats or strings, got dtype {arr.dtype}")


def _as_keys(values: np.ndarray) -> np.ndarray:
    """Object arrays holding only integers become int64, so ids 1, 2, 3 are the same ids
    (same hash, same store) whichever array type carried them."""
    if values.dtype.kind == "O" and values.size and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool)
            for v in values.ravel().tolist()):
        return values.astype(np.int64)
    return values


def from_arrays(X, y, sample_ids=None, groups=None, deletion_prob=None, dtype=None,
                allow_missing: bool = False) -> Source:
    """Source over in-memory numpy arrays (one batch); with ``allow_missing``, NaN
    features (missing values) are kept. A scipy sparse ``X`` is kept sparse
    (:mod:`sisa.store.format.sparse`)."""
    if sparse.is_sparse_input(X):
        return sparse_source(X, y, sample_ids, groups, deletion_prob, dtype, allow_missing)
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"X is empty (shape {X.shape}): there is nothing to train on")
    if X.dtype.kind not in "biuf":
        raise InputError(
            f"X must be numeric, got dtype {X.dtype}: encode categorical columns first"
        )
    y = _check_label(np.asarray(y), len(X))
    out_dtype = _dtype(dtype) if dtype else (
        np.dtype(np.float64) if X.dtype in (np.float64, np.int64, np.int32, np.uint32,
                                            np.uint64) else np.dtype(np.float32))
    names = [f"x{i}" for i in range(X.shape[1])]
    Xc = np.ascontiguousarray(X, dtype=out_dtype)
    _check_features(Xc, names, 0, allow_missing)
    ids = None if sample_ids is None else np.asarray(sample_ids)
    if ids is not None and ids.shape != (len(X),):
        raise InputError(f"sample_ids must have one id per row ({len(X)}), got shape {ids.shape}")
    id_type = idmod.INT if ids is None else idmod.values_id_type(ids)
    g = None if groups is None else _as_keys(np.asarray(groups))
    if g is not None and g.shape != (len(X),):
        raise InputError(f"groups must have one key per row ({len(X)}), got shape {g.shape}")
    group_type = None if g is None else idmod.values_group_type(g)
    p = None if deletion_prob is None else np.asarray(deletion_prob, dtype=np.float64)
    if p is not None and p.shape != (len(X),):
        raise InputError(f"deletion_prob must have one value per row ({len(X)}), got shape "
                         f"{p.shape}")
    batch = Batch(ids, Xc, y, g, p)
    return Source(names, "label", _label_type(y), None, out_dtype, iter([batch]), id_type,
                  len(X), group_type=group_type)


def from_table(
    data,
    label: str,
    *,
    id_column: str | None = None,
    group_column: str | None = None,
    deletion_prob_column: str | None = None,
    feature_columns: list[str] | None = None,
    dtype=None,
    batch_rows: int = 65_536,
    allow_missing: bool = False,
    csv: CsvOptions | None = None,
) -> Source:
    """Source over a DataFrame, Table or file/directory, streamed in record batches.
    Column problems are reported before any row is read; row problems (missing values,
    non-finite features) name the first bad row. All-numeric features are stored as a
    float matrix; any other column kind selects typed columns (:mod:`sisa.store.format.columns`).
    ``allow_missing`` keeps missing feature values; ``csv`` reads CSV text
    (:class:`CsvOptions`)."""
    csv = csv_only(data, csv)
    dataset = to_dataset(data, csv)
    schema = dataset.schema
    special = [c for c in (label, id_column, group_column, deletion_prob_column) if c]
    feats = _feature_columns(schema, special, feature_columns)
    entries = None
    if not all(colmod.is_number(schema.field(f).type) for f in feats):
        entries = [colmod.entry(f, schema.field(f).type) for f in feats]
    out_dtype = _dtype(dtype) if dtype else (
        np.dtype(np.float32) if all(schema.field(f).type in SMALL_FLOATS for f in feats)
        else np.dtype(np.float64)
    )
    id_type = idmod.column_id_type(schema.field(id_column).type, id_column) if id_column else \
        idmod.INT
    ltype = schema.field(label).type
    label_type = (pa.int64() if pa.types.is_integer(ltype) or pa.types.is_boolean(ltype)
                  else pa.float64() if pa.types.is_floating(ltype) else pa.string())
    columns = Columns(feats, label, label_type, id_column, group_column, deletion_prob_column,
                      out_dtype, allow_missing, entries, csv)
    what = data if isinstance(data, (str, os.PathLike)) else "the input"

    def stream() -> Iterator[pa.RecordBatch]:  # lazy: a parallel ingest never scans here
        yield from table_batches(dataset, columns.names, batch_rows)

    group_type = (idmod.column_group_type(schema.field(group_column).type, group_column)
                  if group_column else None)
    return Source(feats, label, label_type, id_column, out_dtype,
                  checked_batches(stream(), columns, what), id_type, _known_rows(dataset),
                  TableInput(dataset, columns, str(what)), columns=entries,
                  group_type=group_type)


def _known_rows(dataset: ds.Dataset) -> int | None:
    """The row count from metadata alone (in-memory tables, Parquet and Arrow files)."""
    fmt = getattr(dataset, "format", None)
    if fmt is not None and not isinstance(fmt, (ds.ParquetFileFormat, ds.IpcFileFormat)):
        return None  # CSV: only a full read counts its rows
    try:
        return dataset.count_rows()
    except ARROW_ERRORS:  # a damaged file: the read reports it, naming the file
        return None


def _feature_columns(schema: pa.Schema, special: list[str],
                     feature_columns: list[str] | None) -> list[str]:
    """The feature columns, checked: present, each named once, none of them the
    label/id/group/deletion-probability column (their types:
    :func:`sisa.store.format.columns.entry`)."""
    reused = sorted({c for c in special if special.count(c) > 1})
    if reused:
        raise InputError(f"column(s) {reused} are given for two roles (label, id, group, "
                         "deletion probability): give each role its own column")
    missing = [c for c in special + list(feature_columns or []) if c not in schema.names]
    if missing:
        raise InputError(f"column(s) {missing} not found; the input has {schema.names}")
    feats = list(feature_columns) if feature_columns else [
        n for n in schema.names if n not in special and not n.startswith("__")
    ]
    clash = [f for f in feats if f in special]
    if clash:
        raise InputError(f"column(s) {clash} are the label/id/group/deletion-probability "
                         "column and cannot also be features: drop them from feature_columns")
    if not feats:
        raise InputError("the input has no feature columns besides the label/id columns")
    twice = sorted({f for f in feats if feats.count(f) > 1})
    if twice:
        raise InputError(f"feature column(s) {twice} are named more than once: name each once")
    return feats


@dataclass(frozen=True)
class Columns:
    """How one record batch of a table becomes a checked :class:`Batch`."""

    feats: list[str]
    label: str
    label_type: pa.DataType
    id_column: str | None
    group_column: str | None
    deletion_prob_column: str | None
    dtype: np.dtype
    allow_missing: bool = False
    entries: list[dict] | None = None  # typed columns (None: a float matrix)
    csv: CsvOptions | None = None

    @property
    def names(self) -> list[str]:
        """Every column read: features, then the label, id, group and probability columns."""
        return self.feats + [c for c in (self.label, self.id_column, self.group_column,
                                         self.deletion_prob_column) if c]

    def batch(self, rb: pa.RecordBatch, offset: int) -> Batch:
        if self.entries is not None:
            X = colmod.typed([rb.column(f) for f in self.feats], self.feats, self.entries,
                             offset, self.allow_missing)
        else:
            X = self._matrix(rb, offset)
        ycol = rb.column(self.label)
        if ycol.null_count:
            raise InputError(f"label column {self.label!r} has {ycol.null_count} missing "
                             f"value(s), the first at row {offset + _first_null(ycol)}: drop or "
                             "fill those rows")
        y = _check_label(ycol.cast(self.label_type).to_numpy(zero_copy_only=False), rb.num_rows)
        ids = None
        if self.id_column:
            ids = rb.column(self.id_column)
            if ids.null_count:
                raise InputError(f"id column {self.id_column!r} has {ids.null_count} missing "
                                 "values: every row needs an id")
            if pa.types.is_dictionary(ids.type):
                ids = ids.dictionary_decode()
        return Batch(ids, X, y, _plain(rb, self.group_column),
                     _plain(rb, self.deletion_prob_column))


    def _matrix(self, rb: pa.RecordBatch, offset: int) -> np.ndarray:
        """The dense layout's float rows (a missing value is NaN, if allowed)."""
        cols = []
        for f in self.feats:
            col = rb.column(f)
            if col.null_count and not self.allow_missing:
                raise InputError(
                    f"feature column {f!r} has {col.null_count} missing value(s), the first "
                    f"at row {offset + _first_null(col)}: use a model that allows missing "
                    "values (e.g. HistGradientBoosting), put SimpleImputer in the shard "
                    "pipeline, or impute or drop them before ingest")
            if col.null_count:
                col = col.cast(pa.float64())
            cols.append(col.to_numpy(zero_copy_only=False))
        X = np.column_stack(cols).astype(self.dtype, copy=False)
        _check_features(X, self.feats, offset, self.allow_missing)
        return X


def _first_null(col: pa.Array) -> int:
    return int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])


def _plain(rb: pa.RecordBatch, name: str | None) -> np.ndarray | None:
    """An optional column as numpy; missing values are refused."""
    if not name:
        return None
    c = rb.column(name)
    if c.null_count:
        raise InputError(f"column {name!r} has {c.null_count} missing values")
    if pa.types.is_dictionary(c.type):  # a categorical group column: its keys, not codes
        c = c.dictionary_decode()
    return c.to_numpy(zero_copy_only=False)


def sparse_source(X, y, sample_ids=None, groups=None, deletion_prob=None, dtype=None,
           allow_missing: bool = False, batch_rows: int = 65_536):
    """The :class:`Source` of a scipy sparse ``X`` with labels ``y``:
    every check (structure, labels, ids) runs before any row is written."""
    csr = sparse.checked(X, allow_missing)
    if dtype is not None:
        csr = csr.astype(_dtype(dtype), copy=False)
    n, d = csr.shape
    dense = from_arrays(np.zeros((n, 1)), y, sample_ids, groups, deletion_prob)
    batch = next(dense.batches)
    vtype = "float32" if csr.dtype == np.float32 else "float64"
    entry = {"kind": sparse.SPARSE, "type": f"struct<indices: list<int32>, values: list<{vtype}>>",
             "n_features": d}

    def batches() -> Iterator:
        for k, feats in enumerate(sparse.blocks(csr, batch_rows)):
            part = slice(k * batch_rows, k * batch_rows + len(feats))
            yield Batch(
                None if batch.ids is None else batch.ids[part], feats, batch.y[part],
                None if batch.groups is None else batch.groups[part],
                None if batch.deletion_prob is None else batch.deletion_prob[part])

    return Source([], dense.label_name, dense.label_type, None, csr.dtype, batches(),
                         dense.id_type, n, columns=[entry], group_type=dense.group_type,
                         layout=sparse.SPARSE)
