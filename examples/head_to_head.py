"""Head-to-head: retrain vs SISA vs Newton vs EMSE vs doing nothing, with the ε gap.

    python examples/head_to_head.py [--dataset adult] [--quick] [--out runs/head_to_head]

Prints the report table; the full report (JSON, Markdown, figures) goes to --out.
"""

from __future__ import annotations

import argparse

from sisa import compare

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dataset", default="synthetic", help="synthetic, adult, diamonds, ...")
parser.add_argument("--quick", action="store_true", help="8 models per side on 600 rows")
parser.add_argument("--out", default="runs/head_to_head")
args = parser.parse_args()

size = {"n_models": 8, "rows": 600} if args.quick else {"n_models": 64}
report = compare.run(args.dataset, out=args.out, **size)
print(report.table())
print(f"SISA check passed: {report.sisa_ok}; full report in {report.files['md']}")
