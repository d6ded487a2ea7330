"""What a comparison runs, as one value (:class:`CompareOptions`); where it runs is
:class:`sisa.ExecutionSettings` and where the report goes is ``run(out=...)``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sisa.compare.methods.families import Family

_TUPLES = ("scenarios", "sisa_scenarios", "fractions", "curve_scenarios")


@dataclass(frozen=True, kw_only=True)
class CompareOptions:
    """The comparison :func:`sisa.compare.run` makes: task, model family, sizes, forget
    sets and statistics. None means the family's default; the values are checked (one
    line each) once the family is known, when the run starts, before any training.

    Parameters
    ----------
    dataset : {"adult", "fashion-mnist"}, optional
        The task every method shares (default: the family's; linear: adult, torch:
        fashion-mnist).
    family : {"linear", "torch"} or Family, default="linear"
        The model every method uses: by name, or a
        :class:`~sisa.compare.methods.linear_family.LinearFamily` / ``TorchFamily``.
    n_models : int, optional
        N models per side per ε̂ (resolves ε up to ``ln(N - 1)``; linear 256, torch 128).
    eps_rows : int, None or "auto", default="auto"
        Training rows of the ε runs (None: all; "auto": the family's, sized for the time
        budget: linear 3000 of Adult, torch 2500 of Fashion-MNIST).
    cost_rows : int, optional
        Rows (None: all of Adult) of the linear family's full-data cost run.
    repeats : int, default=5
        Seeds of that cost run.
    scenarios, sisa_scenarios : tuple of str, optional
        Forget sets; those on which SISA's ε is estimated too (default: the family's).
    fraction : float, optional
        Size of the random, mislabeled forget sets (default: the family's, linear 0.02,
        torch 0.08) (duplicated: half as many distinct rows, injected: half as many
        positive rows).
    n_shards, n_slices, lam, noise_std, subsample : optional
        Settings of a family given by name (None: its default; lam, noise_std: linear).
    fractions, fraction_models : tuple of float, int, optional
        Other subsample fractions with verdicts, and their N.
    n_boot, n_perm : int, default=100, 2000
        Bootstrap replicates per interval; permutations per test (p Holm-corrected).
    seed : int, default=0
        The data split and the forget sets.
    tune_models : int, optional
        Models per side of the tuning of fine-tune, NegGrad+ and SCRUB on a validation
        forget set (:mod:`sisa.compare.runs.tuning`; 0: no tuning; linear 32).
    curve_models, curve_scenarios : int, tuple of str, optional
        Models per side of each point of the ε̂-against-time curves
        (:mod:`sisa.compare.runs.curves`; 0: none; linear 64) and their forget sets, those
        of the run's among them (linear: mislabeled and injected). The default model
        counts are at most ``n_models``.

    Examples
    --------
    >>> CompareOptions(n_models=64, scenarios=["random"]).scenarios
    ('random',)
    """

    dataset: str | None = None
    family: str | Family = "linear"
    n_models: int | None = None
    eps_rows: int | Literal["auto"] | None = "auto"
    cost_rows: int | None = None
    repeats: int = 5
    scenarios: tuple[str, ...] | None = None
    sisa_scenarios: tuple[str, ...] | None = None
    fraction: float | None = None
    n_shards: int | None = None
    n_slices: int | None = None
    lam: float | None = None
    noise_std: float | None = None
    subsample: float | None = None
    fractions: tuple[float, ...] | None = None
    fraction_models: int | None = None
    n_boot: int = 100
    n_perm: int = 2000
    seed: int = 0
    tune_models: int | None = None
    curve_models: int | None = None
    curve_scenarios: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in _TUPLES:  # a list from argparse or a caller: kept as a tuple (frozen)
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    @property
    def family_settings(self) -> dict:
        """The settings of a family given by name (None: its default)."""
        return {k: getattr(self, k)
                for k in ("n_shards", "n_slices", "lam", "noise_std", "subsample")}

    @property
    def baselines(self) -> dict:
        """The tuning's and the curves' settings."""
        return {k: getattr(self, k) for k in ("tune_models", "curve_models", "curve_scenarios")}

    def replace(self, **changes) -> CompareOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
