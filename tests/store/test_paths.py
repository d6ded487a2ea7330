"""Paths from a manifest stay inside the store; links in a store are refused; readers
racing a committing forget never report a damaged store (issue 12, items 7 and 10)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier, Store
from sisa.cli import main
from sisa.errors import CorruptStoreError, StaleModelError
from sisa.store import manifest as manifest_mod
from sisa.store.io.fs import Location, UnsafePathError
from sisa.unlearn import forget, repair, verify
from tests.helpers import LOCAL, make_classification


def fit(path, n=600, **kw):
    X, y = make_classification(n, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SISAClassifier(SGDClassifier(loss="log_loss"), n_shards=2, n_slices=2,
                               backend="local", store=str(path), **kw).fit(X, y)
    return model, X, y


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One trained store, copied by each test that damages it."""
    root = tmp_path_factory.mktemp("built")
    model, X, _ = fit(root / "store")
    model.forget([3])  # so the manifest has tombstones too
    return root / "store", X


@pytest.fixture
def store_dir(built, tmp_path):
    src, _ = built
    dst = tmp_path / "work" / "store"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def tree_digest(path) -> dict[str, str]:
    """Every file below ``path`` with its sha256 (links by their target string)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, path)
            out[rel] = ("link:" + os.readlink(p) if os.path.islink(p)
                        else hashlib.sha256(Path(p).read_bytes()).hexdigest())
    return out


def write_manifest(path, edit) -> None:
    """Rewrite the manifest as someone who can write the store would: edited, with a
    valid checksum (the test stores are unsigned)."""
    st_ = Store.open(path, check_files=False)
    m = st_.manifest.flat()
    edit(m)
    manifest_mod.write(st_.loc, m, None)


def _entry(m: dict, kind: str) -> dict:
    if kind == "slice":
        return m["slices"]["0/0"]
    if kind == "index":
        return m["index"]["parts"][0]
    if kind == "tombstone":
        return next(iter(m["tombstones"]["parts"].values()))
    return m["model"]["checkpoints"]["0/1"]


KINDS = ["slice", "index", "tombstone", "checkpoint"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["../../victim", "ABS",
                                 "data/shard=0000/slice=000/../../../../../victim",
                                 "wrong-hash", "other-kind"])
def test_a_manifest_naming_a_path_outside_the_store_is_refused_before_any_read_or_delete(
        store_dir, kind, bad):
    victim = store_dir.parent.parent / "victim"
    victim.write_bytes(b"the user's own file")
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()

    def edit(m):
        e = _entry(m, kind)
        if bad == "ABS":
            e["file"] = str(victim)
        elif bad == "wrong-hash":  # right shape, but not named by its own sha256
            head, name = e["file"].rsplit("/", 1)
            e["file"] = f"{head}/{'0' * 32}{name[32:]}"
            return
        elif bad == "other-kind":  # a real file of the store, filed under another kind
            e["file"] = _entry(m, "checkpoint" if kind != "checkpoint" else "slice")["file"]
            return
        else:
            e["file"] = bad
        e["sha256"], e["bytes"] = digest, victim.stat().st_size  # the attack: hashes match

    write_manifest(store_dir, edit)
    before = tree_digest(store_dir.parent.parent)
    # every entry point loads the manifest first, and loading it refuses the entry
    for action in (lambda: Store.open(store_dir),
                   lambda: repair(Store.open(store_dir, check_files=False), settings=LOCAL),
                   lambda: forget(Store.open(store_dir, check_files=False), [5],
                                  settings=LOCAL),
                   lambda: SISAClassifier.load(str(store_dir))):
        with pytest.raises(CorruptStoreError, match=f"{kind}.* names file .*restore the store"):
            action()
    for cmd in ("status", "repair", "verify", "history"):
        assert main([cmd, str(store_dir), "--quiet"]) == 1
    assert victim.read_bytes() == b"the user's own file"
    assert tree_digest(store_dir.parent.parent) == before  # nothing read-and-rewritten, deleted


def test_location_refuses_paths_that_leave_the_root(tmp_path):
    loc = Location(str(tmp_path / "s"))
    (tmp_path / "s").mkdir()
    for bad in ("../x", "/etc/passwd", "a/../../x", "a\\..\\x", "a\x00b", "a//b", "./a"):
        for op in (loc.read_bytes, loc.exists, loc.delete, loc.list_files,
                   lambda r: loc.write_atomic(r, b"x"), lambda r: loc.append_line(r, "x")):
            with pytest.raises(UnsafePathError, match="refusing store path"):
                op(bad)
    assert not (tmp_path / "x").exists()


def test_links_inside_a_store_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "s"
    (root / "data").mkdir(parents=True)
    os.symlink(outside, root / "data" / "dir")  # a linked directory
    os.symlink(outside / "secret", root / "data" / "f")  # a linked file
    loc = Location(str(root))
    # listing shows the links as entries and does not descend into the linked directory
    assert loc.list_files() == ["data/dir", "data/f"]
    for rel in ("data/f", "data/dir/secret"):
        with pytest.raises(UnsafePathError, match=r"symbolic link inside the store.*rm "):
            loc.read_bytes(rel)
        with pytest.raises(UnsafePathError, match="symbolic link"):
            loc.write_atomic(rel, b"overwritten")
        with pytest.raises(UnsafePathError, match="symbolic link"):
            loc.append_line(rel, "appended")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        loc.delete("data/dir/secret")  # through a linked directory: refused
    loc.delete("data/f")  # the link itself goes, never its target
    loc.delete("data/dir")
    assert (outside / "secret").read_bytes() == b"secret" and not os.listdir(root / "data")
    # the store root itself may be reached through a link the user made
    os.symlink(root, tmp_path / "alias")
    Location(str(tmp_path / "alias")).write_atomic("data/ok", b"fine")
    assert (root / "data" / "ok").read_bytes() == b"fine"


def test_a_lock_link_never_truncates_its_target(store_dir):
    target = store_dir.parent / "precious.txt"
    target.write_text("do not truncate me")
    (store_dir / ".lock").unlink(missing_ok=True)
    os.symlink(target, store_dir / ".lock")
    st_ = Store.open(store_dir)
    with pytest.raises(UnsafePathError, match=r"\.lock is a symbolic link.*rm "), st_.lock():
        pass
    assert main(["repair", str(store_dir), "--quiet"]) == 1
    assert target.read_text() == "do not truncate me"


def test_repair_removes_planted_links_never_their_targets(store_dir, built):
    outside = store_dir.parent / "outside"
    outside.mkdir()
    (outside / "keep.arrow").write_bytes(b"user data")
    os.symlink(outside, store_dir / "checkpoints" / "evil")
    os.symlink(outside / "keep.arrow", store_dir / "data" / "evil.arrow")
    st_ = Store.open(store_dir)
    rep = verify(st_, retrain=False)
    assert any("not named by the manifest" in p for p in rep.problems)
    summary = repair(st_, settings=LOCAL)
    assert sorted(summary["removed_files"]) == ["checkpoints/evil", "data/evil.arrow"]
    assert (outside / "keep.arrow").read_bytes() == b"user data"
    assert verify(Store.open(store_dir), retrain=False).ok


def test_a_replaced_file_that_is_a_link_is_refused(store_dir):
    st_ = Store.open(store_dir)
    rel = st_.manifest.checkpoints["1/1"].file
    real = store_dir.parent / "moved.pkl"
    shutil.move(store_dir / rel, real)
    os.symlink(real, store_dir / rel)  # same bytes, reached through a link
    with pytest.raises(UnsafePathError, match="symbolic link"):
        SISAClassifier.load(str(store_dir))
    assert not verify(Store.open(store_dir, check_files=False), retrain=False).ok


def test_predict_out_inside_a_store_or_in_a_missing_folder_is_a_usage_error(store_dir, built,
                                                                             tmp_path, capsys):
    _, X = built
    data = tmp_path / "rows.parquet"
    pq.write_table(pa.table({f"x{i}": X[:20, i] for i in range(X.shape[1])}), data)
    fit(tmp_path / "other", n=200)  # another store: --out must not go into it either
    before = tree_digest(store_dir)
    os.symlink(store_dir / "data", tmp_path / "into-store")
    for out in (store_dir / "p.parquet", store_dir / "data" / "p.csv",
                tmp_path / "other" / "p.parquet", tmp_path / "into-store" / "p.parquet",
                tmp_path / "missing" / "p.parquet", tmp_path):
        capsys.readouterr()
        assert main(["predict", str(store_dir), str(data), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("inside the sisa store" in err or "does not exist" in err
                                         or "is a folder" in err), err
    assert tree_digest(store_dir) == before
    assert main(["predict", str(store_dir), str(data), "--out", str(tmp_path / "p.csv"),
                 "--quiet"]) == 0
    assert verify(Store.open(store_dir), retrain=False).ok


WRITER = textwrap.dedent("""
    import os, sys
    from sisa import Store
    from sisa.engine import ExecutionSettings
    from sisa.unlearn import forget
    uri, count = sys.argv[1], int(sys.argv[2])
    store, n = Store.open(uri), 0
    while n < count and os.read(0, 4096):  # the reader finished a read since the last commit
        forget(store, [100 + n], settings=ExecutionSettings(backend="local"))
        n += 1
    print(n)
