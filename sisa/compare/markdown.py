"""The report's text: Markdown tables and the ``report.md`` page, from ``report.json``'s
content alone (so a saved report can be rendered again)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cost_table", "epsilon_table", "headline", "render"]


def _p(p: float) -> str:
    return f"{p:.2f}" if p >= 0.01 else f"{p:.3f}"


def _sd(x: float | None) -> str:
    return "none of the shifts tried" if x is None else f"{x:g} sd"


def _ms(s: float) -> str:
    if s == 0:
        return "0"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _ci(e: dict) -> str:
    return f"{e['eps']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]"


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
        lines.append(_row(row))
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
        "replicates over models and rows (bias-shifted); p = permutation test of "
        f"unlearned vs reference models ({cfg['n_perm']} permutations). Verdict: *above "
        "floor* = interval above the floor's and p < 0.05; *at floor* = p ≥ 0.05.",
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
    for name, s in d["scenarios"].items():
        si = s["info"]
        lines += [f"### {name}: {si['rule']}", "",
                  f"|D| = {si['n_train']:,}, |U| = {si['n_forget']:,}, ε measured on "
                  f"{si['n_stat_rows']:,} rows; test {si['n_test']:,}.", "",
                  epsilon_table(d, name), ""]
        if s["certified_epsilon_median"] is not None:
            lines += [f"newton_noisy's certified ε (Guo et al., δ = {pr['delta']:g}, "
                      f"σ = {d['family']['noise_std']:g}): median "
                      f"{s['certified_epsilon_median']:.3g}.", ""]
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
        "## Certified Newton: accuracy against certified ε",
        "",
        "| noise σ | test accuracy | certified ε (median) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['noise_std']:g} | {r['acc_test']:.4f} ± {r['acc_test_sd']:.4f} | "
              f"{r['certified_epsilon']:.3g} |" for r in c["noise"]]
    return [*lines, ""]


def _check_and_time(d: dict) -> list[str]:
    chk, t = d["sisa_check"], d["timings"]
    return [
        "## SISA byte-identity check",
        "",
        f"On {chk['seeds_checked']} seeds, SISA's forget(U) checkpoints were compared "
        f"byte for byte with a SISA fit on W with the same seed: "
        f"{chk['byte_identical']}/{chk['seeds_checked']} identical "
        f"({'passed' if chk['ok'] else 'FAILED'}). This is what exactness means; it is "
        "a check, not an ε estimate (identical models give ε̂ = 0 by construction).",
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
    lines += _check_and_time(data)
    if data["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"![{Path(f).stem}]({Path(f).name})" for f in data["figures"]]
    return "\n".join(lines) + "\n"
