"""The event course on the street graph: waypoints joined by shortest walking paths.

A course gives every spot along the race a kilometre mark, which the crowd uses to
choose viewing spots and the zones use to cut course segments.

A course may come in *pieces*: a waypoint with ``gap = true`` says the race leaves the
simulated streets after it and comes back at the next waypoint (a road stage that rides
out of the region and returns). Nothing is walked between the two; the kilometre marks
jump by the published distance between them (``km`` of both), so every position keeps
the race's own distance from the first waypoint, and anything cut along the course
(segments, viewing stretches) is cut piece by piece and never spans a gap.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from sim.errors import ScenarioError
from sim.scenario import EventConfig, RouteConfig, Scenario
from sim.streets import Streets, to_metres

__all__ = ["Course", "build_course"]


@dataclass(frozen=True, eq=False)
class Course:
    """The course as an ordered walk over the street graph, in one or more pieces.

    Attributes
    ----------
    route
        The scenario's route section it was built from.
    waypoint_node
        Node index each waypoint snapped to.
    waypoint_snap_m
        Distance from each waypoint to that node.
    nodes
        Node indices along the course, in order (consecutive repeats removed within a
        piece); the pieces follow one another.
    edges
        Edge index of each step ``nodes[i] -> nodes[i + 1]``; ``len(edges) == len(nodes)
        - 1``. A step across a gap (last node of a piece to the first of the next) is not
        walked and holds ``-1``.
    cum_m
        Distance from the start at each entry of ``nodes``; across a gap it grows by the
        published distance between the two waypoints.
    waypoint_km
        Kilometre mark of each waypoint on the course.
    piece_start
        Index into ``nodes`` of the first node of each piece (``[0]`` for one piece).
    """

    route: RouteConfig
    waypoint_node: np.ndarray
    waypoint_snap_m: np.ndarray
    nodes: np.ndarray
    edges: np.ndarray
    cum_m: np.ndarray
    waypoint_km: np.ndarray
    piece_start: np.ndarray

    @property
    def length_m(self) -> float:
        """Distance from the first waypoint to the last, gaps included (metres)."""
        return float(self.cum_m[-1])

    @property
    def n_pieces(self) -> int:
        """Number of pieces (1 unless the route has gaps)."""
        return len(self.piece_start)

    @property
    def piece_stop(self) -> np.ndarray:
        """Index into ``nodes`` one past the last node of each piece."""
        return np.append(self.piece_start[1:], len(self.nodes))

    @property
    def piece_m(self) -> np.ndarray:
        """``(n_pieces, 2)``: course distance at the first and last node of each piece."""
        return np.column_stack([self.cum_m[self.piece_start], self.cum_m[self.piece_stop - 1]])

    @property
    def simulated_m(self) -> float:
        """Length of the course on the simulated streets: the pieces, gaps left out."""
        m = self.piece_m
        return float((m[:, 1] - m[:, 0]).sum())

    def piece_xy(self, streets: Streets) -> list[np.ndarray]:
        """Coordinates of each piece on `streets`, one ``(n, 2)`` array per piece.

        Pieces are drawn and written apart, so nothing crosses a gap of the course.
        """
        xy = np.column_stack([streets.x[self.nodes], streets.y[self.nodes]])
        return [xy[a:b] for a, b in zip(self.piece_start, self.piece_stop, strict=True)]

    def steps(self) -> tuple[np.ndarray, np.ndarray]:
        """Node pairs ``(a, b)`` of every walked step of the course (gaps left out)."""
        walked = self.edges >= 0
        return self.nodes[:-1][walked], self.nodes[1:][walked]

    def ends(self) -> np.ndarray:
        """Nodes where a piece begins or ends (the course's ends and both sides of gaps)."""
        return np.unique(
            np.concatenate([self.nodes[self.piece_start], self.nodes[self.piece_stop - 1]])
        )

    def piece_at(self, m: np.ndarray) -> np.ndarray:
        """Piece holding each course position `m` (a position in a gap: the piece before)."""
        starts = self.cum_m[self.piece_start]
        return np.maximum(np.searchsorted(starts, np.asarray(m, float), side="right") - 1, 0)

    def bins(self, m: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cut each piece into runs of `step` metres from its first node.

        Parameters
        ----------
        m
            Course positions (within the pieces).
        step
            Length of a run; the last run of a piece may be shorter.

        Returns
        -------
        index, lo, hi
            Run of each position in `m`, and the course distance where each run begins and
            ends. For a course of one piece run ``k`` is ``[k * step, (k + 1) * step]`` cut at
            the finish; runs never span a gap.
        """
        bounds = self.piece_m
        counts = np.maximum(np.ceil((bounds[:, 1] - bounds[:, 0]) / step).astype(np.int64), 1)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        piece = np.repeat(np.arange(self.n_pieces), counts)
        j = np.arange(int(counts.sum())) - first[piece]
        lo = bounds[piece, 0] + j * step
        hi = np.minimum(bounds[piece, 0] + (j + 1) * step, bounds[piece, 1])
        m = np.asarray(m, dtype=float)
        p = self.piece_at(m)
        within = ((m - bounds[p, 0]) // step).astype(np.int64)
        index = first[p] + np.clip(within, 0, counts[p] - 1)
        return index, lo, hi

    def passes_s(self, event: EventConfig, m: np.ndarray) -> np.ndarray:
        """Seconds after the simulation start when the end of a road race passes `m`.

        The head of the race leaves the first waypoint at ``race.first_start``, passes
        each waypoint with a ``time`` at that time and reaches the finish at
        ``race.finish``; between these marks it rides at constant speed over the course
        distance (gaps at their published length). The end of the race passes
        ``race.tail_min`` later.
        """
        race = event.race
        if race is None or race.kind != "road" or race.finish is None:
            raise ValueError("passes_s needs a road race (event.race.kind = 'road')")
        t0 = dt.datetime.combine(event.date, event.start)

        def secs(t: dt.time) -> float:
            return (dt.datetime.combine(event.date, t) - t0).total_seconds()

        knots_m = [0.0]
        knots_s = [secs(race.first_start)]
        for w, km in zip(self.route.waypoints, self.waypoint_km, strict=True):
            if w.time is not None:
                knots_m.append(float(km) * 1000.0)
                knots_s.append(secs(w.time))
        knots_m.append(self.length_m)
        knots_s.append(secs(race.finish))
        return np.interp(np.asarray(m, float), knots_m, knots_s) + race.tail_min * 60.0

    def km_at(self, streets: Streets, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Kilometre mark of the course node nearest to each point (metres, EPSG:31370)."""
        tree = cKDTree(np.column_stack([streets.x[self.nodes], streets.y[self.nodes]]))
        _, nearest = tree.query(np.column_stack([np.ravel(x), np.ravel(y)]))
        return self.cum_m[nearest] / 1000.0

    def summary(self) -> dict[str, Any]:
        """Course length and the kilometre mark of each named waypoint."""
        out: dict[str, object] = {
            "name": self.route.name,
            "length_km": round(self.length_m / 1000.0, 3),
            "waypoints": [
                {
                    "name": w.name,
                    "kind": w.kind,
                    "km": round(float(km), 3),
                    "published_km": w.km,
                    "snap_m": round(float(s), 1),
                }
                for w, km, s in zip(
                    self.route.waypoints, self.waypoint_km, self.waypoint_snap_m, strict=True
                )
            ],
        }
        if self.n_pieces > 1:
            out["pieces"] = [
                {"from_km": round(float(a) / 1000.0, 3), "to_km": round(float(b) / 1000.0, 3)}
                for a, b in self.piece_m
            ]
            out["simulated_km"] = round(self.simulated_m / 1000.0, 3)
        return out


def build_course(  # noqa: C901 - one pass over the waypoints; gaps, loops and snaps are its cases
    streets: Streets, route: RouteConfig, *, scenario: Scenario | None = None
) -> Course:
    """Chain shortest walking paths between consecutive waypoints of `route`.

    A waypoint with ``gap = true`` ends a piece: the next waypoint starts a new one, and
    the distance between them is the difference of their published ``km``.

    Parameters
    ----------
    streets
        The prepared street graph.
    route
        Ordered waypoints (``[route]`` of the scenario).
    scenario
        Used only to name the scenario file in error messages.

    Raises
    ------
    ScenarioError
        A waypoint lies farther than ``route.max_snap_m`` from any street node, or two
        consecutive waypoints of a piece are not connected.
    """
    where = scenario.where if scenario is not None else (lambda key: key)
    lon = np.array([w.lon for w in route.waypoints])
    lat = np.array([w.lat for w in route.waypoints])
    wx, wy = to_metres(lon, lat)
    snap_node, snap_m = streets.nearest_node(wx, wy)
    for i, (w, dist) in enumerate(zip(route.waypoints, snap_m, strict=True)):
        if dist > route.max_snap_m:
            raise ScenarioError(
                f"{where(f'route.waypoints[{i}]')} ({w.name!r} at {w.lat}, {w.lon}) lies "
                f"{dist:.0f} m from the nearest street of {streets.source.describe()}; "
                f"allowed up to route.max_snap_m = {route.max_snap_m:g} m. Move the waypoint "
                "onto a street inside the street data, or load data that covers it."
            )

    graph, edge_of = _length_matrix(streets)
    nodes: list[int] = [int(snap_node[0])]
    piece_start = [0]
    gap_after: dict[int, float] = {}  # index into nodes of a piece's last node -> gap (m)
    for i in range(1, len(snap_node)):
        src, dst = int(snap_node[i - 1]), int(snap_node[i])
        before = route.waypoints[i - 1]
        if before.gap:
            after_km, before_km = route.waypoints[i].km, before.km
            assert before_km is not None and after_km is not None  # validated
            gap_after[len(nodes) - 1] = (after_km - before_km) * 1000.0
            piece_start.append(len(nodes))
            nodes.append(dst)
            continue
        if src == dst:
            continue
        _, pred = dijkstra(graph, indices=src, return_predecessors=True)
        if pred[dst] < 0:
            raise ScenarioError(
                f"{where(f'route.waypoints[{i}]')} ({route.waypoints[i].name!r}) cannot be "
                f"reached on foot from waypoint {i - 1} in the street graph"
            )
        leg = [dst]
        while leg[-1] != src:
            leg.append(int(pred[leg[-1]]))
        nodes.extend(reversed(leg[:-1]))
    node_arr = np.asarray(nodes, dtype=np.int64)
    edges = np.array(
        [
            -1 if i in gap_after else edge_of[(a, b)]
            for i, (a, b) in enumerate(itertools.pairwise(node_arr.tolist()))
        ],
        dtype=np.int64,
    )
    step_m = np.where(edges >= 0, streets.length[np.maximum(edges, 0)], 0.0)
    for i, gap_m in gap_after.items():
        step_m[i] = gap_m
    cum = np.concatenate([[0.0], np.cumsum(step_m)])
    ends = [p - 1 for p in piece_start[1:]] + [len(node_arr) - 1]
    flat = [k for k, (a, b) in enumerate(zip(piece_start, ends, strict=True)) if cum[b] <= cum[a]]
    if flat:
        first = [i for i, w in enumerate(route.waypoints) if i == 0 or route.waypoints[i - 1].gap]
        k = first[flat[0]]
        raise ScenarioError(
            f"{where(f'route.waypoints[{k}]')}: the course "
            f"{'piece starting here ' if len(piece_start) > 1 else ''}has length 0 on the "
            f"street graph: every waypoint of it snaps to the same street node "
            f"({route.waypoints[k].name!r}). Spread the waypoints along the streets the "
            "race takes."
        )
    # the km of a waypoint is at the first visit of its node at or after the previous one
    # (and at or after the start of its piece)
    waypoint_km = np.empty(len(snap_node))
    pos = 0
    piece = 0
    for i, node in enumerate(snap_node):
        if i > 0 and route.waypoints[i - 1].gap:
            piece += 1
            pos = piece_start[piece]
        pos = pos + int(np.argmax(node_arr[pos:] == node))
        waypoint_km[i] = cum[pos] / 1000.0
    return Course(
        route=route,
        waypoint_node=snap_node,
        waypoint_snap_m=snap_m,
        nodes=node_arr,
        edges=edges,
        cum_m=cum,
        waypoint_km=waypoint_km,
        piece_start=np.asarray(piece_start, dtype=np.int64),
    )


def _length_matrix(streets: Streets) -> tuple[csr_matrix, dict[tuple[int, int], int]]:
    """Sparse matrix of the shortest edge between each pair of nodes, and that edge."""
    order = np.argsort(-streets.length)  # shorter parallel edges overwrite longer ones
    edge_of = {
        (int(u), int(v)): int(e)
        for e, u, v in zip(order, streets.edge_u[order], streets.edge_v[order], strict=True)
    }
    keys = np.array(list(edge_of.keys()), dtype=np.int64).reshape(-1, 2)
    vals = np.array(list(edge_of.values()), dtype=np.int64)
    n = streets.n_nodes
    matrix = csr_matrix((streets.length[vals], (keys[:, 0], keys[:, 1])), shape=(n, n))
    return matrix, edge_of
