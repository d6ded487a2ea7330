"""An exact lower confidence bound on ε, per row and per method.

The challenge's ε̂ (:func:`~sisa.compare.stats.epsilon.per_example_epsilon`) plugs observed
error rates into the (ε, δ) inequality and takes the best rule over many thresholds:
on two samples of one distribution it reads ~1.2 at N = 256, not 0 (small counts and
the maximum over rules both push it up). It is an estimate, not a bound.

:func:`epsilon_lower_bound` is a bound. For each row it

1. **selects** one rule on half of each side's models (even model indices): a single
   threshold on the statistic ``s`` or on ``|s - m|`` (``m``: the median of the
   selection half's pooled values; the second is a window centred on ``m``, the
   challenge's double threshold in its symmetric form), in either direction, the one
   with the largest bound on that half;
2. **evaluates** that one rule on the other half (odd indices), which it has not seen:
   given the selection, its false positives and false negatives are binomial counts, so
   Clopper–Pearson gives exact upper bounds ``FPR_up`` and ``FNR_up``, each at
   confidence ``1 - α / (2 R)`` (``R`` rows: the ``α`` is split over the two rates and
   over the rows, so every row's bound holds simultaneously with probability
   ``>= 1 - α``);
3. reports ``max(log((1 - δ - FNR_up) / FPR_up), log((1 - δ - FPR_up) / FNR_up))``,
   clipped to ``[0, cap]`` (0 when nothing is shown).

What it bounds: any rule's true rates satisfy ``FPR + e^ε FNR >= 1 - δ`` (and the
swap) when the row's statistic is (ε, δ)-indistinguishable between the unlearned and
the reference models, so with probability ``>= 1 - α`` every row's bound is at most the
smallest ε for which the statistic of that row, hence the models (post-processing), is
(ε, δ)-indistinguishable (δ as given). The method-level mean of the per-row bounds is
then a lower bound on the mean over rows of that ε (what ε̂ estimates), and the maximum
on the worst row's, both at ``1 - α``. Models must be i.i.d. within each side (one seed
per model), as in the ε runs. Half the models select, so the bound needs N large: with
128 evaluation models per side and 45 rows it cannot exceed ~2.8.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.stats import beta

from sisa.compare.stats.epsilon import DELTA, as_stats, max_epsilon
from sisa.errors import InputError

__all__ = ["LB_ALPHA", "clopper_pearson_upper", "epsilon_lower_bound"]

LB_ALPHA = 0.05  # the bound holds for every row at once with probability >= 95%


def clopper_pearson_upper(k: np.ndarray | int, n: np.ndarray | int, alpha: float) -> np.ndarray:
    """Exact one-sided upper confidence bound on a binomial rate.

    ``P(rate <= bound) >= 1 - alpha`` for ``k`` successes out of ``n``:
    the ``1 - alpha`` quantile of ``Beta(k + 1, n - k)``, and 1 when ``k = n``.

    Examples
    --------
    >>> round(float(clopper_pearson_upper(0, 100, 0.05)), 4)  # 1 - 0.05 ** (1 / 100)
    0.0295
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        up = beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k >= n, 1.0, up)


