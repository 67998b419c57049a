"""The crowd's world, built once per run: the walking graph, viewing stretches, origins,
activity places, routing tables, closures and zones.

Nothing here changes while the crowd moves (closures switch edges on and off, but which
closures exist and where is fixed): :func:`build_world` makes it before the first tick,
and :class:`~sim.crowd.model.CrowdModel` only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.course import Course
from sim.crowd.closures import Closure, closures_from, connector_pieces
from sim.crowd.demand import ViewingStretches, build_stretches, last_team_passes_s
from sim.crowd.routing import RoutingTables
from sim.crowd.walkgraph import WalkGraph, build_walk_graph
from sim.errors import ScenarioError
from sim.scenario import Scenario
from sim.streets import Streets, to_metres
from sim.zones import Places, Zones, build_places, build_zones

__all__ = ["CrowdWorld", "build_world", "draw_places"]


@dataclass(frozen=True, eq=False)
class CrowdWorld:
    """Everything about where the crowd walks that is fixed for a run.

    Attributes
    ----------
    graph
        The walking graph (:mod:`sim.crowd.walkgraph`).
    stretches
        Viewing stretches along the course (:mod:`sim.crowd.demand`).
    last_pass_s
        When the last team passes each stretch (s after the start).
    origin_node, origin_exits
        Street node of each spectator origin, and the nodes its people come out at.
    place_node
        Street node of each background activity place (:func:`draw_places`).
    routes
        Routing tables toward stretches, then origins, then places (rows in that order:
        :attr:`o0` and :attr:`p0` are the first origin and first place row).
    connector_piece, closures
        Course piece at each connector, and the scenario's closures on the graph.
    seg_len, edge_seg
        Length of each segment (for densities) and segment of each edge (``intp``).
    out, out_start
        Out-edges of each node as CSR arrays: ``out[out_start[n]:out_start[n + 1]]``.
    view_cap, stretch_side
        Viewing room per segment; viewing edges of each stretch per side (CSR).
    places, zones
        Places people are counted at, and the zone systems.
    """

    graph: WalkGraph
    stretches: ViewingStretches
    last_pass_s: np.ndarray
    origin_node: np.ndarray
    origin_exits: list[np.ndarray]
    place_node: np.ndarray
    routes: RoutingTables
    connector_piece: np.ndarray
    closures: list[Closure]
    seg_len: np.ndarray
    edge_seg: np.ndarray
    out: np.ndarray
    out_start: np.ndarray
    view_cap: np.ndarray
    stretch_side: tuple[np.ndarray, np.ndarray]
    places: Places
    zones: Zones

    @property
    def o0(self) -> int:
        """First routing row of an origin."""
        return self.stretches.n

    @property
    def p0(self) -> int:
        """First routing row of an activity place."""
        return self.stretches.n + len(self.origin_node)


def build_world(
    scenario: Scenario, streets: Streets, course: Course, *, rng: np.random.Generator
) -> CrowdWorld:
    """Build the crowd's world for `scenario` on `streets` and `course`.

    `rng` draws the activity places (the only random part).

    Raises
    ------
    ScenarioError
        An origin lies outside the street data, or a named area does.
    """
    people_cfg = scenario.people
    g = build_walk_graph(streets, course, scenario)
    stretches = build_stretches(g, course, people_cfg, source=str(scenario.source or "<scenario>"))
    last_pass = last_team_passes_s(
        scenario.event, stretches.course_m, course.length_m, course=course
    )
    origin_node = _snap_origins(scenario, streets)
    place_node = draw_places(scenario, g, streets.n_nodes, rng=rng)
    origin_exits = _exits(scenario, streets, origin_node)
    dests = [*stretches.nodes, *origin_exits, *([n] for n in place_node)]
    # viewing room: one directed edge per segment holds the viewers of that segment
    view_cap = np.zeros(g.n_segs, dtype=np.int64)
    np.add.at(view_cap, g.seg[stretches.edges], stretches.edge_capacity)
    places = build_places(g.x, g.y, g.eu, g.ev, g.length)
    cx, cy = streets.x[course.nodes], streets.y[course.nodes]
    return CrowdWorld(
        graph=g,
        stretches=stretches,
        last_pass_s=last_pass,
        origin_node=origin_node,
        origin_exits=origin_exits,
        place_node=place_node,
        routes=RoutingTables(g, dests),
        # piece of the course at each connector (-1 elsewhere): closures may name pieces
        connector_piece=connector_pieces(g, streets, course),
        closures=closures_from(scenario, streets, g),
        seg_len=g.seg_length(),
        edge_seg=g.seg.astype(np.intp),  # intp: other index types are cast per gather
        out=np.argsort(g.eu, kind="stable").astype(np.intp),
        out_start=np.concatenate([[0], np.cumsum(np.bincount(g.eu, minlength=g.n_nodes))]),
        view_cap=view_cap,
        stretch_side=_side_tables(stretches, g),
        places=places,
        zones=build_zones(places, course, (cx, cy), scenario),
    )


def draw_places(
    scenario: Scenario, g: WalkGraph, n_street_nodes: int, *, rng: np.random.Generator
) -> np.ndarray:
    """Draw the background's activity places: street nodes that can carry their visitors.

    A place is drawn uniformly among the street nodes whose ways out (on the walking
    graph, with no closure) are together at least
    ``people.background.activity_place_min_width_m`` wide. Real shops, offices and venues
    sit on streets that carry their visitors; a node drawn among all nodes can be the end
    of a 2 m service way, and the one place in a district then sends thousands of trips
    through 2 m, a queue no real place has. A 4 m street passing through has 8 m of ways
    out, so the default 8 m keeps every ordinary street and drops only dead ends and
    narrow ways. The draw stays uniform among those nodes (no weight by width): how much
    activity a street has is not in the street data, and a weight would add a second
    assumption.

    Returns
    -------
    numpy.ndarray
        The street node of each place (none when there is no background).

    Raises
    ------
    ScenarioError
        No street node is wide enough. (With fewer wide nodes than
        ``people.background.activity_places``, each wide node gets one place.)
    """
    bg = scenario.people.background
    if not bg.count:
        return np.zeros(0, dtype=np.int64)
    street = g.eu < n_street_nodes
    ways_out = np.bincount(g.eu[street], weights=g.width[street], minlength=n_street_nodes)
    wide = np.flatnonzero(ways_out >= bg.activity_place_min_width_m)
    if not len(wide):
        raise ScenarioError(
            f"{scenario.where('people.background.activity_place_min_width_m')} = "
            f"{bg.activity_place_min_width_m:g} m: none of the {n_street_nodes} street nodes "
            f"has ways out that wide together, so the background has nowhere to go; "
            f"lower it (the widest node has {ways_out.max():g} m)."
        )
    n = min(bg.activity_places, len(wide))  # one place per node (small worlds have few)
    return rng.choice(wide, size=n, replace=False).astype(np.int64)


def _snap_origins(scenario: Scenario, streets: Streets) -> np.ndarray:
    spec = scenario.people.spectators
    if not spec.origins:
        return np.zeros(0, dtype=np.int64)
    lon = np.array([o.lon for o in spec.origins])
    lat = np.array([o.lat for o in spec.origins])
    x, y = to_metres(lon, lat)
    node, dist = streets.nearest_node(x, y)
    limit = scenario.people.origin_max_snap_m
    for i, (o, d) in enumerate(zip(spec.origins, dist, strict=True)):
        if d > limit:
            raise ScenarioError(
                f"{scenario.where(f'people.spectators.origins[{i}]')} ({o.name!r} at "
                f"{o.lat}, {o.lon}) lies {d:.0f} m from the nearest street of "
                f"{streets.source.describe()}; allowed up to "
                f"people.origin_max_snap_m = {limit:g} m. Move it inside the street data."
            )
    return node


def _exits(scenario: Scenario, streets: Streets, origin_node: np.ndarray) -> list[np.ndarray]:
    """Street nodes within each origin's ``radius_m`` (at most 12, nearest first)."""
    spec = scenario.people.spectators
    out = []
    for o, nearest in zip(spec.origins, origin_node, strict=True):
        x, y = to_metres(o.lon, o.lat)
        d = np.hypot(streets.x - float(x), streets.y - float(y))
        near = np.flatnonzero(d <= o.radius_m)
        near = near[np.argsort(d[near], kind="stable")][:12]
        out.append(np.unique(np.concatenate([[nearest], near]).astype(np.int64)))
    return out


def _side_tables(st: ViewingStretches, g: WalkGraph) -> tuple[np.ndarray, np.ndarray]:
    """Viewing edges of each stretch on each side, one directed edge per segment, as
    CSR arrays: the edges of stretch k, side s are ``edges[start[2k+s]:start[2k+s+1]]``
    (both sides' edges if a side has none)."""
    chunks = []
    for k in range(st.n):
        edges = st.edges[st.edge_start[k] : st.edge_start[k + 1]]
        _, first = np.unique(g.seg[edges], return_index=True)
        edges = edges[np.sort(first)]
        sides = [edges[g.course_side[edges] == side] for side in (0, 1)]
        chunks.extend(s if len(s) else edges for s in sides)
    sizes = np.array([len(c) for c in chunks], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)])
    edges = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return start, np.concatenate([edges, [0]]).astype(np.int64)
