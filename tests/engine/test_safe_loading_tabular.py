"""Tabular models checkpoint and load under the no-code-from-a-store rule (issue 23).

Histogram boosting with categorical features holds ``functools.partial(check_array, ...)``
in its fitted preprocessor; encoders, imputers, column transformers and text models hold
only arrays. Each is fitted on a small table with a category column and missing values,
checkpointed with sisa's canonical pickler and loaded with the restricted loader; forged
partials and function transformers are refused before anything of them is called.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickletools
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    OrdinalEncoder,
    StandardScaler,
)
from sklearn.utils.validation import check_array

from sisa import SISAClassifier
from sisa.engine import safe_pickle
from sisa.engine.checkpoints import dumps
from sisa.errors import UntrustedCodeError


@pytest.fixture(autouse=True)
def _no_trust(monkeypatch):
    """No trust from the environment or from another test's session."""
    monkeypatch.setattr(safe_pickle, "_SESSION", set())
    monkeypatch.delenv(safe_pickle.TRUST_ENV, raising=False)


def _table(n=300, seed=0):
    """A small table: a string category (one rare level), a numeric column with NaN, a
    category-dtype column, and a label that depends on them."""
    rng = np.random.default_rng(seed)
    city = rng.choice(["paris", "lyon", "nice", "lille"], n).astype(object)
    city[7] = "brest"  # a level seen once
    age = rng.normal(40, 10, n)
    age[rng.random(n) < 0.1] = np.nan
    kind = pd.Categorical(rng.choice(["a", "b", "c"], n))
    df = pd.DataFrame({"city": city, "age": age, "kind": kind})
    y = ((np.nan_to_num(age, nan=40) > 40) ^ (city == "lyon")).astype(int)
    return df, y


def _codes(df):
    """The table as numbers: integer category codes and NaN (what HGB takes directly)."""
    return np.c_[pd.Categorical(df["city"]).codes, df["age"], df["kind"].cat.codes]


def _ct(remainder="drop"):
    return ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), ["city", "kind"]),
                              ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age"])],
                             remainder=remainder)


# name -> (estimator factory, which X, supervised)
MODELS = {
    "hgb-cat-index": (lambda: HistGradientBoostingClassifier(
        max_iter=5, random_state=0, categorical_features=[0, 2]), "codes", True),
    "hgb-cat-mask": (lambda: HistGradientBoostingClassifier(
        max_iter=5, random_state=0, categorical_features=[True, False, True]), "codes", True),
    "hgb-cat-from-dtype": (lambda: HistGradientBoostingClassifier(
        max_iter=5, random_state=0, categorical_features="from_dtype"), "category-frame", True),
    "hgb-regressor-cat": (lambda: HistGradientBoostingRegressor(
        max_iter=5, random_state=0, categorical_features=[0]), "codes", True),
    "onehot-sparse": (lambda: OneHotEncoder(handle_unknown="ignore"), "strings", False),
    "onehot-dense": (lambda: OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                     "strings", False),
    "ordinal": (lambda: OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                "strings", False),
    "column-transformer-sgd": (lambda: Pipeline([("pre", _ct()), ("m", SGDClassifier(
        random_state=0))]), "frame", True),
    "column-transformer-remainder": (lambda: ColumnTransformer(
        [("oh", OneHotEncoder(sparse_output=False), ["city"])], remainder="passthrough"),
        "numeric-frame", False),
    "imputer": (lambda: SimpleImputer(strategy="median"), "codes", False),
    "scaler": (lambda: StandardScaler(), "codes", False),
    "tfidf-nb": (lambda: make_pipeline(TfidfTransformer(), MultinomialNB()), "counts", True),
    "function-transformer-ufunc": (lambda: FunctionTransformer(np.log1p, np.expm1),
                                   "positive", False),
}


def _X(kind, df):
    if kind == "codes":
        return _codes(df)
    if kind == "category-frame":
        return df.astype({"city": "category"})
    if kind == "strings":
        return df[["city"]]
    if kind == "frame":
        return df
    if kind == "numeric-frame":
        return df[["city", "age"]]
    if kind == "counts":
        return np.random.default_rng(1).integers(0, 5, size=(len(df), 12))
    return np.abs(np.nan_to_num(_codes(df)))


