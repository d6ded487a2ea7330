"""Metrics for judging an unlearned model on wanted (W), unwanted (U) and test rows.

The definitions are sisa's own (after S. Achour, "How to unlearn a learned Machine
Learning model?", arXiv 2410.09935, 2024, whose full text we did not have):

* ``r2``: the usual coefficient of determination, ``1 - SS_res / SS_tot`` (scikit-learn's
  definition, including its convention for a constant target).
* ``exponential_r2``: mean over a set of ``exp(-r**2 / (2 * sigma**2))`` with residual
  ``r = y - y_pred``. It is 1 when every row is explained exactly and tends to 0 when no
  row is explained within a few ``sigma``.
* ``fair_r2``: ``exponential_r2(W) * (1 - exponential_r2(U))``: high only when the model
  explains the wanted rows *and* does not explain the unwanted ones.
* ``accuracy``: fraction of equal labels, for classifiers.
* ``expected_calibration_error``: binary ECE, the mean gap between confidence and
  accuracy over equal-width confidence bins, weighted by the bins' sizes.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.metrics import r2_score

from sisa.errors import InputError

__all__ = [
    "accuracy",
    "expected_calibration_error",
    "exponential_r2",
    "fair_r2",
    "r2",
    "unlearning_report",
]


def _as_1d(a: Any, name: str, *, numeric: bool = True) -> np.ndarray:
    """Return ``a`` as a non-empty 1-D array; numeric arrays must be finite."""
    arr = np.asarray(a)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}: pass one value per row")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty: pass at least one row")
    if numeric:
        try:
            arr = arr.astype(np.float64, copy=False)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be numeric, got dtype {arr.dtype}") from None
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise InputError(f"{name} has {bad} NaN/inf values: drop or impute them first")
    return arr


def _pair(y: Any, y_pred: Any, names: tuple[str, str], *, numeric: bool = True):
    """Validate a (truth, prediction) pair of equal length."""
    yt = _as_1d(y, names[0], numeric=numeric)
    yp = _as_1d(y_pred, names[1], numeric=numeric)
    if yt.shape[0] != yp.shape[0]:
        raise InputError(
            f"{names[0]} has {yt.shape[0]} rows but {names[1]} has {yp.shape[0]}: "
            "pass one prediction per row"
        )
    return yt, yp


def check_sigma(sigma: float) -> float:
    """Return ``sigma`` as a float after checking it is finite and positive.

    Parameters
    ----------
    sigma : float
        Residual scale of the exponential R² and of EMSE.

    Returns
    -------
    float

    Raises
    ------
    InputError
        If ``sigma`` is not a number, not finite, or not > 0.

    Examples
    --------
    >>> check_sigma(2)
    2.0
    """
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise InputError(f"sigma must be a positive number, got {sigma!r}") from None
    if not np.isfinite(s) or s <= 0:
        raise InputError(f"sigma must be finite and > 0, got {sigma!r}: pass e.g. sigma=1.0")
    return s


def r2(y: Any, y_pred: Any) -> float:
    """Coefficient of determination, scikit-learn's definition.

    Parameters
    ----------
    y : array-like of shape (n,)
        True targets (at least two rows).
    y_pred : array-like of shape (n,)
        Predictions.

    Returns
    -------
    float
        ``1 - sum((y - y_pred)**2) / sum((y - mean(y))**2)``. Can be negative. For a
        constant ``y`` it is 1.0 if the predictions are exact and 0.0 otherwise.

    Examples
    --------
    >>> r2([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    0.5
    """
    yt, yp = _pair(y, y_pred, ("y", "y_pred"))
    if yt.shape[0] < 2:
        raise InputError("r2 needs at least 2 rows, got 1: use exponential_r2 for single rows")
    return float(r2_score(yt, yp))


def exponential_r2(y: Any, y_pred: Any, sigma: float) -> float:
    """Exponential R²: mean of ``exp(-r**2 / (2 sigma**2))`` with ``r = y - y_pred``.

    Parameters
    ----------
    y : array-like of shape (n,)
        True targets.
    y_pred : array-like of shape (n,)
        Predictions.
    sigma : float
        Residual scale (> 0): a residual of ``sigma`` scores ``exp(-1/2) ≈ 0.61``.

    Returns
    -------
    float
        A value in [0, 1]; 1 means every row is predicted exactly.

    Examples
    --------
    >>> round(exponential_r2([0.0, 0.0], [0.0, 2.0], sigma=1.0), 6)  # (1 + e^-2) / 2
    0.567668
    """
    yt, yp = _pair(y, y_pred, ("y", "y_pred"))
    s = check_sigma(sigma)
    return float(np.mean(np.exp(-((yt - yp) ** 2) / (2.0 * s * s))))


def fair_r2(y_w: Any, pred_w: Any, y_u: Any, pred_u: Any, sigma: float) -> float:
    """Fair R²: ``exponential_r2(W) * (1 - exponential_r2(U))``.

    Parameters
    ----------
    y_w, pred_w : array-like of shape (n_w,)
        Targets and predictions on the wanted rows.
    y_u, pred_u : array-like of shape (n_u,)
        Targets and predictions on the unwanted rows.
    sigma : float
        Residual scale used by both exponential R² terms.

    Returns
    -------
    float
        A value in [0, 1]; 1 means W is explained exactly and U not at all.

    Examples
    --------
    >>> fair_r2([0.0], [0.0], [0.0], [100.0], sigma=1.0)
    1.0
    >>> fair_r2([0.0], [0.0], [0.0], [0.0], sigma=1.0)
    0.0
    """
    yw, pw = _pair(y_w, pred_w, ("y_w", "pred_w"))
    yu, pu = _pair(y_u, pred_u, ("y_u", "pred_u"))
    return exponential_r2(yw, pw, sigma) * (1.0 - exponential_r2(yu, pu, sigma))


def accuracy(y: Any, y_pred: Any) -> float:
    """Fraction of rows whose predicted label equals the true label.

    Parameters
    ----------
    y : array-like of shape (n,)
        True labels (any dtype that supports ``==``).
    y_pred : array-like of shape (n,)
        Predicted labels.

    Returns
    -------
    float
        A value in [0, 1].

    Examples
    --------
    >>> accuracy(["a", "b", "b", "a"], ["a", "b", "a", "a"])
    0.75
    """
    yt, yp = _pair(y, y_pred, ("y", "y_pred"), numeric=False)
    return float(np.mean(yt == yp))


def expected_calibration_error(y: Any, proba: Any, n_bins: int = 10) -> float:
    """Expected calibration error of binary probabilities.

    Each row's confidence is ``max(p, 1 - p)`` and its prediction ``p > 0.5``; rows go to
    ``n_bins`` equal-width confidence bins on [0.5, 1]; ECE is the size-weighted mean of
    ``|accuracy - mean confidence|`` over the bins. 0 = perfectly calibrated.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels in {0, 1}.
    proba : array-like of shape (n,)
        Probability of class 1.
    n_bins : int, default=10

    Returns
    -------
    float

    Examples
    --------
    >>> round(expected_calibration_error([1, 1, 0, 0], [0.9, 0.9, 0.1, 0.6]), 3)
    0.225
    """
    yt, p = _pair(y, proba, ("y", "proba"))
    if not set(np.unique(yt)) <= {0.0, 1.0}:
        raise InputError("y must hold labels 0 and 1: encode the binary task first")
    if (p < 0).any() or (p > 1).any():
        raise InputError("proba must be probabilities in [0, 1]: pass predict_proba[:, 1]")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise InputError(f"n_bins must be a positive integer, got {n_bins!r}")
    conf = np.maximum(p, 1.0 - p)
    correct = (p > 0.5) == (yt == 1)
    bins = np.minimum(((conf - 0.5) * 2 * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def unlearning_report(
    y_w: Any,
    pred_w: Any,
    y_u: Any,
    pred_u: Any,
    y_test: Any = None,
    pred_test: Any = None,
    *,
    sigma: float | None = None,
    task: Literal["regression", "classification"] = "regression",
) -> dict[str, float]:
    """All metrics for one model on the wanted, unwanted and (optional) test rows.

    Parameters
    ----------
    y_w, pred_w : array-like of shape (n_w,)
        Targets and predictions on the wanted rows W.
    y_u, pred_u : array-like of shape (n_u,)
        Targets and predictions on the unwanted rows U.
    y_test, pred_test : array-like of shape (n_test,), optional
        Held-out rows; both or neither.
    sigma : float, optional
        Residual scale for the exponential and fair R² (regression only); without it
        those keys are left out.
    task : {"regression", "classification"}, default="regression"
        Which metrics to compute.

    Returns
    -------
    dict of str to float
        Regression: ``r2_wanted``, ``r2_unwanted``, ``r2_test`` and, with ``sigma``,
        ``exp_r2_wanted``, ``exp_r2_unwanted``, ``fair_r2``. Classification:
        ``accuracy_wanted``, ``accuracy_unwanted``, ``accuracy_test``. ``*_test`` keys
        only when test rows are given.

    Examples
    --------
    >>> rep = unlearning_report([0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [5.0, 6.0], sigma=1.0)
    >>> rep["r2_wanted"], rep["fair_r2"] > 0.99
    (1.0, True)
    """
    if (y_test is None) != (pred_test is None):
        raise InputError("pass both y_test and pred_test, or neither")
    sets = {"wanted": (y_w, pred_w), "unwanted": (y_u, pred_u)}
    if y_test is not None:
        sets["test"] = (y_test, pred_test)
    if task == "classification":
        return {f"accuracy_{k}": accuracy(*v) for k, v in sets.items()}
    if task != "regression":
        raise InputError(f"task must be 'regression' or 'classification', got {task!r}")
    out = {f"r2_{k}": r2(*v) for k, v in sets.items()}
    if sigma is not None:
        out["exp_r2_wanted"] = exponential_r2(y_w, pred_w, sigma)
        out["exp_r2_unwanted"] = exponential_r2(y_u, pred_u, sigma)
        out["fair_r2"] = out["exp_r2_wanted"] * (1.0 - out["exp_r2_unwanted"])
    return out
