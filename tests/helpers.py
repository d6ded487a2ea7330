"""Helpers shared by the tests: data makers, the in-process CLI, a store's byte digest.

Imported as ``from tests.helpers import ...`` (fixtures stay in ``conftest.py``)."""

from __future__ import annotations

import numpy as np


def make_classification(n=2000, d=8, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, n_classes))
    y = (X @ w + 0.3 * rng.normal(size=(n, n_classes))).argmax(axis=1)
    return X, y


def make_regression(n=2000, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    return X, y


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run the ``sisa`` CLI in this process: ``(exit code, stdout, stderr)``."""
    import contextlib
    import io

    from sisa.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def tree_digest(root) -> str:
    """Every file's path, mode and bytes under ``root`` (or of ``root`` if a file): a store
    "byte for byte unchanged" (an idle store's ``.lock`` is empty, so it counts too)."""
    import hashlib
    import stat
    from pathlib import Path

    root = Path(root)
    h = hashlib.sha256()
    if not root.exists() and not root.is_symlink():
        return "absent"
    if root.is_file():
        return hashlib.sha256(root.read_bytes()).hexdigest()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(root)).encode() + b"\0"
                     + oct(stat.S_IMODE(p.stat().st_mode)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """Every (module, name) a pickle would look up."""
    import pickletools

    out, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if "UNICODE" in op.name or "STRING" in op.name:
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            out.add((strings[-2], strings[-1]))
        elif op.name in ("GLOBAL", "INST"):
            out.add(tuple(arg.split(" ", 1)))
    return out


def _local():
    from sisa.engine import ExecutionSettings

    return ExecutionSettings(backend="local")


LOCAL = _local()  # settings for tasks run in the test's own process


def record_fsyncs(monkeypatch) -> list[tuple[str, str]]:
    """From now on (this test), every ``os.fsync`` as ``("fsync", path)`` and every
    completed ``os.replace`` as ``("replace", target)``, in the order they happened."""
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        real_replace(src, dst, **kw)
        events.append(("replace", os.fspath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def record_checkpoint_loads(monkeypatch) -> list[tuple[int, int]]:
    """From now on (this test), the ``(shard, slice)`` of every checkpoint read, hashed
    and unpickled through :func:`sisa.engine.checkpoints.load_verified`."""
    from sisa.engine import checkpoints as ck

    loads: list[tuple[int, int]] = []
    real = ck.load_verified

    def load_verified(store, meta):
        loads.append((meta.shard, meta.slice))
        return real(store, meta)

    monkeypatch.setattr(ck, "load_verified", load_verified)
    return loads
