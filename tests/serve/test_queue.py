"""`sisa serve` hardening (issue 22, items 3, 4, 6, 8): the queue is authenticated, the
erase answer is no membership oracle, a retried request gets its own receipt, and the
command-line client reads the server's token file. Real servers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from pathlib import Path

import httpx
import pytest

from sisa import Store
from sisa.errors import CorruptStoreError, KeyFileError
from sisa.serve import make_server
from sisa.store.format import keys
from sisa.unlearn import history, verify
from tests.helpers import LOCAL, run_cli

from . import test_serve as ts
from .test_serve import BOTH, ERASE, IDS, PRED, ThreadServer, _fit, _queued

# the fixtures of test_serve.py: a fitted base store (3,000 rows), a copy per test, tokens
data, base_store, store, token_file = ts.data, ts.base_store, ts.store, ts.token_file

NEVER = [int(IDS.max()) + 1 + k for k in range(4)]  # ids no row ever had


def _stored(path: Path, ids) -> list[bool]:
    return Store.open(str(path)).rows.locate(Store.open(str(path)).rows.id_array(ids))[0].tolist()


def _listed(path: Path) -> list[str]:
    return [q["request_id"] for r in history(Store.open(str(path)))
            for q in r.get("requests") or ()]


def _refused(path: Path, error=CorruptStoreError) -> str:
    """The one-line reason the service gives for not starting on ``path``."""
    try:
        service, _ = make_server(str(path), port=0, settings=LOCAL)
    except error as exc:
        assert "\n" not in str(exc)
        return str(exc)
    service.stop()
    pytest.fail(f"the service started on {path}")


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """The owner's key file (made here, outside every store)."""
    path = tmp_path_factory.mktemp("key") / "owner.key"
    keys.save(keys.generate(), path)
    return path


@pytest.fixture(scope="module")
def signed_base(tmp_path_factory, data, owner):
    path = tmp_path_factory.mktemp("signed") / "base"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(keys.KEY_ENV, raising=False)
        mp.setenv(keys.KEY_FILE_ENV, str(owner))
        _fit(*data, IDS, path)
    return path


@pytest.fixture
def signed(signed_base, tmp_path, monkeypatch, owner):
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.setenv(keys.KEY_FILE_ENV, str(owner))
    path = tmp_path / "signed"
    shutil.copytree(signed_base, path)
    return path


# ---------------------------------------------------------------- item 3: planted queue files
def test_a_planted_or_edited_queue_file_is_refused_and_nothing_runs(signed, token_file,
                                                                    owner, monkeypatch):
    a, b = int(IDS[10]), int(IDS[11])
    srv = ThreadServer(signed, token_file, batch_window=600)  # stays queued
    try:
        rid = srv.client(ERASE).erase([a])
    finally:
        srv.stop()  # a clean stop runs no batch: the request waits in queue/
    (good,) = _queued(signed)
    qdir = signed / "queue"
    genuine = (qdir / good).read_bytes()
    entry = json.loads(genuine)

    planted = "f" * 32
    forged_key = hmac.new(b"a guessed key", b"x", hashlib.sha256).digest()

    def forged_mac(doc):
        body = json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True,
                          separators=(",", ":")).encode()
        return hmac.new(forged_key, body, hashlib.sha256).hexdigest()

    attacks = {  # (file, content): what someone with write access but no key can do
        "no mac": (planted, {"request_id": planted, "queued_at": "0", "ids": [b]}),
        "guessed key": (planted, {"request_id": planted, "queued_at": "0", "ids": [b],
                                  "mac": forged_mac({"request_id": planted,
                                                     "queued_at": "0", "ids": [b]})}),
        "copied mac": (planted, {**entry, "request_id": planted}),
        "renamed": (planted, entry),
        "ids edited": (rid, {**entry, "ids": [b]}),
        "failed edited": (rid, {"request_id": rid, "queued_at": entry["queued_at"],
                                "failed": "x", "mac": entry.get("mac")}),
        "not json": (rid, "{"),
    }
    for what, (name, doc) in attacks.items():
        text = doc if isinstance(doc, str) else json.dumps(doc)
        (qdir / f"{name}.json").write_text(text)
        why = _refused(signed)
        assert "nothing in the queue was run" in why and f"{name}.json" in why, what
        (qdir / f"{name}.json").unlink()
        (qdir / good).write_bytes(genuine)
    assert entry["ids"] == [a] and len(entry["mac"]) == 64  # what a genuine file holds
    # the command line refuses the same way: one line, exit 1, nothing run
    (qdir / f"{planted}.json").write_text(json.dumps(attacks["no mac"][1]))
    code, _, err = run_cli("serve", str(signed), "--port", "1", "--quiet")
    assert code == 1 and err.count("\n") == 1 and f"{planted}.json" in err
    assert _stored(signed, [a, b]) == [True, True] and history(Store.open(str(signed))) == []

    # the operator moves the planted file out: the genuine request resumes and runs
    (qdir / f"{planted}.json").unlink()
    srv = ThreadServer(signed, token_file, batch_window=0)
    try:
        assert srv.service.recovered["resumed"] == 1
        assert srv.client().wait(rid, timeout=60)["state"] == "done"
    finally:
        srv.stop()
    assert _stored(signed, [a, b]) == [False, True] and _listed(signed) == [rid]
    pub = keys.load(owner).public_hex
    assert verify(Store.open(str(signed)), settings=LOCAL, public_key=pub).ok

    # a signed store's queue needs the owner's key: without it the service does not start
    monkeypatch.delenv(keys.KEY_FILE_ENV)
    monkeypatch.setenv("HOME", str(signed.parent / "home"))
    _refused(signed, KeyFileError)


