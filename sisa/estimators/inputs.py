"""What a user hands ``fit`` and ``predict`` besides arrays: tables, DataFrames (by type,
never by name), group keys, and the checks on them that no store needs to see."""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..store import Store
from ..store.format import columns as colmod
from ..store.format import ids as idmod
from ..store.write.builder import GROUPS_COLUMN
from ..store.write.sources import read_table
from ..store.write.text import from_pandas


def is_table_like(X) -> bool:
    """Inputs that only a label column name can go with (never sniffed by type name: any
    dataframe with ``__arrow_c_stream__`` is read as Arrow when ``y`` names its label)."""
    return isinstance(X, (str, os.PathLike, Store, pa.Table, pa.RecordBatchReader))


def with_groups(X, groups) -> tuple[object, str | None]:
    """A table input and the name of its group column: ``groups`` names one, or holds one
    key per row, added to the table as a column of its own (:data:`GROUPS_COLUMN`)."""
    if groups is None or isinstance(groups, str):
        return X, groups
    if isinstance(X, (str, os.PathLike)):
        raise InputError("with a file, name its group column (groups='COL') rather than "
                         "passing the keys")
    table = read_table(X)
    keys = np.asarray(groups)
    if keys.shape != (table.num_rows,):
        raise InputError(f"groups must have one key per row ({table.num_rows}), got shape "
                         f"{keys.shape}")
    if GROUPS_COLUMN in table.column_names:
        raise InputError(f"the table has a column {GROUPS_COLUMN!r}, the name sisa gives the "
                         "groups: rename it, or pass groups='that column'")
    gtype = idmod.values_group_type(keys)
    return table.append_column(GROUPS_COLUMN, pa.array(keys.tolist(),
                                                       idmod.arrow_type(gtype))), GROUPS_COLUMN


# A numeric label with more distinct values than this share of the rows (and more than
# MANY_CLASSES_MIN of them) is taken for a regression target given to a classifier.
MANY_CLASSES_SHARE, MANY_CLASSES_MIN = 0.1, 50


def refuse_many_classes(store: Store, classes) -> None:
    """Refuse a classifier on a numeric label that looks like a regression target (prices:
    one class per distinct value, near-zero accuracy, and no error otherwise)."""
    schema = store.manifest.schema
    n, k = store.n_rows, len(classes)
    if schema["label_type"] == "string" or k <= max(MANY_CLASSES_SHARE * n, MANY_CLASSES_MIN):
        return
    raise InputError(
        f"the label {schema['label_name']!r} holds {k:,} distinct numeric values in {n:,} rows "
        f"(more than a tenth): it looks like a regression target, and a classifier would learn "
        "one class per value; use a regressor (SISARegressor; on the CLI --model sgd-regressor "
        "or another regression preset), or, if these are classes, pass "
        "allow_many_classes=True (--allow-many-classes)")


def is_frame(X) -> bool:
    """A pandas DataFrame (by type, never by its name: pandas is imported by whoever made
    one)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(X, pd.DataFrame)


def typed_frame(X, y, sample_ids):
    """A DataFrame with any non-numeric column as an Arrow table holding the labels (and
    ids) as columns, with their names and X's columns; None for an all-numeric one (a
    float matrix)."""
    table = from_pandas(X)
    if all(colmod.is_number(t) for t in table.schema.types):
        return None
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != table.num_rows:
        raise InputError(f"y must be 1-D with one label per row ({table.num_rows}), got shape "
                         f"{y.shape}")
    feats = table.column_names  # every column a feature, "__x" too (as for a float matrix)
    label = _free("label", feats)
    table = table.append_column(label, pa.array(y))
    ids = None
    if sample_ids is not None:
        ids = _free("__sample_id", feats)
        table = table.append_column(ids, pa.array(np.asarray(sample_ids)))
    return table, label, ids, feats


def _free(name: str, taken: list[str]) -> str:
    """``name``, or ``__name``, ``____name``... : the first no column of X has."""
    while name in taken:
        name = "__" + name
    return name


def typed_rows(X, schema: dict):
    """Rows to predict on a model of typed columns: its feature columns of a DataFrame or
    Arrow table, by name, in the store's types."""
    names = schema["feature_names"]
    if is_frame(X) or hasattr(X, "__arrow_c_stream__"):  # pandas, polars, pyarrow, ...
        X = read_table(X)  # every batch validated
    if not isinstance(X, pa.Table):
        raise InputError(f"this model was fit on typed columns: pass a DataFrame or Arrow "
                         f"table with the columns {names[:8]}{'...' if len(names) > 8 else ''}")
    missing = [n for n in names if n not in X.column_names]
    if missing:
        raise InputError(f"X lacks feature column(s) {missing[:5]}: pass every column the "
                         "model was fit on, by name")
    return colmod.typed([X.column(n) for n in names], names, schema["columns"], 0, True)
