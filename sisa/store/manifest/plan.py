"""The retrain plan: shard -> first slice to retrain (one name and one type for it)."""

from __future__ import annotations

from collections.abc import Iterable


class RetrainPlan(dict):
    """shard -> first slice to (re)train: what a deletion invalidates, what a run
    journals, what ``repair`` finds damaged. Every checkpoint of a planned shard from
    that slice on is stale."""

    def add(self, shard: int, sl: int) -> None:
        """Plan ``shard`` from ``sl`` or earlier."""
        self[int(shard)] = min(self.get(int(shard), int(sl)), int(sl))

    @classmethod
    def of(cls, cells: Iterable[tuple[int, int]]) -> RetrainPlan:
        """The plan covering every ``(shard, slice)`` cell given."""
        plan = cls()
        for s, r in cells:
            plan.add(s, r)
        return plan

    @classmethod
    def everything(cls, n_shards: int) -> RetrainPlan:
        """Every shard from its first slice (a fit, or a change of the class list)."""
        return cls({s: 0 for s in range(n_shards)})

    def covers(self, shard: int, sl: int) -> bool:
        """Whether the checkpoint of ``(shard, sl)`` is stale under this plan."""
        return shard in self and sl >= self[shard]

    def pairs(self) -> list[list[int]]:
        """``[[shard, first slice], ...]`` sorted, as receipts record it."""
        return sorted([s, r] for s, r in self.items())