def fitted(name):
    """The fitted model of ``MODELS[name]`` and the X it was fitted on."""
    make, kind, supervised = MODELS[name]
    df, y = _table()
    X = _X(kind, df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make().fit(X, y) if supervised else make().fit(X)
    return model, X


def _outputs(model, X):
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)
    if hasattr(model, "predict"):
        return model.predict(X)
    out = model.transform(X)
    return out.toarray() if hasattr(out, "toarray") else out


@pytest.mark.parametrize("name", list(MODELS))
def test_a_tabular_model_checkpoints_and_loads_exactly(name):
    model, X = fitted(name)
    blob = dumps(model)
    loaded = safe_pickle.loads(blob, source=f"checkpoint {name}")
    np.testing.assert_array_equal(_outputs(loaded, X), _outputs(model, X))
    assert dumps(loaded) == blob  # bit-exact: a reloaded model re-dumps to the same bytes


def test_histogram_boosting_holds_a_checked_partial_of_check_array():
    model, _ = fitted("hgb-cat-index")
    loaded = safe_pickle.loads(dumps(model))
    func = loaded._preprocessor.transformers_[1][1].func
    assert isinstance(func, safe_pickle.CheckedPartial) and func.func is check_array


def test_checkpoint_bytes_are_the_same_in_another_process():
    here = {name: hashlib.sha256(dumps(fitted(name)[0])).hexdigest() for name in MODELS}
    code = ("import hashlib, json; from sisa.engine.checkpoints import dumps; "
            "from tests.engine.test_safe_loading_tabular import MODELS, fitted; "
            "print(json.dumps({n: hashlib.sha256(dumps(fitted(n)[0])).hexdigest() "
            "for n in MODELS}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another string hash order too
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


# ------------------------------------------------------------------------ forgeries
def _global(module: str, name: str) -> bytes:
    """How sisa's protocol-5 pickles name a global (no memo: ``Pickler.fast``)."""
    return (b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)])
            + name.encode() + b"\x93")


def _unframed(blob: bytes) -> bytes:
    """The same pickle without protocol 4+ FRAME opcodes (optional), so that a forger's
    edit may change its length."""
    cuts = [pos for op, _, pos in pickletools.genops(blob) if op.name == "FRAME"]
    for pos in reversed(cuts):
        blob = blob[:pos] + blob[pos + 9:]
    return blob


def _swap(blob: bytes, old: tuple[str, str], new: tuple[str, str]) -> bytes:
    blob = _unframed(blob)
    assert blob.count(_global(*old)) >= 1, old
    return blob.replace(_global(*old), _global(*new))


