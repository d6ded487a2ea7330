"""The read side of a store (sisa.store.read.reading): slices, the index, tombstones and the
class list, on real stores in tmp_path, and what a damaged or forged file does to a read.

Through the Store's public reads (``_rows(store)``, so the tests keep working when the reads
move to a composed ``store.rows``) and the module's ``label_union``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sisa import IngestOptions, Store
from sisa.errors import CorruptStoreError
from sisa.store.format.index import id_buckets, n_index_buckets
from sisa.store.format.layout import LABEL
from sisa.store.io.fs import MissingFileError
from sisa.store.read.reading import label_union

S, R, D = 2, 3, 4


def _rows(store: Store):
    """What reads a store's rows (``store.rows``: a reader of the store's current state)."""
    return store.rows


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)).astype(np.float32)
    return X, rng.integers(0, 3, n), np.arange(n, dtype=np.int64) * 5 + 1  # ids: not row numbers


def _store(path: Path, n: int = 600, y=None, **kw) -> tuple[Store, np.ndarray, np.ndarray]:
    X, y0, ids = _data(n)
    y = y0 if y is None else y
    return Store.create(str(path), X, y, sample_ids=ids,
                        options=IngestOptions(n_shards=S, n_slices=R, random_state=4, **kw)), X, ids


def _where(store: Store) -> dict[int, tuple[int, int]]:
    """id -> (shard, slice), from the slices themselves."""
    rows = _rows(store)
    return {int(i): (s, r) for s in range(S) for r in range(R)
            for i in rows.read_slice(s, r).ids}


def test_slices_hold_every_row_once_with_its_features_label_and_id(tmp_path):
    store, X, ids = _store(tmp_path / "s")
    y = _data(600)[1]
    rows, at = _rows(store), {int(v): k for k, v in enumerate(ids)}
    seen = []
    for s in range(S):
        parts = [rows.read_slice(s, r) for r in range(R)]
        for r, part in enumerate(parts):
            assert len(part) == store.slice_rows(s, r) > 0
            k = [at[int(i)] for i in part.ids]
            np.testing.assert_array_equal(part.X, X[k])
            np.testing.assert_array_equal(part.y, y[k])
            seen += part.ids.tolist()
        whole = rows.read_slices(s, range(R))  # concatenated in slice order
        np.testing.assert_array_equal(whole.ids, np.concatenate([p.ids for p in parts]))
        np.testing.assert_array_equal(whole.X, np.concatenate([p.X for p in parts]))
    assert sorted(seen) == ids.tolist()
    none = rows.read_slices(0, [])
    assert len(none) == 0 and none.X.shape == (0, D)
    part = rows.read_slice(1, 2)  # local features come straight from the mapped file
    assert not part.X.flags.owndata and not part.X.flags.writeable
    assert rows.empty_table().schema.equals(rows.read_slice_table(1, 2).schema)


def test_locate_and_the_index_agree_with_the_slices_in_query_order(tmp_path):
    store, _, ids = _store(tmp_path / "s", n=9000)  # two index buckets
    rows, where = _rows(store), _where(store)
    assert rows.index_buckets == n_index_buckets(9000) == 2
    query = [7, int(ids[5]), int(ids[-1]), 8, int(ids[100])]  # 7 and 8: no row has them
    found, shard, sl = rows.locate(query)
    assert found.tolist() == [False, True, True, False, True]
    assert list(zip(shard.tolist(), sl.tolist(), strict=True)) == [
        where[q] for q in query if q in where]
    index = rows.read_index()
    got = index.column("sample_id").to_numpy()
    assert sorted(got.tolist()) == ids.tolist()
    assert all(where[int(i)] == (int(s), int(r)) for i, s, r in zip(
        got, index.column("shard").to_numpy(), index.column("slice").to_numpy(), strict=True))
    for b in range(2):
        part = rows.read_index_part(b).column("sample_id").to_numpy()
        assert part.tolist() == sorted(ids[id_buckets(pa.array(ids), 2) == b].tolist())


def test_a_delete_is_seen_by_the_same_store_objects_next_locate(tmp_path):
    store, _, ids = _store(tmp_path / "s", n=9000)
    gone = [int(ids[10]), int(ids[4000])]
    assert _rows(store).locate(gone)[0].all()  # their bucket is read (and kept)
    store.delete(gone)
    assert not _rows(store).locate(gone)[0].any()  # the bucket kept before is stale
    assert _rows(store).locate([int(ids[11])])[0].all()
    assert len(_rows(store).read_index()) == 9000 - 2


def test_tombstones_are_the_keyed_hashes_of_the_deleted_ids(tmp_path):
    store, _, ids = _store(tmp_path / "s")
    rows = _rows(store)
    empty = rows.tombstones_digest()
    assert rows.read_tombstones() == []
    gone = [int(ids[3]), int(ids[7]), int(ids[500])]
    store.delete(gone)
    rows = _rows(store)
    tombs = rows.read_tombstones()
    assert len(tombs) == 3 and set(tombs) == set(store.audit.id_hashes(gone))
    buckets = sorted(int(b) for b in store.manifest.tombstone_parts)
    assert sorted(h for b in buckets for h in rows.read_tombstones([b])) == sorted(tombs)
    assert rows.read_tombstones([max(buckets) + 1]) == []  # a bucket with no file: nothing
    digest = rows.tombstones_digest()
    assert digest != empty and _rows(Store.open(str(tmp_path / "s"))).tombstones_digest() == digest
    store.delete([int(ids[8])])
    assert _rows(store).tombstones_digest() not in (digest, empty)
    # A tombstone file swapped for another of as many rows changes it too.
    flat = store.manifest.flat()
    part = flat["tombstones"]["parts"][str(buckets[0])]
    flat["tombstones"]["parts"][str(buckets[0])] = {**part, "sha256": "0" * 64}
    assert _rows(Store(store.uri, flat)).tombstones_digest() != _rows(store).tombstones_digest()


def test_the_class_list_is_the_union_of_the_recorded_label_lists(tmp_path):
    y = _data(600)[1].copy()
    y[123] = 9  # one row holds class 9
    store, _, ids = _store(tmp_path / "s", y=y)
    rows = _rows(store)
    assert rows.classes() == label_union(rows) == [0, 1, 2, 9]
    s, r = _where(store)[int(ids[123])]
    # Read from the manifest's label lists: a slice file gone does not change the answer.
    other = store.manifest.slice(1 - s, 0).file
    os.unlink(tmp_path / "s" / other)
    assert label_union(rows) == [0, 1, 2, 9]
    # `kept` replaces the slices it names: without the row of class 9, its class goes.
    table = rows.read_slice_table(s, r)
    without = table.filter(pc.not_equal(table.column(LABEL), 9))
    assert label_union(rows, {(s, r): without}) == [0, 1, 2]
    assert label_union(rows, {(s, (r + 1) % R): rows.empty_table()}) == [0, 1, 2, 9]
    assert label_union(rows, {(s, r): rows.empty_table()}) == [0, 1, 2]


def test_float_labels_record_no_list_and_are_read_from_the_data(tmp_path):
    y = np.round(np.random.default_rng(3).normal(size=600), 1)
    store, _, _ = _store(tmp_path / "s", y=y)
    rows = _rows(store)
    assert store.manifest.slice(0, 0).labels is None
    assert rows.classes() == sorted(set(y.tolist()))
    os.unlink(tmp_path / "s" / store.manifest.slice(1, 2).file)
    with pytest.raises(CorruptStoreError):  # it reads the slices: a missing one is damage
        label_union(rows)


def test_string_labels_sort_as_strings(tmp_path):
    y = np.array(["pear", "apple", "Zucchini", "äpfel"])[np.arange(600) % 4]
    store, _, _ = _store(tmp_path / "s", y=y)
    assert _rows(store).classes() == ["Zucchini", "apple", "pear", "äpfel"]


def test_check_files_names_a_missing_resized_or_altered_file(tmp_path):
    store, _, _ = _store(tmp_path / "s")
    rows, loc = _rows(store), tmp_path / "s"
    store.check_files()
    rel = store.manifest.slice(0, 1).file
    path = loc / rel
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit changed
    store.check_files(hashes=False)  # sizes only: passes
    store.check_files(shards=[1])  # shard 0's damage is not shard 1's
    with pytest.raises(CorruptStoreError, match=rel.split("/")[-1]):
        store.check_files()
    with pytest.raises(CorruptStoreError):
        rows.read_slice(0, 1)  # a read checks the hash too
    path.write_bytes(good[:-10])
    with pytest.raises(CorruptStoreError, match=f"has {len(good) - 10} bytes, the manifest "
                                                f"says {len(good)}"):
        store.check_files(hashes=False)
    path.unlink()
    with pytest.raises(MissingFileError, match="sisa repair"):
        store.check_files(hashes=False)
    path.write_bytes(good)
    store.check_files()


def _forged(store: Store, entry: dict) -> Store:
    """The same store read through a manifest whose slice (0, 0) names ``entry``: what an
    unsigned store's manifest, forged along with a file, would say."""
    flat = store.manifest.flat()
    flat["slices"]["0/0"] = {**flat["slices"]["0/0"], **entry}
    return Store(store.uri, flat)


def test_a_file_that_matches_its_hash_yet_is_no_slice_is_damage(tmp_path):
    store, _, _ = _store(tmp_path / "s")
    index_entry = store.manifest.index_parts[0].to_json()  # real Arrow, the index's columns
    with pytest.raises(CorruptStoreError, match="its columns are not the ones sisa writes"):
        _rows(_forged(store, index_entry)).read_slice(0, 0)
    junk = b"not arrow at all" * 8
    (tmp_path / "s" / "data" / "junk.arrow").write_bytes(junk)
    entry = {"file": "data/junk.arrow", "sha256": hashlib.sha256(junk).hexdigest(),
             "bytes": len(junk)}
    with pytest.raises(CorruptStoreError, match="it is not an Arrow file") as err:
        _rows(_forged(store, entry)).read_slice(0, 0)
    assert "not arrow" not in str(err.value)  # the file's bytes are not echoed
