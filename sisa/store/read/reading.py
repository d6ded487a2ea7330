"""Reading a store's rows, index and tombstones (``store.rows``: :class:`RowReader`).

Every read is checked against the sha256 the manifest records, then fully validated as
Arrow (an unsigned store's manifest can be forged along with a file, and Arrow trusts a
file's offsets: :mod:`sisa.store.format.arrow_checks`); locally slices are memory-mapped, so
features reach numpy without a copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import CorruptStoreError
from ..format import columns, sparse
from ..format import ids as idmod
from ..format import index as idx
from ..format.arrow_checks import damage
from ..format.layout import FEATURES, ID, LABEL, read_ipc, slice_schema, union
from ..io.fs import Location
from ..manifest import Manifest, canonical_json

_TOMBSTONES = pa.schema([("h", pa.binary(16))])  # a keyed hash per deleted id


@dataclass
class SliceData:
    """Rows of one or more slices as numpy arrays (features are zero-copy when local); a
    store of typed columns gives its ``features`` struct as it is (see
    :func:`sisa.engine.forms.model_input` for what a model gets)."""

    X: np.ndarray | pa.StructArray
    y: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class RowReader:
    """The rows of one state of a store: slices, labels, the id index and tombstones
    (``store.rows``; every read checked as the module doc says).

    Parameters
    ----------
    loc : Location
        Where the store's files are.
    manifest : Manifest
        The state read: every read through this object sees this one generation.
    index_cache : dict, optional
        Index buckets already read, by file hash (immutable files: a store shares one
        cache across its states; only live buckets are kept).
    """

    def __init__(self, loc: Location, manifest: Manifest,
                 index_cache: dict[str, pa.Table] | None = None) -> None:
        self.loc, self.manifest = loc, manifest
        self._index_cache = {} if index_cache is None else index_cache

    @property
    def n_features(self) -> int:
        return sparse.width(self.manifest.schema)

    def _read_table(self, rel: str, sha: str, schema: pa.Schema) -> pa.Table:
        buf = self.loc.read_verified(rel, sha)
        try:
            table = read_ipc(buf)
            problem = damage(table)  # ~0.4 ms on a 100k-row slice; its hash took ~6 ms
            if not problem and not table.schema.equals(schema):
                problem = "its columns are not the ones sisa writes there"
        except (pa.ArrowException, OSError, UnicodeDecodeError):
            problem = "it is not an Arrow file"
        if problem:
            raise CorruptStoreError(
                f"file {self.loc.path(rel)} matches the manifest's hash, yet {problem}: the "
                "file and the manifest were both altered (or written by a broken writer); "
                "restore the store from backup")
        return table

    def read_slice_table(self, shard: int, sl: int) -> pa.Table:
        """One slice as an Arrow table (``sample_id, label, features``), hash-checked."""
        m = self.manifest.slice(shard, sl)
        return self._read_table(m.file, m.sha256, slice_schema(self.manifest.schema))

    def read_slice(self, shard: int, sl: int) -> SliceData:
        """One slice as numpy ``X, y, ids``; hash-checked, zero-copy over mmap locally."""
        return self._to_numpy(self.read_slice_table(shard, sl))

    def read_slices(self, shard: int, slices: Iterable[int]) -> SliceData:
        """Several slices of one shard concatenated in slice order."""
        tables = [self.read_slice_table(shard, r) for r in slices]
        return self._to_numpy(pa.concat_tables(tables) if tables else self.empty_table())

    def _to_numpy(self, table: pa.Table) -> SliceData:
        d = self.n_features
        feats = table.column(FEATURES)
        if pa.types.is_struct(feats.type):  # typed columns: categories decoded per slice
            X = columns.canonical(table.select([FEATURES])).column(FEATURES).combine_chunks()
        else:
            X = feats.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
        y = table.column(LABEL).to_numpy(zero_copy_only=False)
        ids = table.column(ID).to_numpy(zero_copy_only=False)
        return SliceData(X, y, ids)

    def empty_table(self) -> pa.Table:
        """A slice table with no rows."""
        return slice_schema(self.manifest.schema).empty_table()

    def classes(self) -> list:
        """Sorted distinct labels of the stored rows (from the manifest's per-slice label
        lists; read from the data only for slices that record none: float labels)."""
        return label_union(self)

    # ------------------------------------------------------------------ ids
    def id_array(self, ids) -> pa.Array:
        """``ids`` as this store's Arrow id array (the one id boundary:
        :mod:`sisa.store.format.ids`)."""
        return idmod.to_store_ids(ids, self.manifest.id_type)

    @property
    def index_buckets(self) -> int:
        return len(self.manifest.index_parts)

    def read_index_part(self, bucket: int) -> pa.Table:
        """One index bucket: the ids hashing to it, sorted, with their (shard, slice)."""
        m = self.manifest.index_parts[bucket]
        table = self._index_cache.get(m.sha256)
        if table is None:  # immutable file: cache by its hash, keep only live buckets
            live = {p.sha256 for p in self.manifest.index_parts}
            for sha in [k for k in self._index_cache if k not in live]:
                del self._index_cache[sha]
            table = self._index_cache[m.sha256] = self._read_table(
                m.file, m.sha256, pa.schema([(ID, idmod.arrow_type(self.manifest.id_type)),
                                                   ("shard", pa.int32()), ("slice", pa.int32())]))
        return table

    def keep_index_part(self, sha256: str, table: pa.Table) -> None:
        """Remember the index bucket this process just wrote from ``table`` under its
        file's hash: the next forget's lookup in that bucket need not read the file back
        and hash it (a small store's few buckets were each rewritten, then read, by
        every forget). Trusted as the buckets read before are: by content hash."""
        self._index_cache[sha256] = table

    def read_index(self) -> pa.Table:
        """The whole index (every bucket): ``sample_id, shard, slice``."""
        return pa.concat_tables([self.read_index_part(b) for b in range(self.index_buckets)])

    def locate(self, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where ``ids`` live: ``(found_mask, shard, slice)``, the last two for found ids
        only, in query order. Reads only the index buckets of these ids."""
        return idx.locate(self.id_array(ids), self.index_buckets, self.read_index_part)

    def read_tombstones(self, buckets: Iterable[int] | None = None) -> list[bytes]:
        """Keyed hashes of every deleted id (or of those in ``buckets``)."""
        parts = self.manifest.tombstone_parts
        names = sorted(parts, key=int) if buckets is None else [str(b) for b in buckets]
        out: list[bytes] = []
        for k in (k for k in names if k in parts):
            out += self._read_table(parts[k].file, parts[k].sha256,
                                    _TOMBSTONES).column("h").to_pylist()
        return out

    def tombstones_digest(self) -> str:
        """One hash over the tombstone files' hashes: what a receipt commits of the set of
        deleted ids (a swapped tombstone file changes it)."""
        hashes = sorted(p.sha256 for p in self.manifest.tombstone_parts.values())
        return hashlib.sha256(_string_list_json(hashes)).hexdigest()


