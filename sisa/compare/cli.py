"""``sisa compare``: the head-to-head comparison from the command line.

Wire it into a CLI with :func:`add_parser`; ``python -m sisa.compare.cli compare ...``
runs it on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sisa.errors import SisaError

__all__ = ["add_parser", "main", "run_from_args"]

_DATASETS = ("synthetic", "adult", "diamonds", "fashion-mnist")

_EPILOG = """\
Methods: retrain (from scratch on W), sisa (fit on D, then forget U), newton (certified
removal), emse (fine-tune), original (nothing forgotten). Writes report.json, report.md
and metrics.png, epsilon_hist.png, time_vs_eps.png to --out.

example: sisa compare --dataset adult        # N=64 models per side, ~1.5 min on 2 CPUs
more:
  sisa compare --dataset synthetic --models 16 --out runs/cmp-synth
  sisa compare --dataset adult --forget 30 --rows 4000 --json > adult.json
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``compare`` subcommand on an argparse ``subparsers`` object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser; its ``func`` default is :func:`run_from_args`.
    """
    p = subparsers.add_parser(
        "compare",
        help="head-to-head: retrain vs SISA vs Newton vs EMSE vs doing nothing, with the ε gap",
        description="Run every unlearning method on one split and one model family; report "
                    "cost, metrics on W/U/test and the empirical per-row ε against N models "
                    "per side (NeurIPS-2023 challenge estimator).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default="adult", choices=_DATASETS,
                   help="built-in dataset (default: adult)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--forget-fraction", type=float, metavar="F",
                       help="forget a random fraction F of the training rows (default: the "
                            "dataset's unwanted rows if it has them, else 0.02)")
    which.add_argument("--forget", type=int, metavar="N", help="forget N random training rows")
    p.add_argument("--models", type=int, default=64, metavar="N",
                   help="models per side for the ε estimate (default: 64; resolves ε up to "
                        "about ln(N-1))")
    p.add_argument("--shards", type=int, default=5, help="SISA shards S (default: 5)")
    p.add_argument("--slices", type=int, default=2, help="SISA slices R (default: 2)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory (default: runs/compare-<dataset>)")
    p.add_argument("--rows", type=int, metavar="N",
                   help="subsample the dataset to N rows (default: 1000 synthetic, 8000 "
                        "adult/diamonds, 2000 fashion-mnist)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and U (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args: argparse.Namespace) -> int:
    """Run the comparison described by parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        From the parser :func:`add_parser` registered.

    Returns
    -------
    int
        0 on success; 1 on an error (printed to stderr) or if SISA's byte-identity
        check failed.
    """
    from sisa.compare.run import run

    out = args.out if args.out is not None else Path("runs") / f"compare-{args.dataset}"
    try:
        rep = run(args.dataset, forget=args.forget, forget_fraction=args.forget_fraction,
                  n_models=args.models, n_shards=args.shards, n_slices=args.slices,
                  rows=args.rows, seed=args.seed, out=out, progress=not args.quiet)
    except SisaError as exc:
        if args.debug:
            raise
        print(f"sisa compare: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(rep.to_json())
    elif not args.quiet:
        print(rep.table())
        print(f"\nwall time {rep.timings['total_s']:.0f} s; report: {rep.files['md']}")
    if not rep.sisa_ok:
        chk = rep.data["sisa_check"]
        print(f"sisa compare: SISA check FAILED: forget(U) byte-identical to fit(W) on "
              f"{chk['seeds_byte_identical']}/{chk['seeds']} seeds, ε̂ all zero: "
              f"{chk['eps_all_zero']}; see {rep.files['md']}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sisa.compare.cli compare [options]``."""
    parser = argparse.ArgumentParser(prog="sisa")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
