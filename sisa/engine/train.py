"""Training one shard: the unit of work a Ray task (or the local backend) runs.

The task gets only the store URI, the shard and the first slice to train. It reads
its own slices, writes its own content-addressed checkpoints (so a retried task
rewrites identical files) and returns their small metadata; only the driver
commits them to the manifest.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from threadpoolctl import ThreadpoolController

from ..errors import SisaError
from ..store.format.layout import checkpoint_dir
from ..store.io.fs import sha256_bytes
from ..store.manifest import Blob, CheckpointFile
from ..store.store import Store
from ..tasks import backend
from . import checkpoints as ck
from . import forms, safe_pickle
from .schedule import Schedule

if __name__ not in backend.WARM_MODULES:  # Ray workers import this while they wait
    backend.WARM_MODULES.append(__name__)


class TrainingError(SisaError):
    """A shard failed to train; carries the shard, slice and original traceback."""

    def __init__(self, shard: int, sl: int, cause: str, tb: str = "") -> None:
        where = f" at slice {sl}" if sl >= 0 else ""
        cause = (cause.strip().splitlines() or ["unknown error"])[0]  # one line; tb has all
        super().__init__(f"training shard {shard} failed{where}: {cause}")
        self.shard, self.slice, self.original_traceback = shard, sl, tb

    def __reduce__(self):  # survive the trip back through Ray
        return (type(self), (self.shard, self.slice, str(self).split(": ", 1)[-1],
                             self.original_traceback))


@dataclass
class ShardResult:
    shard: int
    start_slice: int
    checkpoints: list[CheckpointFile] = field(default_factory=list)
    rows_processed: int = 0
    seconds: float = 0.0
    #: seconds of the task's parts: ``training_s`` (the model's fit), ``read_slices_s``,
    #: ``checkpoints_s`` (resume load; pickle, load-back check, write); see
    #: :mod:`sisa.unlearn.timings`
    phases: dict = field(default_factory=dict)
    pid: int = field(default_factory=os.getpid)  # the process that trained it
    #: sha256 -> the served (last) checkpoint as the restricted loader returned it from
    #: the very bytes written under that hash (the load-back check's object), so a
    #: caller in this process need not read, hash and unpickle the file again. Never
    #: pickled: a result from another process (Ray) arrives without it.
    models: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "models": {}}


def schedule_of(store: Store) -> Schedule:
    """The per-slice training schedule of the store's model."""
    m = store.manifest.model
    return Schedule(m["schedule"], m["epochs"], store.n_slices, m["incremental"])


def train_shard(store: str | Store | tuple[str, dict], shard: int, start_slice: int = 0,
                write: bool = True, trusted: tuple[str, ...] = ()) -> ShardResult:
    """Train ``shard`` from checkpoint ``start_slice - 1`` (or from scratch) through its
    last slice, writing one checkpoint per slice; a refit model (no ``partial_fit``) is
    fit once on all its slices from scratch and writes only the served checkpoint, slice
    R-1 (:meth:`Schedule.steps`). With ``write=False`` nothing is written: the result
    only carries each checkpoint's hash (``verify`` uses this).

    ``store`` is an open :class:`Store` (in process), a ``(uri, manifest)`` snapshot
    (what a Ray task gets: every file it reads is still hash-checked against that
    manifest), or a URI, opened here. Training runs with one BLAS thread either way: a Ray task with
    ``num_cpus=1`` gets one, and a different thread count can change float results,
    so the same shard gives the same bytes wherever it trains.

    ``trusted`` carries the driver's trusted modules (its own estimator package) to a
    Ray worker, which loads the spec and checkpoints with the same allow-list.
    """
    t0 = time.perf_counter()
    safe_pickle.trust_for_session(trusted)
    if isinstance(store, tuple):
        store = Store(*store)
    elif not isinstance(store, Store):
        store = Store.open(store, check_files=False)
    with _one_thread(), store.loc.batch():  # the task's checkpoints fsynced together
        result = _train(store, shard, start_slice, write)
    result.seconds = time.perf_counter() - t0
    return result


_CONTROLLER: tuple[int, ThreadpoolController] | None = None


def _one_thread():
    """One BLAS/OpenMP thread while a shard trains. Finding the native thread pools scans
    the loaded libraries (~7 ms, more than a small shard's fit), so the scan is kept and
    redone only when modules were imported since (a new one may bring a new library)."""
    global _CONTROLLER
    n = len(sys.modules)
    if _CONTROLLER is None or _CONTROLLER[0] != n:
        _CONTROLLER = (n, ThreadpoolController())
    return _CONTROLLER[1].limit(limits=1)


