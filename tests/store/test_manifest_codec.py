"""The manifest on disk (sisa.store.manifest.codec and entries): flat <-> root + leaves
round trips for generated manifests, entry records <-> their JSON objects, the committed
format-4 store read byte for byte, and forged entries refused in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sisa import Store
from sisa.errors import CorruptStoreError
from sisa.store import manifest as mf
from sisa.store.io.fs import Location
from sisa.store.manifest import (
    Blob,
    BucketFile,
    CheckpointFile,
    LeafRef,
    ShardRef,
    SliceFile,
    canonical_json,
    codec,
)
from sisa.unlearn import verify
from tests.helpers import LOCAL, tree_digest

V4 = Path(__file__).resolve().parent.parent / "data" / "store-v4"
V4_KEY = "5d060d2820aeba9067d84ebf963c6a696a772f1acd13ab73dd5b6f176cfaf383"  # tests/data/README

SHA = st.text("0123456789abcdef", min_size=64, max_size=64)
COUNT = st.integers(0, 2**40)
LABELS = st.one_of(st.none(), st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4)),
                                       max_size=4, unique=True).map(lambda v: sorted(v, key=repr)))


def _slice(s: int, r: int):
    return st.builds(lambda sha, n, rows, labels: SliceFile(
        f"data/shard={s:04d}/slice={r:03d}/{sha[:32]}.arrow", sha, n, rows=rows, shard=s,
        labels=labels), SHA, COUNT, COUNT, LABELS)


def _checkpoint(s: int, r: int):
    return st.builds(lambda sha, n, rows, lineage: CheckpointFile(
        f"checkpoints/shard={s:04d}/slice={r:03d}/{sha[:32]}.pkl", sha, n, rows=rows, shard=s,
        slice=r, lineage=lineage), SHA, COUNT, COUNT, SHA)


def _bucket(folder: str, b: int):
    return st.builds(lambda sha, n, rows: BucketFile(
        f"{folder}/bucket={b:04d}/{sha[:32]}.arrow", sha, n, rows=rows), SHA, COUNT, COUNT)


@st.composite
def flat_manifests(draw) -> dict:
    """A whole state as one dict (entries as records), as :meth:`Manifest.flat` gives it."""
    S, R = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n_buckets = draw(st.sampled_from([1, 2, 64, 65, 130]))  # one page, a page and more
    slices = {f"{s}/{r}": draw(_slice(s, r)) for s in range(S) for r in range(R)}
    cells = draw(st.sets(st.tuples(st.integers(0, S - 1), st.integers(0, R - 1))))
    tombs = draw(st.sets(st.integers(0, n_buckets - 1), max_size=5))
    index = [draw(_bucket("index", b)) for b in range(n_buckets)]
    tparts = {str(b): draw(_bucket("audit/tombstones", b)) for b in sorted(tombs)}
    return {
        "format": mf.FORMAT, "sisa_version": "0", "generation": draw(st.integers(0, 9)),
        "created": "t", "store_id": draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        "signer": None, "assignment": {"n_shards": S, "n_slices": R, "random_state": 0},
        "schema": {"id_type": "int64", "label_type": "int64"}, "slices": slices,
        "index": {"parts": index, "rows": sum(p.rows for p in index)},
        "tombstones": {"parts": tparts, "rows": sum(p.rows for p in tparts.values())},
        "n_deleted": 0, "pending": None, "last_receipt": None,
        "audit": {"receipts": 0, "head": None, "log_bytes": 0},
        "model": {"classes": [0, 1], "checkpoints": {
            f"{s}/{r}": draw(_checkpoint(s, r)) for s, r in sorted(cells)}},
    }


def as_json(flat: dict) -> dict:
    return json.loads(canonical_json(flat))


def without_derived(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("format", "fingerprint")}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flat_manifests())
def test_flat_splits_into_root_and_leaves_and_joins_back(flat):
    m = mf.from_flat(flat)
    assert without_derived(m.flat()) == without_derived(as_json(flat))
    # records or their JSON objects: the same manifest, the same bytes
    again = mf.from_flat(as_json(flat))
    assert canonical_json(dict(again)) == canonical_json(dict(m))
    assert mf.from_flat(m.flat()).flat() == m.flat()
    # the root names one leaf per shard and per page, each by the hash of its bytes
    n_pages = (len(flat["index"]["parts"]) + 63) // 64
    refs = m._leaf_refs()
    assert len(m["shards"]) == flat["assignment"]["n_shards"]
    assert len(m["index"]["pages"]) == n_pages
    assert all(isinstance(r, ShardRef) for r in m["shards"])
    assert all(type(r) is LeafRef for r in m["index"]["pages"])
    for ref in refs:
        file, raw = m._unwritten[ref.sha256]
        assert file == ref.file and hashlib.sha256(raw).hexdigest() == ref.sha256
        assert len(raw) == ref.bytes and raw == canonical_json(m._leaves[ref.sha256])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flat_manifests())
def test_a_written_manifest_loads_back_byte_for_byte(flat):
    m = mf.from_flat(flat)
    with tempfile.TemporaryDirectory() as tmp:
        loc = Location(tmp)
        mf.write(loc, m, None)
        loaded = mf.load(loc)
        assert canonical_json(dict(loaded)) == canonical_json(dict(m))
        assert loaded.flat() == m.flat() and loaded.fingerprint == m.fingerprint
        assert loaded.slices == m.slices and loaded.checkpoints == m.checkpoints
        assert loaded.index_parts == m.index_parts
        assert loaded.tombstone_parts == m.tombstone_parts


ENTRIES = st.one_of(
    st.integers(0, 3).flatmap(lambda s: _slice(s, s + 1)),
    st.integers(0, 3).flatmap(lambda s: _checkpoint(s, 2)),
    _bucket("index", 7), _bucket("audit/tombstones", 3),
    st.builds(lambda sha, n: LeafRef(f"meta/index-0000-{sha[:32]}.json", sha, n), SHA, COUNT),
    st.builds(lambda sha, n, rows: ShardRef(f"meta/shard-0000-{sha[:32]}.json", sha, n, rows),
              SHA, COUNT, COUNT),
    st.builds(lambda sha, n: Blob(f"data/x/{sha[:32]}.bin", sha, n), SHA, COUNT),
)


@given(ENTRIES)
def test_an_entry_round_trips_through_its_json(entry):
    d = entry.to_json()
    assert type(entry).from_json(d, "test") == entry
    assert type(entry).from_json(json.loads(canonical_json(d)), "test") == entry
    assert type(entry).from_json(d, "test").to_json() == d
    assert canonical_json(entry) == canonical_json(d)  # the codec writes records as JSON
    with pytest.raises(FrozenInstanceError):
        entry.file = "x"  # type: ignore[misc]


# ------------------------------------------------------------------ the format-4 fixture
@pytest.fixture
def v4(tmp_path) -> Path:
    dst = tmp_path / "store-v4"
    shutil.copytree(V4, dst)
    return dst


def test_every_entry_of_the_format_4_store_is_the_bytes_on_disk(v4):
    before = tree_digest(v4)
    m = Store.open(str(v4)).manifest
    body, _ = codec.split((v4 / "manifest.json").read_bytes())
    assert canonical_json(dict(m)) == body  # the signed root, byte for byte
    raw_root = json.loads(body)
    for s, ref in enumerate(m["shards"]):
        assert isinstance(ref, ShardRef) and ref.to_json() == raw_root["shards"][s]
        raw = (v4 / ref.file).read_bytes()
        assert canonical_json(m.shard_leaf(s)) == raw
        on_disk = json.loads(raw)
        for sec, kind in (("slices", SliceFile), ("checkpoints", CheckpointFile)):
            assert on_disk[sec]  # (the fixture has both in every shard)
            for r, entry in m.shard_leaf(s)[sec].items():
                assert type(entry) is kind
                assert canonical_json(entry.to_json()) == canonical_json(on_disk[sec][r])
                assert entry.to_json() == on_disk[sec][r]
    pages = [*m["index"]["pages"], *m["tombstones"]["pages"].values()]
    assert len(pages) == 2
    for ref in pages:
        on_disk = json.loads((v4 / ref.file).read_bytes())
        assert canonical_json(m._leaves[ref.sha256]) == (v4 / ref.file).read_bytes()
        for b, entry in m._leaves[ref.sha256]["parts"].items():
            assert type(entry) is BucketFile and entry.to_json() == on_disk["parts"][b]
    assert tree_digest(v4) == before


def test_the_format_4_store_still_verifies_with_its_public_key(v4):
    before = tree_digest(v4)
    rep = verify(Store.open(str(v4)), settings=LOCAL, public_key=V4_KEY)
    assert rep.ok, rep.problems
    assert tree_digest(v4) == before
    assert not verify(Store.open(str(v4)), retrain=False, public_key="ab" * 32).ok


# ------------------------------------------------------------------ forged entries
def _forge(store: Path, edit) -> None:
    """What someone who can write the store (not its owner's key) does: edit shard 0's
    leaf (``edit(leaf, root)``), name it by its new hash and re-checksum an unsigned
    root that names it."""
    root = json.loads((store / "manifest.json").read_text())["manifest"]
    leaf = json.loads((store / root["shards"][0]["file"]).read_bytes())
    edit(leaf, root)
    raw = canonical_json(leaf)
    digest = hashlib.sha256(raw).hexdigest()
    rel = f"meta/shard-0000-{digest[:32]}.json"
    (store / rel).write_bytes(raw)
    root["shards"][0].update(file=rel, sha256=digest, bytes=len(raw))
    root["signer"] = None
    body = canonical_json(root)
    (store / "manifest.json").write_bytes(
        b'{"checksum":"' + hashlib.sha256(body).hexdigest().encode()
        + b'","signature":"","manifest":' + body + b"}")


def _slice0(fn):
    return lambda leaf, root: fn(leaf["slices"]["0"])


def _ck0(fn):
    return lambda leaf, root: fn(leaf["checkpoints"]["1"])


def _set(key, value):
    return lambda e: e.__setitem__(key, value)


def _drop(key):
    return lambda e: e.pop(key)


LONG_KEY = "x" * 300
FORGED = {  # case -> (edit, what the one-line message must name)
    "rows negative": (_slice0(_set("rows", -987654)), "field 'rows'"),
    "rows a string": (_slice0(_set("rows", "36")), "field 'rows'"),
    "rows a float": (_slice0(_set("rows", 36.0)), "field 'rows'"),
    "rows a bool": (_slice0(_set("rows", True)), "field 'rows'"),
    "bytes null": (_slice0(_set("bytes", None)), "field 'bytes'"),
    "shard missing": (_slice0(_drop("shard")), "lacks field 'shard'"),
    "labels missing": (_slice0(_drop("labels")), "lacks field 'labels'"),
    "labels a string": (_slice0(_set("labels", "0,1")), "field 'labels'"),
    "labels of floats": (_slice0(_set("labels", [0.5, 1.5])), "field 'labels'"),
    "an extra key": (_slice0(_set("evil", 1)), "unknown field 'evil'"),
    "a huge extra key": (_slice0(_set(LONG_KEY, 1)), "unknown field"),
    "sha256 not hex": (_slice0(_set("sha256", "Z" * 64)), "slice 0/0"),
    "path escaping the store": (_slice0(_set("file", "../x")), "slice 0/0"),
    "absolute path": (_slice0(_set("file", "/etc/passwd")), "slice 0/0"),
    "entry not an object": (lambda leaf, root: leaf["slices"].__setitem__("0", [1, 2]),
                            "slice 0/0"),
    "checkpoint lineage an int": (_ck0(_set("lineage", 123456789)), "field 'lineage'"),
    "checkpoint lineage not hex": (_ck0(_set("lineage", "q" * 64)), "field 'lineage'"),
    "checkpoint slice missing": (_ck0(_drop("slice")), "lacks field 'slice'"),
    "checkpoint rows negative": (_ck0(_set("rows", -3)), "field 'rows'"),
    "shard leaf ref rows negative": (
        lambda leaf, root: root["shards"][1].__setitem__("rows", -5), "field 'rows'"),
    "shard leaf ref with an extra key": (
        lambda leaf, root: root["shards"][2].__setitem__("note", "x"), "unknown field 'note'"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_entry_is_refused_in_one_line_and_the_store_is_unchanged(v4, case):
    edit, names = FORGED[case]
    _forge(v4, edit)
    before = tree_digest(v4)
    for action in (lambda: Store.open(str(v4)), lambda: mf.load(Location(str(v4))),
                   lambda: Store.open(str(v4), check_files=False)):
        with pytest.raises(CorruptStoreError) as info:
            action()
        msg = str(info.value)
        assert "\n" not in msg and names in msg, msg
        assert "restore the store from backup" in msg
        for value in ("987654", "0,1", "evil\":", LONG_KEY[:40], "123456789", "q" * 20):
            assert value not in msg, msg  # the forged value is never echoed
    assert tree_digest(v4) == before


def test_the_forged_cases_are_each_one_edit(v4):
    """Each case forges exactly what it says: undone, the store loads again."""
    assert len(FORGED) >= 10
    _forge(v4, lambda leaf, root: None)  # re-hashed and unsigned, nothing else changed
    m = Store.open(str(v4)).manifest
    assert m.slice(0, 0).rows == 36 and m.signer_key is None
