"""Checkpoints: pickled shard models, unpickled only through sisa's allow-list.

Why pickle and not ``skops.io``: the checkpoint must round-trip *every* attribute
of any scikit-learn estimator bit for bit (optimizer state, RandomState, Cython loss
objects) so a retrain from it is byte-identical to an uninterrupted fit. But a hash
in the manifest proves nothing about who wrote a file (whoever can write the store
can re-hash it), so loading never runs code from the store:

* checkpoints go through :func:`sisa.engine.safe_pickle.loads`, which calls only
  allow-listed *objects*: scikit-learn classes (not its functions), sisa's
  estimator classes, and the exact numpy / scipy.sparse reconstructors, types and
  random generators that checkpoints contain. Not whole modules: ``numpy.load``
  unpickles without limits, ``scipy.io.netcdf_file`` writes files, ``sisa.cli.main``
  runs commands. Anything else is an :class:`~sisa.errors.UntrustedCodeError`.
* the unfitted estimator is not pickled at all: the manifest holds a declarative
  spec (:mod:`sisa.engine.spec`) from which ``verify`` and ``load`` rebuild it,
  instantiating only scikit-learn estimator classes.
* a model built from your own estimator package loads when you trust that module:
  ``SISA_TRUSTED_MODULES=mypkg`` (comma-separated; a name covers its submodules).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from contextlib import contextmanager

from .._version import __version__
from ..errors import CorruptStoreError, SisaError
from ..store.manifest import Blob, canonical_json
from ..store.store import Store
from . import safe_pickle
from . import spec as _spec


def dumps(obj) -> bytes:
    """Pickle canonically: the bytes depend only on the values, not on object identity.

    Plain pickling memoizes by ``id()``: whether two equal strings are one object or
    two (interning, unpickling, cloning) changes the bytes, so the same model could
    hash differently in two processes. ``fast`` mode turns memoization off.
    """
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=5)
    pickler.fast = True
    try:
        pickler.dump(obj)
    except ValueError as exc:  # fast mode refuses reference cycles
        raise SisaError(
            f"cannot checkpoint {type(obj).__name__} canonically ({exc}): sisa needs models "
            "without reference cycles so identical models give identical bytes"
        ) from exc
    return buf.getvalue()


def load_verified(store: Store, meta: Blob):
    """Unpickle a blob after checking its hash against the manifest entry, calling only
    allow-listed globals (:func:`sisa.engine.safe_pickle.loads`)."""
    data = store.get_blob(meta)  # raises on any mismatch
    return safe_pickle.loads(data, source=f"checkpoint {store.loc.path(meta.file)}")


# sha256 -> a checkpoint just loaded by load_verified in this process and not yet used:
# each is taken once (its taker owns it: partial_fit changes it in place)
_HANDED: dict[str, object] = {}


@contextmanager
def handed_over(models: dict[str, object]):
    """Offer checkpoints loaded by :func:`load_verified` (sha256 -> model) to
    :func:`take_or_load` in this process while the block runs: a forget checks its resume
    points before any write, and its in-process retrain resumes from those very objects
    instead of reading, hashing and unpickling the files again. A task in another process
    (Ray) finds none here and loads its own. What is not taken is dropped at the end."""
    _HANDED.update(models)
    try:
        yield
    finally:
        for sha in models:
            _HANDED.pop(sha, None)


def take_or_load(store: Store, meta: Blob):
    """The checkpoint ``meta`` names: the object handed over for it (taken: a second
    taker loads its own), else :func:`load_verified`."""
    model = _HANDED.pop(meta.sha256, None)
    return load_verified(store, meta) if model is None else model


def estimator_spec(store: Store) -> dict:
    """The manifest's declarative estimator spec (no pickle: see :mod:`sisa.engine.spec`)."""
    est = store.manifest.model["estimator"]
    if "spec" not in est:
        raise CorruptStoreError(
            f"store {store.uri} records its estimator as a pickle (an older sisa), which sisa "
            "no longer loads: retrain it with `sisa train ... --overwrite`")
    return est["spec"]


def prototype(store: Store):
    """The unfitted estimator, rebuilt from the manifest's spec without running store code."""
    return _spec.from_spec(estimator_spec(store))


def estimator_hash(store: Store) -> str:
    """The hash of the store's declarative estimator spec, as :func:`lineage` has it."""
    return hashlib.sha256(canonical_json(estimator_spec(store))).hexdigest()


def lineage(store: Store, shard: int, sl: int, estimator: str | None = None) -> str:
    """What checkpoint (shard, sl) must have been trained on, as one hash: the data of
    slices 0..sl, the estimator (class, params, declarative spec), the seed, the
    schedule and sisa's version. ``estimator``: :func:`estimator_hash` of this store,
    if the caller has it (a shard task writing several checkpoints)."""
    model = store.manifest.model
    payload = {
        "slices": [store.slice_hash(shard, r) for r in range(sl + 1)],
        "estimator": estimator or estimator_hash(store),
        "estimator_class": model["estimator"]["class"],
        "params": model["estimator"]["params"],
        "classes": model["classes"],
        "schedule": model["schedule"],
        "epochs": model["epochs"],
        "random_state": store.random_state,
        "shard": shard,
        "slice": sl,
        "sisa": __version__,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()

