"""PyTorch shard models (issue 16): exact forgetting, Ray, safe checkpoints, presets.

Small on purpose (a few hundred rows, 8x8 images): the whole file runs in well under a
minute on two cores. Skipped only when torch is not installed; CI installs it.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import sisa.cli  # noqa: E402
from sisa import SISAClassifier  # noqa: E402
from sisa.deep import TorchClassifier  # noqa: E402
from sisa.engine import safe_pickle  # noqa: E402
from sisa.engine.checkpoints import dumps  # noqa: E402
from sisa.engine.driver import gpus_per_task  # noqa: E402
from sisa.engine.presets import PRESETS  # noqa: E402
from sisa.engine.spec import check, from_spec, to_spec  # noqa: E402
from sisa.errors import InputError, UntrustedCodeError  # noqa: E402
from sisa.store import Store  # noqa: E402
from tests.helpers import make_classification, pickle_globals  # noqa: E402

MLP = [{"layer": "linear", "out_features": 16}, "relu", {"layer": "linear"}]
# 8x8 digits: conv -> 8x4x4 -> dropout (seeded like the rest) -> 4 classes
CNN = [{"layer": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1},
       "relu", {"layer": "dropout", "p": 0.1}, "flatten", {"layer": "linear"}]


def _digits(n=360, n_classes=4):
    X, y = load_digits(n_class=n_classes, return_X_y=True)
    return (X[:n] / 16).astype(np.float32), y[:n]


CASES = {
    "mlp": (lambda: TorchClassifier(MLP, lr=1e-2, batch_size=32),
            lambda: make_classification(360, 6, n_classes=3)),
    "cnn": (lambda: TorchClassifier(CNN, input_shape=(1, 8, 8), lr=0.1, batch_size=32,
                                    optimizer="sgd", optimizer_params={"momentum": 0.9}),
            _digits),
}


def _hashes(model) -> dict[str, str]:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


# ----------------------------------------------------------------- the estimator alone
@pytest.mark.parametrize("name", list(CASES))
def test_checkpoint_is_plain_canonical_and_resumes_exactly(name):
    make, data = CASES[name]
    X, y = data()
    a = clone(make()).set_params(random_state=3)
    a.partial_fit(X, y, classes=np.unique(y))
    blob = dumps(a)
    # no torch object in the pickle: only sisa's class and numpy's array reconstructors
    assert not any(m.startswith("torch") for m, _ in pickle_globals(blob)), pickle_globals(blob)
    b = safe_pickle.loads(blob)  # the restricted unpickler, torch not allow-listed
    assert dumps(b) == blob  # same values, same bytes
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    a.partial_fit(X, y)
    b.partial_fit(X, y)  # resumed from the checkpoint: weights, Adam/momentum state, RNG
    assert dumps(a) == dumps(b)
    c = clone(make()).set_params(random_state=3)
    c.partial_fit(X, y, classes=np.unique(y)).partial_fit(X, y)
    assert dumps(c) == dumps(a)
    assert dumps(clone(make()).set_params(random_state=4).partial_fit(
        X, y, classes=np.unique(y))) != blob


def test_training_leaves_the_callers_torch_settings_alone():
    X, y = make_classification(100, 4)
    torch.manual_seed(123)
    before = torch.get_rng_state().clone()
    threads = torch.get_num_threads()
    TorchClassifier(MLP, max_epochs=2, random_state=0).fit(X, y)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_spec_round_trips_and_refuses_closures():
    est = PRESETS["cnn"]()
    assert dumps(from_spec(check(est))) == dumps(est)
    with pytest.raises(InputError, match="cannot be recorded"):
        to_spec(TorchClassifier(module=lambda shape, n: torch.nn.Linear(shape[0], n)))


def make_net(input_shape, n_outputs, hidden=8):
    """A user's factory, named by the spec; loads only where its module is trusted."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], hidden),
                               torch.nn.Tanh(), torch.nn.Linear(hidden, n_outputs))


def test_a_factory_module_is_named_and_needs_trust(monkeypatch):
    monkeypatch.setattr(safe_pickle, "_SESSION", set())
    monkeypatch.delenv(safe_pickle.TRUST_ENV, raising=False)
    X, y = make_classification(120, 4)
    est = TorchClassifier(module=make_net, module_params={"hidden": 5}, random_state=0,
                          max_epochs=2).fit(X, y)
    assert est.module_[1].out_features == 5
    assert to_spec(est)["params"]["module"] == {"callable": f"{__name__}.make_net"}
    with pytest.raises(UntrustedCodeError, match="SISA_TRUSTED_MODULES"):
        safe_pickle.loads(dumps(est))
    monkeypatch.setenv(safe_pickle.TRUST_ENV, __name__)
    assert dumps(safe_pickle.loads(dumps(est))) == dumps(est)


@pytest.mark.parametrize("kw,match", [
    ({"layers": ["conv3d"]}, "unknown layer"),
    ({"layers": [{"layer": "linear", "in_features": 3}, {"layer": "linear"}]}, "infers"),
    ({"layers": [{"layer": "linear"}, "relu"]}, "needs out_features"),
    ({"layers": ["relu"]}, "outputs shape"),
    ({"input_shape": (3, 3)}, "input_shape"),
    ({"optimizer_params": {"nesterov_typo": 1}}, "optimizer_params"),
])
def test_bad_networks_are_one_line_errors(kw, match):
    X, y = make_classification(60, 4)
    with pytest.raises((InputError, ValueError), match=match) as info:
        TorchClassifier(**kw).fit(X, y)
    assert "\n" not in str(info.value)


