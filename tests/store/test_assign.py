"""The assignment is a pure function of each row: tested without any I/O."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sisa.errors import InputError
from sisa.store.format.assign import AssignmentConfig, assign, keyed_hash, spread

ids_strategy = st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=300, unique=True)


@given(ids=ids_strategy, S=st.integers(1, 12), R=st.integers(1, 6), seed=st.integers(0, 10**6))
@settings(max_examples=60, deadline=None)
def test_every_row_lands_in_exactly_one_valid_cell(ids, S, R, seed):
    shard, sl, order = assign(AssignmentConfig(S, R, seed), np.array(ids))
    assert shard.shape == sl.shape == order.shape == (len(ids),)
    assert ((shard >= 0) & (shard < S)).all() and ((sl >= 0) & (sl < R)).all()


@given(ids=ids_strategy, data=st.data(), seed=st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_a_rows_place_does_not_depend_on_the_other_rows(ids, data, seed):
    ids = np.array(ids)
    subset = data.draw(st.lists(st.sampled_from(range(len(ids))), unique=True))
    cfg = AssignmentConfig(7, 3, seed)
    full = assign(cfg, ids)
    part = assign(cfg, ids[subset])
    for a, b in zip(full, part, strict=True):
        assert np.array_equal(a[subset], b)


def test_string_ids_and_int_ids_are_both_supported_and_stable():
    cfg = AssignmentConfig(4, 2, 3)
    s1 = assign(cfg, np.array(["alice", "bob", "carol"], dtype=object))
    s2 = assign(cfg, np.array(["carol"], dtype=object))
    assert s1[0][2] == s2[0][0] and s1[1][2] == s2[1][0]
    with pytest.raises(InputError, match="integers or strings"):
        keyed_hash(np.array([0.5, 1.5]), 0, "shard")


def test_seed_changes_the_assignment():
    ids = np.arange(1000)
    a = assign(AssignmentConfig(8, 4, 0), ids)[0]
    b = assign(AssignmentConfig(8, 4, 1), ids)[0]
    assert (a != b).mean() > 0.5


def test_groups_keep_a_users_rows_in_one_shard_and_slice():
    ids = np.arange(600)
    groups = ids % 37
    shard, sl, _ = assign(AssignmentConfig(5, 4, 0), ids, groups=groups)
    for g in range(37):
        assert len(set(shard[groups == g])) == 1 and len(set(sl[groups == g])) == 1


def test_sizes_are_balanced_in_expectation():
    shard, sl, _ = assign(AssignmentConfig(16, 8, 0), np.arange(200_000))
    sizes = np.bincount(shard, minlength=16)
    rep = spread(sizes)
    assert rep["min"] > 0.95 * 12_500 and rep["max"] < 1.05 * 12_500
    assert rep["rel_std"] < 0.02
    assert np.bincount(sl, minlength=8).min() > 0.95 * 25_000


def test_distribution_aware_packs_likely_deletions_into_hot_shards():
    rng = np.random.default_rng(0)
    ids = np.arange(5000)
    p = np.where(rng.random(5000) < 0.05, 0.9, 0.001)
    cfg = AssignmentConfig(10, 2, 0, hot_shards=2, hot_threshold=0.5)
    shard, _, _ = assign(cfg, ids, deletion_prob=p)
    assert (shard[p >= 0.5] < 2).all() and (shard[p < 0.5] >= 2).all()
    # still per row: the subset gets the same shards
    sub = assign(cfg, ids[:100], deletion_prob=p[:100])[0]
    assert np.array_equal(sub, shard[:100])
    with pytest.raises(InputError, match="deletion probability"):
        assign(cfg, ids)


@pytest.mark.parametrize("kw, msg", [
    ({"n_shards": 0, "n_slices": 1}, "n_shards must be an integer >= 1"),
    ({"n_shards": 2, "n_slices": 0}, "n_slices must be an integer >= 1"),
    ({"n_shards": 2, "n_slices": 1, "hot_shards": 2}, "hot_shards must be between"),
    ({"n_shards": 2, "n_slices": 1, "random_state": -1}, "random_state"),
])
def test_bad_configs_are_named(kw, msg):
    with pytest.raises(InputError, match=msg):
        AssignmentConfig(**kw)
