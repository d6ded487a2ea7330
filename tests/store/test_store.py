"""The Arrow-backed store: ingest, read, delete, crash safety, locking, validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sisa._crash import InjectedCrash
from sisa.errors import CorruptStoreError, InputError, StoreError, StoreLockedError, UnknownIdError
from sisa.store import IngestOptions, Store
from tests.helpers import make_classification


def slice_files(store: Store) -> dict[str, str]:
    """(shard/slice) -> sha256 of the bytes on disk: the store's content, byte for byte."""
    return {k: m.sha256 for k, m in store.manifest.slices.items()}


def test_build_read_and_balance(tmp_path):
    X, y = make_classification(4000, 5)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=4, n_slices=3))
    assert st_.n_rows == 4000 and st_.n_features == 5
    assert st_.spread()["rel_std"] < 0.1
    seen = np.concatenate([st_.rows.read_slice(s, r).ids for s in range(4) for r in range(3)])
    assert np.array_equal(np.sort(seen), np.arange(4000))
    part = st_.rows.read_slice(2, 1)
    assert part.X.dtype == np.float32 and part.X.shape == (len(part), 5)
    assert np.array_equal(part.X, X[part.ids]) and np.array_equal(part.y, y[part.ids])
    both = st_.rows.read_slices(2, range(2))
    assert len(both) == len(st_.rows.read_slice(2, 0)) + len(part)


def test_rows_inside_a_slice_follow_the_hash_not_the_input_order(tmp_path):
    X, y = make_classification(1000, 3)
    perm = np.random.default_rng(1).permutation(1000)
    a = Store.create(tmp_path / "a", X, y, options=IngestOptions(n_shards=2, n_slices=2))
    b = Store.create(tmp_path / "b", X[perm], y[perm],
                     options=IngestOptions(n_shards=2, n_slices=2), sample_ids=perm)
    assert slice_files(a) == slice_files(b)
    assert a.fingerprint == b.fingerprint


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ipc", "dataframe", "table", "directory"])
def test_ingest_formats_give_the_same_store(tmp_path, fmt):
    X, y = make_classification(600, 3)
    df = pd.DataFrame({"uid": np.arange(600) * 7, "f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2],
                       "target": y})
    table = pa.Table.from_pandas(df, preserve_index=False)
    src: object = table
    if fmt == "parquet":
        src = tmp_path / "d.parquet"
        pq.write_table(table, src)
    elif fmt == "csv":
        src = tmp_path / "d.csv"
        pacsv.write_csv(table, src)
    elif fmt == "ipc":
        src = tmp_path / "d.arrow"
        with pa.ipc.new_file(src, table.schema) as w:
            w.write_table(table)
    elif fmt == "dataframe":
        src = df
    elif fmt == "directory":
        (tmp_path / "dir").mkdir()
        pq.write_table(table.slice(0, 300), tmp_path / "dir" / "a.parquet")
        pq.write_table(table.slice(300), tmp_path / "dir" / "b.parquet")
        src = tmp_path / "dir"
    st_ = Store.create(tmp_path / "s", src,
                       options=IngestOptions(label="target", id_column="uid", n_shards=3,
                                             n_slices=2, dtype=np.float64, batch_rows=128))
    ref = Store.create(tmp_path / "ref", X.astype(np.float64), y,
                       options=IngestOptions(n_shards=3, n_slices=2), sample_ids=np.arange(600) * 7)
    assert st_.manifest["schema"]["feature_names"] == ["f0", "f1", "f2"]
    for s in range(3):
        for r in range(2):
            a, b = st_.rows.read_slice(s, r), ref.rows.read_slice(s, r)
            assert np.array_equal(a.ids, b.ids) and np.allclose(a.X, b.X)


def test_spilling_to_disk_gives_identical_files(tmp_path):
    X, y = make_classification(3000, 4)
    table = pa.table({"f": X[:, 0], "g": X[:, 1], "label": y})
    a = Store.create(tmp_path / "a", table,
                     options=IngestOptions(label="label", n_shards=3, n_slices=2, batch_rows=100,
                                           memory_budget_mb=0))  # spill after every batch
    b = Store.create(tmp_path / "b", table,
                     options=IngestOptions(label="label", n_shards=3, n_slices=2))
    assert slice_files(a) == slice_files(b)


