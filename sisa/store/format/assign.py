"""Row → (shard, slice) assignment: a pure function of each row alone.

A row's place depends only on (random_state, its sample id or group key, and
optionally its deletion probability), never on which other rows exist. So a store
built from D and then stripped of U holds exactly the rows, in exactly the order,
of a store built from D∖U with the same seed, which is what makes SISA's
"retrain from the last clean checkpoint" reproduce a from-scratch fit bit for bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from ...errors import InputError

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class AssignmentConfig:
    """How rows are placed.

    Parameters
    ----------
    n_shards, n_slices : int
        S and R, both at least 1.
    random_state : int
        Keys the hash; two stores with the same seed place every row alike.
    hot_shards : int, default=0
        Distribution-aware sharding (SISA §V-A): rows whose deletion probability is
        at least ``hot_threshold`` go to the first ``hot_shards`` shards, all other
        rows to the rest, so that likely deletions retrain few, small shards.
        0 turns it off.
    hot_threshold : float, default=0.5
        Deletion probability from which a row counts as likely to be deleted.
    """

    n_shards: int
    n_slices: int
    random_state: int = 0
    hot_shards: int = 0
    hot_threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("n_shards", "n_slices"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.random_state, (int, np.integer)) or self.random_state < 0:
            raise InputError(
                f"random_state must be a non-negative integer, got {self.random_state!r}"
            )
        if self.hot_shards and not 0 < self.hot_shards < self.n_shards:
            raise InputError(
                f"hot_shards must be between 1 and n_shards-1={self.n_shards - 1} "
                f"(or 0 to disable distribution-aware sharding), got {self.hot_shards}"
            )
        if not 0.0 < self.hot_threshold <= 1.0:
            raise InputError(f"hot_threshold must be in (0, 1], got {self.hot_threshold}")

    def to_dict(self) -> dict:
        return {k: int(v) if k != "hot_threshold" else float(v) for k, v in asdict(self).items()}


def _key(random_state: int, purpose: str) -> int:
    digest = hashlib.blake2b(f"sisa/{purpose}/{random_state}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijection on uint64 with full avalanche."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def keyed_hash(values: np.ndarray, random_state: int, purpose: str) -> np.ndarray:
    """Keyed 64-bit hash of integer or string keys, as a uint64 array.

    Integers are mixed arithmetically (vectorised); strings and bytes go through
    keyed BLAKE2b. The key derives from ``random_state`` and ``purpose``, so the
    shard, slice and in-slice order hashes are independent of each other.
    """
    values = np.asarray(values)
    key = _key(random_state, purpose)
    if values.dtype.kind in "iu":
        k = np.uint64(key)
        return _mix64(_mix64(values.astype(np.int64).view(np.uint64) ^ k) + k)
    if values.dtype.kind in "USO":
        kb = key.to_bytes(8, "little")
        out = np.empty(len(values), dtype=np.uint64)
        for i, v in enumerate(values.tolist()):
            if isinstance(v, str):
                try:
                    v = v.encode()
                except UnicodeEncodeError:  # a lone surrogate: no bytes to hash or store
                    raise InputError(f"sample id or group key {v[:40]!r} is not valid text (it "
                                     "holds a lone surrogate): pass well-formed strings") from None
            elif not isinstance(v, bytes):
                raise InputError(
                    f"sample ids and group keys must be integers or strings, got {type(v).__name__}"
                )
            out[i] = int.from_bytes(hashlib.blake2b(v, key=kb, digest_size=8).digest(), "little")
        return out
    raise InputError(
        f"sample ids and group keys must be integers or strings, got dtype {values.dtype}"
    )


def assign(
    config: AssignmentConfig,
    sample_ids: np.ndarray,
    groups: np.ndarray | None = None,
    deletion_prob: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place each row: returns ``(shard, slice, order_key)``, one entry per row.

    Parameters
    ----------
    config : AssignmentConfig
    sample_ids : array of int or str
        Stable ids. The in-slice order comes from their hash.
    groups : array, optional
        Group key per row (for example a user id). All rows of a group then share a
        shard and a slice, so forgetting a user touches one slice of one shard.
    deletion_prob : array of float, optional
        Per-row deletion probability, used when ``config.hot_shards > 0``.

    Returns
    -------
    shard : ndarray of int32
    slice : ndarray of int32
    order_key : ndarray of uint64
        Rows inside a slice are stored sorted by ``(order_key, sample_id)``.

    Examples
    --------
    >>> cfg = AssignmentConfig(n_shards=4, n_slices=2, random_state=0)
    >>> shard, sl, _ = assign(cfg, np.arange(6))
    >>> shard2, sl2, _ = assign(cfg, np.arange(3, 6))
    >>> bool((shard[3:] == shard2).all() and (sl[3:] == sl2).all())
    True
    """
    rs = config.random_state
    place = sample_ids if groups is None else groups
    if groups is not None and len(groups) != len(sample_ids):
        raise InputError(f"group column has {len(groups)} rows but there are {len(sample_ids)} ids")
    h_shard, h_slice = _place_hashes(config, place)
    order = keyed_hash(sample_ids, rs, "order")
    S, R = np.uint64(config.n_shards), np.uint64(config.n_slices)
    if config.hot_shards:
        if deletion_prob is None:
            raise InputError(
                "distribution-aware sharding (hot_shards > 0) needs a deletion probability "
                "per row: pass deletion_prob= or --deletion-prob COL"
            )
        p = np.asarray(deletion_prob, dtype=np.float64)
        if p.shape != (len(sample_ids),) or not np.isfinite(p).all() or (p < 0).any() or (
            p > 1
        ).any():
            raise InputError("deletion_prob must be one finite probability in [0, 1] per row")
        hot = p >= config.hot_threshold
        H = np.uint64(config.hot_shards)
        shard = np.where(hot, h_shard % H, H + h_shard % (S - H))
    else:
        shard = h_shard % S
    return shard.astype(np.int32), (h_slice % R).astype(np.int32), order