# Callables a forger may swap in: never allowed, or allowed as values but not as functions
# a model calls (classes, reconstructors, sklearn functions that are not check_array).
FORGED_FUNCTIONS = [
    ("posix", "system"), ("os", "system"), ("builtins", "eval"), ("builtins", "exec"),
    ("builtins", "getattr"), ("builtins", "__import__"), ("operator", "attrgetter"),
    ("subprocess", "Popen"), ("numpy", "load"), ("numpy", "memmap"),
    ("sklearn.base", "clone"), ("sklearn.datasets", "fetch_openml"),
    ("sklearn.linear_model._stochastic_gradient", "SGDClassifier"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("copyreg", "_reconstructor"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
    ("builtins", "bytearray"), ("functools", "partial"),
]


@pytest.mark.parametrize("target", FORGED_FUNCTIONS, ids="{0[0]}.{0[1]}".format)
def test_a_partial_of_anything_but_an_allowed_function_is_refused(target):
    model, _ = fitted("hgb-cat-index")
    forged = _swap(dumps(model), ("sklearn.utils.validation", "check_array"), target)
    with pytest.raises(UntrustedCodeError, match="allow-list"):
        safe_pickle.loads(forged)


@pytest.mark.parametrize("target", FORGED_FUNCTIONS, ids="{0[0]}.{0[1]}".format)
def test_a_function_transformer_calls_only_allowed_functions(target):
    model, _ = fitted("function-transformer-ufunc")
    forged = _swap(dumps(model), ("numpy", "log1p"), target)
    with pytest.raises(UntrustedCodeError, match="allow-list"):
        safe_pickle.loads(forged)


def _partial_with_state(state_func: tuple[str, str]) -> bytes:
    """``partial(check_array)`` whose pickled state (BUILD) replaces the function."""
    good = _unframed(dumps(functools.partial(check_array)))
    head = _global("sklearn.utils.validation", "check_array")
    first = good.index(head) + len(head)  # the constructor's argument stays check_array
    return good[:first] + good[first:].replace(head, _global(*state_func), 1)


def test_the_state_of_a_partial_cannot_replace_its_function(tmp_path):
    ok = safe_pickle.loads(_partial_with_state(("sklearn.utils.validation", "check_array")))
    assert ok.func is check_array
    for target in [("numpy.random._pickle", "__randomstate_ctor"), ("copyreg", "_reconstructor"),
                   ("sklearn.preprocessing._data", "StandardScaler"), ("posix", "system")]:
        with pytest.raises(UntrustedCodeError, match="allow-list"):
            safe_pickle.loads(_partial_with_state(target))
    marker = tmp_path / "pwned"
    gadgets = [  # protocol 0 spellings
        b"cfunctools\npartial\n(cposix\nsystem\ntR.",
        b"cfunctools\npartial\n(cbuiltins\neval\nS'1'\ntR.",
        b"cfunctools\npartial\n(ccopyreg\n_reconstructor\ntR.",
        b"cfunctools\npartial\n(cfunctools\npartial\ntR.",
        b"cfunctools\npartial\n(csklearn.utils.validation\ncheck_array\nt"  # BUILD: bad state
        b"R(cposix\nsystem\n(S'touch %s'\nt}Ntb." % str(marker).encode(),
        b"cfunctools\npartial\n(csklearn.utils.validation\ncheck_array\ntRS'x'\nb.",
    ]
    for g in gadgets:
        with pytest.raises(UntrustedCodeError):
            safe_pickle.loads(g)
    assert not marker.exists()


def test_a_function_transformer_hidden_in_an_object_array_is_checked():
    # sklearn iterates a ColumnTransformer's transformers_: an object array would do
    model, _ = fitted("column-transformer-remainder")
    arr = np.empty(1, dtype=object)
    arr[0] = FunctionTransformer(np.log1p)
    model.hidden_ = arr
    assert safe_pickle.loads(dumps(model)).hidden_[0].func is np.log1p
    forged = _swap(dumps(model), ("numpy", "log1p"), ("copyreg", "_reconstructor"))
    with pytest.raises(UntrustedCodeError, match="FunctionTransformer whose func"):
        safe_pickle.loads(forged)


def test_a_trusted_module_function_may_be_a_partial(monkeypatch):
    blob = _swap(dumps(functools.partial(check_array)), ("sklearn.utils.validation",
                                                          "check_array"), ("json", "dumps"))
    with pytest.raises(UntrustedCodeError):
        safe_pickle.loads(blob)
    assert safe_pickle.loads(blob, trusted=["json"]).func is json.dumps
    monkeypatch.setenv(safe_pickle.TRUST_ENV, "json")
    assert safe_pickle.loads(blob).func is json.dumps


# --------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("forge", ["raw-bitsets-1-word", "binned-bitsets-1-d",
                                   "is-categorical-short"])
def test_categorical_histogram_boosting_reading_outside_its_arrays_is_refused(forge):
    """Made only of allowed objects, but predict would read past an array in Cython
    (``bitset[i, value // 32]`` on rows of fewer than 8 words; ``f_idx_map`` of
    ``is_categorical_``'s length indexed by a feature index): refused at load."""
    model, _ = fitted("hgb-cat-index")
    pred = model._predictors[0][0]
    assert pred.nodes["is_categorical"].any()
    if forge == "raw-bitsets-1-word":
        pred.raw_left_cat_bitsets = pred.raw_left_cat_bitsets[:, :1].copy()
    elif forge == "binned-bitsets-1-d":
        pred.binned_left_cat_bitsets = pred.binned_left_cat_bitsets.ravel().copy()
    else:
        model._bin_mapper.is_categorical_ = model._bin_mapper.is_categorical_[:1].copy()
    with pytest.raises(UntrustedCodeError, match="forged"):
        safe_pickle.loads(dumps(model), source="checkpoint 0/0")


