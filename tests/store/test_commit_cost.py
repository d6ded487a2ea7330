"""A commit's work follows what it changed: files dropped by changed leaves only, leaf path
checks and derived values kept by leaf hash, a reload skipped when nobody committed, and
the fsyncs of a forget grouped before the manifest that names its files."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from sisa import IngestOptions, SISAClassifier, Store
from sisa.errors import CorruptStoreError
from sisa.store.io import localfs
from sisa.store.manifest import MANIFEST
from sisa.store.manifest import codec as io
from sisa.store.manifest.build import fingerprint
from sisa.store.read.reading import label_union
from sisa.unlearn import verify
from tests.helpers import LOCAL, make_classification, record_fsyncs


def _fit(tmp_path, n=3000, S=8, R=4, **kw):
    X, y = make_classification(n, 5, n_classes=3)
    est = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=S,
                         n_slices=R, store=str(tmp_path / "s"), backend="local", **kw)
    return est.fit(X, y), X, y


def _naive_fingerprint(m) -> str:
    slices = [m.slice(s, r).sha256 for s in range(len(m["shards"]))
              for r in range(len(m.shard_leaf(s)["slices"]))]
    body = io.canonical_json({"assignment": m["assignment"], "schema": m["schema"],
                              "slices": slices})
    return hashlib.sha256(body).hexdigest()


def test_dropped_files_are_the_set_difference_through_forgets_and_a_rebucket(tmp_path):
    est, _, _ = _fit(tmp_path, n=20_000)
    store = est.store_
    rest = np.setdiff1d(np.arange(20_000), [3, 5, 900, 17_000])
    batch = np.random.default_rng(0).choice(rest, 200, replace=False).tolist()
    states = [store.manifest]
    for ids in ([3], [5, 900, 17_000], batch):
        est.forget(ids)
        states.append(store.manifest)
    assert verify(store, settings=LOCAL).ok
    with store.lock():  # crosses a power of two: every index page and tombstone page changes
        store.delete(list(range(8000, 20_000)))
    states.append(store.manifest)
    assert states[-1].index_parts and len(states[-1].index_parts) < len(states[-2].index_parts)
    for old, new in itertools.pairwise(states):
        naive = sorted(set(old.referenced_files()) - set(new.referenced_files()))
        assert old.dropped_files(new) == naive and naive
        assert fingerprint(new) == _naive_fingerprint(new) == new.fingerprint
    assert store.unreferenced_files() == []


def test_label_union_from_kept_shard_unions_equals_the_slices(tmp_path):
    est, _, y = _fit(tmp_path)
    store = est.store_
    first = label_union(store.rows)
    assert first == sorted(set(y.tolist())) == label_union(store.rows)  # second from the cache
    cls2 = np.flatnonzero(y == 2)
    est.forget(cls2.tolist())  # class 2 vanishes: the union must follow, not the cache
    assert label_union(store.rows) == [0, 1] and est.classes_.tolist() == [0, 1]


def test_a_commit_by_another_writer_is_seen_and_our_own_is_not_reread(tmp_path, monkeypatch):
    est, _, _ = _fit(tmp_path)
    a = est.store_
    b = Store.open(str(tmp_path / "s"))
    loads = []
    real = io.load
    monkeypatch.setattr(io, "load", lambda loc: loads.append(1) or real(loc))
    with a.lock():
        a.delete([1])
    with a.lock():  # nobody else committed: the manifest is not read again
        pass
    assert loads == []
    with b.lock():  # b read the store before a's commit: it reloads and sees it
        assert b.manifest.generation == a.manifest.generation
        b.delete([2])
    assert len(loads) == 1
    with a.lock():
        assert a.manifest.generation == b.manifest.generation and a.manifest.n_deleted == 2
    assert len(loads) == 2


def test_a_cached_leaf_moved_to_another_shard_is_refused(tmp_path):
    _fit(tmp_path, n=1000, S=4, R=2)
    st = tmp_path / "s"
    Store.open(str(st))  # the leaves are now cached and their paths checked
    raw = json.loads((st / MANIFEST).read_text())
    m = raw["manifest"]
    m["signer"] = None  # an unsigned store: the checksum is all an editor must fix
    m["shards"][0], m["shards"][1] = m["shards"][1], m["shards"][0]
    for s in (0, 1):  # the file names say the right shard: only the content disagrees
        ref = m["shards"][s]
        ref["file"] = f"meta/shard-{s:04d}-{ref['sha256'][:32]}.json"
    body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    (st / MANIFEST).write_bytes(b'{"checksum":"' + hashlib.sha256(body).hexdigest().encode()
                                + b'","signature":"","manifest":' + body + b"}")
    with pytest.raises(CorruptStoreError, match="not a shards leaf for shard 0"):
        Store.open(str(st), check_files=False)


def test_a_forget_fsyncs_its_files_in_one_group_before_the_manifest(tmp_path, monkeypatch):
    est, _, _ = _fit(tmp_path)
    store = est.store_
    before = set(store.referenced_files())
    events = record_fsyncs(monkeypatch)
    est.forget([10])
    root = str(tmp_path / "s")
    new = sorted(f"{root}/{f}" for f in set(store.referenced_files()) - before)
    commit = events.index(("replace", f"{root}/{MANIFEST}"))
    synced = {p for kind, p in events[:commit] if kind == "fsync"}
    assert new and all(f in synced and os.path.dirname(f) in synced for f in new)
    # one fsync per file and per folder: none of the new files is fsynced twice
    fsyncs = [p for kind, p in events[:commit] if kind == "fsync"]
    assert all(fsyncs.count(f) == 1 for f in new)
    # grouped: every new file is written before the first of them is fsynced
    last_write = max(i for i, e in enumerate(events) if e[0] == "replace" and e[1] in new)
    first_sync = min(i for i, e in enumerate(events) if e[0] == "fsync" and e[1] in new)
    assert last_write < first_sync < commit
    assert localfs.batching() is False


def test_a_failed_batch_syncs_nothing_and_leaves_no_pending_paths(tmp_path):
    store = Store.create(tmp_path / "s", *make_classification(200, 3),
                         options=IngestOptions(n_shards=2, n_slices=1))
    with pytest.raises(RuntimeError), store.loc.batch():
        store.loc.write_content("data/x", ".bin", b"abc")
        raise RuntimeError("step failed")
    assert not localfs.batching()
    with store.loc.batch():  # a later batch starts empty
        assert localfs._PENDING.paths == []


def test_a_reused_inode_with_a_coarse_mtime_still_shows_the_commit(tmp_path):
    """ext4 hands a freed inode straight back, and with 1-second timestamps size and mtime
    can repeat too: the stamp's head (the root's checksum) still differs."""
    est, _, _ = _fit(tmp_path)
    a = est.store_
    b = Store.open(str(tmp_path / "s"))
    with a.lock():
        a.delete([1])
    old = a._seen
    with b.lock():
        b.delete([2])
    now = localfs.file_stamp(str(tmp_path / "s" / MANIFEST))
    a._seen = now[:4] + old[4:]  # what a saw, had inode, size and mtime all repeated
    with a.lock():
        assert a.manifest.generation == b.manifest.generation and a.manifest.n_deleted == 2


def test_a_forked_child_fsyncs_with_its_own_pool(tmp_path):
    """The grouped-fsync pool's threads do not survive a fork: the child makes its own
    instead of waiting forever on dead ones (while holding the store's lock)."""
    store = Store.create(tmp_path / "s", *make_classification(200, 3),
                         options=IngestOptions(n_shards=2, n_slices=1))
    with store.loc.batch():  # the parent's pool exists now
        for i in range(3):
            store.loc.write_content(f"data/p{i}", ".bin", bytes([i]) * 10)
    pid = os.fork()
    if pid == 0:  # the child: a grouped flush of several files, then out
        code = 1
        try:
            with store.loc.batch():
                for i in range(3):
                    store.loc.write_content(f"data/c{i}", ".bin", bytes([i + 9]) * 10)
            code = 0
        finally:
            os._exit(code)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in its fsync round")
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_existing_file_reused_outside_a_batch_is_fsynced(tmp_path, monkeypatch):
    store = Store.create(tmp_path / "s", *make_classification(200, 3),
                         options=IngestOptions(n_shards=2, n_slices=1))
    with pytest.raises(RuntimeError), store.loc.batch():  # written, never fsynced
        entry = store.loc.write_content("data/x", ".bin", b"abcdef")
        raise RuntimeError
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(
        os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    store.loc.write_content("data/x", ".bin", b"abcdef")  # same bytes: not rewritten
    path = str(tmp_path / "s" / entry["file"])
    assert path in synced and os.path.dirname(path) in synced
