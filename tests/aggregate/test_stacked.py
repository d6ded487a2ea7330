"""The vectorized aggregate (sisa.aggregate.stacked) answers as the per-shard loop does:
same argmax on every row, probabilities within 1e-12 relative (float32 networks: the bound
of their float32 products; binary logistic ensembles' one product, sisa.aggregate.gemm:
its proven bound, and the exact form 1e-12), for every family, after forgets and after a
load elsewhere."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.linear_model import (
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from sisa import SISAClassifier, SISARegressor, aggregate
from sisa.aggregate import gemm, stacked
from sisa.engine.pipeline import IncrementalPipeline

RTOL = 1e-12
# TorchClassifier computes in float32: a product grouped differently may round the
# logits differently (|delta| <= a few float32 ulps), which moves a probability by at most
# about that much relative to itself
RTOL_FLOAT32 = 1e-5


def _data(n=1200, d=6, k=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    score = X[:, 0] + 0.5 * X[:, 1] - 0.3 * X[:, 2]
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]))
    return X, y


def _fit(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # refit-per-slice advice, convergence
        return model.fit(X, y)


def _loop_answers(model, X):
    """What the per-shard loop (sisa.aggregate) answers for the loaded models."""
    if hasattr(model, "classes_"):
        if model.aggregation_ == "soft":
            return aggregate.mean_proba(model.estimators_, X, model.classes_)
        return aggregate.vote(model.estimators_, X, model.classes_)
    return aggregate.regress(model.estimators_, X, model.aggregation_)


def _assert_same(model, X, rtol=RTOL):
    """The model serves through its stacked form, and it agrees with the loop."""
    assert model._stacked is not None and model._stacked_for(X) is model._stacked
    X = np.asarray(X)
    want = _loop_answers(model, X)
    if not hasattr(model, "classes_"):
        np.testing.assert_allclose(model.predict(X), want, rtol=rtol, atol=0)
        return
    if model.aggregation_ == "soft" and model._stacked.fast is not None:
        _assert_within_gemm_bound(model, X, want)
    elif model.aggregation_ == "soft":
        got = model.predict_proba(X)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
        np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))
        np.testing.assert_array_equal(model.predict(X),
                                      model.classes_[want.argmax(axis=1)])
    else:
        np.testing.assert_array_equal(model.predict(X), want)


def _assert_within_gemm_bound(model, X, want):
    """A binary logistic ensemble's one product for all shards (sisa.aggregate.gemm):
    every row within its proven absolute bound of the loop, argmax equal but for ties
    inside it; and the exact stacked form (stacked.EXACT) still gives the loop's bits."""
    got = model.predict_proba(X)
    assert got.shape == want.shape
    b = gemm.bound(X, model._stacked.groups[0].form)
    assert np.all(np.abs(got - want).max(axis=1) <= b)
    tie = np.abs(want[:, 1] - want[:, 0]) <= 2 * b
    np.testing.assert_array_equal(got.argmax(axis=1)[~tie], want.argmax(axis=1)[~tie])
    np.testing.assert_array_equal(model.predict(X), model.classes_[got.argmax(axis=1)])
    try:
        stacked.EXACT = True
        exact = stacked.build(model.estimators_, model.classes_)
    finally:
        stacked.EXACT = False
    assert exact.fast is None
    np.testing.assert_allclose(exact.mean_proba(X), want, rtol=RTOL, atol=0)


def _scaled(est):
    return IncrementalPipeline([("scale", StandardScaler()), ("model", est)])


CLASSIFIERS = {
    "sgd-log": (lambda: SGDClassifier(loss="log_loss"), "soft", 4),
    "sgd-huber": (lambda: SGDClassifier(loss="modified_huber"), "soft", 4),
    "sgd-hinge-hard": (lambda: SGDClassifier(), "hard", 4),
    "sgd-log-hard": (lambda: SGDClassifier(loss="log_loss"), "hard", 4),
    "logreg": (lambda: LogisticRegression(), "soft", 1),
    "ridge-classifier": (lambda: RidgeClassifier(), "hard", 1),
    "linear-svc": (lambda: LinearSVC(), "hard", 1),
    "scaled-sgd": (lambda: _scaled(SGDClassifier(loss="log_loss")), "soft", 3),
    "mlp": (lambda: _scaled(MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=30)), "soft", 2),
    "mlp-hard": (lambda: MLPClassifier(hidden_layer_sizes=(16,), activation="tanh"), "hard", 2),
    "gaussian-nb": (lambda: GaussianNB(), "soft", 2),
    "gaussian-nb-hard": (lambda: GaussianNB(), "hard", 2),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("k", [2, 3])
