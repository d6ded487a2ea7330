"""Stacked forms of scikit-learn shard models: linear models, MLPs, Gaussian naive Bayes,
and a ``StandardScaler`` in front of any of them.

Each form is built from the fitted models of a group of shards (same type, same shapes,
same classes) and computes what each model's own ``predict``/``predict_proba`` computes,
with the same elementwise operations in the same dtype. Inputs are either one matrix
``(n, d)`` shared by every shard or one per shard ``(G, n, d)`` (after per-shard
scaling); outputs are ``(G, n, k)``. The products are batched (one call for all shards)
with each shard's operands laid out as in its own ``predict``, so the results are the
loop's bits wherever BLAS keeps its kernel per shape (docs/design.md, "Aggregate").
"""

from __future__ import annotations

import copy

import numpy as np
from scipy.special import expit
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

# exact types: a subclass may override predict
LINEAR = (SGDClassifier, LogisticRegression, RidgeClassifier, LinearSVC, SGDRegressor, Ridge,
          LinearRegression)
_MLP_ACT = {"relu": lambda a: np.maximum(a, 0, out=a), "tanh": lambda a: np.tanh(a, out=a),
            "logistic": lambda a: expit(a, out=a), "identity": lambda a: a}


def _classes(m) -> tuple:
    c = getattr(m, "classes_", None)
    return () if c is None else tuple(np.asarray(c).tolist())


def _coef(m) -> np.ndarray:
    return np.atleast_2d(m.coef_)  # (k, d)


def _intercept(m) -> np.ndarray:
    # the intercept's dtype as `+ intercept_` would promote it (a Python float is weak)
    return np.broadcast_to(np.asarray(m.intercept_, dtype=np.result_type(m.coef_, m.intercept_)),
                           (_coef(m).shape[0],))


def first_product(X: np.ndarray, Wst: np.ndarray) -> np.ndarray:
    """``X @ W_g`` for every shard g, as ``(G, n, k)``: one batched call that gives each
    shard its own product, with the operands' layout the loop's product has, so BLAS runs
    the same kernel and the sums round in the same order (the same bits). One product
    against all shards' weights side by side is ~3x cheaper but rounds in another order:
    :mod:`.gemm` takes it for binary logistic ensembles, within a proven bound."""
    return np.matmul(X[None] if X.ndim == 2 else X, Wst)


