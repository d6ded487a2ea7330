"""``sisa plan``: choose S and R for a deletion rate, from the SISA cost model."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..store.write.holdout import split
from .common import emit, estimator_params, load_builtin

MIN_ROWS_PER_SLICE = 100  # below this a slice is too small to train a model step on


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the cost of every candidate (S, R) layout and recommend the cheapest usable
    one; with ``--measure``, also the holdout accuracy of each S on a built-in dataset.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa plan`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    from ..engine.cost import plan

    table = plan(args.rows, args.deletions_per_day, n_shards_options=args.shards,
                 n_slices_options=args.slices, schedule=args.schedule, epochs=args.epochs)
    measured = _measure_accuracy(args) if args.measure else {}
    for row in table:
        if row["n_shards"] in measured:
            row["holdout_accuracy"] = measured[row["n_shards"]]
    head = (f"{'S':>4} {'R':>4} {'rows/slice':>11} {'rows/request':>13} {'rows/day':>14} "
            f"{'vs monolithic':>14}" + ("  holdout" if measured else ""))
    lines = [head] + [
        f"{r['n_shards']:>4} {r['n_slices']:>4} {r['rows_per_slice']:>11,.0f} "
        f"{r['rows_per_request']:>13,.0f} {r['rows_per_day_batched']:>14,.0f} "
        f"{r['speedup_vs_monolithic']:>13,.1f}x"
        + (f"  {r['holdout_accuracy']:.4f}" if "holdout_accuracy" in r else "")
        for r in table]
    usable = [r for r in table if r["rows_per_slice"] >= MIN_ROWS_PER_SLICE]
    if not usable:
        raise InputError(f"every candidate leaves fewer than {MIN_ROWS_PER_SLICE} rows per "
                         "slice: pass smaller --shards/--slices values")
    best = min(usable, key=lambda r: (r["rows_per_day_batched"], -r["n_shards"]))
    lines.append(f"rows/day assumes one batched forget a day; layouts with fewer than "
                 f"{MIN_ROWS_PER_SLICE} rows per slice are not recommended; more shards cost "
                 "accuracy: measure it with --measure DATASET (a built-in name)")
    lines.append(f"cheapest: S={best['n_shards']}, R={best['n_slices']}")
    emit(args, table, "\n".join(lines))
    return 0


def _measure_accuracy(args: argparse.Namespace) -> dict[int, float]:
    """Holdout accuracy of a one-slice fit with each candidate S (``--measure``)."""
    from ..engine.presets import from_preset
    from ..estimators import SISAClassifier

    ds = load_builtin(args.measure, args.measure_rows)
    tr, te = split(len(ds.y), 0.2, 0)
    out = {}
    for S in args.shards:
        m = SISAClassifier(from_preset(args.model), n_shards=S, n_slices=1,
                           **estimator_params(args, progress=False))
        out[S] = round(float(m.fit(ds.X[tr], ds.y[tr]).score(ds.X[te], ds.y[te])), 4)
    return out
