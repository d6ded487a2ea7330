"""A store's keys (sisa.store.read.audit_keys): who signs it, where its audit key comes from,
and the keyed id hashes deleted ids are remembered under, on real stores in tmp_path and on
the committed stores of tests/data (copied first).

Through the Store's key methods (``_audit(store)``, so the tests keep working when they move
to a composed ``store.audit``)."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from sisa import IngestOptions, Store
from sisa.errors import CorruptStoreError, InputError, KeyFileError
from sisa.store.format import keys

DATA = Path(__file__).parents[1] / "data"
V4_SIGNER = "5d060d2820aeba9067d84ebf963c6a696a772f1acd13ab73dd5b6f176cfaf383"  # data/README.md


def _audit(store: Store):
    """What holds a store's keys (``store.audit``)."""
    return store.audit


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    """No key configured anywhere (and none read from the real $HOME)."""
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.delenv(keys.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _use_key(monkeypatch, path: Path) -> keys.KeyPair:
    """A new owner key saved at ``path`` and configured through $SISA_KEY_FILE."""
    key = keys.generate()
    keys.save(key, path)
    monkeypatch.setenv(keys.KEY_FILE_ENV, str(path))
    return key


def _store(path: Path, *, string_ids: bool = False) -> Store:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), np.arange(200) % 2
    ids = [f"{i}" for i in range(200)] if string_ids else np.arange(200)
    return Store.create(str(path), X, y, sample_ids=ids,
                        options=IngestOptions(n_shards=2, n_slices=2))


def _store_bytes(root: Path, but: str | None = None) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*"))
                    if p.is_file() and p.name != but)


def test_an_unsigned_store_reads_its_audit_key_from_its_private_file(tmp_path, no_key):
    store = _store(tmp_path / "s")
    audit = _audit(store)
    assert audit.signer is None and audit.signing_key() is None and audit.has_key()
    rel = store.manifest.audit_files()["key"]
    path = tmp_path / "s" / rel
    key = audit.key()
    assert len(key) == 32 and bytes.fromhex(path.read_text()) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The key is in its own file only: no manifest, leaf or data file holds it.
    rest = _store_bytes(tmp_path / "s", but=path.name)
    assert key.hex().encode() not in rest and key not in rest
    assert _audit(Store.open(str(tmp_path / "s"))).key() == key  # kept across opens


def test_a_missing_audit_key_file_is_damage_named_by_its_path(tmp_path, no_key):
    store = _store(tmp_path / "s")
    rel = store.manifest.audit_files()["key"]
    (tmp_path / "s" / rel).unlink()
    audit = _audit(Store.open(str(tmp_path / "s")))
    with pytest.raises(CorruptStoreError, match=rf"audit key file .*{rel.split('/')[-1]} is "
                                                "missing: restore the store from backup"):
        audit.key()
    assert not audit.has_key()
    with pytest.raises(CorruptStoreError):
        audit.id_hashes([3])


def test_keyed_id_hashes_are_16_bytes_per_id_keyed_per_store_and_typed(tmp_path, no_key):
    a, b = _audit(_store(tmp_path / "a")), _audit(_store(tmp_path / "b"))
    ha = a.id_hashes([5, 17, 5, 199])
    assert [len(h) for h in ha] == [16] * 4 and ha[0] == ha[2] and len(set(ha)) == 3
    assert a.id_hashes(np.array([17], dtype=np.int32)) == [ha[1]]  # any int spelling
    assert set(b.id_hashes([5, 17])).isdisjoint(ha)  # another store, another key
    s = _audit(_store(tmp_path / "c", string_ids=True))
    assert s.id_hashes(["5"]) != [hmac.new(s.key(), b"i:5", hashlib.sha256)
                                        .digest()[:16]]  # "5" is not 5
    with pytest.raises(InputError, match="strings"):
        s.id_hashes([5])  # ids of the wrong type are refused, not hashed


def test_the_hashes_match_the_tombstones_an_older_sisa_wrote(tmp_path, no_key):
    """store-v3 forgot ids 5 and 17 before this code existed: the keyed hashes of those
    ids must be its tombstones, or no old store's forgets could be checked."""
    shutil.copytree(DATA / "store-v3", tmp_path / "v3")
    assert Store.upgrade(str(tmp_path / "v3"))
    store = Store.open(str(tmp_path / "v3"))
    assert _audit(store).signer is None
    assert sorted(store.rows.read_tombstones()) == sorted(_audit(store).id_hashes([5, 17]))
    assert not set(store.rows.read_tombstones()) & set(_audit(store).id_hashes([6, 18]))


def test_a_signed_store_derives_a_per_store_audit_key_from_its_owners_key(
        tmp_path, no_key, monkeypatch):
    owner = _use_key(monkeypatch, tmp_path / "owner.key")
    one, two = _store(tmp_path / "one"), _store(tmp_path / "two")
    a1, a2 = _audit(one), _audit(two)
    assert a1.signer == a2.signer == owner.public_hex
    assert a1.signing_key().public_hex == owner.public_hex and a1.has_key()
    assert "key" not in one.manifest.audit_files()
    assert not list((tmp_path / "one" / "audit").glob("key-*"))  # nothing beside the data
    k1, k2 = a1.key(), a2.key()
    assert len(k1) == 32 and k1 != k2  # one owner secret, a key per store
    assert k1 not in _store_bytes(tmp_path / "one")
    assert k1.hex().encode() not in _store_bytes(tmp_path / "one")
    assert a1.id_hashes([5]) != a2.id_hashes([5])
    assert _audit(Store.open(str(tmp_path / "one"))).id_hashes([5]) == \
        a1.id_hashes([5])


def test_without_the_owners_key_a_signed_store_is_read_only_and_keyless(
        tmp_path, no_key, monkeypatch):
    owner = _use_key(monkeypatch, tmp_path / "owner.key")
    _store(tmp_path / "s")
    monkeypatch.delenv(keys.KEY_FILE_ENV)  # an auditor: no key at all
    audit = _audit(Store.open(str(tmp_path / "s")))
    assert audit.signer == owner.public_hex and not audit.has_key()
    with pytest.raises(KeyFileError, match=rf"signed by ed25519:{owner.public_hex[:16]}.*no "
                                           "key is configured"):
        audit.signing_key()
    other = _use_key(monkeypatch, tmp_path / "other.key")  # someone else's key
    audit = _audit(Store.open(str(tmp_path / "s")))
    with pytest.raises(KeyFileError, match=rf"your key is ed25519:{other.public_hex[:16]}"):
        audit.signing_key()
    with pytest.raises(KeyFileError):
        audit.id_hashes([1])
    assert not audit.has_key()


def test_the_committed_signed_store_names_its_signer_to_a_keyless_reader(tmp_path, no_key):
    shutil.copytree(DATA / "store-v4", tmp_path / "v4")
    audit = _audit(Store.open(str(tmp_path / "v4")))
    assert audit.signer == V4_SIGNER and not audit.has_key()
    with pytest.raises(KeyFileError, match="no key is configured"):
        audit.key()


def test_a_signed_manifest_without_a_store_id_has_no_audit_key(tmp_path, no_key, monkeypatch):
    _use_key(monkeypatch, tmp_path / "owner.key")
    store = _store(tmp_path / "s")
    flat = store.manifest.flat()
    del flat["store_id"]
    audit = _audit(Store(store.uri, flat))
    with pytest.raises(CorruptStoreError, match="has no store_id"):
        audit.key()
    assert not audit.has_key()
