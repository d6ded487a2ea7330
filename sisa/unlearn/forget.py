"""forget → exact unlearning of rows, and ``repair`` of an interrupted forget.

A forget runs in four durable steps, each of which a rerun or ``repair`` resumes:

1. ``audit/intent.json`` records the request (and its ids, which the store holds
   anyway until step 2 lands);
2. one manifest commit replaces the affected slices, index and tombstones, drops
   every checkpoint from each affected shard's earliest affected slice on, and
   journals ``pending``; the superseded files are then deleted and the intent with
   them;
3. each affected shard retrains from its last clean checkpoint, committed shard by
   shard;
4. the journal is cleared in the same commit that chains the (signed) receipt onto the
   audit log's committed head; the receipt is then appended to the log.

The ids are resolved once (:func:`sisa.store.write.deletion.resolve`): the receipt's digest,
the deletion and the retrain plan all come from that one result.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace

from .._crash import crashpoint
from ..engine import checkpoints as ck
from ..engine import driver
from ..engine.train import schedule_of
from ..errors import CorruptStoreError, InputError, SisaError, StaleModelError, StoreError
from ..store.format.layout import INTENT
from ..store.manifest import RetrainPlan, now_iso
from ..store.manifest.journal import JournalEntry
from ..store.store import Store
from ..store.write import deletion
from ..tasks.settings import ExecutionSettings
from . import receipts, timings
from .records import ForgetRequest, Intent, Receipt, SealedReceipt, ServiceRequest


def forget(store: Store, ids, *, record_ids: bool = False,
           settings: ExecutionSettings | None = None,
           requests: Sequence[ServiceRequest | dict] | None = None,
           named: dict | None = None, loaded: dict | None = None) -> dict:
    """Exactly unlearn the rows with these sample ids; returns the receipt.

    Parameters
    ----------
    store : Store
        A store holding a trained model.
    ids : iterable of int or str
        Sample ids to forget, as one batch: each affected shard retrains once.
    record_ids : bool, default=False
        Keep the raw ids in the receipt (by default only their keyed digest).
    settings : ExecutionSettings, optional
        Where the retrain runs (default: ``ExecutionSettings()``).
    requests, named : list of ServiceRequest (or its JSON dict) and dict, optional
        The service requests this batch answers (``sisa serve``: request id, keyed ids digest
        and count of each, no raw ids) and its groups (:mod:`sisa.unlearn.groups`): in the
        intent, journal and signed receipt, so ``repair`` after a crash still names them.
    loaded : dict, optional
        Filled with the models retrained here (:attr:`.train.ShardResult.models`).

    Returns
    -------
    dict
        The receipt (request id, ids digest, affected (shard, slice) pairs, rows retrained,
        fingerprints...); beside it, unsigned, ``timings`` (:mod:`sisa.unlearn.timings`).

    Raises
    ------
    UnknownIdError
        Some ids were never in the store; nothing changes.
    StaleModelError
        Another forget is unfinished; run ``repair`` first.
    TrainingError
        A shard failed to retrain: the request was rolled back (nothing deleted).
    """
    settings = settings or ExecutionSettings()
    served = _service_requests(requests)
    laps = timings.Laps()
    ids = store.rows.id_array(ids)  # once: a generator given as ids is read one time only
    if len(ids) == 0 and not served:  # a service batch whose ids are all absent: a receipt
        raise InputError("no sample ids given: pass at least one id to forget")
    with store.lock():
        digest, canon = receipts.ids_digest(store, ids)
        done = _resumed_or_replayed(store, digest, canon, settings, served)
        if done is not None:
            return laps.attach(done, "plan_s")
        resolved = deletion.resolve(store, canon)  # unknown ids: raise before any write
        change = deletion.prepare(store, resolved)  # <2 classes: refused before any write
        request = _request(store, resolved, change, digest, record_ids, served, named)
        _check_resume_points(store, change.plan)
        laps.lap("plan_s")
        # Not fsynced: it survives a killed process; after a power loss without it the store
        # is as before the request (nothing is committed until _apply's one write).
        store.loc.write_atomic(INTENT, _intent_bytes(request, canon), durable=False)
        crashpoint("forget:after-intent")
        sealed = _apply(store, change, request, settings, laps, loaded)
        store.loc.delete(INTENT)
        receipts.sync_log(store)
        return laps.attach(sealed.to_json(), "log_s")


def _apply(store: Store, change: deletion.Deletion, request: ForgetRequest,
           settings: ExecutionSettings, laps: timings.Laps,
           loaded: dict | None = None) -> SealedReceipt:
    """Stage the deletion (new files, nothing committed), retrain the plan's shards from
    the staged state, then commit data, checkpoints and the sealed receipt in one
    manifest write. A crash before that write leaves the store as it was plus the
    intent (a rerun or ``repair`` redoes the request); after it, the request is done. A
    sisa error before that write (a shard that fails to retrain) rolls it back."""
    try:
        return _stage_retrain_commit(store, change, request, settings, laps, loaded)
    except _NotCommitted as failed:
        raise _roll_back(store, failed.error) from None


def _stage_retrain_commit(store: Store, change: deletion.Deletion, request: ForgetRequest,
                          settings: ExecutionSettings, laps: timings.Laps,
                          loaded: dict | None) -> SealedReceipt:
    # One group commit for what this process writes (new slices, index and tombstone
    # buckets, checkpoints trained here, leaves, the root, the audit log's last line): one
    # parallel round of fsyncs just before the root is renamed into place, then the root's
    # folder (sisa.store.io.localfs.publish).
    with store.loc.batch():
        try:
            if len(change.resolved.found_ids) == 0:  # every id was deleted by earlier requests
                staged, rows = store.manifest, 0
            else:
                staged = deletion.stage(store, change)
                crashpoint("forget:after-stage")
                laps.lap("write_data_s")
                results = driver.train_shards(Store(store.uri, staged), change.plan, settings,
                                              desc="retraining shards")
                laps.retrain(results)
                staged = staged.with_checkpoints([m for res in results
                                                  for m in res.checkpoints])
                rows = sum(res.rows_processed for res in results)
                if loaded is not None:
                    for res in results:
                        loaded.update(res.models)
            receipt = _receipt(Store(store.uri, staged), request, rows_retrained=rows,
                               already=len(change.resolved.already_deleted))
            sealed, audit = receipts.seal(store, receipt)
            laps.lap("receipt_s")
        except SisaError as exc:  # sisa's own error (a crash is not one): undo, then say why
            raise _NotCommitted(exc) from exc
        store.commit(staged.with_receipt(sealed.to_json(), audit))
        laps.lap("commit_s")
    crashpoint("forget:before-log")
    return sealed


class _NotCommitted(Exception):
    """A forget failed before its one commit: the committed state is still the last one."""

    def __init__(self, error: SisaError) -> None:
        super().__init__(str(error))
        self.error = error


def _roll_back(store: Store, error: SisaError) -> SisaError:
    """Undo a forget that failed before its commit (a retrain error is deterministic: the
    same rows and model fail again, so leaving the request for ``repair`` would leave the
    store unable to serve for good). The staged files go, then the intent: the last
    committed model keeps serving and verifying, and the request can be made again.
    Returns ``error`` with one line saying so."""
    store.collect_garbage()  # the staged slices, index, tombstones and checkpoints
    store.loc.delete(INTENT)
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
    error.args = (f"{cause}; the forget was rolled back: no row was deleted and the last "
                  "committed model still serves; fix the cause, then forget these ids again",)
    return error


def _resumed_or_replayed(store: Store, digest: str, canon, settings: ExecutionSettings,
                         requests: tuple[ServiceRequest, ...]) -> dict | None:
    """The receipt of this very request if it was interrupted (finished now) or is done
    (replayed); an error if another request is unfinished; else None."""
    resumed = _resume_or_refuse(store, digest, settings)
    if resumed is not None:
        return resumed
    done = _replayed(store, digest, canon, requests)
    if done is not None:  # finished (its intent, if left, is this request's: see below)
        store.loc.delete(INTENT)
    return done


def _resume_or_refuse(store: Store, digest: str, settings: ExecutionSettings) -> dict | None:
    """The receipt of this very request if it was interrupted after its deletion
    (finished now); an error if another request is unfinished; else None."""
    if not store.manifest.model:
        raise StaleModelError(f"store {store.uri} has no trained model: fit one first")
    pending = store.manifest.pending
    if pending:
        req = journaled_request(pending)
        if pending.kind == "forget" and req is not None and req.ids_sha256 == digest:
            return _complete(store, settings, resumed=True).to_json()
        raise StaleModelError(
            f"store {store.uri} has an unfinished {pending.kind}"
            f"{' (request ' + req.request_id + ')' if req else ''}: run `sisa repair "
            f"{store.uri}` before forgetting more rows")
    if store.loc.exists(INTENT):
        left = _read_intent(store).request
        if left.ids_sha256 != digest:  # never overwrite another unfinished request
            raise StaleModelError(
                f"store {store.uri}: an interrupted forget (request {left.request_id}) "
                f"left {INTENT}; run `sisa repair {store.uri}` to finish it first")
        store.collect_garbage()  # its half-written files: leave what `repair` would
    return None


def _replayed(store: Store, digest: str, canon, requests: tuple[ServiceRequest, ...]
              ) -> dict | None:
    """The logged receipt of these very ids if none of them is stored any more: a replayed
    request is a no-op that returns its receipt. Service requests it does not name are
    new requests: they get a receipt of their own (one that changes nothing)."""
    receipts.sync_log(store)  # a crash may have come between the commit and the log
    if store.rows.locate(canon)[0].any():
        return None  # some id is still stored: not a replay (no need to read the log)
    done = receipts.find(store, ids_sha256=digest)
    named = {q["request_id"] for q in (done or {}).get("requests") or ()}
    if done is None or not {q.request_id for q in requests} <= named:
        return None
    return {**done, "replayed": True}


def _request(store: Store, resolved: deletion.Resolved, change: deletion.Deletion,
             digest: str, record_ids: bool, requests: tuple[ServiceRequest, ...],
             named: dict | None = None) -> ForgetRequest:
    """What the intent, the journal and the receipt record of the request (with ``named``:
    the groups of a forget by group, as :func:`receipts.groups_named` gives them)."""
    named = named or {}
    removed = change.removed_classes or None
    return ForgetRequest(
        request_id=uuid.uuid4().hex, requested_at=now_iso(), started=time.time(),
        ids_sha256=digest, n_ids=len(resolved.ids), fingerprint_before=store.fingerprint,
        affected=tuple((int(s), int(r)) for s, r in change.plan.pairs()),
        ids=tuple(resolved.ids.to_pylist()) if record_ids else None,
        requests=requests or None,
        groups_sha256=named.get("groups_sha256"), n_groups=named.get("n_groups"),
        group_hashes=_tuple(named.get("group_hashes")), groups=_tuple(named.get("groups")),
        groups_already_forgotten=named.get("groups_already_forgotten"),
        # The class list is part of what a fresh fit learns: every shard retrains from
        # slice 0, and the receipt says why it cost more.
        classes_removed=None if removed is None else tuple(removed),
        reason=None if removed is None else (
            f"class(es) {removed} lost their last rows: the model's class list changes, so "
            "every shard retrains from its first slice"))


def _service_requests(requests: Sequence[ServiceRequest | dict] | None
                      ) -> tuple[ServiceRequest, ...]:
    """The caller's service requests, typed (a malformed one: InputError, nothing done)."""
    return tuple(q if isinstance(q, ServiceRequest) else ServiceRequest.from_json(
        q, "a service request given to forget", error=InputError) for q in requests or ())


