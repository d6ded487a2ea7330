"""Shards → checkpoints: slice-by-slice training of one sub-model per shard, on Ray."""

from ..tasks import ExecutionSettings, connect, map_tasks  # re-exported: the engine's face
from .schedule import Schedule, derive_seed
from .train import ShardResult, TrainingError, train_shard

__all__ = ["ExecutionSettings", "Schedule", "ShardResult", "TrainingError", "connect",
           "derive_seed", "map_tasks", "train_shard"]
