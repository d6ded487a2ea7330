"""Shared fixtures: one Ray for the whole session, started only if a test asks for it."""

from __future__ import annotations

import os
import sys

# Before Ray is imported anywhere: no auth token file in $HOME, no usage stats.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("SISA_CRASH_AT", None)

import numpy as np
import pytest


@pytest.fixture(scope="session")
def ray_session():
    """The embedded local Ray sisa would start itself, shared by every test."""
    from sisa.engine import connect

    return connect(num_cpus=2, object_store_mb=128)


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


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


@pytest.fixture
def clf_data():
    return make_classification()


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
