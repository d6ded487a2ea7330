"""Exact in every case: a forget that takes a whole class, and one that shrinks the
index below a bucket boundary, leave what a fresh build/fit of the rest would (issue
12, items 3 and 10)."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.naive_bayes import GaussianNB

from sisa import IngestOptions, SISAClassifier, SISARegressor, Store
from sisa.errors import InputError
from sisa.store.format import index as store_mod
from sisa.store.read.reading import RowReader
from sisa.store.write import deletion
from sisa.unlearn import history, verify
from tests.helpers import LOCAL, make_classification, make_regression


def fit(est, X, y, path, ids=None, cls=SISAClassifier):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(est, n_shards=3, n_slices=3, backend="local", store=str(path)).fit(
            X, y, sample_ids=ids)


def ckpts(model) -> dict[str, str]:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


def dir_digest(path) -> dict[str, str]:
    """Every file's sha256, but ``.lock`` (it records who last took the lock)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("labels", ["int", "str"])
@pytest.mark.parametrize("est", [SGDClassifier(loss="log_loss"), GaussianNB()],
                         ids=["sgd", "naive-bayes"])
def test_forgetting_every_row_of_a_class_equals_a_fresh_fit_without_it(tmp_path, labels, est):
    X, y = make_classification(900, 4, n_classes=3)
    if labels == "str":
        y = np.array(["ant", "bee", "cat"], dtype=object)[y]
    gone = y[0]
    ids = np.arange(900) * 5 + 1
    model = fit(est, X, y, tmp_path / "a", ids)
    assert list(model.store_.manifest.slices["0/0"].labels) == sorted(set(y.tolist()))
    receipt = model.forget(ids[y == gone])
    keep = y != gone
    fresh = fit(est, X[keep], y[keep], tmp_path / "b", ids[keep])
    assert model.classes_.tolist() == fresh.classes_.tolist() == sorted(set(y[keep].tolist()))
    assert model.predict_proba(X).shape == (900, 2)
    assert np.array_equal(model.predict_proba(X), fresh.predict_proba(X))
    assert ckpts(model) == ckpts(fresh) and len(ckpts(model)) == 9  # every checkpoint
    # the receipt says why every shard retrained from its first slice
    assert receipt["classes_changed"] == {"removed": [gone]}
    assert "every shard retrains" in receipt["reason"]
    assert receipt["affected"] == [[s, 0] for s in range(3)]
    assert history(model.store_)[-1]["classes_changed"] == {"removed": [gone]}
    assert verify(model.store_, settings=LOCAL).ok
    # a later ordinary forget is incremental again
    assert model.forget([ids[keep][0]]).get("classes_changed") is None


def test_a_forget_leaving_one_class_is_refused_and_changes_nothing(tmp_path):
    X, y = make_classification(600, 4, n_classes=2)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    before = dir_digest(tmp_path / "a")
    for attempt in (lambda: model.forget(np.flatnonzero(y == 1)),
                    lambda: model.store_.delete(np.flatnonzero(y == 0))):
        with pytest.raises(InputError, match=r"leave 1 class .*needs at least two.*nothing was"):
            attempt()
    assert dir_digest(tmp_path / "a") == before
    assert model.predict(X).shape == (600,)


def test_verify_derives_the_classes_from_the_data(tmp_path, monkeypatch):
    """The old forget kept the vanished class and verify passed, retraining with the
    stored class list; verify now compares it with the classes the rows hold."""
    X, y = make_classification(600, 4, n_classes=3)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    with monkeypatch.context() as m:  # the old behaviour: the class list never changes
        m.setattr(deletion, "_classes_after", lambda store, kept: (None, []))
        model.forget(np.flatnonzero(y == 2))
    assert model.classes_.tolist() == [0, 1, 2]
    rep = verify(model.store_, settings=LOCAL)
    assert any("model's classes [0, 1, 2] are not the classes of the data [0, 1]" in p
               for p in rep.problems), rep.problems


def test_verify_checks_each_slice_label_list_against_its_rows(tmp_path):
    X, y = make_classification(600, 4, n_classes=3)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    st_ = model.store_
    new = st_.manifest.flat()
    new["slices"]["1/2"]["labels"] = [0, 1]  # hides class 2 from the union
    with st_.lock():
        st_.commit(new)
    rep = verify(st_, retrain=False)
    assert [p for p in rep.shards[1].problems if "slice 2: the manifest's label list" in p]


def test_regression_targets_change_nothing_global(tmp_path):
    X, y = make_regression(600, 4)
    model = fit(SGDRegressor(), X, y, tmp_path / "a", cls=SISARegressor)
    assert model.store_.manifest.slices["0/0"].labels is None  # float: not recorded
    r = model.forget([1, 2, 3])
    assert "classes_changed" not in r and model.store_.manifest["model"]["classes"] is None
    assert verify(model.store_, settings=LOCAL).ok


def test_the_class_set_comes_from_the_manifest_without_reading_slices(tmp_path, monkeypatch):
    X, y = make_classification(600, 4, n_classes=3)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=3, n_slices=2))

    def no_reads(*a, **k):
        raise AssertionError("read a slice")

    monkeypatch.setattr(RowReader, "read_slice_table", no_reads)
    assert st_.rows.classes() == [0, 1, 2]


def index_and_data(path) -> dict[str, str]:
    """Every data and index file on disk (path -> sha256)."""
    return {k: v for k, v in dir_digest(path).items() if k.startswith(("data/", "index/"))}


