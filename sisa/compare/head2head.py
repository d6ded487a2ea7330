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
from sisa.compare.options import CompareOptions
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


def run(options: CompareOptions | None = None, *, settings: ExecutionSettings | None = None,
        out: str | os.PathLike | None = None, figures: bool = True) -> CompareReport:
    """Run the head-to-head comparison and write the report.

    Parameters
    ----------
    options : CompareOptions, optional
        What is compared: task, family, sizes, forget sets, statistics
        (:class:`~sisa.compare.options.CompareOptions`; default: the linear family on Adult
        with its defaults).
    settings : ExecutionSettings, optional
        Where the tasks run (default: Ray, with progress bars).
    out, figures : path or None, bool, default=None, True
        Directory for ``report.json``, ``report.md``, ``report.html`` and the figures (None:
        no files); draw the figures (needs matplotlib, the ``plots`` extra).

    Returns
    -------
    CompareReport
    """
    options = CompareOptions() if options is None else options
    if not isinstance(options, CompareOptions):
        raise InputError(f"options must be a CompareOptions, got {type(options).__name__}: "
                         "pass run(CompareOptions(n_models=..., ...))")
    settings = settings or ExecutionSettings(backend="ray", progress=True)
    fam = _family(options.family, **options.family_settings)
    o = options
    config = _config(fam, dataset=o.dataset, n_models=o.n_models, eps_rows=o.eps_rows,
                     cost_rows=o.cost_rows, scenarios=o.scenarios,
                     sisa_scenarios=o.sisa_scenarios, fraction=o.fraction, n_boot=o.n_boot,
                     n_perm=o.n_perm, repeats=o.repeats, seed=o.seed, backend=settings.backend)
    config |= _fraction_config(fam, config, o.fractions, o.fraction_models)
    report = _execute(fam, config, settings, o.baselines)
    if out is not None:
        _write(report, Path(out), figures)
    return report


def _family(family: str | Family, **settings) -> Family:
    """The family by name with its settings, or the family object as it is."""
    if isinstance(family, str):
        return make_family(family, **settings)
    if any(v is not None for v in settings.values()):
        raise InputError("pass the family's settings to the family object, not to "
                         "CompareOptions")
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
             baselines: dict) -> CompareReport:
    """The ε runs (with the cost run beside them), the estimates, the report."""
    config.update(_baseline_config(fam, config, **baselines))
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
