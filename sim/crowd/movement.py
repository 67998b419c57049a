"""Vectorised walking rules: Weidmann's fundamental diagram, the cell-transmission node
rule and Fruin's levels of service.

These are pure array functions so the same rules drive the crowd model (all walkers in
one NumPy update per tick) and the per-agent comparison in ``benchmarks/bench_crowd.py``.

Node rule (Daganzo 1994, 1995, on walkway segments): per tick a segment of width ``w``
sends at most ``q(min(rho, rho_c)) w dt`` walkers across its downstream end (its
*demand*) and receives at most ``q(max(rho, rho_c)) w dt`` (its *supply*, never above
its room to jam density), with ``q(rho) = rho v(rho)`` Weidmann's flow. Fractional
capacity carries over between ticks in per-edge and per-segment accumulators
(:func:`refill`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FRUIN_AREA_LIMITS",
    "FRUIN_LIMITS",
    "Credit",
    "FundamentalDiagram",
    "admit",
    "fruin_los",
    "fruin_los_code",
    "refill",
    "swaps",
    "weidmann_speed",
]

#: Upper flow limits (persons per metre of width per minute) of Fruin walkway levels of
#: service A-E; F is everything from 82 up (DESIGN §3).
FRUIN_LIMITS = np.array([23.0, 33.0, 49.0, 66.0, 82.0])
#: Lower limits of the area per pedestrian (m2) of Fruin walkway levels A-E; F is below
#: 0.46 m2 (Fruin 1971, as in the HCM).
FRUIN_AREA_LIMITS = np.array([3.3, 2.3, 1.4, 0.9, 0.46])
_LOS = np.array(list("ABCDEF"))


def weidmann_speed(
    density: np.ndarray,
    free_speed: np.ndarray,
    *,
    jam_density: float = 5.4,
) -> np.ndarray:
    """Walking speed (m/s) at `density` (persons/m2): Weidmann (1993).

    ``v = v0 (1 - exp(-1.913 (1/rho - 1/rho_jam)))``, ``v = v0`` on an empty edge and 0 at
    or above jam density. The crowd model evaluates it at ``min(rho, rho_c)`` on the
    moving part of a segment; queues drain through the node rule, not through a floor.
    """
    rho = np.asarray(density, dtype=float)
    # one buffer updated in place, same operations in the same order as the formula:
    # 1/0 = inf gives v0 on an empty edge, and densities below 1e-12 all clip to share 1
    share = np.empty(rho.shape)
    with np.errstate(divide="ignore"):
        np.divide(1.0, rho, out=share)
    share -= 1.0 / jam_density
    share *= -1.913
    np.expm1(share, out=share)
    np.negative(share, out=share)
    np.clip(share, 0.0, 1.0, out=share)
    if np.ndim(free_speed) == 0 and free_speed == 1.0:
        return share
    if np.shape(free_speed) != share.shape:
        return free_speed * share
    share *= free_speed
    return share


def fruin_los(flow_pmm: np.ndarray) -> np.ndarray:
    """Fruin walkway level of service (``'A'``-``'F'``) of flows in persons/m/min."""
    return _LOS[np.searchsorted(FRUIN_LIMITS, np.asarray(flow_pmm, dtype=float), side="right")]


def fruin_los_code(flow_pmm: np.ndarray, density: np.ndarray) -> np.ndarray:
    """Fruin walkway level of service as a code (0 = A ... 5 = F): the worse of the level
    read from the flow (persons/m/min) and the level read from the density (persons/m2).

    A standing jam has almost no flow but little room per person: flow alone would call
    it A, density calls it F (Fruin 1971; the HCM uses both readings).
    """
    flow_pmm = np.asarray(flow_pmm, dtype=float)
    density = np.asarray(density, dtype=float)
    by_flow = np.searchsorted(FRUIN_LIMITS, flow_pmm, side="right")
    with np.errstate(divide="ignore"):
        # a hair of tolerance: 1 / (1 / 0.9) is 0.8999... in floating point
        area = np.where(density > 0, (1.0 + 1e-9) / np.maximum(density, 1e-300), np.inf)
    # area >= limit[k] for the level k; searchsorted on the reversed (increasing) limits
    by_area = len(FRUIN_AREA_LIMITS) - np.searchsorted(FRUIN_AREA_LIMITS[::-1], area, side="right")
    return np.maximum(by_flow, by_area).astype(np.int8)


class FundamentalDiagram:
    """Weidmann's flow-density relation ``q(rho) = rho v(rho)``, scaled to a capacity.

    Parameters
    ----------
    free_speed
        Mean free walking speed v0 (m/s).
    jam_density
        Density (persons/m2) at which walking stops.
    q_max
        Capacity (persons per metre of width per second). ``None`` keeps Weidmann's own
        maximum (about 1.22 /(m s) at about 1.75 /m2 with v0 = 1.34, jam 5.4); a value
        scales the flow at every density by ``q_max / (Weidmann's maximum)``, so the
        critical density stays where Weidmann puts it.

    Attributes
    ----------
    rho_c
        Critical density (persons/m2), where the flow is largest.
    q_max
        Capacity (persons/(m s)).
    """

    def __init__(
        self, free_speed: float, *, jam_density: float = 5.4, q_max: float | None = None
    ) -> None:
        self.free_speed = float(free_speed)
        self.jam_density = float(jam_density)
        rho = np.linspace(1e-3, jam_density, 200_001)
        q = rho * weidmann_speed(rho, self.free_speed, jam_density=jam_density)
        k = int(np.argmax(q))
        self.rho_c = float(rho[k])
        self.weidmann_q_max = float(q[k])
        self.q_max = self.weidmann_q_max if q_max is None else float(q_max)
        self._scale = self.q_max / self.weidmann_q_max

    def flow(self, density: np.ndarray) -> np.ndarray:
        """Specific flow q (persons/(m s)) at `density`."""
        rho = np.asarray(density, dtype=float)
        return (
            self._scale * rho * weidmann_speed(rho, self.free_speed, jam_density=self.jam_density)
        )

    def demand(self, density: np.ndarray) -> np.ndarray:
        """Most a segment sends per metre of width and second: ``q(min(rho, rho_c))``."""
        return self.flow(np.minimum(density, self.rho_c))

    def supply(self, density: np.ndarray) -> np.ndarray:
        """Most a segment receives per metre of width and second: ``q(max(rho, rho_c))``."""
        return self.flow(np.maximum(density, self.rho_c))


def refill(credit: np.ndarray, per_tick: np.ndarray) -> None:
    """Add one tick's capacity to the accumulators `credit` in place.

    Unused capacity carries over, but at most one walker's worth beyond a tick's: an idle
    node does not bank a burst, and a capacity below one walker per tick (a narrow
    street, a short tick) still lets one through every ``1 / per_tick`` ticks.
    """
    credit += per_tick
    np.minimum(credit, per_tick + 1.0, out=credit)


class Credit:
    """Whole walkers of capacity left, ``floor(credit)`` (within ``cap - occ`` if given),
    computed only at the indices asked for: pass it as :func:`admit`'s `room`, which
    reads a few entries; a full-array pass per call cost more than the queue itself."""

    def __init__(
        self, credit: np.ndarray, cap: np.ndarray | None = None, occ: np.ndarray | None = None
    ) -> None:
        self.credit, self.cap, self.occ = credit, cap, occ

    def __len__(self) -> int:
        """Number of accumulators."""
        return len(self.credit)

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        """Whole walkers the accumulators at `index` let through now."""
        out = np.floor(self.credit[index]).astype(np.int64)
        if self.cap is not None and self.occ is not None:
            np.minimum(out, self.cap[index] - self.occ[index], out=out)
        return out


def admit(wanted_seg: np.ndarray, priority: np.ndarray, room: np.ndarray | Credit) -> np.ndarray:
    """Which walkers may enter the segment they want, first come first served.

    Parameters
    ----------
    wanted_seg
        Segment each candidate wants to enter.
    priority
        Lower goes first (e.g. the time a walker started waiting).
    room
        Free places per segment (persons): an array, or a :class:`Credit` that is read
        only at the segments asked for.

    Returns
    -------
    numpy.ndarray
        Boolean mask over the candidates.
    """
    if len(wanted_seg) == 0:
        return np.zeros(0, dtype=bool)
    ok = np.ones(len(wanted_seg), dtype=bool)
    # only segments asked for by more walkers than they have room for need a queue order
    if len(wanted_seg) * 32 >= len(room):
        # beyond a few hundred candidates one count over all segments (linear) beats the
        # sort inside np.unique (about 3x faster at 3,000 candidates of 36,000 segments)
        asked = np.bincount(wanted_seg, minlength=len(room))
        contested_mask = asked[wanted_seg] > room[wanted_seg]
    else:
        uniq, inverse, asked = np.unique(wanted_seg, return_inverse=True, return_counts=True)
        short = asked > room[uniq]
        contested_mask = short[inverse]
    if not contested_mask.any():
        return ok
    contested = np.flatnonzero(contested_mask)
    seg = wanted_seg[contested]
    order = _queue_order(seg, priority[contested])
    seg = seg[order]
    start = np.ones(len(seg), dtype=bool)
    start[1:] = seg[1:] != seg[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(seg)), 0))
    rank = np.arange(len(seg)) - first
    ok[contested[order]] = rank < room[seg]
    return ok


def swaps(own_seg: np.ndarray, wanted_seg: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Which walkers at a node pass each other in counterflow, first come first served.

    A walker on segment A who wants B and one on B who wants A (both at the node the two
    share) trade places, and one turning round on its own segment (A to A) stays on it:
    the occupancy of every segment is unchanged, so they need no room (supply) and move
    even when both segments are at jam density; the crowd model passes only walkers within
    their segment's demand, so the swaps are limited by both segments' demand. `own_seg`
    is -1 for walkers not on a segment (they never swap).

    Returns
    -------
    numpy.ndarray
        Boolean mask over the candidates: the first ``min(n_AB, n_BA)`` of each pair of
        opposite queues by `priority`, and every turn on the walker's own segment.
    """
    ok = own_seg == wanted_seg
    on = np.flatnonzero((own_seg >= 0) & ~ok)
    if len(on) == 0:
        return ok
    a, b = own_seg[on].astype(np.int64), wanted_seg[on].astype(np.int64)
    n = int(max(a.max(), b.max())) + 1
    keys, inverse, count = np.unique(a * n + b, return_inverse=True, return_counts=True)
    back = (keys % n) * n + keys // n  # the opposite queue of each queue
    at = np.minimum(np.searchsorted(keys, back), len(keys) - 1)
    pair = np.where(keys[at] == back, count[at], 0)  # walkers in the opposite queue
    two_way = np.flatnonzero(pair[inverse] > 0)
    if len(two_way) == 0:
        return ok
    order = _queue_order(inverse[two_way], priority[on[two_way]])
    group = inverse[two_way][order]
    start = np.ones(len(group), dtype=bool)
    start[1:] = group[1:] != group[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(group)), 0))
    rank = np.arange(len(group)) - first
    ok[on[two_way[order]]] = rank < np.minimum(count, pair)[group]
    return ok


def _queue_order(seg: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Indices sorting by segment, then priority, then position: ``np.lexsort``'s order.

    ``lexsort`` runs one stable sort per key and dominated ``admit`` in profiles of the
    crowd model. When the priorities are whole numbers (the model's are tick times in
    seconds) segment, priority and position pack exactly into one unique int64 key, and
    a plain ``argsort`` of unique keys gives the same order several times faster.
    """
    n = len(seg)
    if n > 256:
        lo, hi = priority.min(), priority.max()
        span = hi - lo + 1.0
        n_seg = int(seg.max()) + 1 if seg.min() >= 0 else 0
        if (
            n_seg
            and np.isfinite(span)
            and float(n_seg) * span * n < 2.0**62
            and bool((priority == np.rint(priority)).all())
        ):
            key = seg.astype(np.int64) * np.int64(span)
            key += (priority - lo).astype(np.int64)
            key *= n
            key += np.arange(n, dtype=np.int64)
            return np.argsort(key)
    return np.lexsort((priority, seg))
