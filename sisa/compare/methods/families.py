"""What a model family is to the comparison, and the families ``sisa compare`` knows.

A family is one model (the same for every method), its unlearning methods and the
kinds of reference each method is measured against. The ε runs
(:mod:`sisa.compare.runs.gap`) only call the members of :class:`Family`, so a new family is
a new class with these members, registered in :data:`FAMILIES`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from sisa.compare.data import Scenario
from sisa.compare.methods.linear_family import LinearFamily
from sisa.compare.methods.torch_family import TorchFamily
from sisa.errors import InputError

__all__ = ["FAMILIES", "Family", "make_family"]


class Family(Protocol):
    """The members the ε runs and the report use.

    Attributes
    ----------
    name : str
        ``--family`` name.
    methods : tuple of str
        Every method, in report order; ``retrain`` is the reference method.
    reference_kind : dict of str to str
        The kind of reference each method is measured against (and whose floor).
    defaults : dict
        Run defaults: ``n_models``, ``eps_rows``, ``scenarios``, ``sisa_scenarios``.
    n_shards, n_slices : int
        SISA's S and R.
    """

    name: ClassVar[str]
    methods: ClassVar[tuple[str, ...]]
    reference_kind: ClassVar[dict[str, str]]
    defaults: ClassVar[dict]
    n_shards: int
    n_slices: int

    def describe(self) -> dict[str, str]:
        """One line per method."""

    def summary(self) -> dict:
        """The report's ``family`` section (with ``text``: model, randomness, statistic)."""

    def warm_start(self, sc: Scenario) -> Any:
        """What every fit of ``sc`` may start from (or None), computed once per scenario."""

    def reference(self, kind: str, sc: Scenario, seed: int, warm: Any = None) -> Any:
        """A model of kind ``kind`` trained without U with seed ``seed``."""

    def unlearn(self, sc: Scenario, seed: int, methods: tuple[str, ...], warm: Any = None,
                check_bytes: bool = False) -> dict:
        """``{"models", "times", "extra"}`` of every method for seed ``seed``."""

    def statistic(self, model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The true class's logit per row."""

    def injected_weight(self, model: Any, col: int) -> float | None:
        """The model's weight on the injected feature (None: no such weight)."""


FAMILIES: dict[str, type] = {"linear": LinearFamily, "torch": TorchFamily}


def make_family(name: str, **settings) -> Family:
    """The family ``name`` with ``settings`` (its dataclass fields; None = its default).

    Raises
    ------
    InputError
        Unknown family, or a setting it does not have.
    """
    if name not in FAMILIES:
        raise InputError(f"family must be one of {', '.join(FAMILIES)}, got {name!r}")
    cls = FAMILIES[name]
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - set(cls.__dataclass_fields__))
    if unknown:
        raise InputError(f"the {name} family has no setting {', '.join(unknown)}")
    return cls(**given)
