"""The aggregate in one vectorized pass: shard models stacked by family.

:func:`build` looks at the fitted shard models' types and shapes and, when every live
shard belongs to a family with a stacked form (:mod:`.families`, :mod:`.torch_family`),
returns a :class:`Stacked` that answers ``vote``/``mean_proba``/``regress`` as the
per-shard loop in :mod:`sisa.aggregate` does, with one product per layer for all shards.
Otherwise (trees, boosting, k-NN, anything not recognised) it returns None and the loop
serves. The stacked form is derived from the loaded checkpoints, rebuilt whenever they
are (fit, load, forget, refresh), and never stored.

Shards are grouped by (family, shapes, classes): a shard refit without some class forms
its own group whose columns map onto the full class list, as ``aligned_proba`` does.
"""

from __future__ import annotations

import copy

import numpy as np

from . import families, gemm
from .torch_family import TorchNet

_FAMILIES = (families.Linear, families.MLP, families.GaussianBayes, TorchNet)
_ELEMENTS = 1 << 22  # shards x rows x widest layer per pass: bounds the temporary arrays
# True: every family answers with the loop's bits. False (default): binary logistic
# ensembles in float64 take one product for all shards (gemm.LogisticMean), within
# gemm.bound of the loop and 2.4-3x faster at S = 256 (docs/benchmarks.md); read at build
EXACT = False


def _family(m):
    """(family, pipeline scalers key, family key), or None when no stacked form fits."""
    scalers = families.Scalers.key(m)
    final = m.steps[-1][1] if scalers is not None else m
    for fam in _FAMILIES:
        try:
            k = fam.key(final)
        except AttributeError:  # an unfitted or unusual model: the loop decides
            return None
        if k is not None:
            return fam, scalers, k
    return None


class _Group:
    """Shards of one family, shape and class list, with their place in the ensemble."""

    def __init__(self, fam, models: list, positions: list[int], classes, scaled: bool):
        finals = [m.steps[-1][1] for m in models] if scaled else models
        self.form = fam(finals)
        self.scalers = families.Scalers(models) if scaled else None
        self.positions = np.asarray(positions)
        own = getattr(finals[0], "classes_", None)
        self.cols = None if classes is None or own is None else np.searchsorted(classes, own)
        # values per row per shard in the widest temporary array of a pass
        self.width = max(self.form.width, self.scalers.width if scaled else 0)

    def raw(self, X: np.ndarray) -> np.ndarray:
        if self.scalers is not None:
            X = self.scalers.transform(X, len(self.positions))
        return self.form.raw(X)


