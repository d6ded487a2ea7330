"""Figures of a comparison report (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sisa.compare.report import metric_columns

if TYPE_CHECKING:
    from sisa.compare.report import CompareReport

__all__ = ["plot_all", "plot_epsilon_hist", "plot_metrics", "plot_time_vs_eps"]

COLORS = {"retrain": "#7f7f7f", "sisa": "#2ca02c", "newton": "#9467bd", "emse": "#ff7f0e",
          "original": "#d62728"}
_DPI = 120
_R2_FLOOR = -1.0  # bars below this are clipped (an R² can be -100) and labelled


def _title(rep: CompareReport) -> str:
    info = rep.data["data"]
    return f"{info['dataset']}: |D| = {info['n_train']:,}, |U| = {info['n_forget']:,}"


def plot_metrics(rep: CompareReport, path: Path) -> Path:
    """Grouped bars: one group per metric, one bar per method."""
    methods = rep.data["methods"]
    cols = metric_columns(rep.data["data"]["task"])
    x = np.arange(len(cols))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(11, 4.8))
    low = 0.0
    for i, (m, r) in enumerate(methods.items()):
        values = np.array([r["metrics"][k] for k, _ in cols])
        shown = np.maximum(values, _R2_FLOOR)
        low = min(low, shown.min())
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, shown, width, color=COLORS[m], label=m)
        for p, v in zip(pos[values < _R2_FLOOR], values[values < _R2_FLOOR], strict=True):
            ax.text(p, _R2_FLOOR + 0.03, f"{v:.3g}", rotation=90, ha="center", va="bottom",
                    fontsize=7, color="white")
    if low <= _R2_FLOOR:
        ax.text(1.0, 1.01, f"bars below {_R2_FLOOR:g} are cut; their value is printed on them",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7.5, color="#555555")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [label for _, label in cols])
    ax.set_ylim(min(low, 0) - 0.05, 1.08)
    ax.set_ylabel("score (W, test: higher is better; U: retrain is the target)", fontsize=9)
    ax.set_title(f"Metrics per method after unlearning ({_title(rep)})", pad=14)
    ax.legend(ncols=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=9,
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_epsilon_hist(rep: CompareReport, path: Path) -> Path:
    """Per-row ε̂ histograms per method: same seeds (bars), independent seeds (outline)."""
    g = rep.data["gap"]
    cap = g["eps_max"]
    bins = np.arange(0.0, cap + 0.5, 0.5)
    methods = list(rep.data["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(3.0 * len(methods), 3.6), sharey=True)
    for ax, m in zip(axes, methods, strict=True):
        e, ind = rep.eps[m], rep.eps_indep[m]
        if m == "retrain":  # its own same-seed reference: only the independent floor
            title = f"retrain (floor)\ntwo retrains: median {np.median(ind):.2f}"
        else:
            ax.hist(np.minimum(e, cap), bins=bins, color=COLORS[m], edgecolor="white")
            title = (f"{m}\nsame seeds: median {np.median(e):.2f}, "
                     f"{int((e == 0).sum())}/{e.size} at 0")
        ax.hist(np.minimum(ind, cap), bins=bins, histtype="step", color="black", lw=1.2,
                ls="--")
        ax.set_title(title, fontsize=9.5)
        ax.set_xlim(0, cap + 0.25)
        ax.set_xlabel("per-row ε̂")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("forgotten rows")
    handles = [plt.Rectangle((0, 0), 1, 1, color="#999999"),
               plt.Line2D([], [], color="black", ls="--")]
    fig.legend(handles, ["same seeds (vs reference i)", "independent seeds (vs reference N+i)"],
               loc="lower center", ncols=2, fontsize=9, frameon=False)
    fig.suptitle(f"Per-row ε̂, N = {g['n_models']} models per side, cap {cap:g} "
                 f"({_title(rep)})", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_time_vs_eps(rep: CompareReport, path: Path) -> Path:
    """Unlearning wall time (log axis) against median ε̂ (same seeds, 25-75% bars)."""
    methods = rep.data["methods"]
    g = rep.data["gap"]
    times = {m: r["unlearn_time_s"] for m, r in methods.items()}
    positive = [t for t in times.values() if t > 0]
    zero_at = min(positive) / 5 if positive else 1e-4  # "did nothing" drawn left of all
    floor = methods["retrain"]["epsilon"]["independent"]["median"]
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for m, r in methods.items():
        e = r["epsilon"]
        t = times[m] if times[m] > 0 else zero_at
        if m != "retrain":
            ax.errorbar(t, e["median"], yerr=[[e["median"] - e["q25"]], [e["q75"] - e["median"]]],
                        fmt="o", ms=9, color=COLORS[m], capsize=4)
        ax.plot(t, e["independent"]["median"], "o", ms=9, mfc="none", mec=COLORS[m], mew=1.5)
        y = e["independent"]["median"] if m == "retrain" else e["median"]
        label = {"retrain": "retrain (two retrains)",
                 "original": "original (0 s: no unlearning)"}.get(m, m)
        ax.annotate(label, (t, y), xytext=(9, -14 if y >= g["eps_max"] - 0.2 else 6),
                    textcoords="offset points", fontsize=9, color=COLORS[m])
    right = max(times.values()) * 8
    ax.axhline(g["eps_max"], color="black", ls=":", lw=1)
    ax.axhline(floor, color="#7f7f7f", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(zero_at / 3, right)
    ax.set_ylim(-0.3, g["eps_max"] + 0.6)
    ax.set_xlabel("unlearning wall time (s, log scale)")
    ax.set_ylabel("median per-row ε̂")
    ax.legend([plt.Line2D([], [], marker="o", ls="", color="#444444"),
               plt.Line2D([], [], marker="o", ls="", mfc="none", mec="#444444"),
               plt.Line2D([], [], color="#7f7f7f", ls="--"),
               plt.Line2D([], [], color="black", ls=":")],
              ["same seeds (bars: 25-75% of rows)", "independent seeds",
               "floor: two independent retrains", "cap ≈ ln(N−1)"], loc="upper center",
              bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize=8, frameon=False)
    ax.set_title(f"Cost vs. forgetting gap ({_title(rep)})", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_all(rep: CompareReport, out: Path) -> list[Path]:
    """Write the three figures to ``out``; returns their paths."""
    out = Path(out)
    return [plot_metrics(rep, out / "metrics.png"),
            plot_epsilon_hist(rep, out / "epsilon_hist.png"),
            plot_time_vs_eps(rep, out / "time_vs_eps.png")]
