"""Shared benchmark data: a synthetic classification table written once as Parquet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CACHE = Path(os.environ.get("SISA_BENCH_DIR", "/tmp/sisa-bench"))


def synthetic_parquet(n_rows: int = 1_000_000, n_features: int = 50, seed: int = 0) -> Path:
    """A Parquet file of ``n_rows`` x ``n_features`` float32 plus ``label``, written in row
    groups so that making it never holds more than one group in memory."""
    path = CACHE / f"synthetic-{n_rows}x{n_features}-{seed}.parquet"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n_features)
    names = [f"f{i}" for i in range(n_features)]
    schema = pa.schema([(n, pa.float32()) for n in names] + [("label", pa.int64())])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema, use_dictionary=False) as w_:
        for start in range(0, n_rows, 100_000):
            m = min(100_000, n_rows - start)
            X = rng.normal(size=(m, n_features)).astype(np.float32)
            y = ((X @ w + rng.normal(scale=2.0, size=m)) > 0).astype(np.int64)
            cols = [pa.array(X[:, i]) for i in range(n_features)] + [pa.array(y)]
            w_.write_table(pa.Table.from_arrays(cols, schema=schema))
    tmp.rename(path)
    return path
