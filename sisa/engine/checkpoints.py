"""Checkpoints: pickled shard models, loaded only when the manifest vouches for them.

Why pickle and not ``skops.io``: the checkpoint must round-trip *every* attribute
of any scikit-learn estimator bit for bit (optimizer state, RandomState, Cython loss
objects) so a retrain from it is byte-identical to an uninterrupted fit; skops
refuses types it does not know and needs per-type trust lists. Pickle's risk is
running code from an untrusted file, so sisa never unpickles a file unless its
sha256 matches the manifest, which sisa itself wrote. A store is therefore as
trustworthy as its manifest: do not open stores from people you do not trust.
"""

from __future__ import annotations

import hashlib
import io
import pickle

from .._version import __version__
from ..errors import SisaError
from ..store.store import Store, canonical_json, slice_key


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


def load_verified(store: Store, meta: dict):
    """Unpickle a blob after checking its hash against the manifest entry."""
    return pickle.loads(store.get_blob(meta))  # get_blob raises on any mismatch


def checkpoint_dir(shard: int, sl: int) -> str:
    return f"checkpoints/shard={shard:04d}/slice={sl:03d}"


def lineage(store: Store, shard: int, sl: int) -> str:
    """What checkpoint (shard, sl) must have been trained on, as one hash: the data of
    slices 0..sl, the estimator (class, params, pickled prototype), the seed, the
    schedule and sisa's version."""
    model = store.manifest["model"]
    payload = {
        "slices": [store.slice_hash(shard, r) for r in range(sl + 1)],
        "estimator": model["estimator"]["sha256"],
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


def checkpoint_meta(store: Store, shard: int, sl: int) -> dict | None:
    return store.manifest["model"]["checkpoints"].get(slice_key(shard, sl))
