"""A forget's writes and their durability under failure (issue 26: the checks any change to
how a forget writes and fsyncs must keep). The commit names only files that are durable
before the root's rename (every new file and its folder fsynced after it landed), for a
forget and a plain delete; a checkpoint that cannot be written is the TrainingError of
its slice and the forget is rolled back (nothing committed, nothing left, the old model
serving and verifying); a new data file that cannot be written commits nothing and
``repair`` finishes the request.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier, Store
from sisa.engine import train
from sisa.engine.train import TrainingError
from sisa.store.format.layout import INTENT
from sisa.store.manifest import MANIFEST
from sisa.unlearn import repair, verify
from tests.helpers import LOCAL, make_classification, record_fsyncs


def _fit(path, n=1200, S=2, R=3) -> SISAClassifier:
    X, y = make_classification(n, 5, n_classes=2)
    est = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=S,
                         n_slices=R, epochs=2, store=str(path), backend="local")
    return est.fit(X, y, sample_ids=np.arange(n))


def _first_slice_id(store: Store, shard: int = 0) -> int:
    """An id stored in slice 0 of ``shard``: its forget retrains every slice of it."""
    table = store.rows.read_slice_table(shard, 0)
    return int(table.column("sample_id")[0].as_py())


def test_a_checkpoint_write_that_fails_rolls_the_forget_back(tmp_path, monkeypatch):
    est = _fit(tmp_path / "s")
    X, _ = make_classification(1200, 5, n_classes=2)
    expected = est.predict(X)
    gen = est.store_.manifest.generation
    real_put = train._put

    def put(store, shard, sl, blob, write):
        if sl == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(store, shard, sl, blob, write)

    monkeypatch.setattr(train, "_put", put)
    victim = _first_slice_id(est.store_)
    with pytest.raises(TrainingError, match=r"shard 0 failed at slice 1: OSError.*No space.*"
                                            r"rolled back"):
        est.forget([victim])
    monkeypatch.setattr(train, "_put", real_put)
    store = Store.open(tmp_path / "s")
    assert store.manifest.generation == gen  # nothing committed
    assert not store.loc.exists(INTENT) and store.unreferenced_files() == []
    assert np.array_equal(SISAClassifier.load(str(tmp_path / "s")).predict(X), expected)
    assert verify(store, settings=LOCAL).ok
    est.forget([victim])  # the cause gone, the same request goes through
    assert verify(Store.open(tmp_path / "s"), settings=LOCAL).ok


def _durable_before_root(events, root: str, new: set[str]) -> None:
    """Every new file the root names was fsynced after it was renamed into place, and so
    was its folder, before the root's own rename."""
    commit = events.index(("replace", f"{root}/{MANIFEST}"))
    for rel in sorted(new):
        f = f"{root}/{rel}"
        put = max(i for i, e in enumerate(events[:commit]) if e == ("replace", f))
        assert ("fsync", f) in events[put:commit], f"{rel} not fsynced before the root"
        assert ("fsync", os.path.dirname(f)) in events[put:commit], f"{rel}'s folder"


@pytest.mark.parametrize("how", ["forget", "delete"])
def test_every_file_the_new_root_names_is_fsynced_before_its_rename(tmp_path, monkeypatch,
                                                                    how):
    est = _fit(tmp_path / "s")
    store = est.store_
    before = set(store.referenced_files())
    victim = _first_slice_id(store)
    events = record_fsyncs(monkeypatch)
    if how == "forget":
        est.forget([victim])
    else:
        with store.lock():
            store.delete([victim])
    new = set(store.referenced_files()) - before
    assert any(r.startswith("data/") for r in new) and any(r.startswith("index/") for r in new)
    assert how == "delete" or any(r.startswith("checkpoints/") for r in new)
    _durable_before_root(events, str(tmp_path / "s"), new)


def test_a_staged_write_that_fails_commits_nothing_and_repair_finishes(tmp_path,
                                                                       monkeypatch):
    est = _fit(tmp_path / "s")
    root = str(tmp_path / "s")
    gen = est.store_.manifest.generation
    real_replace = os.replace

    def replace(src, dst, **kw):
        if os.fspath(dst).startswith(f"{root}/data/"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)
    victim = _first_slice_id(est.store_)
    with pytest.raises(OSError, match="Input/output error"):
        est.forget([victim])
    monkeypatch.setattr(os, "replace", real_replace)
    store = Store.open(root)
    assert store.manifest.generation == gen and store.loc.exists(INTENT)
    with store.lock():
        done = repair(store)
    assert done["completed_request"]
    store = Store.open(root)
    assert verify(store, settings=LOCAL).ok and not store.loc.exists(INTENT)
    assert store.manifest.n_deleted == 1
