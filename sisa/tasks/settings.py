"""Where and how sisa's tasks run: one settings type for training, forget, verify and compare.

In the spirit of xgboost_ray's ``RayParams``: the backend, the Ray cluster, the CPUs per
task, the retries and the progress display travel together as one validated value
instead of as loose arguments through every layer.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Literal, get_args

from ..errors import InputError

Backend = Literal["auto", "ray", "local"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)


@dataclass(frozen=True)
class ExecutionSettings:
    """How to run a batch of tasks (shard trainings, ε runs...).

    Parameters
    ----------
    backend : {"auto", "ray", "local"}, default="auto"
        ``"local"``: in this process, one task after another. ``"ray"``: one Ray task
        each. ``"auto"``: Ray when a cluster address is set or Ray is already up; a
        single task in this process; otherwise here first, and on an embedded Ray once
        the measured time per task says it pays (see :func:`sisa.tasks.backend.choose`).
    address : str, optional
        Ray cluster to join (``ray://host:10001`` or ``host:6379``). Default: the
        ``RAY_ADDRESS`` environment variable, else an embedded local Ray.
    num_cpus : float, default=1
        CPUs reserved per task.
    max_retries : int, default=2
        Ray retries of a failed task (on shared storage most failures are transient).
    progress : bool, default=False
        Show a progress bar on stderr.

    Examples
    --------
    >>> ExecutionSettings(backend="local").replace(progress=True).progress
    True
    """

    backend: Backend = "auto"
    address: str | None = None
    num_cpus: float = 1
    max_retries: int = 2
    progress: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.address is not None and not (isinstance(self.address, str) and self.address):
            raise InputError(f"address must be a Ray address string or None, got "
                             f"{self.address!r}")
        if (not isinstance(self.num_cpus, Real) or isinstance(self.num_cpus, bool)
                or not self.num_cpus > 0):
            raise InputError(f"num_cpus must be a number > 0, got {self.num_cpus!r}")
        if (not isinstance(self.max_retries, Integral) or isinstance(self.max_retries, bool)
                or self.max_retries < 0):
            raise InputError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        object.__setattr__(self, "progress", bool(self.progress))

    @property
    def cluster(self) -> str | None:
        """The Ray cluster address in effect (``address`` or ``RAY_ADDRESS``), or None."""
        return self.address or os.environ.get("RAY_ADDRESS") or None

    def replace(self, **changes) -> ExecutionSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
