"""Walking times on a run's walk graph, at the free walking speed, with its closures.

Shortest walks run on the walk graph as the crowd sees it (:mod:`sim.crowd.walkgraph`):
the course is a barrier crossable only at crossing points while it is closed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from sim.course import Course, build_course
from sim.crowd.closures import closures_from, connector_pieces, open_edges
from sim.crowd.routing import walk_matrix
from sim.crowd.walkgraph import WalkGraph, build_walk_graph
from sim.runfolder import RunFolder
from sim.scenario import Scenario
from sim.streets import Streets
from sim.streets import to_metres as _to_metres

__all__ = [
    "ACROSS_OFFSET_M",
    "FREE_SPEED_MPS",
    "World",
    "across_minutes",
    "build_world",
    "station_minutes",
    "union_points",
]

#: Free walking speed for walking times (Weidmann 1993, DESIGN §3), m/s.
FREE_SPEED_MPS = 1.34
#: How far either side of the course the walks across it start and end (m).
ACROSS_OFFSET_M = 125.0


def _reference_s(scenario: Scenario) -> float:
    """Seconds after the start at which walks are measured: the first team's start (when
    spectators want to be in place), else the middle of the event."""
    event = scenario.event
    if event.race is not None:
        start = dt.datetime.combine(event.date, event.start)
        t = (dt.datetime.combine(event.date, event.race.first_start) - start).total_seconds()
        if 0.0 <= t <= event.duration_s:
            return t
    return event.duration_s / 2.0


@dataclass(frozen=True, eq=False)
class World:
    """One run's streets, course, walk graph and walking matrices."""

    run: RunFolder
    streets: Streets
    course: Course
    graph: WalkGraph
    walk_now: csr_matrix  # closures as at the reference moment
    walk_closed: csr_matrix  # and the course closed


def build_world(run: RunFolder, streets: Streets) -> World:
    """The run's course, walk graph and walking matrices at the reference moment."""
    scen = run.scenario
    course = build_course(streets, scen.route, scenario=scen)
    graph = build_walk_graph(streets, course, scen)
    # walkable edges at the reference moment by the crowd model's own closure rules, as
    # they are and with the whole course closed to crossing
    t = _reference_s(scen)
    closures = closures_from(scen, streets, graph)
    active = tuple(c.active(t) for c in closures)
    piece = connector_pieces(graph, streets, course)
    now, closed = (
        walk_matrix(graph, open_edges(graph, closures, active, piece, course_closed=shut)[0])
        for shut in (False, True)
    )
    return World(run, streets, course, graph, now, closed)


def station_minutes(world: World, stations: list[tuple[str, float, float]]) -> np.ndarray:
    """Minutes of walking from each station's nearest street node to the nearest course
    sidewalk (either side), with the closures of the reference moment."""
    if not stations:
        return np.zeros(0)
    g = world.graph
    side = g.course_side >= 0
    targets = np.unique(np.concatenate([g.eu[side], g.ev[side]]))
    x, y = _to_metres([s[2] for s in stations], [s[1] for s in stations])
    node, _ = world.streets.nearest_node(x, y)
    dist = dijkstra(world.walk_now, indices=node)
    return np.atleast_2d(dist)[:, targets].min(axis=1) / FREE_SPEED_MPS / 60.0


def across_minutes(world: World, points: list[tuple[str, float, float]]) -> np.ndarray:
    """Minutes of walking across the closed course near each point: from a street node
    about ``ACROSS_OFFSET_M`` to one side of the course to one as far on the other side
    (mean of both directions); NaN where no such node exists."""
    streets, course = world.streets, world.course
    cn = course.nodes
    cx, cy = streets.x[cn], streets.y[cn]
    course_tree = cKDTree(np.column_stack([cx, cy]))
    off = np.ones(streets.n_nodes, dtype=bool)
    off[cn] = False
    cand = np.flatnonzero(off)
    cand_xy = np.column_stack([streets.x[cand], streets.y[cand]])
    # the side of every candidate: sign against the course's local direction
    _, k = course_tree.query(cand_xy)
    lo, hi = np.maximum(k - 1, 0), np.minimum(k + 1, len(cn) - 1)
    tx, ty = cx[hi] - cx[lo], cy[hi] - cy[lo]
    cand_left = tx * (cand_xy[:, 1] - cy[k]) - ty * (cand_xy[:, 0] - cx[k]) > 0
    cand_tree = cKDTree(cand_xy)
    out = np.full(len(points), np.nan)
    for i, (_, lat, lon) in enumerate(points):
        px, py = (float(v) for v in _to_metres(lon, lat))
        _, j = course_tree.query([px, py])
        a, b = max(j - 1, 0), min(j + 1, len(cn) - 1)
        t = np.array([cx[b] - cx[a], cy[b] - cy[a]])
        t /= max(float(np.hypot(*t)), 1e-9)
        normal = np.array([-t[1], t[0]])  # to the left of the riding direction
        ends = []
        for sign, want_left in ((1.0, True), (-1.0, False)):
            target = np.array([cx[j], cy[j]]) + sign * ACROSS_OFFSET_M * normal
            near = cand_tree.query_ball_point(target, 4 * ACROSS_OFFSET_M)
            near = [m for m in near if cand_left[m] == want_left]
            if not near:
                break
            d = np.hypot(cand_xy[near, 0] - target[0], cand_xy[near, 1] - target[1])
            ends.append(int(cand[near[int(np.argmin(d))]]))
        if len(ends) < 2:
            continue
        dist = dijkstra(world.walk_closed, indices=ends)
        metres = (dist[0, ends[1]] + dist[1, ends[0]]) / 2.0
        out[i] = metres / FREE_SPEED_MPS / 60.0
    return out


def union_points(*lists: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points of both runs once each, in order (same name within 10 m: one point), so a
    crossing point removed in B is still measured in B, where it was."""
    out: list[tuple[str, float, float]] = []
    seen: list[tuple[str, float, float]] = []  # name, x, y
    for items in lists:
        for name, lat, lon in items:
            x, y = (float(v) for v in _to_metres(lon, lat))
            if not any(n == name and np.hypot(x - sx, y - sy) < 10.0 for n, sx, sy in seen):
                seen.append((name, x, y))
                out.append((name, lat, lon))
    return out
