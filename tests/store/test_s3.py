"""The store on S3 (a moto server on 127.0.0.1): URI options, ingest, delete, exact
forget, crash leftovers and ``repair``, and the object-store lock.

Training here uses the in-process backend: the session's embedded Ray may have been
started before this module set the S3 environment, and its workers would not see it.
Ray workers against S3 are covered by ``test_cluster.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier

from sisa import IngestOptions, SISAClassifier, Store
from sisa.errors import StaleModelError, StoreError, StoreLockedError
from sisa.store.io import lock as slock
from sisa.store.io import uris as suris
from sisa.store.manifest import write as _write_manifest
from sisa.store.manifest.codec import split as _split_manifest
from sisa.unlearn import history, repair, verify
from tests.helpers import LOCAL, make_classification

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

BUCKET = "sisa-s3-tests"
S3_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
               "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED")


@contextlib.contextmanager
def moto_s3(*buckets: str) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 (free port) with ``buckets`` created.

    Yields the environment a client needs (endpoint, dummy credentials, region; the
    instance-metadata lookup disabled so nothing reaches for the network).
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"],
                              region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        for b in buckets:
            client.create_bucket(Bucket=b)
        yield env
    finally:
        server.stop()


def s3_keys(env: dict[str, str], bucket: str, prefix: str) -> dict[str, int]:
    """Every object under ``prefix`` (key -> size), directory markers left out."""
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    out: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                out[obj["Key"][len(prefix):].lstrip("/")] = obj["Size"]
    return out


@pytest.fixture(scope="module")
def s3env() -> Iterator[dict[str, str]]:
    with moto_s3(BUCKET) as env, pytest.MonkeyPatch.context() as mp:
        for k in S3_ENV_KEYS:
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        yield env
    for uri in [u for u in suris._RESOLVED if u.startswith("s3://")]:
        del suris._RESOLVED[uri]


@pytest.fixture
def uri(s3env, request) -> str:
    """A fresh prefix in the test bucket."""
    return f"s3://{BUCKET}/{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def fast_lock(monkeypatch):
    """Settle 50 ms instead of 500 ms: one writer at a time here, and moto answers fast."""
    monkeypatch.setattr(slock.ObjectLock, "settle", 0.05)


def fit(X, y, store: str, ids=None, **kw) -> SISAClassifier:
    params = {"n_shards": 3, "n_slices": 2, "backend": "local", **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SISAClassifier(SGDClassifier(loss="log_loss"), store=store, **params).fit(
            X, y, sample_ids=ids)


def ckpts(model) -> dict[str, str]:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


def prefix_of(uri: str) -> str:
    return uri.split("/", 3)[3].split("?")[0]


# ---------------------------------------------------------------------- URI options
def test_s3_uri_options_env_and_query(monkeypatch):
    for k in S3_ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    kw, path = suris._s3_options("s3://bkt/a/b/")
    assert path == "bkt/a/b"
    assert kw == {"allow_delayed_open": True, "endpoint_override": "127.0.0.1:9000",
                  "scheme": "http", "region": "eu-west-1"}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.internal:9443")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    kw, _ = suris._s3_options("s3://bkt/p")
    assert (kw["endpoint_override"], kw["scheme"], kw["region"]) == (
        "minio.internal:9443", "https", "us-west-2")
    # explicit query parameters win and are typed
    kw, path = suris._s3_options("s3://bkt/p?endpoint_override=10.0.0.5:80&scheme=http"
                               "&region=ap-south-1&request_timeout=7.5&force_virtual_addressing"
                               "=true&allow_delayed_open=false")
    assert path == "bkt/p"
    assert kw == {"allow_delayed_open": False, "endpoint_override": "10.0.0.5:80",
                  "scheme": "http", "region": "ap-south-1", "request_timeout": 7.5,
                  "force_virtual_addressing": True}
    with pytest.raises(StoreError, match="unknown S3 option 'endpoint'"):
        suris._s3_options("s3://bkt/p?endpoint=x")
    with pytest.raises(StoreError, match="environment"):
        suris._s3_options("s3://bkt/p?secret_key=x")
    with pytest.raises(StoreError, match="credentials"):
        suris._s3_options("s3://AKIA:secret@bkt/p")
    with pytest.raises(StoreError, match="true or false"):
        suris._s3_options("s3://bkt/p?anonymous=maybe")


# ---------------------------------------------------------------------- store on S3
def test_ingest_read_delete_on_s3_leaves_exactly_the_manifest_files(s3env, uri):
    X, y = make_classification(900, 4)
    st = Store.create(uri, X, y, options=IngestOptions(n_shards=3, n_slices=2))
    assert not st.loc.is_local and st.n_rows == 900
    part = st.rows.read_slice(1, 1)
    assert np.array_equal(part.X, X[part.ids]) and np.array_equal(part.y, y[part.ids])

    def live() -> set[str]:  # the unsigned store's audit key is the one file beside them
        return set(st.referenced_files()) | {"manifest.json", st.manifest.audit_files()["key"]}

    assert set(s3_keys(s3env, BUCKET, prefix_of(uri))) == live()
    res = st.delete([0, 1, 2, 500])
    assert res.deleted == 4 and st.n_rows == 896
    # old slice/index files are gone, the lock object too: nothing else is left behind
    assert set(s3_keys(s3env, BUCKET, prefix_of(uri))) == live()
    # the same store through explicit query options (a second FileSystem instance)
    host = s3env["AWS_ENDPOINT_URL"].split("://")[1]
    again = Store.open(f"{uri}?endpoint_override={host}&scheme=http&region=us-east-1")
    assert again.fingerprint == st.fingerprint
    again.check_files(hashes=True)
    # overwrite=True replaces the store in place
    st2 = Store.create(uri, X[:300], y[:300], options=IngestOptions(n_shards=2, n_slices=2),
                       overwrite=True)
    assert Store.open(uri).n_rows == 300
    assert set(s3_keys(s3env, BUCKET, prefix_of(uri))) == (  # the old store's files are gone
        set(st2.referenced_files()) | {"manifest.json", st2.manifest.audit_files()["key"]})


def test_check_files_on_s3_names_a_missing_or_resized_object(s3env, uri):
    X, y = make_classification(300, 3)
    st = Store.create(uri, X, y, options=IngestOptions(n_shards=2, n_slices=2))
    rel = st.manifest.slices["1/0"].file
    st.loc.write_atomic(rel, b"short")
    with pytest.raises(StoreError, match="has 5 bytes"):
        Store.open(uri)
    st.loc.delete(rel)
    with pytest.raises(StoreError, match="missing file"):
        Store.open(uri)


def test_fit_forget_verify_repair_load_on_s3_is_byte_identical_to_local(s3env, uri, tmp_path):
    X, y = make_classification(1200, 5)
    U = [5, 77, 640, 1100]
    model = fit(X, y, uri)
    receipt = model.forget(U)
    keep = np.setdiff1d(np.arange(1200), U)
    fresh = fit(X[keep], y[keep], str(tmp_path / "local"), ids=keep)
    assert ckpts(model) == ckpts(fresh)  # S3 and local stores give the same bytes
    report = verify(model.store_, settings=LOCAL)
    assert report.ok, report.table()
    assert repair(Store.open(uri), settings=LOCAL)["removed_files"] == []
    loaded = SISAClassifier.load(uri)
    assert np.array_equal(loaded.predict_proba(X), fresh.predict_proba(X))
    assert [r["request_id"] for r in history(loaded.store_)] == [receipt["request_id"]]
    assert ".lock" not in s3_keys(s3env, BUCKET, prefix_of(uri))


CRASH_SCRIPT = """
import sys
from sisa import Store
from sisa.engine import ExecutionSettings
from sisa.unlearn import forget
forget(Store.open(sys.argv[1]), [int(v) for v in sys.argv[2].split(",")],
       settings=ExecutionSettings(backend="local"))
