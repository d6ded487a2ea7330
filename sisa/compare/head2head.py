"""``run``: the whole comparison, from data to report (and its figures)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from sisa.compare.costs import cost_run
from sisa.compare.data import SCENARIOS, adult_features, make_scenario
from sisa.compare.families import Family
from sisa.compare.gap import estimate, run_epsilon
from sisa.compare.intervals import detectable_shift
from sisa.compare.linear_family import LinearFamily
from sisa.compare.report import CompareReport
from sisa.engine.settings import ExecutionSettings
from sisa.errors import InputError

__all__ = ["DEFAULT_EPS_ROWS", "SISA_SCENARIOS", "run"]

DEFAULT_EPS_ROWS = LinearFamily.defaults["eps_rows"]
SISA_SCENARIOS = LinearFamily.defaults["sisa_scenarios"]


def run(dataset: str = "adult", *, n_models: int = 256, eps_rows: int | None = DEFAULT_EPS_ROWS,
        cost_rows: int | None = None, scenarios: tuple[str, ...] = SCENARIOS,
        sisa_scenarios: tuple[str, ...] = SISA_SCENARIOS, fraction: float = 0.02,
        n_shards: int = 5, n_slices: int = 1, lam: float = 1.0, noise_std: float = 1.0,
        subsample: float = 0.9, n_boot: int = 100, n_perm: int = 50, repeats: int = 5,
        seed: int = 0, out: str | os.PathLike | None = None,
        settings: ExecutionSettings | None = None, figures: bool = True) -> CompareReport:
    """Run the head-to-head comparison and write the report.

    Parameters
    ----------
    dataset : {"adult"}, default="adult"
        The binary task every method shares (the family is logistic regression).
    n_models : int, default=256
        N models per side for each ε̂ (ε resolves up to about ``ln(N - 1)``).
    eps_rows : int or None, default=3000
        Rows of the dataset the ε runs use (None: all). The 3N models per method and
        forget set must fit the time budget; the report states the subsample.
    cost_rows : int or None, default=None
        Rows of the cost and accuracy run (None: all of Adult).
    scenarios, sisa_scenarios : tuple of str
        Forget sets (``SCENARIOS``); those on which SISA's ε is estimated too.
    fraction : float, default=0.02
        Size of the random, mislabeled forget sets (duplicated: half as many distinct
        rows, injected: half as many positive rows).
    n_shards, n_slices : int, default=5, 1
        SISA's S and R. The shard model refits from scratch at each slice (it has no
        ``partial_fit``), so slices add checkpoints without saving compute: R = 1.
    lam, noise_std, subsample : float, default=1.0, 1.0, 0.9
        L2 penalty of every model (scikit-learn's ``C = 1 / lam``); perturbation σ of the
        certified Newton; fraction of W each seed trains on.
    n_boot, n_perm, repeats : int, default=100, 50, 5
        Bootstrap replicates per interval; permutations per test; seeds of the cost run.
    seed : int, default=0
        The data split and the forget sets.
    out : path, optional
        Directory for ``report.json``, ``report.md`` and the figures (None: no files).
    settings : ExecutionSettings, optional
        Where the tasks run (default: Ray, with progress bars).
    figures : bool, default=True
        Draw the figures into ``out`` (needs matplotlib, the ``plots`` extra).

    Returns
    -------
    CompareReport
    """
    settings = settings or ExecutionSettings(backend="ray", progress=True)
    config = {"dataset": dataset, "n_models": n_models, "eps_rows": eps_rows,
              "cost_rows": cost_rows, "scenarios": list(scenarios),
              "sisa_scenarios": list(sisa_scenarios), "fraction": fraction,
              "n_shards": n_shards, "n_slices": n_slices, "lam": lam, "noise_std": noise_std,
              "subsample": subsample, "n_boot": n_boot, "n_perm": n_perm, "repeats": repeats,
              "seed": seed, "backend": settings.backend}
    _check(config)
    fam = LinearFamily(lam=lam, noise_std=noise_std, n_shards=n_shards, n_slices=n_slices,
                       subsample=subsample)
    report = _execute(fam, config, settings)
    if out is not None:
        _write(report, Path(out), figures)
    return report


def _check(config: dict) -> None:
    """One-line errors for settings no family accepts."""
    if config["dataset"] != "adult":
        raise InputError(f"sisa compare runs on 'adult' (a binary task for the shared "
                         f"logistic family), got {config['dataset']!r}")
    n = config["n_models"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise InputError(f"n_models must be an integer >= 4, got {n!r}")
    bad = [s for s in (*config["scenarios"], *config["sisa_scenarios"]) if s not in SCENARIOS]
    if bad or not config["scenarios"]:
        raise InputError(f"forget sets must be among {', '.join(SCENARIOS)}; got {bad or '()'}")


def _execute(fam: Family, config: dict, settings: ExecutionSettings) -> CompareReport:
    """The ε runs (with the cost run beside them), the estimates, the report."""
    t0 = time.perf_counter()
    Xtr, ytr, Xte, yte, names, info = adult_features(config["eps_rows"], config["seed"])
    scs = {s: make_scenario(s, Xtr, ytr, Xte, yte, names, fraction=config["fraction"],
                            seed=config["seed"]) for s in config["scenarios"]}
    methods = {s: fam.methods if s in config["sisa_scenarios"]
               else tuple(m for m in fam.methods if m != "sisa") for s in scs}
    side = [(cost_run, {"fam": fam, "rows": config["cost_rows"], "repeats": config["repeats"],
                        "seed": config["seed"], "fraction": config["fraction"]})]
    runs, side_out = run_epsilon(scs, fam, n_models=config["n_models"], methods=methods,
                                 settings=settings, side_tasks=side)
    t_train = time.perf_counter() - t0
    est = estimate(runs, n_boot=config["n_boot"], n_perm=config["n_perm"], settings=settings)
    t_est = time.perf_counter() - t0 - t_train
    n_rows = int(np.median([sc.stat_rows.size for sc in scs.values()]))
    power = {**detectable_shift(config["n_models"], n_rows, n_boot=30), "n_rows": n_rows}
    report = CompareReport.build(fam, info, runs, est, side_out[0], power, config,
                                 {"training_s": t_train, "estimates_s": t_est})
    report.timings["total_s"] = time.perf_counter() - t0
    return report


def _write(report: CompareReport, out: Path, figures: bool) -> None:
    """The figures first (the page links them), then ``report.json`` and ``report.md``."""
    if figures:
        try:
            from sisa.compare.plots import plot_all
        except ImportError:  # matplotlib is the optional `plots` extra
            print("note: no figures written; install them with `pip install 'sisa[plots]'`",
                  file=sys.stderr)
        else:
            out.mkdir(parents=True, exist_ok=True)
            paths = plot_all(report.data, out)
            report.data["figures"] = [p.name for p in paths]
            report.files.update({p.stem: p for p in paths})
    report.write(out)
