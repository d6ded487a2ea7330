"""Head-to-head comparison of unlearning methods, and the empirical ε gap.

``run`` trains retrain / SISA / Newton certified removal / EMSE / the untouched
original on one split and one model family, measures cost and metrics, and estimates
per-row ε against N models per side (see ``docs/compare.md``).
"""

from sisa.compare.epsilon import (
    forgetting_quality,
    logit_confidence,
    max_epsilon,
    per_example_epsilon,
    residual,
    summarize,
)
from sisa.compare.gap import GapResult, run_gap
from sisa.compare.report import CompareReport
from sisa.compare.run import METHODS, run

__all__ = [
    "METHODS",
    "CompareReport",
    "GapResult",
    "forgetting_quality",
    "logit_confidence",
    "max_epsilon",
    "per_example_epsilon",
    "residual",
    "run",
    "run_gap",
    "summarize",
]