class Linear:
    """``decision_function`` of linear models: coefficients stacked, one product a call."""

    def __init__(self, models: list):
        m0 = models[0]
        self.Wst = np.stack([_coef(m) for m in models]).transpose(0, 2, 1)  # coef_.T's layout
        self.b = np.stack([_intercept(m) for m in models])  # (G, k)
        self.width = self.Wst.shape[2]
        self.regressor = type(m0) in (SGDRegressor, Ridge, LinearRegression)
        self.link = "none"
        if isinstance(m0, LogisticRegression):
            self.link = "logistic" if len(m0.classes_) <= 2 else "softmax"
        elif isinstance(m0, SGDClassifier):
            self.link = {"log_loss": "logistic", "modified_huber": "huber"}.get(m0.loss, "none")

    def replaced(self, at: dict[int, object]) -> Linear:
        """A copy with the shards at these group positions replaced (``position ->
        model`` of the same key): the arrays a fresh build of the new list has, value and
        layout, at the cost of a copy instead of S models' attributes (a forget changes
        a few shards of many)."""
        new = copy.copy(self)
        W = self.Wst.transpose(0, 2, 1).copy()  # (G, k, d), C order, as np.stack made it
        new.b = self.b.copy()
        for j, m in at.items():
            W[j], new.b[j] = _coef(m), _intercept(m)
        new.Wst = W.transpose(0, 2, 1)
        return new

    @staticmethod
    def key(m) -> tuple | None:
        if type(m) not in LINEAR or np.asarray(m.coef_).ndim > (2 if hasattr(m, "classes_")
                                                              else 1):
            return None
        return (type(m), np.shape(m.coef_), np.asarray(m.coef_).dtype, _classes(m),
                getattr(m, "loss", None))

    def raw(self, X: np.ndarray) -> np.ndarray:
        # the loop's `X @ coef_.T + intercept_`: a new array, so float32 coefficients
        # with a float64 intercept give float64 scores, as there
        return first_product(X, self.Wst) + self.b[:, None, :]

    def proba(self, Z: np.ndarray) -> np.ndarray:
        if self.link == "softmax":  # sklearn.utils.extmath.softmax
            Z -= Z.max(axis=-1, keepdims=True)
            np.exp(Z, out=Z)
            Z /= Z.sum(axis=-1, keepdims=True)
            return Z
        if self.link == "logistic":  # LinearClassifierMixin._predict_proba_lr
            P = expit(Z, out=Z)
        elif self.link == "huber":  # SGDClassifier.predict_proba, modified_huber
            P = np.clip(Z, -1, 1, out=Z)
            P += 1.0
            P /= 2.0
        else:
            raise AttributeError("these shard models have no predict_proba")
        if P.shape[-1] == 1:
            return np.stack([1 - P[..., 0], P[..., 0]], axis=-1)
        total = P.sum(axis=-1)
        zero = total == 0
        if zero.any():  # uniform, as sklearn does
            P[zero] = 1
            total[zero] = P.shape[-1]
        P /= total[..., None]
        return P

    def index(self, Z: np.ndarray) -> np.ndarray:
        # LinearClassifierMixin.predict: the sign for two classes, else the argmax
        return (Z[..., 0] > 0).astype(np.intp) if Z.shape[-1] == 1 else Z.argmax(axis=-1)

    def values(self, Z: np.ndarray) -> np.ndarray:
        return Z[..., 0]


class MLP:
    """scikit-learn's ``MLPClassifier``/``MLPRegressor`` forward pass, one batched product
    per layer."""

    def __init__(self, models: list):
        m0 = models[0]
        layers = list(zip(*(m.coefs_ for m in models), strict=True))
        self.Wst = [np.stack(ws) for ws in layers]  # (G, h_in, h_out) per layer
        self.b = [np.stack(bs) for bs in zip(*(m.intercepts_ for m in models), strict=True)]
        self.hidden, self.out = _MLP_ACT[m0.activation], m0.out_activation_
        self.width = max(w.shape[2] for w in self.Wst)
        self.regressor = isinstance(m0, MLPRegressor)

    @staticmethod
    def key(m) -> tuple | None:
        if type(m) not in (MLPClassifier, MLPRegressor) or m.activation not in _MLP_ACT:
            return None
        if m.n_outputs_ != 1 and (isinstance(m, MLPRegressor)
                                  or m._label_binarizer.y_type_ != "multiclass"):
            return None  # multi-output / multilabel: the loop keeps them
        return (type(m), tuple(c.shape for c in m.coefs_), m.coefs_[0].dtype, m.activation,
                m.out_activation_, _classes(m))

    def raw(self, X: np.ndarray) -> np.ndarray:
        A = first_product(X, self.Wst[0])
        A += self.b[0][:, None, :]
        for W, b in zip(self.Wst[1:], self.b[1:], strict=True):
            self.hidden(A)  # _forward_pass_fast: no activation after the last layer
            A = np.matmul(A, W)
            A += b[:, None, :]
        if self.out == "softmax":  # sklearn.neural_network._base.inplace_softmax
            tmp = A - A.max(axis=-1)[..., None]
            np.exp(tmp, out=A)
            A /= A.sum(axis=-1)[..., None]
        else:
            _MLP_ACT[self.out](A)
        return A

    def proba(self, A: np.ndarray) -> np.ndarray:
        if A.shape[-1] == 1:
            return np.stack([1 - A[..., 0], A[..., 0]], axis=-1)
        return A

    def index(self, A: np.ndarray) -> np.ndarray:
        # LabelBinarizer.inverse_transform: threshold 0.5 for two classes, else the argmax
        return (A[..., 0] > 0.5).astype(np.intp) if A.shape[-1] == 1 else A.argmax(axis=-1)

    def values(self, A: np.ndarray) -> np.ndarray:
        return A[..., 0]


