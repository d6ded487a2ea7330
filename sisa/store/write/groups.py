"""Group keys: which rows a group (a person, a user id) holds in a store built with groups.

A store built with ``groups=``/``group_column=`` places every row by its group key
(:func:`sisa.store.format.assign.group_cells`: one slice, or two with distribution-aware
sharding) and keeps, beside each row, the keyed 64-bit hash of that key
(:func:`sisa.store.format.assign.group_hash`), never the key itself. So a group resolves to its
rows by reading only the slice(s) its key hashes to, and once its rows are deleted no
file of the store knows the key: slices are rewritten without the rows, and the index and
tombstones hold sample ids only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ...errors import InputError
from ..format import ids as idmod
from ..format.assign import group_cells, group_hash
from ..format.layout import GROUP, ID

if TYPE_CHECKING:
    from ..store import Store


def group_type(store: Store) -> str:
    """The store's group key type; an :class:`InputError` if it was built without groups."""
    gtype = store.manifest.schema.get("group_type")
    if gtype is None:
        raise InputError(f"store {store.uri} was built without groups, so it cannot forget by "
                         "group: forget the rows by sample id, or rebuild it with "
                         "fit(X, y, groups=...) / `sisa train --group COL`")
    return gtype


def group_keys(store: Store, keys) -> pa.Array:
    """``keys`` (any spelling the id boundary accepts) as the store's distinct group keys,
    sorted: the canonical form of a request."""
    return idmod.unique_sorted(idmod.to_group_keys(keys, group_type(store)))


def group_rows(store: Store, keys: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The sample ids of the rows of the groups ``keys`` (the store's group key array), and
    how many rows each key holds now. Reads only the slices the keys hash to."""
    raw = idmod.as_numpy(keys)
    hashes = group_hash(store.config, raw)
    cells = group_cells(store.config, raw)
    wanted: dict[tuple[int, int], list[int]] = {}
    for k in range(len(raw)):
        for s, r in {tuple(c) for c in cells[k].tolist()}:
            wanted.setdefault((s, r), []).append(k)
    counts = np.zeros(len(raw), np.int64)
    found = []
    for (s, r), ks in sorted(wanted.items()):
        table = store.rows.read_slice_table(s, r)
        col = table.column(GROUP).to_numpy()
        hit = np.flatnonzero(np.isin(col, hashes[ks]))
        if len(hit):
            found.append(table.column(ID).take(pa.array(hit)).combine_chunks())
        values, n = np.unique(col[hit], return_counts=True)
        per_hash = dict(zip(values.tolist(), n.tolist(), strict=True))
        for k in ks:
            counts[k] += per_hash.get(int(hashes[k]), 0)
    if not found:
        return pa.array([], idmod.arrow_type(store.manifest.id_type)), counts
    return pa.concat_arrays(found), counts
