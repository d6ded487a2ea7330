"""Sparse feature blocks: the ``"sparse"`` layout of a slice file.

A scipy CSR matrix (TF-IDF, one-hot) is stored kept sparse: ``features`` is a struct of
two lists per row, ``indices`` (``list<int32>``, the row's column numbers, increasing)
and ``values`` (``list<float32|float64>``), so one sample stays one Arrow row and ids,
slices, the index, tombstones, spill/merge and deletion work as for every layout. The
manifest schema records the layout and the matrix width ``n_features`` (declared by the
input's shape, not derived from its values), never anything else about the rows.

Canonical form (what a row is stored as, so the same rows always give the same bytes and
the same checkpoints): duplicate entries of a row are summed (as scipy reads them),
explicit zeros are dropped, indices are sorted. Every other value is stored exactly:
float32 input stays float32, any other numeric type becomes float64.

Why a struct of two lists rather than ``list<struct<index, value>>``: the same bytes to
within one offsets buffer (4 bytes a row) and the same read speed (``benchmarks/sparse.py``
measures both), and a struct flows through the code that already carries the typed
columns' struct (spill runs, shard reads, concatenation) without a second path.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from ...errors import InputError

SPARSE = "sparse"
INDICES, VALUES = "indices", "values"
MAX_NNZ = 2**31 - 1  # int32 list offsets per batch


def is_sparse_input(X) -> bool:
    """Whether ``X`` is a scipy sparse matrix or array."""
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return False
    return sp.issparse(X)


def is_sparse(schema_info: dict) -> bool:
    """Whether a manifest schema is of the sparse layout."""
    return schema_info.get("layout") == SPARSE


def width(schema_info: dict) -> int:
    """The number of feature columns of a store of either layout."""
    if is_sparse(schema_info):
        return int(schema_info["columns"][0]["n_features"])
    return len(schema_info["feature_names"])


def struct_type(schema_info: dict) -> pa.StructType:
    """The ``features`` struct of a sparse slice file (and of its spill runs)."""
    vtype = pa.float32() if schema_info.get("dtype") == "float32" else pa.float64()
    return pa.struct([pa.field(INDICES, pa.list_(pa.int32())),
                      pa.field(VALUES, pa.list_(vtype))])


def is_block(t: pa.DataType) -> bool:
    """Whether an Arrow type is a sparse block's struct."""
    return pa.types.is_struct(t) and [f.name for f in t] == [INDICES, VALUES]


def checked(X, allow_missing: bool = False):
    """``X`` as a canonical ``scipy.sparse.csr_matrix`` (module doc), after checking its
    structure with plain numpy (never trusting scipy's own invariants on a hand-built
    matrix); an :class:`InputError` naming the first problem otherwise."""
    import scipy.sparse as sp

    shape = getattr(X, "shape", None)
    if (not isinstance(shape, tuple) or len(shape) != 2
            or not all(isinstance(d, (int, np.integer)) for d in shape)):
        raise InputError(f"X is a sparse matrix of shape {shape!r}: it must be 2-D "
                         "(n_samples, n_features)")
    n, d = int(shape[0]), int(shape[1])
    if n <= 0 or d <= 0:
        raise InputError(f"X is a sparse matrix of shape ({n}, {d}): it needs at least one "
                         "row and one column")
    if d > MAX_NNZ:
        raise InputError(f"X has {d:,} columns: sisa stores column numbers as int32 (at most "
                         f"{MAX_NNZ:,}); hash the features into fewer columns")
    fmt = getattr(X, "format", None)
    if fmt != "csr":
        try:
            X = X.tocsr()
        except (ValueError, TypeError, IndexError) as exc:
            raise InputError(f"X is a sparse {fmt} matrix that cannot be read "
                             f"({str(exc).splitlines()[0][:100]}): build a valid CSR "
                             "matrix") from None
    indptr, indices, data = (np.asarray(X.indptr), np.asarray(X.indices), np.asarray(X.data))
    _check_structure(indptr, indices, data, n, d)
    values = data.astype(np.float32 if data.dtype == np.float32 else np.float64)
    for bad, what, fix in ((np.isinf(values), "infinite", "fix or drop those rows"),
                           (np.zeros(0, bool) if allow_missing else np.isnan(values), "NaN",
                            "use a model that allows missing values, or fix or drop them")):
        if bad.any():
            row = int(np.searchsorted(indptr, int(np.flatnonzero(bad)[0]), "right") - 1)
            raise InputError(f"X holds {int(bad.sum())} {what} value(s), the first at row "
                             f"{row}: {fix}")
    out = sp.csr_matrix((values, indices.astype(np.int32), indptr.astype(np.int64)),
                        shape=(n, d), copy=True)
    out.sum_duplicates()  # also sorts each row's indices
    out.eliminate_zeros()
    return out