def _train(store: Store, shard: int, start_slice: int, write: bool) -> ShardResult:
    model_meta = store.manifest.model
    prototype = ck.prototype(store)  # from the manifest's spec: no pickle
    sched = schedule_of(store)
    classes = model_meta["classes"]
    model = None
    result = ShardResult(shard, start_slice)
    clock = _Clock(result.phases)
    prev_slice = sched.resume_from(start_slice)
    if prev_slice is not None:
        prev = store.manifest.checkpoint(shard, prev_slice)
        if prev is None:
            raise TrainingError(shard, start_slice, "the checkpoint before this slice is missing;"
                                " run `sisa repair` to retrain the shard from scratch")
        model = ck.load_verified(store, prev)
        clock.lap("checkpoints_s")
    # the cumulative schedule trains on slices 0..r at step r: keep what it reads
    rows = _ShardRows(store, shard, keep=sched.incremental and sched.name == "cumulative",
                      prototype=prototype, order=list(dict.fromkeys(
                          r for sl in sched.steps(start_slice) for r in sched.slices_for(sl))))
    sl, est_hash = start_slice, None
    try:
        for sl in sched.steps(start_slice):
            X, y = rows.of(sched.slices_for(sl))
            clock.lap("read_slices_s")
            model = sched.step(model, prototype, X, y, classes, store.random_state, shard, sl)
            clock.lap("training_s")
            result.rows_processed += len(y) * sched.passes()
            blob = ck.dumps(model)
            loaded = _check_loads_back(blob, model, shard, sl) if write else None
            est_hash = est_hash or ck.estimator_hash(store)
            meta = CheckpointFile.of(
                _put(store, shard, sl, blob, write), rows=store.slice_rows(shard, sl),
                shard=shard, slice=sl, lineage=ck.lineage(store, shard, sl, est_hash))
            if loaded is not None and sl == store.n_slices - 1:
                result.models[meta.sha256] = loaded
            result.checkpoints.append(meta)
            clock.lap("checkpoints_s")
    except SisaError:
        raise
    except Exception as exc:
        raise TrainingError(shard, sl, f"{type(exc).__name__}: {exc}",
                            traceback.format_exc()) from exc
    return result


def _put(store: Store, shard: int, sl: int, blob: bytes, write: bool) -> Blob:
    """The checkpoint's file entry: written, or (a verify's retrain, compared by hash
    only) the content-addressed name it would be written under."""
    if write:
        return store.put_blob(checkpoint_dir(shard, sl), ".pkl", blob)
    digest = sha256_bytes(blob)
    return Blob(f"{checkpoint_dir(shard, sl)}/{digest[:32]}.pkl", digest, len(blob))


class _Clock:
    """Laps of a shard task, added to ``phases`` by name (the first from its creation)."""

    def __init__(self, phases: dict) -> None:
        self.phases, self.last = phases, time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.phases[part] = self.phases.get(part, 0.0) + now - self.last
        self.last = now


def _check_loads_back(blob: bytes, model, shard: int, sl: int):
    """A checkpoint the restricted loader refuses would be committed and then fail every
    later load (predict, verify, the next forget's resume): refuse it here, before it is
    written, with the type that cannot be loaded. The bytes are in hand: no re-read.
    Returns the loaded object (what loading the checkpoint file gives)."""
    name = type(model).__name__
    try:
        return safe_pickle.loads(blob, source=f"the fitted {name}")
    except SisaError as exc:
        raise TrainingError(
            shard, sl, f"{str(exc).splitlines()[0]}; so this checkpoint would not load back and "
            "nothing was committed: use estimator parameters whose fitted state holds only "
            f"scikit-learn and numpy objects, or trust your own estimator's module with "
            f"{safe_pickle.TRUST_ENV}") from None


class _ShardRows:
    """A shard's slices as numpy ``X, y``, each slice read (and hash-checked) once per task;
    with ``keep``, what was read is kept for later steps (the cumulative schedule's step r
    trains on slices 0..r, which were otherwise re-read, re-hashed and re-concatenated at
    every step). Rows keep slice order: the arrays (and the models fit on them) are those
    of one read of the slices together. Typed columns reach the model in the form it
    takes (:func:`sisa.engine.forms.model_input`), made from the rows of this step."""

    def __init__(self, store: Store, shard: int, keep: bool, prototype=None,
                 order: list[int] | None = None) -> None:
        self.store, self.shard, self.keep = store, shard, keep
        self.read: dict[int, tuple] = {}
        self.schema = store.manifest.schema
        self.accepts = forms.accepts(prototype) if prototype is not None else None
        self.order = order or []  # the slices in the order the steps first need them
        self.ahead: dict[int, Future] = {}

    def of(self, slices: range) -> tuple:
        parts = []
        for r in slices:
            if r not in self.read:
                data = self._read(r)
                self.read[r] = (data.X, data.y)
            parts.append(self.read[r] if self.keep else self.read.pop(r))
        if len(parts) == 1:
            X, y = parts[0]
        elif isinstance(parts[0][0], pa.StructArray):
            X, y = pa.concat_arrays([X for X, _ in parts]), np.concatenate([y for _, y in parts])
        else:
            return np.concatenate([X for X, _ in parts]), np.concatenate([y for _, y in parts])
        if isinstance(X, pa.StructArray):
            X = forms.model_input(X, self.schema, self.accepts or forms.Accepts(False, False,
                                                                                 True))
        return X, y

    def _read(self, r: int):
        """Slice ``r`` (read ahead if it was), and the read of the next one started: its
        disk reads and hash run while this one trains (a fit releases the GIL in its
        compiled loops), one slice ahead at most. The same read, so the same arrays; a
        damaged slice raises at the step that needs it, as without the read-ahead."""
        fut = self.ahead.pop(r, None)
        data = self.store.rows.read_slice(self.shard, r) if fut is None else fut.result()
        later = self.order[self.order.index(r) + 1:] if r in self.order else []
        nxt = next((q for q in later if q not in self.read and q not in self.ahead), None)
        if nxt is not None:
            self.ahead[nxt] = _reader().submit(self.store.rows.read_slice, self.shard, nxt)
        return data


_READER: ThreadPoolExecutor | None = None


def _reader() -> ThreadPoolExecutor:
    """One thread reading the next slice of a shard task (per process; a forked child
    makes its own)."""
    global _READER
    if _READER is None:
        _READER = ThreadPoolExecutor(1, thread_name_prefix="sisa-read-ahead")
    return _READER


def _forget_reader() -> None:
    global _READER
    _READER = None


os.register_at_fork(after_in_child=_forget_reader)
