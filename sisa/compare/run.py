"""Head-to-head comparison: one split, one model family, five ways to forget U.

Methods (same data, same L2-regularised linear model family):

* ``retrain``: the monolithic model fit from scratch on W (the reference);
* ``sisa``: a SISA ensemble fit on D, then ``forget(U)``; its own exact reference is
  SISA fit on W with the same ``random_state`` and sample ids;
* ``newton``: Guo et al.'s certified removal (one Newton step), with its formal ε;
* ``emse``: the monolithic model fit on D, then EMSE fine-tuned;
* ``original``: the model fit on D, untouched (the "did nothing" floor).

:func:`train_methods` trains all five for one seed; the metrics run uses it once on
the full W, the ε runs of :mod:`sisa.compare.gap` once per seed.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import Ridge, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from sisa.aggregate import aligned_proba
from sisa.baselines.emse import EMSEClassifierUnlearner, EMSEUnlearner
from sisa.baselines.newton import CertifiedRemovalClassifier, CertifiedRemovalRegressor
from sisa.compare.epsilon import DELTA, logit_confidence, residual
from sisa.datasets import Dataset, load
from sisa.engine.train import schedule_of
from sisa.errors import InputError
from sisa.estimators import SISAClassifier, SISARegressor
from sisa.metrics import exponential_r2, unlearning_report
from sisa.pipeline import IncrementalPipeline

__all__ = [
    "METHODS",
    "REFERENCE_KIND",
    "Family",
    "Outcome",
    "Split",
    "default_family",
    "fit_reference",
    "fixed_features",
    "method_metrics",
    "prepare",
    "run",
    "statistic",
    "train_methods",
]

METHODS = ("retrain", "sisa", "newton", "emse", "original")
DEFAULT_ROWS = {"synthetic": 1000, "adult": 8000, "diamonds": 8000, "fashion-mnist": 2000}
DEFAULT_FORGET_FRACTION = 0.02
TEST_FRACTION = 0.25
# Residual scale of Exponential/Fair R²: in units of y (regression) or of 1 - p_y.
DEFAULT_SIGMA = {"regression": 0.5, "classification": 0.25}
_ADULT_LOG1P = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                "hours-per-week")
_SPLIT_STREAM = 0x5EED  # keeps the split's random stream apart from the loaders' own seeds


# -- data ---------------------------------------------------------------------------------------


def fixed_features(ds: Dataset) -> tuple[np.ndarray, str]:
    """A feature map fixed in advance, learned from no row (so it cannot leak U).

    Parameters
    ----------
    ds : Dataset
        A built-in dataset.

    Returns
    -------
    Phi : ndarray of shape (n, d)
    description : str
    """
    if ds.name.startswith("synthetic"):
        return (PolynomialFeatures(7, include_bias=False).fit_transform(ds.X),
                "x, x², …, x⁷ (PolynomialFeatures(7))")
    if ds.name == "diamonds":
        cols = [ds.feature_names.index(c) for c in ("carat", "cut", "color", "clarity")]
        return (PolynomialFeatures(2, include_bias=False).fit_transform(ds.X[:, cols]),
                "degree-2 polynomial of carat, cut, color, clarity")
    if ds.name == "adult":
        X = ds.X.copy()
        cols = [ds.feature_names.index(c) for c in _ADULT_LOG1P]
        X[:, cols] = np.log1p(X[:, cols])  # heavy-tailed counts and dollars
        return X, "log1p of the 6 numeric columns, one-hot categoricals as they are"
    if ds.name == "fashion-mnist":
        img = ds.X.reshape(-1, 14, 2, 14, 2).astype(np.float64)
        return img.mean(axis=(2, 4)).reshape(len(ds.X), -1), "2x2 average pooling (14x14 pixels)"
    raise InputError(f"no fixed feature map for dataset {ds.name!r}: use a built-in dataset")


@dataclass(frozen=True, eq=False)
class Split:
    """Training rows D (with the forget mask U), wanted test rows, and their story.

    Attributes
    ----------
    X, y : ndarray
        D, after the fixed feature map.
    forget : ndarray of bool, shape (len(D),)
        U; W is ``~forget``.
    X_test, y_test : ndarray
        Held-out rows, the dataset's unwanted rows left out (test = the wanted task).
    task : {"classification", "regression"}
    classes : ndarray or None
        Sorted labels of D (classification).
    info : dict
        Dataset name, sizes, how U was chosen, the feature map.
    """

    X: np.ndarray
    y: np.ndarray
    forget: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str
    classes: np.ndarray | None
    info: dict = field(default_factory=dict)

    @property
    def u_idx(self) -> np.ndarray:
        return np.flatnonzero(self.forget)

    @property
    def w_idx(self) -> np.ndarray:
        return np.flatnonzero(~self.forget)


def prepare(dataset: str | Dataset, *, rows: int | None = None, forget: int | None = None,
            forget_fraction: float | None = None, seed: int = 0) -> Split:
    """Load, map features, split train/test and choose U.

    U is, in order of precedence: ``forget`` random training rows; a random
    ``forget_fraction`` of them; the dataset's own unwanted rows (synthetic,
    diamonds); else a random 2%.

    Parameters
    ----------
    dataset : str or Dataset
        A built-in name ("synthetic", "adult", "diamonds", "fashion-mnist") or a
        loaded built-in dataset.
    rows : int, optional
        Subsample to this many rows (default per dataset, see ``DEFAULT_ROWS``).
    forget : int, optional
    forget_fraction : float, optional
    seed : int, default=0
        Seeds the subsample, the split and U.

    Returns
    -------
    Split
    """
    if forget is not None and forget_fraction is not None:
        raise InputError("pass forget (a row count) or forget_fraction, not both")
    if isinstance(dataset, Dataset):
        ds = dataset
    else:
        key = dataset.lower().replace("_", "-")
        n = DEFAULT_ROWS.get(key) if rows is None else int(rows)
        ds = (load(key, n=n, random_state=seed) if key == "synthetic"
              else load(key, n_rows=n, sample_seed=seed))
    Phi, feature_map = fixed_features(ds)
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    is_test = np.zeros(len(ds), dtype=bool)
    is_test[rng.permutation(len(ds))[: round(TEST_FRACTION * len(ds))]] = True
    train = np.flatnonzero(~is_test)
    unwanted = np.zeros(len(ds), bool) if ds.unwanted is None else ds.unwanted
    mask = np.zeros(len(train), dtype=bool)
    if forget is None and forget_fraction is None and ds.unwanted is not None:
        mask = unwanted[train]
        rule = "the dataset's unwanted rows"
    else:
        if forget is None:
            frac = DEFAULT_FORGET_FRACTION if forget_fraction is None else float(forget_fraction)
            if not 0 < frac < 1:
                raise InputError(f"forget_fraction must be in (0, 1), got {frac!r}")
            forget = max(1, round(frac * len(train)))
            rule = f"random {frac:.1%} of the training rows"
        else:
            rule = f"{int(forget)} random training rows"
        if not 2 <= int(forget) <= len(train) // 2:
            raise InputError(f"forget must be between 2 and {len(train) // 2} rows "
                             f"(half of the {len(train)} training rows), got {forget}")
        mask[rng.choice(len(train), int(forget), replace=False)] = True
    if not 2 <= mask.sum() <= len(train) - 20:
        raise InputError(f"U has {int(mask.sum())} of {len(train)} training rows: need at least 2 "
                         "rows to forget and 20 to keep; pass --forget N or more --rows")
    test = is_test & ~unwanted
    y = ds.y
    classes = np.unique(y[train]) if ds.task == "classification" else None
    info = {"dataset": ds.name, "description": ds.description, "task": ds.task,
            "feature_map": feature_map, "n_features": int(Phi.shape[1]),
            "n_train": len(train), "n_forget": int(mask.sum()),
            "n_wanted": int((~mask).sum()), "n_test": int(test.sum()), "forget_rule": rule}
    return Split(Phi[train], y[train], mask, Phi[test], y[test], ds.task, classes, info)


# -- model family -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """The model family every method uses, and its settings.

    Attributes
    ----------
    task : {"classification", "regression"}
    sigma : float
        Residual scale of Exponential/Fair R² (and of the regression EMSE objective).
    n_shards, n_slices : int
        SISA's S and R.
    max_norm : float
        Row-norm bound of the Newton method, shared by both sides of every comparison.
    sisa_estimator : estimator
        Sub-model cloned for every SISA shard.
    emse : dict
        Parameters of the monolithic model (``EMSE*Unlearner``), which also gives
        ``retrain`` and ``original``.
    newton : dict
        Parameters of ``CertifiedRemoval*``.
    """

    task: str
    sigma: float
    n_shards: int
    n_slices: int
    max_norm: float
    sisa_estimator: Any
    emse: dict
    newton: dict

    def describe(self) -> dict[str, str]:
        """One line per method: what is trained, for the report."""
        if self.task == "classification":
            mono = ("L2 logistic regression (sklearn LogisticRegression, C=1, on features "
                    "standardised inside the model)")
        else:
            mono = "least squares (on features standardised inside the model)"
        return {
            "retrain": f"{mono}, fit on W",
            "sisa": (f"SISA, S={self.n_shards} x R={self.n_slices}, shards = "
                     f"{_describe(self.sisa_estimator)}; fit on D, forget(U)"),
            "newton": ("CertifiedRemoval" + ("Classifier" if self.task == "classification"
                                             else "Regressor")
                       + f"(lam={self.newton['lam']:g}, noise_std={self.newton['noise_std']:g})"
                       + ", fit on D, one Newton step removes U"),
            "emse": f"{mono}, fit on D, then EMSE fine-tune ({_describe_emse(self.emse)})",
            "original": f"{mono}, fit on D, nothing forgotten",
        }


def _describe(est: Any) -> str:
    if isinstance(est, Pipeline):
        return " -> ".join(type(step).__name__ for _, step in est.steps)
    return type(est).__name__


def _describe_emse(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if k != "n_threads")


def default_family(split: Split, *, n_shards: int = 5, n_slices: int = 2,
                   sigma: float | None = None, sisa_estimator: Any = None) -> Family:
    """The model family for a split's task (the choices are documented in docs/compare.md).

    Classification: L2 logistic regression everywhere; SISA shards are
    ``IncrementalPipeline(StandardScaler, SGDClassifier(loss="log_loss"))`` so each
    shard learns its own scaling. Regression: least squares; SISA shards are
    ``Pipeline(StandardScaler, Ridge(1e-3))``, refit per slice (closed form: SGD
    underfits a degree-7 polynomial on a few hundred rows).

    Parameters
    ----------
    split : Split
    n_shards, n_slices : int, default=5, 2
    sigma : float, optional
        Default ``DEFAULT_SIGMA[task]``.
    sisa_estimator : estimator, optional
        Replace the SISA sub-model.

    Returns
    -------
    Family
    """
    sigma = DEFAULT_SIGMA[split.task] if sigma is None else float(sigma)
    if not sigma > 0:
        raise InputError(f"sigma must be > 0, got {sigma!r}")
    max_norm = float(np.linalg.norm(split.X, axis=1).max()) or 1.0
    if split.task == "classification":
        est = IncrementalPipeline([("scale", StandardScaler()),
                                   ("sgd", SGDClassifier(loss="log_loss", alpha=1e-4))])
        # "sum" weighs each forgotten row like one kept row; "mean" with lam=1 would weigh
        # 2% of the rows like the other 98% and wreck the model (accuracy 0.85 -> 0.60).
        emse = {"reduction": "sum", "lam": 1.0, "alpha": 1.0, "n_threads": 1}
        newton = {"lam": 1e-4, "noise_std": 1.0}
    else:
        est = Pipeline([("scale", StandardScaler()), ("ridge", Ridge(alpha=1e-3))])
        emse = {"sigma": sigma, "reduction": "mean", "lam": 1.0, "n_threads": 1}
        # The Newton step is exact for least squares (certified ε = 0 without noise).
        newton = {"lam": 1e-8, "noise_std": 0.0}
    return Family(split.task, sigma, int(n_shards), int(n_slices), max_norm,
                  est if sisa_estimator is None else sisa_estimator, emse, newton)


# -- training -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One method's result for one seed.

    Attributes
    ----------
    model : estimator
        After unlearning.
    reference : estimator
        What it should be indistinguishable from.
    time_s : float
        Wall time of the unlearning step alone.
    rows_read : int
        Distinct training rows the unlearning step reads.
    formal_epsilon : float or None
        A proven bound, when the method has one (None: no guarantee).
    extra : dict
    """

    model: Any
    reference: Any
    time_s: float
    rows_read: int
    formal_epsilon: float | None
    extra: dict = field(default_factory=dict)


