"""The comparison report: one JSON-ready document, written as ``report.json`` and
``report.md`` (the text is :mod:`sisa.compare.report.markdown`'s; the figures are drawn by
:func:`sisa.compare.head2head.run` with :mod:`sisa.compare.report.plots`)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sisa.compare.methods.families import Family
from sisa.compare.report import markdown
from sisa.compare.runs.gap import ScenarioRuns
from sisa.compare.stats.epsilon import DELTA, max_epsilon
from sisa.compare.stats.permutation import min_p_warning
from sisa.compare.stats.scores import final_score, summary_stats

__all__ = ["ALPHA", "CompareReport", "verdict"]

ALPHA = 0.05


def verdict(ci: dict, floor: dict, alpha: float = ALPHA) -> str:
    """How a method's ε̂ stands against its floor.

    ``above floor``: its interval lies above the floor's and the permutation test
    rejects exchangeability; ``at floor``: the test does not reject (p >= alpha);
    ``distinguishable``: the test rejects but the intervals overlap. The test's p is
    the Holm-adjusted one (``p_holm``) when the report has it, else the raw ``p_value``.
    """
    p = ci.get("p_holm", ci.get("p_value", 1.0))
    if p >= alpha:
        return "at floor"
    return "above floor" if ci["lo"] > floor["hi"] else "distinguishable"


def _clean(x: Any) -> Any:
    """Plain JSON types; non-finite floats become None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _method_row(r: ScenarioRuns, est: dict, m: str) -> dict:
    """One method's line of a forget set: ε̂ against its floor, score, accuracy, time."""
    ci = dict(est["methods"][m])
    acc, acc_ref = r.acc[m], r.acc["retrain"].mean(axis=0)
    row = {
        "eps": ci, "reference": r.reference_kind[m],
        "verdict": verdict(ci, est["floors"][r.reference_kind[m]]),
        "final_score": final_score(ci["forgetting_quality"], acc[:, 0].mean(), acc_ref[0],
                                   acc[:, 2].mean(), acc_ref[2]),
        "acc": {k: summary_stats(acc[:, i]) for i, k in enumerate(("w", "u", "test"))},
        "time_s": summary_stats(r.times[m]),
    }
    if m in r.injected_weight:
        row["injected_weight"] = summary_stats(r.injected_weight[m])
    return row


def _scenario(r: ScenarioRuns, est: dict) -> dict:
    cert = [x["certified_epsilon"] for x in r.extra if "certified_epsilon" in x]
    return {"info": r.scenario.info,
            "methods": {m: _method_row(r, est, m) for m in r.methods},
            "floors": est["floors"],
            "certified_epsilon_median": float(np.median(cert)) if cert else None,
            "sisa_byte_identical": [x["sisa_byte_identical"] for x in r.extra
                                    if "sisa_byte_identical" in x],
            "tied_at_cap": [m for m in r.methods if est["methods"][m].get("at_cap")]}


def _statistics(est: dict, n_perm: int) -> dict:
    """How the report's tests are corrected, and whether any of them can reject."""
    n_tests = sum(len(s["methods"]) for s in est.values())
    warn = min_p_warning(n_perm, n_tests, ALPHA)
    return {"n_tests": n_tests, "n_perm": n_perm, "correction": "holm",
            "smallest_p": 1 / (n_perm + 1), "smallest_p_holm": min(1.0, n_tests / (n_perm + 1)),
            "warnings": [warn] if warn else []}


@dataclass
class CompareReport:
    """Everything a comparison measured, JSON-ready.

    Attributes
    ----------
    data : dict
        The ``report.json`` content.
    files : dict of str to Path
        What :meth:`write` wrote (and the figures, by name, when drawn).
    """

    data: dict
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def timings(self) -> dict:
        """Wall times of the run, in seconds (``training_s``, ``estimates_s``, ``total_s``)."""
        return self.data["timings"]

    @property
    def sisa_ok(self) -> bool:
        """Every checked SISA forget was byte-identical to a fit without U."""
        return bool(self.data["sisa_check"]["ok"])

    @classmethod
    def build(cls, fam: Family, info: dict, runs: dict[str, ScenarioRuns], est: dict,
              costs: dict | None, power: dict, config: dict, timings: dict) -> CompareReport:
        """Assemble the report from the ε runs, their estimates and the cost run (None:
        the family has none)."""
        n = config["n_models"]
        scen = {name: _scenario(r, est[name]) for name, r in runs.items()}
        checked = [ok for s in scen.values() for ok in s["sisa_byte_identical"]]
        data = {
            "config": config,
            "data": info,
            "family": fam.summary(),
            "protocol": {"n_models": n, "eps_max": max_epsilon(n), "delta": DELTA,
                         "seeds": {"unlearned": [0, n - 1], "reference": [n, 2 * n - 1],
                                   "second_reference": [2 * n, 3 * n - 1]},
                         "alpha": ALPHA},
            "scenarios": scen,
            "power": power,
            "statistics": _statistics(est, config["n_perm"]),
            "costs": costs,
            "sisa_check": {"seeds_checked": len(checked), "byte_identical": int(sum(checked)),
                           "ok": bool(checked) and all(checked)},
            "timings": dict(timings),
            "figures": [],
        }
        return cls(_clean(data))

    def to_dict(self) -> dict:
        """The report as plain JSON types."""
        return self.data

    def to_json(self) -> str:
        """``report.json``'s text."""
        return json.dumps(self.data, indent=2, ensure_ascii=False)

    def table(self, scenario: str) -> str:
        """Markdown table of one forget set: methods as rows."""
        return markdown.epsilon_table(self.data, scenario)

    def headline(self) -> str:
        """One line per forget set: each method's ε̂ and CI next to its floor."""
        return markdown.headline(self.data)

    def cost_table(self) -> str:
        """Markdown table of the full-data cost run."""
        return markdown.cost_table(self.data)

    def to_markdown(self) -> str:
        """The whole ``report.md`` page."""
        return markdown.render(self.data)

    def write(self, out: str | os.PathLike, figures: bool = True) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and ``report.html`` to ``out`` (created if
        missing); ``figures``: draw the page's figures inline (needs matplotlib)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.files["json"] = out / "report.json"
        self.files["json"].write_text(self.to_json() + "\n", encoding="utf-8")
        self.files["md"] = out / "report.md"
        self.files["md"].write_text(self.to_markdown(), encoding="utf-8")
        from sisa.compare.report import html

        self.files["html"] = html.write(self.data, out, figures=figures)
        return self.files
