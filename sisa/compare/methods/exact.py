"""SISA as one of the compared methods, for any model family.

A SISA ensemble of the family's model is fit on D in a throwaway store, then told to
``forget(U)``; on the checked seeds its checkpoints are compared byte for byte with a
SISA fit on W with the same seed (the proof of exactness). Its ε statistic is the
log-odds of the soft vote, from the shards' logits.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import log_expit, logsumexp

from sisa.estimators import SISAClassifier

__all__ = ["SisaSetup", "checkpoint_hashes", "ensemble_logit"]

# SISA's throwaway stores live in memory where there is a tmpfs: the store fsyncs every
# commit for durability, which here is pure cost (a third of a fit on disk).
_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def checkpoint_hashes(model: SISAClassifier) -> dict[str, str]:
    """``{"shard/slice": sha256}`` of a fitted SISA model's checkpoints."""
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


def ensemble_logit(models: list, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Log-odds of the true class under the soft vote of binary shard models.

    ``log p_y - log(1 - p_y)`` with ``p = mean σ(z_s)``, computed from the shards'
    logits by log-sum-exp, so it is never clamped by rounding ``1 - p`` to 0. A shard
    that saw one class only votes with a logit of ±50.
    """
    s = np.where(np.asarray(y) > 0, 1.0, -1.0)
    live = [m for m in models if m is not None]
    z = np.stack([m.decision_function(X) if len(m.classes_) == 2 else
                  np.full(len(X), 50.0 if m.classes_[0] == 1 else -50.0) for m in live])
    return logsumexp(log_expit(s * z), axis=0) - logsumexp(log_expit(-s * z), axis=0)


@dataclass(frozen=True)
class SisaSetup:
    """A family's SISA: its shard model and S x R.

    Attributes
    ----------
    estimator : estimator
        The unfitted shard model (the family's own model).
    n_shards, n_slices : int
    epochs : int or "auto"
        Passes per slice for a ``partial_fit`` model (see :class:`SISAClassifier`).
    """

    estimator: object
    n_shards: int
    n_slices: int
    epochs: int | str = "auto"

    def _model(self, seed: int, store: str) -> SISAClassifier:
        return SISAClassifier(self.estimator, n_shards=self.n_shards, n_slices=self.n_slices,
                              store=store, random_state=seed, backend="local",
                              epochs=self.epochs)

    def fit(self, X: np.ndarray, y: np.ndarray, ids: np.ndarray, seed: int) -> SISAClassifier:
        """A SISA fit of rows ``ids`` (``X``, ``y`` are those rows) in a throwaway store."""
        with tempfile.TemporaryDirectory(prefix="sisa-compare-", dir=_TMP) as tmp, \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*partial_fit.*")
            return self._model(seed, tmp).fit(X, y, sample_ids=ids)

    def unlearn(self, X: np.ndarray, y: np.ndarray, d: np.ndarray, u: np.ndarray, seed: int,
                check_rows: np.ndarray | None = None) -> tuple[SISAClassifier, float, dict]:
        """Fit on rows ``d`` of (X, y), then ``forget(u)``.

        Parameters
        ----------
        X, y : ndarray
            All of D; ``d`` and ``u`` index it.
        d, u : ndarray of int
            The rows of this seed's D, and U (a subset of ``d``).
        seed : int
        check_rows : ndarray of int, optional
            The rows of W for the byte check: a fit on them with the same seed must have
            the forgotten model's checkpoints, byte for byte.

        Returns
        -------
        (SISAClassifier, float, dict)
            The model after the forget, the forget's wall time, and ``sisa_fit_s``,
            ``sisa_rows_retrained`` and (checked) ``sisa_byte_identical``.
        """
        extra = {}
        with tempfile.TemporaryDirectory(prefix="sisa-compare-", dir=_TMP) as tmp, \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*partial_fit.*")
            t0 = time.perf_counter()
            model = self._model(seed, tmp).fit(X[d], y[d], sample_ids=d)
            extra["sisa_fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            receipt = model.forget(u, progress=False)
            forget_s = time.perf_counter() - t0
            extra["sisa_rows_retrained"] = int(receipt["rows_retrained"])
            if check_rows is not None:
                ref = self.fit(X[check_rows], y[check_rows], check_rows, seed)
                extra["sisa_byte_identical"] = checkpoint_hashes(model) == checkpoint_hashes(ref)
        return model, forget_s, extra