def test_unsigned_store_refuses_a_queue_file_without_its_mac(store):
    """An unsigned store keeps its audit key inside: the MAC catches accidents and writers
    who do not read that key (docs/design.md §5 says so), and the same refusal holds."""
    (store / "queue").mkdir()
    (store / "queue" / ("a" * 32 + ".json")).write_text(json.dumps(
        {"request_id": "a" * 32, "queued_at": "0", "ids": [int(IDS[0])]}))
    assert "MAC does not check" in _refused(store)
    assert _stored(store, [int(IDS[0])]) == [True]


# ------------------------------------------------------ item 4: no membership oracle in the answer
def test_the_erase_answer_does_not_depend_on_which_ids_exist(store, token_file):
    present, gone = int(IDS[20]), int(IDS[21])
    srv = ThreadServer(store, token_file, batch_window=0)
    try:
        c = srv.client(ERASE)
        assert c.wait(c.erase([gone]), timeout=60)["state"] == "done"  # erased before

        def post(ids):
            return httpx.post(srv.url + "/v1/erasures", json={"ids": ids},
                              headers={"Authorization": f"Bearer {ERASE}"})

        answers, receipts = {}, {}
        for name, ids in {"never": [NEVER[0], NEVER[1]], "gone": [gone, NEVER[2]],
                          "present": [present, NEVER[3]]}.items():
            r = post(ids)  # one at a time: each in a batch of its own
            answers[name] = (r.status_code, sorted(r.json()), r.json()["state"],
                             len(r.content), dict(r.headers).keys() - {"date"})
            st = c.wait(r.json()["request_id"], timeout=60)
            assert st["state"] == "done"
            receipts[name] = st["receipt"]
        # the same answer whether the ids exist, were erased before, or never existed
        assert answers["never"] == answers["gone"] == answers["present"]
        assert answers["never"][0] == 202
        # the receipts: an erased-before id and a never-stored id look alike in every field
        fields = ("n_ids", "already_deleted", "affected", "rows_retrained", "shards_emptied")
        assert [receipts["never"][f] for f in fields] == [receipts["gone"][f] for f in fields]
        assert receipts["gone"]["n_ids"] == 0 and receipts["gone"]["already_deleted"] == 0
        assert receipts["gone"]["fingerprint_before"] == receipts["gone"]["fingerprint_after"]
        assert receipts["present"]["n_ids"] == 1  # the stored one, erased by this batch
        assert [q["n_ids"] for q in receipts["gone"]["requests"]] == [2]  # ids it named
        # a refused id is named by position, never echoed; no server path, no odd text
        for ids, secret in (([present, "zz-secret-zz"], "zz-secret-zz"),
                            ([2**70], str(2**70)), ([present, 7.5], "7.5")):
            r = post(ids)
            assert r.status_code == 422, r.text
            msg = r.json()["error"]
            assert secret not in r.text and "\n" not in msg and "the store the" not in msg
            assert f"#{len(ids)} of {len(ids)}" in msg and str(present) not in r.text
    finally:
        srv.stop()
    assert _stored(store, [present, gone]) == [False, False]
    assert _queued(store) == []
    assert verify(Store.open(str(store)), settings=LOCAL, retrain=False).ok


