"""Built-in datasets for examples, tests and benchmarks.

Every loader returns a :class:`Dataset`. Files come from packages, never from the
network:

* ``synthetic``: generated in memory (the EMSE example's 1-D regression data).
* ``adult``: UCI Adult, from the ``mglearn`` wheel (``pip install 'sisa[datasets]'``).
* ``diamonds``: ggplot2's diamonds, from the ``plotnine`` wheel (same extra).
* ``fashion-mnist``: from the Debian package ``dataset-fashion-mnist``
  (``apt-get install -y dataset-fashion-mnist``).

The packages are located with :func:`importlib.util.find_spec` without importing them
(importing plotnine takes seconds). Each loader takes a ``path``/``data_dir`` argument,
and the environment variables ``SISA_ADULT_PATH``, ``SISA_DIAMONDS_PATH`` and
``SISA_FASHION_MNIST_DIR`` override the default locations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sisa.datasets._dataset import Dataset
from sisa.datasets.adult import ADULT_COLUMNS, load_adult
from sisa.datasets.diamonds import (
    DIAMOND_CLARITIES,
    DIAMOND_COLORS,
    DIAMOND_CUTS,
    load_diamonds,
)
from sisa.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from sisa.datasets.synthetic import load_synthetic
from sisa.errors import InputError

__all__ = [
    "ADULT_COLUMNS",
    "DATASETS",
    "DIAMOND_CLARITIES",
    "DIAMOND_COLORS",
    "DIAMOND_CUTS",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "load",
    "load_adult",
    "load_diamonds",
    "load_fashion_mnist",
    "load_synthetic",
]

DATASETS: dict[str, Callable[..., Dataset]] = {
    "synthetic": load_synthetic,
    "adult": load_adult,
    "diamonds": load_diamonds,
    "fashion-mnist": load_fashion_mnist,
}


def load(name: str, n_rows: int | None = None, *, sample_seed: int = 0, **kwargs: Any) -> Dataset:
    """Load a built-in dataset by name, optionally subsampled.

    Parameters
    ----------
    name : {"synthetic", "adult", "diamonds", "fashion-mnist"}
        ``"fashion_mnist"`` is accepted too.
    n_rows : int, optional
        Keep this many rows, drawn without replacement (original order kept). All rows
        when None or when the dataset is smaller.
    sample_seed : int, default=0
        Seed of the subsample.
    **kwargs
        Passed to the loader (e.g. ``dependent=True``, ``kind="t10k"``,
        ``random_state=1``).

    Returns
    -------
    Dataset

    Examples
    --------
    >>> ds = load("diamonds", n_rows=500)
    >>> ds.X.shape, ds.unwanted.shape
    ((500, 9), (500,))
    """
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise InputError(f"unknown dataset {name!r}: choose one of {sorted(DATASETS)}")
    if n_rows is not None and int(n_rows) < 1:
        raise InputError(f"n_rows must be >= 1, got {n_rows!r}")
    ds = DATASETS[key](**kwargs)
    if n_rows is None or int(n_rows) >= len(ds):
        return ds
    rng = np.random.default_rng(sample_seed)
    return ds.subset(np.sort(rng.choice(len(ds), size=int(n_rows), replace=False)))
