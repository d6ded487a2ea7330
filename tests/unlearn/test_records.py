"""The typed records of a forget (issue 25, "Typed records"): the request, the intent, the
receipt (sealed into the audit log), the manifest's journal entry and the serve queue's
entry. Each ``to_json`` gives the bytes sisa wrote before the records were typed (tested
on stores written then: tests/data/README.md), each ``from_json`` takes those and nothing
else, with one line naming the record and the field."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sisa import Store
from sisa.errors import CorruptStoreError
from sisa.serve.queue import QueueEntry
from sisa.store.format import keys
from sisa.store.format.layout import INTENT
from sisa.store.manifest import canonical_json
from sisa.store.manifest.journal import INT_MAX, JournalEntry
from sisa.unlearn import history, receipts
from sisa.unlearn.records import (
    ForgetRequest,
    Intent,
    Receipt,
    SealedReceipt,
    ServiceRequest,
)
from sisa.unlearn.timings import PARTS, Timings
from tests.helpers import run_cli, tree_digest

DATA = Path(__file__).resolve().parents[1] / "data"
V4_PUBLIC = "ed25519:5d060d2820aeba9067d84ebf963c6a696a772f1acd13ab73dd5b6f176cfaf383"


@pytest.fixture
def keyless(monkeypatch, tmp_path):
    """No key anywhere: the fixtures' audit keys are their own (and no $HOME key)."""
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def copy(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    shutil.copytree(DATA / name, out)
    return out


def log_bytes(store: Path) -> bytes:
    (path,) = (store / "audit").glob("receipts-*.jsonl")
    return path.read_bytes()


def manifest_body(store: Path) -> tuple[bytes, dict]:
    raw = (store / "manifest.json").read_bytes()
    return raw, json.loads(raw)["manifest"]


def assert_log_round_trips(store: Path, n: int) -> list[SealedReceipt]:
    """Every line of the audit log parses and re-serialises to its own bytes; the
    manifest's last receipt too (inline in the manifest's signed bytes), and it is the
    committed head of the chain."""
    lines = log_bytes(store).splitlines(keepends=True)
    assert len(lines) == n
    typed = [SealedReceipt.from_json(json.loads(line)) for line in lines]
    for line, r in zip(lines, typed, strict=True):
        assert receipts.log_line(r.to_json()) == line
        assert json.dumps(r.to_json(), sort_keys=True).encode() + b"\n" == line
    raw, body = manifest_body(store)
    last = SealedReceipt.from_json(body["last_receipt"])
    assert last == typed[-1]
    assert canonical_json(last.to_json()) in raw  # the manifest's bytes hold it unchanged
    assert receipts.receipt_hash(last.to_json()) == body["audit"]["head"]
    return typed


# ------------------------------------------------- (1) the signed format-4 store
def test_the_signed_v4_stores_receipts_round_trip_and_still_verify(tmp_path, keyless):
    store = copy("store-v4", tmp_path)
    typed = assert_log_round_trips(store, 2)
    public = V4_PUBLIC.split(":")[1]
    for r in typed:  # the owner's signature is over the bytes to_json gives
        assert r.signature is not None and receipts.signature_ok(public, r.to_json())
        assert not receipts.signature_ok(public, r.unsigned().to_json())
    assert typed[0].prev is None and typed[1].prev == receipts.receipt_hash(typed[0].to_json())
    assert typed[1].receipt.request.n_groups == 1 and typed[0].receipt.request.n_groups is None
    assert receipts.check(Store.open(store)) == []
    before = tree_digest(store)
    code, out, err = run_cli("verify", str(store), "--public-key", V4_PUBLIC, "--json",
                             "--quiet", "--backend", "local")
    assert code == 0 and json.loads(out)["problems"] == [], err
    assert tree_digest(store) == before


# ---------------------------------------- (2) a forget interrupted after its intent
def test_the_interrupted_stores_intent_round_trips_and_repair_finishes_it(tmp_path, keyless):
    store = copy("store-v4-interrupted", tmp_path)
    raw = (store / INTENT).read_bytes()
    intent = Intent.from_json(json.loads(raw))
    assert json.dumps(intent.to_json()).encode() == raw  # key order too: not sorted
    left = intent.request
    assert len(intent.ids) == left.n_ids == 6 and left.started is not None
    assert left.n_groups == 1 and left.groups_already_forgotten == 0 and left.ids is None
    assert left.kind == "groups"
    assert assert_log_round_trips(store, 1)[0].signature is None  # unsigned
    code, out, err = run_cli("repair", str(store), "--json", "--quiet", "--backend", "local")
    assert code == 0, err
    done = json.loads(out)["completed_request"]
    logged = history(Store.open(store))
    assert len(logged) == 2 and not (store / INTENT).exists()
    new = assert_log_round_trips(store, 2)[1]
    assert new.request_id == done and new.seq == 1
    req = new.receipt.request  # the intent's request, redone as it was
    assert (req.ids_sha256, req.n_ids, req.groups_sha256, req.group_hashes) == (
        left.ids_sha256, left.n_ids, left.groups_sha256, left.group_hashes)
    code, _, err = run_cli("verify", str(store), "--quiet", "--backend", "local")
    assert code == 0, err


# ------------------------------------------ (2b) a forget journaled by a format-3 store
def test_a_journaled_forget_of_a_v3_store_round_trips_and_repair_finishes_it(tmp_path,
                                                                              keyless):
    store = copy("store-v3-pending", tmp_path)
    code, _, err = run_cli("upgrade", str(store), "--quiet")
    assert code == 0, err
    raw, body = manifest_body(store)
    entry = JournalEntry.from_json(body["pending"])
    assert entry.to_json() == body["pending"] and canonical_json(entry.to_json()) in raw
    assert entry.kind == "forget" and entry.rows_processed == 0
    request = ForgetRequest.from_json(entry.request)
    assert request.to_json() == entry.request and request.started is not None
    assert request.kind == "ids"
    assert Store.open(store).manifest.pending == entry
    code, out, err = run_cli("status", str(store), "--json")
    assert code == 0 and json.loads(out)["pending"] == body["pending"], err
    code, out, err = run_cli("repair", str(store), "--json", "--quiet", "--backend", "local")
    assert code == 0 and json.loads(out)["completed_request"] == request.request_id, err
    assert Store.open(store).manifest.pending is None
    last = assert_log_round_trips(store, 2)[1]
    assert last.receipt.request == dataclasses.replace(request, started=None)
    code, _, err = run_cli("verify", str(store), "--quiet", "--backend", "local")
    assert code == 0, err


# ------------------------------------------------------- (3) round-trip properties
def _hex(n: int):
    return st.text("0123456789abcdef", min_size=n, max_size=n)


_short = st.text(max_size=64)
_count = st.integers(0, INT_MAX)
_sample_id = st.one_of(st.integers(-(2**63), INT_MAX), st.text(max_size=20))
_label = st.one_of(st.integers(-(10**9), 10**9), st.text(max_size=8), st.booleans(),
                   st.floats(-1e6, 1e6, allow_nan=False))


def _opt(strategy):
    return st.none() | strategy


def _tuple_of(strategy, n: int = 4):
    return st.lists(strategy, max_size=n).map(tuple)


service_requests = st.builds(ServiceRequest, request_id=_short, ids_sha256=_short,
                             n_ids=_count)


def forget_requests(started: bool):
    return st.builds(
        ForgetRequest, request_id=_short, requested_at=_short,
        started=st.floats(0, 1e12, allow_nan=False) | st.integers(0, 10**12) if started
        else st.none(),
        ids_sha256=_hex(64), n_ids=_count, fingerprint_before=_hex(64),
        affected=_tuple_of(st.tuples(_count, _count)), ids=_opt(_tuple_of(_sample_id)),
        requests=_opt(_tuple_of(service_requests, 3)), groups_sha256=_opt(_hex(64)),
        n_groups=_opt(_count), group_hashes=_opt(_tuple_of(_hex(32))),
        groups=_opt(_tuple_of(_sample_id)), groups_already_forgotten=_opt(_count),
        classes_removed=_opt(_tuple_of(_label, 3)), reason=_opt(st.text(max_size=40)))


unsealed = st.builds(
    Receipt, request=forget_requests(False), shards_emptied=_tuple_of(_count),
    rows_retrained=_count, rows_full_retrain=_count, already_deleted=_count,
    wall_time_s=st.floats(0, 1e6, allow_nan=False) | st.integers(0, 10**6),
    completed_at=_short, fingerprint_after=_hex(64), tombstones_after=_hex(64))
sealed = st.builds(SealedReceipt, receipt=unsealed, seq=_count, prev=_opt(_hex(64)),
                   store_id=_hex(32), signature=_opt(_hex(128)))
RECORDS = {
    ServiceRequest: service_requests,
    ForgetRequest: forget_requests(True),
    Intent: st.builds(Intent, request=forget_requests(True), ids=_tuple_of(_sample_id)),
    Receipt: unsealed,
    SealedReceipt: sealed,
    JournalEntry: st.one_of(
        st.builds(JournalEntry, kind=st.just("fit"), rows_processed=_opt(_count)),
        st.builds(JournalEntry, kind=st.just("forget"), rows_processed=_opt(_count),
                  request=_opt(forget_requests(True).map(ForgetRequest.to_json)))),
    Timings: st.builds(
        Timings, **{p: st.floats(0, 1e6, allow_nan=False) for p in ("wall_s", *PARTS)},
        fsyncs=_count, outside_training=st.floats(-1e3, 1, allow_nan=False),
        remote_training=st.booleans()),
    QueueEntry: st.one_of(
        st.builds(QueueEntry, request_id=_short, queued_at=_short,
                  ids=_tuple_of(_sample_id)),
        st.builds(QueueEntry, request_id=_short, queued_at=_short, failed=st.text())),
}


@pytest.mark.parametrize("cls", list(RECORDS), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_record_round_trips_through_its_json(cls, data):
    record = data.draw(RECORDS[cls])
    obj = record.to_json()
    assert cls.from_json(obj) == record
    text = json.dumps(obj, sort_keys=True)  # as the log and the manifest hold it
    assert cls.from_json(json.loads(text)) == record
    assert json.dumps(cls.from_json(json.loads(text)).to_json(), sort_keys=True) == text
    absent = [k for k, v in obj.items() if v is None]
    assert absent in ([], ["prev"])  # an optional field sisa omits is omitted, not null


def _fresh_chain_store(root: Path) -> Store:
    """An unsigned store with one receipt logged (the interrupted fixture, intent gone)."""
    shutil.copytree(DATA / "store-v4-interrupted", root)
    (root / INTENT).unlink()
    return Store.open(root)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chain=st.lists(unsealed, min_size=1, max_size=4))
def test_a_chain_of_sealed_receipts_round_trips(chain, tmp_path_factory, keyless):
    store = _fresh_chain_store(tmp_path_factory.mktemp("chain") / "s")
    with store.lock():
        for r in chain:
            done, audit = receipts.seal(store, r)
            store.commit(store.manifest.with_receipt(done.to_json(), audit))
            receipts.sync_log(store)
    store = Store.open(store.uri)
    raw = log_bytes(Path(store.uri))
    logged, problems = receipts.parse_log(raw)
    assert problems == [] and receipts.check(store) == []
    typed = [SealedReceipt.from_json(r) for r in logged]
    assert [t.receipt for t in typed[1:]] == chain and [t.seq for t in typed] == list(
        range(len(chain) + 1))
    assert b"".join(receipts.log_line(t.to_json()) for t in typed) == raw
    assert typed[-1] == receipts.committed(store)


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """The signed fixture's log, and an unsigned log of four receipts, each with its store."""
    signed = tmp_path_factory.mktemp("v4") / "store-v4"
    shutil.copytree(DATA / "store-v4", signed)
    store = _fresh_chain_store(tmp_path_factory.mktemp("u") / "s")
    request = SealedReceipt.from_json(history(store)[0]).receipt
    with store.lock():
        for n in range(3):
            done, audit = receipts.seal(store, dataclasses.replace(request, rows_retrained=n))
            store.commit(store.manifest.with_receipt(done.to_json(), audit))
            receipts.sync_log(store)
    return [(Store.open(signed), log_bytes(signed)),
            (Store.open(store.uri), log_bytes(Path(store.uri)))]


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 1), where=st.floats(0, 1, exclude_max=True),
       byte=st.sampled_from(list(b'\t\r\n "0,:')) | st.integers(0, 255))
