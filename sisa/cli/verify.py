"""``sisa verify``: prove a store, for its owner or for an auditor with the public key."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from .common import emit, int_list, read_ids, settings


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the store: retrain shards from scratch and compare bytes, check every file,
    lineage, signatures and the audit log, and scan for forgotten ids.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa verify`` options.

    Returns
    -------
    int
        0 when every check passes, 1 when one fails.
    """
    from ..store import Store
    from ..store.format.keys import parse_public
    from ..unlearn import verify

    shards = int_list(args.shards, "--shards") if args.shards else None
    if args.sample is not None and args.sample < 1:
        raise InputError(f"--sample must be at least 1, got {args.sample} (omit it to retrain "
                         "every shard)")
    public = parse_public(args.public_key) if args.public_key else None
    store = Store.open(args.store, check_files=False)
    gone = (read_ids(args, store.manifest.id_type, flag="forgotten_id",
                     file_flag="forgotten_ids")
            if args.forgotten_id or args.forgotten_ids else None)
    held = [_read_receipt(path) for path in args.receipt or []]
    rep = verify(store, shards=shards, sample=args.sample, public_key=public,
                 forgotten_ids=gone, held_receipts=held, settings=settings(args))
    if args.quiet and not args.json:  # quiet: nothing on success, the failures otherwise
        if not rep.ok:
            print("\n".join(ln for ln in rep.table().splitlines() if "FAIL" in ln))
    else:
        emit(args, rep.to_dict(), rep.table())
    return 0 if rep.ok else 1


def _read_receipt(path: str) -> dict:
    """A receipt an auditor was given (the JSON ``sisa forget --json`` printed)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--receipt {path}: cannot read a receipt ({exc}): pass the JSON that "
                         "`sisa forget --json` printed") from None
    if not isinstance(obj, dict) or "seq" not in obj:
        raise InputError(f"--receipt {path} is not a sisa receipt (no seq): pass the JSON that "
                         "`sisa forget --json` printed")
    return obj
