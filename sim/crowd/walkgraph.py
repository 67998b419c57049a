"""The graph pedestrians walk: the street graph with the course split into two sidewalks.

A closed race course is a barrier: people stand on its sidewalks and may cross it only at
the crossing points. To route around a barrier with plain shortest paths, every course
node (visited once by the course, not its two ends) is split in two: the original node
carries the left sidewalk and the side streets on the left of the direction of riding,
a copy carries the right sidewalk and the side streets on the right. A *connector* edge
joins the two copies across the carriageway. While the course is open every connector is
walkable; while it is closed only the connectors within ``people.crossing_radius_m`` of a
crossing point are. Course edges themselves are duplicated, one per sidewalk, each with
half of the street's usable width. Nodes the course visits twice (where it crosses
itself) and its two ends are not split: people may always get round there. A course in
pieces (a road stage leaving the area and coming back) is split piece by piece: the
ends of every piece stay whole, and no course edge joins two pieces.

Every internal edge remembers the street edge it belongs to (``-1`` for connectors), so
truth is reported per street edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from sim.course import Course
from sim.scenario import Scenario
from sim.streets import Streets, to_metres

__all__ = ["MIN_EDGE_LENGTH_M", "WalkGraph", "build_walk_graph", "pair_ids"]

#: An edge shorter than this still holds people: density uses at least this length, so a
#: junction stub of 0.5 m is not jammed by its first walker (assumption).
MIN_EDGE_LENGTH_M = 2.0


def pair_ids(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Dense id of the undirected pair ``{u, v}`` of each edge (both directions share it)."""
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    key = lo.astype(np.int64) * (int(max(u.max(initial=0), v.max(initial=0))) + 1) + hi
    _, inverse = np.unique(key, return_inverse=True)
    return inverse.astype(np.int64)


@dataclass(frozen=True, eq=False)
class WalkGraph:
    """Internal walking graph (see the module docstring).

    Attributes
    ----------
    x, y
        Node coordinates (EPSG:31370 metres); a split copy has its original's coordinates.
    node_street
        Street node index of each internal node.
    eu, ev, length
        Directed internal edges and their lengths (m).
    width
        Usable width (m) with no closure active.
    carriageway
        Extra width (m) while the street is closed to traffic (0 on the course).
    street_edge
        Street edge of each internal edge, ``-1`` for connectors.
    seg
        Internal segment (undirected pair) of each edge; both directions share its space.
    street_seg
        Street segment (undirected street pair) of each internal segment, ``-1`` for
        connectors.
    connector, crossing
        Which edges are connectors, and which connectors lie at a crossing point.
    course_side
        For course sidewalk edges, 0 (left) or 1 (right); -1 elsewhere.
    course_m
        Distance from the start along the course at the middle of each course sidewalk
        edge (NaN elsewhere).
    """

    x: np.ndarray
    y: np.ndarray
    node_street: np.ndarray
    eu: np.ndarray
    ev: np.ndarray
    length: np.ndarray
    width: np.ndarray
    carriageway: np.ndarray
    street_edge: np.ndarray
    seg: np.ndarray
    street_seg: np.ndarray
    connector: np.ndarray
    crossing: np.ndarray
    course_side: np.ndarray
    course_m: np.ndarray
    n_street_segs: int

    @property
    def n_nodes(self) -> int:
        """Number of internal nodes."""
        return len(self.x)

    @property
    def n_edges(self) -> int:
        """Number of internal directed edges."""
        return len(self.eu)

    @property
    def n_segs(self) -> int:
        """Number of internal segments."""
        return int(self.seg.max()) + 1 if len(self.seg) else 0

    def seg_length(self) -> np.ndarray:
        """Length of each internal segment used for densities (at least the minimum)."""
        out = np.zeros(self.n_segs)
        np.maximum.at(out, self.seg, np.maximum(self.length, MIN_EDGE_LENGTH_M))
        return out

    def seg_width(self, extra: np.ndarray | None = None) -> np.ndarray:
        """Usable width of each internal segment; `extra` adds width per edge."""
        width = self.width if extra is None else self.width + extra
        out = np.zeros(self.n_segs)
        np.maximum.at(out, self.seg, width)
        return out


