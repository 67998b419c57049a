"""Tests of the built-in offline Brussels sketch (sim.sketch)."""

from __future__ import annotations

import itertools
import math
import time

import networkx as nx
import numpy as np
import osmnx as ox
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from osmnx.distance import great_circle
from pyproj import Transformer

from sim.sketch import DEFAULT_WAYPOINTS, build_sketch, waypoint_nodes

ALLOWED_HIGHWAYS = {"primary", "secondary", "residential", "footway", "pedestrian"}
SMALL = (  # three points 1 km apart (east, then south) from the Grand-Place
    ("Start", 50.8467, 4.3525),
    ("Turn", 50.8467, 4.3667),
    ("Finish", 50.8377, 4.3667),
)
TO_L72 = Transformer.from_crs("EPSG:4326", "EPSG:31370", always_xy=True)


@pytest.fixture(scope="module")
def sketch() -> nx.MultiDiGraph:
    return build_sketch()


def _gc(graph: nx.MultiDiGraph, u: int, v: int) -> float:
    a, b = graph.nodes[u], graph.nodes[v]
    return float(great_circle(a["y"], a["x"], b["y"], b["x"]))


def _assert_course_paths(graph, waypoints, *, exact_names=True):
    """Shortest paths between consecutive waypoints run on the course, ~straight."""
    nodes = waypoint_nodes(graph, waypoints)
    course_names = {f"{name} (sketch)" for name, _, _ in waypoints[1:]}
    for k, (a, b) in enumerate(itertools.pairwise(nodes)):
        path = nx.shortest_path(graph, a, b, weight="length")
        length = nx.path_weight(graph, path, weight="length")
        straight = float(great_circle(*waypoints[k][1:], *waypoints[k + 1][1:]))
        assert abs(length - straight) <= 0.02 * straight
        for u, v in itertools.pairwise(path):
            data = graph.edges[u, v, 0]
            assert data["highway"] == "primary"
            if exact_names:
                assert data["name"] == f"{waypoints[k + 1][0]} (sketch)"
            else:
                assert data["name"] in course_names


def test_default_waypoints_are_the_course():
    assert 15 <= len(DEFAULT_WAYPOINTS) <= 20
    assert DEFAULT_WAYPOINTS[0][0] == "Palais Royal"
    assert DEFAULT_WAYPOINTS[-1][0] == "Atomium"
    pts = np.array([(lat, lon) for _, lat, lon in DEFAULT_WAYPOINTS])
    chain = great_circle(pts[:-1, 0], pts[:-1, 1], pts[1:, 0], pts[1:, 1]).sum()
    assert 24_000 <= chain <= 28_000


def test_graph_is_an_osmnx_style_sketch(sketch):
    assert sketch.graph["crs"] == "epsg:4326"
    assert sketch.graph["sketch"] is True
    assert 1000 <= sketch.number_of_nodes() <= 10_000
    assert nx.is_strongly_connected(sketch)
    for node, data in sketch.nodes(data=True):
        assert isinstance(node, int)
        assert 4.2 < data["x"] < 4.6 and 50.7 < data["y"] < 51.0
        assert data["street_count"] == len(set(sketch.successors(node))) >= 1


def test_edges_attributes_lengths_and_directions(sketch):
    osmids: dict[int, tuple[int, int]] = {}
    for u, v, key, data in sketch.edges(keys=True, data=True):
        assert key == 0 and u != v
        assert data["highway"] in ALLOWED_HIGHWAYS
        assert isinstance(data["name"], str) and data["name"]
        assert isinstance(data["osmid"], int)
        assert data["oneway"] is False and "geometry" not in data
        assert data["length"] > 0
        assert data["length"] == pytest.approx(_gc(sketch, u, v), rel=0.01)
        back = sketch.edges[v, u, 0]
        assert back["length"] == data["length"] and back["osmid"] == data["osmid"]
        assert back["reversed"] is (not data["reversed"])
        assert osmids.setdefault(data["osmid"], tuple(sorted((u, v)))) == tuple(sorted((u, v)))
    kinds = {d["highway"] for _, _, d in sketch.edges(data=True)}
    assert {"primary", "secondary", "residential", "footway"} <= kinds


def test_a_node_lies_at_every_waypoint(sketch):
    nodes = waypoint_nodes(sketch, DEFAULT_WAYPOINTS)
    assert len(set(nodes)) == len(DEFAULT_WAYPOINTS)
    for node, (_, lat, lon) in zip(nodes, DEFAULT_WAYPOINTS, strict=True):
        data = sketch.nodes[node]
        assert great_circle(lat, lon, data["y"], data["x"]) <= 1.0


def test_course_is_primary_and_dense(sketch):
    course = [(u, v) for u, v, d in sketch.edges(data=True) if d["highway"] == "primary"]
    assert all(_gc(sketch, u, v) <= 101 for u, v in course)
    names = {sketch.edges[u, v, 0]["name"] for u, v in course}
    assert names == {f"{name} (sketch)" for name, _, _ in DEFAULT_WAYPOINTS[1:]}


def test_shortest_paths_follow_the_course(sketch):
    _assert_course_paths(sketch, DEFAULT_WAYPOINTS)