# ------------------------------------------- item 6: a retried request gets a receipt of its own
def test_a_retried_erasure_ends_in_its_own_receipt_across_restarts(store, token_file):
    a = int(IDS[30])
    srv = ThreadServer(store, token_file, batch_window=0)
    try:
        c = srv.client(ERASE)
        first = c.erase([a])
        r1 = c.wait(first, timeout=60)["receipt"]
        retry = c.erase([a])  # the client lost the first 202 and sends it again
        r2 = c.wait(retry, timeout=60)["receipt"]
    finally:
        srv.stop()
    assert [q["request_id"] for q in r1["requests"]] == [first]
    assert [q["request_id"] for q in r2["requests"]] == [retry]
    assert r2["seq"] == r1["seq"] + 1 and "replayed" not in r2 and r2["n_ids"] == 0
    assert sorted(_listed(store)) == sorted([first, retry])  # each in exactly one receipt
    srv = ThreadServer(store, token_file, batch_window=0)  # the status survives a restart
    try:
        for rid, seq in ((first, r1["seq"]), (retry, r2["seq"])):
            st = srv.client(ERASE).status(rid)
            assert st["state"] == "done" and st["receipt"]["seq"] == seq
            assert rid in [q["request_id"] for q in st["receipt"]["requests"]]
    finally:
        srv.stop()
    assert verify(Store.open(str(store)), settings=LOCAL, retrain=False).ok


# ------------------------------------------------ item 8: `sisa erase --token-file` and its files
def test_sisa_erase_reads_the_servers_token_file(store, token_file, tmp_path):
    srv = ThreadServer(store, token_file, batch_window=0)
    bare = tmp_path / "bare"
    bare.write_text(f"  {BOTH}\n")
    bad = tmp_path / "bad"
    bad.write_text(f"predict {PRED}\n")  # no erase token in it
    try:
        for i, path in ((int(IDS[40]), token_file), (int(IDS[41]), bare)):
            code, _, err = run_cli("erase", "--server", srv.url, "--token-file", str(path),
                                     "--id", str(i), "--wait", "--quiet")
            assert code == 0, err
        code, _, err = run_cli("erase", "--server", srv.url, "--token-file", str(bad),
                               "--id", str(int(IDS[42])))
        assert code == 2 and err.count("\n") == 1 and "'erase' scope" in err
        assert PRED not in err  # the file's secret is not echoed
    finally:
        srv.stop()
    assert _stored(store, [int(IDS[40]), int(IDS[41]), int(IDS[42])]) == [False, False, True]



def test_a_batch_that_crashed_and_was_finished_by_repair_is_done_not_failed(
        store, token_file, monkeypatch):
    """A batch stopped by an unexpected error after its intent was written is failed for
    now; when `repair` (the next start) finishes it, its receipt names the request, and
    the request is `done`, not both failed and in a receipt."""
    a = int(IDS[60])
    monkeypatch.setenv("SISA_CRASH_AT", "forget:after-intent")  # raise, in this process
    srv = ThreadServer(store, token_file, batch_window=0)
    try:
        rid = srv.client(ERASE).erase([a])
        st = srv.client(ERASE).wait(rid, timeout=60)
    finally:
        srv.stop()
    assert st["state"] == "failed" and "InjectedCrash" in st["reason"]
    monkeypatch.delenv("SISA_CRASH_AT")
    srv = ThreadServer(store, token_file, batch_window=0)
    try:
        st = srv.client(ERASE).status(rid)
    finally:
        srv.stop()
    assert st["state"] == "done" and _listed(store) == [rid]
    assert _stored(store, [a]) == [False] and _queued(store) == []


def test_string_store_refuses_a_lone_surrogate_in_one_line(tmp_path, token_file):
    """On a string-id store, an id that is no Unicode text ("\\udfff") is a one-line 400
    that does not repeat it (it was a plain-text 500), and an odd but valid id is accepted
    like any."""
    from sklearn.linear_model import LogisticRegression

    from sisa import SISAClassifier
    from tests.helpers import make_classification

    X, y = make_classification(300, 4, seed=2)
    with pytest.warns(UserWarning, match="no partial_fit"):  # one slice: that is fine here
        SISAClassifier(LogisticRegression(), n_shards=2, n_slices=1, store=str(tmp_path / "s"),
                       backend="local").fit(X, y, sample_ids=[f"u{i}" for i in range(300)])
    srv = ThreadServer(tmp_path / "s", token_file, batch_window=0)
    try:
        # the body parser refuses a lone surrogate before the id boundary sees it: a 400
        # whose fixed sentence never repeats the client's own escape
        for body, status in ((b'{"ids": ["u1", "\\udfff"]}', 400),
                             (b'{"ids": ["\\udfff"]}', 400), (b'{"ids": ["a\\u0000b"]}', 202)):
            r = httpx.post(srv.url + "/v1/erasures", content=body,
                           headers={"Authorization": f"Bearer {ERASE}"})
            assert r.status_code == status, r.text
            if status == 400:
                assert "\n" not in r.text and "udfff" not in r.text.lower()
    finally:
        srv.stop()
