"""The report's text: Markdown tables and the ``report.md`` page, from ``report.json``'s
content alone (so a saved report can be rendered again)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cost_table", "epsilon_table", "headline", "render"]


def _p(p: float) -> str:
    return f"{p:.2f}" if p >= 0.01 else f"{p:.2g}"  # 2000 permutations reach 0.0005


def _sd(x: float | None) -> str:
    return "none of the shifts tried" if x is None else f"{x:g} sd"


def _ms(s: float) -> str:
    if s == 0:
        return "0"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _ci(e: dict) -> str:
    return f"{e['eps']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]"


# The estimator's statistics (sisa.compare.stats.bounds, .permutation): lower bound, worst
# rows, rows at the cap, Holm-adjusted p.
_STATS_HEAD = ["ε lower bound (mean / max row)", "q95 / max per row", "rows at cap",
               "p Holm"]


_BOUND_TEXT = (
    "* ε̂ is an estimate, not a bound (two samples of one distribution read ~1.2). "
    "ε lower bound: Clopper–Pearson, a threshold rule chosen on half the models and "
    "evaluated on the other half; with 95% confidence it is below the mean (and "
    "worst-row) ε of every row at once. q95 / max per row: the worst rows the mean "
    "hides. Rows at cap: per-row ε at the cap (perfect separation); *at cap*: "
    "the interval reaches the cap, so such methods are tied, not ranked.")


def _stats_cells(e: dict) -> list[str]:
    lower = (f"{e['eps_lower']:.2f} / {e['eps_lower_max']:.2f}" if "eps_lower" in e else "")
    worst = f"{e['row_q95']:.2f} / {e['row_max']:.2f}" if "row_q95" in e else ""
    cap = (f"{e['rows_at_cap']}/{len(e['eps_per_row'])}" + (" (at cap)" if e["at_cap"]
                                                            else "")
           if "rows_at_cap" in e else "")
    return [lower, worst, cap, _p(e["p_holm"]) if "p_holm" in e else ""]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _time(t: dict) -> str:
    return f"{_ms(t['median'])} [{_ms(t['min'])}–{_ms(t['max'])}]"


def epsilon_table(data: dict, scenario: str) -> str:
    """Markdown table of one forget set: methods as rows."""
    s = data["scenarios"][scenario]
    inj = any("injected_weight" in r for r in s["methods"].values())
    head = ["method", "ε̂ [95% CI]", "floor [95% CI]", "p", "verdict", "FQ", "score",
            "acc W", "acc U", "acc test", "unlearn time"] + (["w(injected)"] if inj else [])
    head += _STATS_HEAD
    lines = [_row(head), "|" + "---|" * len(head)]
    for m, r in s["methods"].items():
        e, f = r["eps"], s["floors"][r["reference"]]
        row = [m, _ci(e), _ci(f), _p(e["p_value"]), r["verdict"],
               f"{e['forgetting_quality']:.3f}", f"{r['final_score']:.3f}"]
        row += [f"{r['acc'][k]['mean']:.3f} ± {r['acc'][k]['sd']:.3f}"
                for k in ("w", "u", "test")]
        row.append(_time(r["time_s"]))
        if inj:
            w = r.get("injected_weight")
            row.append(f"{w['mean']:.3f} ± {w['sd']:.3f}" if w else "")
        row += _stats_cells(e)
        lines.append(_row(row))
    return "\n".join(lines)


def _tpr(block: dict | None, fpr: str) -> str:
    """A TPR at one FPR, or why there is none."""
    if not block:
        return ""
    t = block["tpr_at"].get(fpr)
    if t is None:
        return ""
    if not t["resolvable"]:
        return f"n/r (N={t['n_neg']} < {t['n_neg_needed']})"
    return f"{t['tpr']:.3f}"


def _fraction_cell(by: dict | None, f: str) -> str:
    r = (by or {}).get(f)
    return "" if r is None else f"{r['eps']:.2f} {r['verdict']}"


def _beside(s: dict) -> str:
    """newton_noisy's certified ε's maximum and its ε̂, after the median."""
    r = s["methods"].get("newton_noisy", {})
    c = r.get("certified_epsilon")
    if not c:
        return "."
    return (f", max {c['max']:.3g} over the seeds (λ = {c.get('lam') or 0:g}); its ε̂ "
            f"{_ci(r['eps'])} against the noisy retrain.")


def attacks_table(data: dict, scenario: str) -> str:
    """Markdown table of one forget set's stronger attacks, per-row tails and the verdicts
    at each subsample fraction (empty when the report has none)."""
    s = data["scenarios"][scenario]
    fr = sorted({f for r in s["methods"].values() for f in r.get("by_fraction", {})},
                key=float)
    if not any("attacks" in r for r in s["methods"].values()):
        return ""
    head = ["method", "ε̂ per row q95 / max", "LiRA TPR@1% (models)", "LiRA TPR@0.1%",
            "LiRA TPR@1% (pairs)", "LiRA per-row TPR@1% mean / q95 / max",
            "white-box TPR@1%", "white-box TPR@0.1%", "white-box ε̂",
            "certified ε (median / max)"] + [f"ε̂, verdict @ {f}" for f in fr]
    lines = [_row(head), "|" + "---|" * len(head)]
    for m, r in s["methods"].items():
        a = r.get("attacks", {})
        li, wb = a.get("lira"), a.get("whitebox")
        pr = (li or {}).get("per_row", {})
        cert = r.get("certified_epsilon")
        row = [m, f"{r.get('eps_row_q95', 0):.2f} / {r.get('eps_row_max', 0):.2f}",
               _tpr(li and li["models"], "0.01"), _tpr(li and li["models"], "0.001"),
               _tpr(li and li["pairs"], "0.01"),
               (f"{pr['mean']:.3f} / {pr['q95']:.3f} / {pr['max']:.3f}"
                if pr.get("resolvable") else f"n/r (N={pr.get('n_neg', '?')})" if li else ""),
               _tpr(wb, "0.01"), _tpr(wb, "0.001"),
               f"{wb['eps']:.2f}" if wb else "",
               f"{cert['median']:.3g} / {cert['max']:.3g}" if cert else ""]
        row += [_fraction_cell(r.get("by_fraction"), f) for f in fr]
        lines.append(_row(row))
    missing = [m for m, r in s["methods"].items() if len(r.get("by_fraction", {})) < len(fr)]
    if "sisa" in missing:  # not run there, by design: say why, next to the empty cells
        lines.append("\nsisa is measured at the main fraction only: its forget is "
                     "byte-identical to a SISA fit on W (checked above), so its ε̂ at any "
                     "subsample is a draw of its own floor by construction, and its fit + "
                     "forget is the costliest method per seed.")
    return "\n".join(lines)


def headline(data: dict) -> str:
    """One line per forget set: each method's ε̂ and CI next to its floor."""
    out = []
    for name, s in data["scenarios"].items():
        parts = [f"{m} {_ci(r['eps'])}" for m, r in s["methods"].items()]
        floors = ", ".join(f"{k} {_ci(f)}" for k, f in s["floors"].items())
        out.append(f"{name}: " + "; ".join(parts) + f" | floors: {floors}")
    return "\n".join(out)


