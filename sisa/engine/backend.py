"""Where shard tasks run: an embedded local Ray, a Ray cluster, or this process.

Callers never touch Ray. ``run_shards`` picks:
- ``"local"``: in this process, one shard after another;
- ``"ray"``: one Ray task per shard (``num_cpus`` each, retried on failure);
- ``"auto"`` (default): Ray when more than one shard must train or Ray is already
  up or a cluster address is set; otherwise local, so a single-shard retrain in a
  fresh CLI process does not pay Ray's 2-4 s start-up. Both give identical bytes.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from ..errors import InputError, SisaError
from .train import ShardResult, TrainingError, train_shard

BACKENDS = ("auto", "ray", "local")


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
    return ray


def _ray_ready(address: str | None) -> bool:
    ray = sys.modules.get("ray")
    return bool(cluster_address(address)) or bool(ray and ray.is_initialized())


def choose_backend(backend: str, n_jobs: int, address: str | None) -> str:
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    return "ray" if n_jobs > 1 or _ray_ready(address) else "local"


def run_shards(
    store_uri: str,
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
    bar = tqdm(total=len(jobs), desc=desc, unit="shard", disable=not progress, leave=False,
               file=sys.stderr)
    t0, rows, out = time.perf_counter(), 0, []

    def done(res: ShardResult) -> None:
        nonlocal rows
        rows += res.rows_processed
        out.append(res)
        if on_result:
            on_result(res)
        bar.update(1)
        bar.set_postfix(rows_per_s=f"{rows / max(time.perf_counter() - t0, 1e-9):,.0f}")

    try:
        if kind == "local":
            for shard, start in jobs:
                done(train_shard(store_uri, shard, start, write))
        else:
            _run_ray(store_uri, jobs, address, num_cpus, max_retries, write, done)
    finally:
        bar.close()
    return sorted(out, key=lambda r: r.shard)


def _run_ray(store_uri, jobs, address, num_cpus, max_retries, write, done) -> None:
    ray = connect(address)
    # Application errors are retried too: on shared storage most are transient I/O.
    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries,
                        retry_exceptions=True)(train_shard)
    pending = {remote.remote(store_uri, s, start, write): s for s, start in jobs}
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
