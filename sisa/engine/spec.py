"""The estimator as a declarative spec: JSON in the manifest instead of a pickle.

``to_spec(SGDClassifier(alpha=1e-4))`` gives ``{"class":
"sklearn.linear_model._stochastic_gradient.SGDClassifier", "params": {"alpha": 0.0001,
...}}``. Parameter values are JSON scalars, lists and, tagged by a one-key object,
``{"tuple": [...]}``, ``{"dict": [[key, value], ...]}`` (any keys, order kept),
``{"float": "nan"}``, ``{"slice": [start, stop, step]}``,
``{"scalar": "<f4", "value": ...}`` (numpy scalars),
``{"ndarray": {"dtype", "shape", "data"}}`` (small numeric arrays),
``{"callable": "module.name"}`` (functions and classes), or nested estimators.

``from_spec`` builds the estimator back, and instantiates only scikit-learn
estimator classes (subclasses of ``BaseEstimator``) from ``sklearn``/``sisa`` or a
module the user trusts; every other name goes through the allow-list of
:mod:`sisa.engine.safe_pickle`. So ``verify`` and ``load`` rebuild the prototype
without running code from the store, and the spec round-trips exactly:
``dumps(from_spec(to_spec(e))) == dumps(e)`` for an unfitted ``e``.
"""

from __future__ import annotations

import inspect
import math
import pickle
from collections.abc import Iterable

import numpy as np

from ..errors import InputError, UntrustedCodeError
from . import safe_pickle

MAX_ARRAY = 100_000  # elements: a parameter array is a setting, not data
_TAGS = ("tuple", "dict", "float", "slice", "scalar", "ndarray", "callable")


def _name_of(module: str, qual: str) -> str:
    # "module.Class" reads well; a nested qualname needs ":" to split unambiguously.
    return f"{module}:{qual}" if "." in qual else f"{module}.{qual}"


def _plain_dtype(dt: np.dtype) -> bool:
    """Numbers and text that JSON holds exactly (float item() is exact up to 64 bits)."""
    return dt.kind in "biuU" or (dt.kind == "f" and dt.itemsize <= 8)


def _split(path: str) -> tuple[str, str]:
    if not isinstance(path, str) or not path:
        raise UntrustedCodeError(f"estimator spec names {path!r}, not a 'module.Name' string")
    module, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not name:
        raise UntrustedCodeError(f"estimator spec names {path!r}: expected 'module.Name'")
    return module, name


def to_spec(estimator) -> dict:
    """The JSON-able spec of an unfitted estimator (its ``get_params(deep=False)``).

    Raises
    ------
    InputError
        A parameter holds a value the spec cannot express; the message names it.
    """
    return _estimator(estimator, type(estimator).__name__)


def _estimator(est, where: str) -> dict:
    if not hasattr(est, "get_params") or isinstance(est, type):
        raise InputError(f"{where} is a {type(est).__name__}, not a scikit-learn estimator")
    params = est.get_params(deep=False)
    return {"class": _name_of(type(est).__module__, type(est).__qualname__),
            "params": {k: _value(v, f"{where}.{k}") for k, v in params.items()}}


