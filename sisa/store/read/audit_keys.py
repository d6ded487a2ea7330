"""The keys of a store: who signs it, and the audit key of its keyed id hashes.

Deleted ids are remembered only as keyed hashes (tombstones, receipt digests), so the
audit log and the store leak nothing of what was forgotten. For a signed store the
audit key is derived from the owner's key file; an unsigned store keeps it in a 0600
file beside the data. Neither is ever in the manifest or a pickle.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

import pyarrow as pa

from ...errors import CorruptStoreError, KeyFileError
from .. import manifest as mf
from ..format import ids as idmod
from ..format import keys
from ..io.fs import Location


class AuditKeys:
    """The key methods of :class:`~sisa.store.Store` (a mixin: it needs ``manifest``,
    ``loc``, ``uri``, ``id_array``, ``_key`` and ``_audit_key``)."""

    if TYPE_CHECKING:  # what the host provides (declared for the type checker only)
        loc: Location
        _key: keys.KeyPair | None
        _audit_key: bytes | None

        @property
        def manifest(self) -> mf.Manifest: ...

        @property
        def uri(self) -> str: ...

        def id_array(self, ids) -> pa.Array: ...

    @property
    def signer(self) -> str | None:
        """The hex Ed25519 public key that signs this store, or None (unsigned)."""
        return self.manifest.signer_key

    def signing_key(self) -> keys.KeyPair | None:
        """The owner's key, required to change a signed store (None for unsigned ones)."""
        if self.signer is None:
            return None
        if self._key is None:
            key = keys.configured()
            if key is None or key.public_hex != self.signer:
                raise KeyFileError(mf.wrong_key(self.uri, self.signer, key))
            self._key = key
        return self._key

    def audit_key(self) -> bytes:
        """The key of the keyed hashes of deleted ids. Never in the manifest or a pickle:
        derived from the owner's key file for signed stores, else read from the store's
        0600 audit-key file."""
        if self._audit_key is None:
            key = self.signing_key()  # None exactly when the store is unsigned
            if key is not None:
                self._audit_key = key.audit_key(self._store_id())
            else:
                rel = self.manifest.audit_files()["key"]
                if not self.loc.exists(rel):
                    raise CorruptStoreError(f"the audit key file {self.loc.path(rel)} is missing: "
                                            "restore the store from backup")
                self._audit_key = bytes.fromhex(self.loc.read_bytes(rel).to_pybytes().decode())
        return self._audit_key

    def _store_id(self) -> str:
        sid = self.manifest.store_id
        if sid is None:  # every store since format 3 has one; the audit key is per store
            raise CorruptStoreError(f"the manifest of {self.uri} has no store_id: restore the "
                                    "store from backup")
        return sid

    def has_audit_key(self) -> bool:
        """Whether this process can compute the keyed id hashes (a third party checking a
        signed store with only its public key cannot)."""
        try:
            self.audit_key()
            return True
        except (KeyFileError, CorruptStoreError):
            return False

    def keyed_id_hashes(self, ids) -> list[bytes]:
        """Keyed hashes (16 bytes each) under which deleted ids are remembered."""
        key = self.audit_key()
        return [hmac.new(key, b, hashlib.sha256).digest()[:16]
                for b in idmod.id_bytes(self.id_array(ids))]

