"""The stronger attacks on the ε runs' models, the verdicts at other subsample fractions,
and both wired into the report's records.

Each seed trains on a random fraction of W (the family's ``subsample``; linear default
0.9). How far an approximate method's models sit from retrain's depends on that fraction
(at 0.99 the references barely vary, so a small bias stands out). The default linear run
repeats the ε runs at 0.5 and 0.99 with fewer models (``FRACTION_MODELS``) and without
the methods whose per-seed cost dominates (SISA's store round trips, the noisy fits):
:data:`FRACTION_METHODS`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from sisa.compare.report.report import verdict
from sisa.compare.runs.gap import ScenarioRuns, estimate, run_epsilon
from sisa.compare.stats.attacks import lira, whitebox
from sisa.tasks.settings import ExecutionSettings

__all__ = ["EXTRA_FRACTIONS", "FRACTION_METHODS", "FRACTION_MODELS", "add_to_report",
           "attack_report", "fraction_runs"]

EXTRA_FRACTIONS = (0.5, 0.99)
FRACTION_MODELS = 128
# Every method but SISA: its forget is byte-identical to a SISA fit on W at any subsample
# (checked in the main runs), so its ε̂ there is a draw of its own floor by construction,
# and its fit + forget per seed is the costliest of all.
FRACTION_METHODS = ("retrain", "newton", "newton_noisy", "pru", "emse", "finetune", "neggrad",
                    "scrub", "relabel", "original")


def attack_report(runs: dict[str, ScenarioRuns]) -> dict[str, dict[str, dict]]:
    """LiRA (every method) and the white-box statistic (methods that have it), per forget
    set and method, against the method's own kind of reference."""
    out: dict[str, dict[str, dict]] = {}
    for name, r in runs.items():
        out[name] = {}
        for m in r.methods:
            kind = r.reference_kind[m]
            res = {"lira": lira(r.stats[m], r.ref[kind])}
            wb = r.whitebox or {}
            if m in wb.get("stats", {}) and kind in wb.get("ref", {}):
                res["whitebox"] = whitebox(wb["stats"][m], wb["ref"][kind])
            out[name][m] = res
    return out


def _row_summary(est: dict, name: str, m: str, r: ScenarioRuns) -> dict:
    ci = est[name]["methods"][m]
    floor = est[name]["floors"][r.reference_kind[m]]
    rows = np.asarray(ci["eps_per_row"])
    return {"eps": ci["eps"], "lo": ci["lo"], "hi": ci["hi"], "p_value": ci.get("p_value"),
            "floor": floor["eps"], "verdict": verdict(ci, floor),
            "eps_row_q95": float(np.quantile(rows, 0.95)), "eps_row_max": float(rows.max()),
            "lira_tpr_1pct": lira(r.stats[m], r.ref[r.reference_kind[m]],
                                  fprs=(0.01,))["models"]["tpr_at"]["0.01"]["tpr"]}


def fraction_runs(scs: dict, fam: Any, config: dict,
                  settings: ExecutionSettings) -> dict[str, dict]:
    """The ε runs and estimates at ``config["fractions"]`` other than the family's own.

    Returns ``{fraction: {scenario: {method: summary}}}`` with ``n_models`` and the
    wall time (``time_s``) per fraction; empty when the family has no such setting.
    """
    if not hasattr(fam, "subsample"):
        return {}
    out: dict[str, dict] = {}
    for f in config.get("fractions") or ():
        if f == fam.subsample:
            continue
        t0 = time.perf_counter()
        fam_f = dataclasses.replace(fam, subsample=f)
        meth = {s: tuple(m for m in fam.methods if m in config["fraction_methods"])
                for s in scs}
        runs, _ = run_epsilon(scs, fam_f, n_models=config["fraction_models"], methods=meth,
                              settings=settings)
        est = estimate(runs, n_boot=config["n_boot"], n_perm=config["n_perm"],
                       settings=settings)
        out[f"{f:g}"] = {"n_models": config["fraction_models"],
                         "scenarios": {name: {m: _row_summary(est, name, m, r)
                                              for m in r.methods}
                                       for name, r in runs.items()},
                         "time_s": time.perf_counter() - t0}
    return out


def _plain(x: Any) -> Any:
    """JSON types; non-finite floats become None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _certified(r: ScenarioRuns) -> dict | None:
    cert = [x["certified_epsilon"] for x in r.extra if "certified_epsilon" in x]
    beta = [x["removal_bound"] for x in r.extra if "removal_bound" in x]
    if not cert:
        return None
    return _plain({"median": float(np.median(cert)), "q95": float(np.quantile(cert, 0.95)),
                   "max": float(np.max(cert)),
                   "removal_bound_median": float(np.median(beta)) if beta else None})


def add_to_report(data: dict, attacks: dict, fractions: dict, subsample: float | None,
                  runs: dict[str, ScenarioRuns]) -> None:
    """New keys in the report's records: per method ``attacks``, ``eps_row_q95``,
    ``eps_row_max``, ``by_fraction`` (ε̂ and verdict per subsample fraction) and, for the
    certified method, ``certified_epsilon`` (median, q95, max over seeds) beside its ε̂;
    top level ``fractions`` (models, wall time)."""
    for name, s in data["scenarios"].items():
        cert = _certified(runs[name]) if name in runs else None
        if cert is not None and "newton_noisy" in s["methods"]:
            s["methods"]["newton_noisy"]["certified_epsilon"] = {
                **cert, "lam": data["family"].get("noise_lam"),
                "noise_std": data["family"].get("noise_std")}
        for m, row in s["methods"].items():
            rows = np.asarray(row["eps"].get("eps_per_row") or [0.0])
            row["eps_row_q95"] = float(np.quantile(rows, 0.95))
            row["eps_row_max"] = float(rows.max())
            if m in attacks.get(name, {}):
                row["attacks"] = _plain(attacks[name][m])
            by = {}
            if subsample is not None:
                by[f"{subsample:g}"] = {"eps": row["eps"]["eps"], "verdict": row["verdict"],
                                        "eps_row_max": row["eps_row_max"],
                                        "n_models": data["protocol"]["n_models"]}
            for f, res in fractions.items():
                if m in res["scenarios"].get(name, {}):
                    by[f] = _plain({**res["scenarios"][name][m], "n_models": res["n_models"]})
            if by:
                row["by_fraction"] = dict(sorted(by.items(), key=lambda kv: float(kv[0])))
    data["fractions"] = _plain({f: {"n_models": r["n_models"], "time_s": r["time_s"]}
                                for f, r in fractions.items()})
