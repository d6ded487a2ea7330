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

from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import ClassifierMixin, RegressorMixin

from sisa.baselines._newton_base import _CertifiedRemovalBase
from sisa.baselines.certificate import certified_epsilon
from sisa.errors import InputError

__all__ = ["CertifiedRemovalClassifier", "CertifiedRemovalRegressor", "certified_epsilon"]


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

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : array of shape (n_rows, n_features)

        Returns
        -------
        ndarray of shape (n_rows,)
        """
        return self.decision_function(X)
