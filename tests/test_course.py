"""The course: shortest walking paths between waypoints, with kilometre marks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sim.course import build_course
from sim.errors import ScenarioError
from sim.scenario import load_scenario, parse_scenario
from sim.sketch import build_sketch
from sim.streets import StreetSource, streets_from_file, streets_from_graph, to_metres
from tests.conftest import REGION, SCENARIOS, data_file


def sketch_streets(scenario: Any) -> Any:
    waypoints = [(w.name, w.lat, w.lon) for w in scenario.route.waypoints]
    graph = build_sketch(waypoints, spacing_m=200.0, seed=0)
    return streets_from_graph(graph, source=StreetSource("sketch", "test sketch", "x"))


def test_course_on_sketch_follows_the_straight_legs(minimal: dict[str, Any]) -> None:
    scenario = parse_scenario(minimal)
    streets = sketch_streets(scenario)
    course = build_course(streets, scenario.route)
    x, y = to_metres([w.lon for w in scenario.route.waypoints],
                     [w.lat for w in scenario.route.waypoints])  # fmt: skip
    straight = np.hypot(np.diff(x), np.diff(y)).sum()
    assert course.length_m == pytest.approx(straight, rel=0.02)
    # the walk is continuous: each edge joins consecutive course nodes
    np.testing.assert_array_equal(streets.edge_u[course.edges], course.nodes[:-1])
    np.testing.assert_array_equal(streets.edge_v[course.edges], course.nodes[1:])
    assert (np.diff(course.cum_m) > 0).all()
    assert course.waypoint_km[0] == 0.0
    assert course.waypoint_km[-1] == pytest.approx(course.length_m / 1000)
    assert (np.diff(course.waypoint_km) > 0).all()
    assert (course.waypoint_snap_m < 1.0).all()
    # km_at: a point at a waypoint reads that waypoint's km
    km = course.km_at(streets, streets.x[course.waypoint_node], streets.y[course.waypoint_node])
    np.testing.assert_allclose(km, course.waypoint_km)


def test_waypoint_outside_the_street_data_is_named(minimal: dict[str, Any]) -> None:
    scenario = parse_scenario(minimal)
    streets = sketch_streets(scenario)
    minimal["route"]["waypoints"][1].update(name="Far away", lat=50.70, lon=4.10)
    far = parse_scenario(minimal, source=SCENARIOS / "far.toml")
    with pytest.raises(ScenarioError) as info:
        build_course(streets, far.route, scenario=far)
    message = str(info.value)
    assert "far.toml: route.waypoints[1]" in message and "'Far away'" in message
    assert "max_snap_m" in message


def test_tdf2019_course_on_the_real_region_extract() -> None:
    """DESIGN §3: the 2019 team time trial is 27.6 km; check points at km 13.2 and 20.1."""
    streets = streets_from_file(data_file(REGION))
    scenario = load_scenario(SCENARIOS / "tdf2019_ttt.toml")
    course = build_course(streets, scenario.route, scenario=scenario)
    assert course.length_m / 1000 == pytest.approx(27.6, rel=0.10)
    assert (course.waypoint_snap_m <= scenario.route.max_snap_m).all()
    for waypoint, km in zip(scenario.route.waypoints, course.waypoint_km, strict=True):
        if waypoint.kind == "checkpoint":
            assert km == pytest.approx(waypoint.km, abs=1.0), waypoint.name