def _check_structure(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n: int,
                     d: int) -> None:
    """The CSR invariants of an ``(n, d)`` matrix, checked with plain numpy."""
    if indptr.ndim != 1 or len(indptr) != n + 1:
        raise InputError(f"X is a CSR matrix with {len(indptr)} indptr entries for {n} rows "
                         f"(want {n + 1}): its indptr does not match its shape")
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise InputError("X is a CSR matrix whose indptr/indices are not integers: build it "
                         "with scipy.sparse.csr_matrix")
    if data.dtype.kind not in "biuf":
        raise InputError(f"X is a sparse matrix of dtype {data.dtype}: it must hold real "
                         "numbers (integers, floats or booleans)")
    steps = np.diff(indptr.astype(np.int64))
    if indptr[0] != 0 or (steps < 0).any():
        row = int(np.flatnonzero(steps < 0)[0]) if (steps < 0).any() else 0
        raise InputError(f"X is a CSR matrix whose indptr is not non-decreasing from 0 (row "
                         f"{row}): it is ragged or corrupt; rebuild it")
    nnz = int(indptr[-1])
    if nnz != len(indices) or nnz != len(data):
        raise InputError(f"X is a CSR matrix whose indptr ends at {nnz} but holds "
                         f"{len(indices)} indices and {len(data)} values: rebuild it")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= d):
        bad = int(np.flatnonzero((indices < 0) | (indices >= d))[0])
        row = int(np.searchsorted(indptr, bad, "right") - 1)
        raise InputError(f"X is a CSR matrix with column index {int(indices[bad])} at row "
                         f"{row}, outside its {d} columns: fix the indices or the shape")


def blocks(X, rows: int) -> Iterator[pa.StructArray]:
    """A canonical CSR matrix as ``features`` structs of at most ``rows`` rows each."""
    indptr = X.indptr.astype(np.int64)
    for a in range(0, X.shape[0], max(rows, 1)):
        b = min(a + rows, X.shape[0])
        lo, hi = int(indptr[a]), int(indptr[b])
        if hi - lo > MAX_NNZ:
            raise InputError(f"rows {a}..{b} hold {hi - lo:,} stored values, over int32 "
                             "offsets: ingest with a smaller batch_rows")
        offsets = pa.array((indptr[a:b + 1] - lo).astype(np.int32))
        yield pa.StructArray.from_arrays(
            [pa.ListArray.from_arrays(offsets, pa.array(X.indices[lo:hi])),
             pa.ListArray.from_arrays(offsets, pa.array(X.data[lo:hi]))],
            names=[INDICES, VALUES])


def to_csr(block: pa.StructArray, schema_info: dict):
    """A sparse ``features`` struct (one or more slices' rows) as the
    ``scipy.sparse.csr_matrix`` of the store's declared shape."""
    import scipy.sparse as sp

    idx, val = block.field(INDICES), block.field(VALUES)
    offsets = np.asarray(idx.offsets, dtype=np.int64)
    indptr = offsets - (offsets[0] if len(offsets) else 0)
    indices = idx.flatten().to_numpy(zero_copy_only=False)
    data = val.flatten().to_numpy(zero_copy_only=False)
    return sp.csr_matrix((data, indices, indptr), shape=(len(block), width(schema_info)))


def predict_input(X, schema_info: dict):
    """Rows to predict on a sparse-layout model: a CSR matrix of the store's width, in
    canonical form (dense arrays are taken too: they are made sparse)."""
    import scipy.sparse as sp

    d = width(schema_info)
    if not is_sparse_input(X):
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.dtype.kind not in "biuf":
            raise InputError(f"this model was fit on a sparse matrix of {d} columns: pass a "
                             "scipy CSR matrix (or a 2-D numeric array) of that width")
        X = sp.csr_matrix(arr)
    if len(getattr(X, "shape", ())) == 2 and X.shape[1] != d:
        raise InputError(f"X has {X.shape[1]} columns; this model was fit on {d}: pass a "
                         "matrix of the same width (the same vectorizer)")
    out = checked(X, allow_missing=True)
    dtype = np.float32 if schema_info.get("dtype") == "float32" else np.float64
    return out.astype(dtype, copy=False)


def require_sparse_model(est, schema_info: dict) -> None:
    """Refuse, in one line, a shard model that cannot take sparse input (its
    ``input_tags.sparse``), before anything is written."""
    if not is_sparse(schema_info):
        return
    from sklearn.utils import get_tags

    if not get_tags(est).input_tags.sparse:
        final = est.steps[-1][1] if hasattr(est, "steps") and est.steps else est
        raise InputError(f"X is a sparse matrix, which {type(final).__name__} cannot take: use "
                         "a model that takes sparse input (e.g. SGDClassifier, MultinomialNB, "
                         "LogisticRegression), or densify X with X.toarray()")
