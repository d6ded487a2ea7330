"""Stronger attacks than the per-row threshold of the ε estimator, on the models the ε runs
already trained (no extra training).

* **Per-example LiRA / U-LiRA** (Hayes et al. 2024, "Inexact unlearning needs more careful
  evaluations"; Carlini et al. 2022): for each forgotten row, fit one Gaussian to the
  statistic under the method's unlearned models and one under the reference models (never
  saw U), on one half of each side (the shadow models), and score the other half's models
  by the likelihood ratio. Two-fold cross-fitting (fit on A, score B; fit on B, score A)
  scores every model once. Read three ways: per (model, row) pair pooled over rows; per
  model (the sum of its rows' log ratios: "was this model unlearned?"); per row.
* **White-box gradient statistic** (linear family): ``Σ_{W_i} (p - y)`` of each model on
  its own training rows ``W_i`` (the intercept's coordinate of the data gradient). An exact
  fit has it pinned by its optimality condition (0 without noise or intercept penalty); a
  Newton step leaves its residual there. One scalar per model, scored by the same
  cross-fitted Gaussian likelihood ratio, and by the ε estimator as a one-row statistic.

TPR at a false-positive rate ``f`` needs at least ``1 / f`` negatives for one false positive
to be allowed (100 models per side for 1 %, 1,000 for 0.1 %): with fewer the rate is
reported as not resolvable (``tpr`` None, ``resolvable`` False) rather than read at FPR 0.
Pooled pairs have ``N x rows`` negatives but the rows of one model are not independent.
"""

from __future__ import annotations

import math

import numpy as np

from sisa.compare.stats.epsilon import as_stats, per_example_epsilon
from sisa.errors import InputError

__all__ = ["FPRS", "gaussian_llr", "lira", "lira_scores", "tpr_at_fpr", "whitebox"]

FPRS = (0.01, 0.001)
_LOG_2PI = math.log(2.0 * math.pi)


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation; a floor keeps point masses finite."""
    mu, sd = x.mean(axis=0), x.std(axis=0, ddof=1)
    return mu, np.maximum(sd, 1e-9 * (1.0 + np.abs(mu)))


def _logpdf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * (((x - mu) / sd) ** 2 + _LOG_2PI) - np.log(sd)


def gaussian_llr(shadow_pos: np.ndarray, shadow_neg: np.ndarray,
                 target: np.ndarray) -> np.ndarray:
    """``log N(target; pos) - log N(target; neg)`` per entry, Gaussians fit per column.

    Parameters
    ----------
    shadow_pos, shadow_neg : ndarray of shape (n_models, n_rows)
        Shadow models' statistics of the positive (unlearned) and negative (reference)
        side; at least 2 models each.
    target : ndarray of shape (n_targets, n_rows)

    Returns
    -------
    ndarray of shape (n_targets, n_rows)
    """
    mp, sp = _fit(shadow_pos)
    mn, sn = _fit(shadow_neg)
    return _logpdf(target, mp, sp) - _logpdf(target, mn, sn)


def lira_scores(stats_unlearned: np.ndarray, stats_reference: np.ndarray,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted per-(model, row) log likelihood ratios of both sides.

    Each side's models are split at random into two halves; the Gaussians fit on one
    half of both sides score the other halves.

    Returns
    -------
    (ndarray, ndarray)
        Scores of the unlearned (positive) and reference (negative) models, in their
        input order, each ``(n_models, n_rows)``; high means "unlearned".
    """
    a = as_stats("stats_unlearned", stats_unlearned)
    b = as_stats("stats_reference", stats_reference)
    if a.shape[0] < 4 or b.shape[0] < 4:
        raise InputError("LiRA's cross-fitting needs at least 4 models per side")
    rng = np.random.default_rng(seed)
    halves = [np.array_split(rng.permutation(x.shape[0]), 2) for x in (a, b)]
    out_a, out_b = np.empty_like(a), np.empty_like(b)
    for fit_half, score_half in ((0, 1), (1, 0)):
        ia, ib = halves[0][fit_half], halves[1][fit_half]
        sa, sb = halves[0][score_half], halves[1][score_half]
        out_a[sa] = gaussian_llr(a[ia], b[ib], a[sa])
        out_b[sb] = gaussian_llr(a[ia], b[ib], b[sb])
    return out_a, out_b


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> dict:
    """TPR of the best threshold with a false-positive rate of at most ``fpr``.

    Returns
    -------
    dict
        ``tpr`` (None when not resolvable), ``fpr`` (the rate asked), ``resolvable``
        (``n_neg >= 1 / fpr``), ``n_neg``, ``n_neg_needed`` (``ceil(1 / fpr)``).
    """
    pos, neg = np.ravel(pos), np.sort(np.ravel(neg))
    need = math.ceil(1.0 / fpr - 1e-9)
    out = {"fpr": fpr, "n_neg": int(neg.size), "n_neg_needed": need,
           "resolvable": bool(neg.size >= need), "tpr": None}
    if out["resolvable"]:
        allowed = math.floor(fpr * neg.size + 1e-9)  # negatives allowed above the threshold
        t = neg[neg.size - allowed - 1]  # positive iff score > t
        out["tpr"] = float((pos > t).mean())
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), by ranks."""
    pos, neg = np.ravel(pos), np.ravel(neg)
    both = np.concatenate([pos, neg])
    order = both.argsort(kind="stable")
    ranks = np.empty(both.size)
    ranks[order] = np.arange(1, both.size + 1)
    # average ranks over ties
    _, inv, counts = np.unique(both, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def _rates(pos: np.ndarray, neg: np.ndarray, fprs: tuple[float, ...]) -> dict:
    return {"auc": _auc(pos, neg),
            "tpr_at": {f"{f:g}": tpr_at_fpr(pos, neg, f) for f in fprs}}


def _per_row_tpr(sa: np.ndarray, sb: np.ndarray, fpr: float) -> dict:
    """Each row's TPR at ``fpr`` over the models (mean, q95, max), or not resolvable."""
    if sb.shape[0] < math.ceil(1.0 / fpr - 1e-9):
        return {"fpr": fpr, "resolvable": False, "n_neg": int(sb.shape[0])}
    t = np.array([tpr_at_fpr(sa[:, j], sb[:, j], fpr)["tpr"] for j in range(sa.shape[1])])
    return {"fpr": fpr, "resolvable": True, "n_neg": int(sb.shape[0]),
            "mean": float(t.mean()), "q95": float(np.quantile(t, 0.95)), "max": float(t.max())}


