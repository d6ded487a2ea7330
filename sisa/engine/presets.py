"""Named model presets for the CLI, and ``--model-spec`` JSON for anything else.

Presets scale features *inside* each shard model (``IncrementalPipeline``), so the
scaler's statistics are unlearned with the model instead of leaking every row.
"""

from __future__ import annotations

import importlib
import json

from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier, SGDRegressor
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from ..deep import SMALL_CNN_LAYERS, TorchClassifier
from ..errors import InputError, UntrustedCodeError
from . import spec as _spec
from .pipeline import IncrementalPipeline


def _scaled(model, incremental: bool = True):
    cls = IncrementalPipeline if incremental else Pipeline
    return cls([("scale", StandardScaler()), ("model", model)])


PRESETS = {
    "sgd": lambda: _scaled(SGDClassifier(loss="log_loss", alpha=1e-4)),
    "logistic": lambda: _scaled(LogisticRegression(max_iter=500), incremental=False),
    "mlp": lambda: _scaled(MLPClassifier(hidden_layer_sizes=(64,), learning_rate_init=1e-3)),
    "naive-bayes": lambda: GaussianNB(),
    "tree": lambda: DecisionTreeClassifier(max_depth=12, min_samples_leaf=5),
    # takes tables as they are: category (string) columns and missing values, natively
    "hgb": lambda: HistGradientBoostingClassifier(categorical_features="from_dtype"),
    # PyTorch (pip install 'sisa[torch]'): a small CNN for square grey images (features
    # are the pixels, e.g. fashion-mnist) and an MLP on standardised features.
    "cnn": lambda: TorchClassifier(SMALL_CNN_LAYERS, lr=4e-3, batch_size=64),
    "torch-mlp": lambda: _scaled(TorchClassifier(
        [{"layer": "linear", "out_features": 64}, "relu", {"layer": "linear"}], lr=1e-3)),
    "sgd-regressor": lambda: _scaled(SGDRegressor(alpha=1e-4)),
    "ridge": lambda: _scaled(Ridge(alpha=1.0), incremental=False),
    "mlp-regressor": lambda: _scaled(MLPRegressor(hidden_layer_sizes=(64,))),
    "tree-regressor": lambda: DecisionTreeRegressor(max_depth=12, min_samples_leaf=5),
    "hgb-regressor": lambda: HistGradientBoostingRegressor(categorical_features="from_dtype"),
}
REGRESSION_PRESETS = {"sgd-regressor", "ridge", "mlp-regressor", "tree-regressor",
                      "hgb-regressor"}


def from_preset(name: str) -> BaseEstimator:
    if name not in PRESETS:
        raise InputError(f"unknown model {name!r}: choose one of {', '.join(PRESETS)} or pass "
                         "--model-spec with a class path")
    return PRESETS[name]()


def _public_paths(obj):
    """Users write scikit-learn's public paths (``sklearn.linear_model.SGDClassifier``);
    the spec names where a class is defined (``sklearn.linear_model._stochastic_gradient``).
    Resolve re-exports of sklearn/sisa classes (importing those packages runs no user
    code); anything else is left for the allow-list to judge."""
    if isinstance(obj, list):
        return [_public_paths(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _public_paths(v) for k, v in obj.items()}
    path = out.get("class")
    if isinstance(path, str) and ":" not in path and path.split(".")[0] in ("sklearn", "sisa"):
        module, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if isinstance(cls, type):
            out["class"] = f"{cls.__module__}.{cls.__qualname__}"
    return out


def from_spec(spec: str) -> BaseEstimator:
    """``{"class": "sklearn.linear_model.SGDClassifier", "params": {"alpha": 1e-4}}``.

    Only scikit-learn-compatible estimator classes (subclasses of ``BaseEstimator``) are
    instantiated, never functions or other classes (``subprocess.Popen``, ``os.system``,
    builtins). The command line is the user's own: a class from the user's package is
    trusted for this process (training and its Ray tasks rebuild it); loading the store
    in a later process needs ``SISA_TRUSTED_MODULES=<module>``.
    """
    example = ('expected JSON like {"class": "sklearn.linear_model.SGDClassifier", '
               '"params": {"alpha": 0.0001}}')
    try:
        obj = json.loads(spec)
    except ValueError as exc:
        raise InputError(f"bad --model-spec ({exc}): {example}") from None
    path = obj.get("class") if isinstance(obj, dict) else None
    if not isinstance(path, str) or not isinstance(obj.get("params", {}), dict):
        raise InputError(f"bad --model-spec: {example}")
    obj = _public_paths(obj)
    path = obj["class"]
    module = path.partition(":")[0] if ":" in path else path.rpartition(".")[0]
    own = (bool(module) and module.split(".")[0] not in ("sklearn", "sisa")
           and not _spec.safe_pickle.never_trusted(module))
    try:
        est = _spec.from_spec(obj, trusted=(module,) if own else ())
    except UntrustedCodeError as exc:
        raise InputError(f"--model-spec must name a scikit-learn estimator class: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"bad --model-spec ({type(exc).__name__}: {exc}): {example}") from None
    if own:
        _spec.safe_pickle.trust_for_session([module])
    return est