def _intent_bytes(request: ForgetRequest, canon) -> bytes:
    """``audit/intent.json``: the request and its ids (as written before it was typed)."""
    return json.dumps(Intent(request=request, ids=tuple(canon.to_pylist())).to_json()).encode()


def _tuple(v) -> tuple | None:
    return None if v is None else tuple(v)


def journaled_request(pending: JournalEntry) -> ForgetRequest | None:
    """The request an older store's forget journaled (None for another kind of run)."""
    if pending.request is None:
        return None
    return ForgetRequest.from_json(pending.request, "the journaled forget request")


def _check_resume_points(store: Store, plan: RetrainPlan) -> None:
    """The checkpoints the retrain will resume from must load, or the deletion would be
    committed and then stop half way: check them before anything is written."""
    sched = schedule_of(store)
    for s, r in sorted(plan.items()):
        prev = sched.resume_from(r)  # None: from scratch (slice 0, or a refit model)
        meta = store.manifest.checkpoint(s, prev) if prev is not None else None
        if meta is None:
            continue  # from scratch, or already missing: the journal retrains from the gap
        try:
            ck.load_verified(store, meta)
        except SisaError as exc:
            raise CorruptStoreError(
                f"the checkpoint shard {s} would resume from (slice {r - 1}) is damaged "
                f"({str(exc)[:120]}): run `sisa repair {store.uri}` (it retrains it from the "
                "data), then forget again; nothing was changed") from None


