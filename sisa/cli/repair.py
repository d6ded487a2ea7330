"""``sisa repair`` and ``sisa upgrade``: bring a store to a whole, current state."""

from __future__ import annotations

import argparse

from .common import emit, settings


def cmd_repair(args: argparse.Namespace) -> int:
    """Finish an interrupted forget or fit, drop damaged checkpoints and retrain them, and
    remove stray files.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa repair`` options.

    Returns
    -------
    int
        0; a store that cannot be repaired raises.
    """
    from ..store import Store
    from ..unlearn import repair

    summary = repair(Store.open(args.store, check_files=False), settings=settings(args))
    done = []
    if summary["removed_files"]:
        done.append(f"removed {len(summary['removed_files'])} stray file(s)")
    if summary["damaged_checkpoints"]:
        done.append(f"dropped damaged checkpoints ({'; '.join(summary['damaged_checkpoints'])})")
    if summary["retrained_shards"]:
        done.append(f"retrained shards {summary['retrained_shards']}")
    if summary["completed_request"]:
        done.append(f"finished forget request {summary['completed_request']}")
    emit(args, summary, f"repaired {args.store}: " + ("; ".join(done) if done else
                                                      "nothing to repair, the store is whole"))
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Convert a store of an older format (``sisa-store/3``) in place.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa upgrade`` options.

    Returns
    -------
    int
        0 (converted, or already current).
    """
    from ..store import Store

    done = Store.upgrade(args.store)
    emit(args, {"store": args.store, "upgraded": done},
         f"upgraded {args.store} to the current store format" if done else
         f"{args.store} is already in the current store format")
    return 0
