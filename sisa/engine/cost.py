"""Expected cost of SISA training and forgetting, in rows processed.

Cost is counted in *rows processed* (one row through one training pass = 1), the
proxy the SISA paper uses for time. All functions are pure and closed-form.

Model
-----
Rows are placed by a keyed hash (:mod:`sisa.store.assign`), so each row lands in
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
    Step ``r`` refits from scratch on slices ``0..r``; counted like cumulative with
    ``e = 1`` (rows seen by ``fit``; ``epochs`` is ignored). Slicing saves these
    models no compute: a forget still refits every later step, and the sliced full
    train costs ``(R+1)/2`` single fits. It only lets sisa keep the earlier
    checkpoints instead of recomputing them.

A forget whose earliest affected slice in a shard is ``k`` retrains steps
``k..R-1`` of that shard from checkpoint ``k-1``.

Derivation
----------
Write ``c_r`` for the cost of step ``r`` in units of one slice's rows:
``c_r = E`` (streaming), ``e*(r+1)`` (cumulative), ``r+1`` (refit). For one shard,
step ``r`` is retrained iff some request falls in that shard at slice ``<= r``; for
``K`` requests with iid uniform cells that has probability
``1 - (1 - (r+1)/(S*R))**K``. The ``N-K`` remaining rows are placed independently
of the requests, ``(N-K)/(S*R)`` per cell in expectation, so summing over shards::

    E[rows | K batched] = (N-K)/R * sum_{r=0}^{R-1} c_r * (1 - (1 - (r+1)/(S*R))**K)

``K = 1`` gives one request::

    streaming:  E*(N-1)/S * (R+1)/(2R)
    cumulative: e*(N-1)/S * (R+1)(2R+1)/(6R)   (~ E*(N/S)*(2/3 + 1/(3R)), as in the paper)

and ``S`` shards x ``R`` slices, full retrain: ``N/R * sum_r c_r``.

The paper's sharding-only formulas (``N*(1-(1-1/S)**K) - K`` batched) assume
fixed shard sizes of exactly ``N/S``; under hash placement shard sizes vary and the
exact expectation is ``(N-K)*(1-(1-1/S)**K)``. The two differ by under ``K`` rows.

Not modelled: group keys (a user's rows share one cell, so forgetting a user is one
request of several rows), hash-balanced sizes, and wall-clock effects (fixed
per-step overheads, checkpoint I/O, parallel shards).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Literal

import numpy as np

from ..errors import InputError

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

Schedule = Literal["streaming", "cumulative", "refit"]
SCHEDULES: tuple[str, ...] = ("streaming", "cumulative", "refit")


# -- validation ---------------------------------------------------------------------------------


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _mass(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _schedule(schedule: object) -> str:
    if schedule not in SCHEDULES:
        raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    return str(schedule)


def _check_rows(n_rows: object, n_shards: object, n_slices: object) -> tuple[int, int, int]:
    return (
        _int("n_rows", n_rows, 1),
        _int("n_shards", n_shards, 1),
        _int("n_slices", n_slices, 1),
    )


# -- core ---------------------------------------------------------------------------------------


def cumulative_passes(epochs: int, n_slices: int) -> int:
    """Passes per step of the cumulative schedule: ``max(1, round(2*epochs/(R+1)))``.

    Step ``r`` trains on slices ``0..r``, so over ``R`` steps the slices are seen
    ``(R+1)/2`` times on average; ``2*epochs/(R+1)`` passes per step then total
    ``epochs`` passes over the shard, like unsliced training. Python's ``round``
    (half to even) is used; the floor of 1 makes large ``R`` cost more than that.

    Parameters
    ----------
    epochs : int
        Passes a monolithic model would make, at least 1.
    n_slices : int
        R, at least 1.

    Returns
    -------
    int

    Examples
    --------
    >>> cumulative_passes(10, 4)
    4
    >>> cumulative_passes(1, 50)
    1
    """
    epochs = _int("epochs", epochs, 1)
    n_slices = _int("n_slices", n_slices, 1)
    return max(1, round(2 * epochs / (n_slices + 1)))


def _step_costs(schedule: str, n_slices: int, epochs: int) -> np.ndarray:
    """``c_r``: cost of step r in units of one slice's rows."""
    steps = np.arange(1, n_slices + 1, dtype=np.float64)  # r + 1
    if schedule == "streaming":
        return np.full(n_slices, float(epochs))
    if schedule == "cumulative":
        return cumulative_passes(epochs, n_slices) * steps
    return steps  # refit: one "pass" over slices 0..r


