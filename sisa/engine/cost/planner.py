"""What a forget saves (speed-ups) and the (S, R) table of ``sisa plan``."""

from __future__ import annotations

import math
from collections.abc import Iterable

from sisa.engine.cost._checks import Schedule, _int, _schedule
from sisa.engine.cost.closed_forms import (
    expected_rows_batch,
    expected_rows_sequential,
    expected_rows_single,
    expected_shards_touched,
    full_retrain_rows,
    monolithic_rows,
)
from sisa.errors import InputError

__all__ = ["plan", "speedup", "speedup_vs_monolithic"]


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
    n_rows, n_shards, n_slices, schedule, epochs, k
        As in :func:`speedup`.

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


def _plan_row(n: int, s: int, r: int, k: int, sched: Schedule, epochs: int) -> dict:
    """One row of :func:`plan`'s table: the costs of (S, R) = (s, r)."""
    return {
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
    return [_plan_row(n, s, r, k, sched, epochs) for s in shards for r in slices]
