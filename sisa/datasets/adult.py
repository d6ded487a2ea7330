"""UCI Adult, read from the ``mglearn`` wheel (``pip install 'sisa[datasets]'``)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sisa.datasets._dataset import Dataset, package_file

__all__ = ["ADULT_COLUMNS", "load_adult"]

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
    file = package_file("mglearn", "data/adult.data", "SISA_ADULT_PATH", path, "UCI Adult")
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

