"""Store benchmark (issue: foundation): ingest 1M x 50 float32 from Parquet into 16 x 8
slices with bounded memory, read one slice, delete 10 scattered ids.

Run: python -m benchmarks.store [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks._data import synthetic_parquet

INGEST = """
import json, resource, sys, time
from sisa import IngestOptions, Store
t = time.perf_counter()
st = Store.create(sys.argv[2], sys.argv[1],
                  options=IngestOptions(label="label", n_shards=16, n_slices=8))
print(json.dumps({"seconds": time.perf_counter() - t, "rows": st.n_rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "spread": st.spread()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    src = synthetic_parquet(args.rows, 50)
    out = tempfile.mkdtemp(prefix="sisa-bench-store-") + "/store"
    # A fresh process, so its peak RSS is the ingest's alone.
    ingest = json.loads(subprocess.run([sys.executable, "-c", INGEST, str(src), out],
                                       capture_output=True, text=True, check=True).stdout)
    from sisa import Store

    st = Store.open(out)
    times = []
    for s in range(16):
        t = time.perf_counter()
        part = st.rows.read_slice(s, 3)
        times.append(time.perf_counter() - t)
    rng = np.random.default_rng(0)
    cells = rng.choice(16 * 8, size=10, replace=False)
    ids = [int(st.rows.read_slice(c // 8, c % 8).ids[0]) for c in cells]
    t = time.perf_counter()
    res = st.delete(ids)
    delete_s = time.perf_counter() - t
    result = {
        "rows": ingest["rows"], "ingest_seconds": round(ingest["seconds"], 2),
        "ingest_peak_rss_mb": round(ingest["peak_rss_mb"]), "shard_spread": ingest["spread"],
        "read_slice_ms_median": round(1000 * float(np.median(times)), 2),
        "read_slice_ms_max": round(1000 * max(times), 2), "slice_rows": len(part),
        "delete_10_ids_s": round(delete_s, 3), "slices_rewritten": len(cells),
        "shards_changed": len(res.plan),
    }
    print(json.dumps(result, indent=1))
    print(f"ingest {result['rows']:,} rows: {result['ingest_seconds']} s, peak RSS "
          f"{result['ingest_peak_rss_mb']} MB (bound 1536) | read slice: median "
          f"{result['read_slice_ms_median']} ms (bound 20) | delete 10 ids over 10 slices: "
          f"{result['delete_10_ids_s']} s (bound 1)")


if __name__ == "__main__":
    main()
