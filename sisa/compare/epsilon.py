"""Empirical per-example ε between unlearned and retrained models.

This is the estimator of the NeurIPS 2023 Machine Unlearning Challenge
(google-deepmind/unlearning_evaluation, ``metric.py``; Triantafillou et al., arXiv
2406.09073). For each forgotten row take one scalar statistic per model (the
logit-scaled confidence for classifiers, the residual for regressors) from N models
produced by the unlearning method and N models retrained without the row. Any
decision rule that tells the two samples apart with false-positive rate FPR and
false-negative rate FNR bounds an (ε, δ) guarantee from below by::

    ε >= max(log((1 - δ - FPR) / FNR), log((1 - δ - FNR) / FPR))

The estimate is the largest such value over two families of rules:

* single threshold: "positive" (the sample with the larger median) iff ``s >= t``;
* double threshold: the *peakier* sample (smaller range) iff ``l <= s <= r``, with the
  challenge's window: ``r`` within ±2 of the peaky sample's maximum and ``r - l``
  within ±2 of its range.

Where the challenge sweeps 100 thresholds per unit, this module sweeps every cut
between distinct pooled values, which reaches every rate pair the grid can (so it is
never lower) and does not depend on the statistic's scale. Edge cases follow the
challenge: FPR = FNR = 0 is perfect separation (ε = cap); a rule where exactly one
rate is 0 is discarded (too few samples to tell); if one sample's range is under 1%
of the other's (a collapsed, "peaky" distribution) ε = cap.

N models per side can only resolve ε up to about ``ln(N - 1)`` (the smallest
nonzero rate is 1/N), so the default cap is ``max_epsilon(N) = ceil(ln(N - 1))``,
the challenge's ``max_ε`` (7 for N = 512, 5 for N = 64). Pass ``eps_max=50`` for the
challenge's per-example clip; :func:`forgetting_quality` scores both alike.

ε needs randomness on both sides: a deterministic training run gives point masses,
and any difference between them is "perfect separation".
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from sisa.errors import InputError

__all__ = [
    "DELTA",
    "forgetting_quality",
    "logit_confidence",
    "max_epsilon",
    "per_example_epsilon",
    "residual",
    "summarize",
]

DELTA = 1e-5
_TINY = 1e-45  # as the challenge: keeps log finite when a probability is 0
_BUFFER = 2.0  # double-threshold window half-width, in statistic units (challenge)
_PEAKY_RATIO = 0.01
_BUCKET = 0.5
_PAIR_BUDGET = 1_000_000  # (rows x models^2) cells per chunk of the double-threshold sweep


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


# -- per-example ε ------------------------------------------------------------------------------


def max_epsilon(n_models: int) -> float:
    """Largest ε that ``n_models`` samples per side can resolve: ``ceil(ln(N - 1))``.

    Parameters
    ----------
    n_models : int
        N, at least 2.

    Returns
    -------
    float

    Examples
    --------
    >>> max_epsilon(512), max_epsilon(64)
    (7.0, 5.0)
    """
    if isinstance(n_models, bool) or not isinstance(n_models, numbers.Integral) or n_models < 2:
        raise InputError(f"n_models must be an integer >= 2, got {n_models!r}")
    return float(math.ceil(math.log(n_models - 1)))


def _as_stats(name: str, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"{name} must have shape (n_models, n_rows), got {a.shape}")
    if a.shape[0] < 2:
        raise InputError(f"{name} has {a.shape[0]} model(s); ε needs at least 2 models per side")
    if not np.isfinite(a).all():
        raise InputError(
            f"{name} holds NaN or inf; clip the statistic (logit_confidence is finite)"
        )
    return a


def _eps_from_rates(fpr, fnr, delta):
    """ε per rule: inf = perfect separation, NaN = discarded (exactly one rate is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.fmax(
            np.log(1 - delta - fpr) - np.log(fnr),
            np.log(1 - delta - fnr) - np.log(fpr),
        )
    eps = np.where(eps < 0, 0.0, eps)  # keeps NaN (both logs undefined: discarded too)
    eps = np.where((fpr == 0) != (fnr == 0), np.nan, eps)
    return np.where((fpr == 0) & (fnr == 0), np.inf, eps)


def _eps_tables(n_a: int, n_b: int, delta: float) -> np.ndarray:
    """ε for every (false positives, false negatives) count, flattened.

    Entry ``side*k*k + fp*k + fn`` with ``k = max(n_a, n_b) + 1``; side 0 when the
    negatives are the ``n_a`` unlearned models, 1 when they are the reference ones.
    Rules only differ through these counts, so a lookup replaces the logs.
    """
    k = max(n_a, n_b) + 1
    fp, fn = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    tables = []
    for n_neg, n_pos in ((n_a, n_b), (n_b, n_a)):
        t = _eps_from_rates(fp / n_neg, fn / n_pos, delta)
        tables.append(np.where((fp > n_neg) | (fn > n_pos), np.nan, t))
    return np.stack(tables).ravel()


def _nanmax_rows(x: np.ndarray) -> np.ndarray:
    """Max over all but the first axis, ignoring NaN; -inf when all are NaN."""
    x = np.where(np.isnan(x), -np.inf, x)
    return x.reshape(x.shape[0], -1).max(axis=1)


def _sweep(pooled, is_pos, neg_is_a, n_a, n_b, table, double_threshold):
    """Best ε per row of one chunk. pooled: (c, M) statistics; is_pos: (c, M) bool."""
    c, m = pooled.shape
    k = max(n_a, n_b) + 1
    n_pos = np.where(neg_is_a, n_b, n_a)
    order = np.argsort(pooled, axis=1, kind="stable")
    u = np.take_along_axis(pooled, order, axis=1)
    lab = np.take_along_axis(is_pos, order, axis=1)
    cum_pos = np.zeros((c, m + 1), dtype=np.int64)
    np.cumsum(lab, axis=1, out=cum_pos[:, 1:])
    cum_neg = np.arange(m + 1) - cum_pos
    # A cut before position i is usable only between distinct values.
    cut_ok = np.ones((c, m + 1), dtype=bool)
    cut_ok[:, 1:m] = u[:, :-1] < u[:, 1:]

    # Single threshold: predict positive for positions >= i; fp = negatives at >= i.
    fp = (m - n_pos)[:, None] - cum_neg
    side = np.where(neg_is_a, 0, k * k)[:, None]
    eps_single = table[side + fp * k + cum_pos]
    best = _nanmax_rows(np.where(cut_ok, eps_single, np.nan))
    if not double_threshold:
        return best

    # Double threshold: the peakier sample is "positive" inside [u_i, u_j].
    lo_pos = np.where(lab, u, np.inf).min(axis=1)
    hi_pos = np.where(lab, u, -np.inf).max(axis=1)
    lo_neg = np.where(lab, np.inf, u).min(axis=1)
    hi_neg = np.where(lab, -np.inf, u).max(axis=1)
    pos_range, neg_range = hi_pos - lo_pos, hi_neg - lo_neg
    peaky_is_pos = pos_range < neg_range  # challenge swaps when pos_range >= neg_range
    width = np.minimum(pos_range, neg_range)[:, None, None]
    peak_max = np.where(peaky_is_pos, hi_pos, hi_neg)[:, None, None]
    cum_peaky = np.where(peaky_is_pos[:, None], cum_pos, cum_neg)
    n_peaky = np.where(peaky_is_pos, n_pos, m - n_pos)[:, None, None]
    other_is_a = peaky_is_pos == neg_is_a  # the non-peaky sample is the unlearned one

    inside = cum_peaky[:, None, 1:] - cum_peaky[:, :m, None]  # [c, i, j]: peaky in u_i..u_j
    size = np.arange(1, m + 1)[None, :] - np.arange(m)[:, None]  # j + 1 - i
    # The interval [u_i, u_j] is reachable by some (l, r) of the challenge's window iff
    # r in [u_j, u_{j+1}) ∩ [pmax-2, pmax+2] ∩ (u_{i-1}+w-2, u_i+w+2] is not empty.
    u_prev = np.concatenate([np.full((c, 1), -np.inf), u[:, :-1]], axis=1)
    u_next = np.concatenate([u[:, 1:], np.full((c, 1), np.inf)], axis=1)
    r_lo = np.maximum(
        np.maximum(u[:, None, :], peak_max - _BUFFER), u_prev[:, :, None] + width - _BUFFER
    )
    r_hi = np.minimum(
        np.minimum(u_next[:, None, :], peak_max + _BUFFER), u[:, :, None] + width + _BUFFER
    )
    ok = (
        (size[None] > 0)
        & cut_ok[:, :m, None]
        & cut_ok[:, None, 1:]
        & (r_lo <= r_hi + 1e-9 * (1 + np.abs(r_lo)))
    )
    # fp = other-sample rows inside; fn = peaky rows outside.
    key = np.where(other_is_a, 0, k * k)[:, None, None] + (size[None] - inside) * k
    key += n_peaky - inside
    eps_double = table[np.where(ok, key, 0)]
    return np.maximum(best, _nanmax_rows(np.where(ok, eps_double, np.nan)))


def per_example_epsilon(
    stats_unlearned: np.ndarray,
    stats_reference: np.ndarray,
    delta: float = DELTA,
    eps_max: float | None = None,
    *,
    double_threshold: bool = True,
) -> np.ndarray:
    """Empirical ε for each row, as the NeurIPS 2023 unlearning challenge computes it.

    Parameters
    ----------
    stats_unlearned : array of shape (n_models_a, n_rows)
        Statistic of each row under each unlearned model (:func:`logit_confidence`
        or :func:`residual`).
    stats_reference : array of shape (n_models_b, n_rows)
        The same under models retrained without the rows. At least 2 models a side.
    delta : float, default=1e-5
        δ of the (ε, δ) guarantee, in (0, 1).
    eps_max : float, optional
        Cap for each row's ε (perfect separation and collapsed samples get it).
        Default ``max_epsilon(max(n_models_a, n_models_b))``, above every finite
        value the samples can produce.
    double_threshold : bool, default=True
        Also sweep the challenge's interval rules (costs O(N²) per row instead of
        O(N log N)).

    Returns
    -------
    ndarray of shape (n_rows,)
        ε per row, in ``[0, eps_max]``.

    Notes
    -----
    The positive sample of a row is the one with the larger median (ties: the
    unlearned one). Cost is ``O(n_rows * N²)`` time with ``N = n_a + n_b``, in chunks
    of bounded memory; 128 models x 5,000 rows take a few seconds.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(64, 3))
    >>> per_example_epsilon(a, a).tolist()  # identical samples
    [0.0, 0.0, 0.0]
    >>> per_example_epsilon(a, a + 100).tolist()  # perfectly separated: the cap
    [5.0, 5.0, 5.0]
    """
    a = _as_stats("stats_unlearned", stats_unlearned)
    b = _as_stats("stats_reference", stats_reference)
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"stats_unlearned has {a.shape[1]} rows but stats_reference has {b.shape[1]}; "
            "columns must be the same forgotten rows"
        )
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta!r}")
    n_a, n_b = a.shape[0], b.shape[0]
    if eps_max is None:
        eps_max = max_epsilon(max(n_a, n_b))
    elif isinstance(eps_max, bool) or not isinstance(eps_max, numbers.Real) or not eps_max > 0:
        raise InputError(f"eps_max must be > 0, got {eps_max!r}")
    eps_max = float(eps_max)
    n_rows = a.shape[1]
    out = np.zeros(n_rows)
    if n_rows == 0:
        return out

    ref_is_pos = np.median(b, axis=0) > np.median(a, axis=0)
    pooled = np.concatenate([a, b], axis=0).T  # (n_rows, M)
    from_ref = np.arange(n_a + n_b) >= n_a
    is_pos = from_ref[None, :] == ref_is_pos[:, None]

    # Collapsed samples (challenge rule) and constant samples are decided up front.
    range_a = np.ptp(a, axis=0)
    range_b = np.ptp(b, axis=0)
    largest = np.maximum(range_a, range_b)
    smallest = np.minimum(range_a, range_b)
    constant = largest == 0
    same = constant & (a[0] == b[0])
    out[constant & ~same] = eps_max
    peaky = ~constant & (smallest < _PEAKY_RATIO * largest)
    out[peaky] = eps_max

    todo = np.flatnonzero(~constant & ~peaky)
    m = n_a + n_b
    table = _eps_tables(n_a, n_b, float(delta))
    chunk = max(1, _PAIR_BUDGET // (m * m)) if double_threshold else max(1, 50_000 // m)
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        best = _sweep(
            pooled[rows], is_pos[rows], ref_is_pos[rows], n_a, n_b, table, double_threshold
        )
        out[rows] = np.clip(np.where(np.isneginf(best), 0.0, best), 0.0, eps_max)
    return out


# -- aggregate scores ---------------------------------------------------------------------------


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
        Per-row ε, e.g. from :func:`per_example_epsilon`.
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