class Stacked:
    """The shard models of one ensemble, stacked; see the module docstring."""

    def __init__(self, models: list, classes, groups: list[_Group], keys: list[tuple]):
        self.models = tuple(models)  # every shard, None included: what this was built from
        self.keys = keys  # each live model's family key, in order (reused by a rebuild)
        self.n_live = sum(m is not None for m in models)
        self.classes, self.groups = classes, groups
        self.chunk = max(1, _ELEMENTS // (self.n_live * max(g.width for g in groups)))
        g = groups[0]
        self.fast = (gemm.LogisticMean(g.form) if not EXACT and len(groups) == 1
                     and g.scalers is None and gemm.fits(g.form, g.cols, self.n_live)
                     else None)

    def serves(self, models: list, X) -> bool:
        """Whether this stacked form was built from exactly ``models`` (a model reloaded
        or replaced since is another object) and ``X`` is a dense float matrix."""
        return (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind == "f"
                and len(models) == len(self.models)
                and all(a is b for a, b in zip(models, self.models, strict=True)))

    def _chunks(self, X):
        for start in range(0, max(X.shape[0], 1), self.chunk):
            yield X[start:start + self.chunk]

    def mean_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean of the shard probabilities; summed over the shards in shard order, as
        ``sum()`` over the loop does (binary logistic: :mod:`.gemm`, within its bound)."""
        if self.fast is not None:
            return self.fast.mean_proba(X)
        out = []
        for Xc in self._chunks(X):
            groups = [(g, g.form.proba(g.raw(Xc))) for g in self.groups]
            if len(groups) == 1 and np.array_equal(groups[0][0].cols,
                                                   np.arange(len(self.classes))):
                P = groups[0][1]
            else:
                P = np.zeros((self.n_live, Xc.shape[0], len(self.classes)))
                for g, p in groups:
                    P[g.positions[:, None], :, g.cols[None, :]] = p.transpose(0, 2, 1)
            out.append(P.sum(axis=0) / self.n_live)
        return np.concatenate(out)

    def vote(self, X: np.ndarray) -> np.ndarray:
        """Majority vote; ties go to the class listed first."""
        C, out = len(self.classes), []
        for Xc in self._chunks(X):
            n = Xc.shape[0]
            idx = np.empty((self.n_live, n), dtype=np.intp)
            for g in self.groups:
                idx[g.positions] = g.cols[g.form.index(g.raw(Xc))]
            flat = (np.arange(n)[None, :] * C + idx).ravel()
            counts = np.bincount(flat, minlength=n * C).reshape(n, C)
            out.append(self.classes[counts.argmax(axis=1)])
        return np.concatenate(out)

    def regress(self, X: np.ndarray, how: str) -> np.ndarray:
        """Mean or median over the shards of an (S, n) stack, as the loop's."""
        out = []
        for Xc in self._chunks(X):
            values = [(g, g.form.values(g.raw(Xc))) for g in self.groups]
            # the dtype np.stack of the shard predictions has (float32 models: float32)
            preds = np.empty((self.n_live, Xc.shape[0]),
                             dtype=np.result_type(*(v for _, v in values)))
            for g, v in values:
                preds[g.positions] = v
            out.append(np.median(preds, axis=0) if how == "median" else preds.mean(axis=0))
        return np.concatenate(out)


def build(models: list, classes=None, previous: Stacked | None = None) -> Stacked | None:
    """The stacked form of these shard models, or None when the loop must serve.

    Parameters
    ----------
    models : list
        The shard models (None for an empty shard), as ``estimators_``.
    classes : ndarray, default=None
        The ensemble's classes (None for a regressor).
    previous : Stacked, optional
        The stacked form of the models these replace (a forget's reload): models that
        are the same objects keep their family keys, and groups none of whose models
        changed are reused; the result is the one a build from scratch gives.
    """
    try:
        return _build(models, classes, _reusable(previous, models, classes))
    except (AttributeError, TypeError, ValueError, IndexError):
        # a model whose fitted attributes are not what its type promises (a forged or
        # foreign checkpoint): the loop serves, and reports its own error if it has one
        return None


def _reusable(previous: Stacked | None, models: list, classes) -> Stacked | None:
    """``previous`` if its shards line up with ``models`` (the same count, the same empty
    shards, the same classes), else None."""
    if previous is None or len(previous.models) != len(models):
        return None
    if any((a is None) != (b is None) for a, b in zip(previous.models, models, strict=True)):
        return None
    same = (classes is None and previous.classes is None) or (
        classes is not None and previous.classes is not None
        and np.array_equal(classes, previous.classes))
    return previous if same else None


def _build(models: list, classes, previous: Stacked | None = None) -> Stacked | None:
    live = [m for m in models if m is not None]
    if not live:
        return None
    old = [] if previous is None else [m for m in previous.models if m is not None]
    changed = [i for i, m in enumerate(live) if not old or m is not old[i]]
    keys = list(previous.keys) if previous is not None else [None] * len(live)
    for i in changed:
        keys[i] = _family(live[i])
        if keys[i] is None:
            return None
    by_key: dict[tuple, list[int]] = {}
    for i, fk in enumerate(keys):
        by_key.setdefault(fk, []).append(i)
    reuse = {} if previous is None else {
        (previous.keys[g.positions[0]], tuple(g.positions.tolist())): g for g in previous.groups}
    groups = []
    for fk, positions in by_key.items():
        fam, scalers, _ = fk
        group = _regrouped(reuse.get((fk, tuple(positions))), live, positions, set(changed))
        if group is None:
            group = _Group(fam, [live[i] for i in positions], positions, classes,
                           scalers is not None)
        if (classes is None) != group.form.regressor:
            return None
        groups.append(group)
    return Stacked(models, classes, groups, keys)


def _regrouped(group: _Group | None, live: list, positions: list[int],
               changed: set[int]) -> _Group | None:
    """``group`` (the same shards, under the same key before) with its changed models
    replaced, or None to build the group anew."""
    if group is None:
        return None
    at = {j: live[i] for j, i in enumerate(positions) if i in changed}
    if not at:
        return group
    if group.scalers is not None or not hasattr(group.form, "replaced"):
        return None
    new = copy.copy(group)
    new.form = group.form.replaced(at)
    return new
