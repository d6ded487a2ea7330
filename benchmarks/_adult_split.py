"""The UCI Adult train/test split that benchmarks/vs_dare.py compares sisa and DaRE-RF on.

``sisa.datasets.load("adult")`` gives all 32,561 rows of adult.data x 105 columns (6 raw
numeric + 99 one-hot, a missing "?" gets no indicator). The issue's 24,129 x 104 is that
data the way DaRE's preprocessing (dare_rf/data/adult/continuous.py) treats it, minus the
rows with a missing value, split 80/20:

* rows with a "?" in workclass, occupation or native-country dropped: 30,162 rows left;
* ``education-num`` dropped (DaRE drops it: it is education's rank): 104 columns;
* ``train_test_split(test_size=0.2, random_state=1)``: 24,129 train, 6,033 test rows.

DaRE's own experiments train on all of adult.data (with "?" as a category) and test on
adult.test, which the mglearn wheel does not ship, so that exact split is not available.
``split="sisa"`` is the alternative: all 32,561 rows x 105 columns, same 80/20 split.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

SPLITS = ("issue", "sisa")


def adult_split(split: str = "issue", random_state: int = 1):
    """Return ``X_train, X_test, y_train, y_test`` (float64 X, int64 y)."""
    from sisa.datasets import load

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    ds = load("adult")
    X, y = ds.X, ds.y
    if split == "issue":
        names = ds.feature_names
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            if "=" in n:
                groups.setdefault(n.split("=", 1)[0], []).append(i)
        missing = np.zeros(len(y), dtype=bool)
        for cols in groups.values():  # a categorical with no indicator set was "?"
            missing |= X[:, cols].sum(axis=1) == 0
        keep = [i for i, n in enumerate(names) if n != "education-num"]
        X, y = X[~missing][:, keep], y[~missing]
    return train_test_split(X, y, test_size=0.2, random_state=random_state)


def import_dare():
    """Import DaRE-RF's ``dare`` package, or return None when it is not installed.

    benchmarks/vs_dare.py would shadow it (a script's folder comes first on sys.path), so
    the folder of this file is left out of sys.path for the import.
    """
    import importlib
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    cached = sys.modules.get("dare")
    cached_file = getattr(cached, "__file__", None) or ""
    if cached is not None and os.path.dirname(os.path.abspath(cached_file)) == here:
        del sys.modules["dare"]  # this folder's dare.py, imported by name: not DaRE
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        mod = importlib.import_module("dare")
        return mod if hasattr(mod, "Forest") else None
    except ImportError:
        return None
    finally:
        sys.path[:] = saved