def test_sisa_trains_verifies_and_forgets_histogram_boosting_on_category_codes(tmp_path):
    df, y = _table(400)
    X = _codes(df)
    X[:, 1] = np.nan_to_num(X[:, 1], nan=40.0)  # numeric: the store keeps finite floats
    model = SISAClassifier(HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]),
                           n_shards=2, n_slices=1, backend="local", store=str(tmp_path / "st"))
    model.fit(X, y)
    assert model.verify().ok
    before = model.predict(X)
    model.forget([3, 7, 11])
    assert model.verify().ok
    loaded = SISAClassifier.load(str(tmp_path / "st"))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert before.shape == model.predict(X).shape


def test_state_set_on_a_class_or_function_is_refused_and_changes_nothing():
    # BUILD with a slot state is setattr: on a global it would change the class (or
    # function) for the whole process, for every model loaded after it from any store
    import scipy.sparse as sp

    dot, transform = sp.csr_matrix.dot, StandardScaler.transform
    kwdefaults = dict(check_array.__kwdefaults__)
    gadgets = [
        b"\x80\x04cscipy.sparse._csr\ncsr_matrix\nN}\x8c\x03dot\x94cnumpy\nadd\n\x94s\x86b.",
        b"cscipy.sparse._csr\ncsr_matrix\np0\n0g0\n(N}S'dot'\ncnumpy\nadd\nstb.",  # via memo
        b"csklearn.utils.validation\ncheck_array\n(N}S'__kwdefaults__'\n}S'dtype'\nNsstb.",
        b"ccopyreg\n_reconstructor\n2(N}S'__defaults__'\n(I1\ntstb0.",  # DUP
        b"ccopyreg\n_reconstructor\nS'a'\nI1\ns.",  # SETITEM
        b"cnumpy.random._pickle\n__randomstate_ctor\n(I1\ne.",  # APPENDS
        b"\x80\x04cscipy.sparse._csr\ncsr_matrix\n(K\x01\x90.",  # ADDITEMS
        b"\x80\x04csklearn.preprocessing._data\nStandardScaler\nN}\x8c\x09transform"
        b"cnumpy\nnegative\ns\x86b.",
        # a call that hands the global back: logical_or(csr_matrix, 0) is csr_matrix
        b"\x80\x04cnumpy\nlogical_or\ncscipy.sparse._csr\ncsr_matrix\nK\x00\x86RN}"
        b"\x8c\x03dotcnumpy\nadd\ns\x86b.",
        b"\x80\x04cnumpy\nlogical_or\ncscipy.sparse._csr\ncsr_matrix\n\x85K\x00\x86RN}"
        b"\x8c\x03dotcnumpy\nadd\ns\x86b.",  # through a tuple
        b"\x80\x04csklearn.utils.validation\ncheck_array\ncscipy.sparse._csr\ncsr_matrix\n"
        b"\x85RN}\x8c\x03dotcnumpy\nadd\ns\x86b.",
        # through an object array: _reconstruct, BUILD its items, then logical_or(arr, 0)
        b"cnumpy\nlogical_or\n(cnumpy._core.multiarray\n_reconstruct\n(cnumpy\nndarray\n"
        b"(tS'b'\ntR(I1\n(tcnumpy\ndtype\n(S'O8'\nI0\nI1\ntR(I3\nS'|'\nNNNI-1\nI-1\n"
        b"I63\ntbI00\n(lp0\ncscipy.sparse._csr\ncsr_matrix\natbI0\ntR(N}S'dot'\n"
        b"cnumpy\nadd\nstb.",
    ]
    for g in gadgets:
        with pytest.raises(UntrustedCodeError, match="sets state on a class or function"):
            safe_pickle.loads(g)
    assert sp.csr_matrix.dot is dot and check_array.__kwdefaults__ == kwdefaults
    assert StandardScaler.transform is transform
