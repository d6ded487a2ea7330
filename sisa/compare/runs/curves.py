"""Compute-matched curves: each approximate method's ε̂ (and accuracy) against its
unlearning time, from zero (the original model) to retrain's cost.

Retrain's cost is a cold refit on W (the linear family's: Newton's method from zero; the
torch family's: training from its seed), the median over the curve's reference models.
For each method with a budget knob (:data:`sisa.compare.methods.knobs.CURVE_METHODS`, at its tuned
setting otherwise) one unit (one epoch; EMSE: one L-BFGS iteration) is timed on a few
seeds, each timing a cold retrain then :data:`CALIBRATION_UNITS` units (so both see the
same load), and ``E = max(1, round(retrain's time / one unit's time))`` units cost about
one retrain; the curve's budgets are ``round(f x E)`` for ``f`` in :data:`FRACTIONS`, so its
first point is the original (cost 0) and its last costs about a retrain. Every point
unlearns ``n_models`` originals and measures ε̂ (mean per-row, the ε runs' estimator) against
``n_models`` cold retrains, and accuracy on U and test; the x value is the measured median
time. Fixed-cost methods (Newton, PRU) are one point each; ``retrain`` is the floor (its
retrains against a second set) at its cost. Fewer models than the ε runs: ε̂ resolves up
to about ``ln(n_models - 1)`` and reads above 0 on null data (the floor shows by how much).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from sisa.compare.data import Scenario
from sisa.compare.methods import knobs
from sisa.compare.runs.tuning import _accs
from sisa.compare.stats.epsilon import per_example_epsilon
from sisa.tasks.backend import map_tasks
from sisa.tasks.settings import ExecutionSettings

__all__ = ["CALIBRATION_SEEDS", "DEFAULTS", "FRACTIONS", "budgets", "collect", "curve_method",
           "curve_task", "run_curves", "side_tasks"]

FRACTIONS = (0.0, 0.125, 0.25, 0.5, 1.0)
CALIBRATION_SEEDS = 5
CALIBRATION_UNITS = 4
TEXT = ("x: median unlearning time per model; retrain's cost = a cold refit on W; each "
        "knob method's budgets are fractions 0, 1/8, 1/4, 1/2, 1 of the units (epochs; "
        "EMSE: L-BFGS iterations) that cost one retrain, at its tuned setting; y: mean "
        "per-row ε̂ against as many cold retrains (retrain's point: its floor)")
#: Per family: models per side of each curve point, forget sets drawn by default,
#: validation models of the tuning.
DEFAULTS = {"linear": {"curve_models": 64, "curve_scenarios": ("mislabeled", "injected"),
                       "tune_models": 32},
            "torch": {"curve_models": 16, "curve_scenarios": ("mislabeled",),
                      "tune_models": 8}}


def budgets(retrain_s: float, unit_s: float, fractions: tuple[float, ...] = FRACTIONS
            ) -> list[int]:
    """Units per curve point: ``round(f x E)`` (at least 1 for ``f > 0``),
    ``E = max(1, round(retrain_s / unit_s))``: the first point (f = 0) is the original and
    the last (f = 1) costs about a retrain."""
    full = max(1, round(retrain_s / max(unit_s, 1e-9)))
    return [max(1, round(f * full)) if f > 0 else 0 for f in fractions]


class _Side:
    """What every method's curve on one forget set shares: originals and cold retrains."""

    def __init__(self, fam: Any, sc: Scenario, n: int) -> None:
        warm = fam.warm_start(sc)
        self.origs = [knobs.original(fam, sc, s, warm) for s in range(n)]
        rows, self.ret_s, ref, ref2 = sc.stat_rows, [], [], []
        for s in range(n):
            t0 = time.perf_counter()
            m = fam.reference("monolithic", sc, n + s)  # cold: no warm start
            self.ret_s.append(time.perf_counter() - t0)
            ref.append(fam.statistic(m, sc.X[rows], sc.y[rows]))
            m2 = fam.reference("monolithic", sc, 2 * n + s, warm)
            ref2.append(fam.statistic(m2, sc.X[rows], sc.y[rows]))
        self.ref, self.ref2 = np.array(ref), np.array(ref2)
        self.retrain_s = float(np.median(self.ret_s))


def _point(fam: Any, sc: Scenario, side: _Side, method: str, setting: dict) -> dict:
    """ε̂, accuracies and median time of ``method`` at ``setting`` over the side's seeds."""
    rows = sc.stat_rows
    stats, accs, times = [], [], []
    for s, (orig, r) in enumerate(side.origs):
        t0 = time.perf_counter()
        m = knobs.apply(fam, sc, s, orig, r, method, setting)
        times.append(0.0 if setting.get("epochs", 1) == 0 else time.perf_counter() - t0)
        stats.append(fam.statistic(m, sc.X[rows], sc.y[rows]))
        accs.append(_accs(fam, m, sc))
    acc = np.array(accs).mean(axis=0)
    eps = per_example_epsilon(np.array(stats), side.ref)
    return {"time_s": float(np.median(times)), "eps": float(eps.mean()),
            "eps_q95": float(np.quantile(eps, 0.95)), "acc_u": float(acc[1]),
            "acc_test": float(acc[2])}


