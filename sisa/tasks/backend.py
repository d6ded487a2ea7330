"""Where tasks run: an embedded local Ray, a Ray cluster, or this process.

Callers never touch Ray: :func:`map_tasks` runs a list of calls where an
:class:`~sisa.tasks.settings.ExecutionSettings` says:
- ``"local"``: in this process, one task after another;
- ``"ray"``: one Ray task per call (``num_cpus`` each, retried on failure);
- ``"auto"`` (default): one task runs in this process; several go to Ray if a
  cluster address is set or Ray is already up. In a process without Ray, tasks
  run here one by one until the measured time per task says that the rest, spread
  over this machine's CPUs, would save more than Ray's start-up costs; then Ray
  starts and takes the rest. A small forget from the CLI never pays Ray's ~5 s
  start-up, a big fit does once. Every path gives identical results.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence

from ..errors import SisaError
from ..progress import bar as progress_bar
from .settings import ExecutionSettings

# Embedded Ray's start-up plus its workers' first imports, measured on the reference
# machine (2 cores): 5-6 s. Ray is started only when it should save more than this.
RAY_START_S = 6.0


def connect(address: str | None = None, *, num_cpus: int | None = None,
            object_store_mb: int = 256):
    """Start (or join) Ray once per process and return the ``ray`` module.

    An already-initialised Ray (a notebook, a Ray Job, a test fixture) is reused as
    is. With ``address`` or ``RAY_ADDRESS`` sisa joins that cluster; otherwise it
    starts a private local instance: no dashboard, quiet logs, a modest object store,
    and token auth with a fresh in-memory token so nothing is written to ``$HOME``.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS") or None
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


# Modules a fresh worker imports while it waits for its first task. The layers above add
# theirs (the engine its training module): this bottom layer names none of them itself.
WARM_MODULES: list[str] = ["sklearn.linear_model"]  # the usual shard model's module


