"""``sisa status`` and ``sisa history``: what a store holds and what it forgot."""

from __future__ import annotations

import argparse

from .common import emit


def cmd_status(args: argparse.Namespace) -> int:
    """Print what a store holds (:func:`sisa.unlearn.status.describe`) as a table.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa status`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    from ..store import Store
    from ..unlearn.status import describe

    s = describe(Store.open(args.store))
    hold = s["holdout"]
    rows = [("store", s["store"]), ("fingerprint", s["fingerprint"][:32]),
            ("rows", f"{s['rows']:,} in {s['shards']} shards x {s['slices']} slices"),
            ("rows per shard", ", ".join(f"{n:,}" for n in s["rows_per_shard"])),
            ("shard balance", f"min {s['spread']['min']:,}  max {s['spread']['max']:,}  "
                              f"rel. std {s['spread']['rel_std']:.3f}"),
            ("deletions", f"{s['deleted_rows']:,} rows in {s['forget_requests']} request(s)"),
            ("model", f"{s['model']} ({s['aggregation']} aggregation, {s['schedule']} schedule,"
                      f" {s['epochs']} epoch(s)/slice)"),
            ("holdout", f"{hold['metric']} {hold['score']:.4f} on {hold['rows']:,} rows (at "
                        "training)" if hold else "none kept"),
            ("size", f"{s['bytes'] / 2**20:,.1f} MiB in {s['files']} files"),
            ("sample ids", s["id_type"]),
            ("groups", f"column {s['group_column']!r} ({s['group_type']} keys): `sisa forget "
                       "--group KEY` forgets all of a group's rows" if s["group_column"]
                       else "none (built without --group)"),
            ("signed by", s["signed_by"] or "nobody (unsigned: `sisa keygen`, then rebuild, "
                                            "to sign)"),
            ("state", "UNFINISHED: run `sisa repair`" if s["pending"] or s["unservable"]
             else "ok")]
    width = max(len(k) for k, _ in rows)
    emit(args, s, "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Print every forget receipt in the store's audit log, oldest first.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa history`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    from ..store import Store
    from ..unlearn import history

    rows = history(Store.open(args.store, check_files=False))
    lines = [f"{'completed':<29} {'request':<32} {'ids':>6} {'rows retrained':>15} {'s':>8}"]
    lines += [f"{r['completed_at']:<29} {r['request_id']:<32} {r['n_ids']:>6} "
              f"{r['rows_retrained']:>15,} {r['wall_time_s']:>8}" for r in rows]
    emit(args, rows, "\n".join(lines) + f"\n{len(rows)} forget request(s)")
    return 0
