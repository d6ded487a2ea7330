"""Head-to-head comparison: one model family, one protocol, ten ways to (not) forget U.

Every method uses the same model: :mod:`sisa.baselines.linear`'s L2 logistic regression
(``lam`` = 1, i.e. scikit-learn's ``C = 1``), fit to its optimum on the same fixed
features. The methods:

* ``retrain``: refit from scratch on W (exact; the reference);
* ``sisa``: a SISA ensemble of those models (S shards x R slices, soft vote) fit on D,
  then ``forget(U)`` (exact);
* ``newton``: Guo et al.'s one Newton step, without noise (no certificate);
* ``newton_noisy``: the same with their loss perturbation, hence a certified ε;
* ``pru``: Izzo et al.'s projective residual update;
* ``emse``: the EMSE objective (log-loss on W, ``-log(1 - p_y)`` on U) by L-BFGS;
* ``finetune``, ``neggrad``, ``relabel``: SGD on W; NegGrad+; random relabelling, all
  with one shared budget (:data:`sisa.baselines.linear.SGD_BUDGET`);
* ``original``: the model fit on D, untouched (do nothing).

Randomness: a convex model fit to its optimum is a deterministic function of its data,
so each seed ``i`` trains on its own random subsample ``W_i`` (a fraction ``subsample``
of W) plus all of U, for every method alike; SISA's seed also keys its shard assignment.
The noisy Newton models also draw their perturbation from the seed.

Forget sets (:func:`make_scenario`): ``random`` rows, a coherent ``subgroup`` (one value
of a categorical feature), ``mislabeled`` (label-flipped) rows, ``duplicated`` rows
(each present ``k`` times) and ``injected`` (Izzo et al.'s feature-injection test: a
feature non-zero only on U).
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import log_expit, logsumexp
from threadpoolctl import threadpool_limits

from sisa.baselines import linear as L
from sisa.baselines.newton import certified_epsilon
from sisa.compare.epsilon import DELTA
from sisa.datasets import load
from sisa.errors import InputError
from sisa.estimators import SISAClassifier

__all__ = [
    "METHODS",
    "REFERENCE_KIND",
    "SCENARIOS",
    "Family",
    "Scenario",
    "adult_features",
    "checkpoint_hashes",
    "ensemble_logit",
    "make_scenario",
    "seed_run",
    "statistic",
]

METHODS = ("retrain", "sisa", "newton", "newton_noisy", "pru", "emse", "finetune",
           "neggrad", "relabel", "original")
# Which reference distribution each method is measured against (and whose floor).
REFERENCE_KIND = {m: "monolithic" for m in METHODS}
REFERENCE_KIND.update({"sisa": "sisa", "newton_noisy": "noisy"})
SCENARIOS = ("random", "subgroup", "mislabeled", "duplicated", "injected")
TEST_FRACTION = 0.25
SUBGROUP = "native-country=Mexico"  # 2.0% of Adult: one value of a categorical feature
_LOG1P = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
_STREAM = 0x5EED  # keeps the split's random stream apart from the loaders' own seeds
# SISA's throwaway stores live in memory where there is a tmpfs: the store fsyncs every
# commit for durability, which here is pure cost (a third of a fit on disk).
_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# -- data ---------------------------------------------------------------------------------------


def adult_features(rows: int | None = None, seed: int = 0):
    """Adult with a feature map learned from no training row.

    log1p of the six heavy-tailed numeric columns, one-hot categoricals, then every
    column standardised with the mean and standard deviation of the *test* rows, so
    the map cannot leak U (or any training row) and all methods see the same features.

    Returns
    -------
    (X_train, y_train, X_test, y_test, feature_names, info)
    """
    if rows is not None and rows < 200:
        raise InputError(f"rows must be at least 200 (or None for all of Adult), got {rows}")
    ds = load("adult", n_rows=rows, sample_seed=seed)
    X = ds.X.copy()
    cols = [ds.feature_names.index(c) for c in _LOG1P]
    X[:, cols] = np.log1p(X[:, cols])
    rng = np.random.default_rng([seed, _STREAM])
    is_test = np.zeros(len(X), dtype=bool)
    is_test[rng.permutation(len(X))[: round(TEST_FRACTION * len(X))]] = True
    mu, sd = X[is_test].mean(axis=0), X[is_test].std(axis=0)
    X = (X - mu) / np.where(sd > 0, sd, 1.0)
    info = {"dataset": "adult", "rows": len(X), "n_features": X.shape[1],
            "feature_map": "log1p of the 6 numeric columns, one-hot categoricals, all "
                           "standardised with test-row statistics (no training row used)"}
    return X[~is_test], ds.y[~is_test], X[is_test], ds.y[is_test], list(ds.feature_names), info


@dataclass(frozen=True, eq=False)
class Scenario:
    """A training set D, the rows U to forget, and the rows whose ε is measured.

    Attributes
    ----------
    name : str
    X, y : ndarray
        D (with duplicates, flipped labels or the injected column, as the scenario says).
    forget : ndarray of bool, shape (len(D),)
        U; W is ``~forget``.
    stat_rows : ndarray of int
        Rows of D whose statistic enters ε (the distinct rows of U).
    X_test, y_test : ndarray
    injected : int or None
        Column of the injected feature (``injected`` scenario).
    info : dict
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    forget: np.ndarray
    stat_rows: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    injected: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def w_idx(self) -> np.ndarray:
        return np.flatnonzero(~self.forget)

    @property
    def u_idx(self) -> np.ndarray:
        return np.flatnonzero(self.forget)