@given(data=st.data())
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_delete_equals_building_without_the_rows(tmp_path_factory, data):
    n = data.draw(st.integers(40, 400))
    S = data.draw(st.integers(1, 4))
    R = data.draw(st.integers(1, 3))
    seed = data.draw(st.integers(0, 99))
    ids = np.array(data.draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n,
                                      unique=True)))
    U = data.draw(st.lists(st.sampled_from(ids.tolist()), unique=True, max_size=n // 2))
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 3, n)
    root = tmp_path_factory.mktemp("prop")
    full = Store.create(root / "full", X, y,
                        options=IngestOptions(n_shards=S, n_slices=R, random_state=seed),
                        sample_ids=ids)
    if U:
        full.delete(U)
    keep = ~np.isin(ids, U)
    rebuilt = Store.create(root / "rebuilt", X[keep], y[keep],
                           options=IngestOptions(n_shards=S, n_slices=R, random_state=seed),
                           sample_ids=ids[keep])
    assert slice_files(full) == slice_files(rebuilt)
    assert full.fingerprint == rebuilt.fingerprint
    assert full.unreferenced_files() == []
    # byte for byte, on disk
    for k, m in full.manifest.slices.items():
        assert (full.loc.read_bytes(m.file).to_pybytes()
                == rebuilt.loc.read_bytes(rebuilt.manifest.slices[k].file).to_pybytes())


def test_delete_reports_changes_is_idempotent_and_rejects_unknown_ids(tmp_path):
    X, y = make_classification(1000, 3)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=4, n_slices=2))
    res = st_.delete([5, 6, 7])
    assert res.deleted == 3 and sum(res.plan.values()) >= 0 and res.plan
    assert st_.n_rows == 997
    assert st_.delete([5, 8]).already_deleted == [5]
    before = st_.fingerprint
    with pytest.raises(UnknownIdError, match="5000, 5001"):
        st_.delete([9, 5000, 5001])
    assert Store.open(tmp_path / "s").fingerprint == before  # nothing changed
    assert st_.rows.locate([9])[0].all()  # 9 was not deleted by the failed call


@pytest.mark.parametrize("point", ["delete:after-slices", "delete:before-commit",
                                   "commit:after-manifest", "delete:after-commit"])
def test_a_crash_at_any_step_leaves_before_or_after_never_a_mix(tmp_path, monkeypatch, point):
    X, y = make_classification(2000, 3)
    U = list(range(0, 2000, 97))
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=4, n_slices=3))
    before = slice_files(st_)
    keep = np.setdiff1d(np.arange(2000), U)
    after = slice_files(Store.create(tmp_path / "ref", X[keep], y[keep],
                                     options=IngestOptions(n_shards=4, n_slices=3),
                                     sample_ids=keep))
    monkeypatch.setenv("SISA_CRASH_AT", point)
    with pytest.raises(InjectedCrash):
        st_.delete(U)
    monkeypatch.delenv("SISA_CRASH_AT")
    reopened = Store.open(tmp_path / "s")
    reopened.check_files(hashes=True)
    assert slice_files(reopened) in (before, after)
    crashed_after_commit = point in ("commit:after-manifest", "delete:after-commit")
    assert slice_files(reopened) == (after if crashed_after_commit else before)
    with reopened.lock():
        reopened.collect_garbage()
    assert reopened.unreferenced_files() == []
    if crashed_after_commit:  # no leftover file may still hold a deleted row
        held = np.concatenate([reopened.rows.read_slice(s, r).ids for s in range(4)
                               for r in range(3)])
        assert not np.isin(held, U).any()
    else:
        assert reopened.delete(U).deleted == len(U)


def test_a_second_writer_gets_a_clear_error_naming_the_holder(tmp_path):
    X, y = make_classification(500, 3)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from sisa.store import Store\n"
         f"s = Store.open({str(tmp_path / 's')!r})\n"
         "with s.lock():\n    print('locked', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid} on host"):
            st_.delete([1])
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert st_.delete([1]).deleted == 1  # the kernel released the dead holder's lock


@pytest.mark.parametrize("make, msg", [
    (lambda X, y: (np.where(X > 2, np.nan, X), y), "non-finite feature values"),
    (lambda X, y: (X[:, 0], y), "X must be 2-D"),
    (lambda X, y: (X[:0], y[:0]), "X is empty"),
    (lambda X, y: (X, y[:-1]), "one label per row"),
    (lambda X, y: (X.astype(str), y), "X must be numeric"),
])
def test_bad_arrays_are_named(tmp_path, make, msg):
    X, y = make_classification(200, 3)
    with pytest.raises(InputError, match=msg):
        Store.create(tmp_path / "s", *make(X, y), options=IngestOptions(n_shards=2, n_slices=2))
    assert not Store.exists(tmp_path / "s")


