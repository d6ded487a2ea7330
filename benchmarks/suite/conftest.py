"""Fixtures of the tracked benchmark suite: the data, a store, a fitted model, and a peak
memory probe.

The suite imports nothing but sisa and its dependencies, so ``python -m benchmarks.compare``
can run this very file against the sisa of any commit (PYTHONPATH names that commit's
checkout). ``--size quick`` is what CI runs; ``--size full`` is the tracked figure.
"""

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
from ops import make_model, make_store

SIZES = {
    "quick": {"rows": 5_000, "features": 20, "shards": 2, "slices": 2, "rounds": 2},
    "full": {"rows": 1_000_000, "features": 50, "shards": 16, "slices": 8, "rounds": 5},
}


def pytest_addoption(parser):
    parser.addoption("--size", choices=sorted(SIZES), default="full",
                     help="quick: seconds (CI); full: 1M x 50 rows, S=16, R=8 (tracked)")


@pytest.fixture(scope="session")
def size(request) -> dict:
    return {"name": request.config.getoption("--size"), **SIZES[request.config.getoption("--size")]}


@pytest.fixture(scope="session")
def parquet(size, tmp_path_factory) -> Path:
    """A synthetic table (float32 features, a label from a noisy linear rule), written in
    row groups so making it never holds more than one group in memory."""
    path = tmp_path_factory.mktemp("data") / "synthetic.parquet"
    rng = np.random.default_rng(0)
    w = rng.normal(size=size["features"])
    names = [f"f{i}" for i in range(size["features"])]
    schema = pa.schema([(n, pa.float32()) for n in names] + [("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as out:
        for start in range(0, size["rows"], 100_000):
            m = min(100_000, size["rows"] - start)
            X = rng.normal(size=(m, size["features"])).astype(np.float32)
            y = ((X @ w + rng.normal(scale=2.0, size=m)) > 0).astype(np.int64)
            out.write_table(pa.Table.from_arrays([*(pa.array(c) for c in X.T), pa.array(y)],
                                                 schema=schema))
    return path


@pytest.fixture(scope="session")
def store(parquet, size, tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("store") / "s"), parquet, size)


@pytest.fixture(scope="session")
def fitted(store, size):
    return make_model(size).fit(store)


# One operation in a fresh interpreter: its peak RSS is the operation's alone (plus the
# interpreter and imports, reported separately as the baseline).
_PROBE = """
import json, sys, time
from ops import make_model, make_store, rows


def hwm():
    # this process's own peak RSS in MB (VmHWM): ru_maxrss would carry over the parent's
    # peak across fork + exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


def reset_hwm():
    # the peak from here on: Linux resets VmHWM to the current RSS on "5" (clear_refs)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


import numpy as np
from sisa import Store
size, parquet, work, op = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
base = hwm()
if op != "ingest":
    st = make_store(work + "/s", parquet, size)
    model = make_model(size).fit(st) if op in ("forget", "verify") else None
    reset_hwm()
    base = hwm()
t = time.perf_counter()
if op == "ingest":
    make_store(work + "/s", parquet, size)
elif op == "read_slice":
    rows(st).read_slice(0, 0)
elif op == "fit":
    make_model(size).fit(st)
elif op == "forget":
    model.forget([int(rows(st).read_slice(0, size["slices"] - 1).ids[0])])
elif op == "verify":
    assert model.verify().ok
print(json.dumps({"seconds": time.perf_counter() - t, "baseline_rss_mb": base,
                  "peak_rss_mb": hwm()}))
"""


@pytest.fixture()
def peak_rss(size, parquet, tmp_path):
    """``peak_rss(op)`` runs one operation in a fresh process and returns its figures."""
    def probe(op: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, json.dumps(size), str(parquet), str(tmp_path), op],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])},
            capture_output=True, text=True, timeout=3600)
        assert done.returncode == 0, done.stderr[-2000:]
        return {k: round(v, 1) for k, v in json.loads(done.stdout.splitlines()[-1]).items()}
    return probe
