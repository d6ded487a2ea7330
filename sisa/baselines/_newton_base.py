"""What the certified-removal estimators share: training by damped Newton on the
perturbed loss, the Newton-step removal with its bound, and the bookkeeping. The
theory is in :mod:`sisa.baselines.newton`'s docstring."""

from __future__ import annotations

import math
import time
import warnings
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from sisa.baselines._validation import INF, check_X, validate_constraints
from sisa.baselines.certificate import certified_epsilon
from sisa.errors import InputError

_SQRT2 = math.sqrt(2.0)


class _CertifiedRemovalBase(BaseEstimator):
    """Shared training, Newton removal and bookkeeping; subclasses define the loss."""

    _gamma: float = 0.0  # Lipschitz constant of l'' (Corollary 1)

    _parameter_constraints: ClassVar[dict] = {
        "lam": [Interval(Real, 0, INF, closed="neither")],
        "noise_std": [Interval(Real, 0, INF, closed="left")],
        "epsilon": [None, Interval(Real, 0, INF, closed="neither")],
        "delta": [Interval(Real, 0, 1, closed="neither")],
        "fit_intercept": ["boolean"],
        "max_norm": [None, Interval(Real, 0, INF, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, INF, closed="neither")],
        # What np.random.default_rng takes (not scikit-learn's RandomState instances).
        "random_state": [None, Interval(Integral, 0, None, closed="left"), np.random.Generator],
    }

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

    def _check_budget(self) -> None:
        """The one rule between parameters that the constraints cannot state."""
        if self.epsilon is not None and self.noise_std == 0:
            raise InputError("an epsilon budget needs noise_std > 0; set noise_std or epsilon")

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
        validate_constraints(self)
        self._check_budget()
        X = check_X(X)
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

    def _positions(self, indices: Any) -> np.ndarray:
        """Validate the rows to forget; return their positions among the kept rows."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise InputError("indices must be a 1-D array of integer row positions from fit")
        if idx.size == 0:
            return idx
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
        return pos

    def _newton_step(self, Z: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, float]:
        """One Newton step per model on the remaining rows; the summed residual bound."""
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
        return W, bound

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
        pos = self._positions(indices)
        if pos.size == 0:
            self.removal_time_ = 0.0
            return self
        keep = np.ones(self._row_ids.size, dtype=bool)
        keep[pos] = False
        Z, Y = self._Z[keep], self._Y[keep]
        W, bound = self._newton_step(Z, Y)
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
        self.n_removed_ += int(pos.size)
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
        X = check_X(X, "X", self.n_features_in_)
        return X @ self.coef_.T + self.intercept_

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw linear outputs ``X @ coef_.T + intercept_``.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows,) for one model (a regressor or a binary classifier),
        (n_rows, n_classes) for one-vs-rest models
        """
        s = self._decision(X)
        return s[:, 0] if s.shape[1] == 1 else s
