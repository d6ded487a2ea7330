"""``sisa keygen`` and ``sisa key``: the owner's signing key."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError
from .common import emit


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new key file (Ed25519 signing key and audit secret, mode 600) outside every
    store, and print its public half.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa keygen`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    from ..store.format import keys

    path = args.out or os.environ.get(keys.KEY_FILE_ENV) or str(keys.DEFAULT_KEY_FILE)
    target = Path(path).expanduser().resolve()
    inside = next((p for p in target.parents if (p / "manifest.json").is_file()), None)
    if inside is not None:
        raise InputError(f"--out {path} is inside the sisa store {inside}: a private key must "
                         "never travel with a store; keep it outside (default "
                         f"{keys.DEFAULT_KEY_FILE})")
    key = keys.generate()
    saved = keys.save(key, path)
    emit(args, {"key_file": str(saved), "public_key": key.public_line},
         f"wrote {saved} (mode 600: keep it private; stores you build are signed with it)\n"
         f"public key (give it to auditors: sisa verify --public-key): {key.public_line}")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """Print the public half of the configured key (``ed25519:<hex>``).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa key`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    from ..store.format import keys

    key = keys.configured(args.key_file)
    if key is None:
        raise InputError(f"no key configured: make one with `sisa keygen`, or set "
                         f"${keys.KEY_FILE_ENV}")
    emit(args, {"public_key": key.public_line}, key.public_line)
    return 0
