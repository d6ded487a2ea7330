"""Rows → shards/slices: the Arrow-backed store that holds the training data."""

from .assign import AssignmentConfig, assign, keyed_hash
from .store import DeleteResult, SliceData, Store

__all__ = ["AssignmentConfig", "DeleteResult", "SliceData", "Store", "assign", "keyed_hash"]
