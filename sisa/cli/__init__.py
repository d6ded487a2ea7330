"""The ``sisa`` command line: train, forget, predict, verify, repair, history, status, plan,
demo, keys, serve, erase and compare.

Exit codes: 0 ok, 1 failure (a failed verify, a corrupt store), 2 usage error. Errors
print one line saying what is wrong and how to fix it; ``--debug`` adds the traceback.

One job per module: :mod:`.parser` is the argument table, :mod:`.common` what several
commands share, and each command lives in its own module (``train``, ``forget``,
``predict``, ``verify``, ``repair``, ``status``, ``keys``, ``plan``, ``demo``,
``serving``). This module runs a command and turns its errors into exit codes.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from ..errors import InputError, SisaError
from ..store.write.holdout import split as _split  # noqa: F401  (its former home: tests import it)
from .parser import build_parser

__all__ = ["build_parser", "main"]

MAX_MESSAGE = 400  # characters of an error line; a library error can quote thousands of values


def main(argv: list[str] | None = None) -> int:
    """Run the ``sisa`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``sisa`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0 ok, 1 failure, 2 usage error. A usage error argparse finds
        itself exits 2 through ``SystemExit``.

    Examples
    --------
    >>> main(["key", "public", "--key-file", "/nonexistent"])      # doctest: +SKIP
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SisaError, ValueError, FileNotFoundError, KeyError) as exc:
        return _expected_error(args, exc)
    except KeyboardInterrupt:
        sys.stderr.write(f"sisa {args.command}: interrupted; run `sisa repair` on the store if a"
                         " write was under way\n")
        return 1
    except Exception as exc:  # a bug, or a store damaged in a way no check foresaw
        return _unexpected_error(args, exc)


def _expected_error(args: argparse.Namespace, exc: BaseException) -> int:
    """One line naming the problem: exit 2 for the caller's input, else 1."""
    if args.debug:
        traceback.print_exc()
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if len(msg) > MAX_MESSAGE:
        msg = msg[:MAX_MESSAGE] + " ..."
    sys.stderr.write(f"sisa {args.command}: error: {msg}\n")
    return 2 if isinstance(exc, InputError) else 1


def _unexpected_error(args: argparse.Namespace, exc: BaseException) -> int:
    """One line asking for a bug report (exit 1): no check foresaw this."""
    if args.debug:
        traceback.print_exc()
    first = (str(exc).splitlines() or [""])[0][:300]
    sys.stderr.write(f"sisa {args.command}: error: unexpected {type(exc).__name__}: {first} "
                     "(a damaged store or a bug in sisa; rerun with --debug for the "
                     "traceback and report it)\n")
    return 1
