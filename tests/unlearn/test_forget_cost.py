"""A forget's cost outside its training: one group commit (one parallel round of fsyncs,
then the root's folder), and a breakdown of its wall time that adds up, returned beside
the signed receipt and never inside it."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.tree import DecisionTreeClassifier

from sisa import SISAClassifier
from sisa.cli import main as cli_main
from sisa.store.manifest import MANIFEST
from sisa.unlearn import forget, history, receipts, timings, verify
from tests.helpers import LOCAL, make_classification, record_checkpoint_loads


def _fit(tmp_path, est=None, S=4, R=2):
    X, y = make_classification(2000, 5)
    model = SISAClassifier(est or SGDClassifier(loss="log_loss", random_state=0), n_shards=S,
                           n_slices=R, store=str(tmp_path / "s"), backend="local",
                           random_state=0)
    return model.fit(X, y)


def _record(monkeypatch) -> list[tuple[str, str, bool]]:
    """Every fsync and rename of this process: (kind, path, on the calling thread)."""
    events: list[tuple[str, str, bool]] = []
    real_fsync, real_replace = os.fsync, os.replace
    main = threading.get_ident()

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"),
                       threading.get_ident() == main))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        events.append(("replace", os.fspath(dst), threading.get_ident() == main))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_a_forget_waits_for_one_round_of_fsyncs_and_the_root_folder(tmp_path, monkeypatch):
    """A decision-tree forget (R = 1: one slice, one checkpoint) writes 7 files and the
    root; each file, each folder with a new entry and the root's bytes are fsynced in one
    parallel round before the root's rename, then the root's folder: the forget's own
    thread waits on one fsync, not on the root's bytes, its folder and the audit log one
    after another (before: 3 such waits after the round of files and the round of
    folders). The count is unchanged: it is what POSIX asks of these files."""
    model = _fit(tmp_path, DecisionTreeClassifier(max_depth=4, random_state=0), S=4, R=1)
    model.forget([1])  # the log exists: its first line is made durable when created
    store, root = model.store_, str(tmp_path / "s")
    log = f"{root}/{receipts.log_path(store)}"
    before = set(store.referenced_files())
    events = _record(monkeypatch)
    r = model.forget([2])
    fsyncs = [e for e in events if e[0] == "fsync"]
    commit = events.index(("replace", f"{root}/{MANIFEST}", True))
    # the new files: data and folder fsynced before the rename that publishes them
    new = sorted(f"{root}/{f}" for f in set(store.referenced_files()) - before)
    synced = {p for kind, p, _ in events[:commit] if kind == "fsync"}
    assert len(new) == 7 and all(f in synced and os.path.dirname(f) in synced for f in new)
    # ... and the root's bytes (its temporary file) in the same round, off this thread
    tmp_root = [p for kind, p, _ in events[:commit] if kind == "fsync" and "/.tmp/" in p]
    assert len(tmp_root) == 1
    # one wait on the calling thread: the root's folder, after the rename
    waits = [(i, p) for i, (kind, p, own) in enumerate(events) if kind == "fsync" and own]
    assert [p for _, p in waits] == [root] and waits[0][0] > commit
    # the previous forget's log line is made durable before this commit replaces the
    # manifest's copy of its receipt; this forget's line waits for the next commit
    assert log in synced and all(p != log for _, p, _ in events[commit:])
    assert len(fsyncs) == 15 and r["timings"]["fsyncs"] == len(fsyncs)
    assert verify(store, settings=LOCAL).ok


def test_the_breakdown_adds_up_to_the_wall_time_and_stays_out_of_the_receipt(tmp_path):
    model = _fit(tmp_path)
    model.forget([0])  # warm: imports, caches
    t = time.perf_counter()
    r = model.forget([3, 40])
    outside = time.perf_counter() - t
    tm = r["timings"]
    assert set(timings.PARTS) <= set(tm) and all(tm[k] >= 0 for k in timings.PARTS)
    parts = sum(tm[k] for k in timings.PARTS)
    assert parts == pytest.approx(tm["wall_s"], abs=2e-5 * len(timings.PARTS))
    # the laps cover the forget: next to nothing between them, and the wall time is the
    # caller's but for the store lock's release and the return
    assert tm["other_s"] < 0.05 * tm["wall_s"]
    assert 0 <= outside - tm["wall_s"] <= max(0.05, 0.2 * outside)
    assert tm["training_s"] > 0 and tm["reload_s"] > 0 and tm["fsyncs"] > 0
    assert tm["read_slices_s"] > 0 and tm["checkpoints_s"] > 0 and tm["commit_s"] > 0
    assert tm["outside_training"] == pytest.approx(1 - tm["training_s"] / tm["wall_s"],
                                                   abs=1e-3)
    # not signed, not logged, not committed: the receipt is the logged one without it
    store = model.store_
    assert "timings" not in store.manifest.last_receipt
    assert receipts.as_logged(r) == history(store)[-1] == store.manifest.last_receipt
    # the function itself: no estimator, no reload
    tm2 = forget(store, [7], settings=LOCAL)["timings"]
    assert tm2["reload_s"] == 0 and tm2["training_s"] > 0
    assert verify(store, settings=LOCAL).ok


def test_sisa_forget_json_prints_the_timings_and_verify_takes_that_receipt(tmp_path, capsys):
    """An auditor is handed what `sisa forget --json` printed: the timings beside the
    receipt do not make `sisa verify --receipt` reject it."""
    model = _fit(tmp_path)
    uri = str(model.store_.uri)
    assert cli_main(["forget", uri, "--id", "5", "--json", "--backend", "local"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["timings"]["training_s"] > 0 and printed["timings"]["fsyncs"] > 0
    held = tmp_path / "receipt.json"
    held.write_text(json.dumps(printed))
    assert cli_main(["verify", uri, "--receipt", str(held), "--backend", "local",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"]
    assert cli_main(["forget", uri, "--id", "6", "--backend", "local"]) == 0
    text = capsys.readouterr().out
    assert "training" in text and "fsyncs" in text


def _shard_of(model, i: int) -> int:
    found, shard, _ = model.store_.rows.locate([i])
    assert found.all()
    return int(shard[0])


def test_a_forget_serves_the_retrained_models_without_reading_them_back(tmp_path,
                                                                         monkeypatch):
    """The retrained shard's served model is the object its load-back check unpickled
    from the very bytes written under the manifest's hash, not a second read, hash and
    unpickle of that file; every served model still pickles to its committed file's
    bytes, and the answers are those of a fresh load."""
    from sisa.engine import checkpoints as ck

    model = _fit(tmp_path, S=6, R=3)
    X, _ = make_classification(2000, 5)
    model.forget([0])
    loads = record_checkpoint_loads(monkeypatch)
    for i in (11, 400, 1999):
        s = _shard_of(model, i)
        before = model.estimators_[s]
        loads.clear()
        model.forget([i])
        assert model.estimators_[s] is not before  # retrained, and swapped in
        assert (s, 2) not in loads  # the served checkpoint was not read back
        store = model.store_
        for k, m in enumerate(model.estimators_):
            assert ck.dumps(m) == store.get_blob(store.manifest.checkpoint(k, 2)).to_pybytes()
    monkeypatch.undo()
    fresh = SISAClassifier.load(str(tmp_path / "s"))
    assert (model.predict_proba(X) == fresh.predict_proba(X)).all()
    assert verify(model.store_, settings=LOCAL).ok


def test_a_forget_restacks_only_the_retrained_shards(tmp_path, monkeypatch):
    """After a forget the stacked aggregate reuses the family keys and arrays of the
    shards that did not change (at S = 256 rebuilding all of them was most of the
    reload), and equals a build from scratch: the same values, dtypes and layout."""
    import numpy as np

    from sisa.aggregate import stacked

    model = _fit(tmp_path, S=8, R=2)
    X, _ = make_classification(2000, 5)
    calls: list[object] = []
    real = stacked._family
    monkeypatch.setattr(stacked, "_family", lambda m: calls.append(m) or real(m))
    for i in (5, 700):
        s = _shard_of(model, i)
        calls.clear()
        model.forget([i])
        # the one retrained shard's new model, not all eight
        assert len(calls) == 1 and calls[0] is model.estimators_[s]
        ours, scratch = model._stacked, stacked.build(model.estimators_, model.classes_)
        assert len(ours.groups) == len(scratch.groups) == 1
        a, b = ours.groups[0].form, scratch.groups[0].form
        for u, v in ((a.Wst, b.Wst), (a.b, b.b)):
            assert u.dtype == v.dtype and u.strides == v.strides and np.array_equal(u, v)
    monkeypatch.undo()
    fresh = SISAClassifier.load(str(tmp_path / "s"))
    assert (model.predict_proba(X) == fresh.predict_proba(X)).all()


def test_a_forget_hashes_the_files_it_writes_once(tmp_path, monkeypatch):
    """The slice a forget writes is hashed as it is written, and its retrain reads it
    back without hashing it again; once the forget's batch is over, a same-size change
    to a file it wrote is still caught on the next read."""
    from sisa.errors import CorruptStoreError
    from sisa.store.io import fs

    model = _fit(tmp_path, S=4, R=2)
    model.forget([0])
    store = model.store_
    old = set(store.referenced_files())
    _, shard, sl = store.rows.locate([8])
    hashed: list[str] = []
    real = fs.sha256_bytes
    monkeypatch.setattr(fs, "sha256_bytes", lambda data: hashed.append(real(data)) or
                        hashed[-1])
    model.forget([8])
    monkeypatch.undo()
    new = {m.sha256 for rel, m in store.referenced_files().items() if rel not in old}
    entry = store.manifest.slice(int(shard[0]), int(sl[0]))
    rel = entry.file
    assert rel not in old
    # (the manifest's own leaves are hashed by its writer, not through sha256_bytes)
    counts = {h: hashed.count(h) for h in new}
    assert counts[entry.sha256] == 1 and max(counts.values()) == 1
    path = tmp_path / "s" / rel
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # same size, in place, right after the forget
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="hash mismatch"):
        store.rows.read_slice(int(shard[0]), int(sl[0]))


def test_a_shard_result_from_another_process_carries_no_models(tmp_path):
    """The models a shard task hands over are for its own process: pickled (a Ray task's
    result), a ShardResult carries none, and its caller reads the checkpoints."""
    import pickle

    from sisa.engine import train

    model = _fit(tmp_path, S=2, R=2)
    res = train.train_shard(model.store_, 1, 1)
    assert len(res.models) == 1 and next(iter(res.models)) == res.checkpoints[-1].sha256
    back = pickle.loads(pickle.dumps(res))
    assert back.models == {} and back.checkpoints == res.checkpoints


def test_a_shard_task_reads_the_next_slice_ahead_and_trains_the_same_bytes(tmp_path,
                                                                            monkeypatch):
    """While one slice trains, the next slice the task needs is read (disk, hash, Arrow)
    on a read-ahead thread; the first one on the task's own thread. The checkpoints are
    the bytes a fresh fit writes (verify retrains and compares them)."""
    import threading

    from sisa.store.read.reading import RowReader

    model = _fit(tmp_path, S=2, R=4)
    reads: list[tuple[int, str]] = []
    real = RowReader.read_slice

    def read_slice(self, shard, sl):
        reads.append((sl, threading.current_thread().name))
        return real(self, shard, sl)

    monkeypatch.setattr(RowReader, "read_slice", read_slice)
    model.forget([next(i for i in range(2000) if model.store_.rows.locate([i])[2][0] == 1)])
    assert [sl for sl, _ in reads] == [1, 2, 3]  # from the forgotten row's slice on
    assert reads[0][1] == threading.current_thread().name
    assert all(name.startswith("sisa-read-ahead") for _, name in reads[1:])
    monkeypatch.undo()
    assert verify(model.store_, settings=LOCAL).ok