def make_scenario(name: str, X: np.ndarray, y: np.ndarray, X_test: np.ndarray,
                  y_test: np.ndarray, feature_names: list[str], *, fraction: float = 0.02,
                  copies: int = 5, seed: int = 0) -> Scenario:
    """Build one forget set.

    Parameters
    ----------
    name : {"random", "subgroup", "mislabeled", "duplicated", "injected"}
        ``random``: a random ``fraction`` of the rows. ``subgroup``: every row with
        ``native-country=Mexico`` (2% of Adult). ``mislabeled``: a random ``fraction``
        whose labels are flipped in D. ``duplicated``: ``fraction / 2`` of the rows,
        each present ``copies`` times in D (U holds every copy; ε is measured on the
        distinct rows). ``injected``: a random
        ``fraction / 2`` of the positive rows get a new feature equal to 1 (0 on every
        other row, test included), so the model can key on it; exact deletion sets its
        weight to 0.
    X, y, X_test, y_test : ndarray
    feature_names : list of str
    fraction : float, default=0.02
    copies : int, default=5
    seed : int, default=0

    Returns
    -------
    Scenario
    """
    if not 0 < fraction < 0.5:
        raise InputError(f"fraction must be in (0, 0.5), got {fraction!r}")
    rng = np.random.default_rng([seed, _STREAM, SCENARIOS.index(name) if name in SCENARIOS
                                 else 99])
    n = len(y)
    y = np.asarray(y).copy()
    injected = None
    if name in ("random", "mislabeled"):
        u = rng.choice(n, max(2, round(fraction * n)), replace=False)
        if name == "mislabeled":
            y[u] = 1 - y[u]
        rule = (f"random {fraction:.1%} of the training rows"
                + (", labels flipped in D" if name == "mislabeled" else ""))
    elif name == "subgroup":
        col = feature_names.index(SUBGROUP)
        u = np.flatnonzero(X[:, col] > X[:, col].min())
        rule = f"every training row with {SUBGROUP}"
    elif name == "duplicated":
        k = max(2, round(fraction / 2 * n))
        u0 = rng.choice(n, k, replace=False)
        X = np.vstack([X, np.repeat(X[u0], copies - 1, axis=0)])
        y = np.concatenate([y, np.repeat(y[u0], copies - 1)])
        u = np.concatenate([u0, np.arange(n, len(y))])
        rule = f"{k} random rows ({k / n:.1%}), each present {copies} times in D"
    elif name == "injected":
        pos = np.flatnonzero(y == 1)
        u = rng.choice(pos, max(2, round(fraction / 2 * n)), replace=False)
        col = np.zeros((n, 1))
        col[u] = 1.0
        X = np.hstack([X, col])
        X_test = np.hstack([X_test, np.zeros((len(X_test), 1))])
        injected = X.shape[1] - 1
        rule = (f"random {len(u) / n:.1%} of the positive rows, with an injected feature "
                "= 1 on them and 0 everywhere else")
    else:
        raise InputError(f"scenario must be one of {', '.join(SCENARIOS)}; got {name!r}")
    forget = np.zeros(len(y), dtype=bool)
    forget[u] = True
    stat_rows = np.sort(u0 if name == "duplicated" else u)
    if forget.sum() < 2 or (~forget).sum() < 20:
        raise InputError(f"forget set {name!r} has {int(forget.sum())} of {len(y)} rows: "
                         "use more --rows")
    info = {"scenario": name, "rule": rule, "n_train": len(y), "n_forget": int(forget.sum()),
            "n_stat_rows": len(stat_rows), "n_test": len(y_test)}
    return Scenario(name, X, y, forget, stat_rows, X_test, np.asarray(y_test), injected, info)