def test_grid_streets_never_cross_the_course(sketch):
    xy = {n: TO_L72.transform(d["x"], d["y"]) for n, d in sketch.nodes(data=True)}
    way = np.array([TO_L72.transform(lon, lat) for _, lat, lon in DEFAULT_WAYPOINTS])
    course = {n for u, v, d in sketch.edges(data=True) if d["highway"] == "primary" for n in (u, v)}

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    for u, v in sketch.edges():
        if u > v or u in course or v in course:
            continue
        p, q = xy[u], xy[v]
        for a, b in itertools.pairwise(way):
            assert not (cross(p, q, a) * cross(p, q, b) < 0 and cross(a, b, p) * cross(a, b, q) < 0)


def test_self_crossing_course_gets_a_junction(sketch):
    course = nx.Graph([(u, v) for u, v, d in sketch.edges(data=True) if d["highway"] == "primary"])
    assert nx.is_connected(course)
    assert max(deg for _, deg in course.degree()) == 4  # Avenue de Tervueren x Montgomery


def test_deterministic_and_seed_sensitive(sketch):
    again = build_sketch(seed=0)
    assert list(again.nodes) == list(sketch.nodes)
    assert nx.utils.graphs_equal(again, sketch)
    assert list(again.edges(keys=True, data=True)) == list(sketch.edges(keys=True, data=True))
    other = build_sketch(seed=1)
    common = set(other) & set(sketch)
    moved = [n for n in common if other.nodes[n]["x"] != sketch.nodes[n]["x"]]
    assert len(moved) > 0.5 * len(common)
    # the course itself does not depend on the seed
    wp = waypoint_nodes(other, DEFAULT_WAYPOINTS)
    assert wp == waypoint_nodes(sketch, DEFAULT_WAYPOINTS)
    with_gen = build_sketch(seed=np.random.default_rng(0))
    assert nx.utils.graphs_equal(with_gen, sketch)


def test_builds_fast(sketch):
    # CPU time, not wall time: the bound is the sketch's own cost, whatever else the
    # machine runs (the wall-clock bound failed on a loaded machine)
    start = time.process_time()
    build_sketch()
    assert time.process_time() - start < 2.0


def test_small_custom_course():
    graph = build_sketch(SMALL, spacing_m=150, margin_m=500, seed=3)
    assert nx.is_strongly_connected(graph)
    assert graph.number_of_nodes() < 500
    _assert_course_paths(graph, SMALL)


def test_two_point_course_without_margin():
    two = SMALL[:2]
    graph = build_sketch(two, margin_m=0)
    assert nx.is_strongly_connected(graph)
    _assert_course_paths(graph, two)


def test_osmnx_can_project_and_truncate(sketch):
    projected = ox.project_graph(sketch, to_crs="EPSG:31370")
    assert str(projected.graph["crs"]).upper() == "EPSG:31370"
    assert projected.number_of_nodes() == sketch.number_of_nodes()
    assert waypoint_nodes(projected, DEFAULT_WAYPOINTS) == waypoint_nodes(sketch, DEFAULT_WAYPOINTS)
    largest = ox.truncate.largest_component(sketch, strongly=True)
    assert largest.number_of_nodes() == sketch.number_of_nodes()
    cut = ox.truncate.truncate_graph_bbox(sketch, (4.35, 50.82, 4.40, 50.86))
    assert 0 < cut.number_of_nodes() < sketch.number_of_nodes()


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"waypoints": []}, "waypoints"),
        ({"waypoints": SMALL[:1]}, "waypoints"),
        ({"waypoints": [("a", 95.0, 4.35), ("b", 50.85, 4.36)]}, "waypoints"),
        ({"waypoints": [("a", 50.84, 4.35), ("b", 50.85, 190.0)]}, "waypoints"),
        ({"waypoints": [("a", math.nan, 4.35), ("b", 50.85, 4.36)]}, "waypoints"),
        ({"waypoints": [("a", 50.84), ("b", 50.85, 4.36)]}, "waypoints"),
        ({"waypoints": [("a", 50.84, 4.35), ("b", 50.84, 4.35)]}, "waypoints"),
        ({"spacing_m": 0}, "spacing_m"),
        ({"spacing_m": -50.0}, "spacing_m"),
        ({"spacing_m": math.nan}, "spacing_m"),
        ({"margin_m": -1.0}, "margin_m"),
        ({"spacing_m": 1.0}, "spacing_m"),  # a grid far too large
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    kwargs.setdefault("waypoints", SMALL)
    with pytest.raises(ValueError, match=argument):
        build_sketch(kwargs.pop("waypoints"), **kwargs)


def test_waypoint_nodes_rejects_a_point_off_the_graph(sketch):
    with pytest.raises(ValueError, match="1 m"):
        waypoint_nodes(sketch, [("nowhere", 50.8500, 4.3000)])


lat = st.floats(50.80, 50.90, allow_nan=False)
lon = st.floats(4.30, 4.45, allow_nan=False)


@st.composite
def courses(draw):
    points = draw(st.lists(st.tuples(lat, lon), min_size=2, max_size=4))
    for (la1, lo1), (la2, lo2) in itertools.pairwise(points):
        assume(great_circle(la1, lo1, la2, lo2) >= 300)
    return tuple((f"W{k}", la, lo) for k, (la, lo) in enumerate(points))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(courses(), st.integers(0, 2**32 - 1))
def test_random_courses(waypoints, seed):
    graph = build_sketch(waypoints, spacing_m=250, margin_m=300, seed=seed)
    assert nx.is_strongly_connected(graph)
    _assert_course_paths(graph, waypoints, exact_names=False)
