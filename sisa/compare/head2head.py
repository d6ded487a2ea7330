"""``run``: the whole comparison, from data to report."""

from __future__ import annotations

import os
import time

import numpy as np

from sisa.compare.costs import cost_run
from sisa.compare.epsilon import detectable_shift
from sisa.compare.gap import estimate, run_epsilon
from sisa.compare.run import METHODS, SCENARIOS, Family, adult_features, make_scenario
from sisa.errors import InputError

__all__ = ["DEFAULT_EPS_ROWS", "SISA_SCENARIOS", "run"]

DEFAULT_EPS_ROWS = 3000
# SISA's store round trips make it the costliest method per seed: by default its ε is
# measured on the forget sets the issue asks about, and its exactness everywhere by bytes.
SISA_SCENARIOS = ("mislabeled", "duplicated")


def run(dataset: str = "adult", *, n_models: int = 256, eps_rows: int | None = DEFAULT_EPS_ROWS,
        cost_rows: int | None = None, scenarios: tuple[str, ...] = SCENARIOS,
        sisa_scenarios: tuple[str, ...] = SISA_SCENARIOS, fraction: float = 0.02,
        n_shards: int = 5, n_slices: int = 1, lam: float = 1.0, noise_std: float = 1.0,
        subsample: float = 0.9, n_boot: int = 100, n_perm: int = 50, repeats: int = 5,
        seed: int = 0, out: str | os.PathLike | None = None, backend: str = "ray",
        ray_address: str | None = None, progress: bool = True, figures: bool = True):
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
    scenarios : tuple of str
        Forget sets (``SCENARIOS``).
    sisa_scenarios : tuple of str
        Forget sets on which SISA's ε is estimated (every forget set runs the others).
    fraction : float, default=0.02
        Size of the random, mislabeled forget sets (duplicated: half as many distinct
        rows, injected: half as many positive rows).
    n_shards, n_slices : int, default=5, 1
        SISA's S and R. The shard model refits from scratch at each slice (it has no
        ``partial_fit``), so slices add checkpoints without saving compute: R = 1.
    lam : float, default=1.0
        L2 penalty of every model (scikit-learn's ``C = 1 / lam``).
    noise_std : float, default=1.0
        Perturbation σ of the certified Newton.
    subsample : float, default=0.9
        Fraction of W each seed trains on.
    n_boot, n_perm : int, default=100, 50
        Bootstrap replicates of each interval; permutations of each test.
    repeats : int, default=5
        Seeds of the full-data cost run.
    seed : int, default=0
        The data split and the forget sets.
    out : path, optional
        Output directory. None: write nothing.
    backend : {"ray", "local"}, default="ray"
    ray_address : str, optional
    progress : bool, default=True
    figures : bool, default=True

    Returns
    -------
    CompareReport
    """
    from sisa.compare.report import CompareReport

    if dataset != "adult":
        raise InputError(f"sisa compare runs on 'adult' (a binary task for the shared "
                         f"logistic family), got {dataset!r}")
    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 4:
        raise InputError(f"n_models must be an integer >= 4, got {n_models!r}")
    if not 0 < subsample < 1:
        raise InputError(f"subsample must be in (0, 1): seeds need rows to differ, got "
                         f"{subsample!r}")
    bad = [s for s in (*scenarios, *sisa_scenarios) if s not in SCENARIOS]
    if bad or not scenarios:
        raise InputError(f"forget sets must be among {', '.join(SCENARIOS)}; got {bad or '()'}")
    t0 = time.perf_counter()
    fam = Family(lam=lam, noise_std=noise_std, n_shards=n_shards, n_slices=n_slices,
                 subsample=subsample)
    Xtr, ytr, Xte, yte, names, info = adult_features(eps_rows, seed)
    scs = {s: make_scenario(s, Xtr, ytr, Xte, yte, names, fraction=fraction, seed=seed)
           for s in scenarios}
    methods = {s: METHODS if s in sisa_scenarios else tuple(m for m in METHODS if m != "sisa")
               for s in scenarios}
    side = [(cost_run, (fam,), {"rows": cost_rows, "repeats": repeats, "seed": seed,
                                "fraction": fraction})]
    runs, side_out = run_epsilon(scs, fam, n_models=n_models, methods=methods,
                                 backend=backend, address=ray_address, progress=progress,
                                 side_tasks=[(_call, (fn, args, kw)) for fn, args, kw in side])
    t_train = time.perf_counter() - t0
    est = estimate(runs, n_boot=n_boot, n_perm=n_perm, backend=backend, address=ray_address,
                   progress=progress)
    t_est = time.perf_counter() - t0 - t_train
    n_rows = int(np.median([sc.stat_rows.size for sc in scs.values()]))
    power = {**detectable_shift(n_models, n_rows, n_boot=30), "n_rows": n_rows}
    config = {"dataset": dataset, "n_models": n_models, "eps_rows": eps_rows,
              "cost_rows": cost_rows, "scenarios": list(scenarios),
              "sisa_scenarios": list(sisa_scenarios), "fraction": fraction,
              "n_shards": n_shards, "n_slices": n_slices, "lam": lam, "noise_std": noise_std,
              "subsample": subsample, "n_boot": n_boot, "n_perm": n_perm, "repeats": repeats,
              "seed": seed, "backend": backend}
    report = CompareReport.build(fam, info, runs, est, side_out[0], power, config,
                                 {"training_s": t_train, "estimates_s": t_est})
    report.timings["total_s"] = time.perf_counter() - t0
    if out is not None:
        report.write(out, figures=figures)
    return report


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)
