"""Ingest in bounded memory, and on Ray (docs/design.md §2, "Ingest").

The files of a build must not depend on how it ran: the memory budget, the number of
spill runs, slices merged whole or range by range, one process or Ray tasks on one or two
nodes. Each test compares sha256s with a reference that builds every slice and the index
all in memory, as sisa did before ingest was bounded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from sisa import IngestOptions, SISAClassifier, Store
from sisa.engine import ExecutionSettings
from sisa.errors import InputError
from sisa.store.format.assign import AssignmentConfig, assign, group_hash
from sisa.store.format.index import bucketed, id_buckets, n_index_buckets
from sisa.store.format.layout import FEATURES, GROUP, ID, LABEL, ipc_bytes, slice_schema
from sisa.store.format.streamed_ipc import StreamedFile
from sisa.store.write import builder, ingest, merge, parallel_ingest
from sisa.unlearn import repair

ROOT = Path(__file__).resolve().parents[2]
RAY = ExecutionSettings(backend="ray")
FEATS = [f"f{i}" for i in range(5)]


def table(n: int, seed: int = 0, d: int = 5) -> pa.Table:
    """Features, int/string/float labels, int/string ids, a group and a probability."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return pa.table({
        **{f"f{i}": X[:, i] for i in range(d)},
        "label": rng.integers(0, 3, n), "flabel": rng.normal(size=n),
        "slabel": pa.array(np.array(["cat", "dog", "ému"])[rng.integers(0, 3, n)]),
        "uid": rng.permutation(3 * n)[:n].astype(np.int64),
        "sid": pa.array([f"user-{i}" + "x" * (i % 5) for i in rng.permutation(n)]),
        "grp": rng.integers(0, max(n // 20, 2), n), "p": rng.random(n)})


def numeric(t: pa.Table) -> pa.Table:
    return t.drop_columns(["slabel", "sid"])


def parquet(tmp_path: Path, t: pa.Table, name: str = "d.parquet", rg: int = 4000) -> Path:
    path = tmp_path / name
    pq.write_table(t, path, row_group_size=rg)
    return path


def digest(st: Store) -> dict:
    """What must not depend on how the store was built."""
    m = st.manifest
    return {"slices": {k: (v.sha256, v.rows, v.labels) for k, v in m.slices.items()},
            "index": [p.sha256 for p in m.index_parts], "schema": m.schema,
            "fingerprint": m.fingerprint}


def reference(data, S: int, R: int, seed: int = 0, **kw) -> dict:
    """Slice and index sha256s the way sisa built them before: all rows in memory, each
    slice sorted by (order hash, id), the index sorted by id and split into buckets."""
    src = ingest.from_table(data, kw.pop("label"), **kw)
    batches = list(src.batches)
    ids = (pa.array(np.arange(sum(len(b.y) for b in batches)))
           if batches[0].ids is None else pa.chunked_array([b.ids for b in batches])
           .combine_chunks())

    def cat(f: str):
        return None if getattr(batches[0], f) is None else np.concatenate(
            [getattr(b, f) for b in batches])

    hot = 2 if kw.get("deletion_prob_column") else 0
    shard, sl, order = assign(AssignmentConfig(S, R, seed, hot), ids.to_numpy(False),
                              cat("groups"), cat("deletion_prob"))
    X = np.concatenate([b.X for b in batches])
    cols = {ID: ids, LABEL: pa.array(cat("y")).cast(src.label_type),
            FEATURES: pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])}
    info = {"feature_names": src.feature_names, "label_type": str(src.label_type),
            "dtype": str(src.dtype), "id_type": src.id_type}
    if cat("groups") is not None:  # each row's keyed group hash (sisa.store.write.groups)
        cols[GROUP] = group_hash(AssignmentConfig(S, R, seed, hot), cat("groups"))
        info["group_type"] = src.group_type
    t = pa.table({**cols, "__order": order})
    sha = lambda buf: hashlib.sha256(memoryview(buf)).hexdigest()  # noqa: E731
    slices = {}
    for s in range(S):
        for r in range(R):
            part = t.filter(pa.array((shard == s) & (sl == r)))
            part = part.sort_by([("__order", "ascending"), (ID, "ascending")])
            slices[f"{s}/{r}"] = sha(ipc_bytes(part.drop_columns(["__order"])
                                               .cast(slice_schema(info))))
    index = pa.table({ID: ids, "shard": shard, "slice": sl}).sort_by(ID)
    return {"slices": slices, "index": [sha(ipc_bytes(p)) for p in
                                        bucketed(index, n_index_buckets(len(ids)))]}


