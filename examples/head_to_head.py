"""Head-to-head: retrain vs SISA vs Newton vs the PRU vs EMSE vs fine-tune, NegGrad+,
relabelling and doing nothing, with the ε gap (the NeurIPS-2023 challenge's protocol).

    python examples/head_to_head.py [--quick] [--family torch] [--out runs/head_to_head]

Prints the headline; the full report (JSON, Markdown, figures) goes to --out.
"""

from __future__ import annotations

import argparse

from sisa import compare
from sisa.compare import CompareOptions

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true",
                    help="8 models per side on 600 rows (minutes, not the 15 of the default)")
parser.add_argument("--family", default="linear", choices=("linear", "torch"),
                    help="the model every method uses (torch: an MLP, fewer methods)")
parser.add_argument("--out", default="runs/head_to_head")
args = parser.parse_args()

size = {"n_models": 8, "eps_rows": 600} if args.quick else {}
if args.quick and args.family == "linear":
    size["cost_rows"] = 3000
report = compare.run(CompareOptions(dataset="adult", family=args.family, **size), out=args.out)
print(report.headline())
print(f"SISA byte-identity check passed: {report.sisa_ok}; full report in {report.files['md']}")
