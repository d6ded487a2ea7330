"""``sisa verify`` while a writer commits forgets (issue 22, item 7): it checks one
generation at rest and never reports damage that is not there, and damage that is there
is still reported. The writer is a real process committing real forgets, bounded by a
count of forgets; verify runs while it does, bounded by a count of runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier, Store
from sisa.errors import SisaError
from sisa.store.format.layout import INTENT
from sisa.store.read import at_rest
from sisa.unlearn import verify
from tests.helpers import LOCAL, make_classification, run_cli

N = 1200
# What verify may say while a writer commits: both say it is not damage and to retry.
NOT_DAMAGE = ("the store kept changing during verify", "a writer was changing the store")

WRITER = textwrap.dedent("""
    import json, sys, time
    from sisa import Store
    from sisa.engine import ExecutionSettings
    from sisa.store.io.lock import ObjectLock
    from sisa.unlearn import forget
    ObjectLock.settle = 0.05  # one writer here, and moto answers fast
    uri, ids, pause = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
    store = Store.open(uri)
    for i in ids:
        forget(store, [i], settings=ExecutionSettings(backend="local"))
        print(i, flush=True)
        time.sleep(pause)  # like `sisa serve` between batches: the lock is free a moment
""")

HOLDER = textwrap.dedent("""
    import sys
    from sisa import Store
    from sisa.store.format.layout import INTENT
    store = Store.open(sys.argv[1])
    with store.lock():  # a forget under way: its intent and a file no manifest names yet
        store.loc.write_atomic(INTENT, b'{"request": {}}')
        store.put_blob("data/shard=0000/slice=000", ".arrow", b"staged rows")
        print("held", flush=True)
        sys.stdin.readline()
""")


def fit(path, n_shards=4, n=N) -> None:
    X, y = make_classification(n, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SISAClassifier(SGDClassifier(loss="log_loss"), n_shards=n_shards, n_slices=2,
                       backend="local", store=str(path)).fit(X, y)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "store"
    fit(path)
    return path


@pytest.fixture
def store(built, tmp_path) -> str:
    dst = tmp_path / "store"
    shutil.copytree(built, dst)
    return str(dst)


def start_writer(uri: str, ids, env: dict | None = None, pause: float = 0.03
                 ) -> subprocess.Popen:
    """A process forgetting ``ids`` one by one, each a commit (bounded by their count)."""
    return subprocess.Popen([sys.executable, "-c", WRITER, uri,
                             json.dumps([int(i) for i in ids]), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def problems_of(ok: bool, problems: list[str], shards: list) -> tuple[bool, list[str]]:
    return ok, problems + [f"shard {s}: {p}" for s, ps in shards for p in ps]


def one_verify(uri: str, cli: bool, **kw) -> tuple[bool, list[str]]:
    """``(ok, every problem)`` of one verify; the CLI's error line counts as a problem."""
    if cli:
        code, out, err = run_cli("verify", uri, "--json", "--backend", "local", "--quiet",
                                 *kw.get("argv", ()))
        try:
            d = json.loads(out)
        except ValueError:
            return False, [err.strip() or f"exit {code}"]
        return problems_of(d["ok"], d["problems"], [(s["shard"], s["problems"])
                                                    for s in d["shards"]])
    try:
        rep = verify(Store.open(uri, check_files=False), settings=LOCAL,
                     **{k: v for k, v in kw.items() if k != "argv"})
    except SisaError as exc:
        return False, [str(exc)]
    return problems_of(rep.ok, rep.problems, [(s.shard, s.problems) for s in rep.shards])


def verify_while_writing(uri: str, proc: subprocess.Popen, runs: int, damage=None,
                         **kw) -> list[tuple[bool, list[str]]]:
    """Verify (the API and the CLI in turn) until the writer exits or ``runs`` are done.
    ``damage`` is called once the writer's first forget is committed."""
    assert proc.stdout.readline(), proc.stderr.read()  # under way
    if damage is not None:
        damage()
    out = []
    while proc.poll() is None and len(out) < runs:
        out.append(one_verify(uri, cli=bool(len(out) % 2), **kw))
    return out


def finish(proc: subprocess.Popen, n: int) -> None:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert len(out.split()) == n - 1  # its first line was read while it ran


def false_damage(results, allowed=()) -> list[str]:
    return [p for _, probs in results for p in probs
            if not p.startswith(NOT_DAMAGE) and not any(a in p for a in allowed)]


def test_verify_while_forgets_commit_never_reports_damage(store):
    ids = list(range(100, 100 + 30))
    proc = start_writer(store, ids)
    try:
        results = verify_while_writing(store, proc, runs=40, sample=1,
                                       argv=("--sample", "1"))
    finally:
        finish(proc, len(ids))
    wrong = false_damage(results)
    assert not wrong, f"{len(wrong)} false damage reports in {len(results)} runs: {wrong[:3]}"
    assert results, "no verify ran while the writer committed"
    rep = verify(Store.open(store), settings=LOCAL)  # at rest: the forgets left a sound store
    assert rep.ok, rep.table()
    assert Store.open(store).manifest.audit["receipts"] == len(ids)


