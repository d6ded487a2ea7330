"""Approximate-unlearning baselines that sisa compares its exact unlearning against."""

from __future__ import annotations

from sisa.baselines.emse import (
    EMSEClassifierUnlearner,
    EMSEUnlearner,
    emse_classifier_objective,
    emse_objective,
    resolve_c,
)
from sisa.baselines.linear import L2LogisticRegression
from sisa.baselines.newton import (
    CertifiedRemovalClassifier,
    CertifiedRemovalRegressor,
    certified_epsilon,
)

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
