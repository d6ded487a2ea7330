"""One L2 logistic-regression family and every unlearning method ``sisa compare`` runs on it.

All methods share one objective, on the same (already standardised) features::

    F(θ; D) = Σ_{i∈D} log(1 + exp(-s_i z_i)) + (lam / 2) ||w||² + bᵀθ,   z_i = wᵀx_i + c

with ``θ = (w, c)`` (the intercept ``c`` is not penalised), ``s_i = ±1`` the label and
``b`` an optional Gaussian perturbation (Guo et al.'s certificate; 0 otherwise). The
sum-of-losses form makes ``lam = 1`` the same model as scikit-learn's
``LogisticRegression(C=1)``. Fits are Newton's method to a gradient norm of ``tol``: every
model is at its optimum, so the only differences between methods come from how they
forget.

Unlearning functions take the original ``θ`` (fit on ``D = W ∪ U``) and return a new one:

* :func:`newton_removal`: one Newton step on ``F(·; W)`` (Guo et al. 2020), with the
  data-dependent gradient-residual bound of their Corollary 1;
* :func:`projective_residual_update`: Izzo et al. (AISTATS 2021); the leave-k-out update
  projected onto the span of the deleted rows;
* :func:`finetune`, :func:`neggrad_plus`, :func:`random_relabel`: minibatch SGD with one
  shared budget (same step, batch and number of passes);
* :func:`emse_unlearn`: the EMSE objective (log-loss on W, ``-log(1 - p_y)`` on U) by
  L-BFGS from ``θ``.

:class:`L2LogisticRegression` wraps the fit as a scikit-learn classifier, for SISA's shards.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from sisa.baselines._validation import INF, validate_constraints
from sisa.baselines.emse_objectives import emse_classifier_objective
from sisa.errors import InputError

__all__ = [
    "SGD_BUDGET",
    "L2LogisticRegression",
    "SGDBudget",
    "decision",
    "emse_unlearn",
    "finetune",
    "fit_logistic",
    "gradient",
    "hessian",
    "leave_k_out_update",
    "neggrad_plus",
    "newton_removal",
    "objective",
    "projective_residual_update",
    "random_relabel",
]

_GAMMA = 0.25  # Lipschitz constant of the logistic loss's second derivative (Guo et al.)


def _signs(y: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(y) > 0, 1.0, -1.0)


def _penalty(d: int, lam: float) -> np.ndarray:
    pen = np.full(d + 1, float(lam))
    pen[-1] = 0.0  # intercept
    return pen


def decision(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Logits ``z = X w + c`` of ``θ = (w, c)``."""
    return X @ theta[:-1] + theta[-1]


def objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float,
              noise: np.ndarray | None = None) -> float:
    """``F(θ; X, y)``: summed log-loss, ``lam/2 ||w||²``, plus ``noiseᵀθ`` if given."""
    z = _signs(y) * decision(theta, X)
    val = float(-log_expit(z).sum() + 0.5 * lam * theta[:-1] @ theta[:-1])
    return val + (float(noise @ theta) if noise is not None else 0.0)


def gradient(theta: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float,
             noise: np.ndarray | None = None) -> np.ndarray:
    """Gradient of :func:`objective` with respect to ``θ = (w, c)``."""
    s = _signs(y)
    r = -s * expit(-s * decision(theta, X))  # dℓ/dz
    g = np.append(X.T @ r, r.sum()) + _penalty(X.shape[1], lam) * theta
    return g + noise if noise is not None else g


def hessian(theta: np.ndarray, X: np.ndarray, lam: float) -> np.ndarray:
    """Hessian of :func:`objective` (it does not depend on the labels or the noise)."""
    p = expit(decision(theta, X))
    w = p * (1.0 - p)
    Xa = np.hstack([X, np.ones((X.shape[0], 1))])
    return (Xa * w[:, None]).T @ Xa + np.diag(_penalty(X.shape[1], lam))


