"""Refit models (no ``partial_fit``): only the served checkpoint (slice R-1) is trained and
stored, with the bytes the per-slice schedule gave it; forget refits each affected shard
once; stores written with a checkpoint per slice still load, serve, verify and forget."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import config_context
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from sisa import SISAClassifier, Store
from sisa.engine import checkpoints as ck
from sisa.engine.schedule import Schedule, derive_seed
from sisa.engine.train import schedule_of
from sisa.store.format.layout import checkpoint_dir
from sisa.store.io.fs import sha256_bytes
from sisa.store.manifest import CheckpointFile, RetrainPlan
from sisa.unlearn import repair, verify
from tests.helpers import LOCAL, make_classification

S, R = 3, 4
REFIT = {"tree": lambda: DecisionTreeClassifier(max_depth=5),
         "hgb": lambda: HistGradientBoostingClassifier(max_iter=5, max_leaf_nodes=7)}


def ckpts(model) -> dict[str, str]:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


def fit(est, X, y, path, ids=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SISAClassifier(est, n_shards=S, n_slices=R, store=str(path), backend="local",
                              **kw).fit(X, y, sample_ids=ids)


def per_slice_fit(store: Store, shard: int, sl: int) -> bytes:
    """What the per-slice schedule checkpointed at ``sl``: a fresh clone, seeded for
    ``sl``, fit on slices 0..sl (the reference for the served checkpoint's bytes)."""
    data = store.rows.read_slices(shard, range(sl + 1))
    est = clone(ck.prototype(store))
    est.set_params(random_state=derive_seed(store.random_state, shard, sl))
    # one BLAS/OpenMP thread, as training runs (HGB records its thread count)
    with threadpool_limits(limits=1), \
            config_context(assume_finite=True, skip_parameter_validation=True):
        return ck.dumps(est.fit(data.X, data.y) if len(data) else None)


@pytest.mark.parametrize("name", list(REFIT))
def test_a_refit_model_stores_only_its_served_checkpoints_with_the_old_bytes(tmp_path, name):
    X, y = make_classification(1200, 6, n_classes=3)
    model = fit(REFIT[name](), X, y, tmp_path / "a")
    store = model.store_
    assert sorted(ckpts(model)) == [f"{s}/{R - 1}" for s in range(S)]
    for s in range(S):
        assert ckpts(model)[f"{s}/{R - 1}"] == sha256_bytes(per_slice_fit(store, s, R - 1))
    assert store.manifest.pending_plan() == {}
    assert model.score(X, y) > 0.6
    rep = verify(store, settings=LOCAL)
    assert rep.ok, rep.table()


@pytest.mark.parametrize("name", list(REFIT))
def test_forget_refits_each_affected_shard_once_byte_identical_to_a_fresh_fit(tmp_path, name):
    X, y = make_classification(1500, 6, n_classes=3)
    ids = np.arange(1500) * 7 + 3
    U = ids[[5, 400, 401, 999]]
    model = fit(REFIT[name](), X, y, tmp_path / "a", ids)
    before = ckpts(model)
    receipt = model.forget(U)
    keep = ~np.isin(ids, U)
    fresh = fit(REFIT[name](), X[keep], y[keep], tmp_path / "b", ids[keep])
    assert ckpts(model) == ckpts(fresh)
    assert np.array_equal(model.predict_proba(X), fresh.predict_proba(X))
    affected = sorted({s for s, _ in receipt["affected"]})
    store = model.store_
    # one fit per affected shard, on all its rows; a full retrain is one fit per shard
    assert receipt["rows_retrained"] == sum(store.shard_rows(s) for s in affected)
    assert receipt["rows_full_retrain"] == store.n_rows == 1500 - len(U)
    for s in range(S):
        k = f"{s}/{R - 1}"
        assert (before[k] == ckpts(model)[k]) == (s not in affected)
    rep = verify(store, settings=LOCAL)
    assert rep.ok, rep.table()


def test_the_schedule_steps_only_the_last_slice_of_a_refit_model():
    refit = Schedule("streaming", 5, R, incremental=False)
    inc = Schedule("streaming", 5, R, incremental=True)
    assert list(refit.steps()) == list(refit.steps(2)) == [R - 1]
    assert list(inc.steps(2)) == [2, 3]
    assert refit.resume_from(2) is None and inc.resume_from(2) == 1 and inc.resume_from(0) is None
    assert refit.rows([10, 20, 30, 40]) == refit.rows([10, 20, 30, 40], start=3) == 100
    cum = Schedule("cumulative", 5, R, incremental=True)
    assert cum.rows([10, 20, 30, 40], start=2) == 2 * (60 + 100)


def test_the_warning_says_slicing_saves_refit_models_nothing(tmp_path):
    X, y = make_classification(600, 4)
    with pytest.warns(UserWarning, match=r"no partial_fit.*n_slices=1 costs the same"):
        SISAClassifier(DecisionTreeClassifier(max_depth=3), n_shards=2, n_slices=3,
                       backend="local").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SISAClassifier(SGDClassifier(), n_shards=2, n_slices=3, backend="local").fit(X, y)


def test_a_refit_shard_without_its_checkpoint_is_pending_from_slice_0_and_repaired(tmp_path):
    X, y = make_classification(900, 5)
    model = fit(DecisionTreeClassifier(max_depth=4), X, y, tmp_path / "a")
    store, want = model.store_, ckpts(model)
    with store.lock():
        store.commit(store.manifest.without_checkpoints(RetrainPlan({1: R - 1})))
    assert store.manifest.pending_plan() == {1: 0}
    summary = repair(store, settings=LOCAL)
    assert summary["retrained_shards"] == [1]
    assert ckpts(model) == want


def _add_old_intermediate_checkpoints(store: Store) -> None:
    """What an older sisa stored for a refit model: a checkpoint at every slice."""
    metas = []
    for s in range(S):
        for r in range(R - 1):
            blob = store.put_blob(checkpoint_dir(s, r), ".pkl", per_slice_fit(store, s, r))
            metas.append(CheckpointFile.of(blob, shard=s, slice=r, rows=store.slice_rows(s, r),
                                           lineage=ck.lineage(store, s, r)))
    with store.lock():
        store.commit(store.manifest.with_checkpoints(metas))


def test_a_store_with_a_checkpoint_per_slice_still_serves_verifies_and_forgets(tmp_path):
    X, y = make_classification(1500, 6, n_classes=3)
    ids = np.arange(1500)
    model = fit(DecisionTreeClassifier(max_depth=5), X, y, tmp_path / "a", ids)
    served = ckpts(model)
    proba = model.predict_proba(X)
    _add_old_intermediate_checkpoints(model.store_)
    old = SISAClassifier.load(str(tmp_path / "a"))
    assert len(old.store_.manifest.checkpoints) == S * R
    assert schedule_of(old.store_).incremental is False
    assert np.array_equal(old.predict_proba(X), proba)
    rep = verify(old.store_, settings=LOCAL)
    assert rep.ok, rep.table()
    # forget a row of shard 0's slice 2: that shard's checkpoints from slice 2 go, slice 3
    # is refit once; its slices 0 and 1 (untouched rows) and the other shards stay
    _, shard, sl = old.store_.rows.locate(ids)
    row = next(i for i in ids if shard[i] == 0 and sl[i] == 2)
    receipt = old.forget([int(row)])
    assert receipt["affected"] == [[0, 2]]
    assert receipt["rows_retrained"] == old.store_.shard_rows(0)
    left = ckpts(old)
    assert "0/2" not in left and {"0/0", "0/1", "0/3"} <= set(left)
    assert all(left[k] == served[k] for k in served if not k.startswith("0/"))
    fresh = fit(DecisionTreeClassifier(max_depth=5), np.delete(X, row, 0), np.delete(y, row),
                tmp_path / "b", np.delete(ids, row))
    assert {k: v for k, v in left.items() if k.endswith(f"/{R - 1}")} == ckpts(fresh)
    rep = verify(old.store_, settings=LOCAL)
    assert rep.ok, rep.table()
