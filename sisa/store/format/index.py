"""The sample-id index: which (shard, slice) holds each id, split into buckets.

The index and the tombstones are split into buckets by a hash of the id (about 8k
ids per bucket, a power of two), so a forget reads and rewrites the buckets of its
ids, not files that grow with the whole store. The bucket of an id depends on the
id alone, so it never moves while the bucket count stays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .assign import keyed_hash
from .layout import ID

# ~8k ids per bucket: a forget rewrites ~130 KB of index (and hashes it), not ~1 MB
INDEX_BUCKET_ROWS = 1 << 13
MAX_INDEX_BUCKETS = 4096


def n_index_buckets(n_rows: int) -> int:
    """A power of two giving buckets of at most ~8k ids (up to 4096 buckets)."""
    b = 1
    while b * INDEX_BUCKET_ROWS < n_rows and b < MAX_INDEX_BUCKETS:
        b *= 2
    return b


def id_buckets(ids: pa.Array, n_buckets: int) -> np.ndarray:
    """Index bucket of each id: a hash of the id alone, so it never moves."""
    if n_buckets == 1:
        return np.zeros(len(ids), np.int64)
    h = keyed_hash(ids.to_numpy(zero_copy_only=False), 0, "index")
    return (h % np.uint64(n_buckets)).astype(np.int64)


def bucketed(index: pa.Table, n_buckets: int) -> list[pa.Table]:
    """The index (sorted by id) split into its ``n_buckets`` buckets, each still sorted by
    id: for a build and for a delete that re-buckets."""
    bucket = id_buckets(index.column(ID).combine_chunks(), n_buckets)
    order = np.argsort(bucket, kind="stable")  # by bucket, still by id within one
    ends = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
    # `take`, not `slice`: Arrow IPC pads a sliced buffer with the bytes that follow it in
    # its parent, so a slice's file would depend on its neighbours; a taken (or filtered)
    # table owns its buffers and serialises the same however it was derived.
    return [index.take(pa.array(order[ends[b]:ends[b + 1]])) for b in range(n_buckets)]


def hash_buckets(hashes: list[bytes], n_buckets: int) -> np.ndarray:
    """Tombstone bucket of each keyed id hash (already uniform: use its first bytes)."""
    return np.array([int.from_bytes(h[:8], "little") % n_buckets for h in hashes], np.int64)


def find(keys: pa.ChunkedArray | pa.Array, q: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(found, positions of the found ones)`` of ``q`` in sorted, unique ``keys``."""
    if pa.types.is_integer(q.type):  # sorted by id: binary search
        k = keys.to_numpy()
        qs = q.to_numpy()
        pos = np.minimum(np.searchsorted(k, qs), max(len(k) - 1, 0))
        found = (k[pos] == qs) if len(k) else np.zeros(len(qs), bool)
        return found, pos[found]
    pos = pc.index_in(q, value_set=keys).to_numpy(zero_copy_only=False)
    found = ~np.isnan(pos.astype(np.float64))
    return found, pos[found].astype(np.int64)


def locate(q: pa.Array, n_buckets: int, read_part: Callable[[int], pa.Table]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(found mask, shard, slice)`` of the ids ``q``, the last two for found ids only, in
    query order. Reads (through ``read_part(bucket)``) only the buckets of these ids."""
    buckets = id_buckets(q, n_buckets)
    found = np.zeros(len(q), bool)
    shard = np.zeros(len(q), np.int64)
    sl = np.zeros(len(q), np.int64)
    for b in np.unique(buckets).tolist():
        at = np.flatnonzero(buckets == b)
        part = read_part(b)
        ok, pos = find(part.column(ID), q.take(pa.array(at)))
        found[at] = ok
        shard[at[ok]] = part.column("shard").to_numpy()[pos]
        sl[at[ok]] = part.column("slice").to_numpy()[pos]
    return found, shard[found], sl[found]
