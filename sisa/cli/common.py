"""What several commands share: printing a result, reading ids, execution settings."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError


def emit(args: argparse.Namespace, obj, text: str) -> None:
    """Print a command's result: ``obj`` as JSON with ``--json``, else ``text`` unless
    ``--quiet``."""
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=1, default=str))
    elif not getattr(args, "quiet", False):
        print(text)


def settings(args: argparse.Namespace):
    """The one :class:`~sisa.tasks.settings.ExecutionSettings` of a command's
    ``--backend``/``--address``/``--quiet``."""
    from ..tasks.settings import ExecutionSettings

    return ExecutionSettings(backend=args.backend, address=args.address,
                             progress=not args.quiet)


def estimator_params(args: argparse.Namespace, **changes) -> dict:
    """The same settings (with ``changes``, e.g. ``progress=True``) as the parameters of a
    SISA estimator, which keeps them as parameters so that ``clone`` carries them."""
    s = settings(args).replace(**changes)
    return {"backend": s.backend, "ray_address": s.address, "verbose": s.progress}


def load_builtin(name: str, rows: int | None):
    """A built-in dataset (:func:`sisa.datasets.load`), subsampled to ``rows``."""
    from ..datasets import load

    return load(name, n_rows=rows)


def read_ids(args: argparse.Namespace, id_type: str, *, flag: str = "id",
             file_flag: str = "ids"):
    """The ids of the ``--<flag>`` options and the ``--<file_flag>`` file (``-``: stdin),
    read by the store's id type, never guessed from how the text looks (on a string store
    ``007`` is the id "007").

    Returns
    -------
    pyarrow.Array

    Raises
    ------
    InputError
        No ids were given, or one is not an id of that type.
    """
    import pyarrow as pa

    from ..store.format import ids as idmod

    parts = []
    if getattr(args, flag):
        parts.append(idmod.parse_text_ids(getattr(args, flag), id_type,
                                          source=f"--{flag.replace('_', '-')}"))
    path = getattr(args, file_flag)
    if path:
        data = None
        if path == "-":  # bytes, decoded as a file is (no universal newlines)
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        parts.append(idmod.read_ids_file(path, id_type, data))
    if not parts or not sum(len(p) for p in parts):
        raise InputError(f"give the ids with --{flag.replace('_', '-')} X (repeatable) or "
                         f"--{file_flag.replace('_', '-')} FILE")
    return pa.concat_arrays(parts)


def ratio(full: float, done: float) -> str:
    """How many times fewer rows a forget retrained than a full retrain would."""
    return f"{full / done:,.1f}x fewer" if done else "nothing to retrain"


def int_list(text: str, flag: str) -> list[int]:
    """Comma-separated integers given to ``flag``."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{flag} takes comma-separated integers like 0,3,7; got {text!r}") \
            from None
