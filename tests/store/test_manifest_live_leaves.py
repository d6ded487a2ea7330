"""A manifest edit keeps exactly the leaves its root names: an edit of a few slots drops
the leaves it replaced and keeps every other one, without looking through all of them
again, and the state committed is the one a fresh load reads back."""

from __future__ import annotations

from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier
from sisa.store.manifest import RetrainPlan
from sisa.store.store import Store
from tests.helpers import make_classification


def _live(m) -> set[str]:
    return {r.sha256 for r in m._leaf_refs()}


def _check(m) -> None:
    assert set(m._leaves) == _live(m)
    assert set(m._unwritten) <= _live(m)


def test_edits_keep_exactly_the_live_leaves(tmp_path):
    X, y = make_classification(3000, 4)
    model = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=4,
                           n_slices=2, store=str(tmp_path / "s"), backend="local",
                           random_state=0).fit(X, y)
    store = model.store_
    for ids in ([1], [2, 700], list(range(10, 40))):
        model.forget(ids)
        m = store.manifest
        _check(m)
        assert not m._unwritten
        disk = Store.open(str(tmp_path / "s")).manifest
        assert dict(disk) == dict(m) and set(disk._leaves) == set(m._leaves)
    m = store.manifest
    # dropping checkpoints replaces two shard leaves and keeps the other two
    edited = m.without_checkpoints(RetrainPlan({0: 1, 3: 0}))
    _check(edited)
    assert len(set(edited._leaves) - set(m._leaves)) == 2
    assert len(set(m._leaves) - set(edited._leaves)) == 2
    assert len(edited._unwritten) == 2
    # an edit that writes back a leaf's own content keeps it, once
    same = edited.with_checkpoints(
        [m.checkpoint(0, 1)])._with(leaves={("shards", 1): edited._shard_edit(1)})
    _check(same)
    assert same["shards"][1] == m["shards"][1]