def test_classifier_families_match_the_loop(name, k, tmp_path):
    make, how, slices = CLASSIFIERS[name]
    X, y = _data(k=k)
    model = _fit(SISAClassifier(make(), n_shards=7, n_slices=slices, aggregation=how,
                                backend="local", store=tmp_path / "s"), X, y)
    _assert_same(model, X)
    _assert_same(model, X[:1])
    _assert_same(model, X.astype(np.float64))  # float64 input: cast as each shard would


@pytest.mark.parametrize("make", [SGDRegressor, Ridge,
                                  lambda: _scaled(SGDRegressor()),
                                  lambda: MLPRegressor(hidden_layer_sizes=(8,), max_iter=50)])
@pytest.mark.parametrize("how", ["mean", "median"])
def test_regressor_families_match_the_loop(make, how, tmp_path):
    X, _ = _data()
    y = X @ np.arange(1, 7, dtype=np.float32) + 0.1
    model = _fit(SISARegressor(make(), n_shards=6, n_slices=2, aggregation=how,
                               backend="local", store=tmp_path / "s"), X, y)
    _assert_same(model, X)


def test_torch_mlp_matches_the_loop_within_float32(tmp_path):
    pytest.importorskip("torch")
    from sisa.deep import TorchClassifier

    X, y = _data(n=900, k=3)
    net = TorchClassifier([{"layer": "linear", "out_features": 16}, "relu",
                           {"layer": "linear", "out_features": 8}, "gelu", "dropout",
                           {"layer": "linear"}], lr=1e-2, random_state=0)
    model = _fit(SISAClassifier(net, n_shards=5, n_slices=2, backend="local",
                                store=tmp_path / "s"), X, y)
    _assert_same(model, X, rtol=RTOL_FLOAT32)
    # many rows: each shard's layers called as its forward pass calls them, the same bits
    np.testing.assert_array_equal(model.predict_proba(X), _loop_answers(model, X))
    _assert_same(model, X[:5], rtol=RTOL_FLOAT32)  # few rows: one batched product a layer
    scaled = _fit(SISAClassifier(_scaled(TorchClassifier(lr=1e-2, random_state=0)),
                                 n_shards=4, n_slices=2, aggregation="hard", backend="local",
                                 store=tmp_path / "t"), X, y)
    _assert_same(scaled, X, rtol=RTOL_FLOAT32)
    _assert_same(scaled, X[:5], rtol=RTOL_FLOAT32)


def test_shards_knowing_fewer_classes_map_onto_the_full_list(tmp_path):
    """LogisticRegression is fit on the shard's rows: shards without the rare class know
    two classes and form their own group, placed in their columns as aligned_proba does."""
    X, y = _data(n=900, k=2)
    y[:6] = 2  # a rare third class: most shards never see it
    for how in ("soft", "hard"):
        model = _fit(SISAClassifier(LogisticRegression(), n_shards=6, n_slices=1,
                                    aggregation=how, backend="local",
                                    store=tmp_path / how), X, y)
        known = {len(m.classes_) for m in model.estimators_}
        assert known == {2, 3} and len(model._stacked.groups) == 2
        _assert_same(model, X)


def _shard_ids(model, shard: int) -> list:
    index = model.store_.rows.read_index()
    return np.asarray(index.column("sample_id"))[np.asarray(index.column("shard")) == shard]


def test_forget_rebuilds_the_stacked_form_and_empty_shards_drop_out(tmp_path):
    X, y = _data(n=800, k=3)
    model = _fit(SISAClassifier(n_shards=5, n_slices=2, backend="local",
                                store=tmp_path / "s"), X, y)
    before, old = model.predict_proba(X), model._stacked
    model.forget(list(range(0, 800, 9)))
    # a cache kept across the forget would still hold the old shard models
    assert model._stacked is not old and not old.serves(model.estimators_, X)
    assert np.abs(model.predict_proba(X) - before).max() > 0  # the answers did move
    _assert_same(model, X)
    model.forget(_shard_ids(model, 2).tolist())  # shard 2 left without rows
    assert model.estimators_[2] is None and model._stacked.n_live == 4
    _assert_same(model, X)
    # a stale stacked form put back by hand is refused and the loop answers instead
    model._stacked = old
    assert model._stacked_for(X) is None
    np.testing.assert_array_equal(model.predict_proba(X), _loop_answers(model, X))


def _torch_mlp():
    pytest.importorskip("torch")
    from sisa.deep import TorchClassifier

    return TorchClassifier(lr=1e-2, random_state=0)


