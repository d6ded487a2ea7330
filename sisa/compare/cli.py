"""``sisa compare``: the head-to-head comparison from the command line.

Wire it into a CLI with :func:`add_parser`; ``python -m sisa.compare.cli compare ...``
runs it on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sisa.errors import InputError, SisaError

__all__ = ["add_parser", "main", "run_from_args"]

_DATASETS = ("adult", "fashion-mnist")

_EPILOG = """\
Families (one model for every method):
  linear  L2 logistic regression: retrain, sisa (fit on D, forget U), newton (Guo et al.'s
          Newton step), newton_noisy (with the certificate's noise), pru (projective
          residual update), emse, finetune, neggrad (NegGrad+), relabel (random
          relabelling), original (do nothing); plus a cost run on all of Adult
  torch   a small CNN (sisa.deep.TorchClassifier) on Fashion-MNIST: retrain, sisa,
          finetune, neggrad (NegGrad+), original; 2,500 rows so N models per side fit
Forget sets: random, subgroup, mislabeled, duplicated, injected. Writes report.json,
report.md, report.html (one self-contained page) and the figures (epsilon_ci.png;
linear: newton_noise.png) to --out.

example: sisa compare --dataset adult     # N=256 per side, 5 forget sets, ~15 min on 2 CPUs
more:
  sisa compare --family torch             # Fashion-MNIST CNN, N=128, 2 forget sets
  sisa compare --models 64 --forget-sets random,mislabeled --out runs/cmp-quick
  sisa compare --models 1024 --ray-address auto     # on a cluster
"""


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _fractions(text: str) -> tuple[float, ...]:
    """Comma-separated fractions; "none" (or nothing) for none."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(float(t) for t in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in (0, 1) or 'none', got {text[:40]!r}"
        ) from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
        help="head-to-head: exact vs approximate unlearning, ε̂ against each method's floor",
        description="Run unlearning methods on one model family and several forget sets; "
                    "report each method's ε̂ (NeurIPS-2023 challenge estimator, independent "
                    "seeds) with a confidence interval next to its floor, a permutation "
                    "test, the challenge's score, accuracies and costs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_protocol_options(p)
    _add_run_options(p)
    p.set_defaults(func=run_from_args)
    return p


