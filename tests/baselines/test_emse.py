"""EMSE fine-tune: exact gradients, parameter checks, and the unlearning story."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import PolynomialFeatures, SplineTransformer

from sisa.baselines import (
    EMSEClassifierUnlearner,
    EMSEUnlearner,
    emse_classifier_objective,
    emse_objective,
    resolve_c,
)
from sisa.datasets import load, load_synthetic
from sisa.errors import InputError
from sisa.metrics import accuracy, fair_r2, r2

ROOT = Path(__file__).resolve().parents[2]


def central_differences(fun, theta, h=1e-6):
    grad = np.empty_like(theta)
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = h
        grad[i] = (fun(theta + step)[0] - fun(theta - step)[0]) / (2 * h)
    return grad


def assert_gradient_exact(fun, theta):
    _, grad = fun(theta)
    fd = central_differences(fun, theta)
    rel = np.linalg.norm(grad - fd) / np.linalg.norm(fd)
    assert rel < 1e-6, f"analytic gradient is off by {rel:.2e} relative"


@pytest.fixture
def regression_problem():
    rng = np.random.default_rng(3)
    Phi_w, Phi_u = rng.normal(size=(40, 4)), rng.normal(size=(25, 4))
    y_w, y_u = rng.normal(size=40), rng.normal(size=25) + 1.0
    return rng.normal(size=5) * 0.5, Phi_w, y_w, Phi_u, y_u


@pytest.mark.parametrize(
    ("sigma", "c", "reduction", "alpha"),
    [
        (1.0, "normalized", "mean", 0.0),
        (0.7, "kernel", "mean", 0.0),
        (0.5, "kernel", "sum", 0.3),
        (2.0, 0.8, "sum", 0.0),
        (0.6, "normalized", "mean", 0.1),
    ],
)
def test_regression_gradient_matches_finite_differences(
    regression_problem, sigma, c, reduction, alpha
):
    theta, Phi_w, y_w, Phi_u, y_u = regression_problem

    def fun(t):
        return emse_objective(t, Phi_w, y_w, Phi_u, y_u, sigma, 1.7, c, reduction, alpha)

    assert_gradient_exact(fun, theta)


def test_regression_objective_value_by_hand():
    # f(x) = 2 x + 1: W residuals 0 and -1, U residual 1.
    theta = np.array([2.0, 1.0])
    Phi_w, y_w = np.array([[1.0], [0.0]]), np.array([3.0, 0.0])
    Phi_u, y_u = np.array([[0.0]]), np.array([2.0])  # residual 1
    sigma, lam = 1.0, 0.5
    c = 1 / math.sqrt(2 * math.pi)
    expected = (0 + 1) / 2 - lam * 2 * math.log(1 - c * math.exp(-0.5))
    value, _ = emse_objective(theta, Phi_w, y_w, Phi_u, y_u, sigma, lam, "normalized", "mean")
    assert value == pytest.approx(expected, rel=1e-12)
    value_sum, _ = emse_objective(theta, Phi_w, y_w, Phi_u, y_u, sigma, lam, "normalized", "sum")
    assert value_sum == pytest.approx(1 - lam * 2 * math.log(1 - c * math.exp(-0.5)), rel=1e-12)


def test_kernel_barrier_stays_finite_at_zero_residual():
    theta = np.array([1.0, 0.0])
    Phi = np.array([[1.0], [2.0]])
    value, grad = emse_objective(
        theta, Phi, np.array([1.0, 2.0]), Phi, np.array([1.0, 2.0]), sigma=0.5, c="kernel"
    )
    assert np.isfinite(value) and value > 100  # the barrier is high but finite
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize(
    ("n_classes", "reduction", "alpha"), [(2, "mean", 0.0), (2, "sum", 0.2), (3, "mean", 0.05)]
)
def test_classifier_gradient_matches_finite_differences(n_classes, reduction, alpha):
    rng = np.random.default_rng(5)
    d = 3
    k = 1 if n_classes == 2 else n_classes
    Phi_w, Phi_u = rng.normal(size=(30, d)), rng.normal(size=(20, d))
    y_w, y_u = rng.integers(0, n_classes, 30), rng.integers(0, n_classes, 20)
    theta = rng.normal(size=d * k + k)

    def fun(t):
        return emse_classifier_objective(
            t, Phi_w, y_w, Phi_u, y_u, n_classes, 0.8, reduction, alpha
        )

    assert_gradient_exact(fun, theta)


def test_classifier_objective_value_by_hand():
    # binary, one feature, logit 0 for every row: p_y = 1/2 everywhere
    Phi = np.zeros((2, 1))
    value, _ = emse_classifier_objective(
        np.zeros(2), Phi, np.array([0, 1]), Phi[:1], np.array([1]), n_classes=2, lam=2.0
    )
    assert value == pytest.approx(math.log(2) + 2.0 * math.log(2))


def test_normalized_c_needs_sigma_above_threshold():
    assert resolve_c("normalized", 2.0) == pytest.approx(1 / (2 * math.sqrt(2 * math.pi)))
    with pytest.raises(InputError, match=r"0\.399.*c='kernel'"):
        resolve_c("normalized", 0.3)
    ds = load_synthetic(n=60)
    with pytest.raises(InputError, match=r"sigma > 1/sqrt\(2\*pi\)"):
        EMSEUnlearner(sigma=0.3).fit(ds.X, ds.y, ds.unwanted)
    model = EMSEUnlearner(PolynomialFeatures(3), sigma=0.3, c="kernel")
    assert model.fit(ds.X, ds.y, ds.unwanted).converged_
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        resolve_c(1.5, 1.0)


def _before_after(X, y, u, model):
    """(R² on W, R² on U) of the original and of the unlearned model."""
    scores = {}
    for name, predict in (("before", model.predict_original), ("after", model.predict)):
        scores[name] = (r2(y[~u], predict(X[~u])), r2(y[u], predict(X[u])))
    return scores


def test_unlearning_story_on_synthetic_data():
    ds = load_synthetic(n=1000)
    model = EMSEUnlearner(PolynomialFeatures(7), sigma=0.5).fit(ds.X, ds.y, ds.unwanted)
    s = _before_after(ds.X, ds.y, ds.unwanted, model)
    assert s["before"][0] < 0.5
    assert s["after"][0] >= 0.95
    assert s["after"][1] < s["before"][1] - 1.0
    assert model.converged_ and model.n_iter_ == len(model.trace_["objective"]) - 1
    assert model.trace_["objective"][-1] < model.trace_["objective"][0]
    assert model.trace_["grad_norm"][-1] < 1e-3 * model.trace_["grad_norm"][0]
    assert model.unlearn_time_ > 0


def test_dependent_case_cannot_separate():
    ds = load_synthetic(n=1000, dependent=True)
    sigma = 0.5
    model = EMSEUnlearner(PolynomialFeatures(7), sigma=sigma).fit(ds.X, ds.y, ds.unwanted)
    s = _before_after(ds.X, ds.y, ds.unwanted, model)
    u = ds.unwanted
    fair = fair_r2(ds.y[~u], model.predict(ds.X[~u]), ds.y[u], model.predict(ds.X[u]), sigma)
    assert s["before"][0] > 0.95  # the mixed model was fine for W
    assert s["after"][0] < 0.8  # pushing U away drags W along
    assert abs(s["after"][0] - s["after"][1]) < 0.1
    assert fair < 0.3


def test_diamonds_small():
    ds = load("diamonds", n_rows=3000)
    X = ds.X[:, :4]  # carat, cut, color, clarity
    model = EMSEUnlearner(PolynomialFeatures(2), sigma=0.5).fit(X, ds.y, ds.unwanted)
    s = _before_after(X, ds.y, ds.unwanted, model)
    assert s["after"][1] < s["before"][1] - 1.0
    assert s["after"][0] > s["before"][0] - 0.02
    assert s["after"][0] > 0.9


def test_original_fit_is_least_squares_and_stationary():
    ds = load_synthetic(n=300)
    transformer = SplineTransformer(n_knots=5)
    model = EMSEUnlearner(transformer).fit_original(ds.X, ds.y)
    ref = LinearRegression().fit(transformer.fit_transform(ds.X), ds.y)
    np.testing.assert_allclose(
        model.predict(ds.X), ref.predict(transformer.transform(ds.X)), atol=1e-8
    )
    # With alpha > 0 the original parameters minimize EMSE with no unwanted rows.
    model = EMSEUnlearner(PolynomialFeatures(4), alpha=0.05).fit_original(ds.X, ds.y)
    Z = (model._features(ds.X) - model.feature_mean_) / model.feature_scale_
    theta = np.append(
        model.coef_ * model.feature_scale_, model.intercept_ + model.coef_ @ model.feature_mean_
    )
    _, grad = emse_objective(theta, Z, ds.y, Z[:0], ds.y[:0], 1.0, alpha=0.05)
    assert np.max(np.abs(grad)) < 1e-9


def test_unlearn_restarts_from_original_and_clones():
    ds = load_synthetic(n=200)
    u = ds.unwanted
    model = EMSEUnlearner(PolynomialFeatures(5), sigma=0.6).fit(ds.X, ds.y, u)
    first = model.coef_.copy()
    model.unlearn(ds.X[~u], ds.y[~u], ds.X[u], ds.y[u])
    np.testing.assert_allclose(model.coef_, first)
    assert not np.allclose(model.coef_, model.original_coef_)
    assert clone(model).get_params()["sigma"] == 0.6


def _poisoned_blobs(n=600, seed=0):
    """Labels by the sign of x0; rows in a corner get flipped labels (the unwanted rows)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.where(X[:, 0] > 0, "pos", "neg")
    u = (X[:, 1] > 0.0) & (np.abs(X[:, 0]) < 1.0)
    y[u] = np.where(y[u] == "pos", "neg", "pos")
    return X, y, u


