"""Shards → checkpoints: slice-by-slice training of one sub-model per shard, on Ray."""

from .backend import connect, run_shards
from .schedule import Schedule, derive_seed
from .train import ShardResult, TrainingError, train_shard

__all__ = ["Schedule", "ShardResult", "TrainingError", "connect", "derive_seed", "run_shards",
           "train_shard"]
