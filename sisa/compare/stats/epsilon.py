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
challenge's per-example clip; the forgetting quality scores both alike.

The statistics the estimator reads and the challenge's scores are in
:mod:`sisa.compare.stats.scores`; the bootstrap interval, permutation test and power check
in :mod:`sisa.compare.stats.intervals`.

ε needs randomness on both sides: a deterministic training run gives point masses,
and any difference between them is "perfect separation".
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from sisa.errors import InputError

__all__ = ["DELTA", "DOUBLE_CUTS", "max_epsilon", "per_example_epsilon"]

DELTA = 1e-5
_BUFFER = 2.0  # double-threshold window half-width, in statistic units (challenge)
_PEAKY_RATIO = 0.01
DOUBLE_CUTS = 32
_PAIR_BUDGET = 1_000_000  # (rows x models^2) cells per chunk of the double-threshold sweep


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


def as_stats(name: str, x: np.ndarray) -> np.ndarray:
    """``x`` as a finite float64 ``(n_models, n_rows)`` array with at least 2 models.

    Raises
    ------
    InputError
        Naming ``name`` and what is wrong with it.
    """
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


# -- the rules' ε from their error counts -------------------------------------------------------


def _eps_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
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


# -- the threshold sweep ------------------------------------------------------------------------


class _Sorted(NamedTuple):
    """One chunk of rows, each row's pooled sample sorted, with running label counts."""

    u: np.ndarray  # (c, M) sorted statistics
    lab: np.ndarray  # (c, M) True where the sorted value is from the positive sample
    cum_pos: np.ndarray  # (c, M+1) positives before each cut
    cum_neg: np.ndarray  # (c, M+1) negatives before each cut
    cut_ok: np.ndarray  # (c, M+1) the cut lies between distinct values
    n_pos: np.ndarray  # (c,) size of the positive sample
    neg_is_a: np.ndarray  # (c,) the negatives are the unlearned models
    k: int  # stride of the ε table


def _sort(pooled: np.ndarray, is_pos: np.ndarray, neg_is_a: np.ndarray, n_a: int,
          n_b: int) -> _Sorted:
    c, m = pooled.shape
    order = np.argsort(pooled, axis=1, kind="stable")
    u = np.take_along_axis(pooled, order, axis=1)
    lab = np.take_along_axis(is_pos, order, axis=1)
    cum_pos = np.zeros((c, m + 1), dtype=np.int64)
    np.cumsum(lab, axis=1, out=cum_pos[:, 1:])
    # A cut before position i is usable only between distinct values.
    cut_ok = np.ones((c, m + 1), dtype=bool)
    cut_ok[:, 1:m] = u[:, :-1] < u[:, 1:]
    return _Sorted(u, lab, cum_pos, np.arange(m + 1) - cum_pos, cut_ok,
                   np.where(neg_is_a, n_b, n_a), neg_is_a, max(n_a, n_b) + 1)


def _single_threshold(s: _Sorted, table: np.ndarray) -> np.ndarray:
    """Predict positive for positions >= i; fp = negatives at >= i."""
    m, k = s.u.shape[1], s.k
    fp = (m - s.n_pos)[:, None] - s.cum_neg
    side = np.where(s.neg_is_a, 0, k * k)[:, None]
    eps_single = table[side + fp * k + s.cum_pos]
    return _nanmax_rows(np.where(s.cut_ok, eps_single, np.nan))


def _double_threshold(s: _Sorted, table: np.ndarray, cuts: int | None,
                      buffer: float) -> np.ndarray:
    """The peakier sample is "positive" inside ``[u_i, u_j]``."""
    u, lab, k = s.u, s.lab, s.k
    c, m = u.shape
    lo_pos = np.where(lab, u, np.inf).min(axis=1)
    hi_pos = np.where(lab, u, -np.inf).max(axis=1)
    lo_neg = np.where(lab, np.inf, u).min(axis=1)
    hi_neg = np.where(lab, -np.inf, u).max(axis=1)
    pos_range, neg_range = hi_pos - lo_pos, hi_neg - lo_neg
    peaky_is_pos = pos_range < neg_range  # challenge swaps when pos_range >= neg_range
    width = np.minimum(pos_range, neg_range)[:, None, None]
    peak_max = np.where(peaky_is_pos, hi_pos, hi_neg)[:, None, None]
    cum_peaky = np.where(peaky_is_pos[:, None], s.cum_pos, s.cum_neg)
    n_peaky = np.where(peaky_is_pos, s.n_pos, m - s.n_pos)[:, None, None]
    other_is_a = peaky_is_pos == s.neg_is_a  # the non-peaky sample is the unlearned one

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
        & s.cut_ok[:, idx, None]
        & s.cut_ok[:, None, idx + 1]
        & (r_lo <= r_hi + 1e-9 * (1 + np.abs(r_lo)))
    )
    # fp = other-sample rows inside; fn = peaky rows outside.
    key = np.where(other_is_a, 0, k * k)[:, None, None] + (size[None] - inside) * k
    key += n_peaky - inside
    eps_double = table[np.where(ok, key, 0)]
    return _nanmax_rows(np.where(ok, eps_double, np.nan))


def _sweep(pooled: np.ndarray, is_pos: np.ndarray, neg_is_a: np.ndarray, n_a: int, n_b: int,
           table: np.ndarray, double_threshold: bool, cuts: int | None = None,
           buffer: float = _BUFFER) -> np.ndarray:
    """Best ε per row of one chunk. pooled: (c, M) statistics; is_pos: (c, M) bool."""
    s = _sort(pooled, is_pos, neg_is_a, n_a, n_b)
    best = _single_threshold(s, table)
    if not double_threshold:
        return best
    return np.maximum(best, _double_threshold(s, table, cuts, buffer))


