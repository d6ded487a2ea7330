"""Tests for the ε estimator (NeurIPS 2023 unlearning-challenge ε), its scores and intervals:
sisa.compare.stats.epsilon, .scores and .intervals, through the package's public names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sisa import compare as E
from sisa.compare.stats import epsilon
from sisa.errors import InputError

# -- a direct numpy port of the challenge's metric.py (grid thresholds, one row at a time) -----


def _challenge_row(pos, neg, delta=1e-5, cap=50.0):
    pos_diff, neg_diff = np.ptp(pos), np.ptp(neg)
    largest, smallest = max(pos_diff, neg_diff), min(pos_diff, neg_diff)
    if smallest / largest < 0.01:
        return cap
    p, n = (neg, pos) if pos_diff >= neg_diff else (pos, neg)
    width, buf = smallest, 2.0
    lo, hi = p.min() + width - buf, p.max() + buf
    right = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
    n_left = int(np.ceil(2 * buf * 100))
    left = np.concatenate([np.linspace(t - width - buf, t - width + buf, n_left) for t in right])
    rr = np.repeat(right, n_left)
    tpr_d = ((left <= p[:, None]) & (p[:, None] <= rr)).mean(0)
    fpr_d = ((left <= n[:, None]) & (n[:, None] <= rr)).mean(0)
    pooled = np.concatenate([pos, neg])
    thr = np.linspace(pooled.min(), pooled.max(), int(np.ceil(np.ptp(pooled) * 100)))
    tpr = np.concatenate([tpr_d, (pos[:, None] >= thr).mean(0)])
    fpr = np.concatenate([fpr_d, (neg[:, None] >= thr).mean(0)])
    fnr = 1 - tpr
    eps = np.zeros_like(tpr)
    eps[(fpr + fnr == 0)] = np.inf
    eps[(eps == 0) & (fpr * fnr == 0)] = np.nan
    with np.errstate(all="ignore"):
        terms = [np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)]
        val = np.clip(np.fmax(*terms), 0, None)
    eps = np.where(eps == 0, val, eps)
    return float(np.clip(np.nanmax(eps), 0, cap))


def _challenge_eps(unlearned, retrained):
    ret_pos = np.median(retrained, 0) > np.median(unlearned, 0)
    pos = np.where(ret_pos, retrained, unlearned)
    neg = np.where(ret_pos, unlearned, retrained)
    return np.array([_challenge_row(pos[:, i], neg[:, i]) for i in range(pos.shape[1])])


# -- statistics ---------------------------------------------------------------------------------


def test_logit_confidence_values_and_shapes():
    proba = np.array([[[0.9, 0.05, 0.05], [0.2, 0.3, 0.5]], [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    y = np.array([0, 2])
    conf = E.logit_confidence(proba, y)
    assert conf.shape == (2, 2)
    assert conf[0, 0] == pytest.approx(math.log(0.9 / 0.1))
    assert conf[0, 1] == pytest.approx(0.0)
    # p_y = 1: finite thanks to the 1e-45 floor, log(1) - log(1e-45).
    assert conf[1, 0] == pytest.approx(-math.log(1e-45))
    # No cancellation for confident models: wrong mass 1e-20 is kept.
    c = E.logit_confidence(np.array([[1 - 1e-20, 1e-20]]), np.array([0]))
    assert c[0] == pytest.approx(math.log(1e20), rel=1e-6)


def test_logit_confidence_from_logits_matches_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4)) * 5
    y = rng.integers(0, 4, size=5)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(
        E.logit_confidence(logits, y, logits=True), E.logit_confidence(p, y), rtol=1e-10
    )


def test_residual():
    r = E.residual(np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([1.5, 1.0]))
    np.testing.assert_array_equal(r, [[0.5, -1.0], [-1.5, 1.0]])


# -- per-example ε ------------------------------------------------------------------------------


def test_identical_samples_give_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 50))
    np.testing.assert_array_equal(E.per_example_epsilon(a, a.copy()), 0.0)
    # Also with ties and unequal model counts (the reference is the same sample twice).
    q = np.round(a, 1)
    np.testing.assert_array_equal(E.per_example_epsilon(q, np.concatenate([q, q])), 0.0)


def test_same_distribution_gives_small_epsilon():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(64, 300)), rng.normal(size=(64, 300))
    eps = E.per_example_epsilon(a, b)
    assert np.median(eps) < 0.5 * math.log(63)
    assert eps.max() < E.max_epsilon(64)  # no row looks perfectly separable
    assert E.forgetting_quality(eps, 64) > 0.1


def test_separated_distributions_hit_the_cap():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(64, 40)), rng.normal(size=(64, 40)) + 20
    np.testing.assert_array_equal(E.per_example_epsilon(a, b), E.max_epsilon(64))
    np.testing.assert_array_equal(E.per_example_epsilon(b, a, eps_max=50), 50.0)
    assert E.forgetting_quality(E.per_example_epsilon(a, b), 64) == 0.0


def test_moderate_shift_is_intermediate_and_monotone():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(64, 200))
    medians = []
    for shift in (0.0, 0.75, 1.5, 3.0):
        b = rng.normal(size=(64, 200)) + shift
        medians.append(np.median(E.per_example_epsilon(a, b)))
    assert medians == sorted(medians)
    assert 0.5 < medians[2] < E.max_epsilon(64) - 0.5  # 1.5 sd apart: neither 0 nor the cap
    assert medians[3] - medians[0] > 1.5


def test_matches_challenge_reference_on_lattice_data():
    # Values on a 0.05 lattice: the challenge's 0.01 grid then hits every gap, so its
    # grid sweep and our exact sweep see the same rules and must agree exactly.
    rng = np.random.default_rng(4)
    a = np.round(rng.normal(size=(24, 10)) / 0.05) * 0.05
    scale = rng.uniform(0.5, 2.0, size=10)
    b = np.round((rng.normal(size=(24, 10)) * scale + 0.6) / 0.05) * 0.05
    ours = E.per_example_epsilon(a, b, eps_max=50, scale="absolute", double_cuts=None)
    np.testing.assert_allclose(ours, _challenge_eps(a, b), atol=1e-9)
    assert ours.max() > 0.5  # the comparison is not vacuous


def test_never_below_challenge_reference_on_continuous_data():
    # On fine-scale data the grid can miss gaps narrower than 0.01; the exact sweep
    # sees a superset of the grid's rules.
    rng = np.random.default_rng(5)
    a = rng.normal(size=(24, 8)) * 0.3
    b = rng.normal(size=(24, 8)) * 0.3 + 0.2
    ours = E.per_example_epsilon(a, b, eps_max=50, scale="absolute", double_cuts=None)
    ref = _challenge_eps(a, b)
    assert (ours >= ref - 1e-9).all()
    assert np.abs(ours - ref).mean() < 0.1


def test_peaky_and_constant_rules():
    rng = np.random.default_rng(6)
    wide = rng.normal(size=(32, 3))
    narrow = wide.mean(0) + 1e-4 * rng.normal(size=(32, 3))  # range under 1% of the other
    np.testing.assert_array_equal(E.per_example_epsilon(narrow, wide), E.max_epsilon(32))
    const = np.ones((16, 2))
    np.testing.assert_array_equal(E.per_example_epsilon(const, const), 0.0)
    np.testing.assert_array_equal(E.per_example_epsilon(const, const + 1), E.max_epsilon(16))


def test_single_threshold_only_and_hand_case():
    # 4 vs 4 models; pos = {3,4,5,6}, neg = {0,1,2,3.5}. Best single cut at 3: fpr=1/4, fnr=0
    # (discarded); cut at 3.5: fpr=1/4, fnr=1/4 -> log(0.75/0.25) = log 3;
    # cut at 4: fpr=0 (discarded). Cut at 2: fpr=1/2, fnr=0 discarded. So ε = log(3 - 4δ).
    neg = np.array([[0.0], [1.0], [2.0], [3.5]])
    pos = np.array([[3.0], [4.0], [5.0], [6.0]])
    eps = E.per_example_epsilon(neg, pos, eps_max=50, double_threshold=False)
    assert eps[0] == pytest.approx(math.log((0.75 - 1e-5) / 0.25))
    assert E.per_example_epsilon(neg, pos, eps_max=50)[0] >= eps[0]


def test_unequal_model_counts_and_chunking(monkeypatch):
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(20, 30)), rng.normal(size=(35, 30)) + 0.5
    whole = E.per_example_epsilon(a, b)
    monkeypatch.setattr(epsilon, "_PAIR_BUDGET", 1)  # one row per chunk
    np.testing.assert_array_equal(E.per_example_epsilon(a, b), whole)
    assert E.max_epsilon(35) == 4.0
    assert whole.max() <= 4.0


def test_max_epsilon():
    assert E.max_epsilon(512) == 7.0
    assert E.max_epsilon(64) == 5.0
    assert E.max_epsilon(3) == 1.0


def test_challenge_port_on_a_fixed_example():
    # A fixed 6 x 6 example worked through the challenge's metric.py (the port above): the
    # single threshold at 0.45 leaves 1 of 6 negatives above and 1 of 6 positives below,
    # log((1 - δ - 1/6) / (1/6)) = log(5 - 6δ), and no interval rule does better.
    neg = np.array([[0.0], [0.1], [0.2], [0.3], [0.4], [0.5]])
    pos = np.array([[0.4], [0.5], [0.6], [0.7], [0.8], [0.9]])
    ref = _challenge_eps(neg, pos)
    ours = E.per_example_epsilon(neg, pos, eps_max=50, scale="absolute", double_cuts=None)
    assert ref[0] == pytest.approx(math.log((1 - 1e-5 - 1 / 6) / (1 / 6)))
    np.testing.assert_allclose(ours, ref, atol=1e-12)


# -- scale, power, intervals --------------------------------------------------------------------


def test_relative_floor_is_the_same_at_any_scale_and_absolute_is_not():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(64, 150)), rng.normal(size=(64, 150))
    rel = [E.per_example_epsilon(a * s, b * s).mean() for s in (0.01, 1.0, 100.0)]
    assert rel[0] == pytest.approx(rel[1]) and rel[2] == pytest.approx(rel[1])
    absolute = [E.per_example_epsilon(a * s, b * s, scale="absolute").mean()
                for s in (0.01, 1.0, 100.0)]
    assert absolute[0] - absolute[2] > 0.1  # the challenge's window: the floor moves

    # Independent draws at each spread: every floor inside the others' intervals.
    cis = []
    for s in (0.01, 1.0, 100.0):
        x, y = rng.normal(size=(64, 150)) * s, rng.normal(size=(64, 150)) * s
        cis.append(E.epsilon_interval(x, y, n_boot=30, random_state=1))
    for c in cis:
        assert all(o["lo"] <= c["eps"] <= o["hi"] for o in cis)


def test_known_shift_is_detected_and_no_shift_is_not():
    rng = np.random.default_rng(12)
    ref, ref2 = rng.normal(size=(128, 40)), rng.normal(size=(128, 40))
    floor = E.epsilon_interval(ref, ref2, n_boot=40)
    shifted = E.epsilon_interval(rng.normal(size=(128, 40)) + 0.75, ref, n_boot=40)
    assert shifted["lo"] > floor["hi"]
    assert E.permutation_pvalue(rng.normal(size=(128, 40)) + 0.75, ref, n_perm=19) == 0.05
    assert E.permutation_pvalue(rng.normal(size=(128, 40)), ref, n_perm=19) > 0.05
    assert floor["lo"] <= floor["eps"] <= floor["hi"]


def test_fewer_double_cuts_never_exceed_every_cut():
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(48, 30)), rng.normal(size=(48, 30)) * 1.5 + 0.3
    full = E.per_example_epsilon(a, b, double_cuts=None)
    for k in (4, 16, 96):
        assert (E.per_example_epsilon(a, b, double_cuts=k) <= full + 1e-12).all()
    np.testing.assert_array_equal(E.per_example_epsilon(a, b, double_cuts=96), full)


def test_detectable_shift_reports_a_monotone_curve():
    out = E.detectable_shift(64, 30, shifts=(0.0, 0.5, 2.0), n_boot=10)
    eps = [row[1] for row in out["curve"]]
    assert eps == sorted(eps)
    assert out["smallest"] in (0.5, 2.0)


def test_final_score_is_the_challenges_product():
    assert E.final_score(0.5, 0.8, 0.8, 0.81, 0.9) == pytest.approx(0.45)
    assert E.final_score(1.0, 0.9, 0.9, 0.9, 0.9) == 1.0


# -- scores -------------------------------------------------------------------------------------


def test_forgetting_quality_hand_values():
    # N=64 -> max ε 5: buckets [0,.5)=1, [.5,1)=1/2, [1,1.5)=1/4, ..., [4.5,5)=2^-9, >=5 -> 0.
    assert E.forgetting_quality(np.array([0.0]), 64) == 1.0
    assert E.forgetting_quality(np.array([0.49999]), 64) == 1.0
    assert E.forgetting_quality(np.array([0.5]), 64) == 0.5
    assert E.forgetting_quality(np.array([1.2]), 64) == 0.25
    assert E.forgetting_quality(np.array([4.9]), 64) == 2.0**-9
    assert E.forgetting_quality(np.array([5.0]), 64) == 0.0
    assert E.forgetting_quality(np.array([np.inf]), 64) == 0.0
    assert E.forgetting_quality(np.array([0.0, 0.7, 1.2, 9.0]), 64) == pytest.approx(1.75 / 4)
    # N=512 (challenge): max ε 7, the last bucket [6.5, 7) scores 2^-13.
    assert E.forgetting_quality(np.array([6.7]), 512) == 2.0**-13
    assert E.forgetting_quality(np.array([7.0]), 512) == 0.0


def test_summarize():
    s = E.summarize(np.array([0.0, 0.0, 0.3, 1.1, 5.0]))
    assert s["n"] == 5
    assert s["median"] == pytest.approx(0.3)
    assert s["max"] == 5.0
    assert s["n_zero"] == 2
    assert s["bin_edges"][0] == 0.0 and s["bin_edges"][-1] == 5.0
    assert len(s["counts"]) == 10
    assert s["counts"][0] == 3 and s["counts"][2] == 1 and s["counts"][-1] == 1
    assert sum(s["counts"]) == 5
    assert E.summarize(np.zeros(3))["counts"] == [3]


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: E.per_example_epsilon(np.zeros(5), np.zeros((3, 5))),
        lambda: E.per_example_epsilon(np.zeros((1, 5)), np.zeros((3, 5))),
        lambda: E.per_example_epsilon(np.zeros((3, 5)), np.zeros((3, 4))),
        lambda: E.per_example_epsilon(np.full((3, 2), np.nan), np.zeros((3, 2))),
        lambda: E.per_example_epsilon(np.zeros((3, 2)), np.zeros((3, 2)), delta=0),
        lambda: E.per_example_epsilon(np.zeros((3, 2)), np.zeros((3, 2)), delta=1.0),
        lambda: E.per_example_epsilon(np.zeros((3, 2)), np.zeros((3, 2)), eps_max=0),
        lambda: E.logit_confidence(np.ones((2, 3)) / 3, np.array([0, 3])),
        lambda: E.logit_confidence(np.ones((2, 3)) / 3, np.array([0.0, 1.0])),
        lambda: E.logit_confidence(np.ones((2, 3)) / 3, np.array([0, 1, 2])),
        lambda: E.logit_confidence(np.ones((2, 1)), np.array([0, 0])),
        lambda: E.logit_confidence(-np.ones((2, 3)), np.array([0, 0])),
        lambda: E.residual(np.zeros((2, 3)), np.zeros(4)),
        lambda: E.forgetting_quality(np.array([np.nan]), 64),
        lambda: E.forgetting_quality(np.array([-0.1]), 64),
        lambda: E.forgetting_quality(np.array([]), 64),
        lambda: E.forgetting_quality(np.array([0.1]), 1),
        lambda: E.summarize(np.array([0.1]), bin_width=0),
        lambda: E.max_epsilon(1),
        lambda: E.per_example_epsilon(np.zeros((3, 2)), np.zeros((3, 2)), scale="log"),
        lambda: E.per_example_epsilon(np.zeros((3, 2)), np.zeros((3, 2)), double_cuts=1),
        lambda: E.epsilon_interval(np.zeros((3, 2)), np.zeros((3, 2)), n_boot=0),
        lambda: E.epsilon_interval(np.zeros((3, 2)), np.zeros((3, 2)), level=1.0),
        lambda: E.permutation_pvalue(np.zeros((3, 2)), np.zeros((3, 2)), n_perm=0),
        lambda: E.final_score(0.5, 0.8, 0.0, 0.8, 0.8),
    ],
)
def test_invalid_inputs_raise(call):
    with pytest.raises(InputError):
        call()
