"""What one slice of training does: the per-slice schedule and its seeds.

Seeds derive from (random_state, shard, slice, pass) alone, so training a shard
twice on the same rows gives byte-identical checkpoints, and a shard retrained
from checkpoint k-1 after a forget continues exactly as a fresh fit would.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn import config_context
from sklearn.base import clone, is_classifier

from ..errors import InputError

SCHEDULES = ("streaming", "cumulative")


def derive_seed(random_state: int, shard: int, sl: int, step: int = 0) -> int:
    """A 31-bit seed for (shard, slice, pass), independent of everything else."""
    ss = np.random.SeedSequence([int(random_state), int(shard), int(sl), int(step)])
    return int(ss.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def resolve_epochs(estimator, epochs: int | str) -> int:
    """``"auto"``: one pass for naive Bayes (its partial_fit adds counts, so a second
    pass would double them), five passes for gradient-based models."""
    if epochs == "auto":
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        return 1 if type(final).__module__.startswith("sklearn.naive_bayes") else 5
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 1:
        raise InputError(f"epochs must be an integer >= 1 or 'auto', got {epochs!r}")
    return int(epochs)


def is_incremental(estimator) -> bool:
    return hasattr(estimator, "partial_fit")


def warn_refit_once(estimator) -> None:
    warnings.warn(
        f"{type(estimator).__name__} has no partial_fit: each shard model is refit from "
        "scratch on all of its shard's rows (one checkpoint per shard), so slicing saves "
        "nothing: n_slices=1 costs the same to fit and to forget (sharding still saves)",
        UserWarning,
        stacklevel=3,
    )


@dataclass(frozen=True)
class Schedule:
    """How a shard model advances through its slices.

    ``streaming`` (default): at slice r, ``epochs`` passes over slice r's own rows,
    continuing from checkpoint r-1. A full shard costs ``epochs`` passes over its
    rows; a forget in slice k costs the passes over slices k..R-1.

    ``cumulative`` (the SISA paper's): at slice r, ``max(1, round(2*epochs/(R+1)))``
    passes over slices 0..r, so the whole schedule costs about ``epochs`` passes over
    the shard, as unsliced training would, and every slice gets at least one pass.

    Estimators without ``partial_fit`` ("refit" models) train only what is served: one
    fit on all the shard's slices at slice R-1, seeded for slice R-1, and one checkpoint.
    No later step could resume from an earlier refit, so none is made: a forget in any
    slice refits the shard once.
    """

    name: str
    epochs: int
    n_slices: int
    incremental: bool

    def slices_for(self, sl: int) -> range:
        """Which slices' rows the step at slice ``sl`` trains on."""
        if self.incremental and self.name == "streaming":
            return range(sl, sl + 1)
        return range(sl + 1)

    def steps(self, start: int = 0) -> range:
        """The slices whose checkpoints a shard trained from slice ``start`` writes: every
        slice from ``start`` on, or for a refit model only the last (whatever ``start``)."""
        return range(start, self.n_slices) if self.incremental else \
            range(self.n_slices - 1, self.n_slices)

    def resume_from(self, start: int) -> int | None:
        """The checkpoint a shard trained from slice ``start`` continues from, or None (from
        scratch: ``start`` 0, or a refit model, which never resumes)."""
        return start - 1 if self.incremental and start > 0 else None

    def passes(self) -> int:
        if not self.incremental:
            return 1
        if self.name == "streaming":
            return self.epochs
        return max(1, round(2 * self.epochs / (self.n_slices + 1)))

    def rows(self, slice_rows, start: int = 0) -> int:
        """Rows processed when a shard with these slice sizes trains slices start..R-1."""
        return sum(sum(slice_rows[i] for i in self.slices_for(r)) * self.passes()
                   for r in self.steps(start))

    def step(self, model, prototype, X, y, classes, random_state: int, shard: int, sl: int):
        """Advance ``model`` (None = untrained) by one slice; returns the new model."""
        if len(y) == 0:
            return model  # nothing to learn; the checkpoint repeats the previous state
        # Rows were validated at ingest; skip sklearn's per-call re-validation.
        with config_context(assume_finite=True, skip_parameter_validation=True):
            return self._step(model, prototype, X, y, classes, random_state, shard, sl)

    def _step(self, model, prototype, X, y, classes, random_state, shard, sl):
        if not self.incremental:
            est = clone(prototype)
            _set_seed(_seeded(est), derive_seed(random_state, shard, sl))
            return est.fit(X, y)
        est = clone(prototype) if model is None else model
        classifier = is_classifier(prototype)
        owners = _seeded(est)
        for p in range(self.passes()):
            _set_seed(owners, derive_seed(random_state, shard, sl, p))
            # ``classes`` on the first call only, as scikit-learn's partial_fit contract
            # allows: on a later call it only re-derives the list (unique_labels, ~0.2 ms)
            # to compare it with ``classes_``, which the first call set from the same list
            if classifier and getattr(est, "classes_", None) is None:
                est.partial_fit(X, y, classes=classes)
            else:
                est.partial_fit(X, y)
        return est


def _seeded(est) -> list:
    """Every (sub-)estimator with a ``random_state`` parameter, pipelines' steps included."""
    params = est.get_params(deep=False)
    found = [est] if "random_state" in params else []
    for v in params.values():
        if hasattr(v, "get_params") and not isinstance(v, type):
            found += _seeded(v)
        elif isinstance(v, (list, tuple)):
            # Pipeline.steps, ColumnTransformer.transformers, VotingClassifier.estimators:
            # (name, estimator[, ...]) items, as tuples or as lists (a spec read from JSON
            # has no tuples: a list step left unseeded made the fit non-deterministic)
            found += [o for item in v if isinstance(item, (list, tuple))
                      for sub in item[1:2] if hasattr(sub, "get_params")
                      and not isinstance(sub, type) for o in _seeded(sub)]
    return found


def _set_seed(owners: list, seed: int) -> None:
    # sklearn stores each parameter as the attribute of the same name.
    for o in owners:
        o.random_state = seed
