"""Tests for sisa.baselines.newton (certified removal, Guo et al. 2020)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge

from sisa.baselines.newton import (
    CertifiedRemovalClassifier,
    CertifiedRemovalRegressor,
    certified_epsilon,
)
from sisa.errors import InputError


def _binary(n=600, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d)
    y = (X @ rng.normal(size=d) + rng.normal(size=n) > 0.3).astype(int)
    return X, y


def _retrained(model, X, y, removed):
    """The same algorithm run on D' with the same noise vector and feature scale."""
    params = model.get_params() | {"max_norm": model.scale_}
    return clone(model).set_params(**params).fit(np.delete(X, removed, 0), np.delete(y, removed))


# -- least squares: the Newton step is exact ----------------------------------------------------


@pytest.mark.parametrize("noise_std", [0.0, 2.0])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridge_removal_equals_retraining(noise_std, fit_intercept):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5)) * 4
    y = X @ rng.normal(size=5) + 3 + rng.normal(size=300)
    reg = CertifiedRemovalRegressor(
        lam=1e-3, noise_std=noise_std, fit_intercept=fit_intercept, random_state=0
    ).fit(X, y)
    before = reg.coef_.copy()
    removed = rng.choice(300, size=25, replace=False)
    reg.remove(removed[:10]).remove(removed[10:])  # two batches, λn changes twice
    ref = _retrained(reg, X, y, removed)
    assert np.abs(before - ref.coef_).max() > 1e-4  # removal changes the model
    np.testing.assert_allclose(reg.coef_, ref.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(reg.intercept_, ref.intercept_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(reg.predict(X[:5]), ref.predict(X[:5]), rtol=1e-8)
    assert reg.removal_bound_ == 0.0
    assert reg.epsilon_bound_ == 0.0
    assert reg.n_removed_ == 25
    assert reg.gradient_norm() < 1e-8 * 300


def test_ridge_matches_sklearn_ridge():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4))
    X /= np.linalg.norm(X, axis=1).max()
    y = X @ np.array([1.0, -1.0, 2.0, 0.0]) + 0.1 * rng.normal(size=200)
    reg = CertifiedRemovalRegressor(lam=1e-3, fit_intercept=False, max_norm=1.0).fit(X, y)
    sk = Ridge(alpha=1e-3 * 200, fit_intercept=False).fit(X, y)
    np.testing.assert_allclose(reg.coef_[0], sk.coef_, rtol=1e-9)
    assert reg.score(X, y) > 0.9


# -- logistic regression ------------------------------------------------------------------------


def test_logistic_matches_sklearn_without_noise():
    X, y = _binary()
    X = X / np.linalg.norm(X, axis=1).max()
    clf = CertifiedRemovalClassifier(lam=1e-3, fit_intercept=False, max_norm=1.0).fit(X, y)
    sk = LogisticRegression(C=1 / (1e-3 * len(y)), fit_intercept=False, tol=1e-12, max_iter=5000)
    sk.fit(X, y)
    np.testing.assert_allclose(clf.coef_, sk.coef_, rtol=1e-6, atol=1e-8)
    assert clf.gradient_norm() < 1e-10 * len(y)


@pytest.mark.parametrize("noise_std", [0.0, 1.0])
def test_logistic_newton_step_approaches_retraining(noise_std):
    X, y = _binary()
    clf = CertifiedRemovalClassifier(lam=1e-3, noise_std=noise_std, random_state=3).fit(X, y)
    w_star = np.concatenate([clf.coef_.ravel(), clf.intercept_])
    removed = np.arange(0, 600, 20)  # 30 rows
    clf.remove(removed)
    ref = _retrained(clf, X, y, removed)
    w_new = np.concatenate([clf.coef_.ravel(), clf.intercept_])
    w_ref = np.concatenate([ref.coef_.ravel(), ref.intercept_])
    # The Newton step recovers most of the change (error is second order).
    assert np.linalg.norm(w_new - w_ref) < 0.05 * np.linalg.norm(w_star - w_ref)
    # Corollary 1: the true gradient residual on D' is below the reported bound.
    assert 0 < clf.gradient_norm() <= clf.removal_bound_
    if noise_std == 0:
        assert clf.epsilon_bound_ == math.inf
    else:
        c = math.sqrt(2 * math.log(1.5 / clf.delta))
        assert clf.epsilon_bound_ == pytest.approx(c * clf.removal_bound_ / noise_std)
        assert math.isfinite(clf.epsilon_bound_)
    assert clf.removal_time_ > 0