def _eps_bound(fpr_up: np.ndarray, fnr_up: np.ndarray, delta: float) -> np.ndarray:
    """The (ε, δ) inequality at the rates' upper bounds, both orders, floored at 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.fmax(np.log(np.maximum(1 - delta - fnr_up, 0)) - np.log(fpr_up),
                    np.log(np.maximum(1 - delta - fpr_up, 0)) - np.log(fnr_up))
    return np.where(np.isnan(e) | (e < 0), 0.0, e)


def _best_rule(sel_a: np.ndarray, sel_b: np.ndarray, tab_a: np.ndarray, tab_b: np.ndarray,
               delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """On the selection half (values already transformed, (n, R) each): the threshold
    and direction with the largest bound per row. Returns (threshold, a_high, value)."""
    n_a = sel_a.shape[0]
    pooled = np.concatenate([sel_a, sel_b], axis=0).T  # (R, M)
    order = np.argsort(pooled, axis=1, kind="stable")
    u = np.take_along_axis(pooled, order, axis=1)
    a_below = np.cumsum(order < n_a, axis=1)[:, :-1]  # a's below the cut after position i
    b_below = np.arange(1, u.shape[1]) - a_below
    ok = u[:, :-1] < u[:, 1:]  # cuts between distinct values only
    # a high: FN = a below, FP = b above; b high: FN = b below, FP = a above.
    hi_a = _eps_bound(tab_b[sel_b.shape[0] - b_below], tab_a[a_below], delta)
    hi_b = _eps_bound(tab_a[n_a - a_below], tab_b[b_below], delta)
    val = np.where(ok, np.maximum(hi_a, hi_b), -1.0)
    i = val.argmax(axis=1)
    rows = np.arange(u.shape[0])
    thr = (u[rows, i] + u[rows, i + 1]) / 2
    return thr, hi_a[rows, i] >= hi_b[rows, i], val[rows, i]


def _evaluate(ev_a: np.ndarray, ev_b: np.ndarray, thr: np.ndarray, a_high: np.ndarray,
              alpha: float, delta: float) -> np.ndarray:
    """The chosen rule on the held-out half: Clopper–Pearson bounds, then the ε bound."""
    n_a, n_b = ev_a.shape[0], ev_b.shape[0]
    a_above = (ev_a >= thr).sum(axis=0)
    b_above = (ev_b >= thr).sum(axis=0)
    fp = np.where(a_high, b_above, a_above)
    fn = np.where(a_high, n_a - a_above, n_b - b_above)
    n_neg = np.where(a_high, n_b, n_a)
    n_pos = np.where(a_high, n_a, n_b)
    return _eps_bound(clopper_pearson_upper(fp, n_neg, alpha),
                      clopper_pearson_upper(fn, n_pos, alpha), delta)


def _check(stats_a: np.ndarray, stats_b: np.ndarray,
           alpha: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_stats("stats_a", stats_a), as_stats("stats_b", stats_b)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"stats_a and stats_b disagree on rows: {a.shape[1]} vs {b.shape[1]}")
    if min(a.shape[0], b.shape[0]) < 4:
        raise InputError("the lower bound needs at least 4 models per side (half select, "
                         "half evaluate)")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha!r}")
    return a, b


def epsilon_lower_bound(stats_a: np.ndarray, stats_b: np.ndarray, *, alpha: float = LB_ALPHA,
                        delta: float = DELTA, eps_max: float | None = None) -> dict:
    """Clopper–Pearson lower confidence bound on ε per row, and per method.

    See the module docstring for the construction and exactly what it bounds.

    Parameters
    ----------
    stats_a, stats_b : array of shape (n_models, n_rows)
        The statistic per model and row (unlearned, reference); at least 4 models a side.
    alpha : float, default=0.05
        Every row's bound holds at once with probability ``>= 1 - alpha``.
    delta : float, default=1e-5
    eps_max : float, optional
        Cap (default: ``max_epsilon(N)``, as ε̂'s).

    Returns
    -------
    dict
        ``per_row`` (ndarray), ``mean`` (a bound on the mean over rows of the per-row ε),
        ``max`` (a bound on the worst row's ε), ``level`` (``1 - alpha``), ``n_eval``
        (held-out models per side).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lb = epsilon_lower_bound(rng.normal(size=(256, 20)), rng.normal(size=(256, 20)))
    >>> lb["mean"]
    0.0
    >>> lb = epsilon_lower_bound(rng.normal(size=(256, 20)), rng.normal(3, 1, (256, 20)))
    >>> bool(lb["mean"] > 1)
    True
    """
    a, b = _check(stats_a, stats_b, alpha)
    cap = max_epsilon(max(a.shape[0], b.shape[0])) if eps_max is None else float(eps_max)
    n_rows = a.shape[1]
    if n_rows == 0:
        return {"per_row": np.zeros(0), "mean": 0.0, "max": 0.0, "level": 1 - alpha,
                "n_eval": [a.shape[0] // 2, b.shape[0] // 2]}
    a_row = alpha / (2 * n_rows)  # two rates per row, every row at once
    sa, sb, ea, eb = a[0::2], b[0::2], a[1::2], b[1::2]
    tab_a = clopper_pearson_upper(np.arange(sa.shape[0] + 1), sa.shape[0], a_row)
    tab_b = clopper_pearson_upper(np.arange(sb.shape[0] + 1), sb.shape[0], a_row)
    centre = np.median(np.concatenate([sa, sb], axis=0), axis=0)
    # Two rule families, chosen on the selection half only: s >= t, |s - m| >= t.
    rules = [(sa, sb, ea, eb), (np.abs(sa - centre), np.abs(sb - centre),
                                np.abs(ea - centre), np.abs(eb - centre))]
    picks = [_best_rule(r[0], r[1], tab_a, tab_b, delta) for r in rules]
    use_abs = picks[1][2] > picks[0][2]
    ev_a = np.where(use_abs, rules[1][2], rules[0][2])
    ev_b = np.where(use_abs, rules[1][3], rules[0][3])
    thr = np.where(use_abs, picks[1][0], picks[0][0])
    a_high = np.where(use_abs, picks[1][1], picks[0][1])
    per_row = np.clip(_evaluate(ev_a, ev_b, thr, a_high, a_row, delta), 0.0, cap)
    return {"per_row": per_row, "mean": float(per_row.mean()), "max": float(per_row.max()),
            "level": 1 - alpha, "n_eval": [ea.shape[0], eb.shape[0]]}
