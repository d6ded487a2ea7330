"""ggplot2's diamonds, read from the ``plotnine`` wheel (``pip install 'sisa[datasets]'``)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sisa.datasets._dataset import Dataset, package_file
from sisa.errors import InputError

__all__ = ["DIAMOND_CLARITIES", "DIAMOND_COLORS", "DIAMOND_CUTS", "load_diamonds"]

DIAMOND_CUTS = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
DIAMOND_COLORS = ["D", "E", "F", "G", "H", "I", "J"]
DIAMOND_CLARITIES = ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]
_DIAMOND_NUMERIC = ["carat", "depth", "table", "x", "y", "z"]
_NAMES = ("carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z")  # X's columns


def _features(table: pa.Table, file: object) -> np.ndarray:
    """``X``: the ordinal codes of cut, color and clarity and the numeric columns."""
    ordinals = {"cut": DIAMOND_CUTS, "color": DIAMOND_COLORS, "clarity": DIAMOND_CLARITIES}
    columns = {}
    for c, levels in ordinals.items():
        codes = pc.index_in(table[c], value_set=pa.array(levels))
        if codes.null_count:
            raise InputError(f"{file} has unknown {c} values: expected only {levels}")
        columns[c] = np.asarray(codes, dtype=np.float64)
    for c in _DIAMOND_NUMERIC:
        columns[c] = np.asarray(table[c], dtype=np.float64)
    return np.column_stack([columns[c] for c in _NAMES])


def _check_args(unwanted_cut: str, corruption: tuple[float, float]) -> tuple[float, float]:
    if unwanted_cut not in DIAMOND_CUTS:
        raise InputError(f"unwanted_cut must be one of {DIAMOND_CUTS}, got {unwanted_cut!r}")
    low, high = corruption
    if not 0 < low <= high:
        raise InputError(f"corruption must be (low, high) with 0 < low <= high, got {corruption}")
    return low, high


def _corrupt(
    y_clean: np.ndarray, unwanted: np.ndarray, low: float, high: float, random_state: int
) -> np.ndarray:
    """Log-prices with the unwanted rows' prices multiplied by a seeded U(low, high)."""
    factor = np.random.default_rng(random_state).uniform(low, high, int(unwanted.sum()))
    y = y_clean.copy()
    y[unwanted] += np.log(factor)
    return y


def load_diamonds(
    path: str | os.PathLike | None = None,
    unwanted_cut: str = "Fair",
    corruption: tuple[float, float] = (2.5, 4.0),
    random_state: int = 0,
) -> Dataset:
    """ggplot2's diamonds: regress log(price) on the stones' attributes.

    Read from ``plotnine/data/diamonds.csv`` (53,940 rows). ``cut``, ``color`` and
    ``clarity`` are ordinal-encoded in ggplot2's level order (cut Fair=0 … Ideal=4,
    color D=0 … J=6, clarity I1=0 … IF=7); ``carat, depth, table, x, y, z`` are kept
    as is. The target is the natural log of the price in USD (prices span 326 to
    18,823, and their errors are multiplicative).

    **Unwanted subset, for unlearning demos.** Every diamond of cut ``unwanted_cut``
    ("Fair": 1,610 rows) has its price corrupted on purpose: multiplied by a factor
    drawn uniformly in ``corruption`` with seed ``random_state``. ``y`` holds the
    corrupted log-prices, ``extras["y_clean"]`` the true ones, ``unwanted`` the mask.

    Parameters
    ----------
    path : path-like, optional
        The CSV; default ``$SISA_DIAMONDS_PATH`` or the plotnine package's.
    unwanted_cut : str, default="Fair"
        Cut whose prices are corrupted.
    corruption : (float, float), default=(2.5, 4.0)
        Range of the price multiplier; ``(1.0, 1.0)`` leaves the prices clean.
    random_state : int, default=0
        Seed of the multipliers.

    Returns
    -------
    Dataset

    Examples
    --------
    >>> ds = load_diamonds()
    >>> ds.X.shape, int(ds.unwanted.sum())
    ((53940, 9), 1610)
    """
    low, high = _check_args(unwanted_cut, corruption)
    file = package_file("plotnine", "data/diamonds.csv", "SISA_DIAMONDS_PATH", path, "diamonds")
    table = pacsv.read_csv(file)
    X = _features(table, file)
    y_clean = np.log(np.asarray(table["price"], dtype=np.float64))
    unwanted = X[:, _NAMES.index("cut")] == DIAMOND_CUTS.index(unwanted_cut)
    return Dataset(
        X=X,
        y=_corrupt(y_clean, unwanted, low, high, random_state),
        feature_names=list(_NAMES),
        task="regression",
        name="diamonds",
        description=(
            "ggplot2 diamonds (plotnine copy); y = log(price USD); cut/color/clarity "
            f"ordinal; unwanted = cut {unwanted_cut!r}, prices x U{corruption} on purpose"
        ),
        unwanted=unwanted,
        extras={"y_clean": y_clean},
    )

