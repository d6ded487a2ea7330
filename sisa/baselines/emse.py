"""EMSE fine-tune: approximate unlearning by maximizing the likelihood of wanted rows
while suppressing the likelihood of unwanted rows.

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
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from sisa.errors import InputError
from sisa.metrics import _as_1d, check_sigma

__all__ = [
    "EMSEClassifierUnlearner",
    "EMSEUnlearner",
    "emse_classifier_objective",
    "emse_objective",
    "resolve_c",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
# Floor on r^2 / (2 sigma^2): with c = 1 the unwanted term has a log barrier at r = 0;
# the floor keeps it finite (about -690) so L-BFGS never sees inf or nan.
_A_FLOOR = 1e-300
# Relative-decrease test handed to L-BFGS-B; tiny on purpose so `tol` (gradient) decides.
_FTOL = 1e-13

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
    s2 = sigma * sigma

    r_w = y_w - Phi_w @ w - b
    k_w = _scale(len(y_w), reduction)
    value = k_w * float(r_w @ r_w) + alpha * float(w @ w)
    g_w = 2.0 * k_w * r_w  # d value / d r_w

    r_u = y_u - Phi_u @ w - b
    k_u = _scale(len(y_u), reduction)
    a = np.maximum(r_u * r_u / (2.0 * s2), _A_FLOOR)
    # 1 - c e^-a written as a sum of two non-negative terms: no cancellation near a = 0.
    not_explained = (1.0 - c_val) - c_val * np.expm1(-a)
    value -= lam * 2.0 * s2 * k_u * float(np.sum(np.log(not_explained)))
    g_u = -2.0 * lam * k_u * r_u * (c_val * np.exp(-a) / not_explained)

    grad = np.empty_like(theta, dtype=np.float64)
    grad[:-1] = -(Phi_w.T @ g_w) - (Phi_u.T @ g_u) + 2.0 * alpha * w
    grad[-1] = -(g_w.sum() + g_u.sum())
    return value, grad


def _full_logits(Phi: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logits for every class; the binary model's class-0 logit is fixed at 0."""
    z = Phi @ W + b
    return np.hstack([np.zeros((len(z), 1)), z]) if W.shape[1] == 1 else z


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
    k = 1 if n_classes == 2 else n_classes
    d = Phi_w.shape[1]
    W = theta[: d * k].reshape(d, k)
    b = theta[d * k :]
    value = 0.5 * alpha * float(np.sum(W * W))
    grad_W = alpha * W
    grad_b = np.zeros(k)
    for Phi, y, weight, unwanted in ((Phi_w, y_w, 1.0, False), (Phi_u, y_u, lam, True)):
        if len(y) == 0:
            continue
        z = _full_logits(Phi, W, b)
        rows = np.arange(len(y))
        lse = logsumexp(z, axis=1)
        p = np.exp(z - lse[:, None])
        scale = weight * _scale(len(y), reduction)
        if unwanted:
            # -log(1 - p_y) = lse(z) - lse(z without class y); its gradient is p - q with
            # q the softmax over the other classes: bounded even when p_y -> 1.
            z_other = z.copy()
            z_other[rows, y] = -np.inf
            lse_other = logsumexp(z_other, axis=1)
            value += scale * float(np.sum(lse - lse_other))
            G = p - np.exp(z_other - lse_other[:, None])
        else:
            value += scale * float(np.sum(lse - z[rows, y]))
            G = p.copy()
            G[rows, y] -= 1.0
        if k == 1:
            G = G[:, 1:]
        grad_W += scale * (Phi.T @ G)
        grad_b += scale * G.sum(axis=0)
    return value, np.concatenate([grad_W.ravel(), grad_b])