def _read_intent(store: Store) -> Intent:
    """The intent, checked against itself: its ids must give its own keyed digest. One
    that does not was edited or planted by someone without the store's key; acting on it
    (or asking to repair it, which would act on it) is refused."""
    try:
        raw = json.loads(store.loc.read_bytes(INTENT).to_pybytes())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise CorruptStoreError(f"{store.loc.path(INTENT)} is not a forget request "
                                f"({type(exc).__name__}): it was damaged or edited; move it out "
                                "of the store (nothing was changed), then run `sisa repair` "
                                "again") from None
    intent = Intent.from_json(raw, str(store.loc.path(INTENT)))  # a bad field: named
    try:
        digest = receipts.ids_digest(store, list(intent.ids))[0]
    except SisaError as exc:
        raise CorruptStoreError(f"{store.loc.path(INTENT)} is not a forget request "
                                f"({type(exc).__name__}): its ids are not of this store's id "
                                "type; move it out of the store (nothing was changed), then "
                                "run `sisa repair` again") from None
    if not hmac.compare_digest(digest, intent.request.ids_sha256):
        raise CorruptStoreError(
            f"{store.loc.path(INTENT)} names ids that do not give its own keyed digest: it was "
            "edited or planted by someone without the store's key, and nothing was run; move "
            "it out of the store (keep it as evidence), then run `sisa repair` again")
    return intent


