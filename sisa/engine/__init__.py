"""Shards → checkpoints: slice-by-slice training of one sub-model per shard, on Ray."""

from .backend import connect, map_tasks
from .schedule import Schedule, derive_seed
from .settings import ExecutionSettings
from .train import ShardResult, TrainingError, train_shard

__all__ = ["ExecutionSettings", "Schedule", "ShardResult", "TrainingError", "connect",
           "derive_seed", "map_tasks", "train_shard"]
