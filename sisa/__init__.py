"""sisa: exact machine unlearning with sharded, isolated, sliced, aggregated training."""

from ._version import __version__
from .store import Store

__all__ = ["Store", "__version__"]
