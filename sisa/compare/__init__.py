"""Head-to-head comparison of unlearning methods, and the empirical ε gap.

``run`` trains ten methods (retrain, SISA, Newton with and without noise, the PRU,
EMSE, fine-tune, NegGrad+, random relabelling, do nothing) on one model family and
several forget sets, and estimates each one's ε against N independent reference models,
next to its own floor (see ``docs/compare.md``).
"""

from sisa.compare.data import SCENARIOS
from sisa.compare.epsilon import max_epsilon, per_example_epsilon
from sisa.compare.head2head import run
from sisa.compare.intervals import detectable_shift, epsilon_interval, permutation_pvalue
from sisa.compare.linear_family import METHODS
from sisa.compare.report import CompareReport
from sisa.compare.scores import (
    final_score,
    forgetting_quality,
    logit_confidence,
    residual,
    summarize,
)

__all__ = [
    "METHODS",
    "SCENARIOS",
    "CompareReport",
    "detectable_shift",
    "epsilon_interval",
    "final_score",
    "forgetting_quality",
    "logit_confidence",
    "max_epsilon",
    "per_example_epsilon",
    "permutation_pvalue",
    "residual",
    "run",
    "summarize",
]
