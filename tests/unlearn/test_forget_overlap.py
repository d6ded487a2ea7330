"""A forget's I/O runs beside its retrain (issue 26, "a forget whose cost is its training"):
the new slice, index and tombstone files are written on the batch's writer thread while
the shard retrains (its read of the new slice served from the bytes hashed for the
manifest), each checkpoint is checked and written while the next slice trains, and each
file's fsync starts as soon as it is in place. What must not change: the commit names only
files that are durable before the root's rename, a failure in a helper thread is raised
as before (a checkpoint's as the slice's TrainingError, rolled back), and nothing a
helper thread writes outlives the call.

The overlap tests wait (bounded) for an event that only the overlapped order produces:
on the old, in-line order that event comes too late, and they fail.
"""

from __future__ import annotations

import errno
import os
import threading

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier, Store
from sisa.engine import schedule, train
from sisa.engine.train import TrainingError
from sisa.store.format.layout import INTENT
from sisa.store.manifest import MANIFEST
from sisa.unlearn import repair, verify
from tests.helpers import LOCAL, make_classification

WAIT = 10.0  # seconds an overlapped event may take to come (it comes at once)


def _fit(path, n=1200, S=2, R=3) -> SISAClassifier:
    X, y = make_classification(n, 5, n_classes=2)
    est = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=S,
                         n_slices=R, epochs=2, store=str(path), backend="local")
    return est.fit(X, y, sample_ids=np.arange(n))


def _first_slice_id(store: Store, shard: int = 0) -> int:
    """An id stored in slice 0 of ``shard``: its forget retrains every slice of it."""
    table = store.rows.read_slice_table(shard, 0)
    return int(table.column("sample_id")[0].as_py())


def _steps(monkeypatch) -> list[tuple[int, threading.Event]]:
    """Record each estimator step as it starts: (slice, event set at its start)."""
    started: list[tuple[int, threading.Event]] = []
    real = schedule.Schedule.step

    def step(self, model, prototype, X, y, classes, seed, shard, sl):
        started.append((sl, threading.current_thread()))
        return real(self, model, prototype, X, y, classes, seed, shard, sl)

    monkeypatch.setattr(schedule.Schedule, "step", step)
    return started


def test_a_checkpoint_is_written_while_the_next_slice_trains(tmp_path, monkeypatch):
    est = _fit(tmp_path / "s")
    store = est.store_
    before = {k: v.sha256 for k, v in store.manifest.checkpoints.items()}
    next_started = {sl: threading.Event() for sl in range(store.n_slices)}
    real_step, real_put = schedule.Schedule.step, train._put
    seen: dict[int, bool] = {}

    def step(self, model, prototype, X, y, classes, seed, shard, sl):
        next_started[sl].set()
        return real_step(self, model, prototype, X, y, classes, seed, shard, sl)

    def put(store, shard, sl, blob, write):
        if sl + 1 < store.n_slices:  # the next slice trains meanwhile: its step starts
            seen[sl] = next_started[sl + 1].wait(WAIT)
        return real_put(store, shard, sl, blob, write)

    monkeypatch.setattr(schedule.Schedule, "step", step)
    monkeypatch.setattr(train, "_put", put)
    with store.lock():
        result = train.train_shard(store, 0, 0)
    assert seen == {0: True, 1: True}
    # the same checkpoints, in slice order, as the fit wrote in line
    assert [c.slice for c in result.checkpoints] == [0, 1, 2]
    assert [c.sha256 for c in result.checkpoints] == [before[f"0/{r}"] for r in range(3)]


