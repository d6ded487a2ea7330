"""Static types: ``mypy`` checks sisa/store and sisa/unlearn clean (config in pyproject.toml),
and the typed accessors behave as they did untyped."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sisa.errors import StoreError
from sisa.store import IngestOptions, Store

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_clean_on_store_and_unlearn():
    # The project's [tool.mypy] section applies (run from the repository root); its cache
    # (.mypy_cache, git-ignored) makes a rerun take seconds.
    run = subprocess.run([sys.executable, "-m", "mypy", "sisa/store", "sisa/unlearn"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"mypy found problems:\n{run.stdout}{run.stderr}"
    assert "Success: no issues found" in run.stdout


def test_store_without_manifest_says_so(tmp_path):
    # A store being built has no manifest until it ingests: reading one is an internal
    # error naming the cause, not an AttributeError on None deep in a caller.
    store = Store(str(tmp_path / "s"), None)
    with pytest.raises(StoreError, match="no manifest yet"):
        store.manifest  # noqa: B018


def test_store_pickles_manifest_under_its_name(tmp_path):
    # Estimators pickle their store: the state keeps the key `manifest` (so models
    # pickled before it became a property load, and the bytes are unchanged).
    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    store = Store.create(str(tmp_path / "s"), X, y, options=IngestOptions(n_shards=2, n_slices=2))
    state = store.__getstate__()
    assert "manifest" in state and "_manifest" not in state
    assert list(state)[:2] == ["loc", "manifest"]  # same order: same pickled bytes
    back = pickle.loads(pickle.dumps(store))
    assert back.manifest == store.manifest and back.n_rows == 40
    old = Store.__new__(Store)  # a state pickled by the untyped version
    old.__setstate__({**state})
    assert old.manifest is state["manifest"] and old.fingerprint == store.fingerprint
