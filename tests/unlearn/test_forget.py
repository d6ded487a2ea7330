"""Exact unlearning: byte identity with a fresh fit, receipts, verify, crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier
from sklearn.tree import DecisionTreeClassifier

from sisa import SISAClassifier, Store
from sisa.errors import CorruptStoreError, InputError, StaleModelError, UnknownIdError
from sisa.store import manifest as mf
from sisa.store.format.layout import INTENT
from sisa.store.manifest import write as _write_manifest
from sisa.unlearn import history, repair, verify
from sisa.unlearn.receipts import log_path
from tests.helpers import LOCAL, make_classification

ESTIMATORS = {
    "sgd": SGDClassifier(loss="log_loss"),
    "mlp": MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01),
    "naive-bayes": GaussianNB(),
    "tree": DecisionTreeClassifier(max_depth=4),
}


def ckpts(model) -> dict[str, str]:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


def fit(est, X, y, path, ids=None, **kw):
    params = {"n_shards": 3, "n_slices": 3, "backend": "local", **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SISAClassifier(est, store=str(path), **params).fit(X, y, sample_ids=ids)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_forget_is_byte_identical_to_a_fresh_fit_without_the_rows(tmp_path, name):
    X, y = make_classification(1500, 6, n_classes=3)
    ids = np.arange(1500) * 3 + 11
    U = ids[[4, 90, 500, 501, 1200]]
    model = fit(ESTIMATORS[name], X, y, tmp_path / "a", ids)
    before = ckpts(model)
    receipt = model.forget(U)
    keep = ~np.isin(ids, U)
    fresh = fit(ESTIMATORS[name], X[keep], y[keep], tmp_path / "b", ids[keep])
    assert ckpts(model) == ckpts(fresh)
    assert ckpts(model) != before
    assert np.array_equal(model.predict(X), fresh.predict(X))
    assert np.array_equal(model.predict_proba(X), fresh.predict_proba(X))
    # only the affected shards were retrained, each from its first affected slice (a
    # refit model keeps only its last slice's checkpoint, refit once per affected shard)
    refit = not hasattr(ESTIMATORS[name], "partial_fit")
    assert set(before) == {f"{s}/{r}" for s in range(3) for r in ((2,) if refit else range(3))}
    for k in before:
        s, r = map(int, k.split("/"))
        first = dict(receipt["affected"]).get(s)
        assert (before[k] == ckpts(model)[k]) == (first is None or r < first)


def test_a_batch_retrains_each_affected_shard_once_and_counts_rows(tmp_path):
    X, y = make_classification(3000, 5)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a", n_shards=4, n_slices=4)
    U = list(range(0, 3000, 150))
    r = model.forget(U)
    shards = [s for s, _ in r["affected"]]
    assert len(shards) == len(set(shards))
    epochs = model.store_.manifest["model"]["epochs"]
    expect = sum(model.store_.slice_rows(s, k) * epochs
                 for s, first in r["affected"] for k in range(first, 4))
    assert r["rows_retrained"] == expect < r["rows_full_retrain"]
    assert r["rows_full_retrain"] == epochs * (3000 - len(U))


def test_receipts_log_history_and_replay(tmp_path):
    X, y = make_classification(800, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    r1 = model.forget([1, 2, 3])
    for key in ("request_id", "requested_at", "ids_sha256", "affected", "rows_retrained",
                "rows_full_retrain", "wall_time_s", "fingerprint_before", "fingerprint_after"):
        assert key in r1
    assert "ids" not in r1 and r1["fingerprint_before"] != r1["fingerprint_after"]
    log = (tmp_path / "a" / log_path(model.store_)).read_text()
    assert '"ids"' not in log and len(log.splitlines()) == 1
    again = model.forget([3, 2, 1])
    assert again["replayed"] and again["request_id"] == r1["request_id"]
    with pytest.raises(InputError, match="pass 5 \\(an int\\)"):  # never parsed from text
        model.forget(["5"])
    r2 = model.forget([5], record_ids=True)
    assert r2["ids"] == [5]
    assert [h["request_id"] for h in model.deletions()] == [r1["request_id"], r2["request_id"]]
    with pytest.raises(UnknownIdError, match="99999"):
        model.forget([6, 99999])
    assert model.store_.rows.locate([6])[0].all()


def test_a_shard_losing_all_rows_drops_out(tmp_path):
    X, y = make_classification(900, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    shard0 = np.concatenate([model.store_.rows.read_slice(0, r).ids for r in range(3)])
    r = model.forget(shard0)
    assert r["shards_emptied"] == [0]
    assert model.estimators_[0] is None and all(m is not None for m in model.estimators_[1:])
    assert model.predict(X).shape == (900,)
    assert verify(model.store_, settings=LOCAL).ok


def test_verify_after_100_single_forgets_and_a_1000_id_batch(tmp_path, ray_session):
    X, y = make_classification(12_000, 8)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a", n_shards=6, n_slices=4,
                epochs=2)
    rng = np.random.default_rng(0)
    order = rng.permutation(12_000)
    for i in order[:100]:
        model.forget([int(i)])
    rep = model.verify(progress=False)
    assert rep.ok, rep.table()
    assert rep.deleted_ids_checked == 100 and all(s.retrained for s in rep.shards)
    model.forget(order[100:1100])
    rep = model.verify()
    assert rep.ok, rep.table()
    assert rep.deleted_ids_checked == 1100
    assert len(model.deletions()) == 101


def test_verify_catches_tampering_leftovers_and_stale_data(tmp_path):
    X, y = make_classification(900, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    store = model.store_
    old_slice = store.manifest.slices["1/0"].to_json()
    kept = tmp_path / "old.arrow"
    shutil.copy(tmp_path / "a" / old_slice["file"], kept)
    victim = int(store.rows.read_slice(1, 0).ids[0])
    model.forget([victim])
    assert verify(store, settings=LOCAL).ok
    # 1. a stale copy of a data file left behind
    shutil.copy(kept, tmp_path / "a" / "data" / "stale.arrow")
    rep = verify(store, retrain=False)
    assert not rep.ok and "not named by the manifest" in rep.problems[0]
    os.unlink(tmp_path / "a" / "data" / "stale.arrow")
    # 2. the manifest pointed back at the pre-deletion slice (rows resurrected)
    m = store.manifest.flat()
    m["slices"]["1/0"] = old_slice
    shutil.copy(kept, tmp_path / "a" / old_slice["file"])
    _write_manifest(store.loc, m, None)
    rep = verify(store, settings=LOCAL)
    problems = " ".join(rep.shards[1].problems)
    assert "holds 1 deleted id" in problems and "lineage mismatch" in problems
    assert "retraining from scratch gives a different checkpoint" in problems
    assert rep.shards[0].ok and "index" in " ".join(rep.problems)


def test_verify_sample_and_shards_limit_the_retrain(tmp_path):
    X, y = make_classification(900, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a", n_shards=4, n_slices=2)
    rep = verify(model.store_, shards=[2], settings=LOCAL)
    assert [s.retrained for s in rep.shards] == [False, False, True, False] and rep.ok
    rep = verify(model.store_, sample=2, settings=LOCAL, seed=1)
    assert sum(s.retrained for s in rep.shards) == 2


CRASH_SCRIPT = """
import sys, numpy as np
from sisa import Store
from sisa.engine import ExecutionSettings
from sisa.unlearn import forget

