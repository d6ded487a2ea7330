"""sisa: exact machine unlearning with sharded, isolated, sliced, aggregated training.

What a user imports lives here: the estimators, the store, the functions that forget,
repair and verify a store, where work runs (``ExecutionSettings``) and the error types.
"""

from ._version import __version__
from .engine.pipeline import IncrementalPipeline
from .errors import (
    CorruptStoreError,
    InputError,
    KeyFileError,
    LocationError,
    MissingDatasetError,
    SisaError,
    StaleModelError,
    StoreError,
    StoreLockedError,
    UnknownIdError,
    UntrustedCodeError,
)
from .estimators import SISAClassifier, SISARegressor
from .store import CsvOptions, IngestOptions, Store
from .tasks.settings import ExecutionSettings
from .unlearn import VerifyReport, forget, forget_groups, history, repair, verify

__all__ = [
    "CorruptStoreError",
    "CsvOptions",
    "ExecutionSettings",
    "IncrementalPipeline",
    "IngestOptions",
    "InputError",
    "KeyFileError",
    "LocationError",
    "MissingDatasetError",
    "SISAClassifier",
    "SISARegressor",
    "SisaError",
    "StaleModelError",
    "Store",
    "StoreError",
    "StoreLockedError",
    "UnknownIdError",
    "UntrustedCodeError",
    "VerifyReport",
    "__version__",
    "forget",
    "forget_groups",
    "history",
    "repair",
    "verify",
]