def test_bounds_accumulate_over_sequential_removals():
    X, y = _binary(seed=4)
    clf = CertifiedRemovalClassifier(lam=1e-3, noise_std=5.0, random_state=0).fit(X, y)
    assert clf.removal_bound_ == 0.0 and clf.epsilon_bound_ == 0.0
    clf.remove([0, 1])
    first = clf.removal_bound_
    clf.remove([2])
    assert clf.removal_bound_ > first > 0
    assert clf.gradient_norm() <= clf.removal_bound_
    assert clf.n_removed_ == 3


def test_epsilon_budget_triggers_retrain_with_fresh_noise():
    X, y = _binary(seed=5)
    clf = CertifiedRemovalClassifier(lam=1e-3, noise_std=1.0, epsilon=1e-6, random_state=0)
    clf.fit(X, y)
    noise = clf.noise_.copy()
    clf.remove(np.arange(20))
    assert clf.n_retrains_ == 1
    assert clf.removal_bound_ == 0.0 and clf.epsilon_bound_ == 0.0
    assert not np.allclose(clf.noise_, noise)
    assert clf.gradient_norm() < 1e-8 * len(y)  # a fresh optimum on D'
    # A generous budget does not retrain.
    loose = CertifiedRemovalClassifier(lam=1e-3, noise_std=1.0, epsilon=1e6, random_state=0)
    loose.fit(X, y).remove(np.arange(20))
    assert loose.n_retrains_ == 0 and loose.removal_bound_ > 0


def test_multiclass_one_vs_rest():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(500, 4))
    labels = np.array(["a", "b", "c"])
    y = labels[np.digitize(X @ np.array([1.0, 2.0, -1.0, 0.5]), [-1.0, 1.0])]
    clf = CertifiedRemovalClassifier(lam=1e-3, noise_std=1.0, random_state=0).fit(X, y)
    assert clf.coef_.shape == (3, 4) and clf.intercept_.shape == (3,)
    assert list(clf.classes_) == ["a", "b", "c"]
    proba = clf.predict_proba(X[:10])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.decision_function(X[:10]).shape == (10, 3)
    assert clf.score(X, y) > 0.8
    w_star = clf.coef_.copy()
    removed = np.arange(40)
    clf.remove(removed)
    ref = _retrained(clf, X, y, removed)
    assert np.linalg.norm(clf.coef_ - ref.coef_) < 0.05 * np.linalg.norm(w_star - ref.coef_)
    assert 0 < clf.gradient_norm() <= clf.removal_bound_
    assert math.isfinite(clf.epsilon_bound_)


def test_binary_outputs_and_label_types():
    X, y = _binary(n=200, seed=7)
    ys = np.where(y == 1, "spam", "ham")
    clf = CertifiedRemovalClassifier(lam=1e-2).fit(X, ys)
    assert clf.coef_.shape == (1, X.shape[1])
    assert clf.decision_function(X).shape == (200,)
    proba = clf.predict_proba(X)
    assert proba.shape == (200, 2)
    pred = clf.predict(X)
    np.testing.assert_array_equal(pred, np.where(proba[:, 1] > 0.5, "spam", "ham"))
    assert clf.score(X, ys) > 0.75


def test_removed_rows_are_dropped_and_indices_stay_stable():
    X, y = _binary(n=100, seed=8)
    clf = CertifiedRemovalClassifier(lam=1e-2).fit(X, y)
    clf.remove([5, 50])
    clf.remove([99, 0])  # positions refer to the original X
    assert clf._Z.shape[0] == 96
    with pytest.raises(InputError, match="already removed"):
        clf.remove([50])
    assert clf.remove(np.array([], dtype=int)).n_removed_ == 4


