"""Checkpoints → aggregate: ``SISAClassifier`` and ``SISARegressor``, the plain-Python,
scikit-learn face of sisa."""

from .base import FLOAT_DTYPES
from .ensembles import SISAClassifier, SISARegressor, columns_by_name, load

__all__ = ["FLOAT_DTYPES", "SISAClassifier", "SISARegressor", "columns_by_name", "load"]
