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
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, [label for _, label in cols])
    ax.set_ylim(min(low, 0) - 0.05, 1.08)
    ax.set_ylabel("score (higher is better, except on U)")
    ax.set_title(f"Metrics per method after unlearning ({_title(rep)})")
    ax.legend(ncols=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.08), fontsize=9,
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_epsilon_hist(rep: CompareReport, path: Path) -> Path:
    """One histogram of per-row ε̂ per method, on a shared axis from 0 to the cap."""
    g = rep.data["gap"]
    cap = g["eps_max"]
    bins = np.arange(0.0, cap + 0.5, 0.5)
    methods = list(rep.data["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(3.0 * len(methods), 3.4), sharey=True)
    for ax, m in zip(axes, methods, strict=True):
        e = rep.eps[m]
        ax.hist(np.minimum(e, cap), bins=bins, color=COLORS[m], edgecolor="white")
        med = float(np.median(e))
        ax.axvline(med, color="black", ls="--", lw=1)
        label = "retrain (fresh seeds)" if m == "retrain" else m
        ax.set_title(f"{label}\nmedian ε̂ = {med:.2f}", fontsize=10)
        ax.text(0.97, 0.95, f"{int((e == 0).sum())}/{e.size} rows at 0", transform=ax.transAxes,
                ha="right", va="top", fontsize=8)
        ax.set_xlim(0, cap + 0.25)
        ax.set_xlabel("per-row ε̂")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("forgotten rows")
    fig.suptitle(f"Per-row ε̂, N = {g['n_models']} models per side, cap {cap:g} "
                 f"({_title(rep)})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_time_vs_eps(rep: CompareReport, path: Path) -> Path:
    """Unlearning wall time (log axis) against median ε̂, with the 25-75% range."""
    methods = rep.data["methods"]
    g = rep.data["gap"]
    times = {m: r["unlearn_time_s"] for m, r in methods.items()}
    positive = [t for t in times.values() if t > 0]
    zero_at = min(positive) / 5 if positive else 1e-4  # "did nothing" drawn left of all
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for m, r in methods.items():
        e = r["epsilon"]
        t = times[m] if times[m] > 0 else zero_at
        ax.errorbar(t, e["median"], yerr=[[e["median"] - e["q25"]], [e["q75"] - e["median"]]],
                    fmt="o", ms=9, color=COLORS[m], capsize=4)
        label = m + (" (0 s: no unlearning)" if times[m] == 0 else "")
        label = "retrain (fresh seeds)" if m == "retrain" else label
        ax.annotate(label, (t, e["median"]), xytext=(8, 6), textcoords="offset points",
                    fontsize=9)
    ax.axhline(g["eps_max"], color="black", ls=":", lw=1)
    ax.text(zero_at, g["eps_max"], " cap ≈ ln(N−1)", va="bottom", fontsize=8)
    ax.set_xscale("log")
    lo, hi = zero_at / 3, max(times.values()) * 6
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.3, g["eps_max"] + 0.6)
    ax.set_xlabel("unlearning wall time (s, log scale)")
    ax.set_ylabel("median per-row ε̂ (bars: 25-75%)")
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
