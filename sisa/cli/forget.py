"""``sisa forget``: exactly unlearn rows by sample id and print the receipt."""

from __future__ import annotations

import argparse

from .common import emit, ratio, read_ids, settings


def cmd_forget(args: argparse.Namespace) -> int:
    """Forget the ids of ``--id``/``--ids`` from the store and print the receipt.

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
    from ..unlearn import forget

    store = Store.open(args.store)
    ids = read_ids(args, store.manifest.id_type)
    r = forget(store, ids, record_ids=args.record_ids, settings=settings(args))
    emit(args, r, _receipt_text(r))
    return 0


def _receipt_text(r: dict) -> str:
    """A forget's receipt as a person reads it."""
    return (f"forgot {r['n_ids']} id(s) (request {r['request_id']}): retrained "
            f"{r['rows_retrained']:,} rows instead of {r['rows_full_retrain']:,} "
            f"({ratio(r['rows_full_retrain'], r['rows_retrained'])}) in {r['wall_time_s']}s; "
            f"shards touched {[s for s, _ in r['affected']]}"
            + (f"; emptied {r['shards_emptied']}" if r.get("shards_emptied") else "")
            + (" (already forgotten: replayed receipt)" if r.get("replayed") else "")
            + f"\nids sha256 {r['ids_sha256']}\nfingerprint {r['fingerprint_before'][:16]} -> "
            f"{r['fingerprint_after'][:16]}")
