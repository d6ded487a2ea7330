"""Trust: a forget deletes the right row, is exact, and is provable to someone who does not
trust the store (issue "Trust"). Each test reproduces a failure found on the old main."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from sisa import SISAClassifier, Store
from sisa.errors import InputError
from sisa.store.format import keys
from sisa.store.format.layout import ID
from sisa.store.manifest import MANIFEST
from sisa.store.manifest import write as _write_manifest
from sisa.unlearn import receipts, repair, verify
from tests.helpers import LOCAL, make_classification, run_cli, tree_digest


def cli(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process (``@q`` stands for ``--quiet``)."""
    return run_cli(*["--quiet" if a == "@q" else a for a in argv])


def write_table(path: Path, table: pa.Table) -> Path:
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def small_table(n=400, ids=None, seed=0) -> pa.Table:
    X, y = make_classification(n, 3, seed=seed)
    cols = {f"f{i}": X[:, i] for i in range(3)}
    cols["y"] = y
    if ids is not None:
        cols["uid"] = ids
    return pa.table(cols)


@pytest.fixture
def keyless(monkeypatch, tmp_path):
    """No key anywhere: an unsigned store (and no key read from the real $HOME)."""
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def owner_key(monkeypatch, tmp_path):
    """The owner's key file, configured through $SISA_KEY_FILE."""
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "owner.key"
    code, _out, err = cli("keygen", "--out", str(path), "@q")
    assert code == 0, err
    monkeypatch.setenv(keys.KEY_FILE_ENV, str(path))
    return path


# ------------------------------------------------------------------ 1. the right row, by id type
def test_string_ids_are_never_parsed_as_numbers(tmp_path, keyless):
    ids = ["007", "7", "-0", "0", "a b", "x,y"] + [f"u{i}" for i in range(394)]
    data = write_table(tmp_path / "d.parquet", small_table(ids=ids))
    assert cli("train", str(data), "--label", "y", "--id", "uid", "--shards", "2", "--slices",
               "2", "--store", str(tmp_path / "s"), "@q")[0] == 0
    def present(*ids):
        return Store.open(tmp_path / "s").rows.locate(list(ids))[0].tolist()

    code, _, err = cli("forget", str(tmp_path / "s"), "--id", "007", "@q")
    assert code == 0, err
    assert present("007", "7") == [False, True]  # "007" went, "7" stayed
    code, _, err = cli("forget", str(tmp_path / "s"), "--id", "-0", "@q")
    assert code == 0 and present("-0", "0") == [False, True]
    # an ids file of a string store: one id per line, spaces and commas kept
    (tmp_path / "ids.txt").write_text("a b\nx,y\n")
    assert cli("forget", str(tmp_path / "s"), "--ids", str(tmp_path / "ids.txt"), "@q")[0] == 0
    assert present("a b", "x,y") == [False, False]
    assert verify(Store.open(tmp_path / "s"), settings=LOCAL).ok
    # the API is strict the same way: an int is not a string id
    model = SISAClassifier.load(str(tmp_path / "s"))
    with pytest.raises(InputError, match="are strings: pass '7'"):
        model.forget([7])


@pytest.mark.parametrize("text, message", [
    ("007", "write 7"), ("+7", "write 7"), ("-0", "write 0"), ("\u0663", "ASCII digits"),
    ("\u00b2", "ASCII digits"), ("7.0", "ASCII digits"), ("", "ASCII digits"),
    ("99999999999999999999", "out of range"), ("1e3", "ASCII digits"), (" 7", "write 7")])
