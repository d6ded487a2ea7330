"""Rows → shards/slices: the Arrow-backed store that holds the training data."""

from .assign import AssignmentConfig, assign, keyed_hash
from .deletion import DeleteResult
from .manifest import Manifest, RetrainPlan
from .reading import SliceData
from .store import Store

__all__ = ["AssignmentConfig", "DeleteResult", "Manifest", "RetrainPlan", "SliceData", "Store",
           "assign", "keyed_hash"]
