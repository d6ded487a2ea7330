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
from tests.helpers import LOCAL, make_classification


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
