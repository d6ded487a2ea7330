"""Where shard tasks run: an embedded local Ray, a Ray cluster, or this process.

Callers never touch Ray. ``run_shards`` picks:
- ``"local"``: in this process, one shard after another;
- ``"ray"``: one Ray task per shard (``num_cpus`` each, retried on failure);
- ``"auto"`` (default): one shard trains in this process; several go to Ray if a
  cluster address is set or Ray is already up. In a process without Ray, shards
  train here one by one until the measured time per shard says that the rest, spread
  over this machine's CPUs, would save more than Ray's start-up costs; then Ray
  starts and takes the rest. A small forget from the CLI never pays Ray's ~5 s
  start-up, a big fit does once. Every path gives identical bytes.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Sequence

from ..errors import InputError, SisaError
from ..progress import bar as progress_bar
from ..store.store import Store
from . import safe_pickle
from .train import ShardResult, TrainingError, train_shard

BACKENDS = ("auto", "ray", "local")
# Embedded Ray's start-up plus its workers' first imports, measured on the reference
# machine (2 cores): 5-6 s. Ray is started only when it should save more than this.
RAY_START_S = 6.0


def cluster_address(address: str | None = None) -> str | None:
    return address or os.environ.get("RAY_ADDRESS") or None


def connect(address: str | None = None, *, num_cpus: int | None = None,
            object_store_mb: int = 256):
    """Start (or join) Ray once per process and return the ``ray`` module.

    An already-initialised Ray (a notebook, a Ray Job, a test fixture) is reused as
    is. With ``address`` or ``RAY_ADDRESS`` sisa joins that cluster; otherwise it
    starts a private local instance: no dashboard, quiet logs, a modest object store,
    and token auth with a fresh in-memory token so nothing is written to ``$HOME``.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = cluster_address(address)
    if not address and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray

    if ray.is_initialized():
        return ray
    if address:
        ray.init(address=address, namespace="sisa", log_to_driver=False,
                 logging_level=logging.WARNING)
    else:
        # Loopback only: the embedded instance serves this process, not the network.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1",
                 object_store_memory=object_store_mb * 2**20, log_to_driver=False,
                 logging_level=logging.WARNING, namespace="sisa")
        _warm_workers(ray)
    return ray


_WARMING: list = []


def _import_training_stack() -> None:
    from sklearn import linear_model  # noqa: F401  (the usual shard model's module)

    from . import train  # noqa: F401


def _warm_workers(ray) -> None:
    """Start one worker per CPU and import the training stack there, in the background.

    A fresh Ray worker spends ~1-2 s importing scikit-learn and sisa before its first
    shard task; started now, that overlaps whatever the driver does next (building the
    store) instead of adding to the first fit. Nothing waits on these tasks.
    """
    n = int(ray.cluster_resources().get("CPU", 1))
    task = ray.remote(num_cpus=1, max_retries=0)(_import_training_stack)
    _WARMING[:] = [task.remote() for _ in range(n)]


