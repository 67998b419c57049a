"""Street sources: every file type, the place query, the sketch, the cache, and bad data."""

from __future__ import annotations

import bz2
import gzip
import shutil
from pathlib import Path

import networkx as nx
import numpy as np
import osmium
import osmnx as ox
import pytest

from sim import streets as streets_mod
from sim.errors import StreetDataError
from sim.scenario import StreetsConfig
from sim.streets import (
    SIDEWALK_WIDTH_M,
    load_streets,
    streets_from_file,
    streets_from_place,
    streets_from_sketch,
)
from tests.conftest import CITY_DRIVE, PENTAGON, data_file

#: osmnx's own figures for the Pentagon walk extract (shared/data/README.md).
PENTAGON_NODES, PENTAGON_EDGES = 2155, 6592


def check_prepared(streets: streets_mod.Streets) -> None:
    """What every prepared graph promises the crowd and network models."""
    assert streets.graph.graph["crs"].to_epsg() == 31370
    assert nx.is_strongly_connected(streets.graph)
    assert streets.n_edges == streets.graph.number_of_edges()
    assert len(streets.x) == len(streets.y) == streets.n_nodes
    for arr in (streets.edge_v, streets.length, streets.width, streets.highway, streets.name):
        assert len(arr) == streets.n_edges
    assert (streets.length > 0).all() and (streets.width > 0).all()
    assert (streets.carriageway >= 0).all()
    # Lambert 72 coordinates of Brussels
    assert 130_000 < streets.x.mean() < 170_000 and 150_000 < streets.y.mean() < 190_000
    # arrays agree with the graph
    u = streets.node_id[streets.edge_u[0]]
    v = streets.node_id[streets.edge_v[0]]
    assert streets.graph.has_edge(u, v)


def test_pentagon_osm_bz2_matches_osmnx(tmp_path: Path) -> None:
    streets = streets_from_file(data_file(PENTAGON), cache_dir=tmp_path)
    check_prepared(streets)
    assert (streets.n_nodes, streets.n_edges) == (PENTAGON_NODES, PENTAGON_EDGES)
    assert streets.source.kind == "file" and not streets.source.cached
    assert "real OpenStreetMap" in streets.source.describe()
    # widths follow DESIGN §3 by highway class where no tag says otherwise
    footway = streets.highway == "footway"
    assert footway.any()
    assert np.median(streets.width[footway]) == SIDEWALK_WIDTH_M["footway"]
    assert len(streets.edges_named("Rue Royale")) > 0
    assert len(streets.edges_named("koningsstraat")) > 0  # either language, any case


@pytest.mark.parametrize("fmt", ["osm", "osm.gz", "osm.pbf"])
def test_other_osm_formats_give_the_same_graph(tmp_path: Path, fmt: str) -> None:
    source = data_file(PENTAGON)
    dest = tmp_path / f"pentagon.{fmt}"
    if fmt == "osm":
        dest.write_bytes(bz2.decompress(source.read_bytes()))
    elif fmt == "osm.gz":
        dest.write_bytes(gzip.compress(bz2.decompress(source.read_bytes())))
    else:
        with osmium.SimpleWriter(str(dest)) as writer:
            for obj in osmium.FileProcessor(str(source)):
                writer.add(obj)
    streets = streets_from_file(dest, cache_dir=tmp_path / "cache")
    check_prepared(streets)
    assert (streets.n_nodes, streets.n_edges) == (PENTAGON_NODES, PENTAGON_EDGES)


def test_graphml_gz(tmp_path: Path) -> None:
    streets = streets_from_file(data_file(CITY_DRIVE), cache_dir=tmp_path)
    check_prepared(streets)
    assert streets.n_nodes > 2000


def test_walk_filter_drops_what_is_not_walkable(tmp_path: Path) -> None:
    osm = tmp_path / "mixed.osm"
    nodes = "".join(
        f'<node id="{i}" lat="{50.84 + i * 0.001}" lon="4.36" version="1"/>' for i in range(1, 7)
    )
    osm.write_text(
        "<?xml version='1.0' encoding='UTF-8'?><osm version='0.6'>"
        + nodes
        + '<way id="1" version="1"><nd ref="1"/><nd ref="2"/><nd ref="3"/>'
        '<tag k="highway" v="residential"/><tag k="name" v="Rue Test"/></way>'
        '<way id="2" version="1"><nd ref="3"/><nd ref="4"/><tag k="highway" v="motorway"/></way>'
        '<way id="3" version="1"><nd ref="4"/><nd ref="5"/><tag k="building" v="yes"/></way>'
        '<way id="4" version="1"><nd ref="5"/><nd ref="6"/><tag k="highway" v="footway"/>'
        '<tag k="access" v="private"/></way></osm>',
        encoding="utf-8",
    )
    streets = streets_from_file(osm, cache_dir=tmp_path / "cache")
    assert set(streets.highway) == {"residential"}
    assert set(streets.name) == {"Rue Test"}


