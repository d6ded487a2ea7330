"""Approximate-unlearning baselines that sisa compares its exact unlearning against."""

from __future__ import annotations

from sisa.baselines.emse import (
    EMSEClassifierUnlearner,
    EMSEUnlearner,
    emse_classifier_objective,
    emse_objective,
    resolve_c,
)

__all__ = [
    "EMSEClassifierUnlearner",
    "EMSEUnlearner",
    "emse_classifier_objective",
    "emse_objective",
    "resolve_c",
]
