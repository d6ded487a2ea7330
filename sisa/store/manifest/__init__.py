"""The manifest: the store's commit point.

``entries`` (the typed file entries: slices, checkpoints, buckets, leaf references),
``plan`` (what a deletion invalidates) and ``codec`` (canonical JSON, roots and leaves on
disk) at the bottom; ``pages`` (page leaves, the fingerprint); ``model`` (:class:`Manifest`,
an immutable state changed by its ``with_*`` methods); ``build`` (new, inline and upgraded
manifests, and :func:`write` / :func:`load`). Imports only point down that list.
"""

from .build import from_flat, initial, load, upgrade, write
from .codec import FORMAT, MANIFEST, canonical_json, exists, key_cell, slice_key, wrong_key
from .entries import Blob, BucketFile, CheckpointFile, LeafRef, ShardRef, SliceFile
from .model import Manifest, now_iso
from .pages import PAGE, fingerprint
from .plan import RetrainPlan

__all__ = ["FORMAT", "MANIFEST", "PAGE", "Blob", "BucketFile", "CheckpointFile", "LeafRef",
           "Manifest", "RetrainPlan", "ShardRef", "SliceFile", "canonical_json", "exists",
           "fingerprint", "from_flat", "initial", "key_cell", "load", "now_iso", "slice_key",
           "upgrade", "write", "wrong_key"]