# -- per-example ε ------------------------------------------------------------------------------


def _options(delta: float, scale: str, double_cuts: int | None, eps_max: float | None,
             n_models: int) -> float:
    """Validate the options; returns the cap in effect."""
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta!r}")
    if scale not in ("relative", "absolute"):
        raise InputError(f"scale must be 'relative' or 'absolute', got {scale!r}")
    if double_cuts is not None and (isinstance(double_cuts, bool) or not isinstance(
            double_cuts, numbers.Integral) or double_cuts < 2):
        raise InputError(f"double_cuts must be an integer >= 2 or None, got {double_cuts!r}")
    if eps_max is None:
        return max_epsilon(n_models)
    if isinstance(eps_max, bool) or not isinstance(eps_max, numbers.Real) or not eps_max > 0:
        raise InputError(f"eps_max must be > 0, got {eps_max!r}")
    return float(eps_max)


def _degenerate(a: np.ndarray, b: np.ndarray, eps_max: float, out: np.ndarray) -> np.ndarray:
    """Decide collapsed (challenge rule) and constant rows up front, in ``out``; returns
    the rows left for the sweep."""
    range_a = np.ptp(a, axis=0)
    range_b = np.ptp(b, axis=0)
    largest = np.maximum(range_a, range_b)
    smallest = np.minimum(range_a, range_b)
    constant = largest == 0
    same = constant & (a[0] == b[0])
    out[constant & ~same] = eps_max
    peaky = ~constant & (smallest < _PEAKY_RATIO * largest)
    out[peaky] = eps_max
    return np.flatnonzero(~constant & ~peaky)


def _sweep_rows(a: np.ndarray, b: np.ndarray, todo: np.ndarray, out: np.ndarray, delta: float,
                eps_max: float, double_threshold: bool, double_cuts: int | None) -> None:
    """The sweep over the rows ``todo``, in chunks of bounded memory, into ``out``."""
    n_a, n_b = a.shape[0], b.shape[0]
    ref_is_pos = np.median(b, axis=0) > np.median(a, axis=0)
    pooled = np.concatenate([a, b], axis=0).T  # (n_rows, M)
    from_ref = np.arange(n_a + n_b) >= n_a
    is_pos = from_ref[None, :] == ref_is_pos[:, None]
    m = n_a + n_b
    table = _eps_tables(n_a, n_b, delta)
    kk = m if double_cuts is None else min(m, int(double_cuts))
    chunk = max(1, _PAIR_BUDGET // (kk * kk)) if double_threshold else max(1, 50_000 // m)
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        best = _sweep(
            pooled[rows], is_pos[rows], ref_is_pos[rows], n_a, n_b, table, double_threshold,
            double_cuts,
        )
        out[rows] = np.clip(np.where(np.isneginf(best), 0.0, best), 0.0, eps_max)


def per_example_epsilon(stats_unlearned: np.ndarray, stats_reference: np.ndarray,
                        delta: float = DELTA, eps_max: float | None = None, *,
                        double_threshold: bool = True, scale: str = "relative",
                        double_cuts: int | None = DOUBLE_CUTS) -> np.ndarray:
    """Empirical ε for each row, with the NeurIPS 2023 unlearning challenge's rules.

    Parameters
    ----------
    stats_unlearned : array of shape (n_models_a, n_rows)
        Statistic of each row under each unlearned model (e.g.
        :func:`~sisa.compare.stats.scores.logit_confidence`). At least 2 models.
    stats_reference : array of shape (n_models_b, n_rows)
        The same under models retrained without the rows. At least 2 models.
    delta : float, default=1e-5
        δ of the (ε, δ) guarantee, in (0, 1).
    eps_max : float, optional
        Cap for each row's ε (perfect separation and collapsed samples get it).
        Default ``max_epsilon(max(n_models_a, n_models_b))``.
    double_threshold : bool, default=True
        Also sweep the challenge's interval rules.
    scale : {"relative", "absolute"}, default="relative"
        Units of the double-threshold window (±2 around the peakier sample's maximum
        and range): each row's pooled standard deviation, so the floor is the same at
        any scale, or ("absolute") statistic units, as the challenge (module doc).
    double_cuts : int or None, default=32
        Interval ends considered: every cut between distinct values (None; O(N²) per
        row) or this many evenly spaced order statistics of the pooled sample (O(K²);
        a subset of the rules, so never above the every-cut value).

    Returns
    -------
    ndarray of shape (n_rows,)
        ε per row, in ``[0, eps_max]``. The positive sample of a row is the one with
        the larger median (ties: the unlearned one); 128 models x 5,000 rows take a
        few seconds.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(64, 3))
    >>> per_example_epsilon(a, a).tolist()  # identical samples
    [0.0, 0.0, 0.0]
    >>> per_example_epsilon(a, a + 100).tolist()  # perfectly separated: the cap
    [5.0, 5.0, 5.0]
    """
    a = as_stats("stats_unlearned", stats_unlearned)
    b = as_stats("stats_reference", stats_reference)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"stats_unlearned has {a.shape[1]} rows but stats_reference has "
                         f"{b.shape[1]}; columns must be the same forgotten rows")
    eps_max = _options(delta, scale, double_cuts, eps_max, max(a.shape[0], b.shape[0]))
    if scale == "relative":  # the window in units of each row's pooled sd
        sd = np.concatenate([a, b], axis=0).std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        a, b = a / sd, b / sd
    out = np.zeros(a.shape[1])
    if a.shape[1]:
        todo = _degenerate(a, b, eps_max, out)
        _sweep_rows(a, b, todo, out, float(delta), eps_max, double_threshold, double_cuts)
    return out