def test_max_norm_and_scaling():
    X, y = _binary(n=100, seed=9)
    clf = CertifiedRemovalClassifier().fit(X, y)
    assert clf.scale_ == pytest.approx(np.linalg.norm(X, axis=1).max())
    assert np.linalg.norm(clf._Z, axis=1).max() <= 1 + 1e-12
    with pytest.raises(InputError, match="max_norm"):
        CertifiedRemovalClassifier(max_norm=0.1).fit(X, y)


def test_certified_epsilon():
    assert certified_epsilon(0.0, 0.0, 1e-4) == 0.0
    assert certified_epsilon(1e-3, 0.0, 1e-4) == math.inf
    assert certified_epsilon(0.5, 2.0, 1e-5) == pytest.approx(math.sqrt(2 * math.log(1.5e5)) * 0.25)
    with pytest.raises(InputError):
        certified_epsilon(-1.0, 1.0, 1e-4)


def test_sklearn_clone_and_params():
    clf = CertifiedRemovalClassifier(lam=0.1, noise_std=2.0, random_state=4)
    c2 = clone(clf)
    assert c2.get_params()["lam"] == 0.1 and c2.get_params()["noise_std"] == 2.0
    assert not hasattr(c2, "coef_")
    X, y = _binary(n=100)
    a = clone(clf).fit(X, y)
    b = clone(clf).fit(X, y)
    np.testing.assert_array_equal(a.noise_, b.noise_)  # seeded noise is reproducible


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"lam": 0.0},
        {"lam": -1.0},
        {"noise_std": -1.0},
        {"delta": 0.0},
        {"delta": 1.0},
        {"epsilon": 1.0},  # budget without noise
        {"epsilon": 0.0, "noise_std": 1.0},
        {"max_norm": 0.0},
        {"max_iter": 0},
        {"tol": 0.0},
        {"lam": float("nan")},
    ],
)
def test_invalid_params_raise(params):
    X, y = _binary(n=50)
    with pytest.raises(InputError):
        CertifiedRemovalClassifier(**params).fit(X, y)


def test_invalid_data_raise():
    X, y = _binary(n=50)
    clf = CertifiedRemovalClassifier()
    with pytest.raises(InputError):
        clf.fit(X, y[:-1])
    with pytest.raises(InputError):
        clf.fit(np.where(np.eye(50, 6) == 1, np.nan, X), y)
    with pytest.raises(InputError):
        clf.fit(X, np.zeros(50))  # one class
    with pytest.raises(InputError):
        clf.fit(X[0], y[:1])
    with pytest.raises(InputError):
        CertifiedRemovalRegressor().fit(X, np.full(50, np.inf))
    with pytest.raises(NotFittedError):
        clf.predict(X)
    with pytest.raises(NotFittedError):
        clf.remove([0])
    clf.fit(X, y)
    with pytest.raises(InputError):
        clf.predict(X[:, :3])
    for bad in ([50], [-1], [1, 1], [[1]], [0.5], np.arange(50)):
        with pytest.raises(InputError):
            clf.remove(bad)
    assert clf.n_removed_ == 0  # failed calls change nothing


# -- the linear family's certified Newton (sisa compare's newton_noisy) ---------------------------


@pytest.fixture(scope="module")
def adult_sets():
    from sisa.compare.data import adult_features, make_scenario

    Xtr, ytr, Xte, yte, names, _ = adult_features(3000, seed=0)
    return {s: make_scenario(s, Xtr, ytr, Xte, yte, names, seed=0)
            for s in ("random", "mislabeled", "injected")}


