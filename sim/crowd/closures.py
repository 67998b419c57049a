"""Which walk-graph edges a scenario's closures shut, and when.

One set of rules for everyone who needs them: the crowd model applies them every time
the set of active closures changes, and ``crowdsim compare`` applies them to measure
walking times at a given moment. A street closed to pedestrians is shut; one closed to
traffic gives walkers its carriageway too; a closed course (or closed pieces of a course
in pieces) can be crossed only at crossing points.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from sim.course import Course
from sim.crowd.walkgraph import WalkGraph
from sim.scenario import Scenario
from sim.streets import Streets

__all__ = ["Closure", "closures_from", "connector_pieces", "open_edges"]


@dataclass(frozen=True)
class Closure:
    """One closure of the scenario, in seconds from the event start and walk-graph edges."""

    start_s: float
    end_s: float
    edges: np.ndarray  # internal edges it names (for pedestrians or traffic)
    pedestrians: bool
    course: bool
    pieces: tuple[int, ...] | None = None  # pieces of the course it closes (None: all)

    def active(self, t_s: float) -> bool:
        """Whether the closure holds `t_s` seconds after the event start."""
        return self.start_s <= t_s < self.end_s


def closures_from(scenario: Scenario, streets: Streets, graph: WalkGraph) -> list[Closure]:
    """The scenario's closures on the walk graph, in scenario order."""
    t0 = dt.datetime.combine(scenario.event.date, scenario.event.start)
    out = []
    for c in scenario.closures:
        street_edges = (
            np.concatenate([streets.edges_named(s) for s in c.streets])
            if c.streets
            else np.zeros(0, dtype=np.int64)
        )
        mask = np.zeros(streets.n_edges, dtype=bool)
        mask[street_edges] = True
        internal = np.flatnonzero((graph.street_edge >= 0) & mask[np.maximum(graph.street_edge, 0)])
        start = (dt.datetime.combine(scenario.event.date, c.start) - t0).total_seconds()
        end = (dt.datetime.combine(scenario.event.date, c.end) - t0).total_seconds()
        pieces = tuple(c.pieces) if c.pieces is not None else None
        out.append(Closure(start, end, internal, c.closed_to == "pedestrians", c.course, pieces))
    return out


def connector_pieces(graph: WalkGraph, streets: Streets, course: Course) -> np.ndarray:
    """Piece of the course each connector edge crosses (-1 for edges that are not one)."""
    first_visit = np.zeros(streets.n_nodes, dtype=np.int64)
    first_visit[course.nodes[::-1]] = np.arange(len(course.nodes))[::-1]
    return np.where(
        graph.connector,
        course.piece_at(course.cum_m[first_visit[graph.node_street[graph.eu]]]),
        -1,
    )


def open_edges(
    graph: WalkGraph,
    closures: list[Closure],
    active: tuple[bool, ...],
    connector_piece: np.ndarray,
    *,
    course_closed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Walkable edges, and extra width per edge, while the `active` closures hold.

    Parameters
    ----------
    graph
        The walk graph.
    closures, active
        The scenario's closures and which of them hold.
    connector_piece
        From :func:`connector_pieces`.
    course_closed
        Close the whole course to crossing whatever the closures say.

    Returns
    -------
    open_, extra_width
        Boolean mask of walkable edges; metres of carriageway given to walkers per edge.
    """
    open_ = np.ones(graph.n_edges, dtype=bool)
    extra = np.zeros(graph.n_edges)
    closed_conn = np.zeros(graph.n_edges, dtype=bool)  # connectors of closed pieces only
    for c, on in zip(closures, active, strict=True):
        if not on:
            continue
        if c.pedestrians:
            open_[c.edges] = False
        else:
            extra[c.edges] = graph.carriageway[c.edges]
        if c.course and c.pieces is not None:
            closed_conn |= graph.connector & np.isin(connector_piece, c.pieces)
        else:
            course_closed |= c.course
    if course_closed:
        open_[graph.connector & ~graph.crossing] = False
    elif closed_conn.any():
        open_[closed_conn & ~graph.crossing] = False
    return open_, extra
