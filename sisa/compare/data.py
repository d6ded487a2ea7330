"""The data of a comparison: Adult's features, the forget sets, each seed's rows.

Forget sets (:func:`make_scenario`): ``random`` rows, a coherent ``subgroup`` (one value
of a categorical feature), ``mislabeled`` (label-flipped) rows, ``duplicated`` rows
(each present ``k`` times) and ``injected`` (Izzo et al.'s feature-injection test: a
feature non-zero only on U). Every model family trains on these; nothing here knows
which family or method will.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from sisa.datasets import load
from sisa.errors import InputError

__all__ = ["SCENARIOS", "STREAM", "Scenario", "adult_features", "make_scenario", "seed_rows",
           "single_row", "subsample"]

SCENARIOS = ("random", "subgroup", "mislabeled", "duplicated", "injected")
TEST_FRACTION = 0.25
SUBGROUP = "native-country=Mexico"  # 2.0% of Adult: one value of a categorical feature
_LOG1P = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
#: Keeps the comparison's random streams apart from the loaders' own seeds: every stream
#: is ``default_rng([seed, STREAM, purpose])``.
STREAM = 0x5EED


def adult_features(rows: int | None = None, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], dict]:
    """Adult with a feature map learned from no training row.

    log1p of the six heavy-tailed numeric columns, one-hot categoricals, then every
    column standardised with the mean and standard deviation of the *test* rows, so
    the map cannot leak U (or any training row) and all methods see the same features.

    Parameters
    ----------
    rows : int, optional
        A seeded subsample of this many rows (at least 200); None: all of Adult.
    seed : int, default=0
        The subsample and the train/test split.

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
    rng = np.random.default_rng([seed, STREAM])
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
        """Rows of W (kept), ascending."""
        return np.flatnonzero(~self.forget)

    @property
    def u_idx(self) -> np.ndarray:
        """Rows of U (forgotten), ascending."""
        return np.flatnonzero(self.forget)