def cost_table(data: dict) -> str:
    """Markdown table of the full-data cost run."""
    c = data["costs"]
    labels = list(c["requests"])
    head = (["method"] + [f"time, {lab} request" for lab in labels]
            + ["acc W", "acc U", "acc test", "ECE test", "Fair R²"])
    lines = [_row(head), "|" + "---|" * len(head)]
    first = c["requests"][labels[0]]
    for m in first:
        row = [m] + [_time(c["requests"][lab][m]["time_s"]) for lab in labels]
        row += [f"{first[m][k]['mean']:.4f} ± {first[m][k]['sd']:.4f}"
                for k in ("acc_w", "acc_u", "acc_test")]
        row.append(f"{first[m]['ece_test']['mean']:.4f}")
        row.append(f"{first[m]['fair_r2']['mean']:.3f}")
        lines.append(_row(row))
    return "\n".join(lines)


def _protocol(d: dict) -> list[str]:
    cfg, info, pr, text = d["config"], d["data"], d["protocol"], d["family"]["text"]
    n = pr["n_models"]
    return [
        f"# sisa compare: {info['dataset']}",
        "",
        "## Protocol",
        "",
        f"* **ε runs** on {info['rows']:,} rows of {info.get('source', 'Adult')} "
        + ("(all)" if cfg["eps_rows"] is None else
           "(a seeded subsample of its training rows: the 3N models per method and forget "
           "set must fit the time budget)")
        + f", {info['n_features']} features ({info['feature_map']}).",
        f"* The NeurIPS-2023 challenge's protocol: for every method N = {n} unlearned "
        f"models (seeds 0..{n - 1}) against N reference models trained without U with "
        f"independent seeds ({n}..{2 * n - 1}). Its **floor**: the references against a "
        f"second set of references ({2 * n}..{3 * n - 1}), i.e. what ε̂ reads for two "
        "samples of one distribution.",
        f"* ε̂ = mean over the forgotten rows of the per-row ε (δ = {pr['delta']:g}, cap "
        f"{pr['eps_max']:g} ≈ ln(N−1)); 95% intervals from {cfg['n_boot']} bootstrap "
        "replicates over models and rows (bias-shifted, clipped to the cap); p = "
        f"permutation test of unlearned vs reference models ({cfg['n_perm']} "
        "permutations, the same re-splits for every method of a forget set), Holm-"
        "adjusted across every test of the report (p Holm). Verdict (on p Holm): *above "
        "floor* = interval above the floor's and p < 0.05; *at floor* = p ≥ 0.05.",
        _BOUND_TEXT,
        "* FQ = the challenge's forgetting quality; score = FQ × (acc W / retrain's) × "
        "(acc test / retrain's), the challenge's final score (W is its retain set).",
        f"* One model family for every method: {text['model']}. Statistic: "
        + text.get("stat_line", "the true class's logit (SISA: log-odds of the vote, by "
                   "log-sum-exp: never clamped)."),
        f"* Randomness: {text['randomness']}.",
        "",
        "**Deviations from the challenge** (google-deepmind/unlearning_evaluation): "
        "(1) no fixed original: every unlearned model starts from its own original, "
        "trained with its seed (the challenge unlearns one original N times; with a "
        "deterministic unlearning step that gives N identical models, a point mass); "
        "(2) the double-threshold window is ±2 pooled standard deviations of the row, "
        "not ±2 statistic units, so floors are comparable across methods; (3) "
        "thresholds are every cut between values (single) and 32 order statistics "
        "(double), not the grid of 100 per unit; (4) ε is capped at ln(N−1) rather than "
        f"50 (FQ is the same either way); (5) statistics are {text['statistic']}.",
        "",
    ]