"""


@pytest.mark.parametrize("point", ["delete:after-slices", "train:after-shards"])
def test_kill_9_on_s3_leaves_only_unreferenced_files_and_repair_heals(s3env, uri, tmp_path,
                                                                      point):
    X, y = make_classification(900, 4)
    U = [3, 400, 777]
    model = fit(X, y, uri)
    before = model.store_.fingerprint
    env = {**os.environ, "SISA_CRASH_AT": point, "SISA_CRASH_MODE": "kill"}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, uri, ",".join(map(str, U))],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    # the killed writer left its lock object behind; its pid is dead on this host
    lock = json.loads(Store.open(uri, check_files=False).loc.read_bytes(".lock").to_pybytes())
    assert lock["host"] and lock["pid"] != os.getpid()
    store = Store.open(uri)  # every file the manifest names is there
    leftovers = store.unreferenced_files()
    if point == "delete:after-slices":  # before the commit: old state plus new files
        assert store.fingerprint == before and leftovers
    with pytest.raises(StaleModelError, match="sisa repair"):
        SISAClassifier.load(uri)
    repair(store, settings=LOCAL)  # redoes or finishes the forget, collects the rest
    assert not Store.open(uri).unreferenced_files()
    keep = np.setdiff1d(np.arange(900), U)
    fresh = fit(X[keep], y[keep], str(tmp_path / "fresh"), ids=keep)
    healed = SISAClassifier.load(uri)
    assert ckpts(healed) == ckpts(fresh)
    report = verify(healed.store_, settings=LOCAL)
    assert report.ok, report.table()
    assert set(s3_keys(s3env, BUCKET, prefix_of(uri))) == (
        set(healed.store_.referenced_files()) | {"manifest.json"}
        | set(healed.store_.manifest.audit_files().values()))


def test_raised_crash_before_commit_on_s3_keeps_the_old_state(s3env, uri, monkeypatch):
    X, y = make_classification(600, 3)
    st = Store.create(uri, X, y, options=IngestOptions(n_shards=2, n_slices=2))
    before = st.fingerprint
    monkeypatch.setenv("SISA_CRASH_AT", "delete:before-commit")
    with pytest.raises(RuntimeError, match="injected crash"):
        st.delete([1, 2, 3])
    monkeypatch.delenv("SISA_CRASH_AT")
    fresh = Store.open(uri)
    assert fresh.fingerprint == before and fresh.n_rows == 600
    assert fresh.unreferenced_files()  # new slices, index, tombstones: not committed
    assert ".lock" not in s3_keys(s3env, BUCKET, prefix_of(uri))
    with fresh.lock():
        removed = fresh.collect_garbage()
    assert removed and not Store.open(uri).unreferenced_files()


def test_reading_the_manifest_while_it_is_replaced_never_sees_a_torn_copy(s3env, uri):
    """Workers open the store while the driver commits shard after shard. pyarrow sizes
    an S3 object with HEAD and then GETs that many bytes, so a raw read racing a replace
    can return the new object's start cut to the old length (seen with moto: about a
    quarter of raw reads). The manifest's checksum catches it and sisa reads again."""
    X, y = make_classification(300, 3)
    st = Store.create(uri, X, y, options=IngestOptions(n_shards=2, n_slices=2))
    stop = threading.Event()

    def commit_again_and_again() -> None:
        # a commit every ~10 ms: far more often than a driver commits shard results, yet
        # with the gaps between commits that real writers leave and re-reads rely on
        i = 0
        while not stop.is_set():
            i += 1
            _write_manifest(st.loc, st.manifest.with_holdout({"pad": "x" * (i % 97)}), None)
            time.sleep(0.01)

    writer = threading.Thread(target=commit_again_and_again, daemon=True)
    writer.start()
    torn = opened = 0
    try:
        # count-based, not timed: enough opens to meet torn reads, however slow the machine
        deadline = time.monotonic() + 60.0
        while (opened < 30 or not torn) and time.monotonic() < deadline:
            raw = st.loc.read_bytes("manifest.json").to_pybytes()
            torn += _split_manifest(raw) is None
            assert Store.open(uri, check_files=False).fingerprint == st.fingerprint
            opened += 1
    finally:
        stop.set()
        writer.join(timeout=10)
    assert opened >= 30
    print(f"\n{opened} opens, {torn} torn raw reads")


