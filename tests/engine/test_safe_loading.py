"""Loading a store never runs code from it (issue 12, item 6).

A forger who can write the store re-hashes a malicious checkpoint or estimator and
rewrites the manifest consistently; every entry point must refuse it without
running it. The estimator is a declarative spec, exact for every preset.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import (
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import sisa.cli
from sisa import SISAClassifier
from sisa.engine import safe_pickle
from sisa.engine.checkpoints import dumps
from sisa.engine.presets import PRESETS
from sisa.engine.presets import from_spec as cli_spec
from sisa.engine.schedule import Schedule
from sisa.engine.spec import from_spec, to_spec
from sisa.errors import InputError, UntrustedCodeError
from sisa.store import Store
from sisa.store import manifest as manifest_mod
from sisa.unlearn import verify
from tests.helpers import LOCAL, pickle_globals

ESTIMATORS = {
    **{f"preset:{k}": f for k, f in PRESETS.items()},
    "sgd": lambda: SGDClassifier(loss="hinge", class_weight={0: 1.0, 1: 2.0}),
    "sgd-regressor": lambda: SGDRegressor(loss="huber"),
    "mlp": lambda: MLPClassifier(hidden_layer_sizes=(4,), max_iter=5),
    "mlp-regressor": lambda: MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", max_iter=5),
    "gnb": lambda: GaussianNB(priors=np.array([0.3, 0.7])),
    "tree": lambda: DecisionTreeClassifier(max_depth=3),
    "tree-regressor": lambda: DecisionTreeRegressor(max_depth=3),
    "forest": lambda: RandomForestClassifier(n_estimators=2, max_depth=3),
    "forest-regressor": lambda: RandomForestRegressor(n_estimators=2, max_depth=3),
    "hgb": lambda: HistGradientBoostingClassifier(max_iter=3),
    "hgb-regressor": lambda: HistGradientBoostingRegressor(max_iter=3),
    "ridge": lambda: Ridge(alpha=0.5),
    "logistic": lambda: LogisticRegression(C=np.float64(0.5)),
    "knn": lambda: KNeighborsClassifier(n_neighbors=3, algorithm="ball_tree"),
    "knn-regressor": lambda: KNeighborsRegressor(n_neighbors=3),
    "pipeline": lambda: Pipeline([("s", StandardScaler()), ("m", Ridge(alpha=0.25))]),
}

# The exact non-scikit-learn globals sisa unpickles; changing it is a reviewed decision.
ALLOWED_NAMES = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random._mt19937", "MT19937"), ("numpy.random._pcg64", "PCG64"),
    ("numpy.random._pcg64", "PCG64DXSM"), ("numpy.random._philox", "Philox"),
    ("numpy.random._sfc64", "SFC64"), ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._generator", "Generator"), ("copyreg", "_reconstructor"),
    *{(f"scipy.sparse._{k}", f"{k}_{kind}") for k in ("csr", "csc", "coo", "bsr", "dia",
                                                      "dok", "lil")
      for kind in ("matrix", "array")},
    *{(mod, b) for mod in ("builtins", "__builtin__")
      for b in ("object", "set", "frozenset", "slice", "complex", "bytearray", "range")},
}


class UserEstimator(ClassifierMixin, BaseEstimator):
    """A user's own estimator: allowed only when its module is trusted."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha


@pytest.fixture(autouse=True)
def _fresh_trust(monkeypatch):
    """Trust granted by one test (fitting a user class) must not leak into another."""
    monkeypatch.setattr(safe_pickle, "_SESSION", set())
    monkeypatch.delenv(safe_pickle.TRUST_ENV, raising=False)


