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

from ..store.io import localfs

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
        return {**receipt, "timings": self.result()}

    def result(self) -> dict:
        """The breakdown: ``wall_s``, the :data:`PARTS`, ``fsyncs`` (issued by this
        forget, in process) and ``outside_training`` (the share of the wall time that is
        not the models' own training)."""
        wall = time.perf_counter() - self.start
        self.parts["other_s"] = max(wall - sum(v for k, v in self.parts.items()
                                               if k != "other_s"), 0.0)
        out = {"wall_s": wall, **self.parts}
        out = {k: round(v, 6) for k, v in out.items()}
        out["fsyncs"] = localfs.fsync_tally()[0] - self.fsyncs0
        out["outside_training"] = round(1 - self.parts["training_s"] / wall, 4) if wall else 0.0
        if self.remote:
            out["remote_training"] = True
        return out


def with_reload(receipt: dict, seconds: float) -> dict:
    """``receipt`` with the estimator's model reload added to its ``timings``."""
    t = receipt.get("timings")
    if not isinstance(t, dict):
        return receipt
    t = {**t, "reload_s": round(t["reload_s"] + seconds, 6),
         "wall_s": round(t["wall_s"] + seconds, 6)}
    t["outside_training"] = round(1 - t["training_s"] / t["wall_s"], 4) if t["wall_s"] else 0.0
    return {**receipt, "timings": t}