def _place_hashes(config: AssignmentConfig, place: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shard and slice hashes of each row's place key (its id, or its group key)."""
    return (keyed_hash(place, config.random_state, "shard"),
            keyed_hash(place, config.random_state, "slice"))


def group_hash(config: AssignmentConfig, groups: np.ndarray) -> np.ndarray:
    """The 64-bit keyed hash of each group key that a slice stores beside the row (column
    ``group``): enough to find a group's rows in its slice, and no copy of the key itself.
    Keyed by the seed, like the placement."""
    groups = np.asarray(groups)
    if groups.dtype.kind == "u" and groups.size and int(groups.max()) > 2**63 - 1:
        raise InputError(f"group key {int(groups.max())} is out of range: integer group keys "
                         "fit in a signed 64-bit integer")
    return keyed_hash(groups, config.random_state, "group")


def group_cells(config: AssignmentConfig, groups: np.ndarray) -> np.ndarray:
    """Every (shard, slice) that can hold rows of each group key, by the hash :func:`assign`
    places them with: shape ``(n_keys, k, 2)``. ``k`` is 1, or 2 with distribution-aware
    sharding (a group's rows go to its hot or its cold shard by each row's probability).
    """
    h_shard, h_slice = _place_hashes(config, groups)
    S, R = np.uint64(config.n_shards), np.uint64(config.n_slices)
    sl = (h_slice % R).astype(np.int64)
    if config.hot_shards:
        H = np.uint64(config.hot_shards)
        shards = [h_shard % H, H + h_shard % (S - H)]
    else:
        shards = [h_shard % S]
    return np.stack([np.stack([s.astype(np.int64), sl], axis=1) for s in shards], axis=1)


def spread(counts: np.ndarray) -> dict:
    """Summary of shard or slice sizes: min, max, mean, relative standard deviation."""
    counts = np.asarray(counts, dtype=np.float64)
    mean = float(counts.mean()) if counts.size else 0.0
    return {
        "min": int(counts.min()) if counts.size else 0,
        "max": int(counts.max()) if counts.size else 0,
        "mean": round(mean, 2),
        "rel_std": round(float(counts.std() / mean), 4) if mean else 0.0,
    }