def test_integer_ids_take_one_canonical_spelling(tmp_path, keyless, text, message):
    data = write_table(tmp_path / "d.parquet", small_table())
    assert cli("train", str(data), "--label", "y", "--shards", "2", "--slices", "2",
               "--store", str(tmp_path / "s"), "@q")[0] == 0
    before = tree_digest(tmp_path / "s")
    code, _, err = cli("forget", str(tmp_path / "s"), "--id", text, "@q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert tree_digest(tmp_path / "s") == before


# ------------------------------------------------------------------ 2. holdout keeps row numbers
def test_default_ids_are_the_files_row_numbers_with_a_holdout(tmp_path, keyless):
    table = small_table(600)
    table = table.append_column("rowtag", pa.array(np.arange(600) * 10.0))
    data = write_table(tmp_path / "d.csv", table)
    assert cli("train", str(data), "--label", "y", "--holdout", "0.2", "--shards", "2",
               "--slices", "2", "--store", str(tmp_path / "s"), "@q")[0] == 0
    store = Store.open(tmp_path / "s")
    stored = store.rows.read_index().column(ID).to_numpy()
    col = store.manifest["schema"]["feature_names"].index("rowtag")
    for s in range(2):
        for r in range(2):
            sl = store.rows.read_slice(s, r)
            assert np.array_equal(sl.X[:, col], sl.ids * 10.0)  # id = the row's number
    train_id = int(stored[5])
    held = sorted(set(range(600)) - set(stored.tolist()))
    assert held, "a 20% holdout keeps some rows out"
    code, _, err = cli("forget", str(tmp_path / "s"), "--id", str(held[0]), "@q")
    assert code == 2 and "not in store" in err  # a holdout row is not a trained row
    assert cli("forget", str(tmp_path / "s"), "--id", str(train_id), "@q")[0] == 0
    assert not Store.open(tmp_path / "s").rows.locate([train_id])[0].any()


# ------------------------------------------------------------------ 4. a failed overwrite
def bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    good = small_table(400, ids=np.arange(400))
    nan = good.set_column(0, "f0", pa.array([np.nan, *good.column("f0").to_pylist()[1:]]))
    null = good.set_column(1, "f1", pa.array([None, *good.column("f1").to_pylist()[1:]]))
    dup = good.set_column(good.column_names.index("uid"), "uid", pa.array([0, *range(399)]))
    (tmp_path / "badcell.csv").write_text("f0,f1,f2,y,uid\n" + "\n".join(
        f"{i * 0.1},{'oops' if i == 7 else 1.0},0.5,{i % 2},{i}" for i in range(400)))
    (tmp_path / "header.csv").write_text("a,b,c\n1,2,3\n")
    # a bad row only in the holdout part of the file
    rows = good.num_rows
    from sisa.cli import _split
    _, te = _split(rows, 0.2, 0)
    f0 = good.column("f0").to_pylist()
    f0[int(te[0])] = float("inf")
    holdbad = good.set_column(0, "f0", pa.array(f0))
    common = ["--label", "y", "--id", "uid", "--shards", "2", "--slices", "2"]
    return {
        "nan": [str(write_table(tmp_path / "nan.parquet", nan)), *common],
        "null": [str(write_table(tmp_path / "null.parquet", null)), *common],
        "dup": [str(write_table(tmp_path / "dup.parquet", dup)), *common],
        "badcell": [str(tmp_path / "badcell.csv"), *common],
        "header": [str(tmp_path / "header.csv"), *common],
        "holdout-inf": [str(write_table(tmp_path / "hb.parquet", holdbad)), *common,
                        "--holdout", "0.2"],
    }


def test_a_failed_overwrite_leaves_the_store_byte_for_byte(tmp_path, keyless):
    data = write_table(tmp_path / "good.parquet", small_table(400, ids=np.arange(400)))
    st = tmp_path / "s"
    assert cli("train", str(data), "--label", "y", "--id", "uid", "--shards", "2", "--slices",
               "2", "--store", str(st), "@q")[0] == 0
    assert cli("forget", str(st), "--id", "3", "@q")[0] == 0  # an audit log worth keeping
    before = tree_digest(st)
    for name, argv in bad_inputs(tmp_path).items():
        code, _, err = cli("train", *argv, "--store", str(st), "--overwrite", "@q")
        assert code == 2 and len(err.strip().splitlines()) == 1, (name, err)
        assert tree_digest(st) == before, name
    assert verify(Store.open(st), settings=LOCAL).ok


def test_an_api_refit_from_a_bad_table_keeps_the_old_store(tmp_path, keyless):
    X, y = make_classification(400, 3)
    model = SISAClassifier(n_shards=2, n_slices=2, store=str(tmp_path / "s"),
                           backend="local").fit(X, y)
    before = tree_digest(tmp_path / "s")
    bad = small_table(400)
    bad = bad.set_column(0, "f0", pa.array([np.nan, *bad.column("f0").to_pylist()[1:]]))
    with pytest.raises(InputError, match="non-finite"):
        SISAClassifier(n_shards=2, n_slices=2, store=str(tmp_path / "s"),
                       backend="local").fit(bad, "y")
    with pytest.raises(InputError, match="only 1 class"):
        SISAClassifier(n_shards=2, n_slices=2, store=str(tmp_path / "s"),
                       backend="local").fit(X, np.zeros(400, int))
    assert tree_digest(tmp_path / "s") == before
    assert model.refresh().score(X, y) > 0.5


# ------------------------------------------------------------------ 5. rerun = repair
def test_debris_of_a_killed_write_is_cleared_by_the_next_writer(tmp_path, keyless):
    X, y = make_classification(400, 3)
    model = SISAClassifier(n_shards=2, n_slices=2, store=str(tmp_path / "s"),
                           backend="local").fit(X, y)
    debris = tmp_path / "s" / ".tmp" / "12345-deadbeef"
    debris.write_bytes(b"half of a slice")  # what SIGKILL between write and rename leaves
    assert not verify(model.store_, settings=LOCAL).ok
    model.forget([5])
    assert not debris.exists()
    assert verify(model.store_, settings=LOCAL).ok


# ------------------------------------------------------------------ 8. a tamper-evident log
def forgotten_store(tmp_path: Path, n_forgets: int = 3) -> SISAClassifier:
    X, y = make_classification(600, 3)
    model = SISAClassifier(n_shards=3, n_slices=2, store=str(tmp_path / "s"),
                           backend="local").fit(X, y)
    for i in range(n_forgets):
        model.forget([10 * i + 1, 10 * i + 2])
    return model


def log_lines(store: Store) -> tuple[Path, list[bytes]]:
    p = Path(store.loc.root) / receipts.log_path(store)
    return p, p.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("attack", ["drop-first", "drop-middle", "swap", "edit-n_ids",
                                    "edit-ids_sha256", "drop-last"])
def test_an_edited_audit_log_fails_verify_naming_the_receipt(tmp_path, keyless, attack):
    model = forgotten_store(tmp_path)
    store = model.store_
    assert verify(store, retrain=False).ok
    path, lines = log_lines(store)
    if attack == "drop-first":
        lines = lines[1:]
    elif attack == "drop-middle":
        lines = [lines[0], lines[2]]
    elif attack == "drop-last":
        lines = lines[:2]
    elif attack == "swap":
        lines = [lines[1], lines[0], lines[2]]
    else:
        field = attack.split("-", 1)[1]
        r = json.loads(lines[1])
        r[field] = 99 if field == "n_ids" else "0" * 64
        lines[1] = (json.dumps(r, sort_keys=True) + "\n").encode()
    path.write_bytes(b"".join(lines))
    rep = verify(Store.open(tmp_path / "s"), retrain=False)
    assert not rep.ok
    text = " ".join(rep.problems)
    assert "receipt" in text, text


def test_a_torn_last_line_is_recovered_by_repair_losing_nothing(tmp_path, keyless):
    model = forgotten_store(tmp_path, 2)
    store = model.store_
    path, lines = log_lines(store)
    full = b"".join(lines)
    path.write_bytes(full[:-25])  # power lost in the middle of the last append
    for argv in (["status"], ["history"], ["verify"], ["forget", "--id", "100"]):
        _code, _out, err = cli(*argv[:1], str(tmp_path / "s"), *argv[1:], "@q")
        assert "Traceback" not in err and "JSONDecodeError" not in err, err
        assert len(err.strip().splitlines()) <= 1
    assert cli("repair", str(tmp_path / "s"), "@q")[0] == 0
    fresh = Store.open(tmp_path / "s")
    assert receipts.check(fresh) == [] and len(receipts.history(fresh)) >= 2
    assert path.read_bytes().startswith(full)  # the committed receipts, byte for byte
    assert verify(fresh, settings=LOCAL).ok


def test_a_receipt_lost_before_the_append_fails_verify_until_repair(tmp_path, keyless):
    model = forgotten_store(tmp_path, 2)
    path, lines = log_lines(model.store_)
    path.write_bytes(b"".join(lines[:-1]))  # killed between the commit and the append
    rep = verify(Store.open(tmp_path / "s"), retrain=False)
    assert any("run `sisa repair`" in p for p in rep.problems)
    assert repair(Store.open(tmp_path / "s"), settings=LOCAL)["log_restored"]
    assert path.read_bytes() == b"".join(lines)
    assert verify(Store.open(tmp_path / "s"), retrain=False).ok


def test_a_swapped_tombstone_fails_verify_even_with_the_manifest_rehashed(tmp_path, keyless):
    model = forgotten_store(tmp_path, 2)
    store = model.store_
    m = store.manifest.flat()
    part = next(iter(m["tombstones"]["parts"].values()))
    empty = pa.table({"h": pa.array([], pa.binary(16))})
    meta = store.put_blob(str(Path(part["file"]).parent), ".arrow",
                          _ipc(empty))
    part.update(meta.to_json(), rows=0)
    _write_manifest(store.loc, m, None)  # re-hashed: the checksum alone cannot tell
    rep = verify(Store.open(tmp_path / "s"), retrain=False)
    assert any("tombstones are not the set" in p for p in rep.problems), rep.problems


def _ipc(table):
    from sisa.store.format.layout import ipc_bytes
    return ipc_bytes(table)


# ------------------------------------------------------------------ 9. the audit key
def test_the_audit_key_is_in_no_manifest_and_no_pickle(tmp_path, keyless):
    model = forgotten_store(tmp_path, 1)
    store = model.store_
    key_hex = store.audit.key().hex().encode()
    for p in (tmp_path / "s").rglob("*"):
        if p.is_file() and p.name != Path(store.manifest.audit_files()["key"]).name:
            assert key_hex not in p.read_bytes(), p
    key_file = tmp_path / "s" / store.manifest.audit_files()["key"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_signed_store_keeps_its_audit_key_out_of_the_store(tmp_path, owner_key):
    model = forgotten_store(tmp_path, 1)
    store = model.store_
    assert store.audit.signer == keys.load(owner_key).public_hex
    assert "key" not in store.manifest.audit_files()
    assert not list((tmp_path / "s" / "audit").glob("key-*"))
    assert stat.S_IMODE(owner_key.stat().st_mode) == 0o600
    key_hex = store.audit.key().hex().encode()
    assert not any(key_hex in p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file())


def test_a_key_file_readable_by_others_is_refused(tmp_path, owner_key):
    os.chmod(owner_key, 0o644)
    with pytest.raises(InputError, match="chmod 600"):
        keys.load(owner_key)


def test_only_the_owner_can_change_a_signed_store(tmp_path, owner_key, monkeypatch):
    model = forgotten_store(tmp_path, 1)
    before = tree_digest(tmp_path / "s")
    other = tmp_path / "other.key"
    keys.save(keys.generate(), other)
    monkeypatch.setenv(keys.KEY_FILE_ENV, str(other))
    code, _, err = cli("forget", str(tmp_path / "s"), "--id", "100", "@q")
    assert code == 2 and "signed by ed25519:" in err, err
    monkeypatch.delenv(keys.KEY_FILE_ENV)
    code, _, err = cli("forget", str(tmp_path / "s"), "--id", "100", "@q")
    assert code == 2 and "no key is configured" in err, err
    assert tree_digest(tmp_path / "s") == before
    assert model is not None


# ------------------------------------------------------------------ third-party verification
def third_party_verify(store: Path, public: str) -> subprocess.CompletedProcess:
    """`sisa verify --public-key` as an auditor runs it: another process, an empty home, no
    private key and no audit key anywhere in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SISA_")}
    home = store.parent / "auditor-home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "sisa.cli", "verify", "--public-key", public,
                           str(store), "--quiet", "--backend", "local"], capture_output=True,
                          text=True, env=env, timeout=300)


def tamperings(store_dir: Path, other_key: keys.KeyPair) -> dict:
    """Each function edits a copy of the store the way an attacker with write access to
    the store (but not the owner's key) would."""
    def manifest():  # every section inline, as an attacker would edit it
        return Store.open(str(store_dir), check_files=False).manifest.flat()

    def rewrite(m, key=None):
        _write_manifest(Store(str(store_dir), m).loc, m, key)

    def edit_rehash():  # drop a tombstone count, checksum recomputed, signature kept
        raw = json.loads((store_dir / MANIFEST).read_text())
        m = raw["manifest"]
        m["n_deleted"] = 0
        body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        (store_dir / MANIFEST).write_bytes(
            b'{"checksum":"' + hashlib.sha256(body).hexdigest().encode() + b'","signature":"'
            + raw["signature"].encode() + b'","manifest":' + body + b"}")

    def unsigned():
        m = manifest()
        m["signer"] = None
        rewrite(m)

    def resigned():
        m = manifest()
        m["signer"] = {"alg": "ed25519", "public_key": other_key.public_hex}
        rewrite(m, other_key)

    def receipt_edit():
        p = next((store_dir / "audit").glob("receipts-*.jsonl"))
        lines = p.read_text().splitlines()
        r = json.loads(lines[0])
        r["n_ids"] = 1
        lines[0] = json.dumps(r, sort_keys=True)
        p.write_text("\n".join(lines) + "\n")

    def receipt_drop():
        p = next((store_dir / "audit").glob("receipts-*.jsonl"))
        p.write_text("".join(p.read_text().splitlines(keepends=True)[1:]))

    def checkpoint_swap():  # replace a checkpoint file's bytes, keep its name
        ck = sorted((store_dir / "checkpoints").rglob("*.pkl"))[0]
        raw = bytearray(ck.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        ck.write_bytes(bytes(raw))

    def data_row_back():  # a slice file replaced by an older version (a deleted row back)
        old = sorted((store_dir.parent / "backup" / "data").rglob("*.arrow"))
        new = sorted((store_dir / "data").rglob("*.arrow"))
        for o, n in zip(old, new, strict=True):
            if o.read_bytes() != n.read_bytes():
                n.write_bytes(o.read_bytes())
                return
        raise AssertionError("no slice changed")

    return {"edit-rehash": edit_rehash, "unsigned": unsigned, "resigned": resigned,
            "receipt-edit": receipt_edit, "receipt-drop": receipt_drop,
            "checkpoint-swap": checkpoint_swap, "data-row-back": data_row_back}


def test_an_auditor_with_only_the_public_key_checks_a_store_built_elsewhere(tmp_path,
                                                                           owner_key):
    X, y = make_classification(600, 3)
    built = tmp_path / "built"
    model = SISAClassifier(n_shards=3, n_slices=2, store=str(built / "s"), backend="local")
    model.fit(X, y)
    shutil.copytree(built / "s", built / "backup")
    model.forget([11, 12])
    model.forget([21])
    public = keys.load(owner_key).public_line
    honest = third_party_verify(built / "s", public)
    assert honest.returncode == 0, honest.stdout + honest.stderr
    other = keys.generate()
    results = {}
    for name in tamperings(built / "s", other):
        case = tmp_path / name
        shutil.copytree(built, case)
        tamperings(case / "s", other)[name]()
        out = third_party_verify(case / "s", public)
        results[name] = (out.returncode, (out.stdout + out.stderr).strip()[-300:])
    for name, (code, text) in results.items():
        assert code == 1, (name, text)
        assert text, name
    # and the auditor's key must be the owner's: another public key fails the honest store
    wrong = third_party_verify(built / "s", other.public_line)
    assert wrong.returncode == 1 and "not by the public key you gave" in wrong.stdout


def test_a_held_receipt_exposes_a_rollback_to_an_earlier_signed_state(tmp_path, owner_key):
    """A writer can restore an older, complete, validly signed store; whoever holds a
    later receipt (the data subject) sees it is missing from the log."""
    X, y = make_classification(600, 3)
    st = tmp_path / "s"
    model = SISAClassifier(n_shards=3, n_slices=2, store=str(st), backend="local").fit(X, y)
    first = model.forget([11])
    shutil.copytree(st, tmp_path / "old")
    second = model.forget([12])
    (tmp_path / "r1.json").write_text(json.dumps(first))
    (tmp_path / "r2.json").write_text(json.dumps(second))
    public = keys.load(owner_key).public_line
    args = ("verify", str(st), "--public-key", public, "--backend", "local", "@q")
    assert cli(*args, "--receipt", str(tmp_path / "r2.json"))[0] == 0
    shutil.rmtree(st)
    shutil.copytree(tmp_path / "old", st)  # rolled back: signed, complete, self-consistent
    assert cli(*args, "--receipt", str(tmp_path / "r1.json"))[0] == 0
    code, out, _ = cli(*args, "--receipt", str(tmp_path / "r2.json"))
    assert code == 1 and "rolled back" in out
    forged = {**second, "n_ids": 5}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, out, _ = cli(*args, "--receipt", str(tmp_path / "forged.json"))
    assert code == 1 and "not signed by this store's owner" in out
    # and a data subject can check their own id is gone, with no key at all
    code, out, _ = cli("verify", str(st), "--public-key", public, "--forgotten-id", "11",
                       "--backend", "local", "@q")
    assert code == 0
    code, out, _ = cli("verify", str(st), "--public-key", public, "--forgotten-id", "12",
                       "--backend", "local", "@q")
    assert code == 1 and "said to be forgotten" in out
    # the note that given ids were checked absent is printed when they were, never beside
    # the failure that says they are not
    code, out, err = cli("verify", str(st), "--public-key", public, "--forgotten-id", "11",
                         "--backend", "local")
    assert code == 0 and "given id(s) checked absent" in out + err
    code, out, err = cli("verify", str(st), "--public-key", public, "--forgotten-id", "12",
                         "--backend", "local")
    assert code == 1 and "lists 1 of the 1 id(s)" in out + err
    assert "given id(s) checked absent" not in out + err


# ------------------------------------------------------------------ found by the review
def test_a_generator_of_ids_is_read_once_and_forgets_every_id(tmp_path, keyless):
    X, y = make_classification(400, 3)
    model = SISAClassifier(n_shards=2, n_slices=2, store=str(tmp_path / "s"),
                           backend="local").fit(X, y)
    receipt = model.forget(i for i in [3, 6])  # was: consumed by a length check, 0 ids
    assert receipt["n_ids"] == 2 and not model.store_.rows.locate([3, 6])[0].any()


@pytest.mark.parametrize("edit", ["signer-str", "signer-list", "signer-key-int", "audit-str",
                                  "seq-list", "receipt-signature-int"])
def test_malformed_fields_fail_verify_with_a_reason_not_a_traceback(tmp_path, owner_key, edit):
    model = forgotten_store(tmp_path, 2)
    st = tmp_path / "s"
    public = keys.load(owner_key).public_line
    raw = json.loads((st / MANIFEST).read_text())
    m = raw["manifest"]
    if edit.startswith(("signer", "audit")):
        m["signer" if edit.startswith("signer") else "audit"] = {
            "signer-str": "abc", "signer-list": [1], "signer-key-int": {"alg": "ed25519",
                                                                        "public_key": 5},
            "audit-str": "x"}[edit]
        body = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
        (st / MANIFEST).write_bytes(  # only the plain checksum recomputed: no key needed
            b'{"checksum":"' + hashlib.sha256(body).hexdigest().encode() + b'","signature":"'
            + raw["signature"].encode() + b'","manifest":' + body + b"}")
    else:
        path, lines = log_lines(model.store_)
        r = json.loads(lines[0])
        if edit == "seq-list":
            r["seq"] = [0]
        else:
            r["signature"] = 5
        lines[0] = (json.dumps(r) + "\n").encode()
        path.write_bytes(b"".join(lines))
    code, out, err = cli("verify", str(st), "--public-key", public, "--backend", "local", "@q")
    assert code == 1 and "Traceback" not in err and "unexpected" not in err, (out, err)
    assert (out + err).strip()


def test_bad_public_key_and_receipt_files_are_usage_errors(tmp_path, owner_key):
    forgotten_store(tmp_path, 1)
    (tmp_path / "pk.json").write_text('{"public_key": 5}')
    (tmp_path / "latin1").write_bytes(b"\xff\xfe\x00")
    (tmp_path / "r.json").write_text('{"seq": 0, "signature": 5}')
    public = keys.load(owner_key).public_line
    for argv in (["--public-key", str(tmp_path)], ["--public-key", str(tmp_path / "pk.json")],
                 ["--public-key", str(tmp_path / "latin1")]):
        code, _, err = cli("verify", str(tmp_path / "s"), *argv, "--backend", "local", "@q")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "public key" in err, err
    code, out, err = cli("verify", str(tmp_path / "s"), "--public-key", public, "--receipt",
                         str(tmp_path / "r.json"), "--backend", "local", "@q")
    assert code == 1 and "not signed by this store's owner" in out, (out, err)
