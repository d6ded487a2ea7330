"""Certified removal by a Newton step (Guo, Goldstein, Hannun, van der Maaten, ICML 2020).

An approximate-unlearning baseline for L2-regularised linear models. Training
minimises the perturbed loss::

    L_b(w; D) = sum_i l(w.x_i, y_i) + (lam * n / 2) * ||w||^2 + b.w,   b ~ N(0, noise_std)^d

and forgetting a batch ``D_rm`` (``D' = D minus D_rm``, ``n' = n - k`` rows) applies one
Newton step on the remaining data::

    w- = w + H^-1 Delta,   Delta = -grad L_b(w; D'),   H = hess L(w; D')

where the regulariser weight drops from ``lam*n`` to ``lam*n'`` (both ``Delta`` and ``H``
are taken on ``D'``, so this is automatic; ``b`` cancels from ``Delta`` at an exact
optimum). After the step, the gradient residual on ``D'`` is at most (Corollary 1)::

    gamma * ||Z'||_2 * ||H^-1 Delta|| * ||Z' H^-1 Delta||

with ``gamma = 1/4`` for the logistic loss and 0 for the squared loss (the step is then
exact). The bounds of successive removals add up to ``removal_bound_`` (beta), and the
model is an (epsilon, delta)-certified removal for::

    epsilon = c * beta / noise_std,   c = sqrt(2 log(1.5 / delta))

(``b ~ N(0, c * beta / epsilon)`` in the paper). If ``epsilon`` is given and a removal
would exceed it, the model is retrained on the remaining rows with fresh noise (the
paper's Algorithm 2). One-vs-rest models add the per-class bounds, as the reference
code (facebookresearch/certified-removal, ``test_removal.py``) does.

Feature scaling
---------------
The theory assumes ``||x|| <= 1``. Rows are divided by a norm bound ``s`` fixed at fit:
``max_norm`` if given, else the largest row norm of the training data. With an
intercept the model sees ``z = [x / (s sqrt 2), 1 / sqrt 2]`` (so ``||z|| <= 1``) and the
intercept is regularised like every other weight, which the strong convexity the
certificate relies on needs. The scaled model is the same linear model in ``x``; only
the penalty's effective strength per feature depends on ``s``. A bound computed from
the data is itself a function of the data: for a strictly data-independent
mechanism pass ``max_norm``, and retrain references with ``max_norm=model.scale_``.

The estimator keeps a float64 copy of the training rows (the Newton step needs the
Hessian of the remaining data); ``remove`` deletes the removed rows from that copy.
Each removal costs ``O(n d^2 + d^3)`` per class.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from sisa.errors import InputError

__all__ = ["CertifiedRemovalClassifier", "CertifiedRemovalRegressor", "certified_epsilon"]

_SQRT2 = math.sqrt(2.0)


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


def _real(name: str, value: Any, *, low: float, low_ok: bool, high: float = math.inf) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    if not ok or not math.isfinite(v) or v < low or (v == low and not low_ok) or v >= high:
        rng = f"{'[' if low_ok else '('}{low}, {high})"
        raise InputError(f"{name} must be a number in {rng}, got {value!r}")
    return v


def _check_X(X: Any, n_features: int | None = None) -> np.ndarray:
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise InputError("sparse X is not supported; pass a dense array (X.toarray())")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"X must be numeric: {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"X must be a non-empty 2-D array (n_rows, n_features), got {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("X holds NaN or inf; impute or drop those rows first")
    if n_features is not None and X.shape[1] != n_features:
        raise InputError(f"X has {X.shape[1]} features but the model was fit on {n_features}")
    return X


class _CertifiedRemovalBase(BaseEstimator):
    """Shared training, Newton removal and bookkeeping; subclasses define the loss."""

    _gamma: float = 0.0  # Lipschitz constant of l'' (Corollary 1)

    def __init__(
        self,
        lam: float = 1e-3,
        noise_std: float = 0.0,
        epsilon: float | None = None,
        delta: float = 1e-4,
        fit_intercept: bool = True,
        max_norm: float | None = None,
        max_iter: int = 100,
        tol: float = 1e-10,
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.lam = lam
        self.noise_std = noise_std
        self.epsilon = epsilon
        self.delta = delta
        self.fit_intercept = fit_intercept
        self.max_norm = max_norm
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    # -- loss (per column of targets) -----------------------------------------------------------

    def _loss(self, z: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    def _derivs(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and second derivative of the loss in z."""
        raise NotImplementedError

    def _encode_y(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------

    def _validate_params(self) -> None:
        _real("lam", self.lam, low=0.0, low_ok=False)
        _real("noise_std", self.noise_std, low=0.0, low_ok=True)
        _real("delta", self.delta, low=0.0, low_ok=False, high=1.0)
        if self.epsilon is not None:
            _real("epsilon", self.epsilon, low=0.0, low_ok=False)
            if self.noise_std == 0:
                raise InputError("an epsilon budget needs noise_std > 0; set noise_std or epsilon")
        if self.max_norm is not None:
            _real("max_norm", self.max_norm, low=0.0, low_ok=False)
        mi = self.max_iter
        if isinstance(mi, bool) or not isinstance(mi, numbers.Integral) or mi < 1:
            raise InputError(f"max_iter must be an integer >= 1, got {mi!r}")
        _real("tol", self.tol, low=0.0, low_ok=False)

    def _features(self, X: np.ndarray) -> np.ndarray:
        if not self.fit_intercept:
            return X / self.scale_
        return np.hstack([X / (self.scale_ * _SQRT2), np.full((X.shape[0], 1), 1.0 / _SQRT2)])

    def _objective(self, Z, y, w, b, n_reg) -> float:
        return self._loss(Z @ w, y) + 0.5 * self.lam * n_reg * (w @ w) + b @ w

    def _grad_hess(self, Z, y, w, b, n_reg, hessian=True):
        d1, d2 = self._derivs(Z @ w, y)
        g = Z.T @ d1 + self.lam * n_reg * w + b
        if not hessian:
            return g, None
        H = (Z * d2[:, None]).T @ Z
        H.flat[:: H.shape[0] + 1] += self.lam * n_reg
        return g, H

    def _minimize(self, Z: np.ndarray, Y: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Damped Newton per target column, to ``||grad|| <= tol * n``."""
        n = Z.shape[0]
        W = np.zeros((Z.shape[1], Y.shape[1]))
        for k in range(Y.shape[1]):
            y, b, w = Y[:, k], B[:, k], W[:, k]
            f = self._objective(Z, y, w, b, n)
            for _ in range(self.max_iter):
                g, H = self._grad_hess(Z, y, w, b, n)
                if np.linalg.norm(g) <= self.tol * n:
                    break
                step = -cho_solve(cho_factor(H), g)
                t, slope = 1.0, g @ step
                while True:  # Armijo backtracking; t = 1 is accepted near the optimum
                    f_new = self._objective(Z, y, w + t * step, b, n)
                    if f_new <= f + 1e-4 * t * slope or t < 1e-12:
                        break
                    t *= 0.5
                w, f = w + t * step, f_new
            else:
                warnings.warn(
                    f"Newton did not reach ||grad|| <= tol*n in max_iter={self.max_iter} "
                    "iterations; raise max_iter or tol",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            W[:, k] = w
        return W

    def _draw_noise(self, d: int, k: int) -> np.ndarray:
        return float(self.noise_std) * self._rng.standard_normal((d, k))

    def _set_coef(self) -> None:
        W = self._W
        d = W.shape[0] - int(self.fit_intercept)
        if self.fit_intercept:
            self.coef_ = (W[:d] / (self.scale_ * _SQRT2)).T.copy()
            self.intercept_ = W[d] / _SQRT2
        else:
            self.coef_ = (W / self.scale_).T.copy()
            self.intercept_ = np.zeros(W.shape[1])

    # -- public ---------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any) -> _CertifiedRemovalBase:
        """Train on (X, y) with loss perturbation, keeping the rows for later removals.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)
        y : array of shape (n_rows,)

        Returns
        -------
        self
        """
        self._validate_params()
        X = _check_X(X)
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise InputError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
        Y = self._encode_y(y)
        norms = np.linalg.norm(X, axis=1)
        if self.max_norm is not None:
            if norms.max() > self.max_norm * (1 + 1e-12):
                raise InputError(
                    f"a row of X has norm {norms.max():.6g} > max_norm={self.max_norm}; "
                    "raise max_norm or rescale X"
                )
            self.scale_ = float(self.max_norm)
        else:
            self.scale_ = float(norms.max()) if norms.max() > 0 else 1.0
        self.n_features_in_ = X.shape[1]
        self._rng = np.random.default_rng(self.random_state)
        Z = self._features(X)
        self.noise_ = self._draw_noise(Z.shape[1], Y.shape[1])
        self._W = self._minimize(Z, Y, self.noise_)
        self._Z, self._Y = Z, Y
        self._row_ids = np.arange(X.shape[0])
        self.removal_bound_ = 0.0
        self.epsilon_bound_ = 0.0
        self.removal_time_ = 0.0
        self.n_removed_ = 0
        self.n_retrains_ = 0
        self._set_coef()
        return self

    def remove(self, indices: Any) -> _CertifiedRemovalBase:
        """Forget training rows by one Newton step on the remaining rows.

        Parameters
        ----------
        indices : array of int
            Positions of the rows to forget in the ``X`` given to :meth:`fit` (they stay
            valid across removals). Each row can be removed once; at least one row
            must remain. An empty array is a no-op.

        Returns
        -------
        self
            With ``coef_``, ``intercept_``, ``removal_bound_``, ``epsilon_bound_``,
            ``n_removed_`` and ``removal_time_`` (seconds this call took) updated, and
            ``n_retrains_`` incremented if the ``epsilon`` budget forced a retrain.
        """
        check_is_fitted(self, "_W")
        t0 = time.perf_counter()
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise InputError("indices must be a 1-D array of integer row positions from fit")
        if idx.size == 0:
            self.removal_time_ = 0.0
            return self
        if np.unique(idx).size != idx.size:
            raise InputError("indices has duplicates; list each row to forget once")
        pos = np.searchsorted(self._row_ids, idx)
        present = (pos < self._row_ids.size) & (
            self._row_ids[np.minimum(pos, self._row_ids.size - 1)] == idx
        )
        if not present.all():
            bad = idx[~present][:5].tolist()
            raise InputError(f"rows {bad} are not in the model (never fit or already removed)")
        if idx.size >= self._row_ids.size:
            raise InputError("cannot remove every remaining row; refit on new data instead")

        keep = np.ones(self._row_ids.size, dtype=bool)
        keep[pos] = False
        Z, Y = self._Z[keep], self._Y[keep]
        n_reg = Z.shape[0]
        W = self._W.copy()
        spec = math.sqrt(max(np.linalg.eigvalsh(Z.T @ Z)[-1], 0.0)) if self._gamma else 0.0
        bound = 0.0
        for k in range(W.shape[1]):
            g, H = self._grad_hess(Z, Y[:, k], W[:, k], self.noise_[:, k], n_reg)
            step = -cho_solve(cho_factor(H), g)  # H^-1 Delta with Delta = -grad on D'
            W[:, k] += step
            if self._gamma:
                bound += self._gamma * spec * np.linalg.norm(step) * np.linalg.norm(Z @ step)
        beta = self.removal_bound_ + bound

        nu = float(self.noise_std)
        if self.epsilon is not None and certified_epsilon(beta, nu, self.delta) > self.epsilon:
            # Budget spent: retrain on D' with fresh noise (Algorithm 2).
            self.noise_ = self._draw_noise(Z.shape[1], Y.shape[1])
            W = self._minimize(Z, Y, self.noise_)
            beta = 0.0
            self.n_retrains_ += 1

        self._W, self._Z, self._Y = W, Z, Y
        self._row_ids = self._row_ids[keep]
        self.removal_bound_ = float(beta)
        self.epsilon_bound_ = certified_epsilon(beta, nu, self.delta)
        self.n_removed_ += int(idx.size)
        self._set_coef()
        self.removal_time_ = time.perf_counter() - t0
        return self

    def gradient_norm(self) -> float:
        """Norm of the perturbed-loss gradient on the remaining rows, in scaled features.

        The quantity ``removal_bound_`` bounds (``||grad L_b(w; D')||``, all classes
        stacked). About 0 right after ``fit``; useful to check the certificate.

        Returns
        -------
        float
        """
        check_is_fitted(self, "_W")
        n = self._Z.shape[0]
        sq = 0.0
        for k in range(self._W.shape[1]):
            g, _ = self._grad_hess(
                self._Z, self._Y[:, k], self._W[:, k], self.noise_[:, k], n, hessian=False
            )
            sq += float(g @ g)
        return math.sqrt(sq)

    def _decision(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = _check_X(X, self.n_features_in_)
        return X @ self.coef_.T + self.intercept_


class CertifiedRemovalClassifier(ClassifierMixin, _CertifiedRemovalBase):
    """L2-regularised logistic regression with certified removal (Guo et al., 2020).

    Binary problems fit one model; more classes fit one-vs-rest models (labels ±1),
    each with its own noise vector, and add their removal bounds.

    Parameters
    ----------
    lam : float, default=1e-3
        Per-row L2 weight: the penalty is ``lam * n / 2 * ||w||^2`` on the scaled
        features (``C = 1 / (lam * n)`` in scikit-learn terms, on scaled features).
    noise_std : float, default=0.0
        Standard deviation of the loss perturbation ``b``. 0 gives no certificate
        (``epsilon_bound_`` is inf after any inexact removal).
    epsilon : float, optional
        Removal budget: when a removal would certify only a larger ε, retrain on the
        remaining rows with fresh noise instead. Needs ``noise_std > 0``.
    delta : float, default=1e-4
        δ of the (ε, δ) certificate.
    fit_intercept : bool, default=True
        Add a (regularised) intercept feature.
    max_norm : float, optional
        Bound on training-row norms used to scale features into the unit ball;
        default: the largest row norm at fit (kept fixed by ``remove``).
    max_iter : int, default=100
        Newton iterations per class at fit.
    tol : float, default=1e-10
        Stop when ``||grad|| <= tol * n``.
    random_state : int, numpy Generator or None, default=None
        Seeds the noise ``b`` (and the fresh noise of budget retrains).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    n_features_in_ : int
    scale_ : float
        Norm bound ``s`` the features are divided by.
    noise_ : ndarray of shape (n_features + fit_intercept, n_models)
        The perturbation ``b`` in use (scaled-feature space).
    removal_bound_ : float
        Accumulated gradient-residual bound beta since the last (re)train.
    epsilon_bound_ : float
        ε certified for ``delta``: 0 before any removal, inf without noise.
    removal_time_ : float
        Seconds the last :meth:`remove` took.
    n_removed_ : int
        Rows removed since :meth:`fit`.
    n_retrains_ : int
        Retrains forced by the ``epsilon`` budget.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 4))
    >>> y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    >>> clf = CertifiedRemovalClassifier(lam=1e-2, noise_std=1.0, random_state=0).fit(X, y)
    >>> clf = clf.remove([3, 17])
    >>> clf.n_removed_, bool(0 < clf.epsilon_bound_ < 1), clf.predict(X[:3]).shape
    (2, True, (3,))
    """

    _gamma = 0.25

    def _encode_y(self, y: np.ndarray) -> np.ndarray:
        classes = np.unique(y)
        if classes.size < 2:
            raise InputError(f"y has {classes.size} class(es); a classifier needs at least 2")
        self.classes_ = classes
        codes = np.searchsorted(classes, y)
        if classes.size == 2:
            return np.where(codes == 1, 1.0, -1.0)[:, None]
        return np.where(codes[:, None] == np.arange(classes.size), 1.0, -1.0)

    def _loss(self, z: np.ndarray, y: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -y * z).sum())

    def _derivs(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return -y * expit(-y * z), expit(z) * expit(-z)

    def decision_function(self, X: Any) -> np.ndarray:
        """Signed scores: shape (n_rows,) for two classes, (n_rows, n_classes) otherwise.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray
        """
        s = self._decision(X)
        return s[:, 0] if s.shape[1] == 1 else s

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities; one-vs-rest sigmoids are normalised to sum to 1.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows, n_classes)
        """
        s = self._decision(X)
        if s.shape[1] == 1:
            p = expit(s[:, 0])
            return np.column_stack([1.0 - p, p])
        p = expit(s)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Most likely class of each row.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows,)
        """
        s = self._decision(X)
        if s.shape[1] == 1:
            return self.classes_[(s[:, 0] > 0).astype(int)]
        return self.classes_[s.argmax(axis=1)]


class CertifiedRemovalRegressor(RegressorMixin, _CertifiedRemovalBase):
    """Ridge (least-squares) regression with exact Newton removal.

    Loss ``1/2 (w.z - y)^2``: the Newton step lands exactly on the minimiser of the
    remaining data (with the same noise ``b``), so ``removal_bound_`` stays 0 and
    ``epsilon_bound_`` is 0 even without noise; the noise still hides the training
    data in the released weights. Parameters and attributes are those of
    :class:`CertifiedRemovalClassifier` (``coef_`` has shape (1, n_features)).
    Targets are not centred; standardise ``y`` if its mean is far from 0, since
    the intercept is penalised.

    Parameters
    ----------
    lam : float, default=1e-3
        Per-row L2 weight (``alpha = lam * n`` of scikit-learn's Ridge, on scaled
        features).
    noise_std : float, default=0.0
    epsilon : float, optional
    delta : float, default=1e-4
    fit_intercept : bool, default=True
    max_norm : float, optional
    max_iter : int, default=100
    tol : float, default=1e-10
    random_state : int, numpy Generator or None, default=None

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    >>> reg = CertifiedRemovalRegressor(lam=1e-4).fit(X, y).remove(np.arange(10))
    >>> ref = CertifiedRemovalRegressor(lam=1e-4, max_norm=reg.scale_).fit(X[10:], y[10:])
    >>> bool(np.allclose(reg.coef_, ref.coef_, atol=1e-10)), reg.epsilon_bound_
    (True, 0.0)
    """

    _gamma = 0.0

    def _encode_y(self, y: np.ndarray) -> np.ndarray:
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError("y must be numeric for regression") from None
        if not np.isfinite(y).all():
            raise InputError("y holds NaN or inf; drop those rows first")
        return y[:, None]

    def _loss(self, z: np.ndarray, y: np.ndarray) -> float:
        r = z - y
        return 0.5 * float(r @ r)

    def _derivs(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return z - y, np.ones_like(z)

    def decision_function(self, X: Any) -> np.ndarray:
        """Same as :meth:`predict`.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows,)
        """
        return self._decision(X)[:, 0]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows,)
        """
        return self._decision(X)[:, 0]
