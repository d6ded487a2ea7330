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

__all__ = ["plot_all", "plot_epsilon", "plot_newton_noise"]

COLORS = {"retrain": "#7f7f7f", "sisa": "#2ca02c", "newton": "#9467bd",
          "newton_noisy": "#c5b0d5", "pru": "#17becf", "emse": "#ff7f0e",
          "finetune": "#1f77b4", "neggrad": "#8c564b", "relabel": "#e377c2",
          "original": "#d62728"}
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
    return paths
