"""Closed-form expectations of the rows a SISA forget retrains (the model is in
:mod:`sisa.engine.cost`'s docstring)."""

from __future__ import annotations

import math

import numpy as np

from sisa.engine.cost._checks import Schedule, _check_rows, _int, _mass, _schedule
from sisa.engine.schedule import Schedule as TrainingSchedule
from sisa.errors import InputError

__all__ = [
    "cumulative_passes",
    "expected_rows_batch",
    "expected_rows_sequential",
    "expected_rows_single",
    "expected_rows_single_distribution_aware",
    "expected_shards_touched",
    "full_retrain_rows",
    "monolithic_rows",
]


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
    # The trainer's own rule (sisa.engine.schedule), so the model and training agree.
    return TrainingSchedule("cumulative", epochs, n_slices, incremental=True).passes()


def _step_costs(schedule: str, n_slices: int, epochs: int) -> np.ndarray:
    """``c_r``: cost of step r in units of one slice's rows."""
    steps = np.arange(1, n_slices + 1, dtype=np.float64)  # r + 1
    if schedule == "streaming":
        return np.full(n_slices, float(epochs))
    if schedule == "cumulative":
        return cumulative_passes(epochs, n_slices) * steps
    # refit: only the last step trains (one fit on all R slices); earlier ones cost nothing
    return np.where(steps == n_slices, float(n_slices), 0.0)


def _sum_products(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b`` correctly rounded: the same last bit on every machine (a BLAS dot sums
    in an order that depends on the build)."""
    return math.fsum((a * b).tolist())


def _retrain_prob(n_shards: int, n_slices: int, k: int) -> np.ndarray:
    """P(step r of a given shard is retrained | k uniform requests), r = 0..R-1."""
    if k == 0:
        return np.zeros(n_slices)
    p = np.arange(1, n_slices + 1, dtype=np.float64) / (n_shards * n_slices)
    if k == 1:
        return p  # exact: no libm call whose last bit varies between builds
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
    >>> round(expected_shards_touched(4, 2), 12)  # 4 * (1 - (3/4)**2)
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
    :func:`cumulative_passes`), ``N`` (refit: one fit per shard).

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

    with ``c_r`` = ``E`` (streaming), ``e*(r+1)`` (cumulative), ``R`` at ``r = R-1`` and
    0 before (refit). Exact under hash placement; the ``K`` forgotten rows are not counted.

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
    return float((n - k) / r * _sum_products(c, _retrain_prob(s, r, k)))


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
    ``e = 2E/(R+1)`` this is the paper's ``E*(N/S)*(2/3 + 1/(3R))``. Refit: ``(N-1)/S``
    (the shard is refit once, whatever R). ``N-1`` because the forgotten row is not
    retrained.

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
    per_remaining_row = _sum_products(c, _retrain_prob(s, r, 1)) / r
    return per_remaining_row * (k * (n - 1) - k * (k - 1) / 2)


def _hot_cold(
    n_hot: object,
    n_cold: object,
    p_hot_mass: object,
    p_cold_mass: object,
    n_shards: object,
    n_hot_shards: object,
) -> tuple[int, int, int, int, float]:
    """Checked ``n_hot, n_cold, S, H`` and the share ``pi`` of requests that are hot."""
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
    return n_hot, n_cold, s, h, p_hot / (p_hot + p_cold)


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
    (:class:`sisa.store.format.assign.AssignmentConfig` ``hot_shards``). A request is hot
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
    checked = _hot_cold(n_hot, n_cold, p_hot_mass, p_cold_mass, n_shards, n_hot_shards)
    n_hot, n_cold, s, h, pi = checked
    total = 0.0
    if pi > 0:
        total += pi * expected_rows_single(n_hot, h, n_slices, schedule, epochs)
    if pi < 1:
        total += (1 - pi) * expected_rows_single(n_cold, s - h, n_slices, schedule, epochs)
    return total

