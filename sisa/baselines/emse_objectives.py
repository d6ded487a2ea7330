"""The EMSE objectives and their exact gradients (the estimators are in :mod:`.emse`).

After S. Achour, "How to unlearn a learned Machine Learning model?" (arXiv 2410.09935,
2024). The exact formulas below are sisa's own definitions; see ``docs/emse.md``.

Regression, residual ``r = y - f(x)``, wanted rows W, unwanted rows U::

    EMSE(theta) = A_W[r_i**2] - lam * 2 sigma**2 * A_U[log(1 - c exp(-r_j**2 / (2 sigma**2)))]
                  + alpha * ||w||**2

where ``A`` is the mean (``reduction="mean"``) or the sum (``"sum"``) over the set, and
``c = 1 / (sigma sqrt(2 pi))`` ("normalized") or ``c = 1`` ("kernel").

Classification (sisa's generalization of the same likelihood argument), ``p_y(x)`` the
model's probability of the row's label::

    L(theta) = A_W[-log p_y(x_i)] + lam * A_U[-log(1 - p_y(x_j))] + alpha / 2 * ||W||**2
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy.special import logsumexp

from sisa.errors import InputError
from sisa.metrics import check_sigma

__all__ = ["Reduction", "emse_classifier_objective", "emse_objective", "resolve_c"]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
# Floor on r^2 / (2 sigma^2): with c = 1 the unwanted term has a log barrier at r = 0;
# the floor keeps it finite (about -690) so L-BFGS never sees inf or nan.
_A_FLOOR = 1e-300

Reduction = Literal["mean", "sum"]


def resolve_c(c: str | float, sigma: float) -> float:
    """Return the numeric constant ``c`` of the unwanted-row likelihood.

    Parameters
    ----------
    c : {"normalized", "kernel"} or float
        ``"normalized"``: ``1 / (sigma sqrt(2 pi))``, the Gaussian density's peak, which
        must be < 1 (so ``sigma > 0.399``). ``"kernel"``: 1. A float must be in (0, 1].
    sigma : float
        Residual scale (> 0).

    Returns
    -------
    float

    Raises
    ------
    InputError
        If ``c`` is none of the above, or ``"normalized"`` with ``sigma <= 0.399``.

    Examples
    --------
    >>> round(resolve_c("normalized", 1.0), 4)
    0.3989
    >>> resolve_c("kernel", 0.1)
    1.0
    """
    s = check_sigma(sigma)
    if isinstance(c, str):
        if c == "kernel":
            return 1.0
        if c != "normalized":
            raise InputError(f"c must be 'normalized', 'kernel' or a float in (0, 1], got {c!r}")
        value = 1.0 / (s * _SQRT_2PI)
        if value >= 1.0:
            raise InputError(
                f"c='normalized' needs sigma > 1/sqrt(2*pi) ≈ 0.399 (got sigma={s:g}, "
                f"c={value:.3g} ≥ 1): raise sigma or use c='kernel' (c=1)"
            )
        return value
    value = float(c)
    if not 0.0 < value <= 1.0:
        raise InputError(f"c must be in (0, 1], got {c!r}: use c='kernel' for c=1")
    return value


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise InputError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _scale(n: int, reduction: str) -> float:
    return 1.0 / n if reduction == "mean" and n > 0 else 1.0


def _unwanted_term(
    r_u: np.ndarray, s2: float, c_val: float, lam: float, k_u: float
) -> tuple[float, np.ndarray]:
    """The unwanted rows' share of EMSE (to subtract) and its derivative in ``r_u``."""
    a = np.maximum(r_u * r_u / (2.0 * s2), _A_FLOOR)
    # 1 - c e^-a written as a sum of two non-negative terms: no cancellation near a = 0.
    not_explained = (1.0 - c_val) - c_val * np.expm1(-a)
    term = lam * 2.0 * s2 * k_u * float(np.sum(np.log(not_explained)))
    return term, -2.0 * lam * k_u * r_u * (c_val * np.exp(-a) / not_explained)


def _linear_gradient(
    theta: np.ndarray,
    Phi_w: np.ndarray,
    g_w: np.ndarray,
    Phi_u: np.ndarray,
    g_u: np.ndarray,
    alpha: float,
) -> np.ndarray:
    """Chain rule from the residuals' derivatives ``g`` to ``theta = (w, b)``."""
    grad = np.empty_like(theta, dtype=np.float64)
    grad[:-1] = -(Phi_w.T @ g_w) - (Phi_u.T @ g_u) + 2.0 * alpha * theta[:-1]
    grad[-1] = -(g_w.sum() + g_u.sum())
    return grad


