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

import gzip
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sisa.errors import InputError, MissingDatasetError

__all__ = [
    "DATASETS",
    "Dataset",
    "load",
    "load_adult",
    "load_diamonds",
    "load_fashion_mnist",
    "load_synthetic",
]

_PIP_HINT = "pip install 'sisa[datasets]'"
_APT_HINT = "apt-get install -y dataset-fashion-mnist"
_FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True, eq=False)  # fields are arrays: compare them explicitly
class Dataset:
    """A loaded dataset.

    Attributes
    ----------
    X : ndarray of shape (n, p)
        Features, float64 (float32 for images).
    y : ndarray of shape (n,)
        Targets: float64 for regression, int64 class labels for classification.
    feature_names : list of str
        One name per column of ``X``.
    task : {"classification", "regression"}
    name : str
    description : str
        Where the data comes from and how it was encoded.
    unwanted : ndarray of bool, shape (n,), or None
        Rows an unlearning demo should forget, when the dataset defines them.
    extras : dict of str to ndarray
        Further per-row arrays (e.g. ``y_clean`` for diamonds), all of length n.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    task: Literal["classification", "regression"]
    name: str
    description: str
    unwanted: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, rows: np.ndarray) -> Dataset:
        """Return the dataset restricted to ``rows`` (indices or boolean mask)."""
        return replace(
            self,
            X=self.X[rows],
            y=self.y[rows],
            unwanted=None if self.unwanted is None else self.unwanted[rows],
            extras={k: v[rows] for k, v in self.extras.items()},
        )


def _package_file(
    package: str, relative: str, env_var: str, path: str | os.PathLike | None, what: str
) -> Path:
    """Resolve a data file: explicit path, then env var, then the installed package."""
    explicit = path if path is not None else os.environ.get(env_var)
    if explicit is not None:
        candidate = Path(explicit)
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDatasetError(
                f"{what} needs the {package} package, which is not installed: {_PIP_HINT}"
            )
        candidate = Path(next(iter(spec.submodule_search_locations))) / relative
    if not candidate.is_file():
        raise MissingDatasetError(
            f"{what} file not found at {candidate}: {_PIP_HINT} (or set {env_var})"
        )
    return candidate


# --------------------------------------------------------------------------- synthetic


def _wanted_curve(x: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x)


def _unwanted_curve(x: np.ndarray) -> np.ndarray:
    return 1.4 + 0.5 * np.sin(np.pi * x)


def load_synthetic(
    n: int = 1000,
    unwanted_fraction: float = 0.35,
    noise: float = 0.1,
    dependent: bool = False,
    random_state: int | None = 0,
) -> Dataset:
    """1-D regression data mixing a wanted curve and an unwanted one.

    ``x ~ U(-1, 1)``. Wanted rows: ``y = sin(pi x) + e``. Unwanted rows (a share
    ``unwanted_fraction``): ``y = 1.4 + 0.5 sin(pi x) + e``, with ``e ~ N(0, noise²)``.
    A degree-7 polynomial least-squares fit on all rows reaches R² ≈ 0.4 on the wanted
    rows with the defaults; EMSE with ``sigma=0.5`` lifts it above 0.95.

    With ``dependent=True`` the unwanted rows follow the *wanted* curve, so W and U
    are drawn from the same distribution: no model can explain one and not the other,
    and Fair R² stays <= 0.25 whatever the fine-tune does.

    Parameters
    ----------
    n : int, default=1000
        Number of rows.
    unwanted_fraction : float, default=0.35
        Expected share of unwanted rows, in [0, 1).
    noise : float, default=0.1
        Standard deviation of the Gaussian noise.
    dependent : bool, default=False
        Draw the unwanted rows from the wanted curve.
    random_state : int or None, default=0
        Seed.

    Returns
    -------
    Dataset
        ``X`` of shape (n, 1), ``unwanted`` mask, and ``extras["curve"]``: the
        noise-free value of the curve each row was drawn from.

    Examples
    --------
    >>> ds = load_synthetic(n=100)
    >>> ds.X.shape, ds.unwanted.dtype.name, ds.task
    ((100, 1), 'bool', 'regression')
    """
    if int(n) < 2:
        raise InputError(f"n must be >= 2, got {n!r}")
    if not 0.0 <= unwanted_fraction < 1.0:
        raise InputError(f"unwanted_fraction must be in [0, 1), got {unwanted_fraction!r}")
    if not noise >= 0:
        raise InputError(f"noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(random_state)
    x = rng.uniform(-1.0, 1.0, int(n))
    unwanted = rng.random(int(n)) < unwanted_fraction
    follows_u = np.zeros_like(unwanted) if dependent else unwanted
    curve = np.where(follows_u, _unwanted_curve(x), _wanted_curve(x))
    y = curve + noise * rng.normal(size=int(n))
    kind = "same curve as W (dependent)" if dependent else "1.4 + 0.5 sin(pi x)"
    return Dataset(
        X=x[:, None],
        y=y,
        feature_names=["x"],
        task="regression",
        name="synthetic-dependent" if dependent else "synthetic",
        description=(
            f"x ~ U(-1, 1); wanted y = sin(pi x) + N(0, {noise}²); "
            f"unwanted ({unwanted_fraction:.0%}) y = {kind} + noise"
        ),
        unwanted=unwanted,
        extras={"curve": curve},
    )


# --------------------------------------------------------------------------- adult

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "gender", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]  # fmt: skip
_ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                  "hours-per-week"]  # fmt: skip


def load_adult(path: str | os.PathLike | None = None) -> Dataset:
    """UCI Adult census income: predict whether income exceeds 50K.

    Read from ``mglearn/data/adult.data`` (32,561 rows, no header). The six numeric
    columns are kept as they are (unscaled: scale inside the model); the eight
    categorical columns are one-hot encoded, categories sorted, feature names
    ``"column=value"``. A missing value (``?``) gets no indicator (all zeros).

    Parameters
    ----------
    path : path-like, optional
        The ``adult.data`` file; default ``$SISA_ADULT_PATH`` or the mglearn package's.

    Returns
    -------
    Dataset
        ``X`` float64 of shape (32561, 105), ``y`` int64 (1 = ">50K").

    Examples
    --------
    >>> ds = load_adult()
    >>> ds.X.shape[0], sorted(set(ds.y.tolist()))
    (32561, [0, 1])
    """
    file = _package_file("mglearn", "data/adult.data", "SISA_ADULT_PATH", path, "UCI Adult")
    table = pacsv.read_csv(
        file,
        read_options=pacsv.ReadOptions(column_names=ADULT_COLUMNS),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in ADULT_COLUMNS}),
    )
    # The file separates fields by ", ": strip (pyarrow has no skipinitialspace).
    cols = {c: pc.utf8_trim_whitespace(table[c]) for c in ADULT_COLUMNS}
    blocks, names = [], []
    for c in ADULT_COLUMNS[:-1]:
        if c in _ADULT_NUMERIC:
            blocks.append(np.asarray(pc.cast(cols[c], pa.float64()))[:, None])
            names.append(c)
            continue
        values = np.asarray(cols[c].to_numpy(zero_copy_only=False), dtype=object)
        categories = sorted(set(values.tolist()) - {"?"})
        blocks.append((values[:, None] == np.array(categories, dtype=object)).astype(np.float64))
        names += [f"{c}={v}" for v in categories]
    income = np.asarray(cols["income"].to_numpy(zero_copy_only=False), dtype=object)
    y = (income == ">50K").astype(np.int64)
    return Dataset(
        X=np.hstack(blocks),
        y=y,
        feature_names=names,
        task="classification",
        name="adult",
        description=(
            "UCI Adult (mglearn copy): 6 raw numeric columns + one-hot categoricals "
            "('?' = no indicator); y = income >50K"
        ),
    )


# --------------------------------------------------------------------------- diamonds

DIAMOND_CUTS = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
DIAMOND_COLORS = ["D", "E", "F", "G", "H", "I", "J"]
DIAMOND_CLARITIES = ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]
_DIAMOND_NUMERIC = ["carat", "depth", "table", "x", "y", "z"]


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
    if unwanted_cut not in DIAMOND_CUTS:
        raise InputError(f"unwanted_cut must be one of {DIAMOND_CUTS}, got {unwanted_cut!r}")
    low, high = corruption
    if not 0 < low <= high:
        raise InputError(f"corruption must be (low, high) with 0 < low <= high, got {corruption}")
    file = _package_file("plotnine", "data/diamonds.csv", "SISA_DIAMONDS_PATH", path, "diamonds")
    table = pacsv.read_csv(file)
    ordinals = {"cut": DIAMOND_CUTS, "color": DIAMOND_COLORS, "clarity": DIAMOND_CLARITIES}
    columns = {}
    for c, levels in ordinals.items():
        codes = pc.index_in(table[c], value_set=pa.array(levels))
        if codes.null_count:
            raise InputError(f"{file} has unknown {c} values: expected only {levels}")
        columns[c] = np.asarray(codes, dtype=np.float64)
    for c in _DIAMOND_NUMERIC:
        columns[c] = np.asarray(table[c], dtype=np.float64)
    names = ["carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z"]
    X = np.column_stack([columns[c] for c in names])
    y_clean = np.log(np.asarray(table["price"], dtype=np.float64))
    unwanted = columns["cut"] == DIAMOND_CUTS.index(unwanted_cut)
    factor = np.random.default_rng(random_state).uniform(low, high, int(unwanted.sum()))
    y = y_clean.copy()
    y[unwanted] += np.log(factor)
    return Dataset(
        X=X,
        y=y,
        feature_names=names,
        task="regression",
        name="diamonds",
        description=(
            "ggplot2 diamonds (plotnine copy); y = log(price USD); cut/color/clarity "
            f"ordinal; unwanted = cut {unwanted_cut!r}, prices x U{corruption} on purpose"
        ),
        unwanted=unwanted,
        extras={"y_clean": y_clean},
    )


# --------------------------------------------------------------------------- fashion-mnist

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _read_idx(file: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (big-endian header, uint8 payload)."""
    with gzip.open(file, "rb") as fh:
        data = fh.read()
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise MissingDatasetError(
            f"{file} is not an IDX file (magic {found}, expected {magic}): "
            f"reinstall it with apt-get install --reinstall -y dataset-fashion-mnist"
        )
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(
    kind: Literal["train", "t10k"] = "train", data_dir: str | os.PathLike | None = None
) -> Dataset:
    """Fashion-MNIST 28×28 grey images of 10 clothing classes.

    Read from ``{data_dir}/{kind}-images-idx3-ubyte.gz`` and
    ``{kind}-labels-idx1-ubyte.gz``; ``data_dir`` defaults to
    ``$SISA_FASHION_MNIST_DIR`` or ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``). Pixels are scaled to [0, 1] as float32.

    Parameters
    ----------
    kind : {"train", "t10k"}, default="train"
        60,000 training or 10,000 test images.
    data_dir : path-like, optional
        Directory holding the four ``.gz`` files.

    Returns
    -------
    Dataset
        ``X`` float32 of shape (n, 784), ``y`` int64 in 0..9 (names in
        ``FASHION_MNIST_CLASSES``).

    Examples
    --------
    >>> ds = load_fashion_mnist("t10k")
    >>> ds.X.shape, ds.X.dtype.name, int(ds.y.max())
    ((10000, 784), 'float32', 9)
    """
    if kind not in ("train", "t10k"):
        raise InputError(f"kind must be 'train' or 't10k', got {kind!r}")
    folder = Path(data_dir or os.environ.get("SISA_FASHION_MNIST_DIR") or _FASHION_DIR)
    files = [folder / f"{kind}-images-idx3-ubyte.gz", folder / f"{kind}-labels-idx1-ubyte.gz"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise MissingDatasetError(
            f"Fashion-MNIST file not found: {missing[0]}: {_APT_HINT} "
            "(or set SISA_FASHION_MNIST_DIR)"
        )
    images = _read_idx(files[0], 2051)
    labels = _read_idx(files[1], 2049)
    if len(images) != len(labels):
        raise MissingDatasetError(
            f"{folder} has {len(images)} images but {len(labels)} labels: "
            "reinstall with apt-get install --reinstall -y dataset-fashion-mnist"
        )
    X = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return Dataset(
        X=X,
        y=labels.astype(np.int64),
        feature_names=[f"pixel{i}" for i in range(X.shape[1])],
        task="classification",
        name="fashion-mnist",
        description=f"Fashion-MNIST {kind} ({_APT_HINT}); 28x28 pixels / 255, float32",
    )


# --------------------------------------------------------------------------- dispatch

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