def build_walk_graph(streets: Streets, course: Course, scenario: Scenario) -> WalkGraph:
    """Split the course of `streets` into two sidewalks joined by connectors.

    Parameters
    ----------
    streets
        The prepared street graph.
    course
        The course on it.
    scenario
        Gives the crossing points (``route.crossings``) and ``people.crossing_radius_m``,
        ``people.crossing_width_m``.
    """
    people = scenario.people
    n = streets.n_nodes
    eu0, ev0 = streets.edge_u, streets.edge_v
    cnodes = course.nodes
    visits = np.bincount(cnodes, minlength=n)
    # a course edge: the street pair of a walked course step (not across a gap), either way
    sa, sb = course.steps()
    course_pair = set(zip(np.minimum(sa, sb).tolist(),
                          np.maximum(sa, sb).tolist(), strict=True))  # fmt: skip
    lo, hi = np.minimum(eu0, ev0), np.maximum(eu0, ev0)
    on_course = np.fromiter(
        ((a, b) in course_pair for a, b in zip(lo.tolist(), hi.tolist(), strict=True)),
        dtype=bool,
        count=len(lo),
    )
    # split nodes: visited once, not an end of the course or of one of its pieces
    split = np.zeros(n, dtype=bool)
    inner = cnodes[1:-1]
    split[inner[visits[inner] == 1]] = True
    split[cnodes[0]] = split[cnodes[-1]] = False
    split[course.ends()] = False
    split_nodes = np.flatnonzero(split)
    copy_of = np.full(n, -1, dtype=np.int64)
    copy_of[split_nodes] = n + np.arange(len(split_nodes))
    # tangent of the course at each split node (previous -> next course node)
    pos = np.full(n, -1, dtype=np.int64)
    pos[cnodes] = np.arange(len(cnodes))  # single visit: unique position
    tx = np.zeros(n)
    ty = np.zeros(n)
    k = pos[split_nodes]
    tx[split_nodes] = streets.x[cnodes[k + 1]] - streets.x[cnodes[k - 1]]
    ty[split_nodes] = streets.y[cnodes[k + 1]] - streets.y[cnodes[k - 1]]

    def side_right(node: np.ndarray, other: np.ndarray) -> np.ndarray:
        dx = streets.x[other] - streets.x[node]
        dy = streets.y[other] - streets.y[node]
        return tx[node] * dy - ty[node] * dx < 0  # clockwise of the tangent: right

    eu = eu0.copy()
    ev = ev0.copy()
    side = np.full(len(eu0), -1, dtype=np.int8)
    side[on_course] = 0
    off = ~on_course
    # side streets on the right attach to the right copy
    m = off & split[eu0]
    r = np.zeros(len(eu0), dtype=bool)
    r[m] = side_right(eu0[m], ev0[m])
    eu[r] = copy_of[eu0[r]]
    m = off & split[ev0]
    r = np.zeros(len(eu0), dtype=bool)
    r[m] = side_right(ev0[m], eu0[m])
    ev[r] = copy_of[ev0[r]]
    # right sidewalk: a copy of every course edge between right copies
    ce = np.flatnonzero(on_course)
    ru = np.where(split[eu0[ce]], copy_of[eu0[ce]], eu0[ce])
    rv = np.where(split[ev0[ce]], copy_of[ev0[ce]], ev0[ce])
    # connectors across the carriageway at every split node, both ways
    cw = np.zeros(n)
    np.maximum.at(cw, eu0[ce], streets.carriageway[ce])
    conn_len = np.maximum(cw[split_nodes], 5.0)
    cross_xy = [to_metres(p.lon, p.lat) for p in scenario.route.crossings]
    at_crossing = np.zeros(len(split_nodes), dtype=bool)
    if cross_xy and len(split_nodes):
        tree = cKDTree(np.column_stack([streets.x[split_nodes], streets.y[split_nodes]]))
        for cx, cy in cross_xy:
            near = tree.query_ball_point([float(cx), float(cy)], people.crossing_radius_m)
            if not near:  # at least the nearest course node is a crossing
                near = [int(tree.query([float(cx), float(cy)])[1])]
            at_crossing[near] = True

    n_e0, n_c, n_s = len(eu0), len(ce), len(split_nodes)
    all_u = np.concatenate([eu, ru, split_nodes, copy_of[split_nodes]])
    all_v = np.concatenate([ev, rv, copy_of[split_nodes], split_nodes])
    length = np.concatenate([streets.length, streets.length[ce], conn_len, conn_len])
    width = np.concatenate(
        [
            np.where(on_course, streets.width / 2.0, streets.width),
            streets.width[ce] / 2.0,
            np.full(2 * n_s, people.crossing_width_m),
        ]
    )
    carriageway = np.concatenate(
        [np.where(on_course, 0.0, streets.carriageway), np.zeros(n_c + 2 * n_s)]
    )
    street_edge = np.concatenate([np.arange(n_e0), ce, np.full(2 * n_s, -1)])
    connector = np.concatenate([np.zeros(n_e0 + n_c, bool), np.ones(2 * n_s, bool)])
    crossing = np.concatenate([np.zeros(n_e0 + n_c, bool), at_crossing, at_crossing])
    course_side = np.concatenate([side, np.ones(n_c, np.int8), np.full(2 * n_s, -1, np.int8)])
    # course position of each course edge: its middle, from the course's cum_m
    mid_m = np.full(n_e0, np.nan)
    first = np.zeros(n, dtype=np.int64)
    first[cnodes[::-1]] = np.arange(len(cnodes))[::-1]  # first visit
    a, b = first[eu0[ce]], first[ev0[ce]]
    mid_m[ce] = (course.cum_m[a] + course.cum_m[b]) / 2.0
    course_m = np.concatenate([mid_m, mid_m[ce], np.full(2 * n_s, np.nan)])

    seg = pair_ids(all_u, all_v).astype(np.int32)  # compact: gathered every tick
    street_seg_of_edge = pair_ids(eu0, ev0)
    street_seg = np.full(int(seg.max()) + 1, -1, dtype=np.int64)
    real = street_edge >= 0
    street_seg[seg[real]] = street_seg_of_edge[street_edge[real]]
    x = np.concatenate([streets.x, streets.x[split_nodes]])
    y = np.concatenate([streets.y, streets.y[split_nodes]])
    return WalkGraph(
        x=x,
        y=y,
        node_street=np.concatenate([np.arange(n), split_nodes]),
        eu=all_u.astype(np.int64),
        ev=all_v.astype(np.int64),
        length=length.astype(float),
        width=width.astype(float),
        carriageway=carriageway.astype(float),
        street_edge=street_edge.astype(np.int64),
        seg=seg,
        street_seg=street_seg,
        connector=connector,
        crossing=crossing,
        course_side=course_side,
        course_m=course_m,
        n_street_segs=int(street_seg_of_edge.max()) + 1,
    )