def _monolithic(fam: Family):
    cls = EMSEClassifierUnlearner if fam.task == "classification" else EMSEUnlearner
    return cls(**fam.emse)


def _newton(fam: Family, seed: int):
    cls = (CertifiedRemovalClassifier if fam.task == "classification"
           else CertifiedRemovalRegressor)
    return cls(**fam.newton, delta=DELTA, max_norm=fam.max_norm, random_state=seed)


def _sisa(fam: Family, seed: int, store: Path):
    cls = SISAClassifier if fam.task == "classification" else SISARegressor
    return cls(clone(fam.sisa_estimator), n_shards=fam.n_shards, n_slices=fam.n_slices,
               store=str(store), random_state=seed, backend="local")


def checkpoint_hashes(model: SISAClassifier | SISARegressor) -> dict[str, str]:
    """``{"shard/slice": sha256}`` of a fitted SISA model's checkpoints."""
    return {k: v["sha256"] for k, v in model.store_.manifest["model"]["checkpoints"].items()}


def _sisa_rows_read(model, receipt: dict) -> int:
    store = model.store_
    sched = schedule_of(store, None)
    rows = 0
    for shard, first in receipt["affected"]:
        read = {s for r in range(first, store.n_slices) for s in sched.slices_for(r)}
        rows += sum(store.slice_rows(shard, s) for s in read)
    return rows


