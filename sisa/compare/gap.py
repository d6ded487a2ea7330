"""The ε gap: N unlearned models against N reference models per method, on Ray.

For seed ``i`` one Ray task trains every method (:func:`sisa.compare.run.train_methods`)
and returns, for each forgotten row, the statistic under

* the method's unlearned model (seed ``i``);
* its same-seed reference (seed ``i``), trained without U:

  - ``sisa``: SISA fit on W with ``random_state=i`` and the same sample ids (the task
    also checks forget(U) byte-identical to it);
  - ``newton``: the certified-removal model fit on ``W_i`` with noise seed ``i``;
  - ``retrain``, ``emse``, ``original``: the monolithic model fit on ``W_i``;

* the same kind of reference trained with the fresh seed ``N + i``.

Two estimates per method follow: **same seeds** (unlearned ``i`` vs reference ``i``,
the headline: 0 only for a method that reproduces its reference exactly) and
**independent seeds** (unlearned ``i`` vs reference ``N + i``, the NeurIPS-2023
protocol; for ``retrain`` it compares two independent retrains, i.e. the estimator's
finite-sample floor). ``W_i`` is a seeded subsample of W: the randomness of the
otherwise deterministic monolithic fits. SISA always trains on all rows; its
randomness is its seed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from sisa.compare.epsilon import forgetting_quality, max_epsilon, per_example_epsilon, summarize
from sisa.compare.run import (
    METHODS,
    REFERENCE_KIND,
    Family,
    Split,
    fit_reference,
    statistic,
    train_methods,
)
from sisa.engine.backend import connect
from sisa.errors import InputError

__all__ = ["FLOAT_RTOL", "GapResult", "run_gap", "seed_statistics", "snap_float_noise"]

FLOAT_RTOL = 1e-9  # same-seed statistics closer than this are float noise, not signal


def snap_float_noise(unlearned: np.ndarray, reference: np.ndarray,
                     rtol: float = FLOAT_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """Set each unlearned statistic equal to its same-seed reference when they agree to
    ``rtol`` (relative, and at least absolute ``rtol``).

    The estimator ranks values, so differences of 1e-13 (two solvers reaching the same
    optimum) would otherwise count as signal: an exact method would score at the
    finite-sample floor instead of 0. Pairs further apart are left as they are.

    Parameters
    ----------
    unlearned, reference : ndarray of shape (N, n_rows)
        Row ``i`` of both comes from seed ``i``.
    rtol : float, default=1e-9

    Returns
    -------
    (ndarray, ndarray)

    Examples
    --------
    >>> a = np.array([[1.0, 2.0]]); b = a + np.array([[1e-13, 1e-3]])
    >>> snap_float_noise(b, a)[0].tolist()
    [[1.0, 2.001]]
    """
    close = np.abs(unlearned - reference) <= rtol * np.maximum(1.0, np.abs(reference))
    return np.where(close, reference, unlearned), reference


@dataclass
class GapResult:
    """Statistics and per-row ε of every method.

    Attributes
    ----------
    n_models : int
        N models per side.
    seeds : list of int
    stats : dict of str to (ndarray, ndarray, ndarray)
        Per method, the statistics under the unlearned models, the same-seed
        references and the fresh-seed references, each of shape (N, |U|).
    sisa_identical : list of bool
        Per seed: SISA's forget(U) checkpoints byte-identical to its fit on W.
    unlearn_time_s : dict of str to float
        Median over seeds of each method's unlearning time (the tasks share the CPUs).
    wall_time_s : float
    eps : dict of str to ndarray
        Per-row ε, same seeds, after :func:`snap_float_noise`; shape (|U|,).
    eps_raw : dict of str to ndarray
        The same without snapping.
    eps_indep : dict of str to ndarray
        Per-row ε against the fresh-seed references.
    """

    n_models: int
    seeds: list[int]
    stats: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    sisa_identical: list[bool]
    unlearn_time_s: dict[str, float]
    wall_time_s: float = 0.0
    eps: dict[str, np.ndarray] = field(default_factory=dict)
    eps_raw: dict[str, np.ndarray] = field(default_factory=dict)
    eps_indep: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def eps_max(self) -> float:
        return max_epsilon(self.n_models)

    def estimate(self) -> None:
        """Fill ``eps``, ``eps_raw`` and ``eps_indep`` from ``stats``."""
        for m, (unl, ref, fresh) in self.stats.items():
            self.eps[m] = per_example_epsilon(*snap_float_noise(unl, ref))
            self.eps_raw[m] = per_example_epsilon(unl, ref)
            self.eps_indep[m] = per_example_epsilon(unl, fresh)

    def summary(self, method: str) -> dict:
        """Median, quantiles, histogram and forgetting quality of one method's ε."""
        out = summarize(self.eps[method])
        out["forgetting_quality"] = forgetting_quality(self.eps[method], self.n_models)
        unl, ref, _ = self.stats[method]
        out["stats_identical"] = bool(np.array_equal(unl, ref))
        out["max_abs_paired_diff"] = float(np.abs(unl - ref).max())
        out["median_raw"] = float(np.median(self.eps_raw[method]))
        indep = self.eps_indep[method]
        out["independent"] = {
            "median": float(np.median(indep)), "q95": float(np.quantile(indep, 0.95)),
            "forgetting_quality": forgetting_quality(indep, self.n_models)}
        return out


