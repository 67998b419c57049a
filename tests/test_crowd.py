"""The crowd: walking rules, the split course, routing, and the model's invariants."""

from __future__ import annotations

import copy
import functools
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.course import Course, build_course
from sim.crowd import CrowdModel
from sim.crowd.model import GONE, PENDING, STAYING, WAITING, WALKING
from sim.crowd.movement import (
    FundamentalDiagram,
    admit,
    fruin_los,
    fruin_los_code,
    refill,
    swaps,
    weidmann_speed,
)
from sim.crowd.routing import RoutingTables
from sim.crowd.walkgraph import build_walk_graph
from sim.crowd.world import draw_places
from sim.errors import ScenarioError
from sim.scenario import Scenario, parse_scenario
from sim.streets import Streets, StreetSource, streets_from_graph, streets_from_sketch
from tests.conftest import MINIMAL

# ----------------------------------------------------------------------------- tiny world

LAT, LON = 50.84, 4.36
DLAT, DLON = 0.0018, 0.00284  # about 200 m each
#: A plus: the course runs west -> centre -> east; side streets go north and south of the
#: centre, and "Rue Sud" continues south to a dead end.
NODES = {
    1: (LON - DLON, LAT),  # W, start
    2: (LON, LAT),  # C
    3: (LON + DLON, LAT),  # E, finish
    4: (LON, LAT + DLAT),  # N
    5: (LON, LAT - DLAT),  # S
    6: (LON, LAT - 2 * DLAT),  # S2, dead end
}
STREETS = [
    (1, 2, "primary", "Boulevard Test"),
    (2, 3, "primary", "Boulevard Test"),
    (2, 4, "footway", "Rue Nord"),
    (2, 5, "footway", "Rue Sud"),
    (5, 6, "footway", "Rue Sud"),
]


def tiny_streets() -> Streets:
    graph = nx.MultiDiGraph(crs="epsg:4326")
    for node, (x, y) in NODES.items():
        graph.add_node(node, x=x, y=y, street_count=2)
    for u, v, highway, name in STREETS:
        (x1, y1), (x2, y2) = NODES[u], NODES[v]
        length = float(np.hypot((x2 - x1) * 70_400, (y2 - y1) * 111_200))
        for a, b in ((u, v), (v, u)):
            graph.add_edge(a, b, osmid=u * 10 + v, highway=highway, name=name, length=length)
    return streets_from_graph(graph, source=StreetSource("file", "tiny plus", "x"))


def node_index(streets: Streets, osm: int) -> int:
    return int(np.flatnonzero(streets.node_id == osm)[0])


def tiny_scenario(**people: Any) -> dict[str, Any]:
    lon, lat = NODES[4]
    spectators = {
        "count": 1,
        "group_size_max": 1,
        "stretch_m": 1000.0,
        "origins": [{"name": "North", "lat": lat, "lon": lon, "kind": "station"}],
    }
    spectators.update(people.pop("spectators", {}))
    return {
        "name": "tiny",
        "event": {
            "name": "test",
            "date": "2019-07-07",
            "start": "13:00",
            "end": "14:00",
            "step_s": 1.0,
            "race": {"first_start": "13:20", "teams": 2, "interval_min": 5, "ride_min": 10},
        },
        "streets": {"source": "sketch"},
        "route": {
            "name": "west-east",
            "waypoints": [
                {"name": "W", "lat": NODES[1][1], "lon": NODES[1][0], "kind": "start"},
                {"name": "E", "lat": NODES[3][1], "lon": NODES[3][0], "kind": "finish"},
            ],
        },
        "people": {"spectators": spectators, "free_speed_sd_mps": 0.0, **people},
        "zones": {
            "bin_s": 60.0,
            "areas": [{"name": "centre", "lat": LAT, "lon": LON, "radius_m": 50.0}],
        },
    }


