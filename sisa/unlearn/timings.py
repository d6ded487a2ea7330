"""Where a forget's wall time goes: the shard's training against everything else.

A forget's receipt is signed and logged; its timings are not part of it (they differ
on every run, and a receipt must be the same bytes wherever it is checked). They ride
along in what :func:`sisa.unlearn.forget` returns, under ``timings``, and ``sisa forget
--json`` prints them; :func:`sisa.unlearn.receipts.as_logged` drops them (and other
answer-only fields) before a receipt is compared with the log.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace

from ..store.io import localfs
from ..store.manifest.journal import Fields, is_bool, is_int, is_number

#: The parts of a forget's wall time, in seconds; they add up to ``wall_s``.
PARTS = (
    "plan_s",  # lock, ids digest, replay check, index lookup, the affected slices filtered
    "write_data_s",  # the intent, the new slices, index and tombstone buckets (not fsyncs)
    "training_s",  # the shard models' own fit / partial_fit calls
    "read_slices_s",  # the retrain reading (and hash-checking) its slices
    "checkpoints_s",  # resume checkpoint load; new checkpoints pickled, checked, written
    "retrain_other_s",  # the rest of the retrain: tasks, thread limits, the prototype
    "receipt_s",  # receipt built, chained and signed
    "commit_s",  # manifest leaves and root written, superseded files deleted (not fsyncs)
    "fsync_s",  # waiting for fsyncs (one parallel round, then the root's folder)
    "log_s",  # intent removed, receipt appended to the audit log
    "reload_s",  # the estimator reloading the retrained shards' models (Python API)
    "other_s",  # the code between the parts
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Where one forget's wall time went (``timings`` beside its receipt): ``wall_s``,
    the :data:`PARTS` in seconds, ``fsyncs`` issued by the forget in process,
    ``outside_training`` (the share of the wall time that is not the models' own
    training) and ``remote_training`` (only when shard tasks ran in other processes,
    whose parts overlap)."""

    wall_s: float
    plan_s: float = 0.0
    write_data_s: float = 0.0
    training_s: float = 0.0
    read_slices_s: float = 0.0
    checkpoints_s: float = 0.0
    retrain_other_s: float = 0.0
    receipt_s: float = 0.0
    commit_s: float = 0.0
    fsync_s: float = 0.0
    log_s: float = 0.0
    reload_s: float = 0.0
    other_s: float = 0.0
    fsyncs: int
    outside_training: float
    remote_training: bool = False

    def to_json(self) -> dict:
        out = {"wall_s": self.wall_s, **{p: getattr(self, p) for p in PARTS},
               "fsyncs": self.fsyncs, "outside_training": self.outside_training}
        if self.remote_training:
            out["remote_training"] = True
        return out

    @classmethod
    def from_json(cls, obj: object) -> Timings:
        f = Fields("the forget's timings", obj)
        nums = {k.name: f.req(k.name, is_number) for k in fields(cls)
                if k.name not in ("fsyncs", "remote_training")}
        out = cls(**nums, fsyncs=f.req("fsyncs", is_int),
                  remote_training=bool(f.opt("remote_training", is_bool)))
        f.done()
        return out

    def with_reload(self, seconds: float) -> Timings:
        """These timings with the estimator's model reload added."""
        wall = round(self.wall_s + seconds, 6)
        return replace(self, reload_s=round(self.reload_s + seconds, 6), wall_s=wall,
                       outside_training=round(1 - self.training_s / wall, 4) if wall else 0.0)


assert tuple(f.name for f in fields(Timings))[1:-3] == PARTS  # one list of parts


class Laps:
    """Consecutive parts of one forget, timed on the thread that runs it: each
    :meth:`lap` charges the time since the last one to a part, less the fsync waits of
    that time (:func:`sisa.store.io.localfs.fsync_tally`), which go to ``fsync_s``."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.fsyncs0, self.waited = localfs.fsync_tally()
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.remote = False

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        waited = localfs.fsync_tally()[1]
        self.parts["fsync_s"] += waited - self.waited
        self.parts[part] += (now - self.last) - (waited - self.waited)
        self.last, self.waited = now, waited

    def retrain(self, results) -> None:
        """Close the retrain's lap, split by what its shard tasks measured
        (:attr:`sisa.engine.train.ShardResult.phases`). Tasks run in other processes
        (Ray) overlap: their parts are their own times, and ``remote`` says so."""
        before = self.parts["retrain_other_s"]
        self.lap("retrain_other_s")
        lap = self.parts["retrain_other_s"] - before
        inside = 0.0
        for res in results:
            self.remote |= res.pid != os.getpid()
            for part, seconds in res.phases.items():
                self.parts[part] += seconds
                inside += seconds
        self.parts["retrain_other_s"] = before + max(lap - inside, 0.0)

    def attach(self, receipt: dict, part: str) -> dict:
        """Close the last lap (``part``); ``receipt`` with the breakdown as ``timings``."""
        self.lap(part)
        return {**receipt, "timings": self.result().to_json()}

    def result(self) -> Timings:
        """The breakdown: ``wall_s``, the :data:`PARTS`, ``fsyncs`` (issued by this
        forget, in process) and ``outside_training`` (the share of the wall time that is
        not the models' own training)."""
        wall = time.perf_counter() - self.start
        self.parts["other_s"] = max(wall - sum(v for k, v in self.parts.items()
                                               if k != "other_s"), 0.0)
        return Timings(
            wall_s=round(wall, 6), **{k: round(v, 6) for k, v in self.parts.items()},
            fsyncs=localfs.fsync_tally()[0] - self.fsyncs0,
            outside_training=round(1 - self.parts["training_s"] / wall, 4) if wall else 0.0,
            remote_training=self.remote)


def with_reload(receipt: dict, seconds: float) -> dict:
    """``receipt`` with the estimator's model reload added to its ``timings``."""
    t = receipt.get("timings")
    if not isinstance(t, dict):
        return receipt
    return {**receipt, "timings": Timings.from_json(t).with_reload(seconds).to_json()}