# float32 matrix products round differently with the batch's size (the kernel's blocking
# changes), so logits of a row predicted alone and within a batch may differ in the last
# bit; training is unaffected (its batches are fixed by the seed).
SUBSET = {"check_methods_subset_invariance": "float32 kernels round by batch size"}


@parametrize_with_checks([TorchClassifier(MLP, lr=5e-2, max_epochs=12, batch_size=32,
                                          random_state=0)],
                         expected_failed_checks=lambda est: SUBSET)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---------------------------------------------------------------- exact unlearning in sisa
@pytest.mark.parametrize("name", list(CASES))
def test_forget_is_byte_identical_to_a_fresh_fit_and_verifies(tmp_path, name):
    make, data = CASES[name]
    X, y = data()
    forget = [3, 50, 51, 200, 301]
    kw = {"n_shards": 2, "n_slices": 3, "epochs": 2, "backend": "local"}
    model = SISAClassifier(make(), store=str(tmp_path / "a"), **kw).fit(X, y)
    assert model.score(X, y) > 0.6
    receipt = model.forget(forget)
    keep = np.setdiff1d(np.arange(len(y)), forget)
    fresh = SISAClassifier(make(), store=str(tmp_path / "b"), **kw).fit(
        X[keep], y[keep], sample_ids=keep)
    assert _hashes(model) == _hashes(fresh)
    assert receipt["rows_retrained"] < receipt["rows_full_retrain"]
    np.testing.assert_array_equal(model.predict_proba(X), fresh.predict_proba(X))
    report = model.verify()
    assert report.ok, report
    # a fresh process-independent load reads the store through the restricted unpickler
    again = SISAClassifier.load(str(tmp_path / "a"))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


@pytest.mark.parametrize("name", list(CASES))
def test_ray_and_in_process_training_are_byte_identical(tmp_path, ray_session, name):
    make, data = CASES[name]
    X, y = data()
    kw = {"n_shards": 2, "n_slices": 2, "epochs": 1}
    a = SISAClassifier(make(), store=str(tmp_path / "a"), backend="ray", **kw).fit(X, y)
    b = SISAClassifier(make(), store=str(tmp_path / "b"), backend="local", **kw).fit(X, y)
    assert _hashes(a) == _hashes(b)
    a.forget([7, 8])  # retrained on Ray
    b.forget([7, 8])
    assert _hashes(a) == _hashes(b)


def test_a_forged_torch_checkpoint_cannot_run_code(tmp_path):
    X, y = make_classification(200, 4)
    st = tmp_path / "st"
    SISAClassifier(TorchClassifier(MLP), n_shards=1, n_slices=2, epochs=1, backend="local",
                   store=str(st)).fit(X, y)
    marker = tmp_path / "pwned"

    class Evil:  # what a forger would put in: torch.load's pickle path, or a shell
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    store = Store.open(str(st))
    meta = store.manifest.checkpoints["0/1"]
    good = store.get_blob(meta)
    clf = pickle.loads(good)  # plain pickle: the test trusts its own bytes
    forged = [
        pickle.dumps(Evil()),
        b"ctorch\nload\n(S'%s'\ntR." % str(marker).encode(),
        b"ctorch._utils\n_rebuild_tensor_v2\n.",
    ]
    for blob in forged:
        with pytest.raises(UntrustedCodeError, match="allow-list"):
            safe_pickle.loads(blob)
    state = clf.__getstate__()  # a real checkpoint's state with a torch tensor smuggled in
    state["module_state_"] = torch.zeros(2)
    with pytest.raises(UntrustedCodeError, match="torch"):
        safe_pickle.loads(pickle.dumps(state))
    assert not marker.exists()


# ------------------------------------------------------------------ presets, CLI, Ray GPUs
def test_cli_trains_the_cnn_preset_and_forgets(tmp_path, capsys):
    st = str(tmp_path / "fm")
    assert sisa.cli.main(["train", "fashion-mnist", "--model", "cnn", "--rows", "600",
                          "--shards", "2", "--slices", "2", "--epochs", "1", "--store", st,
                          "--backend", "local", "--holdout", "0.2", "--quiet"]) == 0
    assert sisa.cli.main(["forget", st, "--id", "5", "--backend", "local", "--quiet"]) == 0
    assert sisa.cli.main(["verify", st, "--backend", "local", "--quiet"]) == 0
    capsys.readouterr()


def test_torch_mlp_preset_and_gpu_placement():
    X, y = make_classification(150, 5)
    est = clone(PRESETS["torch-mlp"]())
    est.set_params(model__random_state=0).fit(X, y)
    assert est.score(X, y) > 0.6
    spec = {"model": {"estimator": {"spec": to_spec(TorchClassifier(device="cuda:0"))}}}
    assert gpus_per_task(spec) == 1
    assert gpus_per_task({"model": {"estimator": {"spec": to_spec(est)}}}) == 0