def tiny_world(data: dict[str, Any]) -> tuple[Scenario, Streets, Course]:
    scenario = parse_scenario(data)
    streets = tiny_streets()
    return scenario, streets, build_course(streets, scenario.route, scenario=scenario)


# ----------------------------------------------------------------------------- rules


def test_weidmann_known_values() -> None:
    v0 = np.full(4, 1.34)
    v = weidmann_speed(np.array([0.0, 1.0, 5.4, 9.0]), v0, jam_density=5.4)
    expected_1 = 1.34 * (1 - np.exp(-1.913 * (1.0 - 1 / 5.4)))
    np.testing.assert_allclose(v, [1.34, expected_1, 0.0, 0.0])


def test_fundamental_diagram_capacity_and_node_rule() -> None:
    """Weidmann's q = rho v(rho) peaks at about 1.22 /(m s) near 1.75 /m2; demand and
    supply are its two halves; a capacity parameter scales the flow, not rho_c."""
    fd = FundamentalDiagram(1.34, jam_density=5.4)
    assert 1.20 < fd.q_max < 1.24
    assert 1.65 < fd.rho_c < 1.85
    np.testing.assert_allclose(fd.demand(np.array([0.5, 3.0])), [fd.flow(0.5), fd.q_max])
    np.testing.assert_allclose(fd.supply(np.array([0.5, 3.0])), [fd.q_max, fd.flow(3.0)])
    np.testing.assert_allclose(
        fd.flow(np.array([2.0, 3.0, 4.0, 5.0])), [1.21, 0.99, 0.62, 0.19], atol=0.015
    )
    wide = FundamentalDiagram(1.34, jam_density=5.4, q_max=1.8)
    assert wide.rho_c == fd.rho_c
    np.testing.assert_allclose(wide.flow(3.0), fd.flow(3.0) * 1.8 / fd.q_max)


def test_refill_carries_fractions_over_but_banks_no_burst() -> None:
    credit = np.zeros(2)
    per_tick = np.array([0.4, 3.0])
    for _ in range(10):
        refill(credit, per_tick)
    np.testing.assert_allclose(credit, [1.4, 4.0])  # idle: one walker beyond a tick
    credit[:] = 0.0
    passed = 0
    for _ in range(10):  # a queue that always waits: 0.4 per tick on average
        refill(credit, per_tick)
        n = np.floor(credit[0])
        credit[0] -= n
        passed += int(n)
    assert passed == 4


def test_fruin_level_is_the_worse_of_flow_and_density() -> None:
    # a standing jam: 5.4 /m2 and 21 persons/m/min (flow alone says A) is F
    assert fruin_los_code(np.array([21.0]), np.array([5.4]))[0] == 5
    # area per person 3.3 / 2.3 / 1.4 / 0.9 / 0.46 m2 begin levels A-E, at no flow
    area = np.array([4.0, 3.3, 3.29, 2.3, 1.4, 0.9, 0.46, 0.45])
    codes = fruin_los_code(np.zeros(len(area)), 1.0 / area)
    assert "".join("ABCDEF"[c] for c in codes) == "AABBCDEF"
    assert fruin_los_code(np.array([90.0]), np.array([0.0]))[0] == 5  # heavy flow


def test_fruin_levels_of_service_at_their_limits() -> None:
    flows = np.array([0.0, 22.9, 23.0, 32.9, 33.0, 48.9, 49.0, 65.9, 66.0, 81.9, 82.0, 500.0])
    assert "".join(fruin_los(flows)) == "AABBCCDDEEFF"


def test_admission_is_first_come_first_served_within_room() -> None:
    ok = admit(np.array([3, 3, 3, 1]), np.array([5.0, 1.0, 2.0, 0.0]), np.array([0, 0, 0, 2]))
    np.testing.assert_array_equal(ok, [False, True, True, False])
    ok = admit(np.array([3, 3]), np.array([0.0, 1.0]), np.array([0, 0, 0, 1]))
    np.testing.assert_array_equal(ok, [True, False])


