"""Sliced, checkpointed shard training: determinism, schedules, Ray, failures, persistence."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeClassifier

from sisa import SISAClassifier, SISARegressor
from sisa.engine import TrainingError, derive_seed
from sisa.engine.schedule import Schedule
from sisa.errors import CorruptStoreError
from tests.helpers import LOCAL, make_classification, make_regression


def ckpt_hashes(model) -> dict[str, str]:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


def test_seeds_depend_only_on_shard_slice_and_pass():
    assert derive_seed(0, 1, 2, 3) == derive_seed(0, 1, 2, 3)
    seeds = {derive_seed(0, s, r, p) for s in range(5) for r in range(5) for p in range(3)}
    assert len(seeds) == 75


@pytest.mark.parametrize("estimator", [SGDClassifier(loss="log_loss"), GaussianNB(),
                                       MLPClassifier(hidden_layer_sizes=(8,), max_iter=5)])
def test_fitting_twice_gives_byte_identical_checkpoints(tmp_path, estimator):
    X, y = make_classification(1200, 6, n_classes=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = SISAClassifier(estimator, n_shards=3, n_slices=3, store=str(tmp_path / "a"),
                           backend="local").fit(X, y)
        b = SISAClassifier(estimator, n_shards=3, n_slices=3, store=str(tmp_path / "b"),
                           backend="local").fit(X, y)
    assert len(ckpt_hashes(a)) == 9
    assert ckpt_hashes(a) == ckpt_hashes(b)
    c = SISAClassifier(estimator, n_shards=3, n_slices=3, random_state=1, backend="local")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.fit(X, y)
    assert ckpt_hashes(c) != ckpt_hashes(a)


@pytest.mark.parametrize("estimator", [None, "mlp"])
def test_ray_and_in_process_training_are_byte_identical(tmp_path, ray_session, estimator):
    """Ray tasks get one BLAS thread; in-process training is held to one as well, so an
    MLP's float results (matrix products) do not depend on where a shard trained."""
    est = MLPClassifier((128,), max_iter=5, random_state=0) if estimator else None
    X, y = make_classification(3000, 6)
    a = SISAClassifier(est, n_shards=4, n_slices=3, store=str(tmp_path / "a"),
                       backend="ray").fit(X, y)
    b = SISAClassifier(est, n_shards=4, n_slices=3, store=str(tmp_path / "b"),
                       backend="local").fit(X, y)
    assert ckpt_hashes(a) == ckpt_hashes(b)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))


def test_every_shard_knows_all_classes_even_without_rows_of_some(tmp_path):
    X, y = make_classification(900, 4, n_classes=3)
    y = y.copy()
    y[:3] = 7  # a rare class: most shards never see it
    clf = SISAClassifier(SGDClassifier(loss="log_loss"), n_shards=4, n_slices=2,
                         backend="local").fit(X, y)
    assert list(clf.classes_) == sorted(set(y.tolist()))
    for m in clf.estimators_:
        assert list(m.classes_) == list(clf.classes_)
    assert clf.predict_proba(X).shape == (900, 4)


def test_refit_estimators_warn_once_and_align_classes(tmp_path):
    X, y = make_classification(900, 4, n_classes=3)
    y = y.copy()
    y[:2] = 9
    with pytest.warns(UserWarning, match="no partial_fit"):
        clf = SISAClassifier(DecisionTreeClassifier(max_depth=3), n_shards=3, n_slices=2,
                             backend="local").fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (900, 4) and np.allclose(proba.sum(axis=1), 1)


@pytest.mark.parametrize("name, R, epochs", [("streaming", 4, 3), ("cumulative", 4, 5),
                                             ("cumulative", 16, 1)])
def test_every_slice_gets_at_least_one_pass(name, R, epochs):
    sched = Schedule(name, epochs, R, incremental=True)
    assert sched.passes() >= 1
    rows = [10] * R
    assert sched.rows(rows) >= sum(rows)  # no slice skipped (the reference code's bug)
    if name == "cumulative" and R == 4:
        # budget 2R/(R+1)·e split over R cumulative steps ≈ e passes over the shard
        assert sched.rows(rows) == 2 * (10 + 20 + 30 + 40)


def test_cumulative_schedule_trains_and_is_deterministic(tmp_path):
    X, y = make_classification(1500, 5)
    kw = {"n_shards": 2, "n_slices": 3, "schedule": "cumulative", "backend": "local"}
    a = SISAClassifier(store=str(tmp_path / "a"), **kw).fit(X, y)
    b = SISAClassifier(store=str(tmp_path / "b"), **kw).fit(X, y)
    assert ckpt_hashes(a) == ckpt_hashes(b) and a.score(X, y) > 0.8


class Exploding(SGDClassifier):
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        if getattr(self, "t_", 0) > 1:
            raise FloatingPointError("diverged on purpose")
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)


