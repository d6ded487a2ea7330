"""``SISAClassifier`` and ``SISARegressor``, and opening the model of a store."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import ClassVar

from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if

from .. import aggregate
from .base import _SISABase


class SISAClassifier(ClassifierMixin, _SISABase):
    """A SISA ensemble classifier: one sub-model per shard, trained slice by slice,
    able to forget rows exactly.

    Parameters
    ----------
    estimator : classifier, default=None
        The unfitted sub-model cloned for every shard. Estimators with ``partial_fit``
        train incrementally slice by slice; others are fit once on the shard's rows
        (slicing saves them nothing: use ``n_slices=1``). Default:
        ``SGDClassifier(loss="log_loss")``.
    n_shards : int, default=5
        S: disjoint shards, one sub-model each. More shards make a forget cheaper
        and each sub-model weaker.
    n_slices : int, default=4
        R: slices per shard, with a checkpoint after each.
    aggregation : {"hard", "soft"}, default=None
        Majority vote, or mean of ``predict_proba``. Default: "soft" when the
        estimator has ``predict_proba``, else "hard".
    store : str or path, default=None
        Where the data and checkpoints live (local path, ``file://``, ``s3://``...).
        Default: a temporary directory owned by the estimator. Fitting replaces a
        store already there.
    random_state : int, default=0
        Keys the row assignment and every training seed.
    ray_address : str, default=None
        A Ray cluster to run shard tasks on (else ``RAY_ADDRESS``, else an embedded
        local Ray started on first need).
    backend : {"auto", "ray", "local"}, default="auto"
        Where shard tasks run; "auto" avoids starting Ray for a single shard.
    schedule : {"streaming", "cumulative"}, default="streaming"
        Per-slice training schedule; see :class:`sisa.engine.Schedule`.
    epochs : int or "auto", default="auto"
        Passes per slice (1 for naive Bayes, 5 otherwise).
    num_cpus : float, default=1
        CPUs reserved per shard task.
    verbose : bool, default=False
        Show progress bars.
    allow_many_classes : bool, default=False
        Train on a numeric label with more distinct values than a tenth of the rows
        (and more than 50). By default that stops with advice to use a regressor: it is
        almost always a regression target, like a price.

    Attributes
    ----------
    estimators_ : list
        Final model of each shard (None for a shard left without rows).
    classes_ : ndarray
    n_features_in_ : int
    store_ : Store

    Examples
    --------
    >>> import numpy as np
    >>> from sisa import SISAClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 4)); y = (X[:, 0] > 0).astype(int)
    >>> clf = SISAClassifier(n_shards=2, n_slices=2, backend="local").fit(X, y)
    >>> receipt = clf.forget([0, 1, 2])
    >>> clf.score(X, y) > 0.9
    True
    """

    def __init__(self, estimator=None, *, n_shards=5, n_slices=4, aggregation=None,
                 store=None, random_state=0, ray_address=None, backend="auto",
                 schedule="streaming", epochs="auto", num_cpus=1, verbose=False,
                 allow_many_classes=False):
        super().__init__(estimator, n_shards=n_shards, n_slices=n_slices,
                         aggregation=aggregation, store=store, random_state=random_state,
                         ray_address=ray_address, backend=backend, schedule=schedule,
                         epochs=epochs, num_cpus=num_cpus, verbose=verbose)
        self.allow_many_classes = allow_many_classes

    def _base_estimator(self):
        return clone(self.estimator) if self.estimator is not None else SGDClassifier(
            loss="log_loss")

    _parameter_constraints: ClassVar[dict] = {
        **_SISABase._parameter_constraints,
        "aggregation": [StrOptions(set(aggregate.CLASSIFIER_AGGREGATIONS)), None],
        "allow_many_classes": ["boolean"],
    }

    def _resolved_aggregation(self) -> str:
        if self.aggregation is not None:
            return self.aggregation
        return "soft" if hasattr(self._base_estimator(), "predict_proba") else "hard"

    def predict(self, X):
        """Aggregated class prediction (vote, or argmax of the mean probability)."""
        X = self._check_X(X)  # once: a second check would see an array without names
        fast = self._stacked_for(X)
        if self.aggregation_ == "soft":
            return self.classes_[self._mean_proba(X, fast).argmax(axis=1)]
        if fast is not None:
            return fast.vote(X)
        return aggregate.vote(self.estimators_, X, self.classes_)

    def _mean_proba(self, X, fast):
        if fast is not None:
            return fast.mean_proba(X)
        return aggregate.mean_proba(self.estimators_, X, self.classes_)

    def _soft(self) -> bool:
        return self._resolved_aggregation() == "soft"

    @available_if(_soft)
    def predict_proba(self, X):
        """Mean of the shard models' class probabilities (``aggregation='soft'``)."""
        X = self._check_X(X)
        return self._mean_proba(X, self._stacked_for(X))


class SISARegressor(RegressorMixin, _SISABase):
    """A SISA ensemble regressor; see :class:`SISAClassifier` for the parameters.

    ``aggregation`` is "mean" (default) or "median" of the shard predictions, and the
    default estimator is ``SGDRegressor()``.

    Examples
    --------
    >>> import numpy as np
    >>> from sisa import SISARegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); y = X @ [1.0, 2.0, 3.0]
    >>> reg = SISARegressor(n_shards=2, n_slices=2, backend="local").fit(X, y)
    >>> reg.score(X, y) > 0.99
    True
    """

    def _base_estimator(self):
        return clone(self.estimator) if self.estimator is not None else SGDRegressor()

    _parameter_constraints: ClassVar[dict] = {
        **_SISABase._parameter_constraints,
        "aggregation": [StrOptions(set(aggregate.REGRESSOR_AGGREGATIONS)), None],
    }

    def _resolved_aggregation(self) -> str:
        return "mean" if self.aggregation is None else self.aggregation

    def predict(self, X):
        """Mean or median of the shard models' predictions."""
        X = self._check_X(X)
        fast = self._stacked_for(X)
        if fast is not None:
            return fast.regress(X, self.aggregation_)
        return aggregate.regress(self.estimators_, X, self.aggregation_)


def load(uri: str):
    """The model of the store at ``uri``: a :class:`SISARegressor` or a
    :class:`SISAClassifier`, by the task its manifest records.

    Examples
    --------
    >>> model = sisa.estimators.load("runs/adult")  # doctest: +SKIP
    """
    from ..store import Store

    model = Store.open(uri).manifest.model or {}
    cls = SISARegressor if model.get("task") == "regression" else SISAClassifier
    return cls.load(uri)


@contextlib.contextmanager
def columns_by_name() -> Iterator[None]:
    """Predict on a plain array whose columns were picked by name in training order (the
    CLI, the service): silence scikit-learn's warning that the array carries no names."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        yield
