"""sisa: exact machine unlearning with sharded, isolated, sliced, aggregated training."""

from ._version import __version__
from .estimators import SISAClassifier, SISARegressor
from .store import Store

__all__ = ["SISAClassifier", "SISARegressor", "Store", "__version__"]