class _Forget(NamedTuple):
    """What one forget-set rule makes of D."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    u: np.ndarray  # rows of U
    stat: np.ndarray  # rows whose ε is measured
    injected: int | None
    rule: str


def _random_rows(name: str, rng: np.random.Generator, X: np.ndarray, y: np.ndarray,
                 X_test: np.ndarray, names: list[str], fraction: float, copies: int) -> _Forget:
    u = rng.choice(len(y), max(2, round(fraction * len(y))), replace=False)
    if name == "mislabeled":
        classes = np.unique(y)
        if len(classes) == 2:
            y[u] = 1 - y[u]
        else:  # each row's label moves to one of the other classes, uniformly
            k = np.searchsorted(classes, y[u]) + rng.integers(1, len(classes), len(u))
            y[u] = classes[k % len(classes)]
    rule = (f"random {fraction:.1%} of the training rows"
            + (", labels flipped in D" if name == "mislabeled" else ""))
    return _Forget(X, y, X_test, u, u, None, rule)


def _subgroup(name: str, rng: np.random.Generator, X: np.ndarray, y: np.ndarray,
              X_test: np.ndarray, names: list[str], fraction: float, copies: int) -> _Forget:
    col = names.index(SUBGROUP)
    u = np.flatnonzero(X[:, col] > X[:, col].min())
    return _Forget(X, y, X_test, u, u, None, f"every training row with {SUBGROUP}")


def _duplicated(name: str, rng: np.random.Generator, X: np.ndarray, y: np.ndarray,
                X_test: np.ndarray, names: list[str], fraction: float, copies: int) -> _Forget:
    n = len(y)
    k = max(2, round(fraction / 2 * n))
    u0 = rng.choice(n, k, replace=False)
    X = np.vstack([X, np.repeat(X[u0], copies - 1, axis=0)])
    y = np.concatenate([y, np.repeat(y[u0], copies - 1)])
    u = np.concatenate([u0, np.arange(n, len(y))])
    rule = f"{k} random rows ({k / n:.1%}), each present {copies} times in D"
    return _Forget(X, y, X_test, u, u0, None, rule)


def _injected(name: str, rng: np.random.Generator, X: np.ndarray, y: np.ndarray,
              X_test: np.ndarray, names: list[str], fraction: float, copies: int) -> _Forget:
    n = len(y)
    u = rng.choice(np.flatnonzero(y == 1), max(2, round(fraction / 2 * n)), replace=False)
    col = np.zeros((n, 1))
    col[u] = 1.0
    X = np.hstack([X, col])
    X_test = np.hstack([X_test, np.zeros((len(X_test), 1))])
    rule = (f"random {len(u) / n:.1%} of the positive rows, with an injected feature "
            "= 1 on them and 0 everywhere else")
    return _Forget(X, y, X_test, u, u, X.shape[1] - 1, rule)


_RULES = {"random": _random_rows, "subgroup": _subgroup, "mislabeled": _random_rows,
          "duplicated": _duplicated, "injected": _injected}


def make_scenario(name: str, X: np.ndarray, y: np.ndarray, X_test: np.ndarray,
                  y_test: np.ndarray, feature_names: list[str], *, fraction: float = 0.02,
                  copies: int = 5, seed: int = 0) -> Scenario:
    """Build one forget set.

    Parameters
    ----------
    name : {"random", "subgroup", "mislabeled", "duplicated", "injected"}
        ``random``: a random ``fraction`` of the rows. ``subgroup``: every row with
        ``native-country=Mexico`` (2% of Adult). ``mislabeled``: a random ``fraction``
        whose labels are flipped in D (with more than two classes: each moved to one of
        the other classes, uniformly). ``duplicated``: ``fraction / 2`` of the rows,
        each present ``copies`` times in D (U holds every copy; ε is measured on the
        distinct rows). ``injected``: a random ``fraction / 2`` of the positive rows
        get a new feature equal to 1 (0 on every other row, test included), so the
        model can key on it; exact deletion sets its weight to 0.
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
    if name not in _RULES:
        raise InputError(f"scenario must be one of {', '.join(SCENARIOS)}; got {name!r}")
    rng = np.random.default_rng([seed, STREAM, SCENARIOS.index(name)])
    f = _RULES[name](name, rng, X, np.asarray(y).copy(), X_test, feature_names, fraction,
                     copies)
    forget = np.zeros(len(f.y), dtype=bool)
    forget[f.u] = True
    stat_rows = np.sort(f.stat)
    if forget.sum() < 2 or (~forget).sum() < 20:
        raise InputError(f"forget set {name!r} has {int(forget.sum())} of {len(f.y)} rows: "
                         "use more --rows")
    info = {"scenario": name, "rule": f.rule, "n_train": len(f.y),
            "n_forget": int(forget.sum()), "n_stat_rows": len(stat_rows), "n_test": len(y_test)}
    return Scenario(name, f.X, f.y, forget, stat_rows, f.X_test, np.asarray(y_test),
                    f.injected, info)


def single_row(sc: Scenario) -> Scenario:
    """The same D with a one-row request: the first row of ``sc``'s U."""
    row = sc.stat_rows[:1]
    forget = np.zeros(len(sc.y), dtype=bool)
    forget[row] = True
    info = {**sc.info, "rule": "one random training row", "n_forget": 1, "n_stat_rows": 1}
    return Scenario("single", sc.X, sc.y, forget, row, sc.X_test, sc.y_test, None, info)


def subsample(sc: Scenario, fraction: float, seed: int) -> np.ndarray:
    """Rows of W that seed ``seed`` trains on: a random ``fraction`` of W, ascending
    (all of W when ``fraction`` is 1)."""
    w = sc.w_idx
    rng = np.random.default_rng([seed, STREAM, 1])
    return np.sort(rng.choice(w, max(2, round(fraction * len(w))), replace=False))


def seed_rows(sc: Scenario, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """``(w, u, d)``: this seed's rows of W, all of U, and their union (its D), ascending."""
    w = subsample(sc, fraction, seed)
    u = sc.u_idx
    return w, u, np.sort(np.concatenate([w, u]))