def seed_statistics(split: Split, fam: Family, seed: int, fresh_seed: int,
                    subsample: float | None) -> dict:
    """Train every method for one seed; return the statistics of the forgotten rows.

    Parameters
    ----------
    split : Split
    fam : Family
    seed : int
    fresh_seed : int
        Seed of the independent references.
    subsample : float or None
        Fraction of W the monolithic and Newton models train on.

    Returns
    -------
    dict
        ``seed``, ``stats`` (method -> (unlearned, reference, fresh reference), each of
        shape (|U|,)), ``sisa_identical``, ``times``.
    """
    u = split.u_idx
    with threadpool_limits(limits=1):  # one CPU per Ray task
        outs = train_methods(split, fam, seed, subsample=subsample)
        fresh = {k: statistic(fit_reference(k, split, fam, fresh_seed, subsample=subsample),
                              split, u) for k in sorted(set(REFERENCE_KIND.values()))}
        stats = {m: (statistic(o.model, split, u), statistic(o.reference, split, u),
                     fresh[REFERENCE_KIND[m]]) for m, o in outs.items()}
    return {"seed": seed, "stats": stats, "sisa_identical": outs["sisa"].extra["byte_identical"],
            "times": {m: o.time_s for m, o in outs.items()}}


def run_gap(split: Split, fam: Family, *, n_models: int = 64, seed: int = 0,
            subsample: float | None = 0.5, progress: bool = True, address: str | None = None,
            backend: str = "ray") -> GapResult:
    """Train N seeds of every method (one Ray task per seed) and estimate per-row ε.

    Parameters
    ----------
    split : Split
    fam : Family
    n_models : int, default=64
        N, models per side; seeds ``seed .. seed+N-1`` (fresh references: the next N).
    seed : int, default=0
    subsample : float or None, default=0.5
        Fraction of W each monolithic and Newton model trains on.
    progress : bool, default=True
        A tqdm bar on stderr.
    address : str, optional
        Ray cluster address (default: the Ray already running, else an embedded one).
    backend : {"ray", "local"}, default="ray"
        "local" runs the seeds one after another in this process (debugging).

    Returns
    -------
    GapResult
    """
    if backend not in ("ray", "local"):
        raise InputError(f"backend must be 'ray' or 'local', got {backend!r}")
    t0 = time.perf_counter()
    jobs = [(seed + i, seed + n_models + i) for i in range(n_models)]
    bar = tqdm(total=n_models, desc="ε runs", unit="seed", disable=not progress, leave=False,
               file=sys.stderr)
    try:
        if backend == "local":
            results = []
            for s, f in jobs:
                results.append(seed_statistics(split, fam, s, f, subsample))
                bar.update(1)
        else:
            results = _run_ray(split, fam, jobs, subsample, address, bar)
    finally:
        bar.close()
    results.sort(key=lambda r: r["seed"])
    stats = {m: tuple(np.stack([r["stats"][m][k] for r in results]) for k in range(3))
             for m in METHODS}
    gap = GapResult(n_models, [r["seed"] for r in results], stats,
                    [bool(r["sisa_identical"]) for r in results],
                    {m: float(np.median([r["times"][m] for r in results])) for m in METHODS})
    gap.estimate()
    gap.wall_time_s = time.perf_counter() - t0
    return gap


def _run_ray(split, fam, jobs, subsample, address, bar) -> list[dict]:
    ray = connect(address)
    task = ray.remote(num_cpus=1, max_retries=1)(seed_statistics)
    split_ref, fam_ref = ray.put(split), ray.put(fam)  # shipped once, not once per task
    pending = [task.remote(split_ref, fam_ref, s, f, subsample) for s, f in jobs]
    results = []
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results.append(ray.get(ready[0]))
            bar.update(1)
    except ray.exceptions.RayTaskError as exc:
        for ref in pending:
            ray.cancel(ref)
        cause = exc.cause if isinstance(exc.cause, Exception) else None
        raise (cause or exc) from None
    return results