def _close(store: Store, receipt: Receipt) -> SealedReceipt:
    """Chain and sign the receipt, commit it with the journal cleared, then log it."""
    sealed, audit = receipts.seal(store, receipt)
    if store.manifest.pending:
        driver.finish(store, last_receipt=sealed.to_json(), audit=audit)
    else:
        store.commit(store.manifest.with_receipt(sealed.to_json(), audit))
    crashpoint("forget:before-log")
    receipts.sync_log(store)
    return sealed


def _full_retrain_rows(store: Store) -> int:
    """Rows a full retrain would process: per shard from its slice sizes."""
    sched = schedule_of(store)
    return sum(store.manifest.shard_parts(f"full-rows {sched}", lambda leaf: sched.rows(
        [leaf["slices"][str(r)].rows for r in range(len(leaf["slices"]))])))


def _receipt(store: Store, request: ForgetRequest, *, rows_retrained: int,
             already: int = 0) -> Receipt:
    started = request.started if request.started is not None else time.time()
    return Receipt(
        request=replace(request, started=None),  # the clock is the intent's, not signed
        shards_emptied=tuple(s for s, _ in request.affected if store.shard_rows(s) == 0),
        rows_retrained=int(rows_retrained),
        rows_full_retrain=int(_full_retrain_rows(store)),
        already_deleted=already,
        wall_time_s=round(time.time() - started, 4),
        completed_at=now_iso(),
        fingerprint_after=store.fingerprint,
        tombstones_after=store.rows.tombstones_digest(),
    )


