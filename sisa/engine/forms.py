"""What form of ``X`` a shard model takes, and handing it its rows in that form.

Decided from the estimator, never from the data: scikit-learn's input tags
(``allow_nan``, ``categorical``, ``string``) and, where the tags cannot say it, the
documented parameter that does (``HistGradientBoosting*``'s ``categorical_features=
"from_dtype"`` takes pandas ``category`` columns; a ``ColumnTransformer`` selects columns
of a DataFrame by name; a ``Pipeline`` takes what its first step takes).

Forms: a store of dense float rows always gives a float array (as it always has). A
store of typed columns (:mod:`sisa.store.format.columns`) gives a pandas DataFrame, named by
the feature names, to a model that takes one, and a float array otherwise: numbers,
booleans (0/1), dates (days since 1970-01-01) and timestamps (seconds since the epoch)
as floats with NaN for a missing value; category columns as pandas ``category`` whose
categories are the sorted distinct values of the rows handed over. At fit those are a
shard's own rows, so the list is exact under forget; at predict, the rows predicted
(the models map categories by value, not by code). A store of a sparse block
(:mod:`sisa.store.format.sparse`) gives a ``scipy.sparse.csr_matrix`` of its declared width to
a model whose ``input_tags.sparse`` is True, and refuses any other model before anything
is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..store.format import columns, sparse


@dataclass(frozen=True)
class Accepts:
    """What a model takes.

    Attributes
    ----------
    frame : bool
        A pandas DataFrame (columns by name).
    categorical : bool
        pandas ``category`` columns.
    nan : bool
        Missing values (NaN).
    """

    frame: bool
    categorical: bool
    nan: bool


def accepts(est) -> Accepts:
    """What ``est`` takes (see the module doc)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.utils import get_tags

    if isinstance(est, Pipeline):
        first = next((s for _, s in est.steps if _used(s)), None)
        if first is None:
            return Accepts(False, False, False)
        return Accepts(accepts(first).frame, accepts(first).categorical, _nan(est)[0])
    if isinstance(est, ColumnTransformer):
        parts = [accepts(t) for _, t, _ in est.transformers if _used(t)]
        return Accepts(True, any(p.categorical for p in parts), _nan(est)[0])
    tags = get_tags(est).input_tags
    if getattr(est, "categorical_features", None) == "from_dtype":  # HistGradientBoosting
        return Accepts(True, True, tags.allow_nan)
    return Accepts(tags.categorical or tags.string, tags.categorical, tags.allow_nan)


def _used(step) -> bool:
    return step is not None and not (isinstance(step, str) and step in ("drop", "passthrough"))


def _nan(est) -> tuple[bool, bool]:
    """Whether ``est`` takes NaN, and whether none is left in what it outputs. The tags
    give the first (``StandardScaler`` takes NaN and passes it on); the second is known
    for imputers (``sklearn.impute``) and ``OneHotEncoder`` (NaN is a category), and is
    followed through pipelines and column transformers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.utils import get_tags

    if isinstance(est, Pipeline):
        for _, step in est.steps:
            if not _used(step):
                continue
            takes, clears = _nan(step)
            if not takes or clears:
                return takes, clears
        return True, False
    if isinstance(est, ColumnTransformer):
        parts = [_nan(t) for _, t, _ in est.transformers if _used(t)]
        if est.remainder == "passthrough":
            parts.append((True, False))
        elif _used(est.remainder):
            parts.append(_nan(est.remainder))
        return all(p[0] for p in parts), all(p[1] for p in parts)
    takes = get_tags(est).input_tags.allow_nan
    clears = type(est).__module__.startswith("sklearn.impute") or isinstance(est, OneHotEncoder)
    return takes, takes and clears


def check(est, schema_info: dict) -> None:
    """Refuse, in one line naming the fix, a store whose column kinds ``est`` cannot take
    (before anything is trained or written)."""
    sparse.require_sparse_model(est, schema_info)
    if not columns.is_columns(schema_info):
        return
    cats = [n for n, e in zip(schema_info["feature_names"], schema_info["columns"],
                              strict=True) if e["kind"] == "category"]
    if cats and not accepts(est).categorical:
        final = est.steps[-1][1] if hasattr(est, "steps") and est.steps else est
        more = f" and {len(cats) - 3} more" if len(cats) > 3 else ""
        raise InputError(
            f"feature column(s) {cats[:3]}{more} are categories (text), which "
            f"{type(final).__name__} cannot take: use --model hgb (HistGradientBoosting*("
            "categorical_features='from_dtype')) or a shard Pipeline with OneHotEncoder("
            "handle_unknown='ignore'); if a number column was read as text, name its "
            "missing-value marker with --na-values (na_values=)")


def _float(a: pa.Array, dtype: np.dtype) -> np.ndarray:
    t = a.type
    if pa.types.is_date(t):
        a = a.cast(pa.date32()).cast(pa.int32())
    elif pa.types.is_timestamp(t):
        a = pc.divide(a.cast(pa.int64()).cast(pa.float64()),
                      float({"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]))
    return a.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def model_input(X, schema_info: dict, acc: Accepts):
    """Rows as the model takes them: a float array as it is (dense stores), or the
    ``features`` struct of typed columns as a DataFrame or float array (module doc), or
    a sparse block as a ``scipy.sparse.csr_matrix`` of the store's width."""
    if not isinstance(X, pa.StructArray):
        return X
    if sparse.is_sparse(schema_info):
        return sparse.to_csr(X, schema_info)
    dtype = np.dtype(schema_info.get("dtype", "float64"))
    names = schema_info["feature_names"]
    children = X.flatten()
    if not acc.frame:
        cols = [_float(a, dtype) for a in children]
        return np.column_stack(cols) if cols else np.empty((len(X), 0), dtype)
    import pandas as pd

    data = {}
    for n, a in zip(names, children, strict=True):
        if pa.types.is_dictionary(a.type) or pa.types.is_string(a.type):
            values = a.dictionary_decode() if pa.types.is_dictionary(a.type) else a
            cats = sorted(pc.unique(values.drop_null()).to_pylist())
            codes = pc.index_in(values, value_set=pa.array(cats, pa.string()))
            data[n] = pd.Categorical.from_codes(
                codes.fill_null(-1).to_numpy(zero_copy_only=False), categories=cats)
        else:
            data[n] = _float(a, dtype)
    return pd.DataFrame(data, columns=names)