def test_bad_layouts_and_ids_are_named(tmp_path):
    X, y = make_classification(50, 3)
    with pytest.raises(InputError, match="fewer shards or slices"):
        Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=10, n_slices=6))
    with pytest.raises(InputError, match="n_shards must be"):
        Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=0, n_slices=1))
    ids = np.arange(50)
    ids[7] = 3
    with pytest.raises(InputError, match=r"duplicate sample id.*\[3\]"):
        Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2),
                     sample_ids=ids)
    df = pd.DataFrame({"a": [[1, 2]] * 50, "b": X[:, 0], "label": y})  # strings are stored
    with pytest.raises(InputError, match=r"column 'a' has type list<item: int64>, which sisa "
                                         "cannot store"):
        Store.create(tmp_path / "s", df,
                     options=IngestOptions(label="label", n_shards=2, n_slices=2))
    with pytest.raises(InputError, match="not found"):
        Store.create(tmp_path / "s", df,
                     options=IngestOptions(label="nope", n_shards=2, n_slices=2))
    Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2))
    with pytest.raises(InputError, match="already exists"):
        Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2))


def test_missing_altered_or_corrupt_files_are_named(tmp_path):
    X, y = make_classification(500, 3)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2))
    victim = st_.manifest.slices["1/0"].file
    path = tmp_path / "s" / victim
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="hash mismatch.*" + victim.split("/")[-1][:8]):
        Store.open(tmp_path / "s").rows.read_slice(1, 0)
    path.unlink()
    with pytest.raises(CorruptStoreError, match="missing file .*" + victim.split("/")[-1][:8]):
        Store.open(tmp_path / "s")
    manifest = tmp_path / "s" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["manifest"]["n_deleted"] += 1  # any edit without the checksum
    manifest.write_text(json.dumps(m))
    with pytest.raises(CorruptStoreError, match=r"manifest .* is corrupt"):
        Store.open(tmp_path / "s")
    with pytest.raises(StoreError, match="no sisa store"):
        Store.open(tmp_path / "nowhere")


def test_write_leaves_no_temporary_files(tmp_path):
    X, y = make_classification(500, 3)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2))
    st_.delete(list(range(20)))
    names = [p.name for p in (tmp_path / "s").rglob("*")]
    assert not [n for n in names if ".tmp-" in n]
    # one live file per index bucket; the replaced ones are gone
    assert [len(os.listdir(d)) for d in (tmp_path / "s" / "index").iterdir()] == [1]


def test_group_and_deletion_probability_columns(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    p_del = np.where(rng.random(n) < 0.1, 0.8, 0.01)
    table = pa.table({"user": rng.integers(0, 150, n), "p": p_del, "f": rng.normal(size=n),
                      "y": rng.integers(0, 2, n)})
    st_ = Store.create(tmp_path / "g", table,
                       options=IngestOptions(label="y", group_column="user", feature_columns=["f"],
                                             n_shards=4, n_slices=3))
    where = {}
    for s in range(4):
        for r in range(3):
            for i in st_.rows.read_slice(s, r).ids:
                where.setdefault(int(table.column("user")[int(i)].as_py()), set()).add((s, r))
    assert all(len(cells) == 1 for cells in where.values())  # a user's rows share one slice
    hot = Store.create(tmp_path / "h", table,
                       options=IngestOptions(label="y", deletion_prob_column="p",
                                             feature_columns=["f"], n_shards=5, n_slices=2,
                                             hot_shards=1))
    p = table.column("p").to_numpy()
    hot_ids = np.concatenate([hot.rows.read_slice(0, r).ids for r in range(2)])
    assert set(hot_ids.tolist()) == set(np.flatnonzero(p >= 0.5).tolist())


@pytest.mark.parametrize("id_kind", ["int", "str"])
def test_bucketed_index_and_tombstones_touch_only_the_buckets_of_the_ids(tmp_path, monkeypatch,
                                                                        id_kind):
    """A forget must not rewrite files that grow with the whole store: the index and
    the tombstones are split by a hash of the id, and a delete rewrites only the
    buckets its ids fall in."""
    from sisa.store.format import index as store_mod
    from sisa.unlearn import verify

    monkeypatch.setattr(store_mod, "INDEX_BUCKET_ROWS", 64)  # 2000 rows -> 32 buckets
    X, y = make_classification(2000, 3)
    ids = np.arange(2000) * 7 + 3
    sample_ids = ids if id_kind == "int" else np.array([f"user-{i}" for i in ids], dtype=object)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=4, n_slices=2),
                       sample_ids=sample_ids)
    B = st_.rows.index_buckets
    assert B == 32 and sum(p.rows for p in st_.manifest.index_parts) == 2000
    index = st_.rows.read_index()
    assert sorted(index.column("sample_id").to_pylist()) == sorted(sample_ids.tolist())
    # locate agrees with the data files, in query order, for ids spread over buckets
    query = sample_ids[[1999, 0, 777, 5]].tolist()
    found, shard, sl = st_.rows.locate([*query, "nope" if id_kind == "str" else 1])
    assert found.tolist() == [True, True, True, True, False]
    for q, s, r in zip(query, shard.tolist(), sl.tolist(), strict=True):
        assert q in st_.rows.read_slice_table(s, r).column("sample_id").to_pylist()
    # deleting 3 ids rewrites at most 3 index buckets and creates at most 3 tombstone files
    before = [p.sha256 for p in st_.manifest.index_parts]
    gone = sample_ids[[10, 20, 30]].tolist()
    st_.delete(gone)
    after = [p.sha256 for p in st_.manifest.index_parts]
    changed = {b for b in range(B) if before[b] != after[b]}
    assert changed == set(store_mod.id_buckets(pa.array(gone), B).tolist())
    assert 1 <= len(st_.manifest.tombstone_parts) <= 3
    assert st_.manifest.n_tombstones == 3 and st_.n_rows == 1997
    assert not st_.rows.locate(gone)[0].any()
    # deleted ids are recognised through their tombstone bucket; unknown ones are not
    assert st_.delete([gone[0]]).already_deleted == [gone[0]]
    with pytest.raises(UnknownIdError):
        st_.delete(["never"] if id_kind == "str" else [10**12])
    assert not st_.unreferenced_files()
    rep = verify(st_)  # index matches the data, every id in its bucket, no tombstone hit
    assert rep.problems == ["the store holds no trained model"] and rep.deleted_ids_checked == 3
    assert all(s.ok for s in rep.shards)