def _complete(store: Store, settings: ExecutionSettings, already: int = 0,
              resumed: bool = False) -> SealedReceipt:
    """Retrain what the journal says is left, then close it with the receipt."""
    if resumed:  # leftovers of the interrupted step may hold deleted rows
        store.collect_garbage()
        store.loc.delete(INTENT)  # the journal in the manifest supersedes it
    driver.run_pending(store, settings, desc="retraining shards")
    pending = store.manifest.pending
    request = None if pending is None else journaled_request(pending)
    if pending is None or request is None:  # the journal stays until `_close` clears it
        raise StoreError(f"internal: the journal of the forget on {store.uri} is gone")
    return _close(store, _receipt(store, request, rows_retrained=pending.rows_processed or 0,
                                  already=already))


def repair(store: Store, *, settings: ExecutionSettings | None = None) -> dict:
    """Bring an interrupted store to the state its last request asked for.

    Finishes (or redoes) an interrupted forget, retrains shards lacking checkpoints,
    removes files no manifest names, and logs a receipt that was committed but not
    yet logged. Safe to run at any time; a healthy store is left as it is. An
    interrupted forget whose retrain fails is rolled back like any failed forget (its
    error is raised; the last committed model serves), so ``repair`` never stays stuck
    on it.

    Returns
    -------
    dict
        ``completed_request``, ``retrained_shards``, ``removed_files``,
        ``damaged_checkpoints`` and ``log_restored``.
    """
    settings = settings or ExecutionSettings()
    with store.lock():
        summary: dict = {"completed_request": None, "retrained_shards": [], "removed_files": [],
                         "damaged_checkpoints": _drop_damaged_checkpoints(store)}
        if store.loc.exists(INTENT) and not store.manifest.pending:
            intent = _read_intent(store)
            left = intent.request
            receipt = forget(store, list(intent.ids), record_ids=left.ids is not None,
                             settings=settings,
                             requests=left.requests,
                             named=receipts.named_of(left))
            summary["completed_request"] = receipt["request_id"]
        store.loc.delete(INTENT)
        summary["removed_files"] = store.collect_garbage()
        if store.manifest.model:
            pending = store.manifest.pending
            summary["retrained_shards"] = sorted(store.manifest.pending_plan())
            if pending and pending.kind == "forget":
                summary["completed_request"] = _complete(store, settings,
                                                         resumed=True).request_id
            elif pending or summary["retrained_shards"]:
                driver.train(store, settings, desc="repairing shards")
        summary["log_restored"] = receipts.sync_log(store)
        return summary


def _drop_damaged_checkpoints(store: Store) -> list[str]:
    """Hash-check every file the manifest names, and load every checkpoint through the
    restricted unpickler. A missing, altered or unloadable checkpoint (a forged pickle
    whose hash was recomputed included) is dropped with the later ones of its shard, to
    be retrained from the data; anything else (data, index, tombstones) cannot be rebuilt
    and raises."""
    if store.manifest.model:
        ck.prototype(store)  # a spec that cannot be rebuilt safely cannot be retrained from
    ckpt_files = {m.file: m for m in store.manifest.checkpoints.values()}
    damaged: list[tuple[int, int]] = []  # (shard, slice) of each damaged checkpoint
    bad_other: list[str] = []
    for rel, meta in store.referenced_files().items():
        try:
            if rel in ckpt_files:
                ck.load_verified(store, meta)
            else:
                store.loc.read_verified(rel, meta.sha256)
        except (SisaError, OSError):
            if rel in ckpt_files:
                damaged.append((ckpt_files[rel].shard, ckpt_files[rel].slice))
            else:
                bad_other.append(rel)
    if bad_other:
        raise CorruptStoreError(
            f"{len(bad_other)} file(s) that cannot be rebuilt are missing or damaged, e.g. "
            f"{store.loc.path(bad_other[0])}: restore the store from backup")
    plan = RetrainPlan.of(damaged)
    if plan:
        store.commit(store.manifest.without_checkpoints(plan))
    return [f"shard {s} from slice {r}" for s, r in sorted(plan.items())]
