"""``sisa predict`` on a store fit on a sparse matrix: DATA (Parquet or Arrow) carries the
rows in the form a sparse store keeps them (:mod:`sisa.store.format.sparse`), one column that is
a struct of ``indices`` (a list of integer column numbers) and ``values`` (a list of
numbers) per row; each batch becomes a CSR matrix of the store's width, checked as
``SISAClassifier.predict`` checks a CSR matrix it is given."""

from __future__ import annotations

import types

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..store.format import sparse


def _is_rows(t: pa.DataType) -> bool:
    if not (pa.types.is_struct(t) and sorted(f.name for f in t) == [sparse.INDICES,
                                                                      sparse.VALUES]):
        return False
    lists = [t.field(sparse.INDICES).type, t.field(sparse.VALUES).type]
    return all(pa.types.is_list(x) or pa.types.is_large_list(x) for x in lists)


def sparse_column(src, schema: dict) -> str:
    """The one column of DATA holding sparse rows, or a one-line error saying how to write
    it."""
    found = [f.name for f in src.schema if _is_rows(f.type)]
    if len(found) != 1:
        why = "has none" if not found else f"has {len(found)} ({found[:3]})"
        raise InputError(
            f"this model was fit on a sparse matrix of {sparse.width(schema)} columns: "
            f"{src.what} must hold one column of struct<indices: list<int32>, values: "
            f"list<double>> (one row each, as a sparse store keeps them) and {why}; or "
            "predict through Python (SISAClassifier.load(store).predict(X_csr))")
    return found[0]


def to_matrix(col: pa.ChunkedArray, schema: dict, what: str):
    """A batch's sparse column as a canonical CSR matrix of the store's width and dtype."""
    block = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    idx, val = block.flatten()  # flatten: the fields as sliced with the struct
    idx, val = (idx, val) if block.type[0].name == sparse.INDICES else (val, idx)
    if block.null_count or idx.null_count or val.null_count:
        raise InputError(f"{what}: a sparse row is null: write an empty list for a row "
                         "with no stored values")
    for arr, kinds, name in ((idx, "iu", sparse.INDICES), (val, "biuf", sparse.VALUES)):
        t = arr.type.value_type
        if not (pa.types.is_integer(t) or ("f" in kinds and (pa.types.is_floating(t)
                                                             or pa.types.is_boolean(t)))):
            raise InputError(f"{what}: sparse {name} are of type {t}: write "
                             f"{'integers' if name == sparse.INDICES else 'numbers'}")
    io, vo = np.asarray(idx.offsets, np.int64), np.asarray(val.offsets, np.int64)
    if not np.array_equal(io - io[0], vo - vo[0]):
        raise InputError(f"{what}: a sparse row has a different number of indices and "
                         "values: write one value per index")
    csr = types.SimpleNamespace(  # checked() validates the three arrays with numpy
        shape=(len(block), sparse.width(schema)), format="csr", indptr=io - io[0],
        indices=idx.flatten().to_numpy(zero_copy_only=False),
        data=val.flatten().to_numpy(zero_copy_only=False))
    out = sparse.checked(csr, allow_missing=True)
    dtype = np.float32 if schema.get("dtype") == "float32" else np.float64
    return out.astype(dtype, copy=False)