@pytest.mark.parametrize("noisy", [False, True])
def test_folded_newton_residual_is_within_its_bound_on_adult(adult_sets, noisy):
    """The premise of the certificate: after the Newton step the gradient of the perturbed
    objective on W is at most β, on real rows (norms up to 40, not <= 1)."""
    from sisa.baselines.certificate import fit_folded, folded_gradient, folded_newton_removal
    from sisa.compare.data import seed_rows
    from sisa.compare.methods.linear_family import LinearFamily

    fam = LinearFamily()
    lam = fam.noise_lam
    checked = 0
    for sc in adult_sets.values():
        for seed in range(3):
            w, _, d = seed_rows(sc, fam.subsample, seed)
            b = fam.noise(sc.X.shape[1], seed) if noisy else None
            theta = fit_folded(sc.X[d], sc.y[d], lam, noise=b)
            new, beta = folded_newton_removal(theta, sc.X[w], sc.y[w], lam, noise=b)
            resid = float(np.linalg.norm(folded_gradient(new, sc.X[w], sc.y[w], lam, b)))
            before = float(np.linalg.norm(folded_gradient(theta, sc.X[w], sc.y[w], lam, b)))
            assert 0 < resid <= beta < before, (sc.name, seed, resid, beta, before)
            checked += 1
    assert checked == 9


def _rates(pos: np.ndarray, neg: np.ndarray) -> list[tuple[int, int]]:
    """(positives, negatives) at or above each threshold, in both directions."""
    out = []
    for sign in (1.0, -1.0):
        p, q = sign * pos, sign * neg
        for t in np.concatenate([p, q, [np.inf]]):
            out.append((int((p >= t).sum()), int((q >= t).sum())))
    return out


def _grad_sum(fam, theta: np.ndarray, sc, seed: int) -> float:
    """Σ_{W_i}(p - y) of θ = (w, c) on the rows seed ``seed`` trained on."""
    from scipy.special import expit

    from sisa.compare.data import subsample

    w = subsample(sc, fam.subsample, seed)
    return float(np.sum(expit(sc.X[w] @ theta[:-1] + theta[-1]) - (sc.y[w] > 0)))


def test_whitebox_statistic_stays_within_the_certificate(adult_sets):
    """No threshold on Σ_W(p - y) tells noisy Newton from noisy retrain beyond
    TPR <= e^ε FPR + δ (either way round), with exact 99.9 % binomial bounds on both
    rates, over 80 models per side. The old noise left the intercept unperturbed and
    unpenalised: every retrain had Σ_W(p - y) = 0 and every Newton model its residual."""
    from scipy.stats import beta as beta_dist
    from threadpoolctl import threadpool_limits

    from sisa.compare.methods.linear_family import LinearFamily
    from sisa.compare.stats.epsilon import DELTA

    fam, sc, n = LinearFamily(), adult_sets["mislabeled"], 80
    with threadpool_limits(limits=1):
        runs = [fam.unlearn(sc, s, ("newton_noisy",)) for s in range(n)]
        newton = np.array([_grad_sum(fam, r["models"]["newton_noisy"], sc, s)
                           for s, r in enumerate(runs)])
        retrain = np.array([_grad_sum(fam, fam.reference("noisy", sc, s), sc, s)
                            for s in range(n, 2 * n)])
    # The intercept's coordinate is perturbed too: the retrains' statistic is not pinned.
    assert retrain.std() > 1.0, retrain.std()
    eps = max(r["extra"]["certified_epsilon"] for r in runs)
    assert 0 < eps <= 3.0, eps  # a meaningful certificate at the default σ
    a = 1e-3
    for x, y in _rates(newton, retrain) + [(q, p) for p, q in _rates(retrain, newton)]:
        tpr_lo = beta_dist.ppf(a, x, n - x + 1) if x > 0 else 0.0
        fpr_hi = beta_dist.ppf(1 - a, y + 1, n - y) if y < n else 1.0
        assert tpr_lo <= math.exp(eps) * fpr_hi + DELTA, (x, y, eps)
    assert np.allclose(newton, [fam.whitebox(r["models"]["newton_noisy"], sc, s)
                                for s, r in enumerate(runs)])