def curve_method(fam: Any, sc: Scenario, side: _Side, method: str, setting: dict) -> dict:
    """One method's curve (knob methods) or point (fixed-cost methods) on ``sc``."""
    if method not in knobs.CURVE_METHODS[fam.name]:
        return {"units": None, "points": [_point(fam, sc, side, method, {})]}
    # Calibration, interleaved so both see the same load: a cold retrain, then
    # CALIBRATION_UNITS units of the method, on each of a few seeds.
    unit, ret = [], []
    for s in range(min(CALIBRATION_SEEDS, len(side.origs))):
        orig, r = side.origs[s]
        t0 = time.perf_counter()
        fam.reference("monolithic", sc, len(side.origs) + s)
        t1 = time.perf_counter()
        knobs.apply(fam, sc, s, orig, r, method, {**setting, "epochs": CALIBRATION_UNITS})
        ret.append(t1 - t0)
        unit.append((time.perf_counter() - t1) / CALIBRATION_UNITS)
    cal = {"retrain_s": float(np.median(ret)), "unit_s": float(np.median(unit))}
    units = budgets(cal["retrain_s"], cal["unit_s"])
    points = [{"epochs": e, "fraction": f,
               **_point(fam, sc, side, method, {**setting, "epochs": e})}
              for e, f in zip(units, FRACTIONS, strict=True)]
    return {"units": units, "unit_s": cal["unit_s"], "calibration": cal, "points": points}


def curve_task(fam: Any, sc: Scenario, n: int, methods: list[str]) -> dict:
    """Every curve and point of one forget set (one task)."""
    with threadpool_limits(limits=1):
        side = _Side(fam, sc, n)
        out = {m: curve_method(fam, sc, side, m, _tuned(fam, sc.name, m)) for m in methods}
        floor = per_example_epsilon(side.ref2, side.ref)
        out["retrain"] = {"units": None, "points": [{
            "time_s": side.retrain_s, "eps": float(floor.mean()),
            "eps_q95": float(np.quantile(floor, 0.95)), "acc_u": None, "acc_test": None}]}
        return {"retrain_s": side.retrain_s, "methods": out}


def _tuned(fam: Any, scenario: str, method: str) -> dict:
    """The method's tuned setting on ``scenario`` (its defaults where not tuned)."""
    return dict(((getattr(fam, "params", None) or {}).get(scenario) or {}).get(method, {}))


def run_curves(fam: Any, scenarios: dict[str, Scenario], *, n_models: int,
               settings: ExecutionSettings | None = None) -> dict:
    """The curves of every knob method and the points of the fixed-cost ones, per forget set
    (one task per forget set).

    Returns
    -------
    dict
        ``n_models``, ``fractions``, ``text`` and ``forget_sets``: name -> ``retrain_s``
        and ``methods`` (method -> ``units``, ``unit_s``, ``points`` of ``epochs``,
        ``fraction``, ``time_s``, ``eps``, ``eps_q95``, ``acc_u``, ``acc_test``).
    """
    settings = settings or ExecutionSettings(backend="ray", progress=False)
    methods = _methods(fam)
    names = list(scenarios)
    out = map_tasks(curve_task, [(scenarios[s], n_models, methods) for s in names], settings,
                    shared=(fam,), desc="curves")
    return {"n_models": n_models, "fractions": list(FRACTIONS), "text": TEXT,
            "forget_sets": dict(zip(names, out, strict=True))}


def _methods(fam: Any) -> list[str]:
    return [m for m in (*knobs.CURVE_METHODS[fam.name], *knobs.FIXED_METHODS[fam.name])
            if m in fam.methods]


def side_tasks(fam: Any, scenarios: dict[str, Scenario], config: dict) -> list:
    """``sisa compare``'s curve tasks, run beside the ε runs: ``(fn, kwargs)`` per forget
    set of ``config["curve_scenarios"]`` (none when ``curve_models`` is 0)."""
    n = config["curve_models"]
    if not n or fam.name not in knobs.CURVE_METHODS:
        return []
    return [(curve_task, {"fam": fam, "sc": scenarios[s], "n": n, "methods": _methods(fam)})
            for s in config["curve_scenarios"] if s in scenarios]


def collect(outs: list[dict], config: dict) -> dict | None:
    """The report's ``curves`` record from :func:`side_tasks`' results."""
    if not outs:
        return None
    names = list(config["curve_scenarios"])
    return {"n_models": config["curve_models"], "fractions": list(FRACTIONS), "text": TEXT,
            "forget_sets": dict(zip(names, outs, strict=True))}