def subsample_w(split: Split, seed: int, fraction: float | None) -> np.ndarray:
    """Indices of the W rows a monolithic model trains on for this seed (all if None)."""
    w = split.w_idx
    if fraction is None:
        return w
    rng = np.random.default_rng([seed, _SPLIT_STREAM, 1])
    return np.sort(rng.choice(w, max(2, round(fraction * len(w))), replace=False))


REFERENCE_KIND = {"retrain": "monolithic", "sisa": "sisa", "newton": "newton",
                  "emse": "monolithic", "original": "monolithic"}


def fit_reference(kind: str, split: Split, fam: Family, seed: int, *,
                  subsample: float | None = None):
    """Fit a reference model (trained without U) for one seed.

    Parameters
    ----------
    kind : {"monolithic", "newton", "sisa"}
        See ``REFERENCE_KIND``.
    split : Split
    fam : Family
    seed : int
    subsample : float, optional
        Fraction of W for the monolithic and Newton models (SISA takes all of W).

    Returns
    -------
    fitted estimator
    """
    X, y = split.X, split.y
    if kind == "sisa":
        w = split.w_idx
        with tempfile.TemporaryDirectory(prefix="sisa-compare-") as tmp, \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*has no partial_fit.*")
            # Sample ids = row positions in D, as in the fit on D: assignment is keyed by id.
            return _sisa(fam, seed, Path(tmp)).fit(X[w], y[w], sample_ids=w)
    w = subsample_w(split, seed, subsample)
    if kind == "monolithic":
        return _monolithic(fam).fit_original(X[w], y[w])
    if kind == "newton":
        return _newton(fam, seed).fit(X[w], y[w])
    raise InputError(f"kind must be one of {sorted(set(REFERENCE_KIND.values()))}, got {kind!r}")


