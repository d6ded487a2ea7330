"""The comparison report: one JSON document, one Markdown page, and the figures."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sisa.compare.epsilon import DELTA
from sisa.compare.gap import GapResult
from sisa.compare.run import METHODS, Family, Outcome, Split, method_metrics

__all__ = ["CompareReport"]

_FORMAL_NOTES = {
    "retrain": "exact: it is the reference",
    "sisa": "exact: checkpoints byte-identical to a fit without U",
    "newton": f"Guo et al. certificate at δ={DELTA:g} (batch removal of U)",
    "emse": "no guarantee",
    "original": "no guarantee: nothing was removed",
}
_REFERENCES = {
    "retrain": "retrain on W with fresh seeds vs retrain on W: two independent samples of "
               "the same distribution (the estimator's floor)",
    "sisa": "SISA fit on W with the same seeds and sample ids",
    "newton": "the same certified-removal model fit on W (same seeds, same noise b)",
    "emse": "the monolithic model fit on W (same seeds)",
    "original": "the monolithic model fit on W (same seeds)",
}
_COLUMNS = {
    "classification": [("accuracy_wanted", "acc W"), ("accuracy_unwanted", "acc U"),
                       ("accuracy_test", "acc test")],
    "regression": [("r2_wanted", "R² W"), ("r2_unwanted", "R² U"), ("r2_test", "R² test")],
}
_COMMON = [("exp_r2_wanted", "ExpR² W"), ("exp_r2_unwanted", "ExpR² U"), ("fair_r2", "Fair R²")]


def metric_columns(task: str) -> list[tuple[str, str]]:
    """(key, label) of the metric columns for a task, in table order."""
    return _COLUMNS[task] + _COMMON


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class CompareReport:
    """Everything a comparison measured, JSON-ready.

    Attributes
    ----------
    data : dict
        The parsed ``report.json`` content (see :meth:`to_dict`).
    eps : dict of str to ndarray
        Per-row ε of each method against its same-seed reference.
    eps_indep : dict of str to ndarray
        The same against the fresh-seed references.
    files : dict of str to Path
        What :meth:`write` wrote.
    """

    data: dict
    eps: dict[str, np.ndarray]
    eps_indep: dict[str, np.ndarray]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def timings(self) -> dict:
        return self.data["timings"]

    @property
    def sisa_ok(self) -> bool:
        """SISA's forget was byte-identical to its fit on W everywhere, and ε̂ = 0 per row."""
        return bool(self.data["sisa_check"]["ok"])

    @classmethod
    def build(cls, split: Split, fam: Family, outcomes: dict[str, Outcome], gap: GapResult,
              config: dict, timings: dict) -> CompareReport:
        """Assemble the report from the metrics run and the ε runs."""
        describe = fam.describe()
        methods = {}
        for m in METHODS:
            o = outcomes[m]
            summary = gap.summary(m)
            methods[m] = {
                "description": describe[m],
                "unlearn_time_s": float(o.time_s),
                "rows_read": int(o.rows_read),
                "metrics": method_metrics(o.model, split, fam.sigma),
                "formal_epsilon": _finite(o.formal_epsilon),
                "formal_note": (_FORMAL_NOTES[m] if m != "sisa" or o.formal_epsilon == 0
                                else "not verified: checkpoints differ from a fit without U"),
                "extra": {k: (bool(v) if isinstance(v, (bool, np.bool_)) else v)
                          for k, v in o.extra.items()},
                "epsilon": {**summary, "reference": _REFERENCES[m],
                            "median_unlearn_time_s": gap.unlearn_time_s[m]},
                "eps_per_row": np.round(gap.eps[m], 4).tolist(),
            "eps_indep_per_row": np.round(gap.eps_indep[m], 4).tolist(),
            }
        n_same = int(sum(gap.sisa_identical))
        sisa_check = {
            "metrics_run_byte_identical": bool(outcomes["sisa"].extra["byte_identical"]),
            "seeds_byte_identical": n_same, "seeds": gap.n_models,
            "eps_all_zero": bool((gap.eps["sisa"] == 0).all()),
        }
        sisa_check["ok"] = (sisa_check["metrics_run_byte_identical"] and n_same == gap.n_models
                            and sisa_check["eps_all_zero"])
        data = {
            "config": config,
            "data": split.info,
            "family": {"sigma": fam.sigma, "n_shards": fam.n_shards, "n_slices": fam.n_slices,
                       "newton": fam.newton, "emse": fam.emse, "newton_max_norm": fam.max_norm},
            "methods": methods,
            "gap": {"n_models": gap.n_models, "eps_max": gap.eps_max, "delta": DELTA,
                    "seeds": [gap.seeds[0], gap.seeds[-1]], "subsample": config["subsample"],
                    "n_rows": int(split.info["n_forget"]), "wall_time_s": gap.wall_time_s},
            "sisa_check": sisa_check,
            "timings": dict(timings),
            "figures": [],
        }
        return cls(data, {m: np.asarray(gap.eps[m]) for m in METHODS},
                   {m: np.asarray(gap.eps_indep[m]) for m in METHODS})

    # -- output ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The report as plain JSON types."""
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, ensure_ascii=False)

    def table(self) -> str:
        """The Markdown table: methods as rows."""
        d = self.data
        cols = metric_columns(d["data"]["task"])
        head = (["method", "unlearn time", "rows read"] + [label for _, label in cols]
                + ["ε̂ median (same seeds)", "forgetting quality", "ε̂ median (indep. seeds)",
                   "formal ε"])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m, r in d["methods"].items():
            e = r["epsilon"]
            same = [f"{e['median']:.2f}", f"{e['forgetting_quality']:.3f}"]
            if m == "retrain":
                same = ["— (reference)", "—"]
            formal = r["formal_epsilon"]
            formal_s = "none" if formal is None else f"{formal:.3g}"
            if m == "sisa" and formal == 0:
                formal_s = "0 (byte-identical)"
            row = ([m, _seconds(r["unlearn_time_s"]), f"{r['rows_read']:,}"]
                   + [f"{r['metrics'][k]:.3f}" for k, _ in cols] + same
                   + [f"{e['independent']['median']:.2f}" + ("†" if m == "retrain" else ""),
                      formal_s])
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The whole ``report.md`` page."""
        d = self.data
        info, g, chk, t = d["data"], d["gap"], d["sisa_check"], d["timings"]
        sisa = d["methods"]["sisa"]["extra"]
        task_metric = "accuracy" if info["task"] == "classification" else "R²"
        lines = [
            f"# sisa compare: {info['dataset']}",
            "",
            f"{info['description']}.",
            f"D = {info['n_train']:,} training rows, U = {info['n_forget']:,} "
            f"({info['forget_rule']}), W = {info['n_wanted']:,}; test = {info['n_test']:,} "
            f"held-out wanted rows. Features: {info['feature_map']}.",
            f"ε runs: N = {g['n_models']} models per side "
            f"(seeds {g['seeds'][0]}..{g['seeds'][1]}), ε̂ capped at {g['eps_max']:g} ≈ "
            f"ln(N−1), δ = {g['delta']:g}; monolithic and Newton models train on a seeded "
            f"{g['subsample']:.0%} of W (plus all of U), SISA on all rows (its randomness is "
            "its seed). "
            f"Wall time {t['total_s']:.0f} s (ε runs {g['wall_time_s']:.0f} s).",
            "",
            self.table(),
            "",
            "*Same seeds*: unlearned model i vs its reference i (trained without U with the "
            "same seed): 0 only if the method reproduces its reference. *Indep. seeds*: "
            "unlearned model i vs reference N+i, the NeurIPS-2023 protocol. † Two independent "
            "retrains: the estimator's floor for two samples of one distribution at this N; "
            "an exact method scores about this much in that column.",
            "",
            f"**SISA check** ({'passed' if chk['ok'] else 'FAILED'}): forget(U) checkpoints "
            f"byte-identical to fit(W) in the metrics run: {chk['metrics_run_byte_identical']}; "
            f"in the ε runs: {chk['seeds_byte_identical']}/{chk['seeds']} seeds; "
            f"ε̂ = 0 on every forgotten row: {chk['eps_all_zero']}. The forget touched "
            f"{sisa['shards_affected']} of {d['family']['n_shards']} shards and "
            f"processed {sisa['rows_retrained']:,} row-passes "
            f"({sisa['rows_retrained'] / max(sisa['rows_full_retrain'], 1):.0%} of a full "
            "retrain).",
            "",
            "## Methods",
            "",
        ]
        lines += [f"* **{m}**: {r['description']}. Formal ε: {r['formal_note']}."
                  for m, r in d["methods"].items()]
        lines += [
            "",
            "## Reading the table",
            "",
            "* *unlearn time*: wall time of the unlearning step alone (retrain: the fit on W; "
            "sisa: forget; newton: the Newton step; emse: the fine-tune). *rows read*: distinct "
            "training rows that step reads.",
            f"* {task_metric} on W, on U and on the test rows. ExpR² = mean "
            f"exp(−r²/2σ²) with σ = {d['family']['sigma']:g}"
            + (" and r = 1 − p_y (sisa's convention for classifiers)"
               if info["task"] == "classification" else " and r = y − f(x)")
            + "; Fair R² = ExpR²(W)·(1 − ExpR²(U)).",
            "* ε̂: per forgotten row, the NeurIPS-2023 challenge estimator on the "
            + ("logit-scaled confidence" if info["task"] == "classification" else "residual")
            + " under N unlearned vs N reference models; 0 = indistinguishable, "
            f"{g['eps_max']:g} = perfectly separated. Forgetting quality = mean of 2^−bucket "
            "(1 = every row indistinguishable).",
        ]
        if d["figures"]:
            lines += ["", "## Figures", ""]
            lines += [f"![{Path(f).stem}]({Path(f).name})" for f in d["figures"]]
        return "\n".join(lines) + "\n"

    def write(self, out: str | os.PathLike, *, figures: bool = True) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and (optionally) the PNG figures to ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if figures:
            try:
                from sisa.compare.plots import plot_all
            except ImportError:  # matplotlib is the optional `plots` extra
                print("note: no figures written; install them with `pip install 'sisa[plots]'`",
                      file=sys.stderr)
            else:
                self.data["figures"] = [p.name for p in plot_all(self, out)]
                self.files.update({Path(f).stem: out / f for f in self.data["figures"]})
        self.files["json"] = out / "report.json"
        self.files["json"].write_text(self.to_json() + "\n", encoding="utf-8")
        self.files["md"] = out / "report.md"
        self.files["md"].write_text(self.to_markdown(), encoding="utf-8")
        return self.files


def _seconds(s: float) -> str:
    if s == 0:
        return "0 s"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"