def _check_X(X: Any, name: str, n_features: int | None = None) -> np.ndarray:
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be 2-D (rows, features), got shape {arr.shape}: "
            "reshape a single feature with X.reshape(-1, 1)"
        )
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty: pass at least one row")
    try:
        arr = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        msg = f"{name} must be numeric, got dtype {arr.dtype}: encode it first"
        raise InputError(msg) from None
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(f"{name} has {bad} NaN/inf values: drop or impute them first")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(
            f"{name} has {arr.shape[1]} features but the model was fit on {n_features}: "
            "pass the same columns as in fit_original"
        )
    return arr


def _check_Xy(X: Any, y: Any, names: tuple[str, str], n_features: int | None, numeric: bool):
    Xa = _check_X(X, names[0], n_features)
    ya = _as_1d(y, names[1], numeric=numeric)
    if len(ya) != len(Xa):
        raise InputError(
            f"{names[0]} has {len(Xa)} rows but {names[1]} has {len(ya)}: pass one target per row"
        )
    return Xa, ya


class _EMSEBase(BaseEstimator):
    """Shared machinery: feature map, internal standardization, L-BFGS with a trace."""

    _numeric_y = True

    def _check_params(self) -> None:
        _check_reduction(self.reduction)
        checks = [("lam", 0.0), ("alpha", 0.0), ("tol", None), ("max_iter", 1)]
        if self.n_threads is not None:
            checks.append(("n_threads", 1))
        for name, low in checks:
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.number)) and np.isfinite(v)
            if not ok or (v <= 0 if low is None else v < low):
                bound = "> 0" if low is None else f">= {low:g}"
                raise InputError(f"{name} must be a finite number {bound}, got {v!r}")

    def _blas_threads(self) -> AbstractContextManager:
        # The products here are tall-skinny matrix-vector ones: BLAS threads cost more than
        # they gain (diamonds: 0.11 s with 1 thread, 0.9-3 s with 2 on a busy 2-vCPU box).
        if self.n_threads is None:
            return nullcontext()
        return threadpool_limits(limits=int(self.n_threads), user_api="blas")

    def _features(self, X: np.ndarray) -> np.ndarray:
        return X if self.transformer_ is None else np.asarray(self.transformer_.transform(X))

    def _fit_features(self, X: np.ndarray) -> np.ndarray:
        """Fit the transformer and the standardization on all rows; return standardized Phi."""
        self.transformer_ = None if self.transformer is None else clone(self.transformer).fit(X)
        Phi = self._features(X)
        self.feature_mean_ = Phi.mean(axis=0)
        std = Phi.std(axis=0)
        # Constant columns (e.g. PolynomialFeatures' bias) become 0 and keep weight 0.
        self.feature_scale_ = np.where(std > 1e-12 * (1.0 + np.abs(self.feature_mean_)), std, 1.0)
        self.n_features_in_ = X.shape[1]
        return self._standardize(Phi)

    def _standardize(self, Phi: np.ndarray) -> np.ndarray:
        return (Phi - self.feature_mean_) / self.feature_scale_

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_mean_"):
            raise InputError(
                f"{type(self).__name__} is not fitted: call fit_original(X, y) on all rows first"
            )

    def _wanted_unwanted(self, X_w: Any, y_w: Any, X_u: Any, y_u: Any):
        self._check_fitted()
        self._check_params()
        n = self.n_features_in_
        X_w, y_w = _check_Xy(X_w, y_w, ("X_w", "y_w"), n, self._numeric_y)
        X_u, y_u = _check_Xy(X_u, y_u, ("X_u", "y_u"), n, self._numeric_y)
        Z_w = self._standardize(self._features(X_w))
        Z_u = self._standardize(self._features(X_u))
        return Z_w, y_w, Z_u, y_u

    def _minimize(self, fun: Callable[[np.ndarray], tuple[float, np.ndarray]], theta0: np.ndarray):
        """Run L-BFGS-B from ``theta0``; record the trace and the stopping reason."""
        last: dict[str, Any] = {}

        def evaluate(theta: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = fun(theta)
            last.update(x=theta.copy(), f=value, g=grad)
            return value, grad

        f0, g0 = evaluate(theta0)
        trace = [(0, f0, float(np.linalg.norm(g0)))]

        def callback(intermediate_result) -> None:
            if not np.array_equal(intermediate_result.x, last["x"]):
                evaluate(intermediate_result.x)
            trace.append((len(trace), last["f"], float(np.linalg.norm(last["g"]))))

        res = minimize(
            evaluate,
            theta0,
            jac=True,
            method="L-BFGS-B",
            callback=callback,
            options={"maxiter": int(self.max_iter), "gtol": float(self.tol), "ftol": _FTOL},
        )
        it, obj, gn = (np.array(col) for col in zip(*trace, strict=True))
        self.trace_ = {"iteration": it.astype(int), "objective": obj, "grad_norm": gn}
        self.n_iter_ = int(res.nit)
        self.converged_ = bool(res.success)
        self.stop_reason_ = str(res.message)
        self.objective_start_ = float(f0)
        self.objective_ = float(res.fun)
        return res.x

    def fit(self, X: Any, y: Any, unwanted: Any):
        """Fit on all rows, then unlearn the rows flagged in ``unwanted``.

        Shorthand for ``fit_original(X, y).unlearn(X[~unwanted], y[~unwanted],
        X[unwanted], y[unwanted])``.

        Parameters
        ----------
        X : array-like of shape (n, p)
        y : array-like of shape (n,)
        unwanted : array-like of bool, shape (n,)
            True for the rows to forget.

        Returns
        -------
        self
        """
        X, y = _check_Xy(X, y, ("X", "y"), None, self._numeric_y)
        mask = np.asarray(unwanted)
        if mask.dtype != bool or mask.shape != (len(X),):
            raise InputError(
                f"unwanted must be a boolean mask of shape ({len(X)},), got "
                f"{mask.dtype} {mask.shape}: pass e.g. dataset.unwanted"
            )
        self.fit_original(X, y)
        return self.unlearn(X[~mask], y[~mask], X[mask], y[mask])

    def _timed_unlearn(self, solve: Callable[[], None]):
        with self._blas_threads():
            start = time.perf_counter()
            solve()
            self.unlearn_time_ = time.perf_counter() - start
        return self


class EMSEUnlearner(RegressorMixin, _EMSEBase):
    """EMSE fine-tune for regression models linear in their parameters.

    The model is ``f(x) = transformer(x) @ coef_ + intercept_``. ``fit_original`` fits it
    by (ridge) least squares on all rows; ``unlearn`` then fine-tunes it from those
    parameters by minimizing EMSE (see :func:`emse_objective`) with L-BFGS-B and the
    analytic gradient.

    The transformed features are standardized internally (mean and std over all rows in
    ``fit_original``) because polynomial or spline columns can differ by orders of
    magnitude, which makes L-BFGS crawl. The optimizer works on the standardized model's
    parameters, an invertible linear reparametrization of ``(coef_, intercept_)``; the
    gradient is exact for those parameters and ``coef_``/``intercept_`` are mapped back.
    ``alpha`` therefore penalizes the standardized coefficients, like a ridge on
    ``StandardScaler`` output.

    Parameters
    ----------
    transformer : sklearn transformer or None, default=None
        Feature map, e.g. ``PolynomialFeatures``, ``SplineTransformer``, ``RBFSampler``,
        ``Nystroem``. Cloned and fit on all rows in ``fit_original``. None = identity.
    sigma : float, default=1.0
        Residual scale of the Gaussian likelihood, in units of ``y``.
    lam : float, default=1.0
        Weight of the unwanted term.
    c : {"normalized", "kernel"} or float, default="normalized"
        Peak of the unwanted-row kernel; "normalized" needs ``sigma > 0.399``.
    reduction : {"mean", "sum"}, default="mean"
        "mean" averages W and U separately so ``lam`` means the same for any ``|W|/|U|``.
    alpha : float, default=0.0
        L2 penalty on the standardized coefficients (also used by ``fit_original``).
    max_iter : int, default=1000
        Maximum L-BFGS iterations.
    tol : float, default=1e-7
        L-BFGS-B stops at the first of: largest absolute gradient component <= ``tol``;
        relative objective decrease ``(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1)`` <= 1e-13;
        ``max_iter`` iterations; or a failed line search (then ``converged_`` is False).
    n_threads : int or None, default=1
        BLAS threads while fitting and unlearning (None: leave the BLAS default). One
        is fastest for these matrix-vector products, and right for Ray workers.

    Attributes
    ----------
    coef_, intercept_ : ndarray of shape (d,), float
        Current parameters (after ``unlearn``; the original ones before it).
    original_coef_, original_intercept_ : ndarray, float
        Parameters of the model fit on all rows.
    trace_ : dict of ndarray
        ``iteration``, ``objective``, ``grad_norm`` (Euclidean) per L-BFGS iteration,
        starting with iteration 0 at the original parameters.
    n_iter_ : int
    converged_ : bool
        True if L-BFGS met its tolerance; False if it hit ``max_iter`` or failed.
    stop_reason_ : str
        SciPy's message.
    objective_start_, objective_ : float
        EMSE at the original parameters and at the end.
    unlearn_time_ : float
        Wall seconds of ``unlearn`` (feature map of W and U plus optimization).

    Examples
    --------
    >>> from sklearn.preprocessing import PolynomialFeatures
    >>> from sisa.datasets import load_synthetic
    >>> ds = load_synthetic(n=400)
    >>> m = EMSEUnlearner(PolynomialFeatures(9), sigma=0.5).fit(ds.X, ds.y, ds.unwanted)
    >>> w = ~ds.unwanted
    >>> bool(m.score(ds.X[w], ds.y[w]) > 0.95)
    True
    """

    def __init__(
        self,
        transformer: Any = None,
        sigma: float = 1.0,
        lam: float = 1.0,
        c: str | float = "normalized",
        reduction: Reduction = "mean",
        alpha: float = 0.0,
        max_iter: int = 1000,
        tol: float = 1e-7,
        n_threads: int | None = 1,
    ) -> None:
        self.transformer = transformer
        self.sigma = sigma
        self.lam = lam
        self.c = c
        self.reduction = reduction
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.n_threads = n_threads

    def fit_original(self, X: Any, y: Any) -> EMSEUnlearner:
        """Fit the model on all rows by (ridge) least squares.

        Minimizes ``A[r**2] + alpha * ||w||**2`` (``A`` = mean or sum per ``reduction``),
        i.e. EMSE with no unwanted rows.

        Parameters
        ----------
        X : array-like of shape (n, p)
        y : array-like of shape (n,)

        Returns
        -------
        self
        """
        self._check_params()
        X, y = _check_Xy(X, y, ("X", "y"), None, True)
        with self._blas_threads():
            Z = self._fit_features(X)
            ridge = math.sqrt(self.alpha * (len(y) if self.reduction == "mean" else 1.0))
            A = np.vstack([Z, ridge * np.eye(Z.shape[1])])
            rhs = np.concatenate([y - y.mean(), np.zeros(Z.shape[1])])
            w = np.linalg.lstsq(A, rhs, rcond=None)[0]
        self._set_params_from(np.append(w, y.mean()))
        self.original_coef_ = self.coef_.copy()
        self.original_intercept_ = self.intercept_
        return self

    def _set_params_from(self, theta: np.ndarray) -> None:
        self.coef_ = theta[:-1] / self.feature_scale_
        self.intercept_ = float(theta[-1] - self.coef_ @ self.feature_mean_)

    def unlearn(self, X_w: Any, y_w: Any, X_u: Any, y_u: Any) -> EMSEUnlearner:
        """Fine-tune the original model to keep W and forget U by minimizing EMSE.

        Always starts from the parameters of ``fit_original`` (calling it twice does not
        compound).

        Parameters
        ----------
        X_w : array-like of shape (n_w, p)
        y_w : array-like of shape (n_w,)
            Wanted rows.
        X_u : array-like of shape (n_u, p)
        y_u : array-like of shape (n_u,)
            Unwanted rows.

        Returns
        -------
        self
        """

        def solve() -> None:
            Z_w, yw, Z_u, yu = self._wanted_unwanted(X_w, y_w, X_u, y_u)
            sigma = check_sigma(self.sigma)
            c = resolve_c(self.c, sigma)
            # The same model in standardized coordinates: w_z = w * scale, b_z = b + w @ mean.
            w0 = self.original_coef_ * self.feature_scale_
            b0 = self.original_intercept_ + self.original_coef_ @ self.feature_mean_
            theta0 = np.append(w0, b0)
            theta = self._minimize(
                lambda t: emse_objective(
                    t, Z_w, yw, Z_u, yu, sigma, self.lam, c, self.reduction, self.alpha
                ),
                theta0,
            )
            self._set_params_from(theta)

        return self._timed_unlearn(solve)

    def predict(self, X: Any) -> np.ndarray:
        """Predict with the current (unlearned, once ``unlearn`` ran) parameters."""
        self._check_fitted()
        return self._features(_check_X(X, "X", self.n_features_in_)) @ self.coef_ + self.intercept_

    def predict_original(self, X: Any) -> np.ndarray:
        """Predict with the model fit on all rows (before unlearning)."""
        self._check_fitted()
        Phi = self._features(_check_X(X, "X", self.n_features_in_))
        return Phi @ self.original_coef_ + self.original_intercept_


class EMSEClassifierUnlearner(ClassifierMixin, _EMSEBase):
    """EMSE fine-tune for logistic (binary) and softmax (multiclass) models.

    sisa's generalization of EMSE: a wanted row contributes its negative log-likelihood
    ``-log p_y(x)``; an unwanted row contributes ``-log(1 - p_y(x))``, the negative
    log-likelihood of the model *not* producing its label (see
    :func:`emse_classifier_objective`). ``fit_original`` fits scikit-learn's
    ``LogisticRegression`` on all rows (on internally standardized features, with the
    same L2 as the objective: ``C = 1 / (alpha * n)`` for ``reduction="mean"``);
    ``unlearn`` starts from its ``coef_``/``intercept_`` and runs L-BFGS-B.

    Parameters
    ----------
    transformer : sklearn transformer or None, default=None
        Feature map; None = identity.
    lam : float, default=1.0
        Weight of the unwanted term.
    reduction : {"mean", "sum"}, default="mean"
        Average W and U separately, or add the terms up.
    alpha : float, default=1e-4
        L2 penalty ``alpha / 2 * ||W||**2`` on the standardized weights. Kept > 0 by
        default because pushing ``p_y -> 0`` on separable unwanted rows otherwise lets the
        weights grow without bound.
    max_iter : int, default=1000
        Maximum L-BFGS iterations (also passed to ``LogisticRegression``).
    tol : float, default=1e-6
        Gradient tolerance; same stopping rule as :class:`EMSEUnlearner`. Also passed
        to ``LogisticRegression``.
    n_threads : int or None, default=1
        BLAS threads while fitting and unlearning; see :class:`EMSEUnlearner`.

    Attributes
    ----------
    classes_ : ndarray
        Labels seen by ``fit_original``.
    coef_ : ndarray of shape (1, d) or (n_classes, d)
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Current parameters, in scikit-learn's layout.
    original_coef_, original_intercept_ : ndarray
        Parameters of the model fit on all rows.
    trace_, n_iter_, converged_, stop_reason_, objective_start_, objective_, unlearn_time_
        As in :class:`EMSEUnlearner`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2)); y = (X[:, 0] > 0).astype(int)
    >>> u = X[:, 1] > 1.0  # forget these rows
    >>> m = EMSEClassifierUnlearner().fit(X, y, u)
    >>> m.predict_proba(X).shape
    (200, 2)
    """

    _numeric_y = False

    def __init__(
        self,
        transformer: Any = None,
        lam: float = 1.0,
        reduction: Reduction = "mean",
        alpha: float = 1e-4,
        max_iter: int = 1000,
        tol: float = 1e-6,
        n_threads: int | None = 1,
    ) -> None:
        self.transformer = transformer
        self.lam = lam
        self.reduction = reduction
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.n_threads = n_threads

    def fit_original(self, X: Any, y: Any) -> EMSEClassifierUnlearner:
        """Fit a logistic/softmax model on all rows with scikit-learn.

        Parameters
        ----------
        X : array-like of shape (n, p)
        y : array-like of shape (n,)
            Labels (at least two classes).

        Returns
        -------
        self
        """
        self._check_params()
        X, y = _check_Xy(X, y, ("X", "y"), None, False)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise InputError("y has a single class: a classifier needs at least two labels")
        per_row = len(y) if self.reduction == "mean" else 1.0
        C = np.inf if self.alpha == 0 else 1.0 / (self.alpha * per_row)
        with self._blas_threads():
            Z = self._fit_features(X)
            lr = LogisticRegression(C=C, max_iter=int(self.max_iter), tol=self.tol).fit(Z, y)
        self._set_params_from(np.concatenate([lr.coef_.T.ravel(), lr.intercept_]))
        self.original_coef_ = self.coef_.copy()
        self.original_intercept_ = self.intercept_.copy()
        return self

    def _set_params_from(self, theta: np.ndarray) -> None:
        k = 1 if len(self.classes_) == 2 else len(self.classes_)
        d = len(self.feature_mean_)
        W = theta[: d * k].reshape(d, k) / self.feature_scale_[:, None]
        self.coef_ = W.T.copy()
        self.intercept_ = theta[d * k :] - self.feature_mean_ @ W

    def _encode(self, y: np.ndarray, name: str) -> np.ndarray:
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[idx] == y):
            unknown = np.setdiff1d(y, self.classes_)[:5]
            raise InputError(
                f"{name} has labels {unknown.tolist()} unseen by fit_original: "
                "fit the original model on all rows, wanted and unwanted"
            )
        return idx

    def unlearn(self, X_w: Any, y_w: Any, X_u: Any, y_u: Any) -> EMSEClassifierUnlearner:
        """Fine-tune the original model to keep W and forget U.

        Parameters
        ----------
        X_w : array-like of shape (n_w, p)
        y_w : array-like of shape (n_w,)
            Wanted rows.
        X_u : array-like of shape (n_u, p)
        y_u : array-like of shape (n_u,)
            Unwanted rows.

        Returns
        -------
        self
        """

        def solve() -> None:
            Z_w, yw, Z_u, yu = self._wanted_unwanted(X_w, y_w, X_u, y_u)
            yw, yu = self._encode(yw, "y_w"), self._encode(yu, "y_u")
            W0 = (self.original_coef_ * self.feature_scale_).T
            b0 = self.original_intercept_ + self.original_coef_ @ self.feature_mean_
            n_classes = len(self.classes_)
            theta = self._minimize(
                lambda t: emse_classifier_objective(
                    t, Z_w, yw, Z_u, yu, n_classes, self.lam, self.reduction, self.alpha
                ),
                np.concatenate([W0.ravel(), b0]),
            )
            self._set_params_from(theta)

        return self._timed_unlearn(solve)

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits: shape (n,) for binary models (class 1 vs 0), (n, n_classes) otherwise."""
        self._check_fitted()
        z = self._features(_check_X(X, "X", self.n_features_in_)) @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        z = self.decision_function(X)
        if z.ndim == 1:
            z = np.column_stack([np.zeros_like(z), z])
        return softmax(z, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable label."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
