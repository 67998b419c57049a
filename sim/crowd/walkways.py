"""Crowds on hand-made walkways: the crowd's own movement rules on a small street graph.

:func:`walkway_graph` builds a walking graph from nodes (coordinates, m) and streets
(length, usable width); :class:`WalkwayModel` puts walkers on it at given origins with
destinations and start times and moves them with exactly the rules of
:class:`~sim.crowd.model.CrowdModel` (Weidmann speeds, the cell-transmission node rule,
counterflow, first come first served): it reuses the model's tick, not a copy of it.
It reads back what a pedestrian-dynamics check needs: when each walker passed each node
and when each arrived. ``crowdsim verify crowd`` (:mod:`sim.crowd.verify`) is built on it.

Example
-------
>>> g = walkway_graph([0.0, 40.0], [0.0, 0.0], [0], [1], width=2.0)
>>> model = WalkwayModel(g, dt=0.5, free_speed=1.33, free_speed_sd=0.0, seed=0)
>>> rows = model.add_walkers([0], [1], start_s=[0.0])
>>> model.run_until_clear(max_s=100.0)
True
>>> 29.0 < float(model.arrival_s[0]) < 31.0
True
"""

from __future__ import annotations

from collections.abc import Sequence

import mesa
import numpy as np

from sim.crowd.model import GONE, PENDING, SPECTATOR, WAITING, WALKING, CrowdModel, People
from sim.crowd.movement import FundamentalDiagram
from sim.crowd.routing import RoutingTables
from sim.crowd.walkgraph import WalkGraph

__all__ = ["WalkwayModel", "walkway_graph"]

ArrayLike = Sequence[float] | np.ndarray


