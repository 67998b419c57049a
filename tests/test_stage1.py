"""Stage 1 of 2019: a road stage whose course comes in pieces (route gaps), and its scenario.

The multi-piece course is checked on a tiny synthetic street line with known answers; the
scenario ``tdf2019_stage1.toml`` is checked on the real 2013 region extract (skipped when
../shared/data is absent) and run end to end on a reduced population and time span.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point

from sim.course import Course, build_course
from sim.crowd import CrowdModel
from sim.crowd.demand import plan_spectators
from sim.crowd.walkgraph import build_walk_graph
from sim.errors import ScenarioError
from sim.scenario import Scenario, load_scenario, parse_scenario
from sim.streets import Streets, StreetSource, streets_from_file, streets_from_graph, to_metres
from sim.zones import build_places, build_zones
from tests.conftest import REGION, SCENARIOS, data_file

STAGE1 = SCENARIOS / "tdf2019_stage1.toml"

# ----------------------------------------------------------------------------- tiny line

LAT, LON = 50.84, 4.36
DLON = 0.00284  # about 200 m
EDGE_M = 200.0  # every street of the line is exactly this long
#: Six nodes on a west-east line, each joined to the next; a side street north of 2 and 5.
NODES = {i: (LON + (i - 1) * DLON, LAT) for i in range(1, 7)} | {
    7: (LON + DLON, LAT + 0.0018),
    8: (LON + 4 * DLON, LAT + 0.0018),
}
STREETS = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (2, 7), (5, 8)]


def line_streets() -> Streets:
    graph = nx.MultiDiGraph(crs="epsg:4326")
    for node, (x, y) in NODES.items():
        graph.add_node(node, x=x, y=y, street_count=2)
    for u, v in STREETS:
        for a, b in ((u, v), (v, u)):
            graph.add_edge(
                a, b, osmid=u * 10 + v, highway="primary", name=f"S{u}{v}", length=EDGE_M
            )
    return streets_from_graph(graph, source=StreetSource("file", "tiny line", "x"))


def waypoint(node: int, name: str, **extra: Any) -> dict[str, Any]:
    lon, lat = NODES[node]
    return {"name": name, "lat": lat, "lon": lon, **extra}


def two_piece_scenario(**people: Any) -> dict[str, Any]:
    """Piece 0: 1 -> 3 (400 m), gap of 9 km (published km 1.0 -> 10.0), piece 1: 4 -> 6."""
    return {
        "name": "two pieces",
        "event": {
            "name": "road stage (test)",
            "date": "2019-07-06",
            "start": "12:00",
            "end": "15:00",
            "step_s": 5.0,
            "race": {"kind": "road", "first_start": "13:00", "finish": "14:00", "tail_min": 0},
        },
        "streets": {"source": "sketch"},
        "route": {
            "name": "out and back",
            "waypoints": [
                waypoint(1, "A", kind="start"),
                waypoint(3, "B (leaves)", km=1.0, gap=True),
                waypoint(4, "C (comes back)", km=10.0),
                waypoint(6, "D", kind="finish"),
            ],
        },
        "people": {"spectators": {"count": 0}, **people},
        "zones": {"segment_m": 300.0, "segment_buffer_m": 20.0},
    }


def line_world(data: dict[str, Any]) -> tuple[Scenario, Streets, Course]:
    scenario = parse_scenario(data)
    streets = line_streets()
    return scenario, streets, build_course(streets, scenario.route, scenario=scenario)


def test_two_pieces_on_a_line_known_lengths_and_km() -> None:
    _, streets, course = line_world(two_piece_scenario())
    osm = streets.node_id[course.nodes].tolist()
    assert osm == [1, 2, 3, 4, 5, 6]
    assert course.n_pieces == 2
    np.testing.assert_array_equal(course.piece_start, [0, 3])
    # street 3-4 exists but lies in the gap: it is not walked
    assert course.edges[2] == -1 and (course.edges[[0, 1, 3, 4]] >= 0).all()
    # km: 0, 200, 400 m; the gap adds 10.0 - 1.0 = 9 km; then 9400, 9600, 9800 m
    np.testing.assert_allclose(course.cum_m, [0, 200, 400, 9400, 9600, 9800])
    np.testing.assert_allclose(course.waypoint_km, [0.0, 0.4, 9.4, 9.8])
    np.testing.assert_allclose(course.piece_m, [[0, 400], [9400, 9800]])
    assert course.simulated_m == pytest.approx(800.0)
    assert course.length_m == pytest.approx(9800.0)
    a, b = course.steps()
    assert sorted(zip(streets.node_id[a].tolist(), streets.node_id[b].tolist(), strict=True)) == [
        (1, 2),
        (2, 3),
        (4, 5),
        (5, 6),
    ]
    assert sorted(streets.node_id[course.ends()].tolist()) == [1, 3, 4, 6]
    # the coordinates of each piece, for maps and the GeoPackage: none crosses the gap
    pieces = course.piece_xy(streets)
    assert [len(p) for p in pieces] == [3, 3]
    np.testing.assert_array_equal(
        pieces[1][0], [streets.x[course.nodes[3]], streets.y[course.nodes[3]]]
    )


def test_segments_are_cut_per_piece_and_none_spans_the_gap() -> None:
    scenario, streets, course = line_world(two_piece_scenario())
    index, lo, hi = course.bins(np.array([0.0, 299.0, 301.0, 400.0, 9400.0, 9750.0]), 300.0)
    np.testing.assert_array_equal(index, [0, 0, 1, 1, 2, 3])
    np.testing.assert_allclose(lo, [0, 300, 9400, 9700])
    np.testing.assert_allclose(hi, [300, 400, 9700, 9800])
    places = build_places(streets.x, streets.y, streets.edge_u, streets.edge_v, streets.length)
    xy = (streets.x[course.nodes], streets.y[course.nodes])
    seg = build_zones(places, course, xy, scenario).systems["segment"]
    assert seg.zone_ids == ["km0-0.3", "km0.3-0.4", "km9.4-9.7", "km9.7-9.8"]
    # no segment reaches the middle of street 3-4, which lies in the gap
    gap_mid_x = (streets.x[course.nodes[2]] + streets.x[course.nodes[3]]) / 2
    for geom, length in zip(seg.geometry, [300, 100, 300, 100], strict=True):
        assert not geom.contains(Point(gap_mid_x, xy[1][2]))
        # a segment is a buffer of its run of the course: length + 2 * buffer across
        assert geom.bounds[2] - geom.bounds[0] == pytest.approx(length + 2 * 20.0, abs=1.0)
    counted = np.asarray(seg.membership.sum(axis=0)).ravel()
    assert counted.max() <= 1  # every place in at most one segment


def test_walk_graph_splits_each_piece_and_keeps_the_gap_street_open() -> None:
    scenario, streets, course = line_world(two_piece_scenario())
    g = build_walk_graph(streets, course, scenario)
    split = set(streets.node_id[g.node_street[streets.n_nodes :]].tolist())
    assert split == {2, 5}  # inner nodes of the pieces; the ends 1, 3, 4, 6 stay whole
    gap_street = [
        e
        for e in range(streets.n_edges)
        if {int(streets.node_id[streets.edge_u[e]]), int(streets.node_id[streets.edge_v[e]])}
        == {3, 4}
    ]
    assert gap_street and (g.course_side[gap_street] == -1).all()
    on_course = g.course_side >= 0
    assert np.isfinite(g.course_m[on_course]).all()
    # course positions of sidewalk edges lie inside the pieces, never in the gap
    m = g.course_m[on_course]
    assert ((m < 400.0) | (m > 9400.0)).all()


def test_road_race_passing_times_cross_the_gap_at_constant_speed() -> None:
    scenario, _, course = line_world(two_piece_scenario())
    event = scenario.event
    # 13:00 at km 0 (one hour after the 12:00 start), 14:00 at the finish (km 9.8)
    t = course.passes_s(event, np.array([0.0, 4900.0, 9800.0]))
    np.testing.assert_allclose(t, [3600.0, 5400.0, 7200.0])
    assert event.race is not None
    assert event.race.end_time(event.date) == dt.datetime(2019, 7, 6, 14, 0)
    # a waypoint time bends the timetable
    data = two_piece_scenario()
    data["route"]["waypoints"][2]["time"] = "13:55"
    timed, _, timed_course = line_world(data)
    assert timed_course.passes_s(timed.event, np.array([9400.0]))[0] == pytest.approx(6900.0)


def test_each_pieces_crowd_arrives_for_its_piece_and_watches_only_there() -> None:
    lon, lat = NODES[7]
    origin = {"name": "North", "lat": lat, "lon": lon, "kind": "station", "radius_m": 0}
    data = two_piece_scenario(
        spectators={
            "count": 400,
            "origins": [origin],
            "piece_shares": [1.0, 3.0],
            "stretch_m": 200.0,
            "arrival_sd_min": 10.0,
        },
    )
    scenario, streets, course = line_world(data)
    model = CrowdModel(scenario, streets, course, seed=3)
    plan = plan_spectators(
        scenario.people.spectators,
        scenario.event,
        rng=np.random.default_rng(1),
        windows=np.array([[3600.0, 3750.0], [7000.0, 7150.0]]),
    )
    assert plan.group_piece is not None
    share = np.bincount(plan.group_piece, weights=plan.group_size) / 400
    assert share[1] == pytest.approx(0.75, abs=0.1)
    for piece, (first, last) in enumerate([(3600.0, 3750.0), (7000.0, 7150.0)]):
        arrive = plan.group_arrive_s[plan.group_piece == piece]
        assert (arrive <= last).all() and np.median(arrive) < first
    # a piece the race left before the simulated period began draws nobody into it
    late = plan_spectators(
        scenario.people.spectators,
        scenario.event,
        rng=np.random.default_rng(1),
        windows=np.array([[-3000.0, -2000.0], [7000.0, 7150.0]]),
    )
    assert late.group_piece is not None
    assert np.isinf(late.group_arrive_s[late.group_piece == 0]).all()
    assert np.isfinite(late.group_arrive_s[late.group_piece == 1]).any()
    model.run()
    rows = np.arange(model.n_spectators)
    chosen = model.people.dest[rows]
    watched = chosen < model.stretches.n
    assert watched.any()
    piece_of = model._stretch_piece[chosen[watched]]
    np.testing.assert_array_equal(piece_of, model._row_piece[rows[watched]])


def test_a_closure_of_one_piece_closes_only_its_crossings() -> None:
    data = two_piece_scenario()
    data["closures"] = [
        {"name": "afternoon", "course": True, "pieces": [1], "start": "12:00", "end": "15:00"}
    ]
    scenario, streets, course = line_world(data)
    model = CrowdModel(scenario, streets, course, seed=0)
    g = model.graph
    conn = np.flatnonzero(g.connector)
    piece = model._connector_piece[conn]
    assert set(piece.tolist()) == {0, 1}
    assert model._open[conn[piece == 0]].all()
    assert not model._open[conn[piece == 1]].any()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["route"]["waypoints"][-1].update(gap=True, km=11.0), "last waypoint"),
        (lambda d: d["route"]["waypoints"][0].update(gap=True, km=0.0), "single waypoint"),
        (lambda d: d["route"]["waypoints"][2].pop("km"), "needs the published km"),
        (lambda d: d["route"]["waypoints"][2].update(km=0.5), "not after the previous mark"),
        (lambda d: d["people"]["spectators"].update(piece_shares=[1.0]), "one share per piece"),
        (lambda d: d["event"]["race"].pop("finish"), "needs finish"),
        (
            lambda d: d.update(
                closures=[
                    {"name": "x", "course": True, "pieces": [2], "start": "12:00", "end": "13:00"}
                ]
            ),
            "piece 2 does not exist",
        ),
        (
            lambda d: d["route"]["waypoints"][1].update(time="14:30"),
            "before the previous passing time",
        ),
        (
            lambda d: (
                d["event"].update(race={"first_start": "13:00"})
                or d["route"]["waypoints"][1].update(time="13:10")
            ),
            "passing times are for road stages",
        ),
    ],
)
def test_malformed_gap_or_timetable_is_named(change: Any, expected: str) -> None:
    data = copy.deepcopy(two_piece_scenario())
    change(data)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, source=Path("stage.toml"))
    assert expected in str(info.value)
    assert "stage.toml" in str(info.value)


# ----------------------------------------------------------------------------- the scenario


def test_stage1_scenario_validates() -> None:
    scenario = load_scenario(STAGE1)
    race = scenario.event.race
    assert race is not None and race.kind == "road"
    assert race.first_start == dt.time(12, 0) and race.finish is not None
    gaps = [w for w in scenario.route.waypoints if w.gap]
    assert len(gaps) == 1 and gaps[0].km == pytest.approx(7.106)  # the region boundary
    km0 = [w for w in scenario.route.waypoints if w.km == 0.0]
    assert len(km0) == 1 and km0[0].time == dt.time(12, 25)
    assert scenario.route.waypoints[-1].km == 194.5
    assert scenario.people.spectators.piece_shares == [1.0, 2.0]
    assert [c.pieces for c in scenario.closures if c.course] == [[0], [1]]


@pytest.mark.realdata
def test_stage1_pieces_on_the_real_region_extract() -> None:
    """Each piece passes within 150 m of its named waypoints; lengths and crowd plausible.

    No published length was found for the two Brussels parts, so each is compared with
    the straight lines between its waypoints (the walk on the streets may be longer, but
    not much) and with a range around what the 2013 graph gives (measured: 15.89 km from
    Place Royale by km 0 on Bd Mettewie to the region boundary on the Route de Lennik,
    14.98 km from the region boundary on the Avenue de Tervueren to the finish). The
    finish must read the published 194.5 km of race distance (course km minus the
    neutral section).
    """
    streets = streets_from_file(data_file(REGION))
    scenario = load_scenario(STAGE1)
    course = build_course(streets, scenario.route, scenario=scenario)
    assert course.n_pieces == 2
    wps = scenario.route.waypoints
    wx, wy = to_metres([w.lon for w in wps], [w.lat for w in wps])
    cx, cy = streets.x[course.nodes], streets.y[course.nodes]
    for w, x, y in zip(wps, wx, wy, strict=True):
        assert np.hypot(cx - x, cy - y).min() <= 150.0, w.name
    piece = np.cumsum([0] + [int(w.gap) for w in wps[:-1]])
    lengths = course.piece_m[:, 1] - course.piece_m[:, 0]
    for k, (low, high) in enumerate([(13000.0, 19000.0), (12000.0, 18000.0)]):
        idx = np.flatnonzero(piece == k)
        straight = np.hypot(np.diff(wx[idx]), np.diff(wy[idx])).sum()
        assert straight <= lengths[k] <= 1.25 * straight
        assert low <= lengths[k] <= high
    km0 = course.waypoint_km[next(i for i, w in enumerate(wps) if w.km == 0.0)]
    assert course.waypoint_km[-1] - km0 == pytest.approx(194.5, abs=0.01)
    # the reported figures: ~100,000 for the morning piece [RTBF, police, at noon] and
    # ~500,000 over the day in the region [police], spectators plus background
    event, spec = scenario.event, scenario.people.spectators
    assert event.race is not None
    ends = course.piece_m
    windows = np.column_stack([course.passes_s(event, ends[:, i]) for i in (0, 1)])
    plan = plan_spectators(
        spec, event, rng=np.random.default_rng(0), windows=windows - 60.0 * event.race.tail_min
    )
    assert plan.group_piece is not None
    morning = plan.group_piece == 0
    assert plan.group_size[morning].sum() == pytest.approx(100_000, rel=0.02)
    noon = (dt.datetime(2019, 7, 6, 12) - dt.datetime(2019, 7, 6, 9)).total_seconds()
    by_noon = plan.group_size[morning & (plan.group_arrive_s <= noon)].sum()
    assert 0.75 * 100_000 <= by_noon <= 100_000
    assert (plan.group_arrive_s[~morning] > noon).mean() > 0.95  # the afternoon crowd
    assert spec.count + scenario.people.background.count == 500_000


@pytest.mark.realdata
def test_stage1_morning_piece_leaves_the_region_through_anderlecht() -> None:
    """After km 0 the morning piece goes on through Anderlecht and ends where the Route de
    Lennik leaves the region (the last node with its French name, towards Lennik): 7.1 km
    on main roads, passed about ten minutes after the 12:25 start, closed with the morning
    piece and crossable at its crossing points."""
    streets = streets_from_file(data_file(REGION))
    scenario = load_scenario(STAGE1)
    course = build_course(streets, scenario.route, scenario=scenario)
    wps = scenario.route.waypoints
    km0 = next(i for i, w in enumerate(wps) if w.km == 0.0)
    end = next(i for i, w in enumerate(wps) if w.gap)
    assert end > km0
    race_km = course.waypoint_km[end] - course.waypoint_km[km0]
    assert race_km == pytest.approx(wps[end].km, abs=0.01)  # the km stated is the measured one
    assert 5.0 <= race_km <= 9.0
    last = course.nodes[course.piece_stop[0] - 1]
    lennik = streets.edges_named("Route de Lennik")
    on_lennik = np.unique(np.concatenate([streets.edge_u[lennik], streets.edge_v[lennik]]))
    assert last in on_lennik
    assert streets.x[last] == pytest.approx(streets.x[on_lennik].min())  # its western end
    # the stretch after km 0 runs on main roads only
    stop = int(course.piece_stop[0]) - 1  # edges of piece 0 (the next one is the gap)
    after = course.edges[:stop][course.cum_m[:stop] >= course.waypoint_km[km0] * 1000.0]
    assert set(streets.highway[after]) <= {"primary", "secondary", "tertiary"}
    event = scenario.event
    passes = course.passes_s(event, np.array([course.waypoint_km[end] * 1000.0]))[0]
    start = (dt.datetime(2019, 7, 6, 12, 25) - dt.datetime(2019, 7, 6, 9)).total_seconds()
    tail = 60.0 * event.race.tail_min
    assert 5 * 60 <= passes - tail - start <= 15 * 60
    crossings = [
        c for c in scenario.route.crossings if "Anderlecht" in c.name or "Lennik" in c.name
    ]
    cx, cy = to_metres([c.lon for c in crossings], [c.lat for c in crossings])
    piece0 = course.nodes[: stop + 1]
    for c, x, y in zip(crossings, cx, cy, strict=True):
        d = np.hypot(streets.x[piece0] - x, streets.y[piece0] - y).min()
        assert d <= scenario.people.crossing_radius_m, c.name
    assert len(crossings) >= race_km / 1.5  # one every 1-1.5 km, as on the rest


@pytest.mark.realdata
def test_stage1_runs_end_to_end_on_a_reduced_crowd(tmp_path: Path) -> None:
    """1% of the people, 20 minutes around the neutral start, no report (every stage runs)."""
    data_file(REGION)
    from validation.scoring import run_validated

    scenario = load_scenario(STAGE1)
    data = scenario.model_dump(mode="json", exclude_none=True)
    data["people"]["spectators"]["count"] = scenario.people.spectators.count // 100
    data["people"]["background"]["count"] = scenario.people.background.count // 100
    data["event"].update(start="11:50:00", end="12:10:00")
    data["output"]["report"] = False
    # the coarser coverage raster and two estimators keep the test short; all stages run
    data["network"]["raster_m"] = 100.0
    data["estimators"]["methods"] = ["presence", "voronoi"]
    small = parse_scenario(data, source=scenario.source)
    result = run_validated(small, tmp_path / "run", progress=False)
    assert result.manifest["status"] == "ok"
    crowd = result.manifest["facts"]["crowd"]
    assert crowd["spectators"] == 3000
    assert crowd["peak_spectators_present"] > 0
    truth = pd.read_parquet(tmp_path / "run" / "truth_zones.parquet")
    assert set(truth["system"]) >= {"segment", "area"}
    areas = set(truth.loc[truth["system"] == "area", "zone"])
    assert "Grand-Place" in areas
