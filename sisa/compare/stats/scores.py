"""What the ε estimator reads and how the challenge scores it.

The statistics (:func:`logit_confidence` for classifiers, :func:`residual` for
regressors: the challenge's, from LiRA), the challenge's forgetting quality and final
score, and plain summaries of per-row ε and of any sample.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from sisa.compare.stats.epsilon import max_epsilon
from sisa.errors import InputError

__all__ = ["final_score", "forgetting_quality", "logit_confidence", "residual", "summarize",
           "summary_stats"]

_TINY = 1e-45  # as the challenge: keeps log finite when a probability is 0
_BUCKET = 0.5


# -- statistics ---------------------------------------------------------------------------------


def logit_confidence(proba: np.ndarray, y: np.ndarray, *, logits: bool = False) -> np.ndarray:
    """Logit-scaled confidence ``log(p_y + 1e-45) - log(sum_{k != y} p_k + 1e-45)``.

    The statistic of the challenge (from LiRA). The wrong-class mass is summed
    directly rather than taken as ``1 - p_y``, which would cancel to 0 for confident
    models.

    Parameters
    ----------
    proba : array of shape (..., n_rows, n_classes)
        Class probabilities, e.g. ``(n_models, n_rows, n_classes)``; or logits when
        ``logits=True`` (a max-shifted softmax is applied in float64).
    y : array of int, shape (n_rows,)
        True class index of each row, in ``[0, n_classes)``.
    logits : bool, default=False

    Returns
    -------
    ndarray of shape (..., n_rows)

    Examples
    --------
    >>> p = np.array([[[0.9, 0.1], [0.5, 0.5]]])  # one model, two rows
    >>> np.round(logit_confidence(p, np.array([0, 1])), 4)
    array([[2.1972, 0.    ]])
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim < 2 or p.shape[-1] < 2:
        raise InputError(
            f"proba must have shape (..., n_rows, n_classes>=2), got {p.shape}; "
            "pass predict_proba output"
        )
    if y.ndim != 1 or y.shape[0] != p.shape[-2]:
        raise InputError(f"y must have shape ({p.shape[-2]},) to match proba, got {y.shape}")
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= p.shape[-1])):
        raise InputError(f"y must hold class indices in [0, {p.shape[-1]}); encode labels first")
    if not np.isfinite(p).all():
        raise InputError("proba holds NaN or inf; check the models' outputs")
    if logits:
        p = np.exp(p - p.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
    elif (p < 0).any():
        raise InputError("proba holds negative values; pass probabilities or set logits=True")
    onehot = np.arange(p.shape[-1]) == y[:, None]  # (n_rows, n_classes)
    p_true = np.where(onehot, p, 0.0).sum(axis=-1)
    p_wrong = np.where(onehot, 0.0, p).sum(axis=-1)
    return np.log(p_true + _TINY) - np.log(p_wrong + _TINY)


def residual(predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Regression statistic: the residual ``y - f(x)`` per model and row.

    Parameters
    ----------
    predictions : array of shape (..., n_rows)
        E.g. ``(n_models, n_rows)``.
    y : array of shape (n_rows,)

    Returns
    -------
    ndarray of shape (..., n_rows)

    Examples
    --------
    >>> residual(np.array([[1.0, 2.0], [0.5, 2.5]]), np.array([1.0, 2.0]))
    array([[ 0. ,  0. ],
           [ 0.5, -0.5]])
    """
    f = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if f.ndim < 1 or y.ndim != 1 or f.shape[-1] != y.shape[0]:
        raise InputError(
            f"predictions {f.shape} and y {y.shape} disagree; predictions end in n_rows=len(y)"
        )
    return y - f


# -- the challenge's scores and summaries ------------------------------------------------------


def _as_eps(eps: np.ndarray) -> np.ndarray:
    e = np.asarray(eps, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise InputError(f"eps must be a non-empty 1-D array, got shape {e.shape}")
    if np.isnan(e).any() or (e < 0).any():
        raise InputError("eps holds NaN or negative values; pass per_example_epsilon output")
    return e


def forgetting_quality(eps: np.ndarray, n_models: int) -> float:
    """The challenge's forgetting-quality score: mean over rows of ``H(ε)``.

    Buckets of width 0.5 from 0 up to ``max_epsilon(n_models)``; bucket ``n``
    (``n = 1, 2, ...``, i.e. ``[0.5(n-1), 0.5n)``) scores ``2 / 2**n``, and
    ``ε >= max_epsilon(n_models)`` scores 0. 1 means indistinguishable everywhere.

    Parameters
    ----------
    eps : array of shape (n_rows,)
        Per-row ε, e.g. from :func:`~sisa.compare.stats.epsilon.per_example_epsilon`.
    n_models : int
        Models per side; the challenge uses the number of unlearned models.

    Returns
    -------
    float
        In ``[0, 1]``.

    Examples
    --------
    >>> forgetting_quality(np.array([0.0, 0.7, 1.2, 9.0]), n_models=64)
    0.4375
    """
    e = _as_eps(eps)
    top = max_epsilon(n_models)
    scores = np.where(e < top, 0.5 ** np.floor(np.minimum(e, top) / _BUCKET), 0.0)
    return float(scores.mean())


def summarize(eps: np.ndarray, bin_width: float = _BUCKET) -> dict[str, object]:
    """Summary statistics and a histogram of per-row ε.

    Parameters
    ----------
    eps : array of shape (n_rows,)
    bin_width : float, default=0.5
        Histogram bin width; bins start at 0 and cover the largest finite value.

    Returns
    -------
    dict
        ``n``, ``mean``, ``median``, ``q05``, ``q25``, ``q75``, ``q95``, ``max``,
        ``n_zero`` (rows with ε = 0), ``n_inf``, ``bin_edges`` and ``counts``
        (lists; finite values only, the last bin closed on the right).

    Examples
    --------
    >>> s = summarize(np.array([0.0, 0.2, 0.6, 1.0]))
    >>> s["median"], s["bin_edges"], s["counts"]
    (0.4, [0.0, 0.5, 1.0], [2, 2])
    """
    e = _as_eps(eps)
    if isinstance(bin_width, bool) or not isinstance(bin_width, numbers.Real) or bin_width <= 0:
        raise InputError(f"bin_width must be > 0, got {bin_width!r}")
    finite = e[np.isfinite(e)]
    top = finite.max() if finite.size else 0.0
    n_bins = max(1, math.ceil(top / bin_width - 1e-12))
    edges = np.arange(n_bins + 1) * float(bin_width)
    counts, _ = np.histogram(finite, bins=edges)
    q = np.quantile(e, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "n": int(e.size),
        "mean": float(e.mean()),
        "median": float(q[2]),
        "q05": float(q[0]),
        "q25": float(q[1]),
        "q75": float(q[3]),
        "q95": float(q[4]),
        "max": float(e.max()),
        "n_zero": int((e == 0).sum()),
        "n_inf": int(np.isinf(e).sum()),
        "bin_edges": edges.tolist(),
        "counts": counts.astype(int).tolist(),
    }


def final_score(forget_quality: float, retain_acc: float, retain_acc_ref: float,
                test_acc: float, test_acc_ref: float) -> float:
    """The challenge's final score (``main.py``): forgetting quality times the
    retain-accuracy ratio times the test-accuracy ratio (unlearned / retrained means).

    Examples
    --------
    >>> final_score(0.5, 0.8, 0.8, 0.81, 0.9)
    0.45
    """
    if retain_acc_ref <= 0 or test_acc_ref <= 0:
        raise InputError("reference accuracies must be > 0 to form the challenge's ratios")
    return float(forget_quality * (retain_acc / retain_acc_ref) * (test_acc / test_acc_ref))


def summary_stats(x: np.ndarray | list) -> dict[str, float]:
    """Mean, sd, median, min and max of a sample (and its size ``n``)."""
    a = np.asarray(x, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "n": int(a.size)}