def train_methods(split: Split, fam: Family, seed: int, *, subsample: float | None = None,
                  methods: tuple[str, ...] = METHODS) -> dict[str, Outcome]:
    """Train every method for one seed, with its same-seed reference.

    Parameters
    ----------
    split : Split
    fam : Family
    seed : int
        SISA's ``random_state``, the Newton noise seed, and the W subsample's seed.
    subsample : float, optional
        Monolithic methods train on this fraction of W (plus all of U); None = all of W.
        SISA always uses all rows: its randomness is its ``random_state``.
    methods : tuple of str
        Which methods to train.

    Returns
    -------
    dict of str to Outcome
    """
    X, y, u = split.X, split.y, split.u_idx
    w = subsample_w(split, seed, subsample)
    d = np.sort(np.concatenate([w, u]))
    out: dict[str, Outcome] = {}
    start = time.perf_counter()
    retrain = fit_reference("monolithic", split, fam, seed, subsample=subsample)
    out["retrain"] = Outcome(retrain, retrain, time.perf_counter() - start, len(w), 0.0)
    if "emse" in methods or "original" in methods:
        emse = _monolithic(fam).fit_original(X[d], y[d])
        out["original"] = Outcome(copy.deepcopy(emse), retrain, 0.0, 0, None)
        emse.unlearn(X[w], y[w], X[u], y[u])
        out["emse"] = Outcome(emse, retrain, emse.unlearn_time_, len(w) + len(u), None,
                              {"n_iter": emse.n_iter_, "converged": emse.converged_})
    if "newton" in methods:
        newton = _newton(fam, seed).fit(X[d], y[d])
        newton.remove(np.searchsorted(d, u))
        ref = fit_reference("newton", split, fam, seed, subsample=subsample)
        out["newton"] = Outcome(newton, ref, newton.removal_time_, len(w), newton.epsilon_bound_,
                                {"removal_bound": newton.removal_bound_})
    if "sisa" in methods:
        out["sisa"] = _train_sisa(split, fam, seed)
    return {m: out[m] for m in methods}