def _retrain_prob(n_shards: int, n_slices: int, k: int) -> np.ndarray:
    """P(step r of a given shard is retrained | k uniform requests), r = 0..R-1."""
    if k == 0:
        return np.zeros(n_slices)
    p = np.arange(1, n_slices + 1, dtype=np.float64) / (n_shards * n_slices)
    with np.errstate(divide="ignore"):  # p == 1 when S == 1 at the last step
        return -np.expm1(k * np.log1p(-p))  # 1 - (1 - p)**k without cancellation


def expected_shards_touched(n_shards: int, k: int) -> float:
    """Expected number of distinct shards hit by ``k`` uniform forget requests.

    ``S * (1 - (1 - 1/S)**K)``.

    Parameters
    ----------
    n_shards : int
        S, at least 1.
    k : int
        Number of requests, at least 0.

    Returns
    -------
    float

    Examples
    --------
    >>> expected_shards_touched(4, 2)
    1.75
    """
    s = _int("n_shards", n_shards, 1)
    k = _int("k", k, 0)
    return float(-s * np.expm1(k * np.log1p(-1.0 / s))) if s > 1 else float(min(k, 1))


def monolithic_rows(n_rows: int, epochs: int = 1) -> float:
    """Rows processed by training one unsharded model: ``epochs * N``.

    Parameters
    ----------
    n_rows : int
        N, at least 1.
    epochs : int, default=1

    Returns
    -------
    float

    Examples
    --------
    >>> monolithic_rows(1000, 3)
    3000.0
    """
    return float(_int("epochs", epochs, 1) * _int("n_rows", n_rows, 1))


def full_retrain_rows(
    n_rows: int,
    n_shards: int,
    n_slices: int,
    schedule: Schedule = "streaming",
    epochs: int = 1,
) -> float:
    """Expected rows processed by training all S shard models on all R slices.

    ``N/R * sum_r c_r``: ``E*N`` (streaming), ``e*N*(R+1)/2`` (cumulative, ``e`` from
    :func:`cumulative_passes`), ``N*(R+1)/2`` (refit).

    Parameters
    ----------
    n_rows, n_shards, n_slices : int
        N, S, R, each at least 1.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1

    Returns
    -------
    float

    Examples
    --------
    >>> full_retrain_rows(1000, 5, 4, "cumulative", epochs=5)
    5000.0
    """
    n, _, r = _check_rows(n_rows, n_shards, n_slices)
    c = _step_costs(_schedule(schedule), r, _int("epochs", epochs, 1))
    return float(n / r * c.sum())


def expected_rows_batch(
    n_rows: int,
    n_shards: int,
    n_slices: int,
    k: int,
    schedule: Schedule = "streaming",
    epochs: int = 1,
) -> float:
    """Expected rows retrained to serve ``k`` uniform forget requests as one batch.

    Each affected shard is retrained once, from its earliest affected slice::

        (N-K)/R * sum_{r=0}^{R-1} c_r * (1 - (1 - (r+1)/(S*R))**K)

    with ``c_r`` = ``E`` (streaming), ``e*(r+1)`` (cumulative), ``r+1`` (refit). Exact
    under hash placement; the ``K`` forgotten rows are not counted.

    Parameters
    ----------
    n_rows, n_shards, n_slices : int
        N, S, R, each at least 1.
    k : int
        Number of distinct rows to forget, ``0 <= k <= n_rows``.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1

    Returns
    -------
    float

    Examples
    --------
    With one shard and one slice every batch retrains everything that is left:

    >>> expected_rows_batch(100, 1, 1, 10)
    90.0
    """
    n, s, r = _check_rows(n_rows, n_shards, n_slices)
    k = _int("k", k, 0)
    if k > n:
        raise InputError(f"k={k} requests exceed n_rows={n}; pass at most n_rows requests")
    c = _step_costs(_schedule(schedule), r, _int("epochs", epochs, 1))
    return float((n - k) / r * np.dot(c, _retrain_prob(s, r, k)))


def expected_rows_single(
    n_rows: int,
    n_shards: int,
    n_slices: int,
    schedule: Schedule = "streaming",
    epochs: int = 1,
) -> float:
    """Expected rows retrained to serve one uniform forget request.

    Streaming: ``E*(N-1)/S * (R+1)/(2R)``. Cumulative:
    ``e*(N-1)/S * (R+1)(2R+1)/(6R)``, with ``e`` from :func:`cumulative_passes`; with
    ``e = 2E/(R+1)`` this is the paper's ``E*(N/S)*(2/3 + 1/(3R))``. Refit: as
    cumulative with ``e = 1``. ``N-1`` because the forgotten row is not retrained.

    Parameters
    ----------
    n_rows, n_shards, n_slices : int
        N, S, R, each at least 1.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1

    Returns
    -------
    float

    Examples
    --------
    >>> expected_rows_single(101, 10, 4, epochs=2)
    12.5
    """
    return expected_rows_batch(n_rows, n_shards, n_slices, 1, schedule, epochs)


