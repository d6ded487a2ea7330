"""scikit-learn's common estimator checks, run on the SISA estimators."""

from __future__ import annotations

from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.utils.estimator_checks import parametrize_with_checks

from sisa import SISAClassifier, SISARegressor

# In-process backend: these checks fit hundreds of tiny models; Ray adds nothing here
# (tests/engine/test_engine.py shows both backends give identical bytes).
ESTIMATORS = [
    SISAClassifier(SGDClassifier(loss="log_loss"), n_shards=2, n_slices=2, backend="local"),
    SISAClassifier(SGDClassifier(), n_shards=2, n_slices=2, aggregation="hard", backend="local"),
    SISARegressor(SGDRegressor(), n_shards=2, n_slices=2, backend="local"),
]

EXPECTED_FAILURES: dict = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILURES)
def test_sklearn_compatible(estimator, check):
    check(estimator)
