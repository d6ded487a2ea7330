"""Aggregate → one prediction from the shard models.

Aggregators here use no training data: a learned aggregator would have seen every
row and would itself need unlearning. Shards with no rows (``None``) drop out.
"""

from __future__ import annotations

import numpy as np

from ..errors import StaleModelError

CLASSIFIER_AGGREGATIONS = ("hard", "soft")
REGRESSOR_AGGREGATIONS = ("mean", "median")


def _live(models: list) -> list:
    live = [m for m in models if m is not None]
    if not live:
        raise StaleModelError("every shard is empty (all its rows were forgotten): there is "
                              "no model left to predict with; fit a new one")
    return live


def aligned_proba(model, X, classes: np.ndarray) -> np.ndarray:
    """``predict_proba`` with columns mapped onto the full ``classes`` list (a shard
    refit on rows lacking a class knows fewer classes)."""
    p = model.predict_proba(X)
    if len(model.classes_) == len(classes) and np.array_equal(model.classes_, classes):
        return p
    out = np.zeros((X.shape[0], len(classes)))  # X.shape: a CSR matrix has no len
    out[:, np.searchsorted(classes, model.classes_)] = p
    return out


def vote(models: list, X, classes: np.ndarray) -> np.ndarray:
    """Majority vote; ties go to the class listed first in ``classes``."""
    counts = np.zeros((X.shape[0], len(classes)), dtype=np.int64)
    rows = np.arange(X.shape[0])
    for m in _live(models):
        idx = np.searchsorted(classes, m.predict(X))
        np.add.at(counts, (rows, idx), 1)
    return classes[counts.argmax(axis=1)]


def mean_proba(models: list, X, classes: np.ndarray) -> np.ndarray:
    """Mean of the shard models' class probabilities."""
    live = _live(models)
    return sum(aligned_proba(m, X, classes) for m in live) / len(live)


def regress(models: list, X, how: str) -> np.ndarray:
    preds = np.stack([m.predict(X) for m in _live(models)])
    return np.median(preds, axis=0) if how == "median" else preds.mean(axis=0)