def expected_rows_sequential(
    n_rows: int,
    n_shards: int,
    n_slices: int,
    k: int,
    schedule: Schedule = "streaming",
    epochs: int = 1,
) -> float:
    """Expected total rows retrained when ``k`` requests are served one at a time.

    Request ``i`` (0-based) is a single request on the ``N-i`` rows left, so the
    total is ``sum_{i<K} single(N-i) = single(N) * (K - K(K-1)/(2(N-1)))``.

    Parameters
    ----------
    n_rows, n_shards, n_slices : int
        N, S, R, each at least 1.
    k : int
        Number of requests, ``0 <= k <= n_rows``.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1

    Returns
    -------
    float

    Examples
    --------
    >>> expected_rows_sequential(11, 1, 1, 2)
    19.0
    """
    n, s, r = _check_rows(n_rows, n_shards, n_slices)
    k = _int("k", k, 0)
    if k > n:
        raise InputError(f"k={k} requests exceed n_rows={n}; pass at most n_rows requests")
    c = _step_costs(_schedule(schedule), r, _int("epochs", epochs, 1))
    per_remaining_row = float(np.dot(c, _retrain_prob(s, r, 1))) / r
    return per_remaining_row * (k * (n - 1) - k * (k - 1) / 2)


def expected_rows_single_distribution_aware(
    n_hot: int,
    n_cold: int,
    p_hot_mass: float,
    p_cold_mass: float,
    n_shards: int,
    n_hot_shards: int,
    n_slices: int,
    schedule: Schedule = "streaming",
    epochs: int = 1,
) -> float:
    """Expected rows retrained for one request under distribution-aware sharding.

    Rows whose deletion probability is at least the threshold ("hot", ``n_hot``
    rows) are hashed into shards ``[0, H)``, the ``n_cold`` others into ``[H, S)``
    (:class:`sisa.store.assign.AssignmentConfig` ``hot_shards``). A request is hot
    with probability ``pi = p_hot_mass / (p_hot_mass + p_cold_mass)``; within its
    group the row's cell is uniform whatever its own probability, so::

        pi * single(n_hot, H, R) + (1 - pi) * single(n_cold, S - H, R)

    with ``single`` = :func:`expected_rows_single`. When deletions concentrate on a
    few rows the hot shards are small and most requests retrain only them.

    Parameters
    ----------
    n_hot, n_cold : int
        Rows in the hot and cold groups, each at least 0, not both 0.
    p_hot_mass, p_cold_mass : float
        Sum of deletion probabilities over each group (any common scale), at least
        0 and not both 0. A group with mass must have rows.
    n_shards : int
        S, at least 2.
    n_hot_shards : int
        H, ``1 <= H <= S-1``.
    n_slices : int
        R, at least 1.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1

    Returns
    -------
    float

    Examples
    --------
    90% of requests hit 100 hot rows in 1 of 10 shards:

    >>> da = expected_rows_single_distribution_aware(101, 9901, 0.9, 0.1, 10, 1, 1)
    >>> round(da, 1), expected_rows_single(10002, 10, 1)
    (200.0, 1000.1)
    """
    n_hot = _int("n_hot", n_hot, 0)
    n_cold = _int("n_cold", n_cold, 0)
    p_hot = _mass("p_hot_mass", p_hot_mass)
    p_cold = _mass("p_cold_mass", p_cold_mass)
    s = _int("n_shards", n_shards, 2)
    h = _int("n_hot_shards", n_hot_shards, 1)
    if h >= s:
        raise InputError(f"n_hot_shards must be between 1 and n_shards-1={s - 1}, got {h}")
    if p_hot + p_cold == 0:
        raise InputError("p_hot_mass and p_cold_mass are both 0; give the deletion masses")
    if p_hot > 0 and n_hot == 0:
        raise InputError("p_hot_mass > 0 but n_hot is 0; a group that gets requests needs rows")
    if p_cold > 0 and n_cold == 0:
        raise InputError("p_cold_mass > 0 but n_cold is 0; a group that gets requests needs rows")
    pi = p_hot / (p_hot + p_cold)
    total = 0.0
    if pi > 0:
        total += pi * expected_rows_single(n_hot, h, n_slices, schedule, epochs)
    if pi < 1:
        total += (1 - pi) * expected_rows_single(n_cold, s - h, n_slices, schedule, epochs)
    return total


def _forget_rows(n_rows, n_shards, n_slices, k, schedule, epochs) -> float:
    if k == 1:
        return expected_rows_single(n_rows, n_shards, n_slices, schedule, epochs)
    return expected_rows_batch(n_rows, n_shards, n_slices, k, schedule, epochs)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.inf