def same_as_reference(st: Store, ref: dict) -> None:
    got = digest(st)
    assert {k: v[0] for k, v in got["slices"].items()} == ref["slices"]
    assert got["index"] == ref["index"]


OPTIONS = {  # name -> ingest options (all through the same Parquet file)
    "row-numbers": {},
    "int-ids": {"id_column": "uid"},
    "str-ids-str-labels": {"id_column": "sid", "label": "slabel"},
    "groups-float64": {"group_column": "grp", "dtype": np.float64},
    "hot-shards": {"deletion_prob_column": "p", "label": "flabel"},
}


# ----------------------------------------------------------------------- in one process
@pytest.mark.parametrize("name", list(OPTIONS))
def test_serial_ingest_writes_the_all_in_memory_files_whatever_the_budget(tmp_path, name):
    n = 70_000  # two index buckets
    src = parquet(tmp_path, table(n))
    kw = {"label": "label", **OPTIONS[name]}
    ref = reference(src, 3, 2, 5, feature_columns=FEATS, **kw)
    hot = {"hot_shards": 2} if "deletion_prob_column" in kw else {}
    options = IngestOptions(n_shards=3, n_slices=2, random_state=5, feature_columns=FEATS,
                            **hot, **kw)
    roomy = Store.create(tmp_path / "a", src, options=options)
    tight = Store.create(tmp_path / "b", src, options=options.replace(
        memory_budget_mb=1, batch_rows=3000))  # a run every ~3k rows
    same_as_reference(roomy, ref)
    assert digest(tight) == digest(roomy)
    assert roomy.n_rows == n and not list((tmp_path / "a" / ".tmp").iterdir())


def test_large_slices_are_merged_range_by_range_into_the_same_bytes(tmp_path, monkeypatch):
    src = parquet(tmp_path, table(20_000))
    streamed = []
    real = merge._stream
    monkeypatch.setattr(merge, "_stream", lambda *a: streamed.append(a[1]) or real(*a))
    monkeypatch.setattr(builder, "CHUNK_MIN", 0)  # budget/4 = 256 kB: every slice streams
    for kw in ({"label": "label"}, {"id_column": "sid", "label": "slabel"}):
        st = Store.create(tmp_path / f"s{len(streamed)}", src, options=IngestOptions(
            n_shards=2, n_slices=3, feature_columns=FEATS, memory_budget_mb=1, **kw))
        same_as_reference(st, reference(src, 2, 3, feature_columns=FEATS, **kw))
    assert len(streamed) == 12


@pytest.mark.parametrize("id_type", ["int", "str"])
@pytest.mark.parametrize("label_type", [pa.int64(), pa.float64(), pa.string()])
def test_a_streamed_ipc_file_is_ipc_bytes_of_the_whole_table(tmp_path, id_type, label_type):
    rng = np.random.default_rng(1)
    n = 5000
    ids = (pa.array(rng.integers(-2**40, 2**40, n)) if id_type == "int"
           else pa.array(["é" * (i % 4) + str(i) for i in range(n)]))
    labels = pa.array(rng.integers(0, 9, n)).cast(label_type)
    feats = pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=3 * n)), 3)
    t = pa.table({ID: ids, LABEL: labels, FEATURES: feats})
    text = {i: t.column(i).combine_chunks().buffers()[2].size for i in (0, 1)
            if pa.types.is_string(t.schema.field(i).type)}
    w = StreamedFile(str(tmp_path / "f"), t.schema, n, text)
    cuts = [0, 1, 17, 2000, 2000, 4999, n]
    for a, b in itertools.pairwise(cuts):
        w.write(t.slice(a, b - a))
    sha, size = w.close()
    want = ipc_bytes(t)
    assert (tmp_path / "f").read_bytes() == want.to_pybytes()
    assert (sha, size) == (hashlib.sha256(want).hexdigest(), want.size)