AFTER_FORGET = {  # family -> (estimator, task, tolerance)
    "sgd": (lambda: SGDClassifier(loss="log_loss"), "classification", RTOL),
    "logreg": (LogisticRegression, "classification", RTOL),
    "scaled-mlp": (lambda: _scaled(MLPClassifier(hidden_layer_sizes=(8,), max_iter=20)),
                   "classification", RTOL),
    "gaussian-nb": (GaussianNB, "classification", RTOL),
    "torch-mlp": (_torch_mlp, "classification", RTOL_FLOAT32),
    "sgd-regressor": (SGDRegressor, "regression", RTOL),
}
_LOAD_AND_ANSWER = """
import sys, numpy as np
from sisa import aggregate
from sisa.estimators import load
m = load(sys.argv[1]); X = np.load(sys.argv[2])
assert m._stacked is not None and m._stacked_for(X) is m._stacked, "no stacked form"
fast = m.predict_proba(X) if hasattr(m, "classes_") else m.predict(X)
loop = (aggregate.mean_proba(m.estimators_, X, m.classes_) if hasattr(m, "classes_")
        else aggregate.regress(m.estimators_, X, m.aggregation_))
np.save(sys.argv[3], np.stack([fast, loop]))
"""


@pytest.mark.parametrize("name", sorted(AFTER_FORGET))
def test_after_a_forget_and_a_load_in_another_process(name, tmp_path):
    """Forget rows (the retrained shards' models are new objects), then load the store in
    a fresh process: both the stacked form there and here agree with the loop."""
    make, task, rtol = AFTER_FORGET[name]
    X, y = _data(n=700, k=3)
    store = tmp_path / "s"
    if task == "regression":
        y = X @ np.arange(1, 7, dtype=np.float32)
        model = _fit(SISARegressor(make(), n_shards=5, n_slices=2, backend="local",
                                   store=store), X, y)
    else:
        model = _fit(SISAClassifier(make(), n_shards=5, n_slices=2, backend="local",
                                    store=store), X, y)
    old = model._stacked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.forget(list(range(0, 700, 11)))
    assert model._stacked is not old
    _assert_same(model, X, rtol=rtol)
    np.save(tmp_path / "X.npy", X)
    subprocess.run([sys.executable, "-c", _LOAD_AND_ANSWER, str(store),
                    str(tmp_path / "X.npy"), str(tmp_path / "out.npy")], check=True)
    fast, loop = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(fast, loop, rtol=rtol, atol=0)
    np.testing.assert_allclose(fast, _loop_answers(model, X), rtol=rtol, atol=0)


def test_trees_keep_the_loop(tmp_path):
    X, y = _data(n=600, k=3)
    model = _fit(SISAClassifier(DecisionTreeClassifier(max_depth=3), n_shards=4, n_slices=1,
                                backend="local", store=tmp_path / "s"), X, y)
    assert model._stacked is None and stacked.build(model.estimators_, model.classes_) is None
    np.testing.assert_array_equal(model.predict_proba(X), _loop_answers(model, X))


def test_a_mixed_ensemble_or_subclass_is_not_guessed():
    """One unrecognised shard model (or a subclass of a recognised one) sends the whole
    ensemble to the loop."""
    X, y = _data(n=300, k=2)

    class MySGD(SGDClassifier):
        pass

    a = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    b = MySGD(loss="log_loss", random_state=0).fit(X, y)
    tree = DecisionTreeClassifier(max_depth=2).fit(X, y)
    classes = np.array([0, 1])
    assert stacked.build([a, None, a], classes) is not None
    assert stacked.build([a, b], classes) is None
    assert stacked.build([a, tree], classes) is None
    assert stacked.build([None, None], classes) is None
    odd = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    odd.coef_ = "not an array"  # attributes unlike its type's: the loop decides
    assert stacked.build([a, odd], classes) is None


def test_rows_in_bounded_passes_answer_the_same(tmp_path, monkeypatch):
    """Temporary arrays are bounded (shards x rows x width per pass): many passes over the
    rows give the same answers as one."""
    X, y = _data(n=500, k=3)
    model = _fit(SISAClassifier(_scaled(SGDClassifier(loss="log_loss")), n_shards=4,
                                n_slices=2, backend="local", store=tmp_path / "s"), X, y)
    one_pass = model.predict_proba(X)
    monkeypatch.setattr(stacked, "_ELEMENTS", 4 * 6 * 7)  # 7 rows a pass
    model._stacked = stacked.build(model.estimators_, model.classes_)
    assert model._stacked.chunk == 7
    np.testing.assert_array_equal(model.predict_proba(X), one_pass)
    _assert_same(model, X)
    model.aggregation_ = "hard"
    _assert_same(model, X)
