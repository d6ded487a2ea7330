"""Metrics against hand-computed values."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import sisa.baselines.emse
import sisa.baselines.emse_objectives
import sisa.datasets
import sisa.datasets.adult
import sisa.datasets.diamonds
import sisa.datasets.fashion_mnist
import sisa.datasets.synthetic
import sisa.metrics
from sisa.errors import InputError
from sisa.metrics import accuracy, exponential_r2, fair_r2, r2, unlearning_report


@pytest.mark.parametrize(
    "module",
    [
        sisa.metrics,
        sisa.baselines.emse,
        sisa.baselines.emse_objectives,
        sisa.datasets,
        sisa.datasets.adult,
        sisa.datasets.diamonds,
        sisa.datasets.fashion_mnist,
        sisa.datasets.synthetic,
    ],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_r2_hand_computed():
    # mean 2, SS_tot = 2, SS_res = 1 -> 0.5
    assert r2([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == pytest.approx(0.5)
    # predicting the mean scores 0; a worse guess is negative: SS_res = 8 -> 1 - 8/2
    assert r2([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == pytest.approx(0.0)
    assert r2([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-3.0)


def test_r2_constant_target_follows_sklearn():
    assert r2([5.0, 5.0], [5.0, 5.0]) == 1.0
    assert r2([5.0, 5.0], [5.0, 6.0]) == 0.0


def test_exponential_r2_hand_computed():
    # residuals 0 and 2, sigma 1: (1 + e^-2) / 2
    assert exponential_r2([0.0, 0.0], [0.0, 2.0], 1.0) == pytest.approx((1 + math.exp(-2)) / 2)
    # residual sigma scores e^-1/2 whatever sigma is
    assert exponential_r2([3.0], [3.0 + 0.7], 0.7) == pytest.approx(math.exp(-0.5))


def test_fair_r2_hand_computed():
    e_w = (1 + math.exp(-0.5)) / 2  # residuals 0 and 1
    e_u = math.exp(-2.0)  # residual 2
    got = fair_r2([0.0, 1.0], [0.0, 0.0], [0.0], [2.0], sigma=1.0)
    assert got == pytest.approx(e_w * (1 - e_u))


def test_accuracy_on_labels_of_any_dtype():
    assert accuracy(["a", "b", "b", "a"], ["a", "b", "a", "a"]) == 0.75
    assert accuracy(np.array([1, 0, 1]), np.array([[1], [0], [0]])) == pytest.approx(2 / 3)


def test_unlearning_report_regression_keys_and_values():
    rep = unlearning_report(
        [1.0, 2.0, 3.0],
        [1.0, 2.0, 4.0],
        [0.0, 0.0],
        [0.0, 2.0],
        [0.0, 1.0],
        [0.0, 1.0],
        sigma=1.0,
    )
    assert rep["r2_wanted"] == pytest.approx(0.5)
    assert rep["r2_test"] == 1.0
    assert rep["exp_r2_unwanted"] == pytest.approx((1 + math.exp(-2)) / 2)
    assert rep["fair_r2"] == pytest.approx(rep["exp_r2_wanted"] * (1 - rep["exp_r2_unwanted"]))
    assert "exp_r2_wanted" not in unlearning_report([1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1, 2])


def test_unlearning_report_classification():
    rep = unlearning_report([0, 1], [0, 1], [1, 1], [0, 1], task="classification")
    assert rep == {"accuracy_wanted": 1.0, "accuracy_unwanted": 0.5}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: r2([1.0, np.nan], [1.0, 2.0]), "NaN"),
        (lambda: r2([1.0, 2.0], [1.0, 2.0, 3.0]), "rows"),
        (lambda: r2([1.0], [1.0]), "at least 2"),
        (lambda: r2(np.ones((2, 2)), np.ones((2, 2))), "1-D"),
        (lambda: exponential_r2([], [], 1.0), "empty"),
        (lambda: exponential_r2([1.0], [1.0], 0.0), "sigma"),
        (lambda: exponential_r2([1.0], [np.inf], 1.0), "NaN/inf"),
        (lambda: unlearning_report([1, 2], [1, 2], [1, 2], [1, 2], [1, 2]), "both"),
        (lambda: unlearning_report([1, 2], [1, 2], [1, 2], [1, 2], task="x"), "task"),
    ],
)
def test_bad_inputs_raise_input_error(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_expected_calibration_error():
    from sisa.metrics import expected_calibration_error as ece

    # Hand case: bin [0.9, 0.95) holds 3 correct rows at 0.9 (gap 0.1), bin [0.6, 0.65)
    # one wrong row at 0.6 (gap 0.6): (3 * 0.1 + 0.6) / 4.
    assert ece([1, 1, 0, 0], [0.9, 0.9, 0.1, 0.6]) == pytest.approx(0.225)
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert ece(y, p) < 0.01  # labels drawn from p: calibrated
    assert ece(y, np.where(p > 0.5, 0.99, 0.01)) > 0.2  # overconfident
    with pytest.raises(InputError, match="labels 0 and 1"):
        ece([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="probabilities"):
        ece([0, 1], [0.1, 1.2])
