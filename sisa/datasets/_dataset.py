"""The :class:`Dataset` every loader returns, and how loaders find their files."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from sisa.errors import MissingDatasetError

PIP_HINT = "pip install 'sisa[datasets]'"


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
        """Return the dataset restricted to some rows.

        Parameters
        ----------
        rows : ndarray of int or bool
            Row indices, or a boolean mask of length ``len(self)``.

        Returns
        -------
        Dataset
            Every per-row array (``X``, ``y``, ``unwanted``, ``extras``) indexed alike.
        """
        return replace(
            self,
            X=self.X[rows],
            y=self.y[rows],
            unwanted=None if self.unwanted is None else self.unwanted[rows],
            extras={k: v[rows] for k, v in self.extras.items()},
        )


def package_file(
    package: str, relative: str, env_var: str, path: str | os.PathLike | None, what: str
) -> Path:
    """Resolve a data file: explicit path, then env var, then the installed package.

    The package is located without importing it (importing plotnine takes seconds).

    Parameters
    ----------
    package : str
        Importable name of the package that ships the file.
    relative : str
        The file's path inside the package.
    env_var : str
        Environment variable that overrides the location.
    path : path-like or None
        Explicit location; wins over the other two.
    what : str
        The dataset's name, for error messages.

    Returns
    -------
    Path

    Raises
    ------
    MissingDatasetError
        If the package is not installed or the file is not where it should be; the
        message names the install command.
    """
    explicit = path if path is not None else os.environ.get(env_var)
    if explicit is not None:
        candidate = Path(explicit)
    else:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDatasetError(
                f"{what} needs the {package} package, which is not installed: {PIP_HINT}"
            )
        candidate = Path(next(iter(spec.submodule_search_locations))) / relative
    if not candidate.is_file():
        raise MissingDatasetError(
            f"{what} file not found at {candidate}: {PIP_HINT} (or set {env_var})"
        )
    return candidate

