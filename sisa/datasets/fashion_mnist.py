"""Fashion-MNIST, read from the Debian package ``dataset-fashion-mnist``."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np

from sisa.datasets._dataset import Dataset
from sisa.errors import InputError, MissingDatasetError

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist"]

_APT_HINT = "apt-get install -y dataset-fashion-mnist"
_FASHION_DIR = "/usr/share/datasets/fashion-mnist"

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