def test_duplicates_in_several_index_buckets_are_reported_as_one_error(tmp_path):
    t = table(70_000)
    uid = t.column("uid").to_numpy().copy()
    bucket = id_buckets(pa.array(uid), n_index_buckets(70_000))
    in_bucket = [40_000 + np.flatnonzero(bucket[40_000:] == b) for b in (0, 1)]
    copied = [int(in_bucket[0][0]), int(in_bucket[1][0]), int(in_bucket[0][1])]
    uid[[10, 20, 30]] = uid[copied]  # duplicates in both buckets: one error for all
    src = parquet(tmp_path, t.set_column(t.schema.get_field_index("uid"), "uid", pa.array(uid)))
    want = sorted(uid[[10, 20, 30]].tolist())
    assert len(set(id_buckets(pa.array(want), n_index_buckets(70_000)).tolist())) == 2
    with pytest.raises(InputError, match=rf"^3 duplicate sample id\(s\), e\.g\. "
                                         rf"\[{want[0]}, {want[1]}, {want[2]}\]: sample ids "):
        Store.create(tmp_path / "s", src,
                     options=IngestOptions(label="label", id_column="uid", n_shards=2, n_slices=2,
                                           memory_budget_mb=1, feature_columns=FEATS))
    assert not (tmp_path / "s").exists()  # nothing left behind


PEAK = """
import json, resource, sys
from sisa import IngestOptions, Store
Store.create(sys.argv[2], sys.argv[1], options=IngestOptions(label="label", n_shards=4,
                                                             n_slices=4, memory_budget_mb=16))
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_rows(tmp_path):
    """400k and 1.6M rows x 20 float32 under a 16 MB budget: the same peak (imports
    included, ~340 MB). Before, it grew with the rows: 366 MB and 657 MB."""
    peaks = []
    for n in (400_000, 1_600_000):
        rng = np.random.default_rng(0)
        src = tmp_path / f"{n}.parquet"
        with pq.ParquetWriter(src, pa.schema([(f"f{i}", pa.float32()) for i in range(20)]
                                             + [("label", pa.int64())])) as w:
            for _ in range(n // 100_000):
                X = rng.normal(size=(100_000, 20)).astype(np.float32)
                w.write_table(pa.table({**{f"f{i}": X[:, i] for i in range(20)},
                                        "label": (X[:, 0] > 0).astype(np.int64)}))
        out = subprocess.run([sys.executable, "-c", PEAK, str(src), str(tmp_path / f"s{n}")],
                             capture_output=True, text=True, check=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        peaks.append(json.loads(out.stdout))
    assert peaks[1] - peaks[0] < 25, peaks


CRASHER = """
import sys
from sisa import IngestOptions, Store
Store.create(sys.argv[2], sys.argv[1], options=IngestOptions(label="label", n_shards=3,
                                                             n_slices=2, memory_budget_mb=1),
             overwrite=True)