def _import_training_stack(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def _warm_workers(ray) -> None:
    """Start one worker per CPU and import the training stack there, in the background.

    A fresh Ray worker spends ~1-2 s importing scikit-learn and sisa before its first
    shard task; started now, that overlaps whatever the driver does next (building the
    store) instead of adding to the first fit. Nothing waits on these tasks.
    """
    n = int(ray.cluster_resources().get("CPU", 1))
    task = ray.remote(num_cpus=1, max_retries=0)(_import_training_stack)
    _WARMING[:] = [task.remote(list(WARM_MODULES)) for _ in range(n)]


def choose(settings: ExecutionSettings, n_tasks: int) -> str:
    """Where ``n_tasks`` tasks run: ``"local"``, ``"ray"``, or (``"auto"`` in a process
    without Ray) ``"adaptive"``: here first, Ray once it pays (module doc)."""
    if settings.backend != "auto":
        return settings.backend
    if settings.cluster:
        return "ray"
    if n_tasks <= 1:
        return "local"
    ray = sys.modules.get("ray")
    return "ray" if ray is not None and ray.is_initialized() else "adaptive"


class TaskError(SisaError):
    """A task failed (not with a sisa error of its own, which is raised as it is)."""

    def __init__(self, index: int, cause: str, tb: str = "") -> None:
        super().__init__(cause)
        self.index, self.cause, self.original_traceback = index, cause, tb


def map_tasks(fn: Callable, calls: Sequence[tuple], settings: ExecutionSettings, *,
              shared: tuple = (), desc: str = "tasks", unit: str = "task",
              units: Sequence[int] | None = None, num_gpus: int = 0,
              on_result: Callable[[int, object], None] | None = None) -> list:
    """``[fn(*shared, *args) for args in calls]``, run where ``settings`` says.

    The one way sisa fans work out (shard training, forget, verify, compare). Results
    come back in ``calls`` order; ``on_result(i, result)`` runs in this process as each
    task finishes, so a caller can commit progress. ``shared`` objects are sent to the
    Ray object store once, not once per task. ``units`` (one per call) are what the
    progress bar counts, default 1 each. A task raising a :class:`~sisa.errors.SisaError`
    re-raises it here; any other failure is a :class:`TaskError` naming the call.
    """
    if not calls:
        return []
    kind = choose(settings, len(calls))
    weights = list(units) if units is not None else [1] * len(calls)
    bar = progress_bar(total=sum(weights), desc=desc, unit=unit, enabled=settings.progress)
    results: dict[int, object] = {}
    t0 = time.perf_counter()

    def done(i: int, value) -> None:
        results[i] = value
        if on_result:
            on_result(i, value)
        bar.update(weights[i])

    todo = list(range(len(calls)))
    try:
        if kind != "ray":
            cpus = os.cpu_count() or 1
            while todo:
                i = todo.pop(0)
                done(i, _call_here(fn, shared, calls[i], i))
                if kind == "adaptive" and _ray_pays(time.perf_counter() - t0, len(results),
                                                    len(todo), cpus / settings.num_cpus):
                    try:
                        connect(settings.address)
                    except Exception as exc:  # Ray was an optimisation here: carry on
                        warnings.warn(f"could not start Ray ({type(exc).__name__}: {exc}); "
                                      "running the remaining tasks in this process",
                                      stacklevel=2)
                        kind = "local"
                        continue
                    bar.set_description(f"{desc} (Ray started)")
                    kind = "ray"
                    break
        if kind == "ray" and todo:
            _run_ray(fn, shared, calls, todo, settings, num_gpus, done)
    finally:
        bar.close()
    return [results[i] for i in range(len(calls))]


def _call_here(fn: Callable, shared: tuple, args: tuple, i: int):
    try:
        return fn(*shared, *args)
    except SisaError:
        raise
    except Exception as exc:
        raise TaskError(i, f"{type(exc).__name__}: {exc}", traceback.format_exc()) from exc


def _ray_pays(elapsed: float, done: int, left: int, slots: float) -> bool:
    """Would ``left`` more jobs, at the mean time per job so far, finish sooner on
    ``slots`` parallel Ray workers after paying :data:`RAY_START_S`?"""
    if left < 2 or slots < 2:
        return False
    per_job = elapsed / done
    return per_job * left * (1 - 1 / min(slots, left)) > RAY_START_S


_REMOTES: dict = {}


def _remote(ray, fn: Callable, settings: ExecutionSettings, num_gpus: int):
    """``fn`` as a Ray task, made once per options: wrapping exports the function to the
    cluster again (~10 ms), which a 1-row forget should not pay. (Ray re-exports a remote
    function by itself after a new ``ray.init``.)"""
    key = (fn, settings.num_cpus, settings.max_retries, num_gpus)
    if key not in _REMOTES:
        # Application errors are retried too: on shared storage most are transient I/O,
        # and every sisa task is deterministic, so a retry gives the same result.
        _REMOTES[key] = ray.remote(num_cpus=settings.num_cpus, num_gpus=num_gpus,
                                   max_retries=settings.max_retries,
                                   retry_exceptions=True)(fn)
    return _REMOTES[key]


def _run_ray(fn, shared, calls, todo, settings, num_gpus, done) -> None:
    ray = connect(settings.address)
    remote = _remote(ray, fn, settings, num_gpus)
    refs = [ray.put(obj) for obj in shared]  # one copy in the object store, not one per task
    pending = {remote.remote(*refs, *calls[i]): i for i in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ready[0])
        try:
            value = ray.get(ready[0])
        except ray.exceptions.RayTaskError as exc:
            for r in pending:
                ray.cancel(r)
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if isinstance(cause, SisaError):
                raise cause from None
            raise TaskError(i, str(cause or exc), str(exc)) from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.TaskUnschedulableError) as exc:
            for r in pending:
                ray.cancel(r)
            raise TaskError(i, f"the Ray worker died after {settings.max_retries} retries "
                            f"({type(exc).__name__}); rerun, or `sisa repair` to finish",
                            str(exc)) from None
        done(i, value)