def _epsilon_sections(d: dict) -> list[str]:
    pr = d["protocol"]
    lines = ["## ε̂ against each method's floor", ""]
    lines += [f"**Warning:** {w}" for w in d.get("statistics", {}).get("warnings", [])]
    lines += [""] if d.get("statistics", {}).get("warnings") else []
    for name, s in d["scenarios"].items():
        si = s["info"]
        lines += [f"### {name}: {si['rule']}", "",
                  f"|D| = {si['n_train']:,}, |U| = {si['n_forget']:,}, ε measured on "
                  f"{si['n_stat_rows']:,} rows; test {si['n_test']:,}.", "",
                  epsilon_table(d, name), ""]
        lines += [attacks_table(d, name), ""] if attacks_table(d, name) else []
        if s["certified_epsilon_median"] is not None:
            lines += [f"newton_noisy's certified ε (Guo et al., δ = {pr['delta']:g}, "
                      f"σ = {d['family']['noise_std']:g}): median "
                      f"{s['certified_epsilon_median']:.3g}" + _beside(s), ""]
    lines += [
        "Floors: each method is compared with its own kind of reference "
        f"({d['family']['text']['floors']}), and its floor "
        "is that reference against itself. Accuracies: mean ± sd over the N seeds; "
        "unlearn time: median [min–max] over the seeds (tasks share the CPUs).",
        "",
    ]
    return lines


def _power(d: dict) -> list[str]:
    n, pw = d["protocol"]["n_models"], d["power"]
    return [
        "## Power",
        "",
        f"Gaussian statistics, N = {n} models a side, {pw['n_rows']} rows (the median "
        f"forget-set size): the smallest mean shift whose ε̂ interval clears the floor's "
        f"is **{_sd(pw['smallest'])}** (floor {pw['floor']['eps']:.2f} "
        f"[{pw['floor']['lo']:.2f}, {pw['floor']['hi']:.2f}]). "
        "Shift (sd) → ε̂: " + ", ".join(f"{s:g} → {e:.2f}" for s, e, _, _ in pw["curve"])
        + ". The injected effect: `original` (do nothing) on the duplicated and "
        "mislabeled sets must read *above floor* (see their tables).",
        "",
    ]


def _costs(d: dict) -> list[str]:
    cfg, c = d["config"], d["costs"]
    fits = c["fits"]
    lines = [
        f"## Cost and accuracy on {c['data']['n_train']:,} training rows "
        f"({'all of Adult' if cfg['cost_rows'] is None else 'subsample'})",
        "",
        f"{c['data']['repeats']} seeds; 2% request = {c['data']['n_forget']:,} rows. "
        f"Fit on D: monolithic {_ms(fits['original_fit_s']['median'])}, SISA "
        f"{_ms(fits['sisa_fit_s']['median'])} (S = {d['family']['n_shards']}, R = "
        f"{d['family']['n_slices']}). Times: median [min–max]; retrain is a cold refit "
        "on W; accuracies mean ± sd over the seeds (2% request). ECE: expected "
        "calibration error on the test rows (10 bins); SISA's shards alone: "
        f"{c['sisa_shard_ece_test']['mean']:.4f}.",
        "",
        cost_table(d),
        "",
        "Fair R² = ExpR²(W) · (1 − ExpR²(U)) on r = 1 − p_y (σ = 0.25). It rewards "
        "*low* confidence on U, not indistinguishability from retraining: a retrained "
        "model still predicts U rows like W rows, so the exact methods score low, and a "
        "method that pushes U's confidence down (EMSE) scores high whatever its ε̂.",
        "",
        *_fair_r2_caveat(d),
        "## Certified Newton: accuracy against certified ε",
        "",
        "| noise σ | test accuracy | certified ε (median) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['noise_std']:g} | {r['acc_test']:.4f} ± {r['acc_test_sd']:.4f} | "
              f"{r['certified_epsilon']:.3g} |" for r in c["noise"]]
    return [*lines, ""]


