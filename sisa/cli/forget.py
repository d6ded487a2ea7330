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


def _receipt_text(answer: dict) -> str:
    """A forget's receipt (what :func:`sisa.unlearn.forget` answered) as a person reads it."""
    from ..unlearn.receipts import as_logged
    from ..unlearn.records import SealedReceipt
    from ..unlearn.timings import Timings

    r = SealedReceipt.from_json(as_logged(answer)).receipt
    q = r.request
    t = answer.get("timings")
    groups = (f"{q.n_groups} group(s): " if q.kind == "groups" else "")
    return (f"forgot {groups}{q.n_ids} id(s) (request {q.request_id}): retrained "
            f"{r.rows_retrained:,} rows instead of {r.rows_full_retrain:,} "
            f"({ratio(r.rows_full_retrain, r.rows_retrained)}) in {r.wall_time_s}s; "
            f"shards touched {[s for s, _ in q.affected]}"
            + (f"; emptied {list(r.shards_emptied)}" if r.shards_emptied else "")
            + (" (already forgotten: replayed receipt)" if answer.get("replayed") else "")
            + (f"\ngroups sha256 {q.groups_sha256}" if q.kind == "groups" else "")
            + f"\nids sha256 {q.ids_sha256}\nfingerprint {q.fingerprint_before[:16]} -> "
            f"{r.fingerprint_after[:16]}"
            + _timings_text(None if t is None else Timings.from_json(t)))


def _timings_text(t) -> str:
    """Where the forget's time went (a :class:`~sisa.unlearn.timings.Timings`; not part of
    the signed receipt)."""
    if t is None or not t.wall_s:
        return ""
    parts = t.to_json()
    rest = sorted(((k[:-2], v) for k, v in parts.items() if k.endswith("_s")
                   and k not in ("wall_s", "training_s") and v > 0), key=lambda kv: -kv[1])
    return (f"\ntime {1e3 * t.wall_s:.1f} ms: training {1e3 * t.training_s:.1f} ms, the "
            f"rest {100 * t.outside_training:.0f}% ("
            + ", ".join(f"{k} {1e3 * v:.1f}" for k, v in rest[:5]) + f"); {t.fsyncs} fsyncs")
