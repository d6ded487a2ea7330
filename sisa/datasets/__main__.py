"""``python -m sisa.datasets NAME OUT.parquet``: write a built-in dataset as a Parquet file.

The file holds the dataset's feature columns under their names and the target as
``label``, so what ``sisa train NAME`` trains on can also be predicted from, or trained
from a file (``sisa train OUT.parquet --label label``), exactly as a user's own table.
"""

from __future__ import annotations

import argparse
import os
import sys

from sisa.datasets import DATASETS, load
from sisa.errors import SisaError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sisa.datasets",
                                description="Write a built-in dataset as a Parquet file.")
    p.add_argument("name", choices=sorted(DATASETS))
    p.add_argument("out", help="output .parquet path")
    p.add_argument("--rows", type=int, default=None, help="a seeded subsample of this many rows")
    args = p.parse_args(argv)
    if not args.out.endswith(".parquet"):
        p.error(f"output {args.out!r} must end in .parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        ds = load(args.name, args.rows)
    except SisaError as e:
        print(f"python -m sisa.datasets: error: {e}", file=sys.stderr)
        return 2
    flat = ds.X.reshape(len(ds), -1)  # images: one column per pixel
    names = ds.feature_names if len(ds.feature_names) == flat.shape[1] else [
        f"x{i}" for i in range(flat.shape[1])]
    columns = {name: flat[:, i] for i, name in enumerate(names)}
    tmp = f"{args.out}.tmp-{os.getpid()}"  # beside the target, switched in whole
    pq.write_table(pa.table({**columns, "label": ds.y}), tmp)
    os.replace(tmp, args.out)
    print(f"wrote {len(ds):,} rows x {flat.shape[1]} features of {ds.name} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
