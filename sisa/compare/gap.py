"""The ε runs on Ray: N unlearned models per method against N independent references.

Protocol (the NeurIPS 2023 challenge's, with the deviations listed in the report):
seeds ``0 .. N-1`` give each method's unlearned models, seeds ``N .. 2N-1`` the
references (trained without U, never seeing it), seeds ``2N .. 3N-1`` a second set of
references. A method's ε̂ compares its unlearned models with the references; its
**floor** compares the references with the second set (two samples of the reference
distribution: what ε̂ reads when there is nothing to find). Each method is measured
against references of its own kind (``REFERENCE_KIND``): the monolithic retrain for the
monolithic methods, the noisy retrain for the certified Newton, SISA fit on W for SISA.

Training runs as Ray tasks, one per chunk of seeds of one forget set (one CPU each);
the estimates (bootstrap intervals, permutation tests) run as Ray tasks too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sisa.compare.epsilon import (
    epsilon_interval,
    forgetting_quality,
    per_example_epsilon,
    permutation_pvalue,
)
from sisa.compare.run import METHODS, REFERENCE_KIND, Family, Scenario, seed_run, warm_start
from sisa.errors import InputError

from ..progress import bar as progress_bar

__all__ = ["ScenarioRuns", "estimate", "run_epsilon"]

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
    extra : list of dict
        Per seed: certified ε, SISA rows retrained, byte identity (checked seeds).
    """

    scenario: Scenario
    methods: tuple[str, ...]
    stats: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]
    ref2: dict[str, np.ndarray]
    acc: dict[str, np.ndarray]
    times: dict[str, np.ndarray]
    injected_weight: dict[str, np.ndarray]
    extra: list[dict] = field(default_factory=list)


def _chunk(sc: Scenario, fam: Family, seeds: list[int], n_models: int,
           methods: tuple[str, ...], theta0) -> list[dict]:
    return [seed_run(sc, fam, s, n_models, methods=methods, theta0=theta0,
                     check_bytes="sisa" in methods and s < CHECK_SEEDS) for s in seeds]


def _collect(sc: Scenario, methods: tuple[str, ...], results: list[dict]) -> ScenarioRuns:
    results = sorted(results, key=lambda r: r["seed"])
    kinds = sorted({REFERENCE_KIND[m] for m in methods})

    def stack(key, names):
        return {k: np.stack([r[key][k] for r in results]) for k in names}

    inj = stack("injected_weight", methods) if sc.injected is not None else {}
    return ScenarioRuns(sc, methods, stack("stats", methods), stack("ref", kinds),
                        stack("ref2", kinds), stack("acc", methods), stack("times", methods),
                        inj, [r["extra"] for r in results])


def run_epsilon(scenarios: dict[str, Scenario], fam: Family, *, n_models: int = 256,
                methods: dict[str, tuple[str, ...]] | None = None, chunk: int = 16,
                backend: str = "ray", address: str | None = None,
                progress: bool = True, side_tasks: list | None = None
                ) -> tuple[dict[str, ScenarioRuns], list]:
    """Train N seeds of every method on every forget set.

    Parameters
    ----------
    scenarios : dict of str to Scenario
    fam : Family
    n_models : int, default=256
        N per side.
    methods : dict of str to tuple of str, optional
        Methods per forget set (default: all of ``METHODS`` everywhere).
    chunk : int, default=16
        Seeds per Ray task.
    backend : {"ray", "local"}, default="ray"
        "local": in this process, one seed after another (tests, debugging).
    address : str, optional
        Ray cluster (default: the running one, else an embedded local Ray).
    progress : bool, default=True
    side_tasks : list of (callable, args), optional
        Extra functions to run as tasks next to the seeds (their results are returned).

    Returns
    -------
    (dict of str to ScenarioRuns, list)
    """
    if backend not in ("ray", "local"):
        raise InputError(f"backend must be 'ray' or 'local', got {backend!r}")
    methods = methods or {}
    plan = [(name, sc, methods.get(name, METHODS)) for name, sc in scenarios.items()]
    jobs = [(name, list(range(s, min(s + chunk, n_models)))) for name, _, _ in plan
            for s in range(0, n_models, chunk)]
    side_tasks = side_tasks or []
    bar = progress_bar(total=len(plan) * n_models, desc="ε runs", unit="model",
                       enabled=progress)
    out: dict[str, list[dict]] = {name: [] for name, _, _ in plan}
    try:
        if backend == "local":
            side = [fn(*args) for fn, args in side_tasks]
            for name, sc, meth in plan:
                theta0 = warm_start(sc, fam)
                for s in range(n_models):
                    out[name] += _chunk(sc, fam, [s], n_models, meth, theta0)
                    bar.update(1)
        else:
            side = _run_ray(plan, fam, jobs, n_models, chunk, address, bar, out, side_tasks)
    finally:
        bar.close()
    return {name: _collect(sc, meth, out[name]) for name, sc, meth in plan}, side


