"""The permutation test of the report, Holm's correction across it, and the warning when
the permutations are too few for any test to reject.

:func:`permutation_test` tests "the unlearned and the reference models come from one
distribution" by re-splitting the pooled models (a model is the unit of randomness, so
one split serves every row). Its statistic is the mean over rows of the best ε of the
challenge's single-threshold rules, applied to the statistic ``s`` and to
``|s - median|`` (the pooled median: a window centred on it, the symmetric form of
the double threshold), both directions, capped like ε̂. Pooled values, their order and
the median do not change under a re-split, only the labels do, so thousands of
permutations cost one sort per row and a table lookup per cut: about 0.5 s for 1,000
permutations of 512 models and 45 rows on one core, where recomputing ε̂ itself would
take ~40 s.

**Common random numbers.** The permutations are drawn from ``random_state`` alone, so
every method of one forget set (same N, same seed) is tested against the same
re-splits: two methods with identical statistics get identical p-values, and the
p-values of different methods differ only through their data.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from sisa.compare.stats.epsilon import DELTA, _eps_from_rates, as_stats, max_epsilon
from sisa.errors import InputError

__all__ = ["DEFAULT_PERMUTATIONS", "holm", "min_p_warning", "permutation_test"]

DEFAULT_PERMUTATIONS = 2000
_CELLS = 4_000_000  # (permutations x rows x models) per chunk: ~32 MB of int32


def _table(n_a: int, n_b: int, delta: float, cap: float) -> np.ndarray:
    """ε of a single threshold by (a below, b below) counts, best direction, flattened
    with stride ``n_b + 1``; perfect separation = cap, discarded rules = 0."""
    x = np.arange(n_a + 1)[:, None].astype(float)
    y = np.arange(n_b + 1)[None, :].astype(float)
    hi_a = _eps_from_rates((n_b - y) / n_b, x / n_a, delta)  # a above the cut
    hi_b = _eps_from_rates((n_a - x) / n_a, y / n_b, delta)  # b above the cut
    t = np.fmax(hi_a, hi_b)
    t = np.where(np.isnan(t), 0.0, np.minimum(t, cap))
    return t.ravel().astype(np.float32)


def _row_stats(values: np.ndarray, is_a: np.ndarray, table: np.ndarray,
               n_b: int) -> np.ndarray:
    """Best single-threshold ε per (row, split). values: (R, M); is_a: (B, M) bool."""
    order = np.argsort(values, axis=1, kind="stable")
    u = np.take_along_axis(values, order, axis=1)
    m = u.shape[1]
    ok = np.ones((m, u.shape[0], 1), dtype=np.float32)  # the cut after position i
    ok[:-1, :, 0] = (u[:, :-1] < u[:, 1:]).T
    cut = np.arange(1, m + 1, dtype=np.int32)[:, None, None]  # models below that cut
    labels = np.ascontiguousarray(is_a.T)  # (M, B): positions first, so the running
    step = max(1, _CELLS // max(1, values.size))  # sums below run over whole rows
    out = np.empty((u.shape[0], is_a.shape[0]))
    for s in range(0, is_a.shape[0], step):
        a_below = np.cumsum(labels[:, s:s + step][order.T], axis=0, dtype=np.int32)
        a_below *= n_b
        a_below += cut  # a_below * (n_b + 1) + (cut - a_below): the table's index
        eps = table[a_below]
        eps *= ok
        out[:, s:s + step] = eps.max(axis=0)
    return out


def permutation_test(stats_a: np.ndarray, stats_b: np.ndarray, *,
                     n_perm: int = DEFAULT_PERMUTATIONS, random_state: int = 0,
                     delta: float = DELTA, eps_max: float | None = None) -> dict:
    """Permutation p-value of "the two sets of models come from one distribution".

    Parameters
    ----------
    stats_a, stats_b : array of shape (n_models, n_rows)
        Unlearned and reference statistics.
    n_perm : int, default=2000
        Re-splits; the smallest reachable p is ``1 / (n_perm + 1)``.
    random_state : int, default=0
        Seed of the re-splits. Pass the same seed for every method of a forget set
        (common random numbers).
    delta : float, default=1e-5
    eps_max : float, optional
        Cap (default: ``max_epsilon(N)``).

    Returns
    -------
    dict
        ``p_value`` (``(1 + #{T_perm >= T}) / (1 + n_perm)``), ``statistic`` (T) and
        ``n_perm``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(32, 10))
    >>> permutation_test(a, a + 3.0, n_perm=19)["p_value"]
    0.05
    """
    a, b = as_stats("stats_a", stats_a), as_stats("stats_b", stats_b)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"stats_a and stats_b disagree on rows: {a.shape[1]} vs {b.shape[1]}")
    if isinstance(n_perm, bool) or not isinstance(n_perm, numbers.Integral) or n_perm < 1:
        raise InputError(f"n_perm must be a positive integer, got {n_perm!r}")
    n_a, n_b = a.shape[0], b.shape[0]
    cap = max_epsilon(max(n_a, n_b)) if eps_max is None else float(eps_max)
    pooled = np.concatenate([a, b], axis=0).T  # (R, M)
    base = np.arange(n_a + n_b) < n_a
    rng = np.random.default_rng(random_state)
    splits = np.vstack([base, rng.permuted(np.tile(base, (int(n_perm), 1)), axis=1)])
    table = _table(n_a, n_b, float(delta), cap)
    centred = np.abs(pooled - np.median(pooled, axis=1, keepdims=True))
    per_row = np.maximum(_row_stats(pooled, splits, table, n_b),
                         _row_stats(centred, splits, table, n_b))
    t = per_row.mean(axis=0) if pooled.shape[0] else np.zeros(len(splits))
    hits = int((t[1:] >= t[0] - 1e-12).sum())
    return {"p_value": (1 + hits) / (1 + int(n_perm)), "statistic": float(t[0]),
            "n_perm": int(n_perm)}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control).

    The ``k``-th smallest of ``m`` p-values becomes
    ``min(1, max_{j <= k} (m - j + 1) p_(j))``; rejecting where the adjusted p is
    below α controls the chance of any false rejection at α.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, 0.005]).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise InputError("p_values must be a 1-D array of numbers in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def min_p_warning(n_perm: int, n_tests: int, alpha: float) -> str | None:
    """A warning when no test can reject: the smallest p B permutations can give,
    ``1 / (B + 1)``, times Holm's factor for ``n_tests`` tests, is not below ``alpha``.

    Examples
    --------
    >>> min_p_warning(2000, 47, 0.05) is None
    True
    >>> min_p_warning(10, 47, 0.05)[:40]
    'with 10 permutations the smallest p is 1'
    """
    if n_tests < 1:
        return None
    smallest = 1 / (n_perm + 1)
    if n_tests * smallest < alpha:
        return None
    need = math.floor(n_tests / alpha)
    return (f"with {n_perm} permutations the smallest p is 1/{n_perm + 1} = {smallest:.3g}; "
            f"after Holm over {n_tests} tests it is at least {min(1.0, n_tests * smallest):.3g}"
            f" >= α = {alpha:g}, so no method can read above its floor: use --permutations "
            f"{need} or more")