def speedup(
    n_rows: int,
    n_shards: int,
    n_slices: int,
    schedule: Schedule = "streaming",
    epochs: int = 1,
    k: int = 1,
) -> float:
    """Full SISA retrain rows over expected forget rows (``k`` requests, batched).

    What a forget saves compared to retraining every shard from scratch with the
    same S and R. ``inf`` when nothing is left to retrain.

    Parameters
    ----------
    n_rows, n_shards, n_slices : int
        N, S, R, each at least 1.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1
    k : int, default=1
        Requests served as one batch, ``1 <= k <= n_rows``.

    Returns
    -------
    float

    Examples
    --------
    Streaming with R slices: ``S * 2R/(R+1)`` for large N.

    >>> round(speedup(10**6, 10, 4), 2)
    16.0
    """
    k = _int("k", k, 1)
    full = full_retrain_rows(n_rows, n_shards, n_slices, schedule, epochs)
    return _ratio(full, _forget_rows(n_rows, n_shards, n_slices, k, schedule, epochs))


def speedup_vs_monolithic(
    n_rows: int,
    n_shards: int,
    n_slices: int,
    schedule: Schedule = "streaming",
    epochs: int = 1,
    k: int = 1,
) -> float:
    """Monolithic training rows over expected SISA forget rows (``k`` batched).

    The paper's headline comparison: forgetting with SISA versus retraining one
    unsharded model from scratch (``epochs*N`` rows; ``N`` for ``"refit"``, one
    fit). It ignores accuracy: the sharded ensemble may be worse.

    Parameters
    ----------
    n_rows, n_shards, n_slices : int
        N, S, R, each at least 1.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1
    k : int, default=1
        Requests served as one batch, ``1 <= k <= n_rows``.

    Returns
    -------
    float

    Examples
    --------
    >>> round(speedup_vs_monolithic(10**6, 20, 1), 2)
    20.0
    """
    k = _int("k", k, 1)
    mono = monolithic_rows(n_rows, 1 if _schedule(schedule) == "refit" else epochs)
    return _ratio(mono, _forget_rows(n_rows, n_shards, n_slices, k, schedule, epochs))


def plan(
    n_rows: int,
    deletions_per_day: int,
    n_shards_options: Iterable[int] = (1, 2, 5, 10, 20, 50),
    n_slices_options: Iterable[int] = (1, 2, 5, 10, 20),
    schedule: Schedule = "streaming",
    epochs: int = 1,
) -> list[dict[str, float | int]]:
    """Expected forget cost for each candidate (S, R), for ``sisa plan``.

    Parameters
    ----------
    n_rows : int
        N, at least 1.
    deletions_per_day : int
        Requests per day, ``0 <= k <= n_rows``.
    n_shards_options, n_slices_options : iterable of int
        Candidate S and R values (each at least 1); every pair is evaluated.
    schedule : {"streaming", "cumulative", "refit"}, default="streaming"
    epochs : int, default=1

    Returns
    -------
    list of dict
        One row per (S, R), sorted by S then R, with keys ``n_shards``,
        ``n_slices``, ``rows_per_slice`` (N/(S*R); below 1 means empty slices),
        ``full_retrain_rows``, ``rows_per_request``, ``rows_per_day_sequential``
        (requests served one by one), ``rows_per_day_batched`` (one batch a day),
        ``shards_touched_per_day`` and ``speedup_vs_monolithic`` (per request).

    Examples
    --------
    >>> rows = plan(10_000, 10, n_shards_options=[1, 10], n_slices_options=[1])
    >>> [(r["n_shards"], round(r["rows_per_request"])) for r in rows]
    [(1, 9999), (10, 1000)]
    """
    n = _int("n_rows", n_rows, 1)
    k = _int("deletions_per_day", deletions_per_day, 0)
    if k > n:
        raise InputError(f"deletions_per_day={k} exceeds n_rows={n}; lower it")
    sched = _schedule(schedule)
    epochs = _int("epochs", epochs, 1)
    shards = sorted({_int("n_shards", s, 1) for s in n_shards_options})
    slices = sorted({_int("n_slices", r, 1) for r in n_slices_options})
    if not shards or not slices:
        raise InputError("n_shards_options and n_slices_options must each list at least one value")
    table: list[dict[str, float | int]] = []
    for s in shards:
        for r in slices:
            table.append(
                {
                    "n_shards": s,
                    "n_slices": r,
                    "rows_per_slice": n / (s * r),
                    "full_retrain_rows": full_retrain_rows(n, s, r, sched, epochs),
                    "rows_per_request": expected_rows_single(n, s, r, sched, epochs),
                    "rows_per_day_sequential": expected_rows_sequential(n, s, r, k, sched, epochs),
                    "rows_per_day_batched": expected_rows_batch(n, s, r, k, sched, epochs),
                    "shards_touched_per_day": expected_shards_touched(s, k),
                    "speedup_vs_monolithic": speedup_vs_monolithic(n, s, r, sched, epochs),
                }
            )
    return table
