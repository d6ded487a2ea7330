"""Rows → shards/slices: the Arrow-backed store that holds the training data."""

from .format.assign import AssignmentConfig, assign, keyed_hash
from .manifest import Manifest, RetrainPlan
from .read.reading import SliceData
from .store import Store
from .write.deletion import DeleteResult
from .write.options import IngestOptions
from .write.text import CsvOptions

__all__ = ["AssignmentConfig", "CsvOptions", "DeleteResult", "IngestOptions", "Manifest",
           "RetrainPlan", "SliceData", "Store", "assign", "keyed_hash"]