def test_a_delete_across_an_index_bucket_boundary_leaves_a_fresh_builds_files(tmp_path):
    """65,537 rows need 2 index buckets, 65,536 need 1: a delete that crosses the
    boundary re-buckets the index and the tombstones, as a fresh build would have them."""
    n = store_mod.INDEX_BUCKET_ROWS + 3
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 2, n)
    ids = rng.permutation(10 * n)[:n]
    full = Store.create(tmp_path / "full", X, y, options=IngestOptions(n_shards=2, n_slices=2),
                        sample_ids=ids)
    assert full.rows.index_buckets == 2
    first, second = ids[[5, 70]].tolist(), ids[[9, 600]].tolist()
    full.delete(first)  # 65,537 rows left: still 2 buckets, tombstones in 2 buckets
    assert full.rows.index_buckets == 2
    full.delete(second)  # 65,535: one bucket, a fresh build's layout
    assert full.rows.index_buckets == 1
    keep = ~np.isin(ids, first + second)
    fresh = Store.create(tmp_path / "fresh", X[keep], y[keep],
                         options=IngestOptions(n_shards=2, n_slices=2), sample_ids=ids[keep])
    assert index_and_data(tmp_path / "full") == index_and_data(tmp_path / "fresh")
    assert full.manifest.index_parts == fresh.manifest.index_parts
    # the tombstones moved to the new bucket count and still recognise every deleted id
    assert set(full.manifest.tombstone_parts) == {"0"}
    assert full.manifest.n_tombstones == 4
    assert sorted(full.delete(first + second).already_deleted) == sorted(first + second)
    rep = verify(full, retrain=False)
    assert rep.problems == ["the store holds no trained model"] and rep.deleted_ids_checked == 4


def test_float_labels_of_a_classifier_are_read_from_the_data(tmp_path):
    """Float labels record no per-slice list; a classifier on them still loses the class."""
    X, y = make_classification(600, 4, n_classes=3)
    y = y.astype(np.float64)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    assert model.store_.manifest.slices["0/0"].labels is None
    r = model.forget(np.flatnonzero(y == 1.0))
    keep = y != 1.0
    fresh = fit(SGDClassifier(loss="log_loss"), X[keep], y[keep], tmp_path / "b",
                np.flatnonzero(keep))
    assert r["classes_changed"] == {"removed": [1.0]} and model.classes_.tolist() == [0.0, 2.0]
    assert ckpts(model) == ckpts(fresh)


CRASH = """
import sys
from sisa import Store
from sisa.engine import ExecutionSettings
from sisa.unlearn import forget

forget(Store.open(sys.argv[1]), [int(v) for v in sys.argv[2].split(",")],
       settings=ExecutionSettings(backend="local"))
"""


# before the commit (repair reruns the request from its intent) and after it (repair
# finishes the journaled retrain with the new class list)
@pytest.mark.parametrize("point", ["delete:after-slices", "train:after-shards"])
def test_a_class_removing_forget_killed_at_any_point_is_repaired_exactly(tmp_path, point):
    import os
    import subprocess
    import sys

    from sisa.unlearn import repair

    X, y = make_classification(600, 4, n_classes=3)
    U = np.flatnonzero(y == 2)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    env = {**os.environ, "SISA_CRASH_AT": point, "SISA_CRASH_MODE": "kill"}
    proc = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "a"),
                           ",".join(map(str, U))], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    repair(Store.open(tmp_path / "a", check_files=False), settings=LOCAL)
    model.refresh()
    keep = y != 2
    fresh = fit(SGDClassifier(loss="log_loss"), X[keep], y[keep], tmp_path / "b",
                np.flatnonzero(keep))
    assert model.classes_.tolist() == [0, 1] and ckpts(model) == ckpts(fresh)
    assert history(model.store_)[-1]["classes_changed"] == {"removed": [2]}
    assert verify(model.store_, settings=LOCAL).ok


@given(data=st.data())
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_deletes_across_any_bucket_count_leave_a_fresh_builds_index(tmp_path_factory, data):
    """With 16 ids per bucket, random stores and deletes cross several bucket counts."""
    n = data.draw(st.integers(20, 300))
    ids = np.array(data.draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n,
                                      unique=True)))
    batches = data.draw(st.lists(st.lists(st.sampled_from(ids.tolist()), unique=True,
                                          min_size=1, max_size=n // 3), max_size=3))
    rng = np.random.default_rng(n)
    X, y = rng.normal(size=(n, 2)).astype(np.float32), rng.integers(0, 3, n)
    root = tmp_path_factory.mktemp("buckets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_mod, "INDEX_BUCKET_ROWS", 16)
        full = Store.create(root / "full", X, y, options=IngestOptions(n_shards=2, n_slices=2),
                            sample_ids=ids)
        gone: set = set()
        for batch in batches:
            full.delete(batch)
            gone |= set(batch)
        keep = ~np.isin(ids, list(gone))
        if keep.sum() < 4:
            return
        fresh = Store.create(root / "fresh", X[keep], y[keep],
                             options=IngestOptions(n_shards=2, n_slices=2), sample_ids=ids[keep])
        assert full.manifest.index_parts == fresh.manifest.index_parts
        assert index_and_data(root / "full") == index_and_data(root / "fresh")
        tombs = full.manifest["tombstones"]
        assert (tombs or {"rows": 0})["rows"] == len(gone)
        if gone:
            assert sorted(full.delete(sorted(gone)).already_deleted) == sorted(gone)
