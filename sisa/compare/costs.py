"""Cost and accuracy on the full dataset, and Newton's accuracy against its certified ε.

The ε runs may train on a subsample to fit the time budget; what a method costs (and
where SISA's sharding pays) is measured here on every row: for a 2% request and for a
single-row request, over ``repeats`` seeds, each unlearning step timed on its own.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from threadpoolctl import threadpool_limits

from sisa.baselines import linear as L
from sisa.baselines.newton import certified_epsilon
from sisa.compare.epsilon import DELTA
from sisa.compare.run import (
    METHODS,
    Family,
    Scenario,
    _accuracy,
    _noise,
    _subsample,
    adult_features,
    make_scenario,
    statistic,
    unlearn_all,
)
from sisa.metrics import expected_calibration_error, exponential_r2

__all__ = ["NOISE_SWEEP", "cost_run", "single_row", "summary_stats"]

FAIR_SIGMA = 0.25
NOISE_SWEEP = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


def single_row(sc: Scenario) -> Scenario:
    """The same D with a one-row request: the first row of ``sc``'s U."""
    row = sc.stat_rows[:1]
    forget = np.zeros(len(sc.y), dtype=bool)
    forget[row] = True
    info = {**sc.info, "rule": "one random training row", "n_forget": 1, "n_stat_rows": 1}
    return Scenario("single", sc.X, sc.y, forget, row, sc.X_test, sc.y_test, None, info)


def summary_stats(x) -> dict[str, float]:
    """Mean, sd, median, min and max of a sample."""
    a = np.asarray(x, dtype=float)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "n": int(a.size)}


def cost_run(fam: Family, *, rows: int | None = None, repeats: int = 5, seed: int = 0,
             fraction: float = 0.02, noise_sweep=NOISE_SWEEP) -> dict:
    """Time and score every method on (all of) Adult, 2% and single-row requests.

    Each of ``repeats`` seeds trains every method's original cold (from zero, as a
    deployment would) and times each unlearning step alone; ``retrain`` is a cold refit
    on W. SISA's full cost is its fit on D (reported apart) plus ``forget``.

    Returns
    -------
    dict
        ``data`` (sizes), ``requests`` {"2%", "1 row"} -> method -> {"time_s", "acc_w",
        "acc_u", "acc_test"} summaries, ``fits`` (the original's and SISA's fit on D),
        ``noise`` (Newton noise sweep).
    """
    with threadpool_limits(limits=1):
        Xtr, ytr, Xte, yte, names, info = adult_features(rows, seed)
        sc = make_scenario("random", Xtr, ytr, Xte, yte, names, fraction=fraction, seed=seed)
        out = {"data": {**info, "n_train": len(ytr), "n_test": len(yte),
                        "n_forget": int(sc.forget.sum()), "repeats": repeats}}
        requests = {}
        fits: dict[str, list] = {"original_fit_s": [], "sisa_fit_s": []}
        shard_ece: list[float] = []
        for label, s in ((f"{fraction:.0%}", sc), ("1 row", single_row(sc))):
            per: dict[str, dict[str, list]] = {m: {k: [] for k in (
                "time_s", "acc_w", "acc_u", "acc_test", "exp_r2_w", "exp_r2_u", "fair_r2",
                "ece_test")}
                for m in METHODS}
            for r in range(repeats):
                res = unlearn_all(s, fam, seed + r)
                if label != "1 row":
                    for k in fits:
                        fits[k].append(res["extra"][k])
                w = s.w_idx
                for m, model in res["models"].items():
                    per[m]["time_s"].append(res["times"][m])
                    per[m]["acc_w"].append(_accuracy(model, s.X[w], s.y[w]))
                    per[m]["acc_u"].append(_accuracy(model, s.X[s.stat_rows],
                                                     s.y[s.stat_rows]))
                    per[m]["acc_test"].append(_accuracy(model, s.X_test, s.y_test))
                    # sisa's Fair R² on r = 1 - p_y (sigma 0.25), as the old report had it.
                    ew, eu = (exponential_r2(np.ones(len(idx)), expit(statistic(
                        model, s.X[idx], s.y[idx])), FAIR_SIGMA) for idx in (w, s.stat_rows))
                    per[m]["exp_r2_w"].append(ew)
                    per[m]["exp_r2_u"].append(eu)
                    per[m]["fair_r2"].append(ew * (1.0 - eu))
                    p1 = expit(statistic(model, s.X_test, np.ones(len(s.y_test))))
                    per[m]["ece_test"].append(expected_calibration_error(s.y_test, p1))
                    if m == "sisa" and label != "1 row":
                        # The shards themselves: converged fits are calibrated too.
                        shard_ece.append(np.mean([expected_calibration_error(
                            s.y_test, sh.predict_proba(s.X_test)[:, -1])
                            for sh in model.estimators_ if sh is not None]))
            requests[label] = {m: {k: summary_stats(v) for k, v in d.items()}
                               for m, d in per.items()}
        out["requests"] = requests
        out["fits"] = {k: summary_stats(v) for k, v in fits.items()}
        out["sisa_shard_ece_test"] = summary_stats(shard_ece)
        out["noise"] = _noise_sweep(sc, fam, noise_sweep, seed)
    return out


def _noise_sweep(sc: Scenario, fam: Family, sigmas, seed: int, seeds: int = 2) -> list[dict]:
    """Certified Newton removal of U at each noise level: test accuracy and certified ε."""
    rows = []
    u = sc.u_idx
    for sigma in sigmas:
        accs, eps = [], []
        for r in range(seeds):
            w = _subsample(sc, fam, seed + r)
            d = np.sort(np.concatenate([w, u]))
            b = _noise(fam, sc.X.shape[1], seed + r, sigma)
            orig = L.fit_logistic(sc.X[d], sc.y[d], fam.lam, noise=b)
            theta, beta = L.newton_removal(orig, sc.X[w], sc.y[w], fam.lam, noise=b)
            accs.append(_accuracy(theta, sc.X_test, sc.y_test))
            eps.append(certified_epsilon(beta, sigma, DELTA))
        rows.append({"noise_std": float(sigma), "acc_test": float(np.mean(accs)),
                     "acc_test_sd": float(np.std(accs)),
                     "certified_epsilon": float(np.median(eps))})
    return rows