def _value(v, where: str):
    if v is None or type(v) in (bool, str, int):  # not np.str_ / np.float64 (subclasses)
        return v
    if type(v) is float:
        return v if math.isfinite(v) else {"float": repr(v)}
    if type(v) is list:
        return [_value(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if type(v) is tuple:
        return {"tuple": [_value(x, f"{where}[{i}]") for i, x in enumerate(v)]}
    if type(v) is dict:
        return {"dict": [[_value(k, f"{where} key"), _value(x, f"{where}[{k!r}]")]
                         for k, x in v.items()]}
    if type(v) is slice:  # ColumnTransformer columns
        return {"slice": [_value(x, where) for x in (v.start, v.stop, v.step)]}
    if hasattr(v, "get_params") and not isinstance(v, type):
        return _estimator(v, where)
    if isinstance(v, np.generic) and _plain_dtype(v.dtype):
        return {"scalar": v.dtype.str, "value": _value(v.item(), where)}
    if type(v) is np.ndarray and _plain_dtype(v.dtype) and v.size <= MAX_ARRAY:
        # pickles record the memory order, so an F-ordered array must come back F-ordered
        order = "F" if v.flags.f_contiguous and not v.flags.c_contiguous else "C"
        out = {"dtype": v.dtype.str, "shape": list(v.shape),
               "data": [_value(x, where) for x in v.ravel(order=order).tolist()]}
        if order == "F":
            out["order"] = "F"
        return {"ndarray": out}
    if isinstance(v, (type, np.ufunc)) or inspect.isfunction(v) or inspect.isbuiltin(v):
        name = getattr(v, "__qualname__", None) or v.__name__
        module = getattr(v, "__module__", None) or pickle.whichmodule(v, name)
        if "<" not in name and module != "__main__":
            return {"callable": _name_of(module, name)}
    hint = (" (sisa seeds every shard, slice and pass itself: pass an int)"
            if isinstance(v, (np.random.RandomState, np.random.Generator)) else "")
    raise InputError(
        f"parameter {where} = {type(v).__name__} cannot be recorded in the store's estimator "
        f"spec{hint}: use numbers, strings, lists, dicts, small numeric arrays, estimators or "
        "named functions")


def from_spec(spec, *, trusted: Iterable[str] = ()):
    """Build the estimator a spec describes, instantiating only estimator classes.

    Parameters
    ----------
    spec : dict
        ``{"class": "module.Name", "params": {...}}`` as :func:`to_spec` writes it (a
        hand-written spec may use plain JSON values).
    trusted : iterable of str, default=()
        Modules trusted on top of ``$SISA_TRUSTED_MODULES`` (their classes and functions
        are allowed); scikit-learn and sisa estimator classes always are.

    Raises
    ------
    UntrustedCodeError
        The spec names a class or function outside the allow-list, or a class that is
        not a scikit-learn estimator.
    """
    return _build(spec, tuple(trusted), "the estimator spec")


def _build(spec, trusted: tuple[str, ...], where: str):
    if not isinstance(spec, dict) or "class" not in spec:
        raise UntrustedCodeError(f"{where} is not an estimator spec: expected "
                                 '{"class": "module.Name", "params": {...}}')
    module, name = _split(spec["class"])
    cls = safe_pickle.resolve(module, name, trusted=trusted, source=where, classes_only=True)
    from sklearn.base import BaseEstimator

    if not issubclass(cls, BaseEstimator):
        raise UntrustedCodeError(
            f"{where} names {module}.{name}, which is not a scikit-learn estimator class "
            "(a subclass of sklearn.base.BaseEstimator); sisa instantiates only those")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise UntrustedCodeError(f"{where}: params of {name} must be a JSON object")
    if params.get("memory") is not None:
        # joblib.Memory caches fitted steps outside the store (deleted rows included) and
        # unpickles its cache without limits
        raise UntrustedCodeError(f"{where}: {name}.memory={params['memory']!r} is refused: "
                                 "sisa trains without a joblib cache; use memory=None")
    kw = {str(k): _decode(v, trusted, f"{name}.{k}") for k, v in params.items()}
    try:
        return cls(**kw)
    except TypeError as exc:
        raise InputError(f"{where}: {name}({', '.join(kw)}) failed ({exc}): check the "
                         "parameter names") from None


def _decode(v, trusted: tuple[str, ...], where: str):
    if isinstance(v, list):
        return [_decode(x, trusted, where) for x in v]
    if not isinstance(v, dict):
        return v
    if "class" in v:
        return _build(v, trusted, where)
    if len(v) == 1 or (len(v) == 2 and "scalar" in v):
        tag = next(iter(k for k in v if k in _TAGS), None)
        body = v.get(tag)
        if tag == "tuple":
            return tuple(_decode(x, trusted, where) for x in body)
        if tag == "dict":
            return {_decode(k, trusted, where): _decode(x, trusted, where) for k, x in body}
        if tag == "slice":
            return slice(*(_decode(x, trusted, where) for x in body))
        if tag == "float":
            return float(body)  # "nan", "inf", "-inf"
        if tag == "scalar":
            return _dtype(body, where).type(_decode(v["value"], trusted, where))
        if tag == "ndarray":
            data = [_decode(x, trusted, where) for x in body["data"]]
            arr = np.array(data, dtype=_dtype(body["dtype"], where))
            arr = arr.reshape(body["shape"], order=body.get("order", "C"))
            return np.asfortranarray(arr) if body.get("order") == "F" else arr
        if tag == "callable":
            module, name = _split(body)
            return safe_pickle.resolve(module, name, trusted=trusted, source=where)
    return {k: _decode(x, trusted, where) for k, x in v.items()}  # a plain JSON object


def own_modules(spec) -> set[str]:
    """Modules of the classes and functions a spec names outside the allow-list (the
    caller's own estimator package), never-trusted ones excluded."""
    out: set[str] = set()

    def visit(v) -> None:
        if isinstance(v, list):
            for x in v:
                visit(x)
        elif isinstance(v, dict):
            for key in ("class", "callable"):
                if isinstance(v.get(key), str):
                    module, name = _split(v[key])
                    try:
                        safe_pickle.resolve(module, name, trusted=(), source="")
                    except UntrustedCodeError:
                        if not safe_pickle.never_trusted(module):
                            out.add(module)
            for x in v.values():
                visit(x)

    visit(spec)
    return out


def _dtype(text, where: str) -> np.dtype:
    """Only the plain dtypes :func:`to_spec` writes: no object arrays from a spec."""
    try:
        dt = np.dtype(str(text))
    except (TypeError, ValueError):
        dt = None
    if dt is None or not _plain_dtype(dt):
        raise UntrustedCodeError(f"{where}: dtype {text!r} is not one sisa records (numbers, "
                                 "booleans, text)")
    return dt


def check(estimator) -> dict:
    """The spec a fit will store, after a dry ``from_spec``.

    The caller handed sisa this estimator, so the modules of its own classes are
    trusted for this process (:func:`sisa.engine.safe_pickle.trust_for_session`);
    loading the store in another process needs ``SISA_TRUSTED_MODULES`` for them.

    Raises
    ------
    InputError
        A parameter cannot be recorded, or the spec names code sisa never loads
        (``os.system``, ``numpy.load``, a Pipeline ``memory``...).
    """
    spec = to_spec(estimator)
    safe_pickle.trust_for_session(own_modules(spec))
    try:
        from_spec(spec)
    except UntrustedCodeError as exc:
        raise InputError(str(exc)) from None
    return spec