# ----------------------------------------------------------------------------- course barrier


def test_closed_course_is_crossed_only_at_crossing_points() -> None:
    scenario, streets, course = tiny_world(tiny_scenario())
    graph = build_walk_graph(streets, course, scenario)
    north, south = node_index(streets, 4), node_index(streets, 5)
    assert graph.n_nodes == streets.n_nodes + 1  # only the centre is split
    tables = RoutingTables(graph, [np.array([south])])
    side_len = streets.length[(streets.edge_u == north)][0]
    course_len = streets.length[streets.edge_u == node_index(streets, 1)][0]
    tables.rebuild(np.ones(graph.n_edges, dtype=bool))  # open course: cross anywhere
    straight = tables.dist[0, north]
    assert straight == pytest.approx(2 * side_len + 10.5, rel=1e-4)  # 10.5 m carriageway
    closed = ~(graph.connector & ~graph.crossing)
    tables.rebuild(closed)  # closed, no crossing point: round the start of the course
    assert tables.dist[0, north] == pytest.approx(2 * side_len + 2 * course_len, rel=1e-4)
    data = tiny_scenario()
    data["route"]["crossings"] = [{"name": "centre", "lat": LAT, "lon": LON}]
    scenario, streets, course = tiny_world(data)
    graph = build_walk_graph(streets, course, scenario)
    tables = RoutingTables(graph, [np.array([south])])
    tables.rebuild(~(graph.connector & ~graph.crossing))
    assert tables.dist[0, north] == pytest.approx(straight, rel=1e-4)


# ----------------------------------------------------------------------------- the model


def watch(model: CrowdModel) -> dict[str, Any]:
    """Check the invariants after every tick; record when each person first stays."""
    seen: dict[str, Any] = {"first_stay": np.full(model.people.n, np.nan), "gone": 0}

    def check(m: CrowdModel) -> None:
        p, g = m.people, m.graph
        assert np.isin(p.state, [PENDING, WAITING, WALKING, STAYING, GONE]).all()
        assert sum(m.state_counts().values()) == p.n  # nobody lost or duplicated
        gone = int(np.count_nonzero(p.state == GONE))
        assert gone >= seen["gone"]  # nobody comes back from gone
        seen["gone"] = gone
        on = (p.edge >= 0) & np.isin(p.state, [WAITING, WALKING, STAYING])
        assert not ((p.edge >= 0) & np.isin(p.state, [PENDING, GONE])).any()
        occ = np.bincount(g.seg[p.edge[on]], minlength=g.n_segs)
        np.testing.assert_array_equal(occ, m.occ)
        assert (m.occ <= m.seg_cap).all()  # never above jam density
        assert (occ / m.seg_area <= m.jam + 1e-9).all()
        assert m._open[p.edge[on]].all()  # nobody on a closed edge
        new = np.isnan(seen["first_stay"]) & (p.state == STAYING)
        seen["first_stay"][new] = m.tick * m.dt

    model.add_observer(check)
    return seen


def test_a_lone_spectator_walks_at_free_speed_to_the_course() -> None:
    scenario, streets, course = tiny_world(tiny_scenario())
    model = CrowdModel(scenario, streets, course, seed=1)
    seen = watch(model)
    model.run()
    group = model.groups[0]
    walk = streets.length[streets.edge_u == node_index(streets, 4)][0]
    took = seen["first_stay"][0] - group.arrive_s
    assert took == pytest.approx(walk / 1.34, abs=3.0)  # one tick to enter, one to place
    assert model.people.state[0] in (STAYING, WALKING, WAITING, GONE)
    zones = model.truth.zones_table()
    assert (zones["people"] >= zones["spectators"]).all() and (zones["spectators"] >= 0).all()


