"""Head-to-head comparison of unlearning methods, and the empirical ε gap.

``run`` trains every method of one model family on several forget sets and estimates
each one's ε against N independent reference models, next to its own floor (see
``docs/compare.md``). Families: ``linear`` (L2 logistic regression: retrain, SISA,
Newton with and without noise, the PRU, EMSE, fine-tune, NegGrad+, random relabelling,
do nothing) and ``torch`` (an MLP: retrain, SISA, fine-tune, NegGrad+, do nothing).
"""

from sisa.compare.data import SCENARIOS
from sisa.compare.head2head import run
from sisa.compare.methods.linear_family import METHODS, LinearFamily
from sisa.compare.methods.torch_family import TorchFamily
from sisa.compare.options import CompareOptions
from sisa.compare.report.report import CompareReport
from sisa.compare.stats.epsilon import max_epsilon, per_example_epsilon
from sisa.compare.stats.intervals import detectable_shift, epsilon_interval, permutation_pvalue
from sisa.compare.stats.scores import (
    final_score,
    forgetting_quality,
    logit_confidence,
    residual,
    summarize,
)

__all__ = [
    "METHODS",
    "SCENARIOS",
    "CompareOptions",
    "CompareReport",
    "LinearFamily",
    "TorchFamily",
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
