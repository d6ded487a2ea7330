"""What the two EMSE estimators share: parameters, feature map, standardization, the
L-BFGS run with its trace, and ``fit``/``unlearn`` (see :mod:`sisa.baselines.emse`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from threadpoolctl import threadpool_limits

from sisa.baselines._validation import INF, check_X, check_Xy, validate_constraints
from sisa.errors import InputError

# Relative-decrease test handed to L-BFGS-B; tiny on purpose so `tol` (gradient) decides.
_FTOL = 1e-13

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


class _EMSEBase(BaseEstimator):
    """Shared machinery: feature map, internal standardization, L-BFGS with a trace.

    Subclasses define ``fit_original``, ``_set_params_from`` (optimizer parameters to
    ``coef_``/``intercept_``) and ``_problem`` (the objective and its starting point).
    """

    _numeric_y = True

    _parameter_constraints: ClassVar[dict] = {
        "transformer": [None, HasMethods(["fit", "transform"])],
        "lam": [Interval(Real, 0, INF, closed="left")],
        "reduction": [StrOptions({"mean", "sum"})],
        "alpha": [Interval(Real, 0, INF, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, INF, closed="neither")],
        "n_threads": [None, Interval(Integral, 1, None, closed="left")],
    }

    def _set_params_from(self, theta: np.ndarray) -> None:
        raise NotImplementedError

    def _problem(
        self, Z_w: np.ndarray, y_w: np.ndarray, Z_u: np.ndarray, y_u: np.ndarray
    ) -> tuple[Objective, np.ndarray]:
        raise NotImplementedError

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

    def _mapped(self, X: Any) -> np.ndarray:
        """Features of new rows (not standardized), for the fitted model's predictions."""
        self._check_fitted()
        return self._features(check_X(X, "X", self.n_features_in_))

    def _standardized_start(self) -> tuple[np.ndarray, np.ndarray]:
        """The original model in standardized coordinates: ``w * scale``, ``b + w @ mean``."""
        w0 = self.original_coef_ * self.feature_scale_
        return w0, self.original_intercept_ + self.original_coef_ @ self.feature_mean_

    def _wanted_unwanted(
        self, X_w: Any, y_w: Any, X_u: Any, y_u: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Checked and standardized features of W and U, with their targets."""
        self._check_fitted()
        validate_constraints(self)
        n = self.n_features_in_
        X_w, y_w = check_Xy(X_w, y_w, ("X_w", "y_w"), n, self._numeric_y)
        X_u, y_u = check_Xy(X_u, y_u, ("X_u", "y_u"), n, self._numeric_y)
        Z_w = self._standardize(self._features(X_w))
        Z_u = self._standardize(self._features(X_u))
        return Z_w, y_w, Z_u, y_u

    def _minimize(self, fun: Objective, theta0: np.ndarray) -> np.ndarray:
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

    def fit(self, X: Any, y: Any, unwanted: Any) -> _EMSEBase:
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
        X, y = check_Xy(X, y, ("X", "y"), None, self._numeric_y)
        mask = np.asarray(unwanted)
        if mask.dtype != bool or mask.shape != (len(X),):
            raise InputError(
                f"unwanted must be a boolean mask of shape ({len(X)},), got "
                f"{mask.dtype} {mask.shape}: pass e.g. dataset.unwanted"
            )
        self.fit_original(X, y)
        return self.unlearn(X[~mask], y[~mask], X[mask], y[mask])

    def unlearn(self, X_w: Any, y_w: Any, X_u: Any, y_u: Any) -> _EMSEBase:
        """Fine-tune the original model to keep W and forget U by minimizing EMSE.

        Always starts from the parameters of ``fit_original`` (calling it twice does not
        compound). Sets ``unlearn_time_`` to the wall seconds this took (feature map of W
        and U plus optimization).

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
        with self._blas_threads():
            start = time.perf_counter()
            fun, theta0 = self._problem(*self._wanted_unwanted(X_w, y_w, X_u, y_u))
            self._set_params_from(self._minimize(fun, theta0))
            self.unlearn_time_ = time.perf_counter() - start
        return self