def test_damage_made_while_forgets_commit_is_still_reported(store):
    st = Store.open(store)
    found, shard, _ = st.rows.locate(np.arange(N))
    in_0 = np.arange(N)[found][shard == 0]
    ids = in_0[in_0 >= 50][:24]  # the writer only ever touches shard 0
    m = st.manifest
    tampered = m.slice(1, 1).file
    deleted = m.checkpoint(1, 0).file
    planted = f"data/shard=0001/slice=000/{'0' * 32}.arrow"

    def damage():  # made while the writer is under way: a flipped byte, a lost
        path = Path(store, tampered)  # checkpoint, a planted copy of rows
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        with open(path, "r+b") as f:  # in place: the same inode, size and name
            f.write(bytes(data))
        os.unlink(os.path.join(store, deleted))
        shutil.copy(os.path.join(store, m.slice(1, 0).file), os.path.join(store, planted))

    proc = start_writer(store, ids)
    try:
        results = verify_while_writing(store, proc, runs=30, damage=damage, shards=[0],
                                       argv=("--shards", "0"))
    finally:
        finish(proc, len(ids))
    # every run fails on the damage, and on nothing else
    real = ("shard 1: hash mismatch for " + os.path.join(store, tampered),
            "shard 1: missing file " + os.path.join(store, deleted),
            "the index does not list exactly the ids the data files hold",
            "1 file(s) not named by the manifest, e.g. " + planted)
    assert results
    assert not any(ok for ok, _ in results)
    assert not false_damage(results, real), false_damage(results, real)[:3]
    for _, probs in results:
        assert any(p.startswith(real[0]) for p in probs) and any(
            p.startswith(real[1]) for p in probs), probs
    at_rest_runs = [probs for _, probs in results if not any(
        p.startswith(NOT_DAMAGE[1]) for p in probs)]
    assert all(any(p.startswith(real[3]) for p in probs) for probs in at_rest_runs)
    ok, probs = one_verify(store, cli=True, argv=("--shards", "0"))  # the writer is done
    assert not ok and all(any(p.startswith(r) for p in probs) for r in real), probs


def test_a_live_lock_holder_is_busy_not_damage_and_a_dead_one_leaves_debris(store,
                                                                            monkeypatch):
    monkeypatch.setattr(at_rest, "POLLS", {"local": 5, "object": 5})
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n", proc.stderr.read()
        ok, probs = one_verify(store, cli=False, retrain=False)
        assert not ok and len(probs) == 1, probs
        assert probs[0].startswith(NOT_DAMAGE[1]) and f"pid {proc.pid}" in probs[0]
    finally:
        proc.send_signal(signal.SIGKILL)  # killed holding the lock: .lock still names it
        proc.wait(30)
    assert str(proc.pid) in Path(store, ".lock").read_text()
    ok, probs = one_verify(store, cli=False, retrain=False)  # the holder is dead: debris
    assert not ok and len(probs) == 2, probs
    assert probs[0].startswith("an interrupted forget left audit/intent.json"), probs
    assert probs[1].startswith("1 file(s) not named by the manifest, e.g. "
                               "data/shard=0000/slice=000/"), probs
    assert os.path.exists(os.path.join(store, INTENT))


def test_verify_on_s3_while_forgets_commit_never_reports_damage():
    pytest.importorskip("moto.server")
    from sisa.store.io import uris
    from tests.store.test_s3 import S3_ENV_KEYS, moto_s3

    with moto_s3("live") as env, pytest.MonkeyPatch.context() as mp:
        for k in S3_ENV_KEYS:
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.setattr("sisa.store.io.lock.ObjectLock.settle", 0.05)
        uri = f"s3://live/{uuid.uuid4().hex[:8]}"
        try:
            fit(uri, n_shards=3, n=600)
            ids = list(range(100, 110))
            proc = start_writer(uri, ids, env)
            try:
                results = verify_while_writing(uri, proc, runs=12, retrain=False,
                                               argv=("--shards", "0"))
            finally:
                finish(proc, len(ids))
            wrong = false_damage(results)
            assert not wrong, f"{len(wrong)} false damage reports in {len(results)} runs: " \
                f"{wrong[:3]}"
            assert results
            rep = verify(Store.open(uri), settings=LOCAL, retrain=False)
            assert rep.ok, rep.table()
        finally:
            for u in [u for u in uris._RESOLVED if u.startswith("s3://live/")]:
                del uris._RESOLVED[u]
