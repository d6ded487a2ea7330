"""Validation shared by the baseline estimators: parameters, feature matrices, targets.

Parameters are declared in each estimator's ``_parameter_constraints`` and checked by
scikit-learn's own ``BaseEstimator._validate_params``; :func:`validate_constraints`
only re-raises its error as a :class:`ParameterError`, which is both sisa's
:class:`~sisa.errors.InputError` (what the CLI and the tests catch) and scikit-learn's
``InvalidParameterError`` (what scikit-learn's tooling expects).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import InvalidParameterError

from sisa.errors import InputError
from sisa.metrics import _as_1d

__all__ = ["INF", "ParameterError", "check_X", "check_Xy", "validate_constraints"]

# Upper bound of the open intervals in ``_parameter_constraints``: an ``Interval`` whose
# right end is None admits inf, and every baseline needs finite numbers.
INF = math.inf


class ParameterError(InputError, InvalidParameterError):
    """A constructor parameter of a baseline estimator is out of its declared range."""


def validate_constraints(estimator: BaseEstimator) -> None:
    """Check ``estimator``'s parameters against its ``_parameter_constraints``.

    Parameters
    ----------
    estimator : BaseEstimator
        An estimator that declares ``_parameter_constraints``.

    Raises
    ------
    ParameterError
        With scikit-learn's message (it names the parameter, the range and the value).
    """
    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise ParameterError(str(exc)) from None


def check_X(X: Any, name: str = "X", n_features: int | None = None) -> np.ndarray:
    """Return ``X`` as a finite, non-empty, dense 2-D float64 array.

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
        Numeric features. Sparse matrices are refused (the baselines solve dense
        systems), as are complex values (casting would drop the imaginary part).
    name : str, default="X"
        How error messages call the argument.
    n_features : int, optional
        Columns the fitted model expects.

    Returns
    -------
    ndarray of shape (n_rows, n_features), float64
        ``X`` itself when it already is such an array (no copy).

    Raises
    ------
    InputError
        If any of the above does not hold; the message says how to fix it.
    """
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise InputError(f"sparse {name} is not supported: pass a dense array ({name}.toarray())")
    try:
        arr = np.asarray(X)
    except ValueError:  # ragged nested lists
        raise InputError(f"{name} must be a rectangular 2-D array: rows differ in length") from None
    # The wording of the next three includes what scikit-learn's estimator checks look for.
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (rows, features), got shape {arr.shape}: "
            "Reshape your data, e.g. X.reshape(-1, 1) for a single feature"
        )
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty (shape {arr.shape}): pass at least one row")
    if arr.shape[1] == 0:
        raise InputError(
            f"{name} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if np.iscomplexobj(arr):
        raise InputError(f"Complex data not supported: {name} must be real-valued")
    try:
        arr = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        msg = f"{name} must be numeric, got dtype {arr.dtype}: encode it first"
        raise InputError(msg) from None
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(f"{name} has {bad} NaN/inf values: drop or impute them first")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(
            f"{name} has {arr.shape[1]} features but the model was fit on {n_features}: "
            "pass the columns it was fit on"
        )
    return arr


def check_Xy(
    X: Any, y: Any, names: tuple[str, str], n_features: int | None, numeric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a feature matrix and its targets together.

    Parameters
    ----------
    X : array-like of shape (n_rows, n_features)
        See :func:`check_X`.
    y : array-like of shape (n_rows,)
        One target per row; a single column is accepted.
    names : (str, str)
        How error messages call ``X`` and ``y``.
    n_features : int or None
        Columns the fitted model expects (None: any).
    numeric : bool
        Whether ``y`` must be finite numbers (regression) or may be any labels.

    Returns
    -------
    X : ndarray of shape (n_rows, n_features), float64
    y : ndarray of shape (n_rows,)

    Raises
    ------
    InputError
        If either is unusable or their row counts differ.
    """
    Xa = check_X(X, names[0], n_features)
    ya = _as_1d(y, names[1], numeric=numeric)
    if len(ya) != len(Xa):
        raise InputError(
            f"{names[0]} has {len(Xa)} rows but {names[1]} has {len(ya)}: pass one target per row"
        )
    return Xa, ya
