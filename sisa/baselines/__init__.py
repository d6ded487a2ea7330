"""Approximate-unlearning baselines that sisa compares its exact unlearning against.

Modules
-------
emse_objectives
    The EMSE objectives and their gradients.
emse
    :class:`EMSEUnlearner` and :class:`EMSEClassifierUnlearner`, which minimize them.
certificate
    :func:`certified_epsilon`, the (ε, δ) of a Newton removal.
newton
    :class:`CertifiedRemovalClassifier` and :class:`CertifiedRemovalRegressor`.
linear
    The L2 logistic family of ``sisa compare`` and every unlearning method run on it.
"""

from __future__ import annotations

from sisa.baselines.certificate import certified_epsilon
from sisa.baselines.emse import EMSEClassifierUnlearner, EMSEUnlearner
from sisa.baselines.emse_objectives import emse_classifier_objective, emse_objective, resolve_c
from sisa.baselines.linear import L2LogisticRegression
from sisa.baselines.newton import CertifiedRemovalClassifier, CertifiedRemovalRegressor

__all__ = [
    "CertifiedRemovalClassifier",
    "CertifiedRemovalRegressor",
    "EMSEClassifierUnlearner",
    "EMSEUnlearner",
    "L2LogisticRegression",
    "certified_epsilon",
    "emse_classifier_objective",
    "emse_objective",
    "resolve_c",
]