def test_a_checkpoint_write_failing_on_the_helper_thread_rolls_the_forget_back(
        tmp_path, monkeypatch):
    est = _fit(tmp_path / "s")
    X, _ = make_classification(1200, 5, n_classes=2)
    expected = est.predict(X)
    gen = est.store_.manifest.generation
    real_put = train._put
    where: list[str] = []

    def put(store, shard, sl, blob, write):
        where.append(threading.current_thread().name)
        if sl == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(store, shard, sl, blob, write)

    monkeypatch.setattr(train, "_put", put)
    victim = _first_slice_id(est.store_)
    with pytest.raises(TrainingError, match=r"shard 0 failed at slice 1: OSError.*No space.*"
                                            r"rolled back"):
        est.forget([victim])
    assert where and all(n.startswith("sisa-checkpoint") for n in where)
    monkeypatch.setattr(train, "_put", real_put)
    store = Store.open(tmp_path / "s")
    assert store.manifest.generation == gen  # nothing committed
    assert not store.loc.exists(INTENT) and store.unreferenced_files() == []
    assert np.array_equal(SISAClassifier.load(str(tmp_path / "s")).predict(X), expected)
    assert verify(store, settings=LOCAL).ok
    est.forget([victim])  # the cause gone, the same request goes through
    assert verify(Store.open(tmp_path / "s"), settings=LOCAL).ok


def test_the_retrain_reads_the_new_slice_while_its_write_waits(tmp_path, monkeypatch):
    """The new slice's file is written on the writer thread; the retrain starts before that
    write lands, its rows served from the bytes the manifest's hash was taken of."""
    est = _fit(tmp_path / "s")
    X, y = make_classification(1200, 5, n_classes=2)
    root = str(tmp_path / "s")
    trained = threading.Event()
    real_step, real_replace = schedule.Schedule.step, os.replace
    blocked: list[bool] = []

    def step(self, *a):
        trained.set()
        return real_step(self, *a)

    def replace(src, dst, **kw):
        if os.fspath(dst).startswith(f"{root}/data/") and not blocked:
            blocked.append(trained.wait(WAIT))  # the retrain starts first
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(schedule.Schedule, "step", step)
    monkeypatch.setattr(os, "replace", replace)
    victim = _first_slice_id(est.store_)
    receipt = est.forget([victim])
    assert blocked == [True]
    store = Store.open(root)
    assert verify(store, settings=LOCAL).ok and store.unreferenced_files() == []
    assert receipt["rows_retrained"] > 0
    # exact: a fresh fit on the remaining rows gives the same checkpoints
    keep = np.arange(len(y)) != victim
    fresh = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=2,
                           n_slices=3, epochs=2, store=str(tmp_path / "f"),
                           backend="local").fit(X[keep], y[keep],
                                                sample_ids=np.arange(len(y))[keep])
    assert ({k: v.sha256 for k, v in store.manifest.checkpoints.items()}
            == {k: v.sha256 for k, v in fresh.store_.manifest.checkpoints.items()})


def _fsync_log(monkeypatch) -> list[tuple[str, str]]:
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
    events = _fsync_log(monkeypatch)
    if how == "forget":
        est.forget([victim])
    else:
        with store.lock():
            store.delete([victim])
    new = set(store.referenced_files()) - before
    assert any(r.startswith("data/") for r in new) and any(r.startswith("index/") for r in new)
    assert how == "delete" or any(r.startswith("checkpoints/") for r in new)
    _durable_before_root(events, str(tmp_path / "s"), new)


def test_the_new_slice_is_fsynced_while_the_shard_retrains(tmp_path, monkeypatch):
    """Its fsync starts as soon as its write lands, not in a round at the commit: the
    last slice's step waits (bounded) until it has been issued."""
    est = _fit(tmp_path / "s")
    root = str(tmp_path / "s")
    events = _fsync_log(monkeypatch)
    real_step = schedule.Schedule.step
    seen: list[bool] = []

    def synced() -> bool:
        return any(k == "fsync" and p.startswith(f"{root}/data/") and p.endswith(".arrow")
                   for k, p in list(events))

    def step(self, model, prototype, X, y, classes, seed, shard, sl):
        if sl == 2:
            ok = threading.Event()
            for _ in range(int(WAIT / 0.01)):
                if synced():
                    ok.set()
                    break
                ok.wait(0.01)
            seen.append(ok.is_set())
        return real_step(self, model, prototype, X, y, classes, seed, shard, sl)

    monkeypatch.setattr(schedule.Schedule, "step", step)
    est.forget([_first_slice_id(est.store_)])
    assert seen == [True]
    assert verify(Store.open(root), settings=LOCAL).ok


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