class GaussianBayes:
    """``GaussianNB``'s joint log-likelihood from the stacked class means and variances."""

    regressor = False

    def __init__(self, models: list):
        self.theta = np.stack([m.theta_ for m in models])  # (G, K, d)
        self.var = np.stack([m.var_ for m in models])
        # the terms that do not depend on X, computed as _joint_log_likelihood does
        self.prior = np.array([[np.log(p) for p in m.class_prior_] for m in models])
        self.const = np.array([[-0.5 * np.sum(np.log(2.0 * np.pi * v)) for v in m.var_]
                               for m in models])
        self.width = self.theta.shape[1] * self.theta.shape[2]

    @staticmethod
    def key(m) -> tuple | None:
        if type(m) is not GaussianNB:
            return None
        return (GaussianNB, m.theta_.shape, m.theta_.dtype, _classes(m))

    def raw(self, X: np.ndarray) -> np.ndarray:
        Xe = X[None, :, None, :] if X.ndim == 2 else X[:, :, None, :]
        sq = (Xe - self.theta[:, None]) ** 2
        sq /= self.var[:, None]
        n_ij = self.const[:, None, :] - 0.5 * np.sum(sq, axis=-1)
        return self.prior[:, None, :] + n_ij  # (G, n, K)

    def proba(self, J: np.ndarray) -> np.ndarray:
        from sklearn import naive_bayes

        G, n, K = J.shape
        flat = J.reshape(G * n, K)
        log_prob_x = naive_bayes._logsumexp(flat, axis=1)  # the function predict uses
        return np.exp(flat - np.atleast_2d(log_prob_x).T).reshape(G, n, K)

    def index(self, J: np.ndarray) -> np.ndarray:
        return J.argmax(axis=-1)


class Scalers:
    """``StandardScaler`` steps in front of the final model, per shard: ``X -= mean_``
    then ``X /= scale_`` in X's dtype, as ``StandardScaler.transform`` does."""

    def __init__(self, pipelines: list):
        self.steps = []
        for i in range(len(_transformers(pipelines[0]))):
            sc = [_transformers(p)[i] for p in pipelines]
            mean = np.stack([s.mean_ for s in sc]) if sc[0].with_mean else None
            scale = np.stack([s.scale_ for s in sc]) if sc[0].with_std else None
            self.steps.append((mean, scale))
        self.width = int(pipelines[0].n_features_in_)  # X is copied once per shard

    @staticmethod
    def key(p) -> tuple | None:
        from sklearn.pipeline import Pipeline

        from ..engine.pipeline import IncrementalPipeline

        # another Pipeline subclass may change predict; IncrementalPipeline adds partial_fit
        if type(p) not in (Pipeline, IncrementalPipeline):
            return None
        steps = _transformers(p)
        if not all(type(s) is StandardScaler for s in steps):
            return None
        return tuple((s.with_mean, s.with_std, np.shape(s.mean_), np.asarray(s.scale_).dtype)
                     for s in steps)

    def transform(self, X: np.ndarray, G: int) -> np.ndarray:
        Xt = np.empty((G, *X.shape), dtype=X.dtype)  # C order: each shard's rows as the
        Xt[...] = X  # loop's transform has them, so its products take the same kernel
        for mean, scale in self.steps:
            if mean is not None:
                Xt -= mean.astype(Xt.dtype)[:, None, :]
            if scale is not None:
                Xt /= scale.astype(Xt.dtype)[:, None, :]
        return Xt


def _transformers(p) -> list:
    return [step for _, _, step in p._iter(with_final=False, filter_passthrough=True)]
