"""The serial parts of a forget do each piece of work once: the resume checkpoint is read,
hashed and unpickled once (checked before any write, then handed to the in-process
retrain), the ids are looked up in the index once, and the reload looks again only at
the shard leaves the forget changed. The models stay the bytes a fresh fit gives."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier
from sisa.engine import checkpoints as ck
from sisa.unlearn import verify
from tests.helpers import LOCAL, make_classification, record_checkpoint_loads


def _fit(tmp_path, S=4, R=3):
    X, y = make_classification(2000, 5)
    model = SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=S,
                           n_slices=R, store=str(tmp_path / "s"), backend="local",
                           random_state=0)
    return model.fit(X, y), X


def _where(model, i: int) -> tuple[int, int]:
    found, shard, sl = model.store_.rows.locate([i])
    assert found.all()
    return int(shard[0]), int(sl[0])


def test_a_forget_reads_and_unpickles_its_resume_checkpoint_once(tmp_path, monkeypatch):
    """The checkpoint a shard resumes from is checked (hash, restricted unpickle) before
    anything is written, and the retrain in this process resumes from that very object
    rather than reading, hashing and unpickling the file a second time (before: twice).
    The object is the retrain's alone (partial_fit changes it), nothing is left handed
    over after the forget, and the result is byte-identical to a fresh fit."""
    model, X = _fit(tmp_path)
    loads = record_checkpoint_loads(monkeypatch)
    done = 0
    for i in range(2000):
        s, r = _where(model, i)
        if r == 0:
            continue  # from scratch: no resume point
        before = ck.load_verified(model.store_, model.store_.manifest.checkpoint(s, r - 1))
        loads.clear()
        model.forget([i])
        assert loads.count((s, r - 1)) == 1, loads
        assert ck._HANDED == {}
        # the retrained model is what resuming from that checkpoint gives
        assert ck.dumps(model.estimators_[s]) != ck.dumps(before)
        done += 1
        if done == 3:
            break
    assert done == 3
    monkeypatch.undo()
    fresh = SISAClassifier.load(str(tmp_path / "s"))
    assert (model.predict_proba(X) == fresh.predict_proba(X)).all()
    assert verify(model.store_, settings=LOCAL).ok


def test_a_handed_over_checkpoint_is_taken_once(tmp_path):
    """A second taker of the same checkpoint loads its own object (the first one's is
    changed by its training); leaving the block drops what nobody took."""
    model, _ = _fit(tmp_path)
    store = model.store_
    meta = store.manifest.checkpoint(0, 0)
    mine = ck.load_verified(store, meta)
    with ck.handed_over({meta.sha256: mine}):
        first = ck.take_or_load(store, meta)
        second = ck.take_or_load(store, meta)
        assert first is mine and second is not mine
        assert ck.dumps(second) == ck.dumps(mine)
    with ck.handed_over({meta.sha256: mine}):
        pass
    assert ck._HANDED == {} and ck.take_or_load(store, meta) is not mine


def test_a_forget_looks_its_ids_up_in_the_index_once(tmp_path, monkeypatch):
    """The replay check's index lookup is the one the deletion uses (before: the same ids
    located twice); unknown ids are still refused before any write, and a replayed
    request still returns its logged receipt."""
    import pytest

    from sisa.errors import UnknownIdError
    from sisa.store.read.reading import RowReader

    model, _ = _fit(tmp_path)
    calls: list[object] = []
    real = RowReader.locate
    monkeypatch.setattr(RowReader, "locate",
                        lambda self, ids: calls.append(ids) or real(self, ids))
    receipt = model.forget([5, 17])
    assert len(calls) == 1
    calls.clear()
    again = model.forget([17, 5])
    assert again.get("replayed") and again["request_id"] == receipt["request_id"]
    before = model.store_.manifest.generation
    with pytest.raises(UnknownIdError, match="10001"):
        model.forget([6, 10001])
    assert model.store_.manifest.generation == before


def test_the_reload_looks_only_at_the_changed_shard_leaves(tmp_path, monkeypatch):
    """After a forget that retrains one shard, the reload finds the served checkpoints
    and the shards left to train from the one changed shard leaf: the other leaves'
    answers are kept by leaf hash (at S = 256 this looked through every shard's
    checkpoints twice). A damaged store is still refused: a shard missing its served
    checkpoint makes the model refuse to predict."""
    from sisa.errors import StaleModelError
    from sisa.store.manifest import RetrainPlan, codec

    model, X = _fit(tmp_path, S=8, R=2)
    model.forget([3])
    evaluated: list[str] = []
    real = codec.shard_parts

    def shard_parts(manifest, name, part):
        return real(manifest, name, lambda leaf: evaluated.append(name) or part(leaf))

    monkeypatch.setattr(codec, "shard_parts", shard_parts)
    s, _ = _where(model, 11)
    evaluated.clear()
    model.forget([11])
    reload = [n for n in evaluated if n.startswith(("checkpoint ", "pending-first "))]
    assert sorted(reload) == ["checkpoint 1", "pending-first 2 True"], evaluated
    monkeypatch.undo()
    fresh = SISAClassifier.load(str(tmp_path / "s"))
    assert (model.predict_proba(X) == fresh.predict_proba(X)).all()
    store = model.store_
    with store.lock():
        store.commit(store.manifest.without_checkpoints(RetrainPlan({s: 1})))
    assert sorted(store.manifest.pending_plan()) == [s]
    with np.testing.assert_raises(StaleModelError):
        SISAClassifier.load(str(tmp_path / "s"))


def test_the_next_lookup_in_a_rewritten_index_bucket_reads_no_file(tmp_path, monkeypatch):
    """A forget rewrites its ids' index buckets; the next forget that looks an id up in
    one of them uses the table this process wrote (kept by its file's hash) instead of
    reading that file back and hashing it (a small store's few buckets were read back by
    every forget). The ids still resolve where they are."""
    from sisa.store.read.reading import RowReader

    model, _ = _fit(tmp_path, S=2, R=1)
    store = model.store_
    assert store.rows.index_buckets == 1  # 2,000 rows: one bucket, rewritten each time
    reads: list[str] = []
    real = RowReader._read_table

    def read_table(self, rel, sha, schema):
        reads.append(rel)
        return real(self, rel, sha, schema)

    monkeypatch.setattr(RowReader, "_read_table", read_table)
    model.forget([2])
    for i in (3, 4, 5):
        reads.clear()
        where = _where(model, i + 100)  # a lookup in the bucket the last forget wrote
        model.forget([i])
        assert not [r for r in reads if r.startswith("index/")], reads
        assert _where(model, i + 100) == where
        found, _, _ = store.rows.locate([i])
        assert not found.any()


def test_resume_points_past_the_memory_budget_are_loaded_again(tmp_path, monkeypatch):
    """Checked resume points are held for the retrain only up to a byte budget (a batch
    over many shards of a big model must not hold them all at once); past it the retrain
    loads its own, and the result is the same bytes."""
    import importlib

    fg = importlib.import_module("sisa.unlearn.forget")
    model, X = _fit(tmp_path)
    monkeypatch.setattr(fg, "_HAND_OVER_BYTES", 0)
    loads: list[tuple[int, int]] = []
    real = ck.load_verified
    monkeypatch.setattr(ck, "load_verified", lambda store, meta: loads.append(
        (meta.shard, meta.slice)) or real(store, meta))
    i = next(i for i in range(2000) if _where(model, i)[1] > 0)
    s, r = _where(model, i)
    model.forget([i])
    assert loads.count((s, r - 1)) == 2 and ck._HANDED == {}
    monkeypatch.undo()
    assert verify(model.store_, settings=LOCAL).ok
    fresh = SISAClassifier.load(str(tmp_path / "s"))
    assert (model.predict_proba(X) == fresh.predict_proba(X)).all()
