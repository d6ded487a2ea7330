"""The ε runs: N unlearned models per method against N independent references.

Protocol (the NeurIPS 2023 challenge's, with the deviations listed in the report):
seeds ``0 .. N-1`` give each method's unlearned models, seeds ``N .. 2N-1`` the
references (trained without U, never seeing it), seeds ``2N .. 3N-1`` a second set of
references. A method's ε̂ compares its unlearned models with the references; its
**floor** compares the references with the second set (two samples of the reference
distribution: what ε̂ reads when there is nothing to find). Each method is measured
against references of its own kind (the family's ``reference_kind``): for the linear
family the monolithic retrain, the noisy retrain for the certified Newton, SISA fit on
W for SISA.

Training runs as tasks of the engine's one runner (:func:`sisa.tasks.backend.map_tasks`),
one per chunk of seeds of one forget set; the estimates (bootstrap intervals,
permutation tests) too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from sisa.compare.data import Scenario
from sisa.compare.methods.families import Family
from sisa.compare.stats.bounds import epsilon_lower_bound
from sisa.compare.stats.epsilon import per_example_epsilon
from sisa.compare.stats.intervals import epsilon_interval
from sisa.compare.stats.permutation import DEFAULT_PERMUTATIONS, holm, permutation_test
from sisa.compare.stats.scores import forgetting_quality
from sisa.tasks.backend import map_tasks
from sisa.tasks.settings import ExecutionSettings

__all__ = ["CHECK_SEEDS", "ScenarioRuns", "estimate", "run_epsilon", "seed_run"]

CHECK_SEEDS = 2  # seeds per forget set whose SISA forget is also checked byte for byte


@dataclass
class ScenarioRuns:
    """Everything the N seeds of one forget set produced.

    Attributes
    ----------
    scenario : Scenario
    methods : tuple of str
    stats : dict of str to ndarray of shape (N, n_stat_rows)
        Unlearned models' statistics per method.
    ref, ref2 : dict of str to ndarray of shape (N, n_stat_rows)
        Reference statistics per kind (seeds N.., 2N..).
    acc : dict of str to ndarray of shape (N, 3)
        Accuracy on W, U, test per method and seed.
    times : dict of str to ndarray of shape (N,)
    injected_weight : dict of str to ndarray of shape (N,)
    reference_kind : dict of str to str
        The kind of reference each method is measured against (and whose floor).
    extra : list of dict
        Per seed: certified ε, SISA rows retrained, byte identity (checked seeds).
    whitebox : dict
        ``{"stats": method -> (N,), "ref": kind -> (N,)}``: the white-box statistic of
        each model (families with ``whitebox``; methods it does not apply to are left out).
    """

    scenario: Scenario
    methods: tuple[str, ...]
    stats: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]
    ref2: dict[str, np.ndarray]
    acc: dict[str, np.ndarray]
    times: dict[str, np.ndarray]
    injected_weight: dict[str, np.ndarray]
    reference_kind: dict[str, str]
    extra: list[dict] = field(default_factory=list)
    whitebox: dict = field(default_factory=dict)


def _accuracy(fam: Family, model: Any, X: np.ndarray, y: np.ndarray) -> float:
    return float((fam.statistic(model, X, y) > 0).mean())


def seed_run(sc: Scenario, fam: Family, seed: int, n_models: int, *,
             methods: tuple[str, ...] | None = None, check_bytes: bool = False,
             warm: Any = None) -> dict:
    """Everything one seed contributes to the ε runs of one scenario.

    Seed ``seed`` (in ``0 .. N-1`` from the run's base) gives the unlearned models;
    ``seed + N`` and ``seed + 2N`` give two independent references of each kind (the
    estimate compares unlearned with the first, the floor the first with the second).

    Parameters
    ----------
    sc : Scenario
    fam : Family
    seed : int
    n_models : int
        N per side.
    methods : tuple of str, optional
        Default: all of the family's.
    check_bytes : bool, default=False
        Also check SISA's forget byte for byte against a fit on W.
    warm : optional
        The family's warm start for ``sc``.

    Returns
    -------
    dict
        ``stats`` (method -> statistic of the stat rows), ``ref`` and ``ref2`` (kind ->
        statistic), ``acc`` (method -> [acc W, acc U, acc test]), ``times``,
        ``injected_weight`` (method -> weight on the injected feature, if any), ``extra``.
    """
    methods = fam.methods if methods is None else methods
    with threadpool_limits(limits=1):
        out = fam.unlearn(sc, seed, methods, warm=warm, check_bytes=check_bytes)
        rows = sc.stat_rows
        Xs, ys = sc.X[rows], sc.y[rows]
        kinds = sorted({fam.reference_kind[m] for m in methods})
        ref, ref2 = {}, {}
        wb_fn = getattr(fam, "whitebox", None)
        wb: dict = {"stats": {}, "ref": {}}
        for k in kinds:
            for store, s in ((ref, seed + n_models), (ref2, seed + 2 * n_models)):
                model = fam.reference(k, sc, s, warm)
                store[k] = fam.statistic(model, Xs, ys)
                if wb_fn is not None and store is ref:
                    wb["ref"][k] = wb_fn(model, sc, s)
        w = sc.w_idx
        stats, acc, inj = {}, {}, {}
        for m, model in out["models"].items():
            stats[m] = fam.statistic(model, Xs, ys)
            acc[m] = [_accuracy(fam, model, sc.X[w], sc.y[w]), _accuracy(fam, model, Xs, ys),
                      _accuracy(fam, model, sc.X_test, sc.y_test)]
            weight = None if sc.injected is None else fam.injected_weight(model, sc.injected)
            if weight is not None:
                inj[m] = weight
            if wb_fn is not None:
                wb["stats"][m] = wb_fn(model, sc, seed)
    return {"seed": seed, "stats": stats, "ref": ref, "ref2": ref2, "acc": acc,
            "times": out["times"], "injected_weight": inj, "extra": out["extra"],
            "whitebox": wb}


def _collect(sc: Scenario, fam: Family, methods: tuple[str, ...],
             results: list[dict]) -> ScenarioRuns:
    results = sorted(results, key=lambda r: r["seed"])
    kinds = sorted({fam.reference_kind[m] for m in methods})

    def stack(key: str, names) -> dict[str, np.ndarray]:
        return {k: np.stack([r[key][k] for r in results]) for k in names}

    return ScenarioRuns(sc, methods, stack("stats", methods), stack("ref", kinds),
                        stack("ref2", kinds), stack("acc", methods), stack("times", methods),
                        stack("injected_weight", results[0]["injected_weight"]),
                        {m: fam.reference_kind[m] for m in methods}, [r["extra"] for r in results],
                        _stack_whitebox(results))


def _stack_whitebox(results: list[dict]) -> dict:
    """Per part, the white-box statistics of the keys every seed has a value for."""
    out: dict = {}
    for part in ("stats", "ref"):
        vals = [r.get("whitebox", {}).get(part, {}) for r in results]
        keys = [k for k in vals[0] if all(v.get(k) is not None for v in vals)] if vals else []
        out[part] = {k: np.array([v[k] for v in vals]) for k in keys}
    return out


@dataclass(frozen=True)
class _Plan:
    """What every task needs, sent to the workers once (``map_tasks``'s ``shared``)."""

    fam: Family
    scenarios: dict[str, Scenario]
    methods: dict[str, tuple[str, ...]]
    warm: dict[str, object]
    n_models: int


def _task(plan: _Plan, kind: str, *args: Any) -> Any:
    """One task: a chunk of seeds of one forget set, or a side task ``fn(**kwargs)``."""
    if kind == "side":
        fn, kwargs = args
        return fn(**kwargs)
    name, seeds = args
    meth = plan.methods[name]
    return [seed_run(plan.scenarios[name], plan.fam, s, plan.n_models, methods=meth,
                     warm=plan.warm[name], check_bytes="sisa" in meth and s < CHECK_SEEDS)
            for s in seeds]


def _warm_start(fam: Family, sc: Scenario) -> Any:
    return fam.warm_start(sc)


def run_epsilon(scenarios: dict[str, Scenario], fam: Family, *, n_models: int = 256,
                methods: dict[str, tuple[str, ...]] | None = None, chunk: int = 16,
                settings: ExecutionSettings | None = None,
                side_tasks: list | None = None) -> tuple[dict[str, ScenarioRuns], list]:
    """Train N seeds of every method on every forget set.

    Parameters
    ----------
    scenarios : dict of str to Scenario
    fam : Family
    n_models : int, default=256
        N per side.
    methods : dict of str to tuple of str, optional
        Methods per forget set (default: all of the family's everywhere).
    chunk : int, default=16
        Seeds per task (a task is one CPU).
    settings : ExecutionSettings, optional
        Where the tasks run (default: Ray, with a progress bar).
    side_tasks : list of (callable, dict), optional
        Extra functions ``fn(**kwargs)`` to run as tasks next to the seeds (their results
        are returned). They go first: they are long and should not finish last.

    Returns
    -------
    (dict of str to ScenarioRuns, list)
    """
    settings = settings or ExecutionSettings(backend="ray", progress=True)
    names = list(scenarios)
    meth = {name: (methods or {}).get(name, fam.methods) for name in names}
    # The warm starts come first: every chunk of a scenario starts from its one.
    warm = map_tasks(_warm_start, [(scenarios[n],) for n in names],
                     settings.replace(progress=False), shared=(fam,), desc="warm starts")
    plan = _Plan(fam, scenarios, meth, dict(zip(names, warm, strict=True)), n_models)
    side = [("side", fn, kwargs) for fn, kwargs in side_tasks or []]
    jobs = [("seeds", name, list(range(s, min(s + chunk, n_models))))
            for name in names for s in range(0, n_models, chunk)]
    done = map_tasks(_task, side + jobs, settings, shared=(plan,), desc="ε runs",
                     unit="model", units=[0] * len(side) + [len(j[2]) for j in jobs])
    out: dict[str, list[dict]] = {name: [] for name in names}
    for job, result in zip(jobs, done[len(side):], strict=True):
        out[job[1]] += result
    return ({name: _collect(scenarios[name], fam, meth[name], out[name]) for name in names},
            done[:len(side)])


# -- estimates ----------------------------------------------------------------------------------


def _interval(a: np.ndarray, b: np.ndarray, n_boot: int, n_perm: int, seed: int,
              perm_seed: int | None) -> dict:
    ci = epsilon_interval(a, b, n_boot=n_boot, random_state=seed)
    eps = per_example_epsilon(a, b)
    ci["forgetting_quality"] = forgetting_quality(eps, a.shape[0])
    ci["eps_per_row"] = np.round(eps, 4).tolist()
    lb = epsilon_lower_bound(a, b)
    ci.update(eps_lower=lb["mean"], eps_lower_max=lb["max"], eps_lower_level=lb["level"],
              eps_lower_per_row=np.round(lb["per_row"], 4).tolist())
    if perm_seed is not None:
        test = permutation_test(a, b, n_perm=n_perm, random_state=perm_seed)
        ci.update(p_value=test["p_value"], n_perm=n_perm)
    return ci


def _perm_seed(i: int) -> int:
    """The re-splits' seed of the ``i``-th forget set: one per forget set, shared by all
    its methods (common random numbers)."""
    return 7919 * (i + 1)


def estimate(runs: dict[str, ScenarioRuns], *, n_boot: int = 100,
             n_perm: int = DEFAULT_PERMUTATIONS,
             settings: ExecutionSettings | None = None) -> dict[str, dict]:
    """ε̂ with interval, lower bound and p-value per (forget set, method), and the floor
    per kind.

    Parameters
    ----------
    runs : dict of str to ScenarioRuns
    n_boot, n_perm : int, default=100, 2000
        Bootstrap replicates per interval; permutations per test (the same re-splits
        for every method of a forget set).
    settings : ExecutionSettings, optional
        Where the estimates run (default: Ray, with a progress bar).

    Returns
    -------
    dict
        ``{scenario: {"methods": {m: interval}, "floors": {kind: interval}}}``; an
        interval has ``eps``, ``lo``, ``hi``, ``median``, ``forgetting_quality``,
        ``eps_per_row``, the worst rows and the cap (see
        :func:`~sisa.compare.stats.intervals.epsilon_interval`), the lower bound ``eps_lower``
        (mean over rows), ``eps_lower_max`` (worst row), ``eps_lower_per_row`` and
        ``eps_lower_level`` (:func:`~sisa.compare.stats.bounds.epsilon_lower_bound`); methods
        also ``p_value`` (raw), ``p_holm`` (Holm-adjusted over every method test of
        ``runs``), ``n_perm`` and ``n_tests``.
    """
    settings = settings or ExecutionSettings(backend="ray", progress=True)
    where, calls = [], []
    for j, (name, r) in enumerate(runs.items()):
        for m in r.methods:
            where.append((name, "methods", m))
            calls.append((r.stats[m], r.ref[r.reference_kind[m]], _perm_seed(j)))
        for k in r.ref:
            where.append((name, "floors", k))
            calls.append((r.ref[k], r.ref2[k], None))
    calls = [(a, b, n_boot, n_perm, 1000 + i, p) for i, (a, b, p) in enumerate(calls)]
    res: dict[str, dict] = {name: {"methods": {}, "floors": {}} for name in runs}
    for (name, part, key), ci in zip(where, map_tasks(_interval, calls, settings,
                                                      desc="estimates", unit="ε̂"), strict=True):
        res[name][part][key] = ci
    tests = [ci for s in res.values() for ci in s["methods"].values()]
    if tests:
        for ci, adj in zip(tests, holm([ci["p_value"] for ci in tests]), strict=True):
            ci.update(p_holm=float(adj), n_tests=len(tests))
    return res
