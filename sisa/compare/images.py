"""The image task of the comparison: Fashion-MNIST, a small CNN, the true-class margin.

:func:`fashion_features` draws the ε runs' rows from the Debian package
``dataset-fashion-mnist`` (:func:`sisa.datasets.fashion_mnist.load_fashion_mnist`);
:func:`cnn_layers` is the torch family's network as a layer list
(:mod:`sisa.deep.layers`); :func:`margin` is its membership statistic for any number of
classes. :func:`features` picks a dataset's loader by name.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from sisa.compare.data import STREAM, adult_features
from sisa.errors import InputError

__all__ = [
    "DATASETS",
    "IMAGE_SCENARIOS",
    "cnn_layers",
    "fashion_features",
    "features",
    "margin",
]

#: Forget sets that make sense on images: ``subgroup`` and ``injected`` are defined on
#: Adult's columns (a native country; an added 0/1 column a CNN has no place for).
IMAGE_SCENARIOS = ("random", "mislabeled", "duplicated")
DATASETS = ("adult", "fashion-mnist")


def fashion_features(rows: int | None = None, seed: int = 0, test_rows: int = 2000
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], dict]:
    """Seeded rows of Fashion-MNIST's training images, and test rows from its test set.

    Pixels are scaled to [0, 1] by the loader and not otherwise transformed, so no
    statistic of any row enters the features.

    Parameters
    ----------
    rows : int, optional
        Training rows, a seeded sample of the 60,000 (at least 200); None: all.
    seed : int, default=0
        The samples of training and test rows.
    test_rows : int, default=2000
        Rows of the 10,000 test images the accuracies are measured on.

    Returns
    -------
    (X_train, y_train, X_test, y_test, feature_names, info)
    """
    from sisa.datasets.fashion_mnist import load_fashion_mnist

    if rows is not None and rows < 200:
        raise InputError(f"rows must be at least 200 (or None for all 60,000), got {rows}")
    train, test = load_fashion_mnist("train"), load_fashion_mnist("t10k")
    rng = np.random.default_rng([seed, STREAM, 7])
    tr = np.sort(rng.permutation(len(train.y))[:rows]) if rows is not None else \
        np.arange(len(train.y))
    te = np.sort(rng.permutation(len(test.y))[:test_rows])
    info = {"dataset": "fashion-mnist", "rows": len(tr), "n_features": train.X.shape[1],
            "source": "Fashion-MNIST (10 classes)",
            "feature_map": "28x28 grey pixels / 255 (the Debian package "
                           "dataset-fashion-mnist), nothing learned from any row"}
    return (train.X[tr], train.y[tr], test.X[te], test.y[te], list(train.feature_names),
            info)


def features(dataset: str, rows: int | None, seed: int):
    """The loader of ``dataset`` (:data:`DATASETS`) called with ``rows`` and ``seed``."""
    if dataset == "adult":
        Xtr, ytr, Xte, yte, names, info = adult_features(rows, seed)
        return Xtr, ytr, Xte, yte, names, {"source": "Adult", **info}
    if dataset == "fashion-mnist":
        return fashion_features(rows, seed)
    raise InputError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")


def cnn_layers(channels: tuple[int, int] = (8, 16)) -> list:
    """conv 5x5 → ReLU → conv 3x3 → ReLU → linear (one output per class), both strided.

    Stride 2 does the pooling's job (28 -> 14 -> 7 pixels, ``channels[1]`` maps of 7x7
    for the linear layer) at a third of the CPU time of conv → 2x2 max-pool with the same
    channels, at the same accuracy (0.79 vs 0.77 on 2,000 rows, 5 epochs); the CPU time
    is what sets N in the time budget.
    """
    c1, c2 = (int(c) for c in channels)
    return [{"layer": "conv2d", "out_channels": c1, "kernel_size": 5, "stride": 2,
             "padding": 2}, "relu",
            {"layer": "conv2d", "out_channels": c2, "kernel_size": 3, "stride": 2,
             "padding": 1}, "relu", "flatten", {"layer": "linear"}]


def _log_probs(model, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Log-softmax of one network's outputs, columns = ``classes`` (-inf for a class the
    network never saw, e.g. a shard without it)."""
    z = np.asarray(model.decision_function(X), dtype=np.float64)
    if z.ndim == 1:  # two classes: decision_function is logit 1 minus logit 0
        z = np.stack([np.zeros_like(z), z], axis=1)
    out = np.full((len(X), len(classes)), -np.inf)
    out[:, np.searchsorted(classes, model.classes_)] = z - logsumexp(z, axis=1, keepdims=True)
    return out


MARGIN_CLIP = 1e4  # far beyond any margin a working network gives (|log p| of float64 ≤ ~745)


def margin(model, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``log p_y - max_{k != y} log p_k`` per row: > 0 exactly when the model is right.

    For one network it is the true class's logit minus the largest other logit; with two
    classes, ``±(z_1 - z_0)``, the statistic of the binary families. For a SISA ensemble
    (``estimators_``) ``p`` is the soft vote, the mean of the shards' softmax, computed by
    log-sum-exp so that it never rounds to 0 or 1.
    """
    import torch  # the models are fitted, so torch is there

    from sisa.deep.estimator import deterministic

    classes = np.asarray(model.classes_)
    with deterministic(torch, "cpu"):  # one thread: Ray runs one task per CPU
        if hasattr(model, "estimators_"):
            live = [m for m in model.estimators_ if m is not None]
            lp = logsumexp(np.stack([_log_probs(m, X, classes) for m in live]), axis=0) \
                - np.log(len(live))
        else:
            lp = _log_probs(model, X, classes)
    t = np.searchsorted(classes, np.asarray(y))
    rows = np.arange(len(t))
    own = lp[rows, t].copy()
    lp[rows, t] = -np.inf
    # A network that diverged (NegGrad+ at a large budget: NaN or infinite logits) reads as
    # maximally wrong; finite values beyond ±MARGIN_CLIP are clipped. The estimator only
    # compares statistics against thresholds, so the clip changes no verdict between
    # networks that predict.
    return np.nan_to_num(np.clip(own - lp.max(axis=1), -MARGIN_CLIP, MARGIN_CLIP),
                         nan=-MARGIN_CLIP)
