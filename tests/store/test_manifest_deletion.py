"""``Manifest.with_deletion`` keeps running totals and rewrites only the pages it touches
(sisa.store.manifest.model): the state it gives is the one a fresh build of the same
entries gives, byte for byte, and its shared views are the ones its leaves give."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sisa.store import manifest as mf
from sisa.store.manifest import Manifest, RetrainPlan, canonical_json, codec
from tests.store.test_manifest_codec import _bucket, _slice, flat_manifests


@st.composite
def deletions(draw) -> tuple[dict, dict]:
    """A generated state and one deletion on it (bucket count unchanged)."""
    flat = draw(flat_manifests())
    B = len(flat["index"]["parts"])
    S, R = flat["assignment"]["n_shards"], flat["assignment"]["n_slices"]
    index = {b: draw(_bucket("index", b)) for b in draw(st.sets(st.integers(0, B - 1),
                                                               min_size=1, max_size=4))}
    tombs = {b: draw(_bucket("audit/tombstones", b)) for b in draw(
        st.sets(st.integers(0, B - 1), min_size=1, max_size=4))}
    s, r = draw(st.integers(0, S - 1)), draw(st.integers(0, R - 1))
    return flat, {"slices": {f"{s}/{r}": draw(_slice(s, r))}, "index_parts": index,
                  "tombstone_parts": tombs, "n_buckets": B, "deleted": 1,
                  "plan": RetrainPlan({s: r}), "classes": None}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deletions())
def test_a_deletion_gives_the_state_a_fresh_build_of_its_entries_gives(case):
    flat, change = case
    old = mf.from_flat(flat)
    new = old.with_deletion(**change)
    # the totals kept running are the sums over every bucket
    assert new["index"]["rows"] == sum(p.rows for p in new.index_parts)
    assert new.n_tombstones == sum(p.rows for p in new.tombstone_parts.values())
    # the views it shares are the ones its leaves give when rebuilt
    bare = Manifest(dict(new), new._leaves)
    assert bare.index_parts == new.index_parts
    assert dict(bare.tombstone_parts) == dict(new.tombstone_parts)
    assert bare.slices == new.slices and bare.checkpoints == new.checkpoints
    # every bucket is the old one or the changed one
    for b, part in enumerate(new.index_parts):
        assert part == change["index_parts"].get(b, old.index_parts[b])
    for b in set(map(int, old.tombstone_parts)) | set(change["tombstone_parts"]):
        assert new.tombstone_parts[str(b)] == change["tombstone_parts"].get(
            b, old.tombstone_parts.get(str(b)))
    # a fresh build of the same entries writes the same pages and root, byte for byte
    fresh = mf.from_flat(new.flat())
    assert canonical_json(dict(fresh)) == canonical_json(dict(new))
    assert {r.sha256 for r in fresh._leaf_refs()} == {r.sha256 for r in new._leaf_refs()}
    # later top-level edits share the views and keep the same leaves
    later = new.stamped(new.generation + 1).written()
    assert later.index_parts == bare.index_parts and later._leaves == new._leaves


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deletions())
def test_the_root_is_written_as_its_canonical_json_with_references_kept(case):
    flat, change = case
    old = mf.from_flat(flat)
    for m in (old, old.with_deletion(**change), old.with_deletion(**change).stamped(3)):
        assert codec.root_json(m) == canonical_json(dict(m))  # twice: encoded, then kept
        assert codec.root_json(m) == canonical_json(dict(m))
    odd = {**dict(old), "tombstones": {**old["tombstones"], "pages": {
        "1": None, "x": [1, 2], "y": {"b": 1.5, "a": "\u00e9\u0000"}}},
        "index": {**old["index"], "extra": {2: "a", 10: "b"}}}  # int keys: sorted as ints
    assert codec.root_json(odd) == canonical_json(odd)


def test_equal_entries_of_other_field_types_keep_their_own_bytes():
    import numpy as np

    from sisa.store.manifest import BucketFile, SliceFile

    sha = "ab" * 32
    for a, b in [(SliceFile("f", sha, 1, rows=2, shard=0, labels=(1, 2)),
                  SliceFile("f", sha, 1, rows=2, shard=0, labels=(np.int64(1), 2.0))),
                 (BucketFile("f", sha, 1, rows=2), BucketFile("f", sha, 1, rows=2.0)),
                 (BucketFile("f", sha, 1, rows=1), BucketFile("f", sha, 1, rows=True))]:
        assert a == b  # equal records (and equal hashes) ...
        for x in (a, b, a, b):  # ... each encoded as canonical_json encodes it
            assert codec._refs_json({"parts": {"0": x}}) == canonical_json({"parts": {"0": x}})
