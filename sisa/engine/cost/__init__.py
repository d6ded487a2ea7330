"""Expected cost of SISA training and forgetting, in rows processed.

Cost is counted in *rows processed* (one row through one training pass = 1), the
proxy the SISA paper uses for time. All functions are pure and closed-form.

Model
-----
Rows are placed by a keyed hash (:mod:`sisa.store.format.assign`), so each row lands in
each (shard, slice) cell independently with probability ``1/(S*R)``. The formulas
are exact expectations under that model, over both the placement and the choice
of the rows to forget (forget requests pick distinct rows uniformly at random).
They count the rows actually retrained, i.e. after the forgotten rows are gone.

Schedules (how a shard model is trained slice by slice; ``E`` = ``epochs``):

``"streaming"`` (sisa's default)
    Step ``r`` makes ``E`` passes over slice ``r`` only. A shard costs ``E*n_shard``.
``"cumulative"`` (the SISA paper's)
    Step ``r`` makes ``e = max(1, round(2E/(R+1)))`` passes over slices ``0..r``, so a
    shard costs ``e*(R+1)/2*n_shard ~ E*n_shard``: slicing costs no more than plain
    training (see :func:`cumulative_passes`).
``"refit"`` (models without ``partial_fit``)
    Only the served model is trained: one fit from scratch on all of the shard's
    slices (rows seen by ``fit``; ``epochs`` is ignored), one checkpoint. A shard costs
    ``n_shard`` to train and every forget in it refits it once, whatever ``R``:
    slicing saves these models nothing, and ``R = 1`` costs the same.

A forget whose earliest affected slice in a shard is ``k`` retrains steps
``k..R-1`` of that shard from checkpoint ``k-1``.

Derivation
----------
Write ``c_r`` for the cost of step ``r`` in units of one slice's rows:
``c_r = E`` (streaming), ``e*(r+1)`` (cumulative), and for refit ``c_{R-1} = R``
(all ``R`` slices, once) with ``c_r = 0`` before (no intermediate fit). For one shard,
step ``r`` is retrained iff some request falls in that shard at slice ``<= r``; for
``K`` requests with iid uniform cells that has probability
``1 - (1 - (r+1)/(S*R))**K``. The ``N-K`` remaining rows are placed independently
of the requests, ``(N-K)/(S*R)`` per cell in expectation, so summing over shards::

    E[rows | K batched] = (N-K)/R * sum_{r=0}^{R-1} c_r * (1 - (1 - (r+1)/(S*R))**K)

``K = 1`` gives one request::

    streaming:  E*(N-1)/S * (R+1)/(2R)
    cumulative: e*(N-1)/S * (R+1)(2R+1)/(6R)   (~ E*(N/S)*(2/3 + 1/(3R)), as in the paper)
    refit:      (N-1)/S

and ``S`` shards x ``R`` slices, full retrain: ``N/R * sum_r c_r``.

The paper's sharding-only formulas (``N*(1-(1-1/S)**K) - K`` batched) assume
fixed shard sizes of exactly ``N/S``; under hash placement shard sizes vary and the
exact expectation is ``(N-K)*(1-(1-1/S)**K)``. The two differ by under ``K`` rows.

Not modelled: group keys (a user's rows share one cell, so forgetting a user is one
request of several rows), hash-balanced sizes, and wall-clock effects (fixed
per-step overheads, checkpoint I/O, parallel shards).
"""

from __future__ import annotations

from sisa.engine.cost._checks import SCHEDULES, Schedule
from sisa.engine.cost.closed_forms import (
    cumulative_passes,
    expected_rows_batch,
    expected_rows_sequential,
    expected_rows_single,
    expected_rows_single_distribution_aware,
    expected_shards_touched,
    full_retrain_rows,
    monolithic_rows,
)
from sisa.engine.cost.planner import plan, speedup, speedup_vs_monolithic

__all__ = [
    "SCHEDULES",
    "Schedule",
    "cumulative_passes",
    "expected_rows_batch",
    "expected_rows_sequential",
    "expected_rows_single",
    "expected_rows_single_distribution_aware",
    "expected_shards_touched",
    "full_retrain_rows",
    "monolithic_rows",
    "plan",
    "speedup",
    "speedup_vs_monolithic",
]
