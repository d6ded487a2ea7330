"""Rows → shards/slices: the Arrow-backed store that holds the training data."""

from .format.assign import AssignmentConfig, assign, keyed_hash
from .manifest import Manifest, RetrainPlan
from .read.reading import SliceData
from .store import Store
from .write.deletion import DeleteResult

__all__ = ["AssignmentConfig", "DeleteResult", "Manifest", "RetrainPlan", "SliceData", "Store",
           "assign", "keyed_hash"]
