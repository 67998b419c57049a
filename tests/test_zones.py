"""Zone systems: places along edges, grid tiles, course segments, named areas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest

from sim.crowd.walkgraph import build_walk_graph
from sim.zones import PIECE_M, build_places, build_zones
from tests.test_crowd import LAT, LON, node_index, tiny_scenario, tiny_world


def test_places_cut_edges_into_pieces_and_nodes_are_places() -> None:
    x = np.array([0.0, 25.0, 25.0])
    y = np.array([0.0, 0.0, 5.0])
    places = build_places(x, y, np.array([0, 1]), np.array([1, 2]), np.array([25.0, 5.0]))
    np.testing.assert_array_equal(places.edge_pieces, [3, 1])  # ceil(25 / 10), at least 1
    assert places.n == 4 + 3  # four pieces and three nodes
    np.testing.assert_allclose(places.x[:3], [25 / 6, 12.5, 25 - 25 / 6])
    where = places.of(
        np.array([0, 0, 1, -1]),
        np.array([0.0, 24.99, 2.0, 0.0]),
        np.array([0, 0, 0, 2]),
        np.array([25.0, 5.0]),
    )
    np.testing.assert_array_equal(where, [0, 2, 3, places.node_place + 2])
    assert PIECE_M == 10.0


def test_every_place_in_one_tile_segments_near_the_course_areas_by_radius(
    tmp_path: Path,
) -> None:
    data = tiny_scenario()
    data["zones"].update(segment_m=200.0, segment_buffer_m=30.0)
    scenario, streets, course = tiny_world(data)
    graph = build_walk_graph(streets, course, scenario)
    places = build_places(graph.x, graph.y, graph.eu, graph.ev, graph.length)
    cxy = (streets.x[course.nodes], streets.y[course.nodes])
    zones = build_zones(places, course, cxy, scenario)
    grid, segment, area = (zones.systems[k] for k in ("grid", "segment", "area"))
    np.testing.assert_array_equal(np.asarray(grid.membership.sum(axis=0)).ravel(), 1)
    assert len(segment.zone_ids) == 2  # 400 m of course in 200 m segments
    in_segment = np.asarray(segment.membership.sum(axis=0)).ravel()
    assert in_segment.max() == 1
    north = places.node_place + node_index(streets, 4)  # 200 m off the course
    centre = places.node_place + node_index(streets, 2)
    assert in_segment[north] == 0 and in_segment[centre] == 1
    inside = np.asarray(area.membership[0].todense()).ravel() > 0
    assert inside[centre] and not inside[north]
    c = node_index(streets, 2)
    d = np.hypot(places.x - streets.x[c], places.y - streets.y[c])
    assert (d[inside] <= 50.0 + 1e-6).all()
    counts = np.zeros(places.n)
    counts[north], counts[centre] = 1, 2
    assert grid.count(counts).sum() == 3
    assert area.count(counts)[0] == 2
    gpkg = zones.write_geopackage(tmp_path / "zones.gpkg")
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    assert layers == {"grid", "segment", "area"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_area_far_from_the_streets_is_an_error_naming_it() -> None:
    data = tiny_scenario()
    data["zones"]["areas"].append({"name": "Far", "lat": LAT + 0.1, "lon": LON, "radius_m": 100})
    scenario, streets, course = tiny_world(data)
    graph = build_walk_graph(streets, course, scenario)
    places = build_places(graph.x, graph.y, graph.eu, graph.ev, graph.length)
    cxy = (streets.x[course.nodes], streets.y[course.nodes])
    from sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"zones\.areas\[1\] \('Far'"):
        build_zones(places, course, cxy, scenario)