def choose_backend(backend: str, n_jobs: int, address: str | None) -> str:
    """Where ``n_jobs`` shard jobs run: ``"local"``, ``"ray"``, or (``"auto"`` in a
    process without Ray) ``"adaptive"``: here first, Ray once it pays (module doc)."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if cluster_address(address):
        return "ray"
    if n_jobs <= 1:
        return "local"
    ray = sys.modules.get("ray")
    return "ray" if ray is not None and ray.is_initialized() else "adaptive"


def run_shards(
    store: Store | str,
    jobs: Sequence[tuple[int, int]],
    *,
    backend: str = "auto",
    address: str | None = None,
    num_cpus: float = 1,
    max_retries: int = 2,
    progress: bool = True,
    desc: str = "training shards",
    write: bool = True,
    on_result: Callable[[ShardResult], None] | None = None,
) -> list[ShardResult]:
    """Train every ``(shard, start_slice)`` in ``jobs``; returns one result per job.

    ``on_result`` is called in the driver as each shard finishes (used to commit
    progress, so an interrupted run keeps the shards already done).
    """
    if not jobs:
        return []
    kind = choose_backend(backend, len(jobs), address)
    bar = progress_bar(total=len(jobs), desc=desc, unit="shard", enabled=progress)
    t0, rows, out = time.perf_counter(), 0, []

    def done(res: ShardResult) -> None:
        nonlocal rows
        rows += res.rows_processed
        out.append(res)
        if on_result:
            on_result(res)
        bar.update(1)
        bar.set_postfix(rows_per_s=f"{rows / max(time.perf_counter() - t0, 1e-9):,.0f}")

    # Tasks get the manifest with the URI: they need not re-read it, and a staged store
    # (a fit not yet published) has its manifest only here.
    snapshot = (store.uri, store.manifest) if isinstance(store, Store) else store
    try:
        if kind == "ray":
            _run_ray(snapshot, jobs, address, num_cpus, max_retries, write, done)
            return sorted(out, key=lambda r: r.shard)
        cpus = os.cpu_count() or 1
        for i, (shard, start) in enumerate(jobs):
            done(train_shard(store, shard, start, write))
            left = jobs[i + 1:]
            if kind == "adaptive" and _ray_pays(time.perf_counter() - t0, i + 1, len(left),
                                                cpus / num_cpus):
                try:
                    connect(address)
                except Exception as exc:  # Ray was an optimisation here: carry on in process
                    warnings.warn(f"could not start Ray ({type(exc).__name__}: {exc}); training "
                                  "the remaining shards in this process", stacklevel=2)
                    kind = "local"
                    continue
                bar.set_description(f"{desc} (Ray started)")
                _run_ray(snapshot, left, address, num_cpus, max_retries, write, done)
                break
    finally:
        bar.close()
    return sorted(out, key=lambda r: r.shard)


def _ray_pays(elapsed: float, done: int, left: int, slots: float) -> bool:
    """Would ``left`` more jobs, at the mean time per job so far, finish sooner on
    ``slots`` parallel Ray workers after paying :data:`RAY_START_S`?"""
    if left < 2 or slots < 2:
        return False
    per_job = elapsed / done
    return per_job * left * (1 - 1 / min(slots, left)) > RAY_START_S


_REMOTES: dict = {}


def gpus_per_task(manifest: dict | None) -> int:
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

    model = (manifest or {}).get("model") or {}
    return int(cuda(model.get("estimator", {}).get("spec")))


def _remote_train(ray, num_cpus: float, max_retries: int, num_gpus: int = 0):
    """The Ray task wrapping ``train_shard``, made once per options: wrapping exports
    the function to the cluster again (~10 ms), which a 1-row forget should not pay.
    (Ray re-exports a remote function by itself after a new ``ray.init``.)"""
    key = (num_cpus, max_retries, num_gpus)
    if key not in _REMOTES:
        # Application errors are retried too: on shared storage most are transient I/O.
        _REMOTES[key] = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus,
                                   max_retries=max_retries,
                                   retry_exceptions=True)(train_shard)
    return _REMOTES[key]


def _run_ray(snapshot, jobs, address, num_cpus, max_retries, write, done) -> None:
    ray = connect(address)
    gpus = gpus_per_task(snapshot[1] if isinstance(snapshot, tuple) else None)
    remote = _remote_train(ray, num_cpus, max_retries, gpus)
    ref = ray.put(snapshot)  # one copy in the object store, not one per task
    trusted = safe_pickle.trusted_modules()  # the driver's trust, for the worker's loads
    pending = {remote.remote(ref, s, start, write, trusted): s for s, start in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        shard = pending.pop(ref)
        try:
            done(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            for r in pending:
                ray.cancel(r)
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if isinstance(cause, SisaError):
                raise cause from None
            raise TrainingError(shard, -1, str(cause or exc), str(exc)) from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.TaskUnschedulableError) as exc:
            for r in pending:
                ray.cancel(r)
            raise TrainingError(shard, -1, f"the Ray worker died after {max_retries} retries "
                                f"({type(exc).__name__}); the store is unchanged, rerun or "
                                "`sisa repair` to finish", str(exc)) from None
