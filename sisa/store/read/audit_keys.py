"""The keys of a store: who signs it, and the audit key of its keyed id hashes.

Deleted ids are remembered only as keyed hashes (tombstones, receipt digests), so the
audit log and the store leak nothing of what was forgotten. For a signed store the
audit key is derived from the owner's key file; an unsigned store keeps it in a 0600
file beside the data. Neither is ever in the manifest or a pickle.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ...errors import CorruptStoreError, KeyFileError
from .. import manifest as mf
from ..format import ids as idmod
from ..format import keys
from ..io.fs import Location


@dataclass
class KeyCache:
    """The keys a store has looked up, shared by its states (never pickled)."""

    key: keys.KeyPair | None = None  # the owner's key
    audit_key: bytes | None = None


class AuditKeys:
    """Who signs a store and the keyed hashes of its deleted ids (``store.audit``).

    Parameters
    ----------
    loc : Location
        Where the store's files are (an unsigned store's audit-key file).
    manifest : Manifest
        The state whose signer, store id and audit files are used.
    cache : KeyCache, optional
        Keys already looked up (the store keeps one across its states).
    """

    def __init__(self, loc: Location, manifest: mf.Manifest,
                 cache: KeyCache | None = None) -> None:
        self.loc, self.manifest = loc, manifest
        self._cache = KeyCache() if cache is None else cache

    @property
    def signer(self) -> str | None:
        """The hex Ed25519 public key that signs this store, or None (unsigned)."""
        return self.manifest.signer_key

    def signing_key(self) -> keys.KeyPair | None:
        """The owner's key, required to change a signed store (None for unsigned ones)."""
        if self.signer is None:
            return None
        if self._cache.key is None:
            key = keys.configured()
            if key is None or key.public_hex != self.signer:
                raise KeyFileError(mf.wrong_key(self.loc.uri, self.signer, key))
            self._cache.key = key
        return self._cache.key

    def key(self) -> bytes:
        """The key of the keyed hashes of deleted ids. Never in the manifest or a pickle:
        derived from the owner's key file for signed stores, else read from the store's
        0600 audit-key file."""
        if self._cache.audit_key is None:
            key = self.signing_key()  # None exactly when the store is unsigned
            if key is not None:
                self._cache.audit_key = key.audit_key(self._store_id())
            else:
                rel = self.manifest.audit_files()["key"]
                if not self.loc.exists(rel):
                    raise CorruptStoreError(f"the audit key file {self.loc.path(rel)} is missing: "
                                            "restore the store from backup")
                self._cache.audit_key = bytes.fromhex(
                    self.loc.read_bytes(rel).to_pybytes().decode())
        return self._cache.audit_key

    def _store_id(self) -> str:
        sid = self.manifest.store_id
        if sid is None:  # every store since format 3 has one; the audit key is per store
            raise CorruptStoreError(f"the manifest of {self.loc.uri} has no store_id: restore "
                                    "the store from backup")
        return sid

    def has_key(self) -> bool:
        """Whether this process can compute the keyed id hashes (a third party checking a
        signed store with only its public key cannot)."""
        try:
            self.key()
            return True
        except (KeyFileError, CorruptStoreError):
            return False

    def id_hashes(self, ids) -> list[bytes]:
        """Keyed hashes (16 bytes each) under which deleted ids are remembered."""
        key = self.key()
        return [hmac.new(key, b, hashlib.sha256).digest()[:16] for b in
                idmod.id_bytes(idmod.to_store_ids(ids, self.manifest.id_type))]