def lira(stats_unlearned: np.ndarray, stats_reference: np.ndarray, *,
         fprs: tuple[float, ...] = FPRS, seed: int = 0) -> dict:
    """Per-example LiRA (U-LiRA's test) of a method against its references.

    Parameters
    ----------
    stats_unlearned, stats_reference : ndarray of shape (n_models, n_rows)
        The ε runs' statistics (the same arrays the ε estimator reads).
    fprs : tuple of float, default=(0.01, 0.001)
    seed : int, default=0
        The halves of the cross-fitting.

    Returns
    -------
    dict
        ``pairs`` (every (model, row) pair pooled), ``models`` (per model: sum over its
        rows), each with ``auc`` and ``tpr_at`` per FPR; ``per_row`` (each row's TPR at
        the first FPR: mean, q95, max over rows); ``n_models``.
    """
    sa, sb = lira_scores(stats_unlearned, stats_reference, seed)
    return {"n_models": [int(sa.shape[0]), int(sb.shape[0])],
            "pairs": _rates(sa, sb, fprs),
            "models": _rates(sa.sum(axis=1), sb.sum(axis=1), fprs),
            "per_row": _per_row_tpr(sa, sb, fprs[0])}


def whitebox(stat_unlearned: np.ndarray, stat_reference: np.ndarray, *,
             fprs: tuple[float, ...] = FPRS, seed: int = 0) -> dict:
    """The white-box gradient statistic's attack: one scalar per model.

    Parameters
    ----------
    stat_unlearned, stat_reference : ndarray of shape (n_models,)
        ``Σ_{W_i}(p - y)`` of each unlearned and each reference model.

    Returns
    -------
    dict
        ``auc`` and ``tpr_at`` of the cross-fitted Gaussian likelihood ratio, ``eps``
        (the ε estimator on the statistic as one row), ``max_abs`` of each side.
    """
    a = np.asarray(stat_unlearned, dtype=float).reshape(-1, 1)
    b = np.asarray(stat_reference, dtype=float).reshape(-1, 1)
    sa, sb = lira_scores(a, b, seed)
    return {**_rates(sa, sb, fprs), "n_models": [int(a.shape[0]), int(b.shape[0])],
            "eps": float(per_example_epsilon(a, b)[0]),
            "max_abs": [float(np.abs(a).max()), float(np.abs(b).max())]}