def test_any_one_byte_change_to_any_log_line_is_detected(chains, which, where, byte):
    store, raw = chains[which]
    assert receipts.check(store, receipts.parse_log(raw)) == []
    at = int(where * len(raw))
    if raw[at] == byte:
        byte = (byte + 1) % 256
    edited = raw[:at] + bytes([byte]) + raw[at + 1:]
    log = receipts.parse_log(edited)
    assert log[1] + receipts.check(store, log), (at, byte)


def test_a_space_swapped_for_a_tab_in_a_logged_receipt_fails_verify(tmp_path, keyless):
    """The chain hashes a receipt's canonical JSON, so whitespace edits parse to the same
    receipt: only the line's bytes show them (found writing the property above)."""
    store = copy("store-v4", tmp_path)
    (path,) = (store / "audit").glob("receipts-*.jsonl")
    path.write_bytes(path.read_bytes().replace(b'": ', b'":\t', 1))
    code, out, _ = run_cli("verify", str(store), "--public-key", V4_PUBLIC, "--json",
                             "--quiet", "--backend", "local")
    problems = json.loads(out)["problems"]
    assert code == 1 and any("line 1 of the audit log is not the bytes sisa writes" in p
                             for p in problems), problems


# -------------------------------------------------------- (4) forged records
SECRET = "s3cr3t-value-0xDEADBEEF"  # planted in a bad field: no error may echo it
_REQ = {"request_id": "a" * 32, "requested_at": "2026-12-07T22:27:17.602+00:00",
        "started": 1.5, "ids_sha256": "b" * 64, "n_ids": 2, "fingerprint_before": "c" * 64,
        "affected": [[0, 1]]}