def _add_protocol_options(p: argparse.ArgumentParser) -> None:
    """What is compared: data, model family, forget sets, N, the family's settings."""
    from sisa.compare.data import SCENARIOS
    from sisa.compare.methods.families import FAMILIES

    def default(key: str) -> str:  # "256 (linear), 64 (torch)"
        show = (lambda v: ",".join(v)) if key.endswith("scenarios") else str
        return ", ".join(f"{show(c.defaults[key])} ({name})" for name, c in FAMILIES.items())

    p.add_argument("--dataset", choices=_DATASETS,
                   help="built-in dataset: the family's own (default: adult for linear, "
                        "fashion-mnist for torch)")
    p.add_argument("--family", default="linear", choices=tuple(FAMILIES),
                   help="model family every method uses (default: linear)")
    p.add_argument("--models", type=int, metavar="N",
                   help=f"models per side for each ε̂ (default: {default('n_models')}; ε "
                        "resolves up to ln(N-1))")
    p.add_argument("--forget-sets", type=_names, metavar="LIST",
                   help=f"comma-separated forget sets among {','.join(SCENARIOS)} (default: "
                        f"{default('scenarios')})")
    p.add_argument("--sisa-forget-sets", type=_names, metavar="LIST",
                   help="forget sets on which SISA's ε̂ is estimated (default: "
                        f"{default('sisa_scenarios')}; SISA is checked byte for byte on them)")
    p.add_argument("--forget-fraction", type=float, metavar="F",
                   help="size of the random and mislabeled forget sets (default: 0.02 "
                        "(linear), 0.08 (torch))")
    p.add_argument("--eps-rows", type=int, metavar="N",
                   help=f"rows the ε runs use (default: {default('eps_rows')}; 0 = all)")
    p.add_argument("--cost-rows", type=int, default=0, metavar="N",
                   help="rows of the linear family's cost and accuracy run (default: 0 = all "
                        "of Adult)")
    p.add_argument("--shards", type=int, help="SISA shards S (default: 5)")
    p.add_argument("--slices", type=int,
                   help="SISA slices R (default: 1: the linear model refits from scratch, so "
                        "slices would save no compute)")
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="loss-perturbation σ of newton_noisy (linear; default: 30, at its "
                        "λ = 1000)")
    p.add_argument("--subsample", type=float, metavar="F",
                   help="fraction of W each seed trains on (linear; default: 0.9)")
    p.add_argument("--fractions", type=_fractions, metavar="LIST",
                   help="other subsample fractions with verdicts, or 'none' (linear; "
                        "default: 0.5,0.99)")
    p.add_argument("--fraction-models", type=int, metavar="N",
                   help="models per side at those fractions (default: min(128, N))")
    p.add_argument("--bootstrap", type=int, default=100, metavar="B",
                   help="bootstrap replicates per interval (default: 100)")
    p.add_argument("--permutations", type=int, default=2000, metavar="B",
                   help="permutations per test, the same for every method of a forget set; "
                        "p-values are Holm-corrected across the report (default: 2000)")
    p.add_argument("--tune-models", type=int, metavar="N",
                   help="models per side of the tuning of fine-tune, NegGrad+ and SCRUB on "
                        "a validation forget set (0: no tuning; default: linear 32, torch 8)")
    p.add_argument("--curve-models", type=int, metavar="N",
                   help="models per side of each point of the ε̂-against-time curves (0: "
                        "none; default: linear 64, torch 16)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Where it runs and what it prints or writes."""
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory (default: runs/compare-<dataset>, torch: "
                        "runs/compare-<dataset>-torch)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and U (default: 0)")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster (default: a local Ray)")
    p.add_argument("--local", action="store_true",
                   help="run in this process without Ray (debugging)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no summary")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the comparison described by parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        From the parser :func:`add_parser` registered.

    Returns
    -------
    int
        0 on success; 2 on bad input, 1 on another error (printed to stderr) or if a
        checked SISA forget was not byte-identical to a fit without U.
    """
    from sisa.compare.head2head import run
    from sisa.compare.methods.families import FAMILIES
    from sisa.compare.options import CompareOptions
    from sisa.tasks.settings import ExecutionSettings

    data = args.dataset or FAMILIES[args.family].defaults.get("dataset", "adult")
    name = data if args.family == "linear" else f"{data}-{args.family}"
    out = args.out if args.out is not None else Path("runs") / f"compare-{name}"
    try:
        settings = ExecutionSettings(backend="local" if args.local else "ray",
                                     address=args.ray_address, progress=not args.quiet)
        options = CompareOptions(
            dataset=args.dataset, family=args.family, n_models=args.models,
            eps_rows="auto" if args.eps_rows is None else args.eps_rows or None,
            cost_rows=args.cost_rows or None, scenarios=args.forget_sets,
            sisa_scenarios=args.sisa_forget_sets, fraction=args.forget_fraction,
            n_shards=args.shards, n_slices=args.slices, noise_std=args.noise,
            subsample=args.subsample, fractions=args.fractions,
            fraction_models=args.fraction_models, n_boot=args.bootstrap,
            n_perm=args.permutations, seed=args.seed, tune_models=args.tune_models,
            curve_models=args.curve_models)
        rep = run(options, settings=settings, out=out)
    except SisaError as exc:
        if args.debug:
            raise
        print(f"sisa compare: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    for warn in rep.data.get("statistics", {}).get("warnings", []):
        print(f"sisa compare: warning: {warn}", file=sys.stderr)
    if args.json:
        print(rep.to_json())
    elif not args.quiet:
        print(rep.headline())
        print(f"\nwall time {rep.timings['total_s']:.0f} s; report: {rep.files['md']}")
    if not rep.sisa_ok and rep.data["sisa_check"]["seeds_checked"]:
        chk = rep.data["sisa_check"]
        print(f"sisa compare: SISA check FAILED: forget(U) byte-identical to fit(W) on "
              f"{chk['byte_identical']}/{chk['seeds_checked']} seeds; see {rep.files['md']}",
              file=sys.stderr)
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