def emse_objective(
    theta: np.ndarray,
    Phi_w: np.ndarray,
    y_w: np.ndarray,
    Phi_u: np.ndarray,
    y_u: np.ndarray,
    sigma: float,
    lam: float = 1.0,
    c: str | float = "normalized",
    reduction: Reduction = "mean",
    alpha: float = 0.0,
) -> tuple[float, np.ndarray]:
    """EMSE value and its exact gradient for the linear model ``f(x) = Phi @ w + b``.

    Parameters
    ----------
    theta : ndarray of shape (d + 1,)
        Coefficients ``w`` followed by the intercept ``b``.
    Phi_w, Phi_u : ndarray of shape (n_w, d) and (n_u, d)
        Features of the wanted and unwanted rows (``n_u`` may be 0).
    y_w, y_u : ndarray of shape (n_w,) and (n_u,)
        Targets.
    sigma : float
        Residual scale of the Gaussian likelihood.
    lam : float, default=1.0
        Weight of the unwanted term.
    c : {"normalized", "kernel"} or float, default="normalized"
        See :func:`resolve_c`.
    reduction : {"mean", "sum"}, default="mean"
        Average each set's terms (W and U separately) or add them up.
    alpha : float, default=0.0
        L2 penalty ``alpha * ||w||**2`` (intercept not penalized).

    Returns
    -------
    value : float
    grad : ndarray of shape (d + 1,)

    Examples
    --------
    >>> Phi = np.array([[0.0], [1.0]])  # f(x) = 1 * x + 0, residuals 0 and 1, no U rows
    >>> val, grad = emse_objective(np.array([1.0, 0.0]), Phi, np.array([0.0, 2.0]),
    ...                            Phi[:0], np.array([]), sigma=1.0)
    >>> float(val), grad.tolist()
    (0.5, [-1.0, -1.0])
    """
    c_val = resolve_c(c, sigma)
    _check_reduction(reduction)
    w, b = theta[:-1], theta[-1]
    r_w = y_w - Phi_w @ w - b
    k_w = _scale(len(y_w), reduction)
    value = k_w * float(r_w @ r_w) + alpha * float(w @ w)
    g_w = 2.0 * k_w * r_w  # d value / d r_w
    r_u = y_u - Phi_u @ w - b
    unwanted, g_u = _unwanted_term(r_u, sigma * sigma, c_val, lam, _scale(len(y_u), reduction))
    value -= unwanted
    return value, _linear_gradient(theta, Phi_w, g_w, Phi_u, g_u, alpha)


def _full_logits(Phi: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logits for every class; the binary model's class-0 logit is fixed at 0."""
    z = Phi @ W + b
    return np.hstack([np.zeros((len(z), 1)), z]) if W.shape[1] == 1 else z


def _unpack(theta: np.ndarray, d: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``W`` of shape (d, k) and ``b`` of shape (k,) from ``theta``; k = 1 when binary."""
    k = 1 if n_classes == 2 else n_classes
    return theta[: d * k].reshape(d, k), theta[d * k :]


def _set_terms(
    Phi: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, scale: float, unwanted: bool
) -> tuple[float, np.ndarray, np.ndarray]:
    """One set's (W's or U's) share of the value and of the gradients in ``W`` and ``b``."""
    z = _full_logits(Phi, W, b)
    rows = np.arange(len(y))
    lse = logsumexp(z, axis=1)
    p = np.exp(z - lse[:, None])
    if unwanted:
        # -log(1 - p_y) = lse(z) - lse(z without class y); its gradient is p - q with
        # q the softmax over the other classes: bounded even when p_y -> 1.
        z_other = z.copy()
        z_other[rows, y] = -np.inf
        lse_other = logsumexp(z_other, axis=1)
        term = float(np.sum(lse - lse_other))
        G = p - np.exp(z_other - lse_other[:, None])
    else:
        term = float(np.sum(lse - z[rows, y]))
        G = p.copy()
        G[rows, y] -= 1.0
    if W.shape[1] == 1:
        G = G[:, 1:]  # the binary model has no class-0 parameters
    return scale * term, scale * (Phi.T @ G), scale * G.sum(axis=0)


def emse_classifier_objective(
    theta: np.ndarray,
    Phi_w: np.ndarray,
    y_w: np.ndarray,
    Phi_u: np.ndarray,
    y_u: np.ndarray,
    n_classes: int,
    lam: float = 1.0,
    reduction: Reduction = "mean",
    alpha: float = 0.0,
) -> tuple[float, np.ndarray]:
    """Classification EMSE: log-loss on W plus ``lam * -log(1 - p_y)`` on U, with gradient.

    The model is logistic (``n_classes == 2``: one logit for class 1, class 0's is 0) or
    softmax (one logit per class): ``logits = Phi @ W + b``.

    Parameters
    ----------
    theta : ndarray of shape (d * k + k,)
        ``W`` of shape (d, k) raveled in C order, then ``b`` of shape (k,), where
        ``k = 1`` if ``n_classes == 2`` else ``n_classes``.
    Phi_w, Phi_u : ndarray of shape (n_w, d) and (n_u, d)
        Features of the wanted and unwanted rows.
    y_w, y_u : ndarray of int
        Class indices in ``[0, n_classes)``.
    n_classes : int
        Number of classes (>= 2).
    lam : float, default=1.0
        Weight of the unwanted term.
    reduction : {"mean", "sum"}, default="mean"
        Average each set's terms or add them up.
    alpha : float, default=0.0
        L2 penalty ``alpha / 2 * ||W||**2`` (intercepts not penalized).

    Returns
    -------
    value : float
    grad : ndarray, same shape as ``theta``

    Examples
    --------
    >>> Phi = np.zeros((2, 1))
    >>> val, _ = emse_classifier_objective(np.zeros(2), Phi, np.array([0, 1]),
    ...                                    Phi[:0], np.array([], dtype=int), n_classes=2)
    >>> round(float(val), 6)  # log(2): a coin flip on both wanted rows
    0.693147
    """
    _check_reduction(reduction)
    W, b = _unpack(theta, Phi_w.shape[1], n_classes)
    value = 0.5 * alpha * float(np.sum(W * W))
    grad_W = alpha * W
    grad_b = np.zeros(W.shape[1])
    for Phi, y, weight, unwanted in ((Phi_w, y_w, 1.0, False), (Phi_u, y_u, lam, True)):
        if len(y) == 0:
            continue
        v, g_W, g_b = _set_terms(Phi, y, W, b, weight * _scale(len(y), reduction), unwanted)
        value += v
        grad_W += g_W
        grad_b += g_b
    return value, np.concatenate([grad_W.ravel(), grad_b])
