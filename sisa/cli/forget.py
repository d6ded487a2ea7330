"""``sisa forget``: exactly unlearn rows by sample id, or every row of some groups (a
person), and print the receipt."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .common import emit, ratio, read_ids, settings


def cmd_forget(args: argparse.Namespace) -> int:
    """Forget the ids of ``--id``/``--ids``, or the groups of ``--group``/``--groups``, from
    the store and print the receipt.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa forget`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    from ..store import Store
    from ..store.format import ids as idmod
    from ..store.write.groups import group_type
    from ..unlearn import forget, forget_groups

    store = Store.open(args.store)
    if args.group or args.groups:
        if args.id or args.ids:
            raise InputError("give sample ids (--id/--ids) or groups (--group/--groups), not "
                             "both: forget them in two requests")
        # the ids reading (flags, files, stdin), by the store's group key type
        keys = idmod.group_wording(read_ids, args, group_type(store), flag="group",
                                   file_flag="groups")
        r = forget_groups(store, keys, record_ids=args.record_ids, settings=settings(args))
    else:
        ids = read_ids(args, store.manifest.id_type)
        r = forget(store, ids, record_ids=args.record_ids, settings=settings(args))
    emit(args, r, _receipt_text(r))
    return 0


def _receipt_text(r: dict) -> str:
    """A forget's receipt as a person reads it."""
    groups = (f"{r['n_groups']} group(s): " if "n_groups" in r else "")
    return (f"forgot {groups}{r['n_ids']} id(s) (request {r['request_id']}): retrained "
            f"{r['rows_retrained']:,} rows instead of {r['rows_full_retrain']:,} "
            f"({ratio(r['rows_full_retrain'], r['rows_retrained'])}) in {r['wall_time_s']}s; "
            f"shards touched {[s for s, _ in r['affected']]}"
            + (f"; emptied {r['shards_emptied']}" if r.get("shards_emptied") else "")
            + (" (already forgotten: replayed receipt)" if r.get("replayed") else "")
            + (f"\ngroups sha256 {r['groups_sha256']}" if "groups_sha256" in r else "")
            + f"\nids sha256 {r['ids_sha256']}\nfingerprint {r['fingerprint_before'][:16]} -> "
            f"{r['fingerprint_after'][:16]}" + _timings_text(r.get("timings")))


def _timings_text(t: dict | None) -> str:
    """Where the forget's time went (not part of the signed receipt)."""
    if not t or not t.get("wall_s"):
        return ""
    rest = sorted(((k[:-2], v) for k, v in t.items() if k.endswith("_s")
                   and k not in ("wall_s", "training_s") and v > 0), key=lambda kv: -kv[1])
    return (f"\ntime {1e3 * t['wall_s']:.1f} ms: training {1e3 * t['training_s']:.1f} ms, the "
            f"rest {100 * t['outside_training']:.0f}% ("
            + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in rest[:5]) + f"); {t['fsyncs']} fsyncs")
