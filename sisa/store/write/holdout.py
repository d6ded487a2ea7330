"""Holdout rows: the part of a training input kept out of training, for scoring.

Rows are chosen by a keyed hash of their row number, not by a random draw, so the same
input, fraction and seed give the same split in every process (``sisa train --holdout``
and the tests that build bad holdout rows agree on which rows those are). Sample ids stay
the row numbers of the *whole* input (or its id column), so an id names the same row with
or without a holdout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import InputError
from ..format.assign import keyed_hash
from .ingest import CsvOptions, from_table
from .sources import read_table

ROW_ID = "__row"  # the default id column: the row's number in the input file
_SCALE = 10_000  # fractions are resolved to 1/10,000 of the rows


def split(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row numbers ``0..n_rows-1`` into training and holdout rows.

    Parameters
    ----------
    n_rows : int
        Rows in the input.
    fraction : float
        Share of the rows kept out, in [0, 1).
    seed : int
        Key of the hash; another seed gives another split.

    Returns
    -------
    train, holdout : numpy.ndarray
        Sorted row numbers of each part.

    Examples
    --------
    >>> train, hold = split(10, 0.0, 0)
    >>> train.tolist(), hold.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [])
    """
    h = keyed_hash(np.arange(n_rows), seed, "holdout")
    hold = (h % np.uint64(_SCALE)) < np.uint64(int(fraction * _SCALE))
    return np.flatnonzero(~hold), np.flatnonzero(hold)


@dataclass(frozen=True)
class FileSplit:
    """A data file split into training rows and holdout rows.

    Attributes
    ----------
    train : pyarrow.Table
        The training rows, with the id column (:data:`ROW_ID` when the file has none).
        Empty when the fraction keeps every row out: the caller says so in its own words.
    id_column : str
        The column holding the sample ids in ``train``.
    holdout : tuple, or None
        ``(X, y)`` of the holdout rows, as ingest reads them (``X`` the feature columns as
        a table when they are typed columns, :mod:`sisa.store.format.columns`); None when there
        are none (or no training rows).
    n_rows : int
        Rows in the whole file.
    """

    train: pa.Table
    id_column: str
    holdout: tuple | None
    n_rows: int


def split_file(path, label: str, fraction: float, seed: int, *, id_column: str | None = None,
               group_column: str | None = None, deletion_prob_column: str | None = None,
               feature_columns: list[str] | None = None, allow_missing: bool = False,
               csv: CsvOptions | None = None) -> FileSplit:
    """Read a data file and split it, checking every row before anything is written.

    Every row, holdout included, passes ingest's checks under its row number in the file,
    and the ids must be unique across both parts: a bad holdout row must fail the command
    as a bad training row does, not after the store is built.

    Parameters
    ----------
    path : str or path-like
        A Parquet, CSV or Arrow file or directory.
    label : str
        The label column.
    fraction, seed
        As for :func:`split`.
    id_column, group_column, deletion_prob_column, feature_columns, allow_missing
        As for :func:`sisa.store.write.ingest.from_table`. Without ``id_column`` the ids are the
        row numbers of the file.
    csv : CsvOptions, optional
        How CSV text is read (missing-value markers, blanks).

    Returns
    -------
    FileSplit

    Raises
    ------
    InputError
        A row fails ingest's checks, or the id column holds duplicate ids.
    """
    table = read_table(path, csv)
    if not id_column:
        table = table.append_column(ROW_ID, pa.array(np.arange(table.num_rows), pa.int64()))
        id_column = ROW_ID
    columns: dict[str, Any] = {"id_column": id_column, "group_column": group_column,
               "deletion_prob_column": deletion_prob_column, "feature_columns": feature_columns,
               "allow_missing": allow_missing}
    source = from_table(table, label, **columns)
    for _ in source.batches:  # reading is the check
        pass
    ids = table.column(id_column)
    if pc.count_distinct(ids, mode="all").as_py() != table.num_rows:
        raise InputError(f"id column {id_column!r} holds duplicate ids: sample ids must be "
                         "unique across the whole file (training and holdout rows)")
    tr, te = split(table.num_rows, fraction, seed)
    holdout = None
    if len(tr) and len(te):
        batches = list(from_table(table.take(te), label, **columns).batches)
        y = np.concatenate([b.y for b in batches])
        if source.columns is not None:  # typed columns: predict reads them by name
            holdout = (table.take(te).select(source.feature_names), y)
        else:
            holdout = (np.concatenate([b.X for b in batches]), y)
    return FileSplit(table.take(tr), id_column, holdout, table.num_rows)