def _train_sisa(split: Split, fam: Family, seed: int) -> Outcome:
    X, y = split.X, split.y
    with tempfile.TemporaryDirectory(prefix="sisa-compare-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*has no partial_fit.*")
        model = _sisa(fam, seed, Path(tmp)).fit(X, y, sample_ids=np.arange(len(y)))
        start = time.perf_counter()
        receipt = model.forget(split.u_idx, progress=False)
        elapsed = time.perf_counter() - start
        rows = _sisa_rows_read(model, receipt)
    ref = fit_reference("sisa", split, fam, seed)
    identical = checkpoint_hashes(model) == checkpoint_hashes(ref)
    extra = {"byte_identical": identical, "rows_retrained": receipt["rows_retrained"],
             "rows_full_retrain": receipt["rows_full_retrain"],
             "shards_affected": len(receipt["affected"])}
    return Outcome(model, ref, elapsed, rows, 0.0 if identical else None, extra)


# -- statistics and metrics ---------------------------------------------------------------------


def _proba(model, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return aligned_proba(model, X, classes)


def statistic(model, split: Split, rows: np.ndarray) -> np.ndarray:
    """The ε statistic of ``rows`` of D under ``model``.

    Logit-scaled confidence for classifiers, residual ``y - f(x)`` for regressors.

    Parameters
    ----------
    model : fitted estimator
    split : Split
    rows : ndarray of int
        Row positions in D.

    Returns
    -------
    ndarray of shape (len(rows),)
    """
    X, y = split.X[rows], split.y[rows]
    if split.task == "classification":
        p = _proba(model, X, split.classes)
        return logit_confidence(p, np.searchsorted(split.classes, y))
    return residual(model.predict(X), y)


def method_metrics(model, split: Split, sigma: float) -> dict[str, float]:
    """Metrics of one model on W, U and the test rows.

    Regression: R², Exponential R² and Fair R² (:mod:`sisa.metrics`). Classification:
    accuracy, and Exponential/Fair R² on the residual ``r = 1 - p_y`` (sisa's
    convention: the probability mass the model leaves off the true class).

    Parameters
    ----------
    model : fitted estimator
    split : Split
    sigma : float

    Returns
    -------
    dict of str to float
    """
    sets = [(split.X[~split.forget], split.y[~split.forget]),
            (split.X[split.forget], split.y[split.forget]), (split.X_test, split.y_test)]
    if split.task == "regression":
        (xw, yw), (xu, yu), (xt, yt) = sets
        return unlearning_report(yw, model.predict(xw), yu, model.predict(xu), yt,
                                 model.predict(xt), sigma=sigma, task="regression")
    preds, p_true = [], []
    for X, y in sets:
        p = _proba(model, X, split.classes)
        preds.append(split.classes[p.argmax(axis=1)])
        p_true.append(p[np.arange(len(y)), np.searchsorted(split.classes, y)])
    out = unlearning_report(sets[0][1], preds[0], sets[1][1], preds[1], sets[2][1], preds[2],
                            task="classification")
    out["exp_r2_wanted"] = exponential_r2(np.ones_like(p_true[0]), p_true[0], sigma)
    out["exp_r2_unwanted"] = exponential_r2(np.ones_like(p_true[1]), p_true[1], sigma)
    out["fair_r2"] = out["exp_r2_wanted"] * (1.0 - out["exp_r2_unwanted"])
    return out


# -- orchestration ------------------------------------------------------------------------------


def run(dataset: str | Dataset = "adult", *, forget: int | None = None,
        forget_fraction: float | None = None, n_models: int = 64, n_shards: int = 5,
        n_slices: int = 2, rows: int | None = None, seed: int = 0,
        out: str | os.PathLike | None = None, sigma: float | None = None,
        subsample: float = 0.5, sisa_estimator: Any = None, progress: bool = True,
        ray_address: str | None = None, figures: bool = True):
    """Run the head-to-head comparison and write the report.

    Parameters
    ----------
    dataset : str or Dataset, default="adult"
        "synthetic", "adult", "diamonds" or "fashion-mnist".
    forget, forget_fraction : optional
        How many rows to forget; see :func:`prepare`.
    n_models : int, default=64
        N models per side in the ε runs (at least 4); ε resolves up to ``ln(N - 1)``.
    n_shards, n_slices : int, default=5, 2
        SISA's S and R.
    rows : int, optional
        Subsample of the dataset (default ``DEFAULT_ROWS``).
    seed : int, default=0
        Split, U, the metrics run's seed; the ε runs use seeds ``seed .. seed+N-1``.
    out : path, optional
        Output directory (``report.json``, ``report.md``, figures). None: write nothing.
    sigma : float, optional
        Exponential/Fair R² scale (default 0.5 for regression, 0.25 for 1 - p_y).
    subsample : float, default=0.5
        Fraction of W each monolithic model of the ε runs trains on (their randomness).
    sisa_estimator : estimator, optional
        Replace SISA's default shard model.
    progress : bool, default=True
        Progress bars on stderr.
    ray_address : str, optional
        Ray cluster for the ε runs (default: an embedded local Ray).
    figures : bool, default=True
        Write the PNG figures (with ``out``).

    Returns
    -------
    CompareReport

    Examples
    --------
    >>> from sisa import compare
    >>> rep = compare.run("synthetic", n_models=8, out="runs/cmp")  # doctest: +SKIP
    >>> print(rep.to_markdown())  # doctest: +SKIP
    """
    from sisa.compare.gap import run_gap
    from sisa.compare.report import CompareReport

    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 4:
        raise InputError(f"n_models must be an integer >= 4 (ε resolves up to ln(N-1)), "
                         f"got {n_models!r}")
    if not 0 < subsample <= 1:
        raise InputError(f"subsample must be in (0, 1], got {subsample!r}")
    t0 = time.perf_counter()
    split = prepare(dataset, rows=rows, forget=forget, forget_fraction=forget_fraction,
                    seed=seed)
    if split.info["n_wanted"] < 2 * n_shards * n_slices:
        raise InputError(f"W has {split.info['n_wanted']} rows, too few for {n_shards} shards "
                         f"x {n_slices} slices: use fewer --shards/--slices or more --rows")
    fam = default_family(split, n_shards=n_shards, n_slices=n_slices, sigma=sigma,
                         sisa_estimator=sisa_estimator)
    outcomes = train_methods(split, fam, seed)
    metrics_s = time.perf_counter() - t0
    gap = run_gap(split, fam, n_models=n_models, seed=seed, subsample=subsample,
                  progress=progress, address=ray_address)
    config = {"dataset": split.info["dataset"], "n_models": n_models, "n_shards": n_shards,
              "n_slices": n_slices, "rows": rows, "seed": seed, "sigma": fam.sigma,
              "subsample": subsample, "forget": forget, "forget_fraction": forget_fraction}
    report = CompareReport.build(split, fam, outcomes, gap, config,
                                 timings={"metrics_run_s": metrics_s,
                                          "epsilon_runs_s": gap.wall_time_s})
    report.timings["total_s"] = time.perf_counter() - t0
    if out is not None:
        report.write(out, figures=figures)
    return report