def walkway_graph(
    x: ArrayLike,
    y: ArrayLike,
    u: Sequence[int] | np.ndarray,
    v: Sequence[int] | np.ndarray,
    *,
    width: float | ArrayLike,
    length: ArrayLike | None = None,
    one_way: bool = False,
) -> WalkGraph:
    """A walking graph of nodes at ``(x, y)`` (m) and streets from ``u[i]`` to ``v[i]``.

    Parameters
    ----------
    x, y
        Node coordinates (m).
    u, v
        Ends of each street (node indices).
    width
        Usable width of each street (m), one value or one per street.
    length
        Length of each street (m); the straight distance between its ends by default.
    one_way
        Streets walked from `u` to `v` only (e.g. a ring walked one way round); by default
        both directions share each street's space, as on a real sidewalk.

    Raises
    ------
    ValueError
        A node index out of range, a street from a node to itself, or a length or width
        that is not positive.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length, got {x.shape} and {y.shape}")
    if u.shape != v.shape or u.ndim != 1 or len(u) == 0:
        raise ValueError(f"u and v must be 1-D of one length > 0, got {u.shape} and {v.shape}")
    n, m = len(x), len(u)
    bad = np.flatnonzero((u < 0) | (u >= n) | (v < 0) | (v >= n))
    if len(bad):
        raise ValueError(
            f"street {bad[0]} joins nodes {u[bad[0]]}-{v[bad[0]]}; nodes are 0-{n - 1}"
        )
    loop = np.flatnonzero(u == v)
    if len(loop):
        raise ValueError(f"street {loop[0]} starts and ends at node {u[loop[0]]}")
    w = np.broadcast_to(np.asarray(width, dtype=float), (m,)).copy()
    if length is None:
        length_m = np.hypot(x[v] - x[u], y[v] - y[u])
    else:
        length_m = np.broadcast_to(np.asarray(length, dtype=float), (m,)).copy()
    for name, values in (("width", w), ("length", length_m)):
        bad = np.flatnonzero(~(values > 0) | ~np.isfinite(values))
        if len(bad):
            value = float(values[bad[0]])
            raise ValueError(f"street {bad[0]} has {name} {value:g}; it must be > 0 m")
    pair = np.arange(m, dtype=np.int64)
    if one_way:
        eu, ev, seg, idx = u, v, pair, pair
    else:
        eu, ev = np.concatenate([u, v]), np.concatenate([v, u])
        seg = np.concatenate([pair, pair])
        idx = seg
    k = len(eu)
    return WalkGraph(
        x=x,
        y=y,
        node_street=np.arange(n),
        eu=eu.astype(np.int64),
        ev=ev.astype(np.int64),
        length=length_m[idx].astype(float),
        width=w[idx].astype(float),
        carriageway=np.zeros(k),
        street_edge=idx.astype(np.int64),
        seg=seg,
        street_seg=pair,
        connector=np.zeros(k, dtype=bool),
        crossing=np.zeros(k, dtype=bool),
        course_side=np.full(k, -1, dtype=np.int64),
        course_m=np.full(k, np.nan),
        n_street_segs=m,
    )


class WalkwayModel(CrowdModel):
    """Walkers with origins, destinations and start times on a :func:`walkway_graph`.

    Parameters
    ----------
    graph
        The walking graph.
    dt
        Tick (s).
    free_speed, free_speed_sd
        Mean and SD of individual free walking speeds (m/s; Weidmann 1993: 1.34, 0.26).
    jam_density
        Persons/m2 at which walking stops.
    q_max
        Capacity (persons/(m s)); ``None``: Weidmann's maximum (about 1.22).
    reroute_patience_s
        A walker held this long by a full street takes a detour if one has room
        (``inf``: never).
    seed
        Seed of the model's generator (individual speeds).
    """

    def __init__(
        self,
        graph: WalkGraph,
        *,
        dt: float = 1.0,
        free_speed: float = 1.34,
        free_speed_sd: float = 0.26,
        jam_density: float = 5.4,
        q_max: float | None = None,
        reroute_patience_s: float = np.inf,
        seed: int | np.random.SeedSequence = 0,
    ) -> None:
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt!r}")
        mesa.Model.__init__(self, rng=seed)
        self._seed = seed
        self.graph = graph
        self.dt = float(dt)
        self.tick = 0
        self.jam = float(jam_density)
        self.fd = FundamentalDiagram(free_speed, jam_density=self.jam, q_max=q_max)
        self._free = (float(free_speed), float(free_speed_sd))
        self._patience = float(reroute_patience_s)
        g = graph
        self._seg_len = g.seg_length()
        self._edge_seg = g.seg.astype(np.intp)
        self._out = np.argsort(g.eu, kind="stable").astype(np.intp)
        self._out_start = np.concatenate([[0], np.cumsum(np.bincount(g.eu, minlength=g.n_nodes))])
        self._open = np.ones(g.n_edges, dtype=bool)
        self.detours = 0
        self._send = np.ones(g.n_edges)
        self._recv = np.ones(g.n_segs)
        self._set_widths(g.seg_width())
        self.occ = np.zeros(g.n_segs, dtype=np.int64)
        self._viewers = np.zeros(g.n_segs, dtype=np.int64)
        self.people = People(
            kind=np.zeros(0, np.int8),
            state=np.zeros(0, np.int8),
            edge=np.zeros(0, np.int32),
            s=np.zeros(0),
            node=np.zeros(0, np.int32),
            dest=np.zeros(0, np.int32),
            free_speed=np.zeros(0),
            since=np.zeros(0),
            leave_s=np.zeros(0),
            origin=np.zeros(0, np.int64),
            place=np.zeros(0, np.int64),
            want=np.zeros(0, np.int32),
        )
        self.n_spectators = 0
        self._spectator_mask = None
        self._active = np.zeros(0, dtype=np.int64)
        self._is_active = np.zeros(0, dtype=bool)
        self._spare = np.zeros(0)
        self._tick_states = None
        self._entered: list[np.ndarray] = []
        self.outcomes = {"no_route": 0}
        self._observers = []
        self._dest_nodes: list[int] = []
        self.routes = RoutingTables(g, [])
        self._start = np.zeros(0)
        self._start_edge = np.zeros(0, dtype=np.int64)
        self._start_s = np.zeros(0)
        self._arrival = np.zeros(0)
        self._release_order = np.zeros(0, dtype=np.int64)
        self._released = 0
        self._pass_node: list[np.ndarray] = []
        self._pass_time: list[np.ndarray] = []

    # ------------------------------------------------------------------ walkers

    def add_walkers(  # noqa: C901 - one check per argument, each with its own message
        self,
        origin: Sequence[int] | np.ndarray | None,
        destination: Sequence[int] | np.ndarray,
        *,
        start_s: float | ArrayLike = 0.0,
        edge: Sequence[int] | np.ndarray | None = None,
        offset: ArrayLike | None = None,
        free_speed: ArrayLike | None = None,
    ) -> np.ndarray:
        """Add walkers; returns their row numbers (the index of :attr:`arrival_s`).

        Parameters
        ----------
        origin
            Node where each walker starts (waits there for room on its first street), or
            ``None`` when `edge` is given.
        destination
            Node each walker walks to (by the shortest path); it leaves on arrival.
        start_s
            When each walker starts (s after the model's start), one value or one each.
        edge, offset
            Instead of an origin node: the directed edge (see :meth:`edge_id`) each walker
            starts on and its offset along it (m), e.g. to fill a ring evenly.
        free_speed
            Individual free speeds (m/s); drawn from the model's distribution by default.

        Raises
        ------
        ValueError
            Both or neither of `origin` and `edge`; a node or edge out of range; a start
            time in the past; an offset off its edge; a destination not reachable.
        """
        g = self.graph
        dest = np.atleast_1d(np.asarray(destination, dtype=np.int64))
        n = len(dest)
        if (origin is None) == (edge is None):
            raise ValueError("give either origin nodes or start edges (with offsets), not both")
        if edge is not None:
            e = np.broadcast_to(np.asarray(edge, dtype=np.int64), (n,)).copy()
            bad = np.flatnonzero((e < 0) | (e >= g.n_edges))
            if len(bad):
                raise ValueError(f"walker {bad[0]}: edge {e[bad[0]]} not in 0-{g.n_edges - 1}")
            off = np.broadcast_to(
                np.asarray(0.0 if offset is None else offset, dtype=float), (n,)
            ).copy()
            bad = np.flatnonzero(~((off >= 0) & (off <= g.length[e])))
            if len(bad):
                raise ValueError(
                    f"walker {bad[0]}: offset {float(off[bad[0]]):g} m is off its edge of "
                    f"{g.length[e[bad[0]]]:g} m"
                )
            node = g.eu[e]
            from_node = g.ev[e]
        else:
            node = np.broadcast_to(np.asarray(origin, dtype=np.int64), (n,)).copy()
            e = np.full(n, -1, dtype=np.int64)
            off = np.zeros(n)
            from_node = node
        for name, nodes in (("origin", node), ("destination", dest)):
            bad = np.flatnonzero((nodes < 0) | (nodes >= g.n_nodes))
            if len(bad):
                raise ValueError(
                    f"walker {bad[0]}: {name} node {nodes[bad[0]]} not in 0-{g.n_nodes - 1}"
                )
        start = np.broadcast_to(np.asarray(start_s, dtype=float), (n,)).copy()
        now = self.tick * self.dt
        bad = np.flatnonzero(~(start >= now) | ~np.isfinite(start))
        if len(bad):
            raise ValueError(
                f"walker {bad[0]}: start {float(start[bad[0]]):g} s; it must be finite and >= the "
                f"model's time {now:g} s"
            )
        if free_speed is None:
            mean, sd = self._free
            v0 = np.clip(self.rng.normal(mean, sd, n), 0.3, 2.5)
        else:
            v0 = np.broadcast_to(np.asarray(free_speed, dtype=float), (n,)).copy()
            if not (v0 > 0).all():
                raise ValueError("free_speed must be > 0 m/s for every walker")
        # destinations: one routing tree per distinct node, rebuilt when new ones come
        new = sorted(set(dest.tolist()) - set(self._dest_nodes))
        if new:
            self._dest_nodes.extend(new)
            self.routes = RoutingTables(g, [np.array([d]) for d in self._dest_nodes])
            self.routes.rebuild(self._open)
        row_of = {d: i for i, d in enumerate(self._dest_nodes)}
        dest_row = np.array([row_of[d] for d in dest.tolist()], dtype=np.int32)
        far = ~np.isfinite(self.routes.dist[dest_row, from_node])
        if edge is not None:  # a walker on an edge that ends at its destination has arrived
            far &= from_node != dest
        bad = np.flatnonzero(far)
        if len(bad):
            raise ValueError(
                f"walker {bad[0]}: destination node {dest[bad[0]]} cannot be reached from "
                f"node {from_node[bad[0]]}"
            )
        first = self.people.n
        p = self.people
        extra = {
            "kind": np.full(n, SPECTATOR, np.int8),
            "state": np.full(n, PENDING, np.int8),
            "edge": np.full(n, -1, np.int32),
            "s": np.zeros(n),
            "node": node.astype(np.int32),
            "dest": dest_row,
            "free_speed": v0,
            "since": start,
            "leave_s": np.full(n, np.inf),
            "origin": np.full(n, -1, np.int64),
            "place": np.full(n, -1, np.int64),
            "want": np.full(n, -1, np.int32),
        }
        for name, values in extra.items():
            setattr(p, name, np.concatenate([getattr(p, name), values]))
        self._is_active = np.concatenate([self._is_active, np.zeros(n, dtype=bool)])
        self._spare = np.concatenate([self._spare, np.zeros(n)])
        self._arrival = np.concatenate([self._arrival, np.full(n, np.nan)])
        self._start = np.concatenate([self._start, start])
        self._start_edge = np.concatenate([self._start_edge, e])
        self._start_s = np.concatenate([self._start_s, off])
        pending = np.concatenate(
            [self._release_order[self._released :], np.arange(first, first + n)]
        )
        self._release_order = pending[np.argsort(self._start[pending], kind="stable")]
        self._released = 0
        self._spectator_mask = None
        return np.arange(first, first + n)

    def edge_id(self, u: int, v: int) -> int:
        """The directed edge from node `u` to node `v` (the shortest, if several)."""
        g = self.graph
        hit = np.flatnonzero((g.eu == u) & (g.ev == v))
        if len(hit) == 0:
            raise ValueError(f"no street from node {u} to node {v}")
        return int(hit[np.argmin(g.length[hit])])

    def _release(self, t: float) -> None:
        """Walkers whose start time has come: waiting at their node or walking their edge."""
        order = self._release_order
        end = int(np.searchsorted(self._start[order], t, side="right"))
        if end <= self._released:
            return
        rows = order[self._released : end]
        self._released = end
        p = self.people
        on = rows[self._start_edge[rows] >= 0]
        at = rows[self._start_edge[rows] < 0]
        p.state[at] = WAITING
        e = self._start_edge[on]
        p.edge[on] = e
        p.s[on] = self._start_s[on]
        p.state[on] = WALKING
        np.add.at(self.occ, self._edge_seg[e], 1)
        self._activate(rows)

    # ------------------------------------------------------------------ the tick

    def step(self) -> None:
        """Advance one tick: release walkers whose time has come, then move everybody."""
        t = self.tick * self.dt
        self._entered = []
        self._release(t)
        self._move(t)
        self.tick += 1
        for observer in self._observers:
            observer(self)

    def run(self, until_s: float | None = None) -> WalkwayModel:  # type: ignore[override]
        """Step until `until_s` seconds (or until everybody has arrived, if ``None``)."""
        if until_s is None:
            self.run_until_clear(max_s=np.inf)
            return self
        while self.tick * self.dt < until_s - 1e-9:
            self.step()
        return self

    def run_until_clear(self, *, max_s: float) -> bool:
        """Step until every walker has arrived or `max_s` has passed; True if all did."""
        while self.tick * self.dt < max_s - 1e-9:
            if self._released == len(self._release_order) and len(self._active) == 0:
                if np.isfinite(self._arrival).all():
                    return True
            self.step()
        return bool(np.isfinite(self._arrival).all())

    def _arrive(self, rows: np.ndarray, cur: np.ndarray, t: float) -> None:
        """Walkers at their destination leave the walkways; their arrival is recorded."""
        p = self.people
        when = self._reached_s(rows, t)
        self._arrival[rows] = when
        self._log_passes(cur, when)
        on = rows[p.edge[rows] >= 0]
        np.subtract.at(self.occ, self._edge_seg[p.edge[on]], 1)
        p.edge[rows] = -1
        p.node[rows] = cur
        p.state[rows] = GONE

    def _reroute(self, rows: np.ndarray, cur: np.ndarray, t: float) -> None:
        """No route (cannot happen on a fixed graph whose routes were checked): counted,
        and the walkers keep waiting where they are."""
        self.outcomes["no_route"] += len(rows)

    def _enter(self, rows: np.ndarray, nxt: np.ndarray, seg: np.ndarray) -> np.ndarray:
        p = self.people
        on = rows[p.edge[rows] >= 0]
        if len(on):
            t = self.tick * self.dt
            self._log_passes(self.graph.ev[p.edge[on]], self._reached_s(on, t))
        return super()._enter(rows, nxt, seg)

    def _reached_s(self, rows: np.ndarray, t: float) -> np.ndarray:
        """When walkers at the end of their edge cross its node: when they reached it, if
        they go on at once, else now (the start of the tick that lets them through)."""
        p = self.people
        return np.maximum(t, p.since[rows] + self.dt - self._spare[rows])

    def _log_passes(self, node: np.ndarray, when: np.ndarray) -> None:
        self._pass_node.append(np.asarray(node, dtype=np.int64))
        self._pass_time.append(np.asarray(when, dtype=float))

    # ------------------------------------------------------------------ readings

    @property
    def arrival_s(self) -> np.ndarray:
        """When each walker arrived (s after the start; NaN: not yet)."""
        return self._arrival.copy()

    def passes(self, node: int) -> np.ndarray:
        """Sorted times (s) at which walkers crossed `node` (walked on, or arrived there)."""
        if not self._pass_node:
            return np.zeros(0)
        nodes = np.concatenate(self._pass_node)
        times = np.concatenate(self._pass_time)
        return np.sort(times[nodes == node])

    def flow(self, node: int, start_s: float, end_s: float) -> float:
        """Walkers per second crossing `node` in ``[start_s, end_s)``."""
        if not end_s > start_s:
            raise ValueError(f"end_s ({end_s!r}) must be after start_s ({start_s!r})")
        t = self.passes(node)
        return float(((t >= start_s) & (t < end_s)).sum()) / (end_s - start_s)

    def density(self, edge: int) -> float:
        """Persons per m2 on the street of directed edge `edge` now."""
        seg = int(self._edge_seg[edge])
        return float(self.occ[seg] / self.seg_area[seg])
