"""The driver side of training: record the model spec, run shard jobs, commit results.

What is left to train is read off the manifest itself: for every shard, the first
slice without a checkpoint. A run first drops the checkpoints it will rewrite and
journals ``pending = {"kind": ...}``, then commits each shard as it finishes. An
interrupted run therefore leaves a store that knows exactly what is left to do,
and a model that refuses to serve until ``repair`` has done it.
"""

from __future__ import annotations

from sklearn.base import clone, is_classifier

from .._crash import crashpoint
from ..errors import StaleModelError
from ..store.store import INTENT, Store, editable, slice_key
from . import checkpoints as ck
from . import spec as _spec
from .backend import run_shards
from .schedule import SCHEDULES, is_incremental
from .train import ShardResult


def _jsonable(v):
    return v.item() if hasattr(v, "item") else v


def model_spec(store: Store, estimator, *, classes, schedule: str, epochs: int,
               aggregation: str) -> dict:
    """The manifest's ``model`` entry. The unfitted estimator is recorded as a declarative
    spec (no pickle: rebuilding it runs no code from the store); ``class`` and ``params``
    (reprs) are for people. Raises InputError when the spec cannot express a parameter
    or names a class the store could not rebuild (a module not trusted)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
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


def drop_checkpoints(model: dict, jobs: dict[int, int]) -> None:
    """Remove (in a manifest being built) the checkpoints that ``jobs`` will rewrite."""
    model["checkpoints"] = {
        k: v for k, v in model["checkpoints"].items()
        if not (v["shard"] in jobs and v["slice"] >= jobs[v["shard"]])
    }


def start(store: Store, kind: str, jobs: dict[int, int], **extra) -> None:
    """Journal a run: drop the checkpoints the jobs will rewrite, mark it pending."""
    new = editable(store.manifest)
    drop_checkpoints(new["model"], jobs)
    new["pending"] = {"kind": kind, **extra}
    store.commit(new)


def pending_jobs(store: Store) -> dict[int, int]:
    """shard -> first slice lacking a checkpoint, for every shard not fully trained."""
    done = store.manifest["model"]["checkpoints"]
    jobs = {}
    for s in range(store.n_shards):
        for r in range(store.n_slices):
            if slice_key(s, r) not in done:
                jobs[s] = r
                break
    return jobs


def commit_result(store: Store, res: ShardResult) -> None:
    new = editable(store.manifest)
    for meta in res.checkpoints:
        new["model"]["checkpoints"][slice_key(meta["shard"], meta["slice"])] = meta
    if new.get("pending"):
        new["pending"]["rows_processed"] = (new["pending"].get("rows_processed", 0)
                                            + res.rows_processed)
    store.commit(new)
    crashpoint("train:after-shard-commit")


def run(store: Store, *, backend="auto", address=None, num_cpus=1, progress=True,
        desc="training shards") -> list[ShardResult]:
    """Train every pending shard job, committing each as it finishes."""
    jobs = sorted(pending_jobs(store).items())
    return run_shards(store, jobs, backend=backend, address=address, num_cpus=num_cpus,
                      progress=progress, desc=desc,
                      on_result=lambda res: commit_result(store, res))


def finish(store: Store, **extra) -> dict:
    """Clear the journal once no shard is pending; returns what it held."""
    pending = store.manifest.get("pending") or {}
    if pending_jobs(store):
        raise StaleModelError(f"store {store.uri}: shards {sorted(pending_jobs(store))} are still"
                              f" pending; run `sisa repair {store.uri}`")
    new = editable(store.manifest)
    new["pending"] = None
    new.update(extra)
    store.commit(new)
    return pending


def final_models(store: Store) -> list:
    """The last checkpoint of every shard (None for a shard with no rows), hash-checked."""
    ensure_servable(store)
    R = store.n_slices
    out = []
    for s in range(store.n_shards):
        meta = ck.checkpoint_meta(store, s, R - 1)
        out.append(None if meta is None else ck.load_verified(store, meta))
    return out


def ensure_servable(store: Store) -> None:
    """Refuse to serve a model whose store has an unfinished run or lacks checkpoints."""
    model = store.manifest.get("model")
    if not model:
        raise StaleModelError(f"store {store.uri} holds data but no trained model: train one "
                              "with `sisa train` or SISAClassifier.fit")
    pending = store.manifest.get("pending")
    missing = sorted(pending_jobs(store))
    intent = store.loc.exists(INTENT)
    if pending or missing or intent:
        what = (f"an unfinished {pending['kind']}" if pending else
                "an interrupted forget request" if intent else "missing checkpoints")
        raise StaleModelError(
            f"store {store.uri} has {what} (shards {missing[:10]} not retrained): it will not "
            f"predict until it is repaired; run `sisa repair {store.uri}`"
        )