def test_classifier_unlearning_story():
    X, y, u = _poisoned_blobs()
    model = EMSEClassifierUnlearner(PolynomialFeatures(3), alpha=1e-3).fit(X, y, u)
    original = clone(model).fit_original(X, y)
    acc_w = accuracy(y[~u], original.predict(X[~u])), accuracy(y[~u], model.predict(X[~u]))
    acc_u = accuracy(y[u], original.predict(X[u])), accuracy(y[u], model.predict(X[u]))
    assert acc_u[0] > 0.8  # the cubic model fit on all rows learned the poisoned labels
    assert acc_w[1] > acc_w[0] + 0.03 and acc_w[1] > 0.98
    assert acc_u[1] < 0.05
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(model.predict(X)) <= {"neg", "pos"}
    assert model.coef_.shape == (1, 10) and model.trace_["objective"][-1] < model.objective_start_


def test_classifier_original_is_sklearn_stationary_point_and_multiclass():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = np.argmax(X @ rng.normal(size=(3, 3)), axis=1)
    model = EMSEClassifierUnlearner(alpha=0.01, tol=1e-10).fit_original(X, y)
    Z = (X - model.feature_mean_) / model.feature_scale_
    W = (model.coef_ * model.feature_scale_).T
    b = model.intercept_ + model.coef_ @ model.feature_mean_
    theta = np.concatenate([W.ravel(), b])
    _, grad = emse_classifier_objective(theta, Z, y, Z[:0], y[:0], 3, alpha=0.01)
    assert np.max(np.abs(grad)) < 1e-5  # LogisticRegression's C matches our alpha
    forget = y == 2
    model.unlearn(X[~forget], y[~forget], X[forget], y[forget])
    assert model.predict_proba(X).shape == (300, 3)
    assert accuracy(y[forget], model.predict(X[forget])) < 0.2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, X, y: m.fit_original(X[:, 0], y), "2-D"),
        (lambda m, X, y: m.fit_original(np.where(X > 0.9, np.nan, X), y), "NaN"),
        (lambda m, X, y: m.fit_original(X, y[:-1]), "rows"),
        (lambda m, X, y: m.unlearn(X, y, X, y), "not fitted"),
        (lambda m, X, y: m.fit(X, y, np.ones(len(y))), "boolean mask"),
        (lambda m, X, y: m.fit_original(X, y).unlearn(np.hstack([X, X]), y, X, y), "features"),
        (lambda m, X, y: m.fit_original(X, y).unlearn(X, y, X[:0], y[:0]), "empty"),
        (lambda m, X, y: m.set_params(reduction="median").fit_original(X, y), "reduction"),
        (lambda m, X, y: m.set_params(lam=-1).fit_original(X, y), "lam"),
        (lambda m, X, y: m.set_params(n_threads=0).fit_original(X, y), "n_threads"),
        (lambda m, X, y: m.fit(X, np.r_[y[:-1], np.nan], np.zeros(len(y), bool)), "NaN"),
    ],
)
def test_bad_inputs_raise_input_error(call, message):
    ds = load_synthetic(n=50)
    with pytest.raises(InputError, match=message):
        call(EMSEUnlearner(), ds.X, ds.y)


def test_classifier_rejects_unseen_labels():
    X, y, _ = _poisoned_blobs(n=100)
    model = EMSEClassifierUnlearner().fit_original(X, y)
    with pytest.raises(InputError, match="unseen"):
        model.unlearn(X, y, X[:3], np.array(["pos", "zzz", "neg"]))


def test_example_script_quick(tmp_path):
    out = tmp_path / "figs"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "emse_paper.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "EMSE (after)" in proc.stdout and "Diamonds" in proc.stdout
    for name in ("fig3_synthetic_unlearning", "fig4_dependent_case", "fig5_sigma_sweep"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