def test_a_boolean_mask_or_float_ids_are_refused_not_cast(tmp_path):
    """pyarrow casts True/False to 1/0: a mask passed as ids would delete ids 0 and 1."""
    X, y = make_classification(200, 3)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2))
    for bad, msg in ((X[:, 0] > 0, "bool values.*ids\\[mask\\]"), ([1.0, 2.0], "is a float"),
                     ([2**70], "out of range"), (["a"], "is a str.*are integers"),
                     (["7"], "pass 7 \\(an int\\)"), ([True], "is a bool")):
        with pytest.raises(InputError, match=msg):
            st_.delete(bad)
    assert st_.n_rows == 200 and Store.open(tmp_path / "s").n_rows == 200


def test_threads_sharing_one_store_take_turns_and_lose_no_delete(tmp_path):
    import threading

    X, y = make_classification(1000, 3)
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=4, n_slices=2))
    errors: list = []

    def delete(ids) -> None:
        try:
            for i in ids:
                st_.delete([int(i)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=delete, args=(range(k, 200, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fresh = Store.open(tmp_path / "s")
    fresh.check_files()
    assert fresh.n_rows == 800 and not fresh.rows.locate(list(range(200)))[0].any()
    assert not fresh.unreferenced_files()
    # a thread that does not hold the lock cannot commit behind the holder's back
    with pytest.raises(StoreError, match="must run inside"):
        st_.commit(dict(st_.manifest))


def test_overwrite_replaces_a_corrupt_store(tmp_path):
    X, y = make_classification(200, 3)
    Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2))
    (tmp_path / "s" / "manifest.json").write_text("{garbage")
    with pytest.raises(CorruptStoreError):
        Store.open(tmp_path / "s")
    st_ = Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=2, n_slices=2),
                       overwrite=True)
    assert Store.open(tmp_path / "s").fingerprint == st_.fingerprint


def test_ids_and_groups_are_the_same_whatever_array_carries_them(tmp_path):
    X, y = make_classification(300, 3)
    ids = np.arange(300) * 3 + 1
    a = Store.create(tmp_path / "a", X, y, options=IngestOptions(n_shards=3, n_slices=2),
                     sample_ids=ids.astype(object))
    b = Store.create(tmp_path / "b", X, y, options=IngestOptions(n_shards=3, n_slices=2),
                     sample_ids=ids)
    assert a.fingerprint == b.fingerprint and a.manifest["schema"]["id_type"] == "int64"
    with pytest.raises(InputError, match="groups must have one key per row"):
        Store.create(tmp_path / "c", X, y, options=IngestOptions(n_shards=3, n_slices=2),
                     groups=np.zeros((300, 2)))
    table = pa.table({"f": X[:, 0], "y": y})
    with pytest.raises(InputError, match="cannot also be features"):
        Store.create(tmp_path / "d", table,
                     options=IngestOptions(label="y", feature_columns=["f", "y"], n_shards=3,
                                           n_slices=2))
