"""Exceptions raised by sisa.

Every message says what is wrong and how to fix it, in one line, so the CLI can
print it as is.
"""

from __future__ import annotations


class SisaError(Exception):
    """Base class of every error sisa raises on purpose."""


class InputError(SisaError, ValueError):
    """The caller's data or arguments are not usable (shape, dtype, NaN, ids...)."""


class UnknownIdError(InputError, KeyError):
    """Some sample ids were never in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class KeyFileError(InputError):
    """The signing key an operation needs is missing, wrong, or unsafe to use."""


class StoreError(SisaError):
    """The store on disk cannot be used as it is."""


class LocationError(StoreError, InputError):
    """The path or URI given names no store, or no place a store can be (a usage error)."""


class CorruptStoreError(StoreError):
    """A file is missing, or its bytes do not match the hash the manifest records."""


class UntrustedCodeError(CorruptStoreError):
    """A store names code sisa will not run: a pickle global or estimator class outside
    its allow-list (see :mod:`sisa.engine.safe_pickle`)."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class StaleModelError(StoreError):
    """The store has an unfinished forget; its checkpoints may have seen deleted rows."""


class MissingDatasetError(SisaError, FileNotFoundError):
    """A built-in dataset's package is not installed."""
