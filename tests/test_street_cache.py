"""The prepared-street cache holds data only, is keyed by content and survives damage."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import networkx as nx
import numpy as np
import osmnx as ox
import pytest
from shapely.geometry import LineString

from sim import sketch
from sim.streets import Streets, streets_from_file

WAYPOINTS = (("A", 50.8417, 4.3620), ("B", 50.8399, 4.3929))


@pytest.fixture
def graphml(tmp_path: Path) -> Path:
    """A small street file: the offline sketch saved as osmnx GraphML."""
    path = tmp_path / "streets.graphml"
    graph = sketch.build_sketch(WAYPOINTS, spacing_m=300.0, margin_m=300.0)
    u, v, k = next(iter(graph.edges(keys=True)))  # one edge with a curved geometry
    a, b = graph.nodes[u], graph.nodes[v]
    mid = ((a["x"] + b["x"]) / 2 + 1e-4, (a["y"] + b["y"]) / 2)
    graph.edges[u, v, k]["geometry"] = LineString([(a["x"], a["y"]), mid, (b["x"], b["y"])])
    ox.save_graphml(graph, path)
    return path


class _Planted:
    """Unpickling this writes a marker file: what a planted cache entry would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.system, (f"touch {self.marker}",))


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("streets-*"))


def _same(a: Streets, b: Streets) -> None:
    for name in ("node_id", "x", "y", "edge_u", "edge_v", "length", "width", "carriageway"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert list(a.highway) == list(b.highway) and list(a.name) == list(b.name)
    assert a.meta == b.meta
    assert nx.utils.graphs_equal(a.graph, b.graph) or (
        sorted(a.graph.edges(keys=True)) == sorted(b.graph.edges(keys=True))
    )


def test_cache_round_trip_is_data_only_and_keyed_by_content(graphml: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = streets_from_file(graphml, cache_dir=cache)
    second = streets_from_file(graphml, cache_dir=cache)
    assert not first.source.cached and second.source.cached
    _same(first, second)
    assert second.graph.graph["crs"].to_epsg() == 31370
    for u, v, k, data in second.graph.edges(keys=True, data=True):
        assert data == first.graph.edges[u, v, k]
    curved = [d["geometry"] for *_, d in second.graph.edges(data=True) if "geometry" in d]
    assert curved and all(isinstance(g, LineString) for g in curved)
    (entry,) = _entries(cache)
    assert entry.suffix == ".npz"
    with np.load(entry, allow_pickle=False) as npz:  # readable without pickle
        assert {"x", "y", "edge_u", "meta"} <= set(npz.files)
    # other content, other key: a changed file is a new entry, not the old graph
    graphml.write_text(graphml.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    third = streets_from_file(graphml, cache_dir=cache)
    assert not third.source.cached and len(_entries(cache)) == 2


def test_a_planted_pickle_runs_nothing(graphml: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    streets_from_file(graphml, cache_dir=cache)
    (entry,) = _entries(cache)
    marker = tmp_path / "planted-code-ran"
    payload = pickle.dumps(_Planted(marker))
    # a pickle under the entry's own name, and under the names pickles used to have
    entry.write_bytes(payload)
    entry.with_suffix(".pickle").write_bytes(payload)
    (cache / "streets.pickle").write_bytes(payload)
    again = streets_from_file(graphml, cache_dir=cache)
    assert not marker.exists()
    assert not again.source.cached  # refused and rebuilt
    assert streets_from_file(graphml, cache_dir=cache).source.cached  # and stored again


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 64),
        lambda p: np.savez(p, x=np.zeros(3)),  # an npz with other arrays
    ],
    ids=["empty", "truncated", "bad-zip", "other-arrays"],
)
def test_a_damaged_entry_is_rebuilt(graphml: Path, tmp_path: Path, damage: object) -> None:
    cache = tmp_path / "cache"
    first = streets_from_file(graphml, cache_dir=cache)
    (entry,) = _entries(cache)
    damage(entry)  # type: ignore[operator]
    rebuilt = streets_from_file(graphml, cache_dir=cache)
    assert not rebuilt.source.cached
    _same(first, rebuilt)
    assert streets_from_file(graphml, cache_dir=cache).source.cached


def test_an_entry_of_another_source_is_not_used(graphml: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    streets_from_file(graphml, cache_dir=cache)
    (entry,) = _entries(cache)
    other = tmp_path / "other.graphml"
    ox.save_graphml(sketch.build_sketch(WAYPOINTS, spacing_m=200.0, margin_m=200.0), other)
    streets_from_file(other, cache_dir=cache)
    (other_entry,) = [p for p in _entries(cache) if p != entry]
    other_entry.replace(entry)  # the right name, the wrong content (its key says so)
    again = streets_from_file(graphml, cache_dir=cache)
    assert not again.source.cached