def _string_list_json(strings: list[str]) -> bytes:
    """``canonical_json(strings)``: joined directly when every string is lowercase hex
    (nothing to escape: 2,000 tombstone buckets' hashes at 10M rows took json.dumps ~0.2
    ms), else encoded by json."""
    raw = "".join(strings)
    if raw.isascii() and not raw.encode().translate(None, b"0123456789abcdef"):
        return ('["' + '","'.join(strings) + '"]').encode() if strings else b"[]"
    return canonical_json(strings)


def label_union(rows: RowReader, kept: dict | None = None) -> list:
    """Sorted distinct labels of the stored rows, ``kept`` replacing the slices it names:
    a union of the manifest's per-slice label lists (per shard, kept by leaf hash), read
    from the data only for slices that record none (float labels)."""
    kept = kept or {}
    touched = {s for s, _ in kept}
    recorded = rows.manifest.shard_parts("labels", _recorded_labels)
    lists = []
    for s, labels in enumerate(recorded):
        if s not in touched and labels is not None:
            lists.append(labels)
            continue
        for r, meta in rows.manifest.shard_leaf(s)["slices"].items():
            table = kept.get((s, int(r)))
            if table is None and meta.labels is not None:
                lists.append(meta.labels)
            else:
                table = rows.read_slice_table(s, int(r)) if table is None else table
                lists.append(pc.unique(table.column(LABEL)).to_pylist())
    return union(lists)


def _recorded_labels(leaf: dict) -> list | None:
    """The union of a shard leaf's slice label lists; None if a slice records none."""
    lists = [m.labels for m in leaf["slices"].values()]
    return None if any(x is None for x in lists) else union(lists)
