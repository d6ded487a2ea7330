"""Where work runs: one :class:`ExecutionSettings` and one runner, :func:`map_tasks`
(this process, an embedded Ray or a Ray cluster). The bottom layer, so the store's
parallel ingest and the engine's training fan out the same way."""

from .backend import TaskError, choose, connect, map_tasks
from .settings import BACKENDS, ExecutionSettings

__all__ = ["BACKENDS", "ExecutionSettings", "TaskError", "choose", "connect", "map_tasks"]