"""


@pytest.mark.parametrize("at", ["ingest:after-spill", "ingest:after-index",
                                "ingest:after-slices", "random"])
def test_kill_9_during_ingest_keeps_the_old_store_and_the_next_writer_clears_debris(
        tmp_path, at):
    store = tmp_path / "s"
    old = Store.create(store, parquet(tmp_path, numeric(table(3000, seed=1)), "old.parquet"),
                       options=IngestOptions(label="label", n_shards=3, n_slices=2))
    before = digest(old)
    src = parquet(tmp_path, numeric(table(60_000, seed=2)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if at != "random":
        env.update(SISA_CRASH_AT=at, SISA_CRASH_MODE="kill")
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(src), str(store)], env=env,
                            cwd=ROOT)
    if at == "random":  # once the build is under way: its lock is taken
        deadline = time.monotonic() + 60
        while proc.poll() is None and not any((store / ".tmp").glob("ingest-*")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(float(np.random.default_rng(3).uniform(0, 0.5)))
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    reopened = Store.open(store)
    reopened.check_files(hashes=True)
    assert digest(reopened) == before  # the old store, as it was
    if at == "random":  # the next writer: the same build again, or a repair
        Store.create(store, src, options=IngestOptions(label="label", n_shards=3, n_slices=2),
                     overwrite=True)
    else:
        repair(reopened, settings=ExecutionSettings(backend="local"))
        assert digest(Store.open(store)) == before
    assert not Store.open(store).unreferenced_files()
    assert not list((store / ".tmp").iterdir())


# ------------------------------------------------------------------------------- on Ray
@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(parallel_ingest, "PART_ROWS", 9_000)  # several parts per file


@pytest.mark.parametrize("name", [*OPTIONS, "directory"])
def test_parallel_ingest_on_ray_writes_the_serial_files(ray_session, tmp_path, small_parts,
                                                        name):
    t = table(70_000, seed=4)
    if name == "directory":
        (tmp_path / "dir").mkdir()
        for k, a in enumerate((0, 25_000, 52_000)):
            parquet(tmp_path / "dir", t.slice(a, 27_000 if k < 2 else None), f"{k}.parquet")
        src, kw = tmp_path / "dir", {"label": "label"}
    else:
        src, kw = parquet(tmp_path, t), {"label": "label", **OPTIONS[name]}
    hot = {"hot_shards": 2} if "deletion_prob_column" in kw else {}
    options = IngestOptions(n_shards=3, n_slices=2, random_state=5, feature_columns=FEATS,
                            **hot, **kw)
    serial = Store.create(tmp_path / "serial", src, options=options)
    par = Store.create(tmp_path / "par", src, options=options, settings=RAY)
    assert parallel_ingest.LAST_RUN["parts"] >= 8
    assert digest(par) == digest(serial)
    assert par.manifest.store_id != serial.manifest.store_id
    assert not par.unreferenced_files() and not list((tmp_path / "par" / ".tmp").iterdir())


def test_parallel_ingest_refuses_what_it_cannot_split_and_auto_falls_back(ray_session,
                                                                          tmp_path):
    t = numeric(table(2000))
    pacsv.write_csv(t, tmp_path / "d.csv")
    X, y = np.ones((100, 2)), np.arange(100) % 2
    with pytest.raises(InputError, match=r"^parallel ingest \(backend='ray'\) reads Parquet or "
                                         r"Arrow files, and .*d\.csv is CSV .*: write it to "
                                         r"Parquet first, or pass backend='auto'"):
        Store.create(tmp_path / "a", tmp_path / "d.csv",
                     options=IngestOptions(label="label", n_shards=2, n_slices=2), settings=RAY)
    with pytest.raises(InputError, match="the input is in memory"):
        Store.create(tmp_path / "b", X, y, options=IngestOptions(n_shards=2, n_slices=2),
                     settings=RAY)
    auto = ExecutionSettings(backend="auto")
    assert Store.create(tmp_path / "c", tmp_path / "d.csv",
                        options=IngestOptions(label="label", n_shards=2, n_slices=2),
                        settings=auto).n_rows == 2000
    assert Store.create(tmp_path / "d", X, y, options=IngestOptions(n_shards=2, n_slices=2),
                        settings=auto).n_rows
    assert parallel_ingest.choose(ingest.from_table(parquet(tmp_path, t), "label"), auto,
                                  1000) is None  # Ray is up, but 2000 rows stay here


def test_parallel_ingest_reports_the_first_bad_row_and_duplicates_as_serial(ray_session,
                                                                           tmp_path,
                                                                           small_parts):
    t = numeric(table(40_000))
    f1 = t.column("f1").to_numpy().copy()
    f1[[31_000, 12_345]] = np.nan  # in two parts; the first in file order is reported
    bad = parquet(tmp_path, t.set_column(1, "f1", pa.array(f1)), "nan.parquet")
    uid = t.column("uid").to_numpy().copy()
    uid[[5, 39_000]] = uid[[20_000, 100]]
    dup = parquet(tmp_path, t.set_column(t.schema.get_field_index("uid"), "uid",
                                         pa.array(uid)), "dup.parquet")
    for src, kw in ((bad, {}), (dup, {"id_column": "uid"})):
        errors = []
        for settings in (None, RAY):
            with pytest.raises(InputError) as exc:
                Store.create(tmp_path / "s", src, options=IngestOptions(
                    label="label", n_shards=2, n_slices=2, **kw), settings=settings)
            errors.append(str(exc.value))
            assert not (tmp_path / "s").exists()
        assert errors[0] == errors[1], errors
    assert "first at row 12345" in errors[0] or "duplicate" in errors[0]


def test_sisaclassifier_fit_on_a_file_uses_parallel_ingest_on_ray(ray_session, tmp_path,
                                                                  small_parts, monkeypatch):
    from sklearn.linear_model import SGDClassifier

    monkeypatch.setattr(parallel_ingest, "PARALLEL_MIN_ROWS", 0)
    src = parquet(tmp_path, numeric(table(30_000)))
    fits = {}
    for backend in ("local", "ray"):
        parallel_ingest.LAST_RUN.clear()
        est = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=2,
                             n_slices=2, backend=backend, store=str(tmp_path / backend))
        est.fit(src, "label")
        fits[backend] = (digest(est.store_), dict(parallel_ingest.LAST_RUN))
    assert fits["ray"][0] == fits["local"][0]
    assert not fits["local"][1] and fits["ray"][1]["parts"] >= 3


# ------------------------------------------------------------- on a two-node Ray cluster
from tests.tasks.test_cluster import BUCKET, cluster, linux_only  # noqa: E402,F401  (the fixture)

DRIVER = """
import json, sys
from sisa import IngestOptions, Store
from sisa.engine import ExecutionSettings
from sisa.store.write import parallel_ingest
parallel_ingest.PART_ROWS = 5_000
st = Store.create(sys.argv[2], sys.argv[1], options=IngestOptions(
    label="slabel", id_column="sid", n_shards=3, n_slices=2),
    settings=ExecutionSettings(backend="ray"))
