"""Tests for sisa.baselines.linear: the shared family and its unlearning methods."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from sisa.baselines import linear as L
from sisa.errors import InputError


def _ridge(X, y, lam):
    Xa = np.hstack([X, np.ones((len(X), 1))])
    pen = np.r_[np.full(X.shape[1], lam), 0.0]
    return np.linalg.solve(Xa.T @ Xa + np.diag(pen), Xa.T @ y)


@pytest.fixture(scope="module")
def lsq():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = X @ rng.normal(size=6) + 0.5 + rng.normal(size=120)
    return X, y, 0.7


@pytest.fixture(scope="module")
def logit():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] - X[:, 1] + rng.normal(size=300) > 0).astype(int)
    return X, y, 1.0


def test_pru_is_the_projection_of_exact_leave_k_out_onto_the_deleted_rows(lsq):
    X, y, lam = lsq
    theta = _ridge(X, y, lam)
    forget = np.zeros(len(y), dtype=bool)
    forget[[3, 17, 40]] = True  # 3 rows: a 3-dim subspace of the 7 coordinates
    exact = _ridge(X[~forget], y[~forget], lam)
    K = np.hstack([X[forget], np.ones((3, 1))])
    P = K.T @ np.linalg.solve(K @ K.T, K)  # projection onto span of the deleted rows
    pru = L.projective_residual_update(theta, X, y, forget, lam, loss="squared")
    np.testing.assert_allclose(pru, theta + P @ (exact - theta), atol=1e-10)
    assert np.abs(pru - exact).max() > 1e-3  # a proper projection: not the full step


def test_pru_equals_exact_retraining_when_the_deleted_rows_span_the_space(lsq):
    X, y, lam = lsq
    theta = _ridge(X, y, lam)
    forget = np.zeros(len(y), dtype=bool)
    forget[:10] = True  # 10 generic rows span all 7 coordinates
    exact = _ridge(X[~forget], y[~forget], lam)
    np.testing.assert_allclose(
        L.projective_residual_update(theta, X, y, forget, lam, loss="squared"), exact,
        atol=1e-10)


def test_logistic_pru_projects_the_newton_step(logit):
    X, y, lam = logit
    theta = L.fit_logistic(X, y, lam)
    forget = np.zeros(len(y), dtype=bool)
    forget[[5, 9]] = True
    newton, _ = L.newton_removal(theta, X[~forget], y[~forget], lam)
    K = np.hstack([X[forget], np.ones((2, 1))])
    P = K.T @ np.linalg.solve(K @ K.T, K)
    np.testing.assert_allclose(L.projective_residual_update(theta, X, y, forget, lam),
                               theta + P @ (newton - theta), atol=1e-9)


def test_fit_matches_sklearn_and_newton_removal_is_close_to_retraining(logit):
    X, y, lam = logit
    ours = L.L2LogisticRegression(lam).fit(X, y)
    sk = LogisticRegression(C=1 / lam, tol=1e-12, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(ours.coef_, sk.coef_, atol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-6)
    assert clone(ours).get_params() == {"lam": lam, "max_iter": 100, "tol": 1e-8}
    theta = L.fit_logistic(X, y, lam)
    keep = np.arange(len(y)) >= 20
    exact = L.fit_logistic(X[keep], y[keep], lam)
    newton, beta = L.newton_removal(theta, X[keep], y[keep], lam)
    # One Newton step gets far closer than doing nothing, and its residual bound is > 0.
    assert np.linalg.norm(newton - exact) < 0.1 * np.linalg.norm(theta - exact)
    assert beta > 0
    assert np.linalg.norm(L.gradient(newton, X[keep], y[keep], lam)) <= beta


def test_feature_injection_exact_methods_zero_the_weight(logit):
    X, y, lam = logit
    u = np.flatnonzero(y == 1)[:8]
    Xi = np.hstack([X, np.zeros((len(X), 1))])
    Xi[u, -1] = 1.0
    keep = np.ones(len(y), dtype=bool)
    keep[u] = False
    theta = L.fit_logistic(Xi, y, lam)
    assert theta[-2] > 0.5  # the model keys on the injected feature
    assert L.fit_logistic(Xi[keep], y[keep], lam)[-2] == 0.0
    newton, _ = L.newton_removal(theta, Xi[keep], y[keep], lam)
    assert abs(newton[-2]) < 1e-8  # the column is 0 on W: one Newton step removes it
    rng = np.random.default_rng(0)
    tuned = L.finetune(theta, Xi[keep], y[keep], lam, rng)
    assert tuned[-2] > 0.5 * theta[-2]  # fine-tuning on W barely touches it


def test_sgd_methods_move_from_the_original_and_validate(logit):
    X, y, lam = logit
    theta = L.fit_logistic(X, y, lam)
    keep = np.arange(len(y)) >= 30
    rng = np.random.default_rng(0)
    for fn in (L.neggrad_plus, L.random_relabel):
        new = fn(theta, X[keep], y[keep], X[~keep], y[~keep], lam, rng)
        assert new.shape == theta.shape and not np.allclose(new, theta)
    emse = L.emse_unlearn(theta, X[keep], y[keep], X[~keep], y[~keep], lam)
    # EMSE pushes U's true-class logits down.
    s = np.where(y[~keep] > 0, 1, -1)
    assert (s * L.decision(emse, X[~keep])).mean() < (s * L.decision(theta, X[~keep])).mean()
    with pytest.raises(InputError, match="alpha"):
        L.neggrad_plus(theta, X, y, X, y, lam, rng, alpha=1.5)
    with pytest.raises(InputError, match="loss"):
        L.leave_k_out_update(theta, X, y, ~keep, lam, loss="hinge")
    with pytest.raises(InputError, match="binary"):
        L.L2LogisticRegression().fit(X[:9], np.arange(9) % 3)
