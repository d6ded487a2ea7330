"""Each family's tunable methods: their grids, their budget knob, and how to run one setting
from an original model (shared by :mod:`sisa.compare.runs.tuning` and
:mod:`sisa.compare.runs.curves`).

A *setting* is a dict of a method's keyword settings (``epochs``, ``step``/``lr``, ``alpha``,
``max_steps``); the *budget knob* is ``epochs`` (passes over W; EMSE's L-BFGS iterations),
whose value 0 is the original model.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np

from sisa.baselines import linear as L
from sisa.baselines.scrub import scrub
from sisa.compare.data import STREAM, Scenario, seed_rows
from sisa.compare.methods.linear_family import LinearFamily
from sisa.compare.methods.torch_family import descend
from sisa.compare.methods.torch_methods import scrub_network

__all__ = ["CURVE_METHODS", "FIXED_METHODS", "GRIDS", "apply", "grid", "original"]

#: The small grids the tuning picks from (the product of each method's lists). The
#: linear family's largest budget (32 passes) costs about a cold retrain at 3,000 rows.
GRIDS: dict[str, dict[str, dict[str, list]]] = {
    "linear": {
        "finetune": {"epochs": [2, 8, 32], "step": [0.05, 0.2, 0.5]},
        "neggrad": {"epochs": [2, 8, 32], "step": [0.05, 0.2], "alpha": [0.9, 0.97, 0.99]},
        "scrub": {"epochs": [4, 10], "max_steps": [1, 4], "step": [0.05, 0.2],
                  "alpha": [0.1, 1.0]},
    },
    "torch": {
        "finetune": {"epochs": [2, 5], "lr": [0.01, 0.05]},
        "neggrad": {"epochs": [2, 5], "lr": [0.01, 0.05], "alpha": [0.9, 0.99]},
        "scrub": {"epochs": [2, 5], "max_steps": [1, 2], "lr": [0.01], "alpha": [0.1, 1.0]},
    },
}
#: Methods whose cost is a knob (a curve); the rest of the approximate methods cost one
#: fixed step (one point).
CURVE_METHODS = {"linear": ("finetune", "neggrad", "scrub", "relabel", "emse"),
                 "torch": ("finetune", "neggrad", "scrub")}
FIXED_METHODS = {"linear": ("newton", "pru"), "torch": ()}


def grid(family: str, method: str) -> list[dict]:
    """The settings of ``method``'s grid, in a fixed order (the tie-break's last key)."""
    g = GRIDS[family][method]
    return [dict(zip(g, values, strict=True)) for values in itertools.product(*g.values())]


def original(fam: Any, sc: Scenario, seed: int, warm: Any = None) -> tuple[Any, tuple]:
    """The original model of seed ``seed`` (trained on its D) and its ``(w, u, d)`` rows."""
    rows = seed_rows(sc, fam.subsample, seed)
    d = rows[2]
    if isinstance(fam, LinearFamily):
        return L.fit_logistic(sc.X[d], sc.y[d], fam.lam, theta0=warm), rows
    return fam.network(seed).fit(sc.X[d], sc.y[d]), rows


def apply(fam: Any, sc: Scenario, seed: int, orig: Any, rows: tuple, method: str,
          setting: dict) -> Any:
    """``method`` with ``setting`` (over the family's defaults) from ``orig``; a budget of
    0 epochs is ``orig`` itself."""
    if setting.get("epochs", 1) == 0:
        return orig
    w, u, _ = rows
    X, y = sc.X, sc.y
    f = replace(fam, params={sc.name: {method: dict(setting)}})
    if not isinstance(fam, LinearFamily):
        p = f.method_params(sc.name, method, seed)
        if method == "scrub":
            return scrub_network(orig, X[w], y[w], X[u], **p)
        return descend(orig, X[w], y[w], (X[u], y[u]) if method == "neggrad" else None, **p)
    rng = np.random.default_rng([seed, STREAM, 3])
    lam = fam.lam
    if method == "scrub":
        return scrub(orig, X[w], y[w], X[u], lam, rng, f.scrub_budget(sc.name))
    if method == "emse":
        return L.emse_unlearn(orig, X[w], y[w], X[u], y[u], lam,
                              max_iter=int(setting.get("epochs", fam.emse_iter)))
    if method == "newton":
        return L.newton_removal(orig, X[w], y[w], lam)[0]
    if method == "pru":
        d = rows[2]
        return L.projective_residual_update(orig, X[d], y[d], np.isin(d, u), lam)
    budget = f.sgd_budget(sc.name, method)
    if method == "finetune":
        return L.finetune(orig, X[w], y[w], lam, rng, budget)
    if method == "neggrad":
        return L.neggrad_plus(orig, X[w], y[w], X[u], y[u], lam, rng, budget,
                              alpha=f.setting(sc.name, method, "alpha"))
    return L.random_relabel(orig, X[w], y[w], X[u], y[u], lam, rng, budget)