m = st.manifest
print(json.dumps({"slices": {k: v.sha256 for k, v in m.slices.items()},
                  "index": [p.sha256 for p in m.index_parts],
                  "run": parallel_ingest.LAST_RUN, "leftovers": st.unreferenced_files()}))
"""


@pytest.fixture(scope="module")
def two_nodes(cluster):  # noqa: F811
    return cluster


@pytest.mark.slow
@linux_only
def test_parallel_ingest_on_two_nodes_into_s3_writes_the_serial_files(two_nodes, tmp_path):
    from tests.tasks.test_cluster import summary_of

    from .test_s3 import s3_keys

    src = parquet(tmp_path, table(40_000, seed=7))
    store = f"s3://{BUCKET}/ingest"
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(src), store],
                          env={**two_nodes.env, "RAY_ADDRESS": two_nodes.address,
                               "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = summary_of(proc.stdout)
    serial = Store.create(tmp_path / "serial", src,
                          options=IngestOptions(label="slabel", id_column="sid", n_shards=3,
                                                n_slices=2))
    want = digest(serial)
    assert out["slices"] == {k: v[0] for k, v in want["slices"].items()}
    assert out["index"] == want["index"] and not out["leftovers"]
    nodes = {two_nodes.head.node_id, two_nodes.worker.node_id}
    assert set(out["run"]["nodes"]["ingesting"]) == nodes, out["run"]
    assert not [k for k in s3_keys(two_nodes.env, BUCKET, "ingest") if k.startswith(".tmp/")]
    print(f"\nparallel ingest on two nodes: {out['run']}")
