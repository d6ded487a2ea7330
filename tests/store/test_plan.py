"""RetrainPlan on its own: shard -> first slice to retrain, immutable."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sisa.store.manifest import RetrainPlan

cells = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20)), max_size=40)


@given(cells)
def test_of_keeps_each_shards_earliest_slice(pairs):
    plan = RetrainPlan.of(pairs)
    want: dict[int, int] = {}
    for s, r in pairs:
        want[s] = min(want.get(s, r), r)
    assert plan == want and dict(plan) == want and len(plan) == len(want)
    assert list(plan) == sorted(want)  # shard order, whatever order the cells came in
    assert plan.pairs() == sorted([s, r] for s, r in want.items())


@given(cells, st.integers(0, 50), st.integers(0, 20))
def test_covers_exactly_the_stale_checkpoints(pairs, shard, sl):
    plan = RetrainPlan.of(pairs)
    assert plan.covers(shard, sl) == (shard in plan and sl >= plan[shard])


@given(cells, st.integers(0, 50), st.integers(0, 20))
def test_with_cell_returns_a_new_plan_and_leaves_the_old_one(pairs, shard, sl):
    plan = RetrainPlan.of(pairs)
    before = dict(plan)
    new = plan.with_cell(shard, sl)
    assert dict(plan) == before
    assert new == RetrainPlan.of([*pairs, (shard, sl)])


def test_a_plan_cannot_be_changed_in_place():
    plan = RetrainPlan({1: 2})
    with pytest.raises(TypeError):
        plan[3] = 0  # type: ignore[index]
    with pytest.raises(TypeError):
        del plan[1]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        plan.first[3] = 0  # type: ignore[index]  # a read-only view, not the dict given
    with pytest.raises(AttributeError):
        plan.first = {}  # type: ignore[misc]  # a frozen dataclass
    for name in ("add", "update", "pop", "setdefault", "clear", "popitem"):
        assert not hasattr(plan, name), name
    given_map = {1: 2}
    plan = RetrainPlan(given_map)
    given_map[1] = 0  # the caller's dict is copied, not kept
    assert plan == {1: 2}


def test_everything_empty_and_numpy_keys():
    assert RetrainPlan.everything(3) == {0: 0, 1: 0, 2: 0}
    assert RetrainPlan() == {} and not RetrainPlan() and RetrainPlan.everything(0) == {}
    plan = RetrainPlan({np.int64(2): np.int32(1)})
    assert plan == {2: 1} and all(type(k) is int and type(v) is int for k, v in plan.items())
    assert plan != {2: 0} and plan != RetrainPlan({3: 1}) and plan == RetrainPlan.of([(2, 1)])
    assert repr(plan) == "RetrainPlan({2: 1})"


@given(cells)
def test_a_plan_pickles_and_copies(pairs):
    plan = RetrainPlan.of(pairs)
    for other in (pickle.loads(pickle.dumps(plan)), copy.deepcopy(plan), copy.copy(plan)):
        assert isinstance(other, RetrainPlan) and other == plan and dict(other) == dict(plan)