def test_more_spectators_than_room_are_turned_away_and_reported() -> None:
    data = tiny_scenario(spectators={"count": 3000, "group_size_max": 5, "viewing_density": 0.5})
    scenario, streets, course = tiny_world(data)
    model = CrowdModel(scenario, streets, course, seed=2)
    seen = watch(model)
    model.run()
    facts = model.summary()
    out = facts["outcomes"]
    assert out["turned_away_no_room"] > 0
    assert facts["peak_watching"] <= facts["viewing_capacity"]
    # every spectator watched, was turned away, gave up, or is still on the way to a spot
    p = model.people
    watched = ~np.isnan(seen["first_stay"])
    on_the_way = ~watched & np.isin(p.state, [WAITING, WALKING]) & (p.dest < model.stretches.n)
    accounted = int(watched.sum() + on_the_way.sum())
    accounted += out["turned_away_no_room"] + out["went_home_without_spot"]
    assert accounted == 3000


def test_a_closure_that_cuts_an_origin_off_is_reported() -> None:
    lon, lat = NODES[6]
    data = tiny_scenario(
        spectators={
            "count": 40,
            "origins": [
                {"name": "Dead end", "lat": lat, "lon": lon, "kind": "neighbourhood"},
                {"name": "North", "lat": NODES[4][1], "lon": NODES[4][0], "kind": "station"},
            ],
        }
    )
    data["closures"] = [
        {
            "name": "Rue Sud",
            "streets": ["Rue Sud"],
            "start": "12:00",
            "end": "18:00",
            "closed_to": "pedestrians",
        },
    ]
    scenario, streets, course = tiny_world(data)
    model = CrowdModel(scenario, streets, course, seed=3)
    watch(model)
    model.run()
    facts = model.summary()
    assert facts["unreachable_origins"] == ["Dead end"]
    from_dead_end = int(np.count_nonzero(model.people.origin == 0))
    assert from_dead_end > 0
    assert facts["outcomes"]["unreachable_course"] == from_dead_end


def test_origin_and_area_outside_the_street_data_are_named() -> None:
    data = tiny_scenario()
    data["people"]["spectators"]["origins"][0].update(lat=50.70, lon=4.10)
    scenario, streets, course = tiny_world(data)
    with pytest.raises(ScenarioError, match=r"people\.spectators\.origins\[0\].*North"):
        CrowdModel(scenario, streets, course, seed=0)
    data = tiny_scenario()
    data["zones"]["areas"][0].update(lat=50.70, lon=4.10)
    scenario, streets, course = tiny_world(data)
    with pytest.raises(ScenarioError, match=r"zones\.areas\[0\].*outside"):
        CrowdModel(scenario, streets, course, seed=0)


# ----------------------------------------------------------------------------- the sketch


@functools.cache
def _sketch_world() -> tuple[Streets, Course]:
    scenario = parse_scenario(copy.deepcopy(MINIMAL))
    waypoints = [(w.name, w.lat, w.lon) for w in scenario.route.waypoints]
    streets = streets_from_sketch(waypoints, spacing_m=200.0)
    return streets, build_course(streets, scenario.route)


@pytest.fixture
def sketch_world() -> tuple[Streets, Course]:
    return _sketch_world()


