"""The retrain plan: shard -> first slice to retrain (one name and one type for it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, eq=False)
class RetrainPlan(Mapping[int, int]):
    """shard -> first slice to (re)train: what a deletion invalidates, what a run
    journals, what ``repair`` finds damaged. Every checkpoint of a planned shard from
    that slice on is stale.

    Immutable: a read-only mapping (equal to any mapping with the same items) over a
    private copy of ``first``, keys in shard order; :meth:`with_cell` returns a new plan.

    Parameters
    ----------
    first : Mapping[int, int], default={}
        Shard -> first slice to retrain.
    """

    first: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a sorted private copy behind a read-only view: nothing can change it later
        copy = {int(s): int(r) for s, r in sorted(dict(self.first).items())}
        object.__setattr__(self, "first", MappingProxyType(copy))

    def __getitem__(self, shard: int) -> int:
        return self.first[shard]

    def __iter__(self) -> Iterator[int]:
        return iter(self.first)

    def __len__(self) -> int:
        return len(self.first)

    def __repr__(self) -> str:
        return f"RetrainPlan({dict(self.first)!r})"

    def __reduce__(self):  # the read-only view does not pickle; its items do
        return (RetrainPlan, (dict(self.first),))

    def with_cell(self, shard: int, sl: int) -> RetrainPlan:
        """This plan, with ``shard`` planned from ``sl`` or earlier."""
        return RetrainPlan.of([*self.items(), (shard, sl)])

    @classmethod
    def of(cls, cells: Iterable[tuple[int, int]]) -> RetrainPlan:
        """The plan covering every ``(shard, slice)`` cell given."""
        first: dict[int, int] = {}
        for s, r in cells:
            s, r = int(s), int(r)
            first[s] = min(first.get(s, r), r)
        return cls(first)

    @classmethod
    def everything(cls, n_shards: int) -> RetrainPlan:
        """Every shard from its first slice (a fit, or a change of the class list)."""
        return cls({s: 0 for s in range(n_shards)})

    def covers(self, shard: int, sl: int) -> bool:
        """Whether the checkpoint of ``(shard, sl)`` is stale under this plan."""
        return shard in self.first and sl >= self.first[shard]

    def pairs(self) -> list[list[int]]:
        """``[[shard, first slice], ...]`` sorted, as receipts record it."""
        return sorted([s, r] for s, r in self.first.items())
