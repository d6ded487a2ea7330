"""Ingest memory does not depend on the Parquet row group size (issue 23): pyarrow and
pandas write one row group of up to 1M rows per file, Spark 128 MB; a dataset scan decodes
a whole row group (and holds its column chunks) before its first batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]

# peak RSS (VmHWM: this process's own, unlike ru_maxrss, which keeps the peak of the
# process it was forked from) after the imports and after the ingest
PEAK = """
import json, sys
import pyarrow.dataset, pyarrow.parquet
from sisa import IngestOptions, Store

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

base = hwm()
Store.create(sys.argv[2], sys.argv[1], options=IngestOptions(label="label", n_shards=4,
                                                             n_slices=2, memory_budget_mb=8))
print(json.dumps(hwm() - base))
"""


def _ingest_peak(src: Path, out: Path) -> float:
    """The ingest's growth of peak RSS (MB) over the imports, in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", PEAK, str(src), str(out)],
                          capture_output=True, text=True, check=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_one_large_row_group_costs_no_more_memory_than_small_ones(tmp_path):
    """1M x 10 float32 (40 MB) as one row group and as 20 groups of 50k rows: the same
    ingest peak within 25 MB (measured: +55 and +41 MB over the imports). Reading whole
    row groups, one group cost 54 MB more (+141 against +88). Dictionary encoding off:
    a column chunk's dictionary page (up to 1 MB a column) would differ between the two
    layouts for a reason other than the reading path."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1_000_000, 10)).astype(np.float32)
    t = pa.table({**{f"f{i}": X[:, i] for i in range(10)},
                  "label": (X[:, 0] > 0).astype(np.int64)})
    del X
    peaks = {}
    for name, rows in (("one", 1_000_000), ("many", 50_000)):
        src = tmp_path / f"{name}.parquet"
        pq.write_table(t, src, row_group_size=rows, use_dictionary=False)
        assert pq.ParquetFile(src).num_row_groups == (1 if name == "one" else 20)
        peaks[name] = _ingest_peak(src, tmp_path / f"store-{name}")
    assert peaks["one"] - peaks["many"] < 25, peaks