def sketch_scenario(spectators: int, background: int, *, closures: bool) -> Scenario:
    data = copy.deepcopy(MINIMAL)
    data["event"].update(step_s=10.0, race={"first_start": "13:20", "teams": 4})
    data["people"] = {
        "spectators": {
            "count": spectators,
            "arrival_sd_min": 15.0,
            "dwell_tail_min": 5.0,
            "origins": [
                {"name": "Gare Centrale", "lat": 50.8454, "lon": 4.3571, "kind": "station"},
                {"name": "Schuman", "lat": 50.843, "lon": 4.3805, "kind": "station"},
                {"name": "Merode", "lat": 50.8387, "lon": 4.3989, "kind": "station"},
            ],
        },
        "background": {"count": background, "trips_per_day": 20.0},
    }
    data["route"]["crossings"] = [{"name": "Schuman", "lat": 50.8399, "lon": 4.3805}]
    if closures:
        data["closures"] = [
            {"name": "course", "course": True, "start": "13:10", "end": "13:50"},
            {
                "name": "C4",
                "streets": ["Sketch street C4"],
                "start": "13:15",
                "end": "13:40",
                "closed_to": "pedestrians",
            },
            {"name": "C3", "streets": ["Sketch street C3"], "start": "13:05", "end": "13:30"},
        ]
    return parse_scenario(data)


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    spectators=st.integers(0, 3000),
    background=st.integers(0, 1500),
    closures=st.booleans(),
)
def test_invariants_hold_every_tick(
    seed: int, spectators: int, background: int, closures: bool
) -> None:
    streets, course = _sketch_world()
    scenario = sketch_scenario(spectators, background, closures=closures)
    model = CrowdModel(scenario, streets, course, seed=seed)
    watch(model)
    model.run()
    zones = model.truth.zones_table()
    edges = model.truth.edges_table()
    assert (zones[["people", "spectators"]] >= 0).all().all()
    assert (zones["people"] >= zones["spectators"]).all()
    assert (edges["density"] <= scenario.people.jam_density + 1e-9).all()
    if spectators == 0:
        assert zones["spectators"].sum() == 0
    if closures:
        assert model.routes.rebuilds >= 3


def test_same_seed_same_truth_different_seed_different(
    sketch_world: tuple[Streets, Course],
) -> None:
    streets, course = sketch_world
    scenario = sketch_scenario(1500, 800, closures=True)
    runs = [CrowdModel(scenario, streets, course, seed=s).run() for s in (5, 5, 6)]
    tables = [(m.truth.zones_table(), m.truth.edges_table()) for m in runs]
    pd.testing.assert_frame_equal(tables[0][0], tables[1][0])
    pd.testing.assert_frame_equal(tables[0][1], tables[1][1])
    assert not tables[0][0].equals(tables[2][0])
    assert runs[0].summary() == runs[1].summary()


def test_positions_are_in_memory_and_replayable(sketch_world: tuple[Streets, Course]) -> None:
    streets, course = sketch_world
    scenario = sketch_scenario(300, 300, closures=False)
    model = CrowdModel(scenario, streets, course, seed=9)
    snaps = [snap for snap, _ in zip(model.iter_positions(), range(200), strict=False)]
    last = snaps[-1]
    assert np.isfinite(last.x[last.present]).all() and np.isnan(last.x[~last.present]).all()
    replay = model.fresh()
    for _ in range(200):
        replay.step()
    again = replay.positions()
    np.testing.assert_array_equal(again.x, last.x)
    np.testing.assert_array_equal(again.present, last.present)
    # the positions of some people (repeats allowed) are those rows of everybody's
    rows = np.random.default_rng(1).integers(0, model.people.n, 500)
    some = replay.positions(rows=rows)
    for got, whole in ((some.x, again.x), (some.y, again.y), (some.present, again.present),
                       (some.spectator, again.spectator)):  # fmt: skip
        np.testing.assert_array_equal(got, whole[rows])
    assert some.present.any() and some.t_s == again.t_s


def test_counterflow_swaps_pass_full_segments() -> None:
    """Opposite queues between two full segments trade places, first come first served;
    a walker turning round on its own segment passes; nobody off a segment swaps."""
    own = np.array([1, 1, 1, 2, 2, 3, -1, 4])
    want = np.array([2, 2, 2, 1, 1, 3, 2, 5])
    since = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 0.0, 0.0])
    ok = swaps(own, want, since)
    # 3 want 1->2, 2 want 2->1: two swaps, the two earliest of the 1->2 queue
    assert ok.tolist() == [False, True, True, True, True, True, False, False]


