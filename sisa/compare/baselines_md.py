"""``report.md``'s sections on the tuned baselines: the tuning's grid, criterion and choice
per forget set, and the ε̂-against-time curves as tables."""

from __future__ import annotations

__all__ = ["render"]


def _fmt(setting: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in setting.items())


def _tuning(t: dict) -> list[str]:
    lines = ["## Tuning of fine-tune, NegGrad+ and SCRUB", "",
             f"On a validation forget set per forget set (same rule, rows disjoint from the "
             f"measured U, seeds disjoint from the ε runs), N = {t['n_val']} models per side. "
             f"Criterion: {t['criterion']}.", "",
             "Grids: " + "; ".join(f"{m}: " + ", ".join(f"{k} ∈ {v}" for k, v in g.items())
                                   for m, g in t["grids"].items()), "",
             "| forget set | validation rule | method | chosen | score | ε̂ | acc U "
             "(retrain) |", "|---|---|---|---|---|---|---|"]
    for name, fs in t["forget_sets"].items():
        for m, r in fs["methods"].items():
            g = r["grid"][r["chosen_index"]]
            lines.append(f"| {name} | {fs['validation_rule']} | {m} | {_fmt(r['choice'])} | "
                         f"{g['score']:.3f} | {g['eps']:.2f} | {g['acc_u']:.3f} "
                         f"({r['retrain_acc']['u']:.3f}) |")
    return [*lines, ""]


def _curves(c: dict) -> list[str]:
    lines = ["## ε̂ against unlearning time (0 to retrain's cost)", "",
             f"N = {c['n_models']} models per side per point. {c['text']}.", ""]
    for name, fs in c["forget_sets"].items():
        lines += [f"**{name}** (retrain: {fs['retrain_s'] * 1e3:.1f} ms per model)", "",
                  "| method | " + " | ".join(f"{f:g} x" for f in c["fractions"]) + " |",
                  "|---|" + "---|" * len(c["fractions"])]
        for m, r in fs["methods"].items():
            cells = [f"{p['eps']:.2f} ({p['time_s'] * 1e3:.1f} ms"
                     + (f", acc U {p['acc_u']:.2f})" if p["acc_u"] is not None else ")")
                     for p in r["points"]]
            cells += [""] * (len(c["fractions"]) - len(cells))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render(data: dict) -> list[str]:
    """The two sections (empty when the report has neither)."""
    lines = []
    if data.get("tuning"):
        lines += _tuning(data["tuning"])
    if data.get("curves"):
        lines += _curves(data["curves"])
    return lines
