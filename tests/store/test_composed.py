"""``store.rows`` and ``store.audit``: the read side as composed objects, each built from
exactly what it reads (a location and a manifest), not mixins reaching into their host."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sisa import IngestOptions, Store
from sisa.store.io.fs import Location
from sisa.store.read.audit_keys import AuditKeys
from sisa.store.read.reading import RowReader
from tests.helpers import make_classification


@pytest.fixture
def store(tmp_path):
    X, y = make_classification(600, 3, n_classes=3)
    return Store.create(tmp_path / "s", X, y, options=IngestOptions(n_shards=3, n_slices=2))


def test_the_store_is_no_mixin_and_its_readers_stand_alone(store):
    assert Store.__mro__ == (Store, object)
    assert not any(hasattr(store, m) for m in ("read_slice", "locate", "audit_key", "signer"))
    alone = RowReader(Location(store.uri), Store.open(store.uri).manifest)
    for s in range(3):
        for r in range(2):
            a, b = alone.read_slice(s, r), store.rows.read_slice(s, r)
            assert np.array_equal(a.X, b.X) and a.ids.tolist() == b.ids.tolist()
    found, shard, _ = alone.locate([0, 5, 10_000])
    assert found.tolist() == [True, True, False] and len(shard) == 2
    assert alone.classes() == store.rows.classes() == [0, 1, 2]
    keys = AuditKeys(Location(store.uri), store.manifest)
    assert keys.signer is None and keys.key() == store.audit.key()
    assert keys.id_hashes([3]) == store.audit.id_hashes([3]) and len(keys.id_hashes([3])[0]) == 16


def test_a_reader_sees_the_state_it_was_made_from(store):
    before = store.rows
    store.delete([0])
    assert before.locate([0])[0].tolist() == [True]  # its manifest: the old generation's
    assert store.rows.locate([0])[0].tolist() == [False]


def test_the_audit_key_is_read_once_per_store_and_never_pickled(store, monkeypatch):
    reads = []
    real = Location.read_bytes
    monkeypatch.setattr(Location, "read_bytes",
                        lambda self, rel: reads.append(rel) or real(self, rel))
    key = store.audit.key()
    assert store.audit.key() == key and store.audit.has_key() and len(reads) == 1
    state = store.__getstate__()
    assert state["_key"] is None and state["_audit_key"] is None and "_keys" not in state
    assert key.hex() not in repr(state) and key not in pickle.dumps(store)
    back = pickle.loads(pickle.dumps(store))
    assert back.audit.key() == key and len(reads) == 2  # a fresh cache reads it again
