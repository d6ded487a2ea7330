"""The driver side of training: record the model spec, run shard jobs, commit results.

What is left to train is read off the manifest itself: for every shard, the first
slice without a checkpoint (its :class:`~sisa.store.manifest.RetrainPlan`). A run first
drops the checkpoints it will rewrite and journals ``pending = {"kind": ...}``, then
commits each shard as it finishes. An interrupted run therefore leaves a store that
knows exactly what is left to do, and a model that refuses to serve until ``repair``
has done it. :func:`train` is the one entry point for fit, forget and repair.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sklearn.base import clone, is_classifier

from .._crash import crashpoint
from ..errors import InputError, SisaError, StaleModelError
from ..store.format.layout import INTENT
from ..store.manifest import RetrainPlan
from ..store.manifest.journal import JournalEntry, JournalKind
from ..store.store import Store
from ..tasks.backend import TaskError, map_tasks
from ..tasks.settings import ExecutionSettings
from . import checkpoints as ck
from . import safe_pickle
from . import spec as _spec
from .schedule import SCHEDULES, is_incremental
from .train import ShardResult, TrainingError, train_shard

# Seconds between commits of a long run (see _CommitBatch).
COMMIT_EVERY_S = 1.0


def _jsonable(v):
    return v.item() if hasattr(v, "item") else v


def model_spec(estimator, *, classes, schedule: str, epochs: int, aggregation: str) -> dict:
    """The manifest's ``model`` entry. The unfitted estimator is recorded as a declarative
    spec (no pickle: rebuilding it runs no code from the store); ``class`` and ``params``
    (reprs) are for people. Raises InputError when the spec cannot express a parameter
    or names a class the store could not rebuild (a module not trusted)."""
    if schedule not in SCHEDULES:
        raise InputError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    proto = clone(estimator)
    params = {k: repr(v) for k, v in sorted(proto.get_params(deep=False).items())}
    return {
        "estimator": {"class": f"{type(proto).__module__}.{type(proto).__qualname__}",
                      "params": params, "spec": _spec.check(proto)},
        "task": "classification" if is_classifier(proto) else "regression",
        "classes": None if classes is None else [_jsonable(c) for c in classes],
        "schedule": schedule,
        "epochs": int(epochs),
        "incremental": is_incremental(proto),
        "aggregation": aggregation,
        "checkpoints": {},
    }


def fit(store: Store, spec: dict, settings: ExecutionSettings, *,
        desc: str = "training shards") -> list[ShardResult]:
    """Fit the model ``spec`` (:func:`model_spec`) on every shard and commit it, the
    checkpoints with it, in one write: until then the store's last committed model (if
    any) is the one it serves, and a fit that fails (a training error, or a checkpoint
    that would not load back) leaves it so, its written files removed.

    Parameters
    ----------
    store : Store
        Locked by the caller; a staged store (``Store.building``) or a published one.
    spec : dict
    settings : ExecutionSettings

    Returns
    -------
    list of ShardResult
    """
    plan = RetrainPlan.everything(store.n_shards)
    staged = store.manifest.with_model(spec).with_run("fit", plan)
    try:
        results = train_shards(Store(store.uri, staged), plan, settings, desc=desc)
    except SisaError:
        if not store.staged:  # a build removes its own files; here, what the shards wrote
            store.collect_garbage()
        raise
    metas = [m for res in results for m in res.checkpoints]
    rows = sum(res.rows_processed for res in results)
    store.commit(staged.with_checkpoints(metas, rows).with_run_done())
    return results


def train(store: Store, settings: ExecutionSettings, *, restart: RetrainPlan | None = None,
          kind: JournalKind = "fit", desc: str = "training shards",
          close: Callable[[Store], dict] | None = None) -> list[ShardResult]:
    """Train what the store lacks, committing shard by shard, then clear the journal.

    Parameters
    ----------
    store : Store
        Locked by the caller.
    settings : ExecutionSettings
    restart : RetrainPlan, optional
        Retrain these shards from these slices: their later checkpoints are dropped and
        the run journalled as ``kind`` first. Without it, the run resumes the journal
        (a forget's deletion journals its own plan in the commit that deletes the rows).
    close : callable, optional
        ``close(store) -> dict`` of manifest fields committed with the journal cleared,
        once every shard is trained (a forget's sealed receipt).

    Returns
    -------
    list of ShardResult
    """
    if restart is not None:
        store.commit(store.manifest.with_run(kind, restart))
    results = run_pending(store, settings, desc=desc)
    finish(store, **(close(store) if close else {}))
    return results


def run_pending(store: Store, settings: ExecutionSettings, *, desc: str = "training shards"
                ) -> list[ShardResult]:
    """Train every pending shard job, committing finished shards in batches."""
    batch = _CommitBatch(store)
    try:
        return train_shards(store, store.manifest.pending_plan(), settings, desc=desc,
                            on_result=batch.add)
    finally:
        batch.commit()  # what finished is kept, even when a later shard failed


class _CommitBatch:
    """Commits finished shards at most every :data:`COMMIT_EVERY_S` seconds: an
    interrupted run keeps what was committed, and a fit of many small shards does not
    write the root manifest once per shard."""

    def __init__(self, store: Store) -> None:
        self.store, self.results = store, []
        self.last = time.monotonic()

    def add(self, res: ShardResult) -> None:
        self.results.append(res)
        if time.monotonic() - self.last >= COMMIT_EVERY_S:
            self.commit()

    def commit(self) -> None:
        if self.results:
            metas = [m for res in self.results for m in res.checkpoints]
            rows = sum(res.rows_processed for res in self.results)
            self.store.commit(self.store.manifest.with_checkpoints(metas, rows))
            self.results = []
            crashpoint("train:after-shard-commit")
        self.last = time.monotonic()


def train_shards(store: Store, plan: RetrainPlan, settings: ExecutionSettings, *,
                 desc: str = "training shards", write: bool = True,
                 on_result: Callable[[ShardResult], None] | None = None) -> list[ShardResult]:
    """Train every shard of ``plan`` from its first slice on, as tasks (one per shard).

    With ``write=False`` nothing is written: each result only carries its checkpoints'
    hashes (``verify`` uses this). Results come back sorted by shard.
    """
    jobs = sorted(plan.items())
    # Tasks get the manifest with the URI: they need not re-read it, and a staged store
    # (a fit not yet published) has its manifest only here.
    snapshot = (store.uri, store.manifest)
    trusted = safe_pickle.trusted_modules()  # the driver's trust, for the workers' loads
    try:
        results = map_tasks(
            train_shard, [(s, start, write, trusted) for s, start in jobs],
            settings, shared=(snapshot,), desc=desc,
            unit="shard", num_gpus=gpus_per_task(store.manifest),
            on_result=(lambda i, res: on_result(res)) if on_result else None)
    except TaskError as exc:
        raise TrainingError(jobs[exc.index][0], -1, exc.cause, exc.original_traceback) from None
    crashpoint("train:after-shards")
    return sorted(results, key=lambda r: r.shard)


def finish(store: Store, **fields) -> JournalEntry | None:
    """Clear the journal once no shard is pending; returns what it held."""
    pending = store.manifest.pending
    left = store.manifest.pending_plan()
    if left:
        raise StaleModelError(f"store {store.uri}: shards {sorted(left)} are still"
                              f" pending; run `sisa repair {store.uri}`")
    store.commit(store.manifest.with_run_done(**fields))
    return pending


def gpus_per_task(manifest: Mapping) -> int:
    """1 when the store's shard model trains on a GPU (an estimator in its spec, pipeline
    steps included, has ``device="cuda..."``, e.g. :class:`sisa.deep.TorchClassifier`),
    else 0: Ray then places each shard task on a GPU worker."""
    def cuda(v) -> bool:
        if isinstance(v, dict):
            params = v.get("params")
            if isinstance(params, dict) and str(params.get("device", "")).startswith("cuda"):
                return True
            return any(cuda(x) for x in v.values())
        return isinstance(v, list) and any(cuda(x) for x in v)

    model = manifest.get("model") or {}
    return int(cuda(model.get("estimator", {}).get("spec")))


def final_models(store: Store, loaded: Mapping[str, object] | None = None, *,
                 with_hashes: bool = False):
    """The last checkpoint of every shard (None for a shard with no rows), hash-checked.
    ``loaded`` maps checkpoint sha256s to models already loaded (after a forget only the
    retrained shards are read again, if they were not handed over). With
    ``with_hashes``, also ``{sha256: model}`` of the models returned."""
    ensure_servable(store)
    R, loaded = store.n_slices, loaded or {}
    out, hashes = [], {}
    for s in range(store.n_shards):
        meta = store.manifest.checkpoint(s, R - 1)
        if meta is None:
            out.append(None)
            continue
        model = loaded.get(meta.sha256)
        out.append(ck.load_verified(store, meta) if model is None else model)
        hashes[meta.sha256] = out[-1]
    return (out, hashes) if with_hashes else out


def ensure_servable(store: Store) -> None:
    """Refuse to serve a model whose store has an unfinished run or lacks checkpoints."""
    if not store.manifest.model:
        raise StaleModelError(f"store {store.uri} holds data but no trained model: train one "
                              "with `sisa train` or SISAClassifier.fit")
    pending = store.manifest.pending
    missing = sorted(store.manifest.pending_plan())
    intent = store.loc.exists(INTENT)
    if pending or missing or intent:
        what = (f"an unfinished {pending.kind}" if pending else
                "an interrupted forget request" if intent else "missing checkpoints")
        shards = f" (shards {missing[:10]} not retrained)" if missing else ""
        raise StaleModelError(
            f"store {store.uri} has {what}{shards}: it will not predict until it is "
            f"repaired; run `sisa repair {store.uri}`")
