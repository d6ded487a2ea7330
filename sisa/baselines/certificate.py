"""The (ε, δ) certificate of a removal under Gaussian loss perturbation (Guo et al. 2020).

Shared by the certified-removal estimators (:mod:`sisa.baselines.newton`), the
linear family's Newton removal (:mod:`sisa.baselines.linear`) and ``sisa compare``.
"""

from __future__ import annotations

import math

from sisa.errors import InputError

__all__ = ["certified_epsilon"]


def certified_epsilon(removal_bound: float, noise_std: float, delta: float) -> float:
    """ε certified by a gradient-residual bound under Gaussian loss perturbation.

    ``c * beta / sigma`` with ``c = sqrt(2 log(1.5/delta))`` (Guo et al., Theorem 3):
    0 when ``beta = 0`` (the removal is exact), ``inf`` when ``beta > 0`` and there is
    no noise.

    Parameters
    ----------
    removal_bound : float
        Accumulated gradient-residual bound beta, at least 0.
    noise_std : float
        Standard deviation sigma of the perturbation ``b``, at least 0.
    delta : float
        In (0, 1).

    Returns
    -------
    float

    Raises
    ------
    InputError
        If an argument is outside its range.

    Examples
    --------
    >>> round(certified_epsilon(0.1, 10.0, 1e-4), 4)
    0.0439
    >>> certified_epsilon(0.1, 0.0, 1e-4)
    inf
    """
    if not removal_bound >= 0 or not noise_std >= 0 or not 0 < delta < 1:
        raise InputError(
            f"need removal_bound >= 0, noise_std >= 0, 0 < delta < 1; got "
            f"{removal_bound!r}, {noise_std!r}, {delta!r}"
        )
    if removal_bound == 0:
        return 0.0
    if noise_std == 0:
        return math.inf
    return math.sqrt(2.0 * math.log(1.5 / delta)) * removal_bound / noise_std
