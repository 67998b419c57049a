"""From devices to people; the Garwood interval of a Poisson count.

The operator sees devices, not people. A device count D is turned into people by the
operator's beliefs: ``people = D * f`` with

    f = (1 - rho) / (s * p) + rho / (s_r * p)

where s is its market share, p phones per person, rho the share of devices it believes are
inbound roamers and s_r the share of foreign visitors' phones it believes roam onto it.
The records carry no roaming flag, so rho is a belief too (0 by default). With s = p = 1
and no roaming, f = 1: device counts are people counts unchanged.

The estimators' intervals are in :mod:`sim.estimate.intervals` (location, thinning,
beliefs, noise). :func:`poisson_interval` here is the exact (Garwood) interval of a
Poisson count, the sampling-only bound the estimators used before; it is kept for
comparison with the new intervals and as a plain tool for anyone with a count.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import gammaincinv, ndtri

__all__ = ["people_per_device", "poisson_interval"]

#: Below this many devices the interval is exact; above it Wilson–Hilferty (error < 0.1%).
_EXACT_BELOW = 30.0
#: Exact intervals are computed on counts rounded to this step and looked up.
_STEP = 0.01


def people_per_device(
    *,
    market_share: float,
    phones_per_person: float,
    roaming_device_share: float = 0.0,
    roaming_market_share: float | None = None,
    error: type[Exception] = ValueError,
) -> float:
    """People one observed device stands for, under the operator's beliefs.

    Raises
    ------
    error
        A share outside (0, 1], phones per person not > 0, a roaming share outside [0, 1].
    """
    s_r = market_share if roaming_market_share is None else roaming_market_share
    for name, value in (("market_share", market_share), ("roaming_market_share", s_r)):
        if not 0.0 < value <= 1.0:
            raise error(f"{name} = {value}: must be in (0, 1]")
    if not phones_per_person > 0:
        raise error(f"phones_per_person = {phones_per_person}: must be > 0")
    if not 0.0 <= roaming_device_share <= 1.0:
        raise error(f"roaming_device_share = {roaming_device_share}: must be in [0, 1]")
    rho = roaming_device_share
    return float((1.0 - rho) / (market_share * phones_per_person) + rho / (s_r * phones_per_person))


def poisson_interval(
    counts: np.ndarray, *, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Garwood interval for the mean of a Poisson count, for real-valued counts.

    ``lower = Gamma^-1(a/2; D)`` (0 when D = 0) and ``upper = Gamma^-1(1 - a/2; D + 1)``;
    a zero count gets ``[0, -ln(a/2)]`` (3.69 at 95%), an honest bound, never NaN.
    Counts below 30 use the exact quantiles (on a 0.01 grid); larger ones the
    Wilson–Hilferty approximation, which is accurate to better than 0.1% there.
    """
    d = np.asarray(counts, dtype=np.float64)
    alpha = 1.0 - confidence
    lower = np.zeros_like(d)
    upper = np.zeros_like(d)
    small = d < _EXACT_BELOW
    if small.any():
        lo_tab, hi_tab = _exact_tables(alpha)
        k = np.rint(d[small] / _STEP).astype(np.int64)
        lower[small] = lo_tab[k]
        upper[small] = hi_tab[k]
    big = ~small
    if big.any():
        z = ndtri(1.0 - alpha / 2)
        lower[big] = _wilson_hilferty(d[big], -z)
        upper[big] = _wilson_hilferty(d[big] + 1.0, z)
    return lower, upper


@functools.lru_cache(maxsize=8)
def _exact_tables(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact Garwood bounds on the 0.01 grid below 30, computed once per level."""
    grid = np.arange(0.0, _EXACT_BELOW + 2 * _STEP, _STEP)
    lo_tab = np.zeros_like(grid)
    lo_tab[1:] = gammaincinv(grid[1:], alpha / 2)
    hi_tab = gammaincinv(grid + 1.0, 1.0 - alpha / 2)
    lo_tab.flags.writeable = hi_tab.flags.writeable = False  # shared between calls
    return lo_tab, hi_tab


def _wilson_hilferty(shape: np.ndarray, z: float) -> np.ndarray:
    """Quantile of Gamma(shape, 1) at standard normal quantile z (Wilson & Hilferty 1931)."""
    c = 1.0 / (9.0 * shape)
    return shape * (1.0 - c + z * np.sqrt(c)) ** 3
