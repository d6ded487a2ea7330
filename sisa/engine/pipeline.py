"""``IncrementalPipeline``: a scikit-learn Pipeline that can ``partial_fit``.

Preprocessing learned from data (a scaler's mean and variance) must live inside each
shard model: statistics computed on all rows would carry every deleted row into
every shard. Wrapping ``StandardScaler`` and the model in this pipeline keeps the
statistics in the shard's checkpoint, where a forget retrains them exactly, and
keeps slice-by-slice training incremental.
"""

from __future__ import annotations

from sklearn.pipeline import Pipeline
from sklearn.utils.metaestimators import available_if


def _all_incremental(self) -> bool:
    return all(hasattr(step, "partial_fit") for _, _, step in self._iter(with_final=True))


class IncrementalPipeline(Pipeline):
    """A Pipeline whose steps all have ``partial_fit``, and which has it too.

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import SGDClassifier
    >>> pipe = IncrementalPipeline([("scale", StandardScaler()),
    ...                             ("sgd", SGDClassifier(loss="log_loss"))])
    >>> hasattr(pipe, "partial_fit")
    True
    """

    @available_if(_all_incremental)
    def partial_fit(self, X, y=None, **params):
        """Update every transformer on ``X``, then the final estimator on the result."""
        Xt = X
        for _, _, step in self._iter(with_final=False, filter_passthrough=True):
            Xt = step.partial_fit(Xt).transform(Xt)
        self._final_estimator.partial_fit(Xt, y, **params)
        return self