def test_a_failing_shard_is_reported_with_shard_slice_and_traceback(tmp_path):
    X, y = make_classification(600, 3)
    with pytest.raises(TrainingError, match=r"shard \d+ failed at slice \d+: FloatingPointError") \
            as info:
        SISAClassifier(Exploding(), n_shards=2, n_slices=3, epochs=1, backend="local").fit(X, y)
    assert "diverged on purpose" in info.value.original_traceback


def test_a_failing_ray_task_is_retried_then_reported(tmp_path, ray_session):
    X, y = make_classification(600, 3)
    with pytest.raises(TrainingError, match="FloatingPointError") as info:
        SISAClassifier(Exploding(), n_shards=2, n_slices=3, epochs=1, backend="ray").fit(X, y)
    assert "Traceback" in info.value.original_traceback


def test_tampered_checkpoint_is_never_unpickled(tmp_path):
    X, y = make_classification(600, 3)
    clf = SISAClassifier(n_shards=2, n_slices=2, store=str(tmp_path / "s"),
                         backend="local").fit(X, y)
    meta = clf.store_.manifest.checkpoints["1/1"]
    path = tmp_path / "s" / meta.file
    evil = b"cos\nsystem\n(S'touch pwned'\ntR."  # a malicious pickle, padded to the same size
    path.write_bytes(evil + b" " * (meta.bytes - len(evil)))
    with pytest.raises(CorruptStoreError, match="hash mismatch"):
        SISAClassifier.load(str(tmp_path / "s"))


