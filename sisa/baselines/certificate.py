"""The (ε, δ) certificate of a removal under Gaussian loss perturbation (Guo et al. 2020).

Shared by the certified-removal estimators (:mod:`sisa.baselines.newton`), the
linear family's Newton removal (:mod:`sisa.baselines.linear`) and ``sisa compare``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.special import expit, log_expit

from sisa.baselines.linear import damped_newton
from sisa.errors import InputError

__all__ = ["certified_epsilon", "fit_folded", "folded_gradient", "folded_newton_removal",
           "residual_bound"]


def certified_epsilon(removal_bound: float, noise_std: float, delta: float) -> float:
    """ε certified by a gradient-residual bound under Gaussian loss perturbation.

    ``c * beta / sigma`` with ``c = sqrt(2 log(1.5/delta))`` (Guo et al., Theorem 3):
    0 when ``beta = 0`` (the removal is exact), ``inf`` when ``beta > 0`` and there is
    no noise.

    Parameters
    ----------
    removal_bound : float
        Accumulated gradient-residual bound beta, at least 0.
    noise_std : float
        Standard deviation sigma of the perturbation ``b``, at least 0.
    delta : float
        In (0, 1).

    Returns
    -------
    float

    Raises
    ------
    InputError
        If an argument is outside its range.

    Examples
    --------
    >>> round(certified_epsilon(0.1, 10.0, 1e-4), 4)
    0.0439
    >>> certified_epsilon(0.1, 0.0, 1e-4)
    inf
    """
    if not removal_bound >= 0 or not noise_std >= 0 or not 0 < delta < 1:
        raise InputError(
            f"need removal_bound >= 0, noise_std >= 0, 0 < delta < 1; got "
            f"{removal_bound!r}, {noise_std!r}, {delta!r}"
        )
    if removal_bound == 0:
        return 0.0
    if noise_std == 0:
        return math.inf
    return math.sqrt(2.0 * math.log(1.5 / delta)) * removal_bound / noise_std


# -- the linear family's certified objective (``sisa compare``'s ``newton_noisy``) ---------------
#
# Guo et al.'s certificate reads the released θ as the exact minimiser of a perturbed
# objective whose noise b ↦ θ map is a bijection onto every coordinate: the penalty must
# make F strongly convex in all of θ and b must be Gaussian on all of θ. An unpenalised,
# unperturbed intercept breaks it: every exact fit has Σ_W(p - y) = 0 on that coordinate,
# every Newton model has Σ_W(p - y) = its residual, and one threshold separates them. So
# the intercept is folded into w as a constant feature of value 1: penalised by ``lam``
# like every weight and perturbed like every weight.

_GAMMA = 0.25  # a Lipschitz constant of the logistic loss's second derivative (Guo et al.)


def _aug(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))])


def folded_gradient(theta: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float,
                    noise: np.ndarray | None = None) -> np.ndarray:
    """Gradient of ``Σ log(1 + exp(-s_i θᵀx̃_i)) + lam/2 ||θ||² + bᵀθ``, ``x̃ = (x, 1)``.

    ``θ = (w, c)`` as in :mod:`sisa.baselines.linear`, but the intercept ``c`` is penalised
    (and perturbed) like every weight. Its last coordinate minus ``lam c + b_c`` is the
    white-box statistic ``Σ (p - y)``.
    """
    s = np.where(np.asarray(y) > 0, 1.0, -1.0)
    Xa = _aug(X)
    r = -s * expit(-s * (Xa @ theta))
    g = Xa.T @ r + lam * theta
    return g if noise is None else g + noise


def _folded_hessian(theta: np.ndarray, X: np.ndarray, lam: float) -> np.ndarray:
    Xa = _aug(X)
    p = expit(Xa @ theta)
    H = (Xa * (p * (1.0 - p))[:, None]).T @ Xa
    H.flat[:: H.shape[0] + 1] += lam
    return H


def _folded_objective(theta, X, y, lam, noise) -> float:
    s = np.where(np.asarray(y) > 0, 1.0, -1.0)
    val = float(-log_expit(s * (_aug(X) @ theta)).sum() + 0.5 * lam * theta @ theta)
    return val + (float(noise @ theta) if noise is not None else 0.0)


def fit_folded(X: np.ndarray, y: np.ndarray, lam: float, *, noise: np.ndarray | None = None,
               theta0: np.ndarray | None = None, tol: float = 1e-8,
               max_iter: int = 100) -> np.ndarray:
    """The exact minimiser (damped Newton to ``||grad|| <= tol * n``) of the folded objective
    (:func:`folded_gradient`); ``θ = (w, c)``. Strongly convex for any ``noise``."""
    theta = np.zeros(X.shape[1] + 1) if theta0 is None else np.array(theta0, dtype=float)
    return damped_newton(theta, lambda t: _folded_objective(t, X, y, lam, noise),
                         lambda t: folded_gradient(t, X, y, lam, noise),
                         lambda t, g: cho_solve(cho_factor(_folded_hessian(t, X, lam)), g),
                         tol * max(1, len(y)), max_iter)


def residual_bound(X_w: np.ndarray, step: np.ndarray) -> float:
    """Bound on ``||∇F(θ - step; W)||`` after the Newton step ``step = H⁻¹∇F(θ; W)``.

    ``γ ||X̃||₂ ||X̃ step||₄²`` (γ = 1/4): Guo et al.'s Corollary 1 without its premise
    ``||x|| <= 1``. The residual is ``Σ_i (ℓ''(z_i) - ℓ''(z̄_i)) x̃_i x̃_iᵀ step`` with
    ``|ℓ''(z_i) - ℓ''(z̄_i)| <= γ |x̃_iᵀ step|``, so its norm is at most
    ``||X̃||₂ γ (Σ_i (x̃_iᵀ step)⁴)^½``. With ``||x̃_i|| <= 1`` this is below the paper's
    ``γ ||X̃||₂ ||step|| ||X̃ step||``; Adult's standardised rows have norms near 10, where
    the paper's form would not bound the residual.
    """
    Xa = _aug(X_w)
    spec = math.sqrt(max(float(np.linalg.eigvalsh(Xa.T @ Xa)[-1]), 0.0))
    z = Xa @ step
    return _GAMMA * spec * math.sqrt(float(np.sum(z ** 4)))


def folded_newton_removal(theta: np.ndarray, X_w: np.ndarray, y_w: np.ndarray, lam: float, *,
                          noise: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Guo et al.'s removal on the folded objective: one Newton step on ``F_b(·; W)`` from
    the original optimum on D; returns ``(θ⁻, β)`` with β from :func:`residual_bound`.

    With ``noise ~ N(0, σ²)`` on every coordinate of the original and of the retrain it is
    compared with, the removal is ``(certified_epsilon(β, σ, δ), δ)``-certified.
    """
    g = folded_gradient(theta, X_w, y_w, lam, noise)
    step = cho_solve(cho_factor(_folded_hessian(theta, X_w, lam)), g)
    return theta - step, residual_bound(X_w, step)