_RCPT = {**{k: v for k, v in _REQ.items() if k != "started"}, "shards_emptied": [],
         "rows_retrained": 10, "rows_full_retrain": 30, "already_deleted": 0,
         "wall_time_s": 0.5, "completed_at": "2026-12-07T22:27:18.000+00:00",
         "fingerprint_after": "d" * 64, "tombstones_after": "e" * 64}
_SEALED = {**_RCPT, "seq": 0, "prev": None, "store_id": "f" * 32}


def _with(obj: dict, **edits) -> dict:
    out = {**obj, **edits}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()
FORGED = {  # record, JSON, field the error must name
    "request-not-an-object": (ForgetRequest, [SECRET], "not a JSON object"),
    "request-missing-field": (ForgetRequest, _with(_REQ, ids_sha256=_DROP), "'ids_sha256'"),
    "request-extra-field": (ForgetRequest, _with(_REQ, **{SECRET: 1}), "does not define"),
    "request-n_ids-a-string": (ForgetRequest, _with(_REQ, n_ids=SECRET), "'n_ids'"),
    "request-n_ids-huge": (ForgetRequest, _with(_REQ, n_ids=2**70), "'n_ids'"),
    "request-n_ids-negative": (ForgetRequest, _with(_REQ, n_ids=-1), "'n_ids'"),
    "request-n_ids-a-bool": (ForgetRequest, _with(_REQ, n_ids=True), "'n_ids'"),
    "request-digest-not-hex": (ForgetRequest, _with(_REQ, ids_sha256=SECRET), "'ids_sha256'"),
    "request-affected-shape": (ForgetRequest, _with(_REQ, affected=[[0]]), "'affected'"),
    "request-started-infinite": (ForgetRequest, _with(_REQ, started=float("inf")),
                                 "'started'"),
    "request-started-a-huge-int": (ForgetRequest, _with(_REQ, started=10**400), "'started'"),
    "receipt-wall-time-huge": (Receipt, _with(_RCPT, wall_time_s=-(10**30)), "'wall_time_s'"),
    "receipt-with-started": (Receipt, _with(_RCPT, started=1.0), "does not define"),
    "sealed-prev-a-number": (SealedReceipt, _with(_SEALED, prev=7), "'prev'"),
    "sealed-signature-short": (SealedReceipt, _with(_SEALED, signature="ab"), "'signature'"),
    "request-ids-nested": (ForgetRequest, _with(_REQ, ids=[1, {"x": SECRET}]), "'ids'"),
    "request-service-request-extra": (ForgetRequest, _with(_REQ, requests=[
        {"request_id": "r", "ids_sha256": "d", "n_ids": 1, "x": SECRET}]), "does not define"),
    "intent-not-an-object": (Intent, SECRET, "not a JSON object"),
    "intent-ids-a-string": (Intent, {"request": _REQ, "ids": SECRET}, "'ids'"),
    "intent-request-null": (Intent, {"request": None, "ids": [1]}, "not a JSON object"),
    "receipt-seq-a-string": (SealedReceipt, _with(_SEALED, seq=SECRET), "'seq'"),
    "journal-bad-kind": (JournalEntry, {"kind": SECRET}, "'kind'"),
    "journal-kind-missing": (JournalEntry, {"rows_processed": 0}, "'kind'"),
    "journal-rows-a-float": (JournalEntry, {"kind": "fit", "rows_processed": 1.0},
                             "'rows_processed'"),
    "journal-request-on-a-fit": (JournalEntry, {"kind": "fit", "request": _REQ}, "'request'"),
    "journal-a-list": (JournalEntry, [], "not a JSON object"),
    "queue-ids-and-failed": (QueueEntry, {"request_id": "r", "queued_at": "t", "ids": [1],
                                          "failed": SECRET}, "'ids' or field 'failed'"),
    "timings-part-missing": (Timings, {"wall_s": 1.0, "fsyncs": 0, "outside_training": 0.5},
                             "'plan_s'"),
    "queue-ids-a-string": (QueueEntry, {"request_id": "r", "queued_at": "t", "ids": SECRET},
                           "'ids'"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_a_forged_record_is_one_line_naming_it_and_never_its_value(case):
    cls, obj, names = FORGED[case]
    with pytest.raises(CorruptStoreError) as info:
        cls.from_json(obj)
    msg = str(info.value)
    assert "\n" not in msg and names in msg and SECRET not in msg and "DEADBEEF" not in msg
    record = {ForgetRequest: "request", Intent: "intent", SealedReceipt: "receipt",
              Receipt: "receipt",
              JournalEntry: "journal", QueueEntry: "queue", Timings: "timings"}[cls]
    assert record in msg, msg


def _forge_journal(store: Path, pending) -> None:
    """The manifest rewritten with ``pending``, as someone with write access to an unsigned
    store could (its checksum recomputed)."""
    from sisa.store.manifest import write

    m = dict(Store.open(store, check_files=False).manifest.flat())
    m["pending"] = pending
    write(Store(str(store), m).loc, m, None)


@pytest.mark.parametrize("pending", [
    {"kind": "delete"}, {"kind": "fit", "rows_processed": "0"}, {"kind": "fit", "x": 1},
    {"kind": "forget", "request": [SECRET]}, [SECRET], {"kind": "fit", "rows_processed": 2**64},
], ids=["bad-kind", "rows-a-string", "extra-key", "request-not-an-object", "a-list",
        "rows-huge"])
def test_a_forged_journal_stops_repair_and_status_with_one_line_changing_nothing(
        tmp_path, keyless, pending):
    store = copy("store-v4-interrupted", tmp_path)
    (store / INTENT).unlink()
    _forge_journal(store, pending)
    before = tree_digest(store)
    for argv in (("repair", str(store), "--backend", "local"), ("status", str(store))):
        code, _, err = run_cli(*argv, "--quiet")
        line = err.strip()
        assert code == 1 and "\n" not in line and "journal (pending)" in line, err
        assert SECRET not in line
        assert tree_digest(store) == before


@pytest.mark.parametrize("edit", [
    lambda i: [SECRET], lambda i: {**i, "evil": SECRET},
    lambda i: {**i, "request": {**i["request"], "n_ids": SECRET}},
    lambda i: {**i, "request": {**i["request"], "n_ids": 2**80}},
    lambda i: {**i, "ids": [[SECRET]]},
    lambda i: {k: v for k, v in i.items() if k != "ids"},
], ids=["a-list", "extra-key", "n_ids-a-string", "n_ids-huge", "ids-nested", "ids-missing"])
def test_a_forged_intent_stops_repair_and_forget_with_one_line_changing_nothing(
        tmp_path, keyless, edit):
    store = copy("store-v4-interrupted", tmp_path)
    intent = json.loads((store / INTENT).read_bytes())
    (store / INTENT).write_text(json.dumps(edit(intent)))
    before = tree_digest(store)
    for argv in (("repair", str(store)), ("forget", str(store), "--id", "3")):
        code, _, err = run_cli(*argv, "--backend", "local", "--quiet")
        line = err.strip()
        assert code == 1 and "\n" not in line and "audit/intent.json" in line, err
        assert "move it out" in line and SECRET not in line
        assert tree_digest(store) == before


def test_a_malformed_committed_receipt_fails_verify_naming_its_field(tmp_path, keyless):
    store = copy("store-v4-interrupted", tmp_path)
    (store / INTENT).unlink()
    m = dict(Store.open(store, check_files=False).manifest.flat())
    m["last_receipt"] = {**m["last_receipt"], "seq": SECRET}
    from sisa.store.manifest import write

    write(Store(str(store), m).loc, m, None)
    before = tree_digest(store)
    code, _, err = run_cli("verify", str(store), "--backend", "local", "--quiet")
    line = err.strip()
    assert code == 1 and "\n" not in line and SECRET not in line, err
    assert "last receipt" in line and "'seq'" in line, line
    assert tree_digest(store) == before


def test_the_forged_cases_differ_from_a_valid_record_in_one_field_only():
    """The receipts the forged cases edit are valid as they stand (so each case tests the
    one field it edits)."""
    assert Receipt.from_json(_RCPT).to_json() == _RCPT
    assert SealedReceipt.from_json(_SEALED).to_json() == _SEALED
    assert ForgetRequest.from_json(_REQ).to_json() == _REQ
