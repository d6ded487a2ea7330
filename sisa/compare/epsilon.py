"""Empirical per-example ε between unlearned and retrained models.

This is the estimator of the NeurIPS 2023 Machine Unlearning Challenge
(google-deepmind/unlearning_evaluation, ``metric.py``; Triantafillou et al., arXiv
2406.09073). For each forgotten row take one scalar statistic per model (the
logit-scaled confidence for classifiers, the residual for regressors) from N models
produced by the unlearning method and N models retrained without the row. Any
decision rule that tells the two samples apart with false-positive rate FPR and
false-negative rate FNR bounds an (ε, δ) guarantee from below by::

    ε >= max(log((1 - δ - FPR) / FNR), log((1 - δ - FNR) / FPR))

The estimate is the largest such value over the challenge's two families of rules:

* single threshold: "positive" (the sample with the larger median) iff ``s >= t``;
* double threshold: the *peakier* sample (smaller range) iff ``l <= s <= r``, with the
  challenge's window: ``r`` within ±2 of the peaky sample's maximum and ``r - l``
  within ±2 of its range.

Deviations from the challenge's code, all on by default and each switchable:

* ``scale="relative"``: the ±2 window is in units of each row's pooled standard
  deviation, not of the statistic, so the floor (two samples of one distribution)
  does not depend on the statistic's spread (``scale="absolute"``: the challenge);
* thresholds: every cut between distinct pooled values for single thresholds, and
  ``double_cuts`` order statistics as interval ends (``None``: every cut), where the
  challenge sweeps a grid of 100 thresholds per unit. With every cut the sweep reaches
  every rate pair the grid can (so it is never lower; on values on a 0.01 lattice it
  is the challenge's value exactly).

Edge cases follow the challenge: FPR = FNR = 0 is perfect separation (ε = cap); a rule
where exactly one rate is 0 is discarded (too few samples to tell); if one sample's
range is under 1% of the other's (a collapsed, "peaky" distribution) ε = cap.

N models per side can only resolve ε up to about ``ln(N - 1)`` (the smallest
nonzero rate is 1/N), so the default cap is ``max_epsilon(N) = ceil(ln(N - 1))``,
the challenge's ``max_ε`` (7 for N = 512, 6 for N = 256). Pass ``eps_max=50`` for the
challenge's per-example clip; :func:`forgetting_quality` scores both alike.

Aggregates: :func:`epsilon_interval` (mean per-row ε with a bootstrap confidence
interval over models and rows), :func:`permutation_pvalue` (are the two sets of models
exchangeable?), :func:`final_score` (the challenge's ranking score) and
:func:`detectable_shift` (the power of a given N).

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
    "DOUBLE_CUTS",
    "detectable_shift",
    "epsilon_interval",
    "final_score",
    "forgetting_quality",
    "logit_confidence",
    "max_epsilon",
    "per_example_epsilon",
    "permutation_pvalue",
    "residual",
    "summarize",
]

DELTA = 1e-5
_TINY = 1e-45  # as the challenge: keeps log finite when a probability is 0
_BUFFER = 2.0  # double-threshold window half-width, in statistic units (challenge)
_PEAKY_RATIO = 0.01
_BUCKET = 0.5
DOUBLE_CUTS = 32
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


def _sweep(pooled, is_pos, neg_is_a, n_a, n_b, table, double_threshold, cuts=None,
           buffer=_BUFFER):
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

    # Interval [u_i, u_j] for i in I (left ends) and j in J (right ends): every cut, or
    # ``double_cuts`` evenly spaced order statistics (the O(N^2) part made O(K^2)).
    idx = np.arange(m) if cuts is None or cuts >= m else np.unique(
        np.round(np.linspace(0, m - 1, cuts)).astype(np.int64))
    inside = cum_peaky[:, None, idx + 1] - cum_peaky[:, idx, None]  # [c, i, j]
    size = (idx + 1)[None, :] - idx[:, None]  # j + 1 - i
    # The interval [u_i, u_j] is reachable by some (l, r) of the challenge's window iff
    # r in [u_j, u_{j+1}) ∩ [pmax-2, pmax+2] ∩ (u_{i-1}+w-2, u_i+w+2] is not empty.
    u_prev = np.concatenate([np.full((c, 1), -np.inf), u[:, :-1]], axis=1)[:, idx]
    u_next = np.concatenate([u[:, 1:], np.full((c, 1), np.inf)], axis=1)[:, idx]
    ui = u[:, idx]
    r_lo = np.maximum(
        np.maximum(ui[:, None, :], peak_max - buffer), u_prev[:, :, None] + width - buffer
    )
    r_hi = np.minimum(
        np.minimum(u_next[:, None, :], peak_max + buffer), ui[:, :, None] + width + buffer
    )
    ok = (
        (size[None] > 0)
        & cut_ok[:, idx, None]
        & cut_ok[:, None, idx + 1]
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
    scale: str = "relative",
    double_cuts: int | None = DOUBLE_CUTS,
) -> np.ndarray:
    """Empirical ε for each row, with the NeurIPS 2023 unlearning challenge's rules.

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
        Also sweep the challenge's interval rules.
    scale : {"relative", "absolute"}, default="relative"
        Units of the double-threshold window (±2 around the peakier sample's maximum
        and range). "absolute": statistic units, as the challenge; the floor then
        depends on the statistic's spread (two samples of one Gaussian give a median
        ε̂ of 2.08 at sd 0.3 but 1.39 at sd 10 for N = 64). "relative": each row is
        first divided by the pooled standard deviation of its two samples, so the
        window is ±2 sd and identical distributions give the same floor at any scale.
        Single thresholds are scale-free either way.
    double_cuts : int or None, default=32
        Interval ends considered: every cut between distinct values (None; O(N²) per
        row) or this many evenly spaced order statistics of the pooled sample
        (O(K²) per row; a subset of the rules, so never above the every-cut value).

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
    if scale not in ("relative", "absolute"):
        raise InputError(f"scale must be 'relative' or 'absolute', got {scale!r}")
    if double_cuts is not None and (isinstance(double_cuts, bool) or not isinstance(
            double_cuts, numbers.Integral) or double_cuts < 2):
        raise InputError(f"double_cuts must be an integer >= 2 or None, got {double_cuts!r}")
    n_a, n_b = a.shape[0], b.shape[0]
    if scale == "relative":
        sd = np.concatenate([a, b], axis=0).std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        a, b = a / sd, b / sd
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
    kk = m if double_cuts is None else min(m, int(double_cuts))
    chunk = max(1, _PAIR_BUDGET // (kk * kk)) if double_threshold else max(1, 50_000 // m)
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        best = _sweep(
            pooled[rows], is_pos[rows], ref_is_pos[rows], n_a, n_b, table, double_threshold,
            double_cuts,
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


# -- uncertainty, tests and power ---------------------------------------------------------------


def _rng(random_state) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else \
        np.random.default_rng(random_state)


def epsilon_interval(stats_a: np.ndarray, stats_b: np.ndarray, *, n_boot: int = 100,
                     level: float = 0.95, random_state=0, **kwargs) -> dict[str, float]:
    """Mean per-row ε̂ with a percentile bootstrap confidence interval.

    Each replicate resamples the models of each side and the rows, all with
    replacement, and recomputes every per-row ε: the interval covers both the
    finite number of models (the estimator's own noise) and the choice of rows. The
    percentile interval is shifted by the replicates' mean bias (see the code).

    Parameters
    ----------
    stats_a, stats_b : array of shape (n_models, n_rows)
        As for :func:`per_example_epsilon`.
    n_boot : int, default=100
    level : float, default=0.95
    random_state : int or Generator, default=0
    **kwargs
        Passed to :func:`per_example_epsilon`.

    Returns
    -------
    dict
        ``eps`` (the mean over rows of the full-sample ε), ``lo``, ``hi``, ``median``
        (median per-row ε), ``n_boot``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(64, 20)), rng.normal(size=(64, 20))
    >>> ci = epsilon_interval(a, b, n_boot=20)
    >>> ci["lo"] <= ci["eps"] <= ci["hi"]
    True
    """
    a, b = _as_stats("stats_a", stats_a), _as_stats("stats_b", stats_b)
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}")
    rng = _rng(random_state)
    kwargs.setdefault("eps_max", max_epsilon(max(a.shape[0], b.shape[0])))
    eps = per_example_epsilon(a, b, **kwargs)
    reps = np.empty(n_boot)
    for k in range(n_boot):
        rows = rng.integers(0, a.shape[1], a.shape[1])
        ia, ib = rng.integers(0, a.shape[0], a.shape[0]), rng.integers(0, b.shape[0], b.shape[0])
        reps[k] = per_example_epsilon(a[np.ix_(ia, rows)], b[np.ix_(ib, rows)], **kwargs).mean()
    tail = (1 - level) / 2
    # Resampling models with replacement duplicates some, and ties make two samples
    # look more separable: the replicates run high (by ~0.2 at N = 256). The interval
    # is the percentile interval shifted by that bias, so it is centred on the estimate.
    bias = reps.mean() - eps.mean()
    lo, hi = np.quantile(reps, [tail, 1 - tail]) - bias
    return {"eps": float(eps.mean()), "lo": float(max(lo, 0.0)), "hi": float(hi),
            "median": float(np.median(eps)), "n_boot": int(n_boot)}


def permutation_pvalue(stats_a: np.ndarray, stats_b: np.ndarray, *, n_perm: int = 100,
                       random_state=0, observed: float | None = None, **kwargs) -> float:
    """p-value of "the two sets of models come from one distribution".

    Permutation test on the mean per-row ε̂: the pooled models are split at random
    into two sets of the original sizes (one split for all rows, since a model is the
    unit of randomness) ``n_perm`` times; ``p = (1 + #{ε̂_perm >= ε̂}) / (1 + n_perm)``.

    Parameters
    ----------
    stats_a, stats_b : array of shape (n_models, n_rows)
    n_perm : int, default=100
        The smallest reachable p is ``1 / (1 + n_perm)``.
    random_state : int or Generator, default=0
    observed : float, optional
        The observed mean ε̂, if already computed.
    **kwargs
        Passed to :func:`per_example_epsilon`.

    Returns
    -------
    float

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(32, 10))
    >>> permutation_pvalue(a, a + 3.0, n_perm=19)
    0.05
    """
    a, b = _as_stats("stats_a", stats_a), _as_stats("stats_b", stats_b)
    if isinstance(n_perm, bool) or not isinstance(n_perm, numbers.Integral) or n_perm < 1:
        raise InputError(f"n_perm must be a positive integer, got {n_perm!r}")
    rng = _rng(random_state)
    kwargs.setdefault("eps_max", max_epsilon(max(a.shape[0], b.shape[0])))
    obs = per_example_epsilon(a, b, **kwargs).mean() if observed is None else observed
    pooled = np.concatenate([a, b], axis=0)
    n_a = a.shape[0]
    hits = 0
    for _ in range(n_perm):
        order = rng.permutation(pooled.shape[0])
        val = per_example_epsilon(pooled[order[:n_a]], pooled[order[n_a:]], **kwargs).mean()
        hits += val >= obs - 1e-12
    return float((1 + hits) / (1 + n_perm))


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


def detectable_shift(n_models: int, n_rows: int, *, shifts=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75,
                     1.0, 1.5, 2.0), n_boot: int = 50, random_state=0,
                     **kwargs) -> dict[str, object]:
    """Power check: the smallest mean shift (in standard deviations of the statistic)
    that N models per side tell apart from no shift.

    Gaussian statistics, ``n_rows`` rows, N models a side; a shift counts as detected
    when the lower end of its ε̂ interval is above the upper end of the no-shift
    (floor) interval, the same criterion the report applies to methods.

    Returns
    -------
    dict
        ``smallest`` (None if no shift in ``shifts`` is detected), ``floor`` (interval
        dict) and ``curve`` (list of ``[shift, eps, lo, hi]``).
    """
    rng = _rng(random_state)
    ref = rng.normal(size=(n_models, n_rows))
    floor = epsilon_interval(ref, rng.normal(size=(n_models, n_rows)), n_boot=n_boot,
                             random_state=rng, **kwargs)
    curve, smallest = [], None
    for d in shifts:
        ci = epsilon_interval(rng.normal(size=(n_models, n_rows)) + d, ref, n_boot=n_boot,
                              random_state=rng, **kwargs)
        curve.append([float(d), ci["eps"], ci["lo"], ci["hi"]])
        if smallest is None and ci["lo"] > floor["hi"]:
            smallest = float(d)
    return {"smallest": smallest, "floor": floor, "curve": curve}
