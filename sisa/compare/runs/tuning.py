"""Tuning fine-tune, NegGrad+ and SCRUB on a validation forget set, as the challenge and
Kurmanji et al. do, before the ε runs use the chosen settings.

For each measured forget set a **validation forget set** is built by the same rule from
Adult's training rows minus the measured forget set's rows (so the two share no forgotten
row; the subgroup rule takes the one-hot column of the training rows closest in size to
the measured subgroup, another country), and its models use seeds from
:data:`VAL_SEED` on (disjoint from the ε runs' ``0 .. 3N-1``). On it each setting of a
method's grid (:data:`sisa.compare.methods.knobs.GRIDS`) unlearns ``n_val`` originals, and is
scored by the **criterion**: the challenge's final score (forgetting quality of the
per-row ε̂ against ``n_val`` retrains x retain- and test-accuracy ratios to retrain).
The highest score wins; scores within :data:`TIE` of the best count as ties, broken by
the smaller budget (epochs, then max-steps), then by grid order, so the choice is a
deterministic function of the data and the seeds.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from sisa.compare.data import SUBGROUP, Scenario, make_scenario
from sisa.compare.methods import knobs
from sisa.compare.stats.epsilon import per_example_epsilon
from sisa.compare.stats.scores import final_score, forgetting_quality
from sisa.errors import InputError
from sisa.tasks.backend import map_tasks
from sisa.tasks.settings import ExecutionSettings

__all__ = ["CRITERION", "TIE", "TUNED", "VAL_SEED", "choose", "tune", "tune_family",
           "tune_method", "validation_scenario"]

VAL_SEED = 1_000_000  # validation models' seeds start here (ε runs use 0 .. 3N-1)
TIE = 0.01
TUNED = ("finetune", "neggrad", "scrub")
CRITERION = ("the challenge's final score on the validation forget set (forgetting quality "
             "of per-row ε̂ against as many retrains x retain and test accuracy ratios to "
             f"retrain); scores within {TIE} of the best tie, broken by the smaller budget "
             "(epochs, then max-steps), then grid order")


def _subgroup_like(Xtr: np.ndarray, names: list[str], keep: np.ndarray) -> int:
    """The one-hot column (not the measured subgroup's) whose share of the kept rows is
    closest to the measured subgroup's share of all rows."""
    col = names.index(SUBGROUP)
    share = float((Xtr[:, col] > Xtr[:, col].min()).mean())
    best, gap = -1, np.inf
    for j, name in enumerate(names):
        if "=" not in name or j == col:
            continue
        on = Xtr[keep, j] > Xtr[keep, j].min()
        if on.any() and abs(on.mean() - share) < gap:
            best, gap = j, abs(on.mean() - share)
    return best


def validation_scenario(measured: Scenario, Xtr: np.ndarray, ytr: np.ndarray,
                        Xte: np.ndarray, yte: np.ndarray, names: list[str], *,
                        fraction: float = 0.02, seed: int = 0) -> tuple[Scenario, np.ndarray]:
    """A forget set of the same kind as ``measured`` on the training rows it does not forget.

    Returns
    -------
    (Scenario, ndarray)
        The validation scenario and the rows of ``Xtr`` its forget set holds (disjoint from
        ``measured.stat_rows``, which index ``Xtr`` too).
    """
    keep = np.setdiff1d(np.arange(len(ytr)), measured.stat_rows)
    X, y = Xtr[keep], np.asarray(ytr)[keep]
    if measured.name != "subgroup":
        sc = make_scenario(measured.name, X, y, Xte, yte, names, fraction=fraction,
                           seed=seed + 1)
    else:
        j = _subgroup_like(Xtr, names, keep)
        forget = X[:, j] > X[:, j].min()
        if forget.sum() < 2:
            raise InputError("no one-hot column left for a validation subgroup: use more rows")
        info = {"scenario": "subgroup", "rule": f"every training row with {names[j]}",
                "n_train": len(y), "n_forget": int(forget.sum()),
                "n_stat_rows": int(forget.sum()), "n_test": len(yte)}
        sc = Scenario("subgroup", X, y, forget, np.flatnonzero(forget), Xte, np.asarray(yte),
                      None, info)
    return sc, keep[sc.stat_rows]


def choose(records: list[dict], tie: float = TIE) -> int:
    """Index of the chosen setting: best ``score``; within ``tie`` of it, the smallest
    budget (``epochs``, then ``max_steps``), then the first in grid order."""
    best = max(r["score"] for r in records)
    near = [i for i, r in enumerate(records) if r["score"] >= best - tie]
    return min(near, key=lambda i: (records[i]["setting"].get("epochs", 0),
                                    records[i]["setting"].get("max_steps", 0), i))


def _seed_side(fam: Any, sc: Scenario, seeds: list[int], warm: Any) -> tuple[list, np.ndarray,
                                                                          np.ndarray]:
    """Originals (with their rows), and retrains' statistics and accuracies."""
    origs = [knobs.original(fam, sc, s, warm) for s in seeds]
    rows = sc.stat_rows
    stats, accs = [], []
    for s in seeds:
        m = fam.reference("monolithic", sc, s + len(seeds), warm)
        stats.append(fam.statistic(m, sc.X[rows], sc.y[rows]))
        accs.append(_accs(fam, m, sc))
    return origs, np.array(stats), np.array(accs)


def _accs(fam: Any, model: Any, sc: Scenario) -> list[float]:
    """Accuracy on W, U (its measured rows), test."""
    w, r = sc.w_idx, sc.stat_rows
    return [float((fam.statistic(model, X, y) > 0).mean())
            for X, y in ((sc.X[w], sc.y[w]), (sc.X[r], sc.y[r]), (sc.X_test, sc.y_test))]


def tune_method(fam: Any, sc: Scenario, method: str, n_val: int, settings_grid: list[dict],
                seed0: int = VAL_SEED) -> dict:
    """Score every setting of ``settings_grid`` for ``method`` on validation scenario ``sc``.

    Returns
    -------
    dict
        ``grid`` (per setting: ``setting``, ``score``, ``eps``, ``acc_u``, ``acc_test``,
        ``time_s``), ``choice`` (the chosen setting), ``chosen_index``, ``seeds``.
    """
    seeds = list(range(seed0, seed0 + n_val))
    with threadpool_limits(limits=1):
        warm = fam.warm_start(sc)
        origs, ref, ref_acc = _seed_side(fam, sc, seeds, warm)
        rows = sc.stat_rows
        acc_ref = ref_acc.mean(axis=0)
        records = []
        for setting in settings_grid:
            stats, accs, times = [], [], []
            for s, (orig, r) in zip(seeds, origs, strict=True):
                t0 = time.perf_counter()
                m = knobs.apply(fam, sc, s, orig, r, method, setting)
                times.append(time.perf_counter() - t0)
                stats.append(fam.statistic(m, sc.X[rows], sc.y[rows]))
                accs.append(_accs(fam, m, sc))
            eps = per_example_epsilon(np.array(stats), ref)
            acc = np.array(accs).mean(axis=0)
            score = final_score(forgetting_quality(eps, n_val), acc[0], acc_ref[0], acc[2],
                                acc_ref[2])
            records.append({"setting": setting, "score": score, "eps": float(eps.mean()),
                            "acc_u": float(acc[1]), "acc_test": float(acc[2]),
                            "time_s": float(np.median(times))})
    i = choose(records)
    return {"grid": records, "chosen_index": i, "choice": records[i]["setting"],
            "seeds": [seeds[0], 2 * n_val + seeds[0] - 1],
            "retrain_acc": {"u": float(acc_ref[1]), "test": float(acc_ref[2])}}


def tune(fam: Any, validation: dict[str, tuple[Scenario, np.ndarray]], *, n_val: int,
         methods: tuple[str, ...] = TUNED, settings: ExecutionSettings | None = None,
         measured_seeds: int = 0) -> tuple[dict, dict]:
    """Tune ``methods`` on every validation forget set (one task per forget set and method).

    Parameters
    ----------
    fam : Family
    validation : dict of str to (Scenario, ndarray)
        Per measured forget set: :func:`validation_scenario`'s output.
    n_val : int
        Models per side on the validation set.
    methods : tuple of str
        Methods to tune (those of the family's grid).
    settings : ExecutionSettings, optional
    measured_seeds : int
        ``3N`` of the ε runs: the validation seeds must lie above it.

    Returns
    -------
    (dict, dict)
        ``params`` for the family (forget set -> method -> setting) and the report's
        ``tuning`` record (criterion, grids, scores, choices, validation rows).
    """
    if measured_seeds > VAL_SEED:
        raise InputError(f"validation seeds start at {VAL_SEED}, inside the ε runs' "
                         f"{measured_seeds} seeds: use fewer models")
    settings = settings or ExecutionSettings(backend="ray", progress=False)
    meth = [m for m in methods if m in fam.methods and m in knobs.GRIDS[fam.name]]
    calls = [(sc, m, n_val, knobs.grid(fam.name, m)) for sc, _ in validation.values()
             for m in meth]
    out = map_tasks(_task, calls, settings, shared=(fam,), desc="tuning")
    params: dict = {name: {} for name in validation}
    record = {"criterion": CRITERION, "n_val": n_val, "grids": knobs.GRIDS[fam.name],
              "forget_sets": {}}
    it = iter(out)
    for name, (sc, rows) in validation.items():
        res = {m: next(it) for m in meth}
        params[name] = {m: r["choice"] for m, r in res.items()}
        record["forget_sets"][name] = {"validation_rule": sc.info.get("rule"),
                                       "validation_rows": len(rows), "methods": res}
    return params, record


def _task(fam: Any, sc: Scenario, method: str, n_val: int, grid: list[dict]) -> dict:
    return tune_method(fam, sc, method, n_val, grid)


def tune_family(fam: Any, scenarios: dict[str, Scenario], data: tuple, config: dict,
                settings: ExecutionSettings) -> tuple[Any, dict | None]:
    """``sisa compare``'s tuning step: a validation forget set per measured one, the grid
    search, and the family with the chosen settings (unchanged when ``tune_models`` is 0).

    ``data`` is ``adult_features``' ``(X_train, y_train, X_test, y_test, names)``; returns
    the family to run and the report's ``tuning`` record (None: not tuned).
    """
    n_val = config["tune_models"]
    if not n_val or fam.name not in knobs.GRIDS:
        return fam, None
    Xtr, ytr, Xte, yte, names = data
    val = {name: validation_scenario(sc, Xtr, ytr, Xte, yte, names,
                                     fraction=config["fraction"], seed=config["seed"])
           for name, sc in scenarios.items()}
    params, record = tune(fam, val, n_val=n_val, settings=settings.replace(progress=False),
                          measured_seeds=3 * config["n_models"])
    return replace(fam, params=params), record
