"""What a build of a store is asked to do, as one validated value (:class:`IngestOptions`).

In the spirit of pyiceberg's and delta-rs's write options: the layout, the columns to
read, the CSV text options and the memory bounds travel together, checked once when the
value is made, instead of as loose keywords through every layer. Where the work runs
(and whether a progress bar shows) is :class:`sisa.ExecutionSettings`, not an option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import numpy as np

from ...errors import InputError
from ..format.assign import AssignmentConfig
from .text import CsvOptions

DType = Literal["float32", "float64"]
_COLUMNS = ("label", "id_column", "group_column", "deletion_prob_column")


@dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """How rows become a store: its layout and how a table or file is read.

    Every field is checked when the value is made (:class:`~sisa.errors.InputError`, one
    line naming the field and the fix), so a bad option fails before anything is written.

    Parameters
    ----------
    n_shards, n_slices : int
        S and R, both at least 1 (S × R slices; each should hold many rows).
    random_state : int, default=0
        Seed of the keyed assignment hash (and later of training).
    label : str, optional
        The label column of a table or file (array data takes ``y`` instead).
    id_column : str, optional
        Column holding each row's stable id (int or str). Default: the row numbers
        0..n-1 in input order (or the ``sample_ids`` given with array data).
    group_column : str, optional
        Column of group keys: all rows of a group land in one (shard, slice).
    deletion_prob_column : str, optional
        Column of each row's deletion probability, for distribution-aware sharding.
    hot_shards : int, default=0
        Shards reserved for rows likely to be deleted (0: off); needs deletion
        probabilities. See :class:`~sisa.store.format.assign.AssignmentConfig`.
    hot_threshold : float, default=0.5
        Deletion probability from which a row counts as likely to be deleted.
    feature_columns : sequence of str, optional
        Feature columns of a table (default: every column not named above).
    dtype : {"float32", "float64"}, optional
        Feature type stored (default: float32 input stays float32, else float64).
        ``numpy.float32`` and ``numpy.float64`` are accepted and stored as their names.
    allow_missing : bool, default=False
        Keep missing feature values (for a model that takes them); else a missing
        value is refused, naming the row.
    csv : CsvOptions, optional
        How CSV text is read (``na_values``, ``trim_whitespace``); only for CSV input.
    memory_budget_mb : int, default=256
        Memory for rows per process: beyond it rows spill to sorted runs in the
        store's ``.tmp/`` and slices are merged in parts, so the peak stays flat in n.
    batch_rows : int, default=65536
        Rows read from a file at a time.

    Examples
    --------
    >>> opts = IngestOptions(n_shards=4, n_slices=2, label="y")
    >>> opts.replace(n_shards=8).n_shards, opts.label
    (8, 'y')
    """

    n_shards: int
    n_slices: int
    random_state: int = 0
    label: str | None = None
    id_column: str | None = None
    group_column: str | None = None
    deletion_prob_column: str | None = None
    hot_shards: int = 0
    hot_threshold: float = 0.5
    feature_columns: tuple[str, ...] | None = None
    dtype: DType | None = None
    allow_missing: bool = False
    csv: CsvOptions | None = None
    memory_budget_mb: int = 256
    batch_rows: int = 65_536

    def __post_init__(self) -> None:
        self.assignment  # noqa: B018  (checks n_shards ... hot_threshold, one line each)
        named = [getattr(self, f) for f in _COLUMNS if getattr(self, f) is not None]
        for f in _COLUMNS:
            _column_name(f, getattr(self, f))
        reused = sorted({c for c in named if named.count(c) > 1})
        if reused:  # the words of ingest's own check (sisa.store.write.ingest)
            raise InputError(f"column(s) {reused} are given for two roles (label, id, group, "
                             "deletion probability): give each role its own column")
        self._set("feature_columns", _feature_columns(self.feature_columns, named))
        self._set("dtype", _dtype_name(self.dtype))
        if not isinstance(self.allow_missing, (bool, np.bool_)):
            raise InputError(f"allow_missing must be True or False, got {self.allow_missing!r}")
        self._set("allow_missing", bool(self.allow_missing))
        if self.csv is not None and not isinstance(self.csv, CsvOptions):
            raise InputError(f"csv must be a CsvOptions or None, got {type(self.csv).__name__}: "
                             "pass csv=CsvOptions.of(na_values=..., trim_whitespace=...)")
        _at_least("memory_budget_mb", self.memory_budget_mb, 0)
        _at_least("batch_rows", self.batch_rows, 1)
        for f in ("n_shards", "n_slices", "random_state", "hot_shards", "memory_budget_mb",
                  "batch_rows"):  # plain Python numbers: numpy ones compare and print alike
            self._set(f, int(getattr(self, f)))
        self._set("hot_threshold", float(self.hot_threshold))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen field, once

    @property
    def assignment(self) -> AssignmentConfig:
        """The row assignment these options ask for (validated by its own type)."""
        if not isinstance(self.hot_threshold, (float, int, np.floating, np.integer)) or \
                isinstance(self.hot_threshold, bool):
            raise InputError(f"hot_threshold must be a number in (0, 1], got "
                             f"{self.hot_threshold!r}")
        return AssignmentConfig(self.n_shards, self.n_slices, self.random_state,
                                self.hot_shards, float(self.hot_threshold))

    @property
    def has_deletion_prob(self) -> bool:
        return self.deletion_prob_column is not None

    def replace(self, **changes) -> IngestOptions:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _column_name(field: str, value: object) -> None:
    if value is not None and not (isinstance(value, str) and value):
        raise InputError(f"{field} must be a column name (a non-empty str) or None, got "
                         f"{value!r}")


def _feature_columns(value: object, named: list) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InputError(f"feature_columns must be a list of column names, got {value!r}: "
                         "pass a list, like ['a', 'b']")
    cols = tuple(value)
    for c in cols:
        _column_name("feature_columns", c)
    if not cols:
        raise InputError("feature_columns is empty: name at least one feature column, or pass "
                         "None for every other column")
    if len(set(cols)) < len(cols):
        raise InputError(f"feature_columns names a column twice ({list(cols)}): name each once")
    clash = [c for c in cols if c in named]
    if clash:
        raise InputError(f"feature_columns holds {clash}, the label/id/group/deletion-probability "
                         "column(s), which cannot also be features: drop them from it")
    return cols


def _dtype_name(value: object) -> DType | None:
    if value is None:
        return None
    try:
        name = np.dtype(value).name  # type: ignore[call-overload]
    except TypeError:
        name = None
    if name == "float32" or name == "float64":
        return name
    raise InputError(f"dtype must be float32 or float64 (or None: keep the input's), got "
                     f"{value!r}")


def _at_least(field: str, value: object, low: int) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise InputError(f"{field} must be an integer >= {low}, got {value!r}")
