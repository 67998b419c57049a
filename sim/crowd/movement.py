"""Vectorised walking rules: Weidmann's speed-density relation and Fruin's levels of service.

These are pure array functions so the same rules drive the crowd model (all walkers in
one NumPy update per tick) and the per-agent comparison in ``benchmarks/bench_crowd.py``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FRUIN_LIMITS", "admit", "fruin_los", "weidmann_speed"]

#: Upper flow limits (persons per metre of width per minute) of Fruin walkway levels of
#: service A-E; F is everything from 82 up (DESIGN §3).
FRUIN_LIMITS = np.array([23.0, 33.0, 49.0, 66.0, 82.0])
_LOS = np.array(list("ABCDEF"))


def weidmann_speed(
    density: np.ndarray,
    free_speed: np.ndarray,
    *,
    jam_density: float = 5.4,
    min_share: float = 0.0,
) -> np.ndarray:
    """Walking speed (m/s) at `density` (persons/m2): Weidmann (1993).

    ``v = v0 (1 - exp(-1.913 (1/rho - 1/rho_jam)))``, ``v = v0`` on an empty edge. The
    result is at least ``min_share * v0`` so that an edge at jam density still drains
    into free room ahead (a full stop would freeze a queue forever).
    """
    rho = np.asarray(density, dtype=float)
    with np.errstate(divide="ignore"):
        inv = np.where(rho > 0, 1.0 / np.maximum(rho, 1e-12), np.inf)
    share = -np.expm1(-1.913 * (inv - 1.0 / jam_density))
    return free_speed * np.clip(share, min_share, 1.0)


def fruin_los(flow_pmm: np.ndarray) -> np.ndarray:
    """Fruin walkway level of service (``'A'``-``'F'``) of flows in persons/m/min."""
    return _LOS[np.searchsorted(FRUIN_LIMITS, np.asarray(flow_pmm, dtype=float), side="right")]


def admit(wanted_seg: np.ndarray, priority: np.ndarray, room: np.ndarray) -> np.ndarray:
    """Which walkers may enter the segment they want, first come first served.

    Parameters
    ----------
    wanted_seg
        Segment each candidate wants to enter.
    priority
        Lower goes first (e.g. the time a walker started waiting).
    room
        Free places per segment (persons).

    Returns
    -------
    numpy.ndarray
        Boolean mask over the candidates.
    """
    if len(wanted_seg) == 0:
        return np.zeros(0, dtype=bool)
    ok = np.ones(len(wanted_seg), dtype=bool)
    # only segments asked for by more walkers than they have room for need a queue order
    uniq, inverse, asked = np.unique(wanted_seg, return_inverse=True, return_counts=True)
    short = asked > room[uniq]
    if not short.any():
        return ok
    contested = np.flatnonzero(short[inverse])
    seg = wanted_seg[contested]
    order = np.lexsort((priority[contested], seg))
    seg = seg[order]
    start = np.ones(len(seg), dtype=bool)
    start[1:] = seg[1:] != seg[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(seg)), 0))
    rank = np.arange(len(seg)) - first
    ok[contested[order]] = rank < room[seg]
    return ok