def test_load_reopens_a_fitted_model_in_another_process(tmp_path):
    X, y = make_regression(800, 4)
    reg = SISARegressor(SGDRegressor(), n_shards=2, n_slices=2, aggregation="median",
                        store=str(tmp_path / "s"), backend="local").fit(X, y)
    np.save(tmp_path / "X.npy", X)
    code = (
        "import numpy as np, sys; from sisa import SISARegressor\n"
        f"m = SISARegressor.load({str(tmp_path / 's')!r})\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, m.predict(np.load({str(tmp_path / 'X.npy')!r})))\n"
        "print(m.aggregation_, m.n_shards)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["median", "2"]
    assert np.array_equal(np.load(tmp_path / "p.npy"), reg.predict(X))


def test_aggregations(tmp_path):
    X, y = make_classification(1500, 5, n_classes=3)
    hard = SISAClassifier(n_shards=3, n_slices=2, aggregation="hard", backend="local").fit(X, y)
    assert not hasattr(hard, "predict_proba")
    assert hard.score(X, y) > 0.8
    with pytest.raises(ValueError, match="aggregation='soft' averages predict_proba"):
        SISAClassifier(SGDClassifier(), aggregation="soft", n_shards=2, n_slices=2).fit(X, y)
    Xr, yr = make_regression(1000, 3)
    mean = SISARegressor(n_shards=3, n_slices=2, backend="local").fit(Xr, yr)
    med = SISARegressor(n_shards=3, n_slices=2, aggregation="median", backend="local").fit(Xr, yr)
    assert mean.score(Xr, yr) > 0.95 and med.score(Xr, yr) > 0.95
    assert not np.array_equal(mean.predict(Xr), med.predict(Xr))


FIT_SCRIPT = """
import sys, json, numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.neural_network import MLPClassifier
from sisa import SISAClassifier
from sisa.engine.pipeline import IncrementalPipeline
rng = np.random.default_rng(0)
X = rng.normal(size=(900, 5)) * [1, 10, 100, 1, 1]; y = (X[:, 0] > 0).astype(int)
pipe = IncrementalPipeline([("scale", StandardScaler()),
                            ("mlp", MLPClassifier(hidden_layer_sizes=(4,)))])
m = SISAClassifier(pipe, n_shards=2, n_slices=2, store=sys.argv[1], backend="local").fit(X, y)
print(json.dumps({k: v.sha256 for k, v in m.store_.manifest.checkpoints.items()}))
"""


def test_checkpoints_are_identical_across_processes_and_verify_elsewhere(tmp_path):
    """Pickle bytes must not depend on object identity (interned strings, memo order)."""
    runs = [subprocess.run([sys.executable, "-c", FIT_SCRIPT, str(tmp_path / name)],
                           capture_output=True, text=True, check=True).stdout
            for name in ("a", "b")]
    assert runs[0] == runs[1] and len(runs[0]) > 100
    from sisa import Store
    from sisa.unlearn import verify

    rep = verify(Store.open(tmp_path / "a"), settings=LOCAL)  # a third process's retrain
    assert rep.ok, rep.table()


def test_auto_backend_skips_ray_for_a_single_shard_in_a_fresh_process():
    code = ("import os, sys; os.environ.pop('RAY_ADDRESS', None)\n"
            "from sisa.engine import ExecutionSettings as E\n"
            "from sisa.tasks.backend import choose\n"
            "print(choose(E(), 1), choose(E(), 3), choose(E(address='ray://h:10001'), 3), "
            "'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["local", "adaptive", "ray", "False"]


ADAPTIVE = """
import json, sys
from sisa import Store
from sisa.engine import ExecutionSettings, driver
from sisa.tasks import backend
from sisa.store import RetrainPlan

backend.RAY_START_S = float(sys.argv[2])
store = Store.open(sys.argv[1])
with store.lock():
    driver.train(store, ExecutionSettings(), restart=RetrainPlan.everything(store.n_shards))
ray = sys.modules.get("ray")
print(json.dumps({"ray": bool(ray and ray.is_initialized()),
                  "ckpts": sorted(m.sha256 for m in
                                  store.manifest.checkpoints.values())}))
"""


def test_auto_backend_starts_ray_only_when_it_pays_and_bytes_do_not_change(tmp_path):
    """In a process without Ray, "auto" trains shards here and starts Ray for the rest
    only once the measured time per shard says Ray's start-up will be repaid."""
    X, y = make_classification(2000, 5)
    ref = SISAClassifier(n_shards=4, n_slices=2, store=str(tmp_path / "s"),
                         backend="local").fit(X, y)
    want = sorted(m.sha256 for m in ref.store_.manifest.checkpoints.values())
    runs = {}
    for label, start_cost in (("never pays", "1e9"), ("always pays", "0")):
        out = subprocess.run([sys.executable, "-c", ADAPTIVE, str(tmp_path / "s"), start_cost],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        runs[label] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["never pays"]["ray"] is False  # 4 small shards: all in process
    assert runs["always pays"]["ray"] is True  # shard 1 here, then Ray for the rest
    assert runs["never pays"]["ckpts"] == runs["always pays"]["ckpts"] == want


def test_ray_pays_rule():
    from sisa.tasks.backend import RAY_START_S, _ray_pays

    assert not _ray_pays(0.2, 1, 15, 2)  # 15 x 0.2 s, half saved: 1.5 s < start-up
    assert _ray_pays(2.0, 1, 15, 2)  # 15 x 2 s, half saved: 15 s > start-up
    assert not _ray_pays(100.0, 1, 1, 2)  # one job left: nothing runs in parallel
    assert not _ray_pays(100.0, 1, 10, 1)  # one CPU: nothing runs in parallel
    assert _ray_pays(RAY_START_S, 1, 2, 2) is False and _ray_pays(RAY_START_S, 1, 3, 2)


def test_fashion_mnist_subset_trains_to_a_sensible_accuracy():
    from sisa.datasets import load

    train = load("fashion-mnist", n_rows=4000)
    test = load("fashion-mnist", kind="t10k", n_rows=1000)
    clf = SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-4), n_shards=4, n_slices=2,
                         backend="local").fit(train.X, train.y)
    assert list(clf.classes_) == list(range(10))
    assert clf.score(test.X, test.y) > 0.7


def test_adaptive_carries_on_in_process_when_ray_cannot_start(tmp_path, monkeypatch):
    from sisa.tasks import backend

    X, y = make_classification(1200, 4)
    ref = SISAClassifier(n_shards=3, n_slices=2, store=str(tmp_path / "a"),
                         backend="local").fit(X, y)
    monkeypatch.setattr(backend, "choose", lambda *a: "adaptive")
    monkeypatch.setattr(backend, "RAY_START_S", 0.0)  # Ray would always pay...

    def no_ray(*args, **kwargs):
        raise RuntimeError("no Ray on this machine")

    monkeypatch.setattr(backend, "connect", no_ray)  # ...but cannot start
    with pytest.warns(UserWarning, match="could not start Ray"):
        b = SISAClassifier(n_shards=3, n_slices=2, store=str(tmp_path / "b")).fit(X, y)
    assert ckpt_hashes(b) == ckpt_hashes(ref)


def test_every_random_state_is_seeded_whatever_the_composite_holds():
    """A spec read from JSON gives Pipeline steps as lists: a list step once escaped
    seeding, so a CLI `--model-spec` pipeline with a tree trained non-deterministically
    (found by `sisa verify`)."""
    from sklearn.ensemble import RandomForestClassifier, VotingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from sisa.engine.schedule import _seeded

    for est in (
        Pipeline([["s", StandardScaler()], ["m", DecisionTreeClassifier()]]),
        Pipeline([("s", StandardScaler()), ("m", DecisionTreeClassifier())]),
        VotingClassifier([["a", DecisionTreeClassifier()], ("b", RandomForestClassifier())]),
    ):
        keys = [k for k in est.get_params(deep=True) if k.split("__")[-1] == "random_state"]
        assert len(_seeded(est)) == len(keys) > 0, est
