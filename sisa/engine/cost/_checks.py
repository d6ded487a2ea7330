"""Argument checks shared by the cost functions: each names the argument and its range."""

from __future__ import annotations

import math
import numbers
from typing import Literal

from sisa.errors import InputError

Schedule = Literal["streaming", "cumulative", "refit"]
SCHEDULES: tuple[str, ...] = ("streaming", "cumulative", "refit")


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