def _data(n=240, d=4, seed=0, regression=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.arange(1.0, d + 1) if regression else (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, y


def _models(name):
    """Unfitted, fitted and partially fitted models of one entry of ESTIMATORS."""
    est = ESTIMATORS[name]()
    X, y = _data(regression=not is_classifier(est))
    out = [clone(est)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out.append(clone(est).fit(X, y))
        if hasattr(est, "partial_fit"):
            m = clone(est)
            kw = {"classes": np.unique(y)} if is_classifier(est) else {}
            m.partial_fit(X, y, **kw).partial_fit(X, y, **kw)
            out.append(m)
        if is_classifier(est) and "class_weight" not in est.get_params():
            out.append(clone(est).fit(X, np.array(["no", "yes"], dtype=object)[y]))
    return out


# --------------------------------------------------------------------- allow-list
def test_the_allow_list_is_exactly_what_checkpoints_need():
    seen = set()
    for name in ESTIMATORS:
        for m in _models(name):
            blob = dumps(m)
            seen |= pickle_globals(blob)
            assert dumps(safe_pickle.loads(blob)) == blob, name  # bit-exact round trip
    outside = {g for g in seen if g[0].split(".")[0] not in ("sklearn", "sisa")}
    assert outside <= ALLOWED_NAMES
    assert set(safe_pickle.allowed_objects()) == ALLOWED_NAMES
    assert ("numpy._core.multiarray", "_reconstruct") in seen  # object arrays (str labels)


def _reduce(fn, *args) -> bytes:
    class R:
        def __reduce__(self):
            return fn, args

    return pickle.dumps(R(), protocol=2)


def _payloads(tmp_path, marker, pristine=None, data=None) -> dict[str, bytes]:
    """Pickles that create ``marker`` when unpickled by plain pickle."""
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([_PickledSystem(f"touch {marker}")], dtype=object), allow_pickle=True)
    cli_args = (["predict", str(pristine), str(data), "--out", str(marker)]
                if pristine else ["--version"])
    return {
        "os.system": _reduce(os.system, f"touch {marker}"),
        "subprocess": _reduce(subprocess.check_call, ["touch", str(marker)]),
        "numpy.load": _reduce(np.load, str(npy), None, True),
        "builtins.eval": _reduce(eval, f"__import__('os').system('touch {marker}')"),
        "sisa.cli.main": _reduce(sisa.cli.main, cli_args),
    }


class _PickledSystem:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_gadgets_are_refused_before_anything_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    gadgets = list(_payloads(tmp_path, marker).values())
    gadgets += [
        b"cos\nsystem\n(S'touch %s'\ntR." % str(marker).encode(),  # protocol 0
        b"c__builtin__\neval\n(S'1'\ntR.",
        b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR.",
        b"csklearn.base\nBaseEstimator.__init__.__globals__\n.",  # dunder walk
        b"cnumpy\nmemmap\n(S'%s'\ntR." % str(marker).encode(),
        b"cnumpy.lib.format\nopen_memmap\n(S'%s'\nS'w+'\ntR." % str(marker).encode(),
        b"cscipy.io\nnetcdf_file\n(S'%s'\nS'w'\ntR." % str(marker).encode(),
        b"csklearn.utils.parallel\nParallel\n)R.",
        b"csklearn.callback._scoring_monitor\nScoringMonitor\n.",
        b"csklearn.datasets\nfetch_openml\n.",
        b"csklearn.base\nclone\n.",  # a function, not a class
        b"csisa.store.store\nStore\n.",  # a sisa class that is not an estimator
        b"coperator\nattrgetter\n(S'x'\ntR.",
        b"cfunctools\npartial\n(cnumpy.random._pickle\n__randomstate_ctor\ntR.",  # not a function
        b"cnumpy.random._pickle\n__bit_generator_ctor\n(cposix\nsystem\ntR.",
        b"cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nmemmap\n(I0\ntS'b'\ntR.",
        b"ccopyreg\n_reconstructor\n(csubprocess\nPopen\ncbuiltins\nobject\nNtR.",
        b"(S'x'\ni__main__\nR\n.",  # INST opcode
        b"\x80\x02X\x01\x00\x00\x00xQ.",  # persistent id
    ]
    for g in gadgets:
        with pytest.raises(UntrustedCodeError, match=r"allow-list|persistent"):
            safe_pickle.loads(g)
        assert not marker.exists()
    monkeypatch.setenv(safe_pickle.TRUST_ENV, "numpy,os")  # trust cannot reach these
    for g in (gadgets[0], gadgets[2], gadgets[9]):
        with pytest.raises(UntrustedCodeError):
            safe_pickle.loads(g)
    assert not marker.exists()


@pytest.mark.parametrize("field,value", [("left_child", 10**9), ("right_child", 0),
                                         ("feature", 10**6), ("feature", -5)])
def test_a_tree_pointing_outside_its_arrays_is_refused(field, value):
    # made only of allowed objects, but predict would read out of bounds (a segfault)
    X, y = _data()
    tree = DecisionTreeClassifier(max_depth=2).fit(X, y)
    state = tree.tree_.__getstate__()
    state["nodes"] = state["nodes"].copy()
    state["nodes"][field][0] = value
    tree.tree_.__setstate__(state)
    with pytest.raises(UntrustedCodeError, match="outside its arrays"):
        safe_pickle.loads(dumps(tree))
    hgb = HistGradientBoostingClassifier(max_iter=2).fit(X, y)
    hgb._predictors[0][0].nodes["left"][0] = 60_000
    with pytest.raises(UntrustedCodeError, match="outside its arrays"):
        safe_pickle.loads(dumps(hgb))
    knn = KNeighborsClassifier(algorithm="kd_tree").fit(X, y)
    state = list(knn._tree.__getstate__())
    state[1] = state[1].copy()
    state[1][0] = 10**7
    knn._tree.__setstate__(tuple(state))
    with pytest.raises(UntrustedCodeError, match="outside its arrays"):
        safe_pickle.loads(dumps(knn))


# ------------------------------------------------------------------ forged stores
@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    X, y = _data(300)
    table = pa.table({**{f"f{i}": X[:, i] for i in range(4)}, "y": y})
    pq.write_table(table.drop(["y"]), root / "rows.parquet")
    SISAClassifier(PRESETS["sgd"](), n_shards=2, n_slices=2, backend="local",
                   store=str(root / "st")).fit(table, "y")
    return root


def _rewrite_manifest(st_dir, edit) -> None:
    """What a forger does: edit the manifest, recompute its checksum, drop any signature."""
    st = Store.open(str(st_dir), check_files=False)
    m = st.manifest.flat()
    edit(st, m)
    if m.get("signer"):
        m["signer"] = None
    try:
        manifest_mod.write(st.loc, m, None)
    except TypeError:  # before signing existed
        manifest_mod.write(st.loc, m)


def _forge_checkpoint(st_dir, key: str, payload: bytes, drop_later: bool = False) -> None:
    def edit(st, m):
        meta = m["model"]["checkpoints"][key]
        (st_dir / meta["file"]).unlink()
        new = st.put_blob(os.path.dirname(meta["file"]), ".pkl", payload)
        meta.update(new.to_json())
        if drop_later:
            s, r = map(int, key.split("/"))
            m["model"]["checkpoints"] = {k: v for k, v in m["model"]["checkpoints"].items()
                                         if not (v["shard"] == s and v["slice"] > r)}
    _rewrite_manifest(st_dir, edit)


def _forge_estimator(st_dir, payload: bytes, marker) -> None:
    def edit(st, m):
        est = m["model"]["estimator"]
        if "file" in est:  # a pickled prototype (before the spec)
            (st_dir / est["file"]).unlink()
            est.update(st.put_blob("model", ".pkl", payload).to_json())
        else:
            est["spec"] = {"class": "subprocess.Popen",
                           "params": {"args": ["touch", str(marker)]}}
    _rewrite_manifest(st_dir, edit)


@pytest.mark.parametrize("payload", ["os.system", "subprocess", "numpy.load", "builtins.eval",
                                     "sisa.cli.main"])
@pytest.mark.parametrize("where", ["last-checkpoint", "first-checkpoint", "estimator"])
def test_a_forged_store_is_refused_by_every_entry_point(pristine, tmp_path, payload, where,
                                                        capsys):
    st = tmp_path / "st"
    shutil.copytree(pristine / "st", st)
    marker = tmp_path / "pwned"
    evil = _payloads(tmp_path, marker, pristine / "st", pristine / "rows.parquet")[payload]
    if where == "estimator":
        _forge_estimator(st, evil, marker)
    else:  # the first checkpoint is loaded when repair retrains the slices after it
        _forge_checkpoint(st, "0/1" if where == "last-checkpoint" else "0/0", evil,
                          drop_later=where == "first-checkpoint")
    out = tmp_path / "pred.csv"
    codes = {cmd: sisa.cli.main(argv) for cmd, argv in [
        ("status", ["status", str(st)]),
        ("predict", ["predict", str(st), str(pristine / "rows.parquet"), "--out", str(out)]),
        ("verify", ["verify", str(st), "--backend", "local", "--quiet"]),
        ("repair", ["repair", str(st), "--backend", "local", "--quiet"]),
    ]}
    assert not marker.exists(), codes
    captured = capsys.readouterr()
    err = captured.err
    assert codes["predict"] == 1 and codes["verify"] == 1, (codes, err)
    assert "allow-list" in err + captured.out  # verify names the refused global
    assert not out.exists()
    if where == "estimator":  # nothing to rebuild it from: repair refuses, load refuses
        assert codes["repair"] == 1
        with pytest.raises(UntrustedCodeError):
            SISAClassifier.load(str(st))
    else:  # a forged checkpoint is damage: repair drops it and retrains it from the data
        assert codes["repair"] == 0, err
        assert verify(Store.open(st), settings=LOCAL).ok
        SISAClassifier.load(str(st))
    assert not marker.exists()


# ------------------------------------------------------------------- declarative spec
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_the_spec_round_trips_and_trains_byte_identically(name):
    est = ESTIMATORS[name]()
    spec = json.loads(json.dumps(to_spec(clone(est))))  # through JSON, as in the manifest
    rebuilt = from_spec(spec)
    assert dumps(rebuilt) == dumps(clone(est))
    # what sisa trained from before (the unpickled prototype) and what it trains from now
    before = pickle.loads(dumps(clone(est)))
    X, y = _data(regression=not is_classifier(est))
    classes = np.unique(y) if is_classifier(est) else None
    sched = Schedule("streaming", 2, 2, hasattr(est, "partial_fit"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = sched.step(None, before, X, y, classes, 7, 1, 0)
        b = sched.step(None, rebuilt, X, y, classes, 7, 1, 0)
        a = sched.step(a, before, X, y, classes, 7, 1, 1)
        b = sched.step(b, rebuilt, X, y, classes, 7, 1, 1)
    assert dumps(a) == dumps(b)


def test_spec_values_round_trip_exactly():
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    odd = [
        SGDClassifier(tol=float("nan"), epsilon=float("-inf"), alpha=np.float32(0.1),
                      class_weight={0: np.int64(1), "b": (1, 2.5)}),
        GaussianNB(priors=np.asfortranarray(np.ones((2, 2)) / 4)),
        OneHotEncoder(dtype=np.float32, categories=[np.array(["a", "b"])]),
        ColumnTransformer([("a", FunctionTransformer(np.log1p), slice(0, 2, None))]),
    ]
    for est in odd:
        spec = json.loads(json.dumps(to_spec(est)))
        assert dumps(from_spec(spec)) == dumps(est), est


def test_a_fit_stores_the_spec_and_no_pickled_prototype(pristine):
    st = Store.open(str(pristine / "st"))
    est = st.manifest["model"]["estimator"]
    assert est["class"] == "sisa.engine.pipeline.IncrementalPipeline" and "steps" in est["params"]
    assert "file" not in est and not (pristine / "st" / "model").exists()
    assert dumps(from_spec(est["spec"])) == dumps(PRESETS["sgd"]())


def test_a_parameter_the_spec_cannot_express_is_a_one_line_error():
    X, y = _data()
    bad = SGDClassifier(random_state=np.random.RandomState(0))
    with pytest.raises(InputError, match=r"SGDClassifier\.random_state = RandomState") as info:
        SISAClassifier(bad, n_shards=2, n_slices=2, backend="local").fit(X, y)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"steps\[1\]\[1\]\.tol = object"):
        to_spec(Pipeline([("s", StandardScaler()), ("m", SGDClassifier(tol=object()))]))
    with pytest.raises(InputError, match="memory"):
        SISAClassifier(Pipeline([("m", SGDClassifier())], memory=".cache"), n_shards=2,
                       n_slices=2, backend="local").fit(X, y)


@pytest.mark.parametrize("spec", [
    {"class": "subprocess.Popen", "params": {"args": ["touch", "X"]}},
    {"class": "os.system", "params": {}},
    {"class": "builtins.eval"},
    {"class": "sisa.cli.main"},
    {"class": "numpy.load"},
    {"class": "pathlib.Path"},
    {"class": "sklearn.base.clone"},
    {"class": "sklearn.preprocessing.FunctionTransformer",
     "params": {"func": {"callable": "posix.system"}}},
    {"class": "sklearn.preprocessing.FunctionTransformer",
     "params": {"func": {"callable": "sklearn.datasets.fetch_openml"}}},
])
def test_a_spec_instantiates_estimator_classes_only(spec):
    with pytest.raises(UntrustedCodeError):
        from_spec(spec)


def test_model_spec_popen_exits_2_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    X, y = _data(50)
    pq.write_table(pa.table({"a": X[:, 0], "y": y}), tmp_path / "d.parquet")
    spec = json.dumps({"class": "subprocess.Popen", "params": {"args": ["touch", str(marker)]}})
    code = sisa.cli.main(["train", str(tmp_path / "d.parquet"), "--label", "y", "--store",
                          str(tmp_path / "st"), "--model-spec", spec])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "subprocess.Popen" in err
    assert not marker.exists() and not (tmp_path / "st").exists()


def test_a_user_class_is_refused_unless_trusted(monkeypatch):
    spec = to_spec(UserEstimator(alpha=2.0))
    module = UserEstimator.__module__
    with pytest.raises(UntrustedCodeError, match=f"SISA_TRUSTED_MODULES={module}"):
        from_spec(spec)
    with pytest.raises(UntrustedCodeError):
        safe_pickle.loads(dumps(UserEstimator()))
    assert from_spec(spec, trusted=[module]).alpha == 2.0
    monkeypatch.setenv(safe_pickle.TRUST_ENV, f"x,{module}")
    assert from_spec(spec).alpha == 2.0 and safe_pickle.loads(dumps(UserEstimator())).alpha == 1
    monkeypatch.delenv(safe_pickle.TRUST_ENV)
    # naming it on one's own command line trusts it for that process only
    est = cli_spec(json.dumps({"class": f"{module}.UserEstimator", "params": {"alpha": 3}}))
    assert est.alpha == 3 and from_spec(spec).alpha == 2.0
    with pytest.raises(InputError, match="not a scikit-learn estimator class"):
        cli_spec(json.dumps({"class": f"{module}._PickledSystem", "params": {"cmd": "x"}}))