def _solve(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``H⁻¹ g`` by Cholesky; least squares if H is numerically singular (the unpenalised
    intercept direction when every row is predicted with certainty)."""
    try:
        return cho_solve(cho_factor(H), g)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(H, g, rcond=None)[0]


def fit_logistic(X: np.ndarray, y: np.ndarray, lam: float = 1.0, *,
                 noise: np.ndarray | None = None, theta0: np.ndarray | None = None,
                 tol: float = 1e-8, max_iter: int = 100) -> np.ndarray:
    """Minimise :func:`objective` by damped Newton steps; returns ``θ = (w, c)``.

    ``theta0`` warm-starts (the optimum is unique, so it changes the cost, not the
    answer). Stops when the gradient norm is below ``tol * max(1, n_rows)``. ``noise``
    (Guo et al.'s ``b``) should be 0 on the intercept: that coordinate is unpenalised,
    and a perturbation larger than the row count there has no minimiser.
    """
    theta = np.zeros(X.shape[1] + 1) if theta0 is None else np.array(theta0, dtype=float)
    return damped_newton(theta, lambda t: objective(t, X, y, lam, noise),
                         lambda t: gradient(t, X, y, lam, noise),
                         lambda t, g: _solve(hessian(t, X, lam), g),
                         tol * max(1, len(y)), max_iter)


def damped_newton(theta: np.ndarray, f, grad, newton_step, gtol: float,
                  max_iter: int) -> np.ndarray:
    """Minimise a strongly convex ``f`` from ``theta`` by Newton steps with backtracking
    (Armijo), until ``||grad|| <= gtol`` or ``max_iter`` steps; ``newton_step(θ, g)``
    solves ``H(θ) s = g``."""
    fx = f(theta)
    for _ in range(max_iter):
        g = grad(theta)
        if np.linalg.norm(g) <= gtol:
            return theta
        step = newton_step(theta, g)
        t = 1.0
        while True:  # backtracking keeps Newton monotone far from the optimum
            cand = theta - t * step
            fc = f(cand)
            if fc <= fx - 1e-4 * t * (g @ step) or t < 1e-10:
                break
            t *= 0.5
        theta, fx = cand, fc
    return theta


class L2LogisticRegression(ClassifierMixin, BaseEstimator):
    """Binary L2 logistic regression fit to its optimum by Newton's method.

    The model of every method in ``sisa compare`` (SISA's shards included), so that
    the methods differ only in how they forget. Minimises
    ``Σ log-loss + lam/2 ||w||²`` (intercept unpenalised): ``lam = 1`` is scikit-learn's
    ``LogisticRegression(C=1)``.

    Parameters
    ----------
    lam : float, default=1.0
        L2 penalty on the weights (not on the intercept).
    tol : float, default=1e-8
        Stop when the gradient norm is below ``tol * n_rows``.
    max_iter : int, default=100
        Newton iterations at most.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    classes_ : ndarray of shape (2,)
    n_features_in_ : int

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); y = (X[:, 0] > 0).astype(int)
    >>> L2LogisticRegression().fit(X, y).score(X, y) > 0.95
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "lam": [Interval(numbers.Real, 0, INF, closed="neither")],
        "tol": [Interval(numbers.Real, 0, INF, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, lam: float = 1.0, *, tol: float = 1e-8, max_iter: int = 100):
        self.lam = lam
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any) -> L2LogisticRegression:
        """Fit on ``X`` and binary labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Two classes (a shard seeing one class gets a constant model).

        Returns
        -------
        self : object
        """
        validate_constraints(self)
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.classes_ = np.unique(y)
        if len(self.classes_) > 2:
            raise InputError(f"L2LogisticRegression is binary, got {len(self.classes_)} "
                             "classes: encode the task as two classes")
        pos = (y == self.classes_[-1]).astype(np.int64) if len(self.classes_) == 2 else \
            np.ones(len(y), dtype=np.int64)
        theta = fit_logistic(X, pos, self.lam, tol=self.tol, max_iter=self.max_iter)
        self.coef_, self.intercept_ = theta[None, :-1], theta[-1:]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Logit of the positive class (``classes_[-1]``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        z = self.decision_function(X)
        if len(self.classes_) == 1:
            return np.ones((len(z), 1))
        return np.column_stack([expit(-z), expit(z)])

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        z = self.decision_function(X)
        if len(self.classes_) == 1:
            return np.repeat(self.classes_, len(z))
        return self.classes_[(z > 0).astype(int)]


# -- unlearning ---------------------------------------------------------------------------------


def newton_removal(theta: np.ndarray, X_w: np.ndarray, y_w: np.ndarray, lam: float, *,
                   noise: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Guo et al.'s removal: one Newton step on ``F(·; W)`` from the original optimum.

    Returns ``(θ⁻, β)`` with ``β`` the data-dependent bound on the gradient residual
    ``γ ||X_W||₂ ||H⁻¹Δ|| ||X_W H⁻¹Δ||`` (their Corollary 1, γ = 1/4). With noise of
    standard deviation σ the removal is ``(c β / σ, δ)``-certified,
    ``c = sqrt(2 log(1.5/δ))`` (see :func:`sisa.baselines.certified_epsilon`).
    """
    g = gradient(theta, X_w, y_w, lam, noise)
    step = _solve(hessian(theta, X_w, lam), g)
    Xa = np.hstack([X_w, np.ones((X_w.shape[0], 1))])
    spec = math.sqrt(max(np.linalg.eigvalsh(Xa.T @ Xa)[-1], 0.0))
    beta = _GAMMA * spec * float(np.linalg.norm(step)) * float(np.linalg.norm(Xa @ step))
    return theta - step, beta


def leave_k_out_update(theta: np.ndarray, X: np.ndarray, y: np.ndarray, forget: np.ndarray,
                       lam: float, *, loss: str = "log") -> np.ndarray:
    """The leave-k-out update ``Δ`` from the hat matrix, in O(k² d) once ``H_D⁻¹ X_Kᵀ`` is
    known (Izzo et al., §4).

    ``loss="squared"`` (ridge, ``Σ ½(z - y)² + lam/2 ||w||²``): ``θ + Δ`` is exactly the
    refit without the rows. ``loss="log"``: the IRLS linearisation, i.e. the Newton step
    of :func:`newton_removal` expressed through the hat matrix.
    """
    if loss not in ("log", "squared"):
        raise InputError(f"loss must be 'log' or 'squared', got {loss!r}")
    Xa = np.hstack([X, np.ones((X.shape[0], 1))])
    K = Xa[forget]
    yk = np.asarray(y, dtype=float)[forget]
    if loss == "log":
        p = expit(K @ theta)
        s = p * (1.0 - p)
        r = p - (yk > 0)  # dℓ/dz of the deleted rows
        H = hessian(theta, X, lam)
    else:
        s = np.ones(len(yk))
        r = K @ theta - yk
        H = Xa.T @ Xa + np.diag(_penalty(X.shape[1], lam))
    HinvKt = _solve(H, K.T)  # d x k, precomputable at training
    A = K @ HinvKt  # k x k block of the hat matrix
    # Woodbury: H_W^-1 = H_D^-1 + H_D^-1 Kᵀ (S^-1 - A)^-1 K H_D^-1, and Δ = H_W^-1 Kᵀ r.
    inner = np.linalg.solve(np.diag(1.0 / np.maximum(s, 1e-300)) - A, A @ r)
    return HinvKt @ (r + inner)


def projective_residual_update(theta: np.ndarray, X: np.ndarray, y: np.ndarray,
                               forget: np.ndarray, lam: float, *,
                               loss: str = "log") -> np.ndarray:
    """Izzo et al.'s projective residual update: ``θ + P_K Δ``.

    ``Δ`` is the leave-k-out update (:func:`leave_k_out_update`) and ``P_K`` the
    orthogonal projection onto the span of the deleted rows (with their intercept
    coordinate), computed as ``X_K⁺ (X_K Δ)``: only the k predicted changes of the
    deleted rows enter, which is the method's point. When the deleted rows span the
    feature space, ``P_K`` is the identity and the update is the full step.
    """
    Xa = np.hstack([X, np.ones((X.shape[0], 1))])
    K = Xa[forget]
    delta = leave_k_out_update(theta, X, y, forget, lam, loss=loss)
    return theta + np.linalg.pinv(K) @ (K @ delta)


@dataclass(frozen=True)
class SGDBudget:
    """The shared budget of the SGD methods: passes over W, batch size, step."""

    epochs: int = 2
    batch: int = 128
    step: float = 0.05


SGD_BUDGET = SGDBudget()


def _sgd(theta, X, y, lam_per_row, rng, budget, ascent=None, alpha=1.0):
    """Minibatch SGD on the mean log-loss (+ per-row share of the penalty); with
    ``ascent = (X_u, y_u)`` each step also climbs U's mean loss, weighted ``1 - alpha``."""
    theta = theta.copy()
    n, d = X.shape
    pen = _penalty(d, lam_per_row)
    for _ in range(budget.epochs):
        order = rng.permutation(n)
        for start in range(0, n, budget.batch):
            b = order[start:start + budget.batch]
            g = gradient(theta, X[b], y[b], 0.0) / len(b) + pen * theta
            if ascent is not None:
                xu, yu = ascent
                ub = rng.choice(len(yu), min(len(yu), budget.batch), replace=False)
                gu = gradient(theta, xu[ub], yu[ub], 0.0) / len(ub)
                g = alpha * g - (1.0 - alpha) * gu
            theta -= budget.step * g
    return theta


def finetune(theta: np.ndarray, X_w: np.ndarray, y_w: np.ndarray, lam: float,
             rng: np.random.Generator, budget: SGDBudget = SGD_BUDGET) -> np.ndarray:
    """Fine-tune on the kept rows W only (the challenge's simplest baseline)."""
    return _sgd(theta, X_w, y_w, lam / len(y_w), rng, budget)


def neggrad_plus(theta: np.ndarray, X_w: np.ndarray, y_w: np.ndarray, X_u: np.ndarray,
                 y_u: np.ndarray, lam: float, rng: np.random.Generator,
                 budget: SGDBudget = SGD_BUDGET, alpha: float = 0.95) -> np.ndarray:
    """NegGrad+ (Kurmanji et al. 2023): descend ``alpha`` x W's loss and ascend
    ``1 - alpha`` x U's loss in every step."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha!r}")
    return _sgd(theta, X_w, y_w, lam / len(y_w), rng, budget, ascent=(X_u, y_u), alpha=alpha)


def random_relabel(theta: np.ndarray, X_w: np.ndarray, y_w: np.ndarray, X_u: np.ndarray,
                   y_u: np.ndarray, lam: float, rng: np.random.Generator,
                   budget: SGDBudget = SGD_BUDGET) -> np.ndarray:
    """Random relabelling (Graves et al. 2021): fine-tune on W plus U with each U label
    replaced by another class (binary: flipped)."""
    X = np.vstack([X_w, X_u])
    y = np.concatenate([y_w, 1 - np.asarray(y_u)])
    return _sgd(theta, X, y, lam / len(y), rng, budget)


def emse_unlearn(theta: np.ndarray, X_w: np.ndarray, y_w: np.ndarray, X_u: np.ndarray,
                 y_u: np.ndarray, lam: float, *, weight: float = 1.0,
                 max_iter: int = 50) -> np.ndarray:
    """EMSE (sisa's classification form): minimise log-loss on W plus
    ``weight * -log(1 - p_y)`` on U, same penalty, by L-BFGS from ``θ``."""
    def fun(t):
        return emse_classifier_objective(t, X_w, y_w, X_u, y_u, n_classes=2, lam=weight,
                                         reduction="sum", alpha=lam)
    res = minimize(fun, theta, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x