def test_a_walker_held_by_a_full_street_detours_after_its_patience() -> None:
    """At the start (W) the way to the North origin runs along one sidewalk of the course;
    with that sidewalk full, the walker waits out ``reroute_patience_s`` and then takes the
    other sidewalk (and the connector across), not before; nobody leaves the full one."""
    scenario, streets, course = tiny_world(tiny_scenario(reroute_patience_s=30.0))
    model = CrowdModel(scenario, streets, course, seed=1)
    model._next_group = len(model.groups)  # no arrivals: one walker placed by hand
    g, p, r = model.graph, model.people, model.routes
    w = node_index(streets, 1)
    dest = model._o0  # the North origin's exits
    assert r.dist[dest, w] > 0
    route = int(r.next_edge[dest, w])
    other = [int(e) for e in np.flatnonzero(g.eu == w) if e != route]
    assert len(other) == 1 and g.seg[other[0]] != g.seg[route]
    model.occ[g.seg[route]] = model.seg_cap[g.seg[route]]  # the route's sidewalk is full
    p.state[0], p.node[0], p.edge[0], p.dest[0], p.want[0] = WAITING, w, -1, dest, -1
    p.since[0] = 0.0
    model._activate(np.array([0]))
    while model.tick * model.dt < 30.0:  # ticks at t = 0 ... 29 s: it queues
        model.step()
        assert p.state[0] == WAITING and p.edge[0] == -1 and p.want[0] == route
    model.step()  # t = 30 s: patience is out
    assert p.edge[0] == other[0] and p.state[0] == WALKING
    assert model.occ[g.seg[other[0]]] == 1
    assert model.summary()["detours"] == 1
    # with a patience longer than the run it never leaves the queue
    scenario, streets, course = tiny_world(tiny_scenario(reroute_patience_s=3600.0))
    model = CrowdModel(scenario, streets, course, seed=1)
    model._next_group = len(model.groups)
    p = model.people
    model.occ[g.seg[route]] = model.seg_cap[g.seg[route]]
    p.state[0], p.node[0], p.edge[0], p.dest[0], p.want[0] = WAITING, w, -1, dest, -1
    model._activate(np.array([0]))
    for _ in range(120):
        model.step()
    assert p.state[0] == WAITING and p.edge[0] == -1 and model.detours == 0


# ----------------------------------------------------------------------------- activity places


def _places(seed: int, **background: Any) -> tuple[np.ndarray, Streets]:
    data = tiny_scenario(background={"count": 10, **background})
    scenario, streets, course = tiny_world(data)
    g = build_walk_graph(streets, course, scenario)
    rng = np.random.default_rng(seed)
    return draw_places(scenario, g, streets.n_nodes, rng=rng), streets


def test_an_activity_place_is_never_at_the_end_of_a_narrow_dead_end() -> None:
    # Rue Sud is a 2.5 m footway: its dead end (6) has 2.5 m of ways out, its middle (5) 5 m
    dead_end, middle = 6, 5
    drawn: set[int] = set()
    for seed in range(40):
        places, streets = _places(seed, activity_places=3)
        drawn |= {int(streets.node_id[n]) for n in places}
        assert len(places) == len(set(places.tolist()))  # one place per node
    assert dead_end not in drawn and middle not in drawn
    assert drawn  # the wide nodes get the places
    # with no width asked for, the dead end can be drawn: the rule is what keeps it out
    loose: set[int] = set()
    for seed in range(40):
        places, streets = _places(seed, activity_places=3, activity_place_min_width_m=0.0)
        loose |= {int(streets.node_id[n]) for n in places}
    assert dead_end in loose


def test_activity_places_same_seed_same_places() -> None:
    a, _ = _places(7, activity_places=2)
    b, _ = _places(7, activity_places=2)
    np.testing.assert_array_equal(a, b)


def test_no_node_wide_enough_for_a_place_is_named() -> None:
    with pytest.raises(ScenarioError, match="activity_place_min_width_m = 500 m"):
        _places(0, activity_place_min_width_m=500.0)