# -- model family -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """Settings shared by every method.

    Attributes
    ----------
    lam : float
        L2 penalty (sum-of-losses form; 1 = scikit-learn's C = 1), every model and shard.
    noise_std : float
        σ of the certified Newton's loss perturbation.
    n_shards, n_slices : int
        SISA's S and R.
    subsample : float
        Fraction of W each seed trains on (the source of seed-to-seed randomness).
    budget : SGDBudget
        Passes, batch and step of fine-tune, NegGrad+ and relabelling.
    emse_iter : int
        L-BFGS iterations of EMSE.
    """

    lam: float = 1.0
    noise_std: float = 1.0
    n_shards: int = 5
    n_slices: int = 1
    subsample: float = 0.9
    budget: L.SGDBudget = L.SGD_BUDGET
    emse_iter: int = 20

    def describe(self) -> dict[str, str]:
        """One line per method, for the report."""
        b = self.budget
        sgd = f"minibatch SGD, {b.epochs} passes, batch {b.batch}, step {b.step}"
        return {
            "retrain": "refit on W from scratch (Newton's method to the optimum)",
            "sisa": (f"SISA, S={self.n_shards} x R={self.n_slices}, shards = the same L2 "
                     "logistic regression, soft vote; fit on D, forget(U)"),
            "newton": "one Newton step on W's objective (Guo et al.), no noise",
            "newton_noisy": (f"the same with loss perturbation b ~ N(0, {self.noise_std:g}²) "
                             "in every fit (Guo et al.'s certified removal)"),
            "pru": "projective residual update (Izzo et al.): leave-k-out step projected "
                   "on span(U)",
            "emse": f"EMSE objective from the original, L-BFGS, {self.emse_iter} iterations",
            "finetune": f"fine-tune on W: {sgd}",
            "neggrad": f"NegGrad+ (0.95 x W's loss - 0.05 x U's loss): {sgd}",
            "relabel": f"random relabelling of U, then {sgd} on W ∪ U",
            "original": "the model fit on D, nothing forgotten",
        }


def _sisa(fam: Family, seed: int, store: Path) -> SISAClassifier:
    return SISAClassifier(L.L2LogisticRegression(fam.lam), n_shards=fam.n_shards,
                          n_slices=fam.n_slices, store=str(store), random_state=seed,
                          backend="local")


def checkpoint_hashes(model: SISAClassifier) -> dict[str, str]:
    """``{"shard/slice": sha256}`` of a fitted SISA model's checkpoints."""
    return {k: v["sha256"] for k, v in model.store_.manifest.checkpoints.items()}


def ensemble_logit(models: list, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Log-odds of the true class under the soft vote of binary shard models.

    ``log p_y - log(1 - p_y)`` with ``p = mean σ(z_s)``, computed from the shards'
    logits by log-sum-exp, so it is never clamped by rounding ``1 - p`` to 0.
    """
    s = np.where(np.asarray(y) > 0, 1.0, -1.0)
    live = [m for m in models if m is not None]
    z = np.stack([m.decision_function(X) if len(m.classes_) == 2 else
                  np.full(len(X), 50.0 if m.classes_[0] == 1 else -50.0) for m in live])
    return logsumexp(log_expit(s * z), axis=0) - logsumexp(log_expit(-s * z), axis=0)


def statistic(model, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The ε statistic: the true class's logit (``±z``; log-odds for SISA's ensemble).

    ``model`` is a parameter vector ``θ`` or a fitted :class:`SISAClassifier`.
    """
    if isinstance(model, np.ndarray):
        return np.where(np.asarray(y) > 0, 1.0, -1.0) * L.decision(model, X)
    return ensemble_logit(model.estimators_, X, y)


def _accuracy(model, X, y) -> float:
    return float((statistic(model, X, y) > 0).mean())


def _subsample(sc: Scenario, fam: Family, seed: int) -> np.ndarray:
    """Rows of W this seed trains on."""
    w = sc.w_idx
    rng = np.random.default_rng([seed, _STREAM, 1])
    return np.sort(rng.choice(w, max(2, round(fam.subsample * len(w))), replace=False))


def _noise(fam: Family, d: int, seed: int, std: float | None = None) -> np.ndarray:
    """Guo et al.'s perturbation ``b`` on the weights; none on the unpenalised intercept
    (a large one there leaves the objective without a minimum)."""
    b = np.random.default_rng([seed, _STREAM, 2]).normal(
        0.0, fam.noise_std if std is None else std, d + 1)
    b[-1] = 0.0
    return b


def fit_reference(kind: str, sc: Scenario, fam: Family, seed: int, theta0=None):
    """A model trained without U for seed ``seed``: ``monolithic``, ``noisy`` or ``sisa``."""
    w = _subsample(sc, fam, seed)
    if kind == "monolithic":
        return L.fit_logistic(sc.X[w], sc.y[w], fam.lam, theta0=theta0)
    if kind == "noisy":
        return L.fit_logistic(sc.X[w], sc.y[w], fam.lam, theta0=theta0,
                              noise=_noise(fam, sc.X.shape[1], seed))
    if kind == "sisa":
        with tempfile.TemporaryDirectory(prefix="sisa-compare-", dir=_TMP) as tmp, \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*partial_fit.*")
            return _sisa(fam, seed, Path(tmp)).fit(sc.X[w], sc.y[w], sample_ids=w)
    raise InputError(f"kind must be 'monolithic', 'noisy' or 'sisa', got {kind!r}")


def unlearn_all(sc: Scenario, fam: Family, seed: int, methods: tuple[str, ...] = METHODS,
                theta0=None, check_bytes: bool = False) -> dict:
    """Train the original(s) of one seed and run every method.

    Returns
    -------
    dict
        ``models`` (method -> θ or SISAClassifier), ``times`` (unlearning wall time, s),
        ``extra`` (certified ε, SISA receipt, byte identity when ``check_bytes``).
    """
    w = _subsample(sc, fam, seed)
    u = sc.u_idx
    d = np.sort(np.concatenate([w, u]))
    X, y = sc.X, sc.y
    rng = np.random.default_rng([seed, _STREAM, 3])
    models, times, extra = {}, {}, {}
    mono = [m for m in methods if REFERENCE_KIND[m] == "monolithic" and m != "retrain"]
    if mono:
        t0 = time.perf_counter()
        orig = L.fit_logistic(X[d], y[d], fam.lam, theta0=theta0)
        extra["original_fit_s"] = time.perf_counter() - t0
        runs = {
            "original": lambda: orig.copy(),
            "newton": lambda: L.newton_removal(orig, X[w], y[w], fam.lam)[0],
            "pru": lambda: L.projective_residual_update(orig, X[d], y[d],
                                                        np.isin(d, u), fam.lam),
            "emse": lambda: L.emse_unlearn(orig, X[w], y[w], X[u], y[u], fam.lam,
                                           max_iter=fam.emse_iter),
            "finetune": lambda: L.finetune(orig, X[w], y[w], fam.lam, rng, fam.budget),
            "neggrad": lambda: L.neggrad_plus(orig, X[w], y[w], X[u], y[u], fam.lam, rng,
                                              fam.budget),
            "relabel": lambda: L.random_relabel(orig, X[w], y[w], X[u], y[u], fam.lam, rng,
                                                fam.budget),
        }
        for m in mono:
            t0 = time.perf_counter()
            models[m] = runs[m]()
            times[m] = time.perf_counter() - t0
    if "retrain" in methods:
        t0 = time.perf_counter()
        models["retrain"] = fit_reference("monolithic", sc, fam, seed, theta0)
        times["retrain"] = time.perf_counter() - t0
    if "newton_noisy" in methods:
        b = _noise(fam, X.shape[1], seed)
        orig_n = L.fit_logistic(X[d], y[d], fam.lam, theta0=theta0, noise=b)
        t0 = time.perf_counter()
        models["newton_noisy"], beta = L.newton_removal(orig_n, X[w], y[w], fam.lam, noise=b)
        times["newton_noisy"] = time.perf_counter() - t0
        extra["certified_epsilon"] = certified_epsilon(beta, fam.noise_std, DELTA)
    if "sisa" in methods:
        with tempfile.TemporaryDirectory(prefix="sisa-compare-", dir=_TMP) as tmp, \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*partial_fit.*")
            t0 = time.perf_counter()
            model = _sisa(fam, seed, Path(tmp)).fit(X[d], y[d], sample_ids=d)
            extra["sisa_fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            receipt = model.forget(u, progress=False)
            times["sisa"] = time.perf_counter() - t0
            extra["sisa_rows_retrained"] = int(receipt["rows_retrained"])
            if check_bytes:
                ref = fit_reference("sisa", sc, fam, seed)
                extra["sisa_byte_identical"] = checkpoint_hashes(model) == checkpoint_hashes(ref)
        models["sisa"] = model
    return {"models": models, "times": times, "extra": extra}


def seed_run(sc: Scenario, fam: Family, seed: int, n_models: int, *,
             methods: tuple[str, ...] = METHODS, check_bytes: bool = False,
             theta0=None) -> dict:
    """Everything one seed contributes to the ε runs of one scenario.

    Seed ``seed`` (in ``0 .. N-1`` from the run's base) gives the unlearned models;
    ``seed + N`` and ``seed + 2N`` give two independent references of each kind (the
    estimate compares unlearned with the first, the floor the first with the second).

    Returns
    -------
    dict
        ``stats`` (method -> statistic of the stat rows), ``ref`` and ``ref2`` (kind ->
        statistic), ``acc`` (method -> [acc W, acc U, acc test]), ``times``,
        ``injected_weight`` (method -> weight on the injected feature, if any), ``extra``.
    """
    with threadpool_limits(limits=1):
        out = unlearn_all(sc, fam, seed, methods, theta0=theta0, check_bytes=check_bytes)
        rows = sc.stat_rows
        Xs, ys = sc.X[rows], sc.y[rows]
        kinds = sorted({REFERENCE_KIND[m] for m in methods})
        ref, ref2 = {}, {}
        for k in kinds:
            for store, s in ((ref, seed + n_models), (ref2, seed + 2 * n_models)):
                store[k] = statistic(fit_reference(k, sc, fam, s, theta0), Xs, ys)
        w = sc.w_idx
        stats, acc, inj = {}, {}, {}
        for m, model in out["models"].items():
            stats[m] = statistic(model, Xs, ys)
            acc[m] = [_accuracy(model, sc.X[w], sc.y[w]), _accuracy(model, Xs, ys),
                      _accuracy(model, sc.X_test, sc.y_test)]
            if sc.injected is not None:
                inj[m] = injected_weight(model, sc.injected)
    return {"seed": seed, "stats": stats, "ref": ref, "ref2": ref2, "acc": acc,
            "times": out["times"], "injected_weight": inj, "extra": out["extra"]}


def injected_weight(model, col: int) -> float:
    """Weight on feature ``col``: ``θ[col]``, or the mean over SISA's shards."""
    if isinstance(model, np.ndarray):
        return float(model[col])
    live = [m for m in model.estimators_ if m is not None and len(m.classes_) == 2]
    return float(np.mean([m.coef_[0, col] for m in live]))


def warm_start(sc: Scenario, fam: Family) -> np.ndarray:
    """The optimum on all of D: every per-seed fit starts here (its optimum is unique,
    so this only saves Newton iterations)."""
    with threadpool_limits(limits=1):
        return L.fit_logistic(sc.X, sc.y, fam.lam)