def test_missing_corrupt_and_streetless_files(tmp_path: Path) -> None:
    with pytest.raises(StreetDataError, match="not found"):
        streets_from_file(tmp_path / "absent.osm.bz2")
    bad = tmp_path / "bad.osm.bz2"
    bad.write_bytes(b"this is not bzip2 at all" * 10)
    with pytest.raises(StreetDataError, match=r"bad\.osm\.bz2: cannot read it"):
        streets_from_file(bad, cache_dir=tmp_path)
    empty = tmp_path / "buildings.osm"
    empty.write_text(
        "<?xml version='1.0'?><osm version='0.6'><node id='1' lat='50.8' lon='4.3'/>"
        "<node id='2' lat='50.81' lon='4.3'/><way id='1'><nd ref='1'/><nd ref='2'/>"
        "<tag k='building' v='yes'/></way></osm>",
        encoding="utf-8",
    )
    with pytest.raises(StreetDataError, match="no walkable street"):
        streets_from_file(empty, cache_dir=tmp_path)
    wrong = tmp_path / "streets.csv"
    wrong.write_text("x,y\n", encoding="utf-8")
    with pytest.raises(StreetDataError, match="unknown street file type"):
        streets_from_file(wrong)
    bad_graphml = tmp_path / "g.graphml"
    bad_graphml.write_text("<graphml", encoding="utf-8")
    with pytest.raises(StreetDataError, match="GraphML"):
        streets_from_file(bad_graphml, cache_dir=tmp_path)


def test_cache_is_keyed_by_content_and_survives_damage(tmp_path: Path) -> None:
    source = tmp_path / "pentagon.osm.bz2"
    shutil.copy(data_file(PENTAGON), source)
    first = streets_from_file(source, cache_dir=tmp_path / "cache")
    second = streets_from_file(source, cache_dir=tmp_path / "cache")
    assert not first.source.cached and second.source.cached
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.width, second.width)
    entries = list((tmp_path / "cache").glob("streets-*.npz"))
    assert len(entries) == 1
    entries[0].write_bytes(b"damaged")
    third = streets_from_file(source, cache_dir=tmp_path / "cache")
    assert not third.source.cached and third.n_edges == first.n_edges
    # a bounding box is part of the key: a cut graph is a different entry
    cut = streets_from_file(
        source,
        cache_dir=tmp_path / "cache",
        bbox=streets_mod.BboxConfig(south=50.840, west=4.345, north=50.850, east=4.360),
    )
    assert cut.n_nodes < first.n_nodes and not cut.source.cached


def test_place_query_with_cache_and_offline_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    pentagon = ox.graph_from_xml(data_file(PENTAGON), bidirectional=True)

    def fake_place(query: str, **kwargs: object) -> nx.MultiDiGraph:
        calls.append(query)
        return pentagon

    monkeypatch.setattr(ox, "graph_from_place", fake_place)
    streets = streets_from_place("Brussels, Belgium", cache_dir=tmp_path)
    check_prepared(streets)
    assert streets.source.kind == "place" and "downloaded" in streets.source.describe()
    again = streets_from_place("Brussels, Belgium", cache_dir=tmp_path)
    assert again.source.cached and calls == ["Brussels, Belgium"]  # no second download

    def offline(query: str, **kwargs: object) -> nx.MultiDiGraph:
        raise ConnectionError("no network")

    monkeypatch.setattr(ox, "graph_from_place", offline)
    with pytest.raises(StreetDataError, match="Without internet"):
        streets_from_place("Liège, Belgium", cache_dir=tmp_path)
    # 'auto' falls back to the sketch and says so; 'place' does not
    auto = load_streets(StreetsConfig(place="Liège, Belgium"), cache_dir=tmp_path)
    assert auto.source.kind == "sketch" and "fell back" in auto.source.note
    with pytest.raises(StreetDataError):
        load_streets(StreetsConfig(source="place", place="Liège, Belgium"), cache_dir=tmp_path)


def test_sketch_source_and_precedence(tmp_path: Path) -> None:
    sketch = streets_from_sketch()
    check_prepared(sketch)
    assert "SKETCH" in sketch.source.describe() and "not the real city" in sketch.source.describe()
    # an explicit file wins over the scenario's source
    explicit = load_streets(StreetsConfig(source="sketch"), osm=data_file(PENTAGON),
                            cache_dir=tmp_path)  # fmt: skip
    assert explicit.source.kind == "file"
    assert load_streets(StreetsConfig()).source.kind == "sketch"  # nothing given: the sketch


def test_widths_from_tags() -> None:
    widths = streets_mod._widths
    assert widths({"highway": "footway", "width": "3.5"}) == (3.5, 0.0)
    assert widths({"highway": "primary"}) == (6.0, 10.5)
    assert widths({"highway": "residential", "sidewalk": "right"}) == (2.0, 6.0)
    assert widths({"highway": "residential", "sidewalk": "no"})[0] == 1.0
    assert widths({"highway": "secondary", "width": "12 m"}) == (5.0, 12.0)
    assert widths({"highway": "tertiary", "lanes": "4"}) == (5.0, 13.0)
    assert widths({"highway": ["residential", "footway"], "width": ["x", "7,5"]})[1] == 7.5
