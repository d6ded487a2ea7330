"""sisa: exact machine unlearning with sharded, isolated, sliced, aggregated training."""

from ._version import __version__
from .engine.pipeline import IncrementalPipeline
from .estimators import SISAClassifier, SISARegressor
from .store import Store

__all__ = ["IncrementalPipeline", "SISAClassifier", "SISARegressor", "Store", "__version__"]
