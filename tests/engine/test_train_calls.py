"""What a shard task asks of scikit-learn and of the store: ``classes`` on the first
``partial_fit`` call only, each slice read once (the cumulative schedule included), and
the same checkpoints as before either way."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier
from sisa.engine import checkpoints as ck
from sisa.engine import safe_pickle
from sisa.engine.schedule import Schedule, derive_seed
from sisa.store.read.reading import RowReader
from tests.helpers import make_classification

CALLS: list[bool] = []


class Recording(SGDClassifier):
    """SGDClassifier that records whether each partial_fit call got ``classes``."""

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        CALLS.append(classes is not None)
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)


def test_classes_go_to_the_first_partial_fit_call_only():
    X, y = make_classification(300, 4, n_classes=3)
    sched = Schedule("streaming", 3, 2, incremental=True)
    CALLS.clear()
    model = sched.step(None, Recording(), X, y, [0, 1, 2], 0, 0, 0)
    model = sched.step(model, Recording(), X, y, [0, 1, 2], 0, 0, 1)
    assert CALLS == [True] + [False] * 5
    assert list(model.classes_) == [0, 1, 2]
    # the same model as when every call got the classes
    ref = SGDClassifier()
    for sl in (0, 1):
        for p in range(3):
            ref.random_state = derive_seed(0, 0, sl, p)
            ref.partial_fit(X, y, classes=[0, 1, 2])
    assert np.array_equal(ref.coef_, model.coef_) and ref.t_ == model.t_


@pytest.mark.parametrize("schedule", ["streaming", "cumulative"])
def test_a_shard_task_reads_each_slice_once(tmp_path, monkeypatch, schedule):
    X, y = make_classification(1200, 4)
    reads: list = []
    orig = RowReader.read_slice_table

    def counted(self, shard, sl):
        reads.append((shard, sl))
        return orig(self, shard, sl)

    monkeypatch.setattr(RowReader, "read_slice_table", counted)
    SISAClassifier(n_shards=2, n_slices=4, schedule=schedule, backend="local",
                   store=str(tmp_path / "s")).fit(X, y)
    trained = [c for c in reads if reads.count(c) > 1]
    assert sorted(set(reads)) == [(s, r) for s in range(2) for r in range(4)]
    assert trained == [], f"slices read more than once: {sorted(set(trained))}"


def test_a_checkpoint_names_each_class_once_per_load(monkeypatch):
    """Canonical pickles name a class at every instance; the unpickler decides each
    (module, name) once per process and trust, with the same result."""
    X, y = make_classification(300, 4)
    blob = ck.dumps(HistGradientBoostingClassifier(max_iter=5).fit(X, y))
    seen: list = []
    orig = safe_pickle.resolve

    def counted(module, name, **kw):
        seen.append((module, name))
        return orig(module, name, **kw)

    plain = safe_pickle.loads(blob)
    monkeypatch.setattr(safe_pickle, "resolve", counted)
    monkeypatch.setattr(safe_pickle, "_ALLOWED", {})  # as in a fresh process
    model = safe_pickle.loads(blob)
    assert len(seen) == len(set(seen)) > 3
    safe_pickle.loads(blob)
    assert len(seen) == len(set(seen))  # decided already: nothing resolved again
    assert blob.count(b"TreePredictor") >= 5  # named once per predictor in the bytes
    assert np.array_equal(model.predict(X), plain.predict(X))


def test_training_runs_on_one_native_thread_and_restores_the_count():
    """The kept thread-pool scan limits every pool the first scan found, each time."""
    from threadpoolctl import threadpool_info

    from sisa.engine import train

    before = {i["filepath"]: i["num_threads"] for i in threadpool_info()}
    assert before  # numpy's BLAS at least
    for _ in range(3):  # first from a fresh scan, then from the kept one
        with train._one_thread():
            assert {i["num_threads"] for i in threadpool_info()} == {1}
        assert {i["filepath"]: i["num_threads"] for i in threadpool_info()} == before