# ---------------------------------------------------------------------- locking
def test_object_lock_excludes_a_second_writer_and_names_the_holder(s3env, uri):
    X, y = make_classification(300, 3)
    Store.create(uri, X, y, options=IngestOptions(n_shards=2, n_slices=2))
    a, b = Store.open(uri), Store.open(uri)
    with a.lock():
        with a.lock():  # re-entrant
            pass
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"), b.lock():
            pass
    with b.lock():  # released: the next writer gets it
        b.delete([7])
    assert ".lock" not in s3_keys(s3env, BUCKET, prefix_of(uri))


def test_object_lock_stale_and_dead_holders_are_taken_over(s3env, uri, monkeypatch):
    X, y = make_classification(300, 3)
    st = Store.create(uri, X, y, options=IngestOptions(n_shards=2, n_slices=2))
    # a fresh lock of a live process on another host: refused
    other = {"token": "x" * 32, "pid": 1, "host": "elsewhere", "since": "t", "t": time.time()}
    st.loc.write_atomic(".lock", json.dumps(other).encode())
    with pytest.raises(StoreLockedError, match="host elsewhere"), st.lock():
        pass
    # the same lock once older than the TTL: taken over
    monkeypatch.setattr(slock.ObjectLock, "ttl", 0.5)
    time.sleep(0.6)
    with st.lock():
        st.delete([1])
    # a holder on this host whose pid is gone: taken over at once
    monkeypatch.setattr(slock.ObjectLock, "ttl", 300.0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # same host name but another pid namespace (a sibling container): its pid means
    # nothing here, so only the TTL can free it
    sibling = {**other, "pid": int(dead), "host": slock.socket.gethostname(), "ns": "other"}
    st.loc.write_atomic(".lock", json.dumps(sibling).encode())
    with pytest.raises(StoreLockedError, match="locked by"), st.lock():
        pass
    mine = {**sibling, "ns": slock._pid_namespace()}
    st.loc.write_atomic(".lock", json.dumps(mine).encode())
    with st.lock():
        st.delete([2])
    assert st.n_rows == 298


def test_a_writer_whose_lock_was_taken_over_commits_nothing(s3env, uri):
    X, y = make_classification(300, 3)
    st = Store.create(uri, X, y, options=IngestOptions(n_shards=2, n_slices=2))
    before = st.fingerprint
    with pytest.raises(StoreLockedError, match="lost its lock"), st.lock():
        thief = {"token": "t" * 32, "pid": 1, "host": "elsewhere", "since": "t",
                 "t": time.time()}
        st.loc.write_atomic(".lock", json.dumps(thief).encode())
        st.delete([1, 2])
    assert Store.open(uri).fingerprint == before
    # release left the other writer's lock alone
    assert json.loads(st.loc.read_bytes(".lock").to_pybytes())["host"] == "elsewhere"


def test_object_lock_race_and_heartbeat(s3env, uri, monkeypatch):
    X, y = make_classification(300, 3)
    st = Store.create(uri, X, y, options=IngestOptions(n_shards=2, n_slices=2))
    monkeypatch.setattr(slock.ObjectLock, "settle", 0.3)
    monkeypatch.setattr(slock.ObjectLock, "heartbeat", 0.2)
    # another writer's PUT lands while we settle: it wins, we refuse
    def rival_puts(seconds: float) -> None:
        st.loc.write_atomic(".lock", json.dumps({"token": "r" * 32, "pid": 1, "host": "h",
                                                 "since": "s", "t": time.time()}).encode())
        time.sleep(seconds)

    with monkeypatch.context() as mp:
        mp.setattr(slock, "time", SimpleNamespace(time=time.time, sleep=rival_puts,
                                                strftime=time.strftime,
                                                localtime=time.localtime))
        with pytest.raises(StoreLockedError, match="at the same moment"), st.lock():
            pass
    st.loc.delete(".lock")
    # while held, the heartbeat keeps rewriting the lock's timestamp
    with st.lock():
        t1 = json.loads(st.loc.read_bytes(".lock").to_pybytes())["t"]
        deadline = time.monotonic() + 5
        t2 = t1
        while t2 == t1 and time.monotonic() < deadline:
            time.sleep(0.1)
            t2 = json.loads(st.loc.read_bytes(".lock").to_pybytes())["t"]
        assert t2 > t1
    assert not st.loc.exists(".lock")
