"""``run``: the whole comparison, from data to report (and its figures)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from sisa.compare.data import SCENARIOS, make_scenario
from sisa.compare.images import IMAGE_SCENARIOS, features
from sisa.compare.methods.families import Family, make_family
from sisa.compare.methods.linear_family import LinearFamily
from sisa.compare.report.report import CompareReport
from sisa.compare.runs import curves
from sisa.compare.runs.costs import cost_run
from sisa.compare.runs.fractions import (
    EXTRA_FRACTIONS,
    FRACTION_METHODS,
    FRACTION_MODELS,
    add_to_report,
    attack_report,
    fraction_runs,
)
from sisa.compare.runs.gap import estimate, run_epsilon
from sisa.compare.runs.tuning import tune_family
from sisa.compare.stats.intervals import detectable_shift
from sisa.errors import InputError
from sisa.tasks.settings import ExecutionSettings

__all__ = ["run"]


def run(dataset: str | None = None, *, family: str | Family = "linear", n_models: int | None = None,
        eps_rows: int | str | None = "auto", cost_rows: int | None = None,
        scenarios: tuple[str, ...] | None = None, sisa_scenarios: tuple[str, ...] | None = None,
        fraction: float | None = None, n_shards: int | None = None, n_slices: int | None = None,
        lam: float | None = None, noise_std: float | None = None,
        subsample: float | None = None, n_boot: int = 100, n_perm: int = 2000, repeats: int = 5,
        seed: int = 0, out: str | os.PathLike | None = None,
        fractions: tuple[float, ...] | None = None, fraction_models: int | None = None,
        settings: ExecutionSettings | None = None, figures: bool = True,
        baselines: dict | None = None) -> CompareReport:
    """Run the head-to-head comparison and write the report.

    Parameters
    ----------
    dataset, family : {"adult", "fashion-mnist"}, {"linear", "torch"} or Family
        The task every method shares (default: the family's; linear: adult, torch:
        fashion-mnist); the model every method uses (default "linear"; by name, or a
        :class:`~sisa.compare.methods.linear_family.LinearFamily` / ``TorchFamily``).
    n_models : int, optional
        N models per side per ε̂ (resolves ε up to ``ln(N - 1)``; linear 256, torch 128).
    eps_rows : int, None or "auto", default="auto"
        Training rows of the ε runs (None: all; "auto": the family's, sized for the time
        budget: linear 3000 of Adult, torch 2500 of Fashion-MNIST).
    cost_rows, repeats : int or None, int, default=None, 5
        Rows (None: all of Adult) and seeds of the linear family's full-data cost run.
    scenarios, sisa_scenarios : tuple of str, optional
        Forget sets; those on which SISA's ε is estimated too (default: the family's).
    fraction : float, optional
        Size of the random, mislabeled forget sets (default: the family's, linear 0.02,
        torch 0.08) (duplicated: half as many distinct
        rows, injected: half as many positive rows).
    n_shards, n_slices, lam, noise_std, subsample : optional
        Settings of a family given by name (None: its default; lam, noise_std: linear).
        ``fractions``, ``fraction_models``: other subsample fractions with verdicts and N.
    n_boot, n_perm : int, default=100, 2000
        Bootstrap replicates per interval; permutations per test (p Holm-corrected).
    seed : int, default=0
        The data split and the forget sets.
    out, figures : path or None, bool, default=None, True
        Directory for ``report.json``, ``report.md``, ``report.html`` and the figures (None:
        no files); draw the figures (needs matplotlib, the ``plots`` extra).
    settings : ExecutionSettings, optional
        Where the tasks run (default: Ray, with progress bars).
    baselines : dict, optional
        ``tune_models``, ``curve_models``, ``curve_scenarios`` (:func:`_baseline_config`).

    Returns
    -------
    CompareReport
    """
    settings = settings or ExecutionSettings(backend="ray", progress=True)
    fam = _family(family, n_shards=n_shards, n_slices=n_slices, lam=lam, noise_std=noise_std,
                  subsample=subsample)
    config = _config(fam, dataset=dataset, n_models=n_models, eps_rows=eps_rows,
                     cost_rows=cost_rows, scenarios=scenarios, sisa_scenarios=sisa_scenarios,
                     fraction=fraction, n_boot=n_boot, n_perm=n_perm, repeats=repeats,
                     seed=seed, backend=settings.backend)
    config |= _fraction_config(fam, config, fractions, fraction_models)
    report = _execute(fam, config, settings, baselines)
    if out is not None:
        _write(report, Path(out), figures)
    return report


def _family(family: str | Family, **settings) -> Family:
    """The family by name with its settings, or the family object as it is."""
    if isinstance(family, str):
        return make_family(family, **settings)
    if any(v is not None for v in settings.values()):
        raise InputError("pass the family's settings to the family object, not to run()")
    return family


def _config(fam: Family, **given) -> dict:
    """The run's settings with the family's defaults filled in, checked: the report's
    ``config``."""
    d = fam.defaults
    pick = {k: d[k] if given[k] is None else given[k]
            for k in ("n_models", "scenarios", "sisa_scenarios")}
    n = pick["n_models"]
    data = d.get("dataset", "adult")
    given["dataset"] = given["dataset"] or data
    if given["dataset"] != data:
        raise InputError(f"the {fam.name} family runs on {data!r}, not "
                         f"{given['dataset']!r}: use --dataset {data} (linear: adult, torch: "
                         "fashion-mnist)")
    if given["fraction"] is None:
        given["fraction"] = d.get("fraction", 0.02)
    if data != "adult" and set(pick["scenarios"]) - set(IMAGE_SCENARIOS):
        raise InputError(f"on {data} the forget sets are {', '.join(IMAGE_SCENARIOS)} "
                         "(subgroup and injected are defined on Adult's columns)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise InputError(f"n_models must be an integer >= 4, got {n!r}")
    for k in ("n_boot", "n_perm"):
        if isinstance(given[k], bool) or not isinstance(given[k], int) or given[k] < 1:
            raise InputError(f"{k} must be a positive integer (--bootstrap, --permutations), "
                             f"got {given[k]!r}")
    bad = [s for s in (*pick["scenarios"], *pick["sisa_scenarios"]) if s not in SCENARIOS]
    if bad or not pick["scenarios"]:
        raise InputError(f"forget sets must be among {', '.join(SCENARIOS)}; got {bad or '()'}")
    return {"dataset": given["dataset"], "n_models": n,
            "eps_rows": d["eps_rows"] if given["eps_rows"] == "auto" else given["eps_rows"],
            "cost_rows": given["cost_rows"], "scenarios": list(pick["scenarios"]),
            "sisa_scenarios": list(pick["sisa_scenarios"]), "fraction": given["fraction"],
            "n_shards": fam.n_shards, "n_slices": fam.n_slices,
            **{k: getattr(fam, k, None) for k in ("lam", "noise_std", "noise_lam", "subsample")},
            **{k: given[k] for k in ("n_boot", "n_perm", "repeats", "seed", "backend")},
            "family": fam.name}


def _baseline_config(fam: Family, config: dict, tune_models: int | None = None,
                     curve_models: int | None = None,
                     curve_scenarios: tuple[str, ...] | None = None) -> dict:
    """The tuning's and the curves' settings, the family's defaults
    (:data:`sisa.compare.runs.curves.DEFAULTS`) filled in.

    ``tune_models``: models per side of the tuning of fine-tune, NegGrad+ and SCRUB on a
    validation forget set (:mod:`sisa.compare.runs.tuning`; 0: no tuning; linear 32).
    ``curve_models``, ``curve_scenarios``: models per side of each point of the
    ε̂-against-time curves (:mod:`sisa.compare.runs.curves`; 0: none; linear 64) and their
    forget sets, those of the run's among them (linear: mislabeled and injected). The
    default model counts are at most the ε runs' N.
    """
    d = curves.DEFAULTS.get(fam.name, {"tune_models": 0, "curve_models": 0,
                                       "curve_scenarios": ()})
    n = config["n_models"]  # by default never more models than the ε runs
    out = {"tune_models": min(d["tune_models"], n) if tune_models is None else tune_models,
           "curve_models": min(d["curve_models"], n) if curve_models is None else curve_models}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or 0 < v < 4:
            raise InputError(f"{k} must be 0 (off) or an integer >= 4, got {v!r}")
    wanted = d["curve_scenarios"] if curve_scenarios is None else curve_scenarios
    out["curve_scenarios"] = [s for s in wanted if s in config["scenarios"]]
    return out


def _fraction_config(fam: Family, config: dict, fractions: tuple[float, ...] | None,
                     n: int | None) -> dict:
    """The extra subsample fractions' settings (none for a family without ``subsample``):
    ``EXTRA_FRACTIONS`` by default, with ``min(FRACTION_MODELS, n_models)`` models per side
    and the methods of ``FRACTION_METHODS``."""
    n = min(FRACTION_MODELS, config["n_models"]) if n is None else n
    if not isinstance(fam, LinearFamily):
        return {"fractions": [], "fraction_models": n, "fraction_methods": []}
    fr = EXTRA_FRACTIONS if fractions is None else tuple(fractions)
    if any(not 0 < f < 1 for f in fr):
        raise InputError(f"fractions must be in (0, 1), got {list(fr)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise InputError(f"fraction_models must be an integer >= 4, got {n!r}")
    return {"fractions": [float(f) for f in fr], "fraction_models": n,
            "fraction_methods": list(FRACTION_METHODS)}


def _execute(fam: Family, config: dict, settings: ExecutionSettings,
             baselines: dict | None = None) -> CompareReport:
    """The ε runs (with the cost run beside them), the estimates, the report."""
    try:
        config.update(_baseline_config(fam, config, **(baselines or {})))
    except TypeError as e:  # an unknown key of `baselines`
        raise InputError(f"baselines takes tune_models, curve_models, curve_scenarios: {e}")\
            from None
    t0 = time.perf_counter()
    Xtr, ytr, Xte, yte, names, info = features(config["dataset"], config["eps_rows"],
                                               config["seed"])
    scs = {s: make_scenario(s, Xtr, ytr, Xte, yte, names, fraction=config["fraction"],
                            seed=config["seed"]) for s in config["scenarios"]}
    fam, tuning = tune_family(fam, scs, (Xtr, ytr, Xte, yte, names), config, settings)
    t_tune = time.perf_counter() - t0
    methods = {s: fam.methods if s in config["sisa_scenarios"]
               else tuple(m for m in fam.methods if m != "sisa") for s in scs}
    # The linear family's cost run on all of Adult runs beside the ε runs.
    side = [(cost_run, {"fam": fam, "rows": config["cost_rows"], "repeats": config["repeats"],
                        "seed": config["seed"], "fraction": config["fraction"]})
            ] if isinstance(fam, LinearFamily) else []
    runs, side_out = run_epsilon(scs, fam, n_models=config["n_models"], methods=methods,
                                 settings=settings,
                                 side_tasks=side + curves.side_tasks(fam, scs, config))
    t_train = time.perf_counter() - t0
    est = estimate(runs, n_boot=config["n_boot"], n_perm=config["n_perm"], settings=settings)
    t_est = time.perf_counter() - t0 - t_train
    t1 = time.perf_counter()
    attacks = attack_report(runs)
    t_att = time.perf_counter() - t1
    fractions = fraction_runs(scs, fam, config, settings)
    n_rows = int(np.median([sc.stat_rows.size for sc in scs.values()]))
    power = {**detectable_shift(config["n_models"], n_rows, n_boot=30), "n_rows": n_rows}
    report = CompareReport.build(fam, info, runs, est, side_out[0] if side else None,
                                 power, config,
                                 {"training_s": t_train, "estimates_s": t_est})
    report.data["tuning"] = tuning
    report.timings["tuning_s"] = t_tune
    report.data["curves"] = curves.collect(side_out[len(side):], config)
    add_to_report(report.data, attacks, fractions, getattr(fam, "subsample", None), runs)
    report.timings.update({"attacks_s": t_att, "fractions_s": sum(
        f["time_s"] for f in fractions.values())})
    report.timings["total_s"] = time.perf_counter() - t0
    return report


def _write(report: CompareReport, out: Path, figures: bool) -> None:
    """The figures first (the page links them), then ``report.json``, ``report.md`` and
    ``report.html``."""
    if figures:
        try:
            from sisa.compare.report.plots import plot_all
        except ImportError:  # matplotlib is the optional `plots` extra
            print("note: no figures written; install them with `pip install 'sisa[plots]'`",
                  file=sys.stderr)
        else:
            out.mkdir(parents=True, exist_ok=True)
            paths = plot_all(report.data, out)
            report.data["figures"] = [p.name for p in paths]
            report.files.update({p.stem: p for p in paths})
    report.write(out, figures=figures)