_OVER_FORGET = 0.05  # accuracy on U this far below retrain's is called over-forgetting


def _fair_r2_caveat(d: dict) -> list[str]:
    """The method Fair R² ranks first, beside its accuracy on U against retrain's on
    every forget set (a high Fair R² from over-forgetting U is stated, not implied)."""
    first = next(iter(d["costs"]["requests"].values()))
    if "retrain" not in first:
        return []
    top = max(first, key=lambda m: first[m]["fair_r2"]["mean"])
    if top == "retrain":
        return []
    both = {name: s["methods"] for name, s in d["scenarios"].items()
            if top in s["methods"] and "retrain" in s["methods"]}
    gap = {name: ms["retrain"]["acc"]["u"]["mean"] - ms[top]["acc"]["u"]["mean"]
           for name, ms in both.items()}
    text = (f"Fair R² ranks **{top}** first ({first[top]['fair_r2']['mean']:.3f} vs "
            f"retrain's {first['retrain']['fair_r2']['mean']:.3f}; its accuracy on U here "
            f"{first[top]['acc_u']['mean']:.4f} vs {first['retrain']['acc_u']['mean']:.4f}).")
    worst = max(gap, key=gap.get) if gap else None
    if worst is not None and gap[worst] > _OVER_FORGET:
        r = both[worst][top]
        text += (f" It over-forgets: on the {worst} set its accuracy on U is "
                 f"{r['acc']['u']['mean']:.3f} vs retrain's "
                 f"{both[worst]['retrain']['acc']['u']['mean']:.3f} (ε̂ {r['eps']['eps']:.2f}, "
                 f"{r['verdict']}), which Fair R² rewards.")
    elif worst is not None:
        text += (f" Its accuracy on U is within {_OVER_FORGET:g} of retrain's on every "
                 "forget set of the ε runs.")
    return [text, ""]


def _check_and_time(d: dict) -> list[str]:
    chk, t = d["sisa_check"], d["timings"]
    return [
        "## SISA byte-identity check",
        "",
        f"On {chk['seeds_checked']} seeds, SISA's forget(U) checkpoints were compared "
        f"byte for byte with a SISA fit on W with the same seed: "
        f"{chk['byte_identical']}/{chk['seeds_checked']} identical "
        f"({'passed' if chk['ok'] else 'FAILED'}). This is what exactness means; it is "
        "a check, not an ε estimate (identical models give ε̂ = 0 by construction). So "
        "SISA's ε̂ is, by construction, a second draw of its floor (a byte-identical "
        "forget is a SISA fit on W, the distribution of its reference): its reading next "
        "to the floor shows the estimator's spread, not separate evidence of exactness.",
        "",
        f"Wall time {t['total_s']:.0f} s (training {t['training_s']:.0f}"
        f" s, estimates {t['estimates_s']:.0f} s).",
    ]


def render(data: dict) -> str:
    """The whole ``report.md`` page of a report's data."""
    lines = _protocol(data) + _epsilon_sections(data) + _power(data)
    if data["costs"] is not None:
        lines += _costs(data)
    else:
        lines += [f"No full-data cost run for the {data['family']['name']} family: the "
                  "unlearning times in the tables are its costs.", ""]
    lines += _baselines(data)
    lines += _check_and_time(data)
    if data["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in data["figures"]]
    return "\n".join(lines) + "\n"


# -- tuned baselines (sisa.compare.runs.tuning, sisa.compare.runs.curves) ----------------


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


def _baselines(data: dict) -> list[str]:
    """The tuned baselines' sections: the tuning's grid, criterion and choice per forget
    set, and the ε̂-against-time curves (empty when the report has neither)."""
    lines = []
    if data.get("tuning"):
        lines += _tuning(data["tuning"])
    if data.get("curves"):
        lines += _curves(data["curves"])
    return lines
