"""EMSE fine-tune: approximate unlearning by maximizing the likelihood of wanted rows
while suppressing the likelihood of unwanted rows.

After S. Achour, "How to unlearn a learned Machine Learning model?" (arXiv 2410.09935,
2024). The objectives and their formulas are in :mod:`sisa.baselines.emse_objectives`
(re-exported here); the machinery both estimators share is in ``_emse_base``; see
``docs/emse.md``.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from scipy.special import softmax
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions

from sisa.baselines._emse_base import Objective, _EMSEBase
from sisa.baselines._validation import INF, check_Xy, validate_constraints
from sisa.baselines.emse_objectives import (
    Reduction,
    emse_classifier_objective,
    emse_objective,
    resolve_c,
)
from sisa.errors import InputError
from sisa.metrics import check_sigma

__all__ = [
    "EMSEClassifierUnlearner",
    "EMSEUnlearner",
    "emse_classifier_objective",
    "emse_objective",
    "resolve_c",
]


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

    _parameter_constraints: ClassVar[dict] = {
        **_EMSEBase._parameter_constraints,
        "sigma": [Interval(Real, 0, INF, closed="neither")],
        # The cross-parameter rule (c="normalized" needs sigma > 0.399) is resolve_c's.
        "c": [StrOptions({"normalized", "kernel"}), Interval(Real, 0, 1, closed="right")],
    }

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
        validate_constraints(self)
        X, y = check_Xy(X, y, ("X", "y"), None, True)
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

    def _problem(
        self, Z_w: np.ndarray, y_w: np.ndarray, Z_u: np.ndarray, y_u: np.ndarray
    ) -> tuple[Objective, np.ndarray]:
        sigma = check_sigma(self.sigma)
        c = resolve_c(self.c, sigma)
        w0, b0 = self._standardized_start()

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            return emse_objective(
                theta, Z_w, y_w, Z_u, y_u, sigma, self.lam, c, self.reduction, self.alpha
            )

        return fun, np.append(w0, b0)

    def predict(self, X: Any) -> np.ndarray:
        """Predict with the current (unlearned, once ``unlearn`` ran) parameters.

        Parameters
        ----------
        X : array-like of shape (n, p)

        Returns
        -------
        ndarray of shape (n,)
        """
        return self._mapped(X) @ self.coef_ + self.intercept_

    def predict_original(self, X: Any) -> np.ndarray:
        """Predict with the model fit on all rows (before unlearning).

        Parameters
        ----------
        X : array-like of shape (n, p)

        Returns
        -------
        ndarray of shape (n,)
        """
        return self._mapped(X) @ self.original_coef_ + self.original_intercept_


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
        validate_constraints(self)
        X, y = check_Xy(X, y, ("X", "y"), None, False)
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

    def _problem(
        self, Z_w: np.ndarray, y_w: np.ndarray, Z_u: np.ndarray, y_u: np.ndarray
    ) -> tuple[Objective, np.ndarray]:
        yw, yu = self._encode(y_w, "y_w"), self._encode(y_u, "y_u")
        w0, b0 = self._standardized_start()
        n_classes = len(self.classes_)

        def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
            return emse_classifier_objective(
                theta, Z_w, yw, Z_u, yu, n_classes, self.lam, self.reduction, self.alpha
            )

        return fun, np.concatenate([w0.T.ravel(), b0])

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits of the current parameters.

        Parameters
        ----------
        X : array-like of shape (n, p)

        Returns
        -------
        ndarray of shape (n,) for binary models (class 1 vs 0), (n, n_classes) otherwise
        """
        z = self._mapped(X) @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n, p)

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        z = self.decision_function(X)
        if z.ndim == 1:
            z = np.column_stack([np.zeros_like(z), z])
        return softmax(z, axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable label.

        Parameters
        ----------
        X : array-like of shape (n, p)

        Returns
        -------
        ndarray of shape (n,)
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