""")
N_FORGETS = 30  # ids 100..129 of a 1,500-row store, however fast or slow the machine


def reader_loop(uri: str, X, proc) -> tuple[int, int, list[str]]:
    """Open, load and predict until the writer exits: (loads, refusals, false damage).
    After each read it tells the writer, which commits one forget per read it hears of:
    the work is bounded by count, and every commit races a read."""
    ok = stale = 0
    damaged: list[str] = []
    while proc.poll() is None:
        try:
            Store.open(uri)
            SISAClassifier.load(uri).predict(X[:5])
            ok += 1
        except StaleModelError:
            stale += 1  # a forget in progress: a correct refusal
        except CorruptStoreError as exc:
            damaged.append(str(exc))
        try:
            proc.stdin.write(b".")
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            break  # the writer is done
    return ok, stale, damaged


def test_readers_racing_committing_forgets_never_see_a_damaged_store(tmp_path):
    """The reader reads generation g; the writer commits g+1 and deletes g's files before
    the reader opens them. That is not damage: the reader retries on the new manifest.
    (Issue 22, item 14: the writer once forgot for 14 seconds and, on a fast machine, ran
    out of ids; it now commits :data:`N_FORGETS` forgets, each after a read.)"""
    _, X, _ = fit(tmp_path / "s", n=1500)
    uri = str(tmp_path / "s")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, uri, str(N_FORGETS)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ok, stale, damaged = reader_loop(uri, X, proc)
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.wait(timeout=600)  # a hang guard, not a bound on the work
    out = proc.stdout.read().decode()
    assert proc.returncode == 0 and out.strip() == str(N_FORGETS), out
    assert damaged == [], f"{len(damaged)} false damage reports, e.g. {damaged[0]}"
    # the first read precedes every commit; then one read (at least) per commit
    assert ok >= 1 and ok + stale >= N_FORGETS
    assert verify(Store.open(uri), retrain=False).ok
    assert Store.open(uri).rows.locate(list(range(100, 100 + N_FORGETS)))[0].sum() == 0


def test_real_damage_is_still_reported_at_once(store_dir, monkeypatch):
    """A file missing under an unchanged generation is damage: one re-read of the
    manifest, then the error (counted, not timed, so a loaded machine cannot fail it)."""
    st_ = Store.open(store_dir)
    rel = st_.manifest.checkpoints["0/1"].file
    (store_dir / rel).unlink()
    reloads = []
    real_reload = Store.reload
    monkeypatch.setattr(Store, "reload", lambda self: reloads.append(1) or real_reload(self))
    with pytest.raises(CorruptStoreError, match="missing file"):
        Store.open(store_dir)
    assert len(reloads) <= 1


def test_a_planted_temp_folder_link_is_neither_emptied_nor_written_through(store_dir):
    outside = store_dir.parent / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"user data")
    shutil.rmtree(store_dir / ".tmp", ignore_errors=True)
    os.symlink(outside, store_dir / ".tmp")
    for action in (lambda: repair(Store.open(store_dir), settings=LOCAL),
                   lambda: forget(Store.open(store_dir), [7], settings=LOCAL),
                   lambda: Location(str(store_dir)).write_atomic("audit/x", b"x")):
        with pytest.raises(UnsafePathError, match=r"\.tmp is a symbolic link"):
            action()
    assert os.listdir(outside) == ["keep"] and (outside / "keep").read_bytes() == b"user data"


def test_a_fifo_or_folder_under_a_file_name_is_refused_without_hanging(store_dir):
    st_ = Store.open(store_dir)
    for i, key in enumerate(("0/0", "1/1")):
        rel = st_.manifest.checkpoints[key].file
        (store_dir / rel).unlink()
        if i == 0:
            os.mkfifo(store_dir / rel)
        else:
            (store_dir / rel).mkdir()
        with pytest.raises(UnsafePathError, match="not a regular file"):
            st_.loc.read_bytes(rel)
    rep = verify(Store.open(store_dir, check_files=False), retrain=False)
    assert not rep.ok
