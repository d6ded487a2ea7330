"""How sure an ε̂ is: a bootstrap interval, a permutation test, and the power of N.

:func:`epsilon_interval` (mean per-row ε̂ with a confidence interval over models and
rows), :func:`permutation_pvalue` (are the two sets of models exchangeable?) and
:func:`detectable_shift` (the smallest shift N models per side can tell apart). The
report's tests use :func:`sisa.compare.stats.permutation.permutation_test` instead (thousands of
permutations, shared across methods, Holm-corrected); its lower bound on ε is
:func:`sisa.compare.stats.bounds.epsilon_lower_bound`.
"""

from __future__ import annotations

import numbers

import numpy as np

from sisa.compare.stats.epsilon import as_stats, max_epsilon, per_example_epsilon
from sisa.errors import InputError

__all__ = ["detectable_shift", "epsilon_interval", "permutation_pvalue"]


def _rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
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
        As for :func:`~sisa.compare.stats.epsilon.per_example_epsilon`.
    n_boot : int, default=100
    level : float, default=0.95
    random_state : int or Generator, default=0
    **kwargs
        Passed to :func:`~sisa.compare.stats.epsilon.per_example_epsilon`.

    Returns
    -------
    dict
        ``eps`` (the mean over rows of the full-sample ε), ``lo``, ``hi``, ``median``
        (median per-row ε), ``n_boot``; the worst rows, which the mean hides:
        ``row_q95`` and ``row_max`` (per-row ε); and the cap: ``cap``, ``rows_at_cap``
        and ``share_at_cap`` (rows whose ε is the cap: perfect separation or a collapsed
        sample, beyond what N models resolve) and ``at_cap`` (the interval reaches the
        cap: ε̂ is censored there, so two methods at the cap are tied, not ranked). The
        interval's ends are clipped to ``[0, cap]``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(64, 20)), rng.normal(size=(64, 20))
    >>> ci = epsilon_interval(a, b, n_boot=20)
    >>> ci["lo"] <= ci["eps"] <= ci["hi"]
    True
    """
    a, b = as_stats("stats_a", stats_a), as_stats("stats_b", stats_b)
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}")
    rng = _rng(random_state)
    kwargs.setdefault("eps_max", max_epsilon(max(a.shape[0], b.shape[0])))
    cap = float(kwargs["eps_max"])
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
    lo, hi = np.clip(np.quantile(reps, [tail, 1 - tail]) - bias, 0.0, cap)
    return {"eps": float(eps.mean()), "lo": float(lo), "hi": float(hi),
            "median": float(np.median(eps)), "n_boot": int(n_boot), **_worst_and_cap(eps, hi,
                                                                                      cap)}


def _worst_and_cap(eps: np.ndarray, hi: float, cap: float) -> dict:
    """The worst rows (the mean hides them) and the rows at the cap."""
    at_cap = np.isclose(eps, cap, rtol=0, atol=1e-9)
    return {"row_q95": float(np.quantile(eps, 0.95)), "row_max": float(eps.max()),
            "cap": cap, "rows_at_cap": int(at_cap.sum()), "share_at_cap": float(at_cap.mean()),
            "at_cap": bool(hi >= cap - 1e-9)}


def permutation_pvalue(stats_a: np.ndarray, stats_b: np.ndarray, *, n_perm: int = 100,
                       random_state=0, observed: float | None = None, **kwargs) -> float:
    """p-value of "the two sets of models come from one distribution".

    Permutation test on the mean per-row ε̂: the pooled models are split at random
    into two sets of the original sizes (one split for all rows, since a model is the
    unit of randomness) ``n_perm`` times; ``p = (1 + #{ε̂_perm >= ε̂}) / (1 + n_perm)``.
    Each permutation recomputes ε̂ (~10 ms at N = 256 and 45 rows); for the thousands of
    permutations a report needs use :func:`sisa.compare.stats.permutation.permutation_test`.

    Parameters
    ----------
    stats_a, stats_b : array of shape (n_models, n_rows)
    n_perm : int, default=100
        The smallest reachable p is ``1 / (1 + n_perm)``.
    random_state : int or Generator, default=0
    observed : float, optional
        The observed mean ε̂, if already computed.
    **kwargs
        Passed to :func:`~sisa.compare.stats.epsilon.per_example_epsilon`.

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
    a, b = as_stats("stats_a", stats_a), as_stats("stats_b", stats_b)
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