forget(Store.open(sys.argv[1]), [int(v) for v in sys.argv[2].split(",")],
       settings=ExecutionSettings(backend="local"))
"""

POINTS = ["forget:after-intent", "delete:after-slices", "commit:after-manifest",
          "forget:after-stage", "train:after-shards", "forget:before-log"]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("recovery", ["repair", "rerun"])
def test_kill_9_at_any_point_then_repair_or_rerun_gives_the_exact_result(tmp_path, point,
                                                                         recovery):
    X, y = make_classification(1500, 5)
    U = [3, 400, 777, 1499]
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    keep = np.setdiff1d(np.arange(1500), U)
    fresh = fit(SGDClassifier(loss="log_loss"), X[keep], y[keep], tmp_path / "b", keep)
    env = {**os.environ, "SISA_CRASH_AT": point, "SISA_CRASH_MODE": "kill"}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "a"),
                           ",".join(map(str, U))], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    store = Store.open(tmp_path / "a", check_files=False)
    if point not in ("forget:before-log",):
        with pytest.raises(StaleModelError, match="sisa repair"):
            SISAClassifier.load(str(tmp_path / "a"))
    if recovery == "repair":
        repair(store, settings=LOCAL)
    else:
        model.store_.reload()
        model.forget(U)
        repair(store, settings=LOCAL)  # clears leftovers if the rerun found nothing to do
    healed = SISAClassifier.load(str(tmp_path / "a"))
    assert ckpts(healed) == ckpts(fresh)
    assert np.array_equal(healed.predict_proba(X), fresh.predict_proba(X))
    rep = verify(healed.store_, settings=LOCAL)
    assert rep.ok, rep.table()
    assert len(history(healed.store_)) == 1


class DiesOnce(SGDClassifier):
    """Kills its own worker process once, the first time it trains while ``arm`` exists."""

    def __init__(self, arm=None, loss="log_loss", random_state=None):
        super().__init__(loss=loss, random_state=random_state)
        self.arm = arm

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        died = f"{self.arm}.died"
        if self.arm and os.path.exists(self.arm) and not os.path.exists(died):
            open(died, "w").close()
            os.kill(os.getpid(), 9)
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)


def test_a_ray_worker_killed_mid_retrain_is_retried_and_exact(tmp_path, ray_session):
    X, y = make_classification(1500, 5)
    arm = str(tmp_path / "arm")
    model = fit(DiesOnce(arm=arm), X, y, tmp_path / "a", backend="ray")
    open(arm, "w").close()
    receipt = model.forget([10, 20, 30, 1000])
    assert os.path.exists(arm + ".died") and len(receipt["affected"]) >= 2
    keep = np.setdiff1d(np.arange(1500), [10, 20, 30, 1000])
    fresh = fit(SGDClassifier(loss="log_loss"), X[keep], y[keep], tmp_path / "b", keep)
    # every shard model bit for bit (DiesOnce, a subclass, is aggregated by the per-shard
    # loop and plain SGD by one product: the ensembles' sums differ in the last bits)
    for a, b in zip(model.estimators_, fresh.estimators_, strict=True):
        assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
    # (sisa.aggregate.gemm.bound: ~1e-7 with float32 rows, as here)
    assert np.allclose(model.predict_proba(X), fresh.predict_proba(X), rtol=0, atol=1e-6)
    assert np.array_equal(model.predict(X), fresh.predict(X))
    assert verify(model.store_, settings=LOCAL).ok


def test_refitting_over_a_store_with_an_audit_log_is_refused(tmp_path):
    X, y = make_classification(600, 3)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    model.fit(X, y)  # no deletions yet: refitting replaces the store
    model.forget([1])
    with pytest.raises(ValueError, match="audit log of 1 forget request"):
        model.fit(X, y)
    assert len(history(Store.open(tmp_path / "a"))) == 1


def test_unknown_ids_leave_nothing_behind_and_the_model_keeps_serving(tmp_path):
    X, y = make_classification(600, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    before = model.store_.fingerprint
    with pytest.raises(UnknownIdError, match="99999"):
        model.forget([6, 99999])
    assert not (tmp_path / "a" / "audit" / "intent.json").exists()  # no stray raw ids
    assert SISAClassifier.load(str(tmp_path / "a")).store_.fingerprint == before
    assert verify(model.store_, settings=LOCAL).ok
    model.predict(X[:5])


def test_a_failed_forget_leaves_the_model_refusing_to_predict_until_repaired(tmp_path,
                                                                             monkeypatch):
    X, y = make_classification(600, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    ref = fit(SGDClassifier(loss="log_loss"), X[1:], y[1:], tmp_path / "ref",
              ids=np.arange(1, 600))
    monkeypatch.setenv("SISA_CRASH_AT", "train:after-shards")
    with pytest.raises(Exception, match="injected crash"):
        model.forget([0])
    monkeypatch.delenv("SISA_CRASH_AT")
    with pytest.raises(StaleModelError, match="will not predict"):
        model.predict(X[:5])  # the in-memory models saw row 0
    with pytest.raises(StaleModelError):
        SISAClassifier.load(str(tmp_path / "a"))
    repair(Store.open(tmp_path / "a"), settings=LOCAL)
    model.refresh()
    assert ckpts(model) == ckpts(ref)
    assert np.array_equal(model.predict_proba(X), ref.predict_proba(X))


def test_a_leftover_intent_of_another_request_is_not_overwritten(tmp_path):
    X, y = make_classification(600, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    out = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "a"), "5"],
                         env={**os.environ, "SISA_CRASH_AT": "forget:after-intent",
                              "SISA_CRASH_MODE": "kill"}, capture_output=True)
    assert out.returncode == -9
    with pytest.raises(StaleModelError, match="run `sisa repair"):
        model.forget([7])  # would otherwise drop the interrupted request for id 5
    repair(Store.open(tmp_path / "a"), settings=LOCAL)
    store = Store.open(tmp_path / "a")
    assert not store.rows.locate([5])[0].any() and len(history(store)) == 1


def test_receipts_hash_the_ids_under_the_store_key(tmp_path):
    import hashlib

    from sisa.store.manifest import canonical_json
    from sisa.unlearn.receipts import ids_digest

    X, y = make_classification(600, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    r = model.forget([417])
    # guessing ids against a plain sha256 would find 417; the keyed digest gives no handle
    plain = {hashlib.sha256(canonical_json([[0, i]])).hexdigest() for i in range(1000)}
    assert r["ids_sha256"] not in plain
    assert ids_digest(model.store_, [417])[0] == r["ids_sha256"]  # the store can recompute it


def test_verify_fails_on_a_restored_backup_and_on_entries_outside_the_grid(tmp_path):
    X, y = make_classification(600, 4)
    model = fit(SGDClassifier(loss="log_loss"), X, y, tmp_path / "a")
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "a", backup)
    model.forget([417])
    assert verify(model.store_, settings=LOCAL).ok
    # a pre-forget backup restored under the audit log: row 417 is back
    rel = log_path(model.store_)
    log = (tmp_path / "a" / rel).read_bytes()
    shutil.rmtree(tmp_path / "a")
    shutil.copytree(backup, tmp_path / "a")
    (tmp_path / "a" / rel).write_bytes(log)
    rep = verify(Store.open(tmp_path / "a"), settings=LOCAL)
    assert not rep.ok and any("a backup from before it" in p for p in rep.problems)
    # a shard leaf naming a slice beyond the grid (e.g. an old slice smuggled back in)
    store = Store.open(backup)
    leaf = json.loads(mf.canonical_json(store.manifest.shard_leaf(0)))  # as on disk
    src = leaf["slices"]["0"]  # placed where a slice 3 would be: entries name their cell
    rel = src["file"].replace("slice=000", "slice=003")
    (backup / rel).parent.mkdir(parents=True)
    shutil.copy(backup / src["file"], backup / rel)
    raw = json.dumps({**leaf, "slices": {**leaf["slices"], "3": {**src, "file": rel}}},
                     sort_keys=True, separators=(",", ":")).encode()
    ref = store.manifest["shards"][0].to_json()
    digest = hashlib.sha256(raw).hexdigest()
    root = json.loads((backup / "manifest.json").read_text())["manifest"]
    new_rel = f"meta/shard-0000-{digest[:32]}.json"
    (backup / new_rel).write_bytes(raw)
    root["shards"][0] = {**ref, "file": new_rel, "sha256": digest, "bytes": len(raw)}
    body = json.dumps(root, sort_keys=True, separators=(",", ":")).encode()
    (backup / "manifest.json").write_bytes(
        b'{"checksum":"' + hashlib.sha256(body).hexdigest().encode() + b'","signature":"",'
        b'"manifest":' + body + b"}")
    with pytest.raises(CorruptStoreError, match="is not a shards leaf for shard 0"):
        Store.open(backup)


def test_a_rerun_after_a_finished_forget_left_its_intent_clears_it(tmp_path, monkeypatch):
    """A process killed after the commit and the log but before removing the intent (a
    repair, or the forget itself): rerunning the request replays it and removes the
    intent, so the store serves and verifies."""
    X, y = make_classification(600, 4)
    model = fit(SGDClassifier(random_state=0), X, y, tmp_path / "s", n_shards=2, n_slices=2)
    store = model.store_
    real = type(store.loc).delete
    monkeypatch.setattr(type(store.loc), "delete",
                        lambda loc, rel: None if rel == INTENT else real(loc, rel))
    first = model.forget([7])
    monkeypatch.undo()
    assert store.loc.exists(INTENT)
    again = model.forget([7])
    assert again["replayed"] and again["request_id"] == first["request_id"]
    assert not store.loc.exists(INTENT)
    assert verify(store, settings=LOCAL).ok