def _ray_wait(ray, pending, on_ready):
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            on_ready(ready[0], ray.get(ready[0]))
    except ray.exceptions.RayTaskError as exc:
        for ref in pending:
            ray.cancel(ref)
        cause = exc.cause if isinstance(exc.cause, Exception) else None
        raise (cause or exc) from None


def _run_ray(plan, fam, jobs, n_models, chunk, address, bar, out, side_tasks) -> list:
    from sisa.engine.backend import connect

    ray = connect(address)
    task = ray.remote(num_cpus=1, max_retries=1)(_chunk)
    fam_ref = ray.put(fam)
    refs = {name: ray.put(sc) for name, sc, _ in plan}
    meth = {name: m for name, _, m in plan}
    warm = ray.remote(num_cpus=1)(warm_start)
    theta = {name: warm.remote(refs[name], fam_ref) for name, _, _ in plan}
    # Side tasks (the full-data cost run) first: they are long and should not finish last.
    side_refs = [ray.remote(num_cpus=1, max_retries=0)(fn).remote(*args)
                 for fn, args in side_tasks]
    pending, where = [], {}
    for name, seeds in jobs:
        ref = task.remote(refs[name], fam_ref, seeds, n_models, meth[name], theta[name])
        where[ref] = name
        pending.append(ref)

    def done(ref, value):
        out[where[ref]] += value
        bar.update(len(value))

    _ray_wait(ray, pending, done)
    side = []
    _ray_wait(ray, list(side_refs), lambda ref, value: side.append((ref, value)))
    order = {r: i for i, r in enumerate(side_refs)}
    return [v for _, v in sorted(side, key=lambda rv: order[rv[0]])]


# -- estimates ----------------------------------------------------------------------------------


def _interval(a, b, n_boot, n_perm, seed, with_p):
    ci = epsilon_interval(a, b, n_boot=n_boot, random_state=seed)
    eps = per_example_epsilon(a, b)
    ci["forgetting_quality"] = forgetting_quality(eps, a.shape[0])
    ci["eps_per_row"] = np.round(eps, 4).tolist()
    if with_p:
        ci["p_value"] = permutation_pvalue(a, b, n_perm=n_perm, random_state=seed + 1,
                                           observed=float(eps.mean()))
    return ci


def estimate(runs: dict[str, ScenarioRuns], *, n_boot: int = 100, n_perm: int = 50,
             backend: str = "ray", address: str | None = None, progress: bool = True
             ) -> dict[str, dict]:
    """ε̂ with interval and p-value per (forget set, method), and the floor per kind.

    Returns
    -------
    dict
        ``{scenario: {"methods": {m: interval}, "floors": {kind: interval}}}``; an
        interval has ``eps``, ``lo``, ``hi``, ``median``, ``forgetting_quality``,
        ``eps_per_row`` and (methods) ``p_value``.
    """
    jobs = []
    for name, r in runs.items():
        for m in r.methods:
            jobs.append((name, "methods", m, r.stats[m], r.ref[REFERENCE_KIND[m]], True))
        for k in r.ref:
            jobs.append((name, "floors", k, r.ref[k], r.ref2[k], False))
    res: dict[str, dict] = {name: {"methods": {}, "floors": {}} for name in runs}
    bar = progress_bar(total=len(jobs), desc="estimates", unit="ε̂", enabled=progress)
    try:
        if backend == "local":
            for i, (name, part, key, a, b, p) in enumerate(jobs):
                res[name][part][key] = _interval(a, b, n_boot, n_perm, 1000 + i, p)
                bar.update(1)
        else:
            from sisa.engine.backend import connect

            ray = connect(address)
            task = ray.remote(num_cpus=1, max_retries=1)(_interval)
            pending, where = [], {}
            for i, (name, part, key, a, b, p) in enumerate(jobs):
                ref = task.remote(a, b, n_boot, n_perm, 1000 + i, p)
                where[ref] = (name, part, key)
                pending.append(ref)

            def done(ref, value):
                name, part, key = where[ref]
                res[name][part][key] = value
                bar.update(1)

            _ray_wait(ray, pending, done)
    finally:
        bar.close()
    return res

