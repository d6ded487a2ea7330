"""Figures of a comparison report (matplotlib, Agg backend, PNG).

Each figure is drawn from the report's data (``report.json``'s content), so this module
needs nothing else of the comparison.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_all", "plot_all_curves", "plot_curves", "plot_epsilon", "plot_newton_noise"]

COLORS = {"retrain": "#7f7f7f", "sisa": "#2ca02c", "newton": "#9467bd",
          "newton_noisy": "#c5b0d5", "pru": "#17becf", "emse": "#ff7f0e",
          "finetune": "#1f77b4", "neggrad": "#8c564b", "relabel": "#e377c2",
          "original": "#d62728", "scrub": "#bcbd22"}
_DPI = 120


def plot_epsilon(data: dict, path: Path) -> Path:
    """One panel per forget set: each method's ε̂ with its 95% interval, its floor's band."""
    scen = data["scenarios"]
    fig, axes = plt.subplots(1, len(scen), figsize=(3.3 * len(scen), 4.6), sharey=True,
                             squeeze=False)
    cap = data["protocol"]["eps_max"]
    for ax, (name, s) in zip(axes[0], scen.items(), strict=True):
        methods = list(s["methods"])
        for i, m in enumerate(methods):
            r = s["methods"][m]
            e, f = r["eps"], s["floors"][r["reference"]]
            ax.fill_between([i - 0.4, i + 0.4], f["lo"], f["hi"], color="#dddddd", lw=0)
            ax.errorbar(i, e["eps"], yerr=[[e["eps"] - e["lo"]], [e["hi"] - e["eps"]]],
                        fmt="o", color=COLORS.get(m, "black"), capsize=3)
        ax.set_xticks(range(len(methods)), methods, rotation=70, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, cap + 0.3)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean per-row ε̂ (95% CI); grey: the method's floor")
    fig.suptitle(f"ε̂ against the floor, N = {data['protocol']['n_models']} models per side",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_newton_noise(data: dict, path: Path) -> Path:
    """Certified Newton: test accuracy against its certified ε as the noise σ grows."""
    rows = data["costs"]["noise"]
    eps = np.array([r["certified_epsilon"] for r in rows])
    acc = np.array([r["acc_test"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(eps, acc, "o-", color=COLORS["newton_noisy"], mec="#6a51a3")
    for r, x, y in zip(rows, eps, acc, strict=True):
        ax.annotate(f"σ={r['noise_std']:g}", (x, y), xytext=(5, 5), textcoords="offset points",
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("certified ε (Guo et al., δ = 1e-5), log scale")
    ax.set_ylabel("test accuracy after removal")
    ax.set_title("Certified Newton removal of a 2% request (full Adult)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_all(data: dict, out: Path) -> list[Path]:
    """Write the figures of a report's data to ``out``; returns their paths.

    The noise sweep's figure is drawn only when the report has a cost run.
    """
    out = Path(out)
    paths = [plot_epsilon(data, out / "epsilon_ci.png")]
    if (data.get("costs") or {}).get("noise"):
        paths.append(plot_newton_noise(data, out / "newton_noise.png"))
    paths += plot_all_curves(data, out)
    return paths


def plot_curves(data: dict, path: Path) -> Path:
    """ε̂ against unlearning time (0 to retrain's cost) per method, one panel per forget set
    of the curves, and accuracy on U against ε̂ below it."""
    cv = data["curves"]
    sets = cv["forget_sets"]
    fig, axes = plt.subplots(2, len(sets), figsize=(5.6 * len(sets), 8.4), squeeze=False)
    for k, (name, fs) in enumerate(sets.items()):
        top, bottom = axes[0][k], axes[1][k]
        for m, c in fs["methods"].items():
            pts = c["points"]
            t = [p["time_s"] * 1e3 for p in pts]
            e = [p["eps"] for p in pts]
            style = "o-" if len(pts) > 1 else ("s" if m != "retrain" else "*")
            top.plot(t, e, style, color=COLORS.get(m, "black"), label=m, ms=7)
            acc = [p["acc_u"] for p in pts]
            if acc[0] is not None:
                bottom.plot(e, acc, style, color=COLORS.get(m, "black"), label=m)
        floor = fs["methods"]["retrain"]["points"][0]
        top.axhline(floor["eps"], color=COLORS["retrain"], ls=":", lw=1)
        top.axvline(fs["retrain_s"] * 1e3, color=COLORS["retrain"], ls="--", lw=1)
        top.set_xlabel("unlearning time per model (ms); dashed: retrain's (cold refit)")
        top.set_ylabel("mean per-row ε̂; dotted: floor (retrain vs retrain)")
        top.set_title(f"{name}: ε̂ against cost, N = {cv['n_models']}", fontsize=10)
        bottom.set_xlabel("mean per-row ε̂")
        bottom.set_ylabel("accuracy on U")
        bottom.set_title(f"{name}: accuracy on U against ε̂", fontsize=10)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        top.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_all_curves(data: dict, out: Path) -> list[Path]:
    """The curves' figure, when the report has curves."""
    if not data.get("curves"):
        return []
    return [plot_curves(data, Path(out) / "epsilon_vs_time.png")]
