"""The walkable street graph: load it, project it to metres, give each edge a usable width.

Sources, in order of precedence (DESIGN §3, Streets): an explicit OpenStreetMap file
(``.osm``, ``.osm.bz2``, ``.osm.gz``, ``.osm.pbf`` or osmnx GraphML); an osmnx place
query (online, with osmnx's HTTP cache); the built-in offline Brussels sketch
(:mod:`sim.sketch`). Every graph is projected to EPSG:31370 (Belgian Lambert 72,
metres), reduced to its largest strongly connected component, and exposed both as the
networkx graph and as flat NumPy arrays for the vectorised crowd and network models.
A prepared graph is cached on disk as data only (NumPy arrays and JSON in one ``.npz``,
read with ``allow_pickle=False``, so loading an entry never runs code), keyed by the
SHA-256 of the source's content, the preparation parameters and the code version.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import numpy as np
import osmnx as ox
from pyproj import Transformer
from scipy.spatial import cKDTree

from sim.errors import StreetDataError
from sim.io import atomic_path
from sim.scenario import BboxConfig, StreetsConfig

__all__ = [
    "CARRIAGEWAY_WIDTH_M",
    "CRS",
    "SIDEWALK_WIDTH_M",
    "StreetSource",
    "Streets",
    "default_cache_dir",
    "load_streets",
    "streets_from_file",
    "streets_from_graph",
    "streets_from_place",
    "streets_from_sketch",
    "to_lonlat",
    "to_metres",
]

log = logging.getLogger(__name__)

#: The projected CRS of every prepared graph (Belgian Lambert 72, metres).
CRS = "EPSG:31370"
#: Bump when the preparation changes, so old cache entries are not reused.
PREPARATION_VERSION = 3
#: Arrays of a cache entry (besides ``meta``, a JSON document), with their dtype kind.
_CACHE_ARRAYS = {
    "node_id": "i", "x": "f", "y": "f", "edge_u": "i", "edge_v": "i", "edge_key": "i",
    "length": "f", "width": "f", "carriageway": "f", "highway": "U", "name": "U",
}  # fmt: skip

#: Usable pedestrian width (m) of an edge open to traffic: both sidewalks together, or the
#: whole way for pedestrian classes. footway, residential and primary are DESIGN §3; the
#: others are this project's assumptions, interpolated between those three.
SIDEWALK_WIDTH_M: dict[str, float] = {
    "footway": 2.5, "path": 2.0, "steps": 2.0, "pedestrian": 8.0, "living_street": 5.0,
    "track": 2.5, "bridleway": 2.0, "corridor": 2.5, "elevator": 1.5,
    "residential": 4.0, "service": 2.0, "unclassified": 3.0, "road": 3.0,
    "tertiary": 5.0, "tertiary_link": 4.0, "secondary": 5.0, "secondary_link": 4.0,
    "primary": 6.0, "primary_link": 4.0, "trunk": 6.0, "trunk_link": 4.0,
}  # fmt: skip
#: Carriageway width (m) that becomes walkable when the street is closed to traffic.
#: Assumptions: typical Brussels lane counts times about 3.25 m per lane.
CARRIAGEWAY_WIDTH_M: dict[str, float] = {
    "living_street": 4.0, "service": 4.0, "unclassified": 5.0, "road": 5.0,
    "residential": 6.0, "tertiary": 7.0, "tertiary_link": 4.0, "secondary": 8.0,
    "secondary_link": 4.0, "primary": 10.5, "primary_link": 4.0, "trunk": 14.0,
    "trunk_link": 4.0,
}  # fmt: skip
DEFAULT_SIDEWALK_M = 3.0
#: Width left to walk on a road mapped with sidewalk=no / separate (its shoulder).
NO_SIDEWALK_M = 1.0
_WAY_TAGS = ("sidewalk", "foot", "footway", "lanes", "width")
# osmnx's own 'walk' network filter (osmnx._overpass._get_network_filter), as regexes.
_EXCLUDED_HIGHWAY = re.compile(
    "abandoned|bus_guideway|construction|cycleway|motor|no|planned|platform|proposed|raceway|razed"
)

_to_metres = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
_to_lonlat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)


def to_metres(lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project WGS84 longitude/latitude to EPSG:31370 x/y in metres."""
    x, y = _to_metres.transform(np.asarray(lon, float), np.asarray(lat, float))
    return np.asarray(x), np.asarray(y)


def to_lonlat(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project EPSG:31370 x/y in metres back to WGS84 longitude/latitude."""
    lon, lat = _to_lonlat.transform(np.asarray(x, float), np.asarray(y, float))
    return np.asarray(lon), np.asarray(lat)


@dataclass(frozen=True)
class StreetSource:
    """Where a street graph came from; recorded in the run's manifest and report."""

    kind: Literal["file", "place", "sketch"]
    detail: str
    digest: str
    cached: bool = False
    note: str = ""

    def describe(self) -> str:
        """One line for the first line of a report."""
        if self.kind == "file":
            text = f"real OpenStreetMap data from the file {self.detail}"
        elif self.kind == "place":
            text = f"real OpenStreetMap data downloaded for the place {self.detail!r}"
        else:
            text = (
                "the OFFLINE BRUSSELS SKETCH: a generated street grid over the real course "
                "waypoints, not the real city"
            )
        return text + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True, eq=False)
class Streets:
    """A prepared walkable street graph and its per-node and per-edge arrays.

    Node arrays are indexed 0..n_nodes-1 (``node_id`` maps back to the graph); edge arrays
    are indexed 0..n_edges-1 in ``graph.edges(keys=True)`` order, with ``edge_u`` and
    ``edge_v`` holding node indices. Both directions of a two-way street are edges.
    """

    graph: nx.MultiDiGraph
    source: StreetSource
    node_id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    length: np.ndarray
    width: np.ndarray
    carriageway: np.ndarray
    highway: np.ndarray
    name: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_id)

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return len(self.edge_u)

    @property
    def street_length_m(self) -> float:
        """Length of the network counting each two-way street once."""
        pair = np.minimum(self.edge_u, self.edge_v) * self.n_nodes + np.maximum(
            self.edge_u, self.edge_v
        )
        _, first = np.unique(pair, return_index=True)
        return float(self.length[first].sum())

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in metres."""
        return (float(self.x.min()), float(self.y.min()), float(self.x.max()), float(self.y.max()))

    @cached_property
    def _kdtree(self) -> cKDTree:
        return cKDTree(np.column_stack([self.x, self.y]))

    def nearest_node(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Index of the nearest node to each point (metres), and its distance."""
        dist, idx = self._kdtree.query(np.column_stack([np.ravel(x), np.ravel(y)]))
        return np.asarray(idx, dtype=np.int64), np.asarray(dist)

    def edges_named(self, street: str) -> np.ndarray:
        """Indices of edges whose OSM name matches `street`.

        Brussels names are bilingual (``"Rue Belliard - Belliardstraat"``) and a simplified
        edge may join several streets with ``;``: `street` matches the whole name, one
        street of it or either language part, ignoring case.
        """
        wanted = street.strip().casefold()
        hits = [
            i
            for i, name in enumerate(self.name)
            if name and any(wanted == part for part in _name_parts(name))
        ]
        return np.asarray(hits, dtype=np.int64)

    def summary(self) -> dict[str, Any]:
        """Figures that say what this source gives: sizes, extent, length."""
        xmin, ymin, xmax, ymax = self.extent
        lon, lat = to_lonlat([xmin, xmax], [ymin, ymax])
        return {
            "source": self.source.describe(),
            "nodes": self.n_nodes,
            "edges": self.n_edges,
            "street_km": round(self.street_length_m / 1000.0, 2),
            "extent_m": [round(v, 1) for v in self.extent],
            "extent_lonlat": [round(float(v), 5) for v in (lon[0], lat[0], lon[1], lat[1])],
            "width_m_median": round(float(np.median(self.width)), 2),
        }


def _name_parts(name: str) -> list[str]:
    """The whole name, each street of a merged edge (``"A - A'; B - B'"``), each language."""
    whole = name.casefold().strip()
    streets = [s.strip() for s in whole.split(";") if s.strip()]
    parts = [p.strip() for s in streets for p in s.split(" - ") if p.strip()]
    return [whole, *streets, *parts]


# ----------------------------------------------------------------------------- loading


def load_streets(
    config: StreetsConfig,
    *,
    osm: str | os.PathLike[str] | None = None,
    waypoints: Sequence[tuple[str, float, float]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Streets:
    """Load the street graph a scenario asks for, in the order of precedence.

    Parameters
    ----------
    config
        The scenario's ``[streets]`` section.
    osm
        An explicit street file; overrides the scenario (the CLI's ``--osm``).
    waypoints
        ``(name, lat, lon)`` of the course, which the offline sketch is built to carry.
    cache_dir
        Folder of the prepared-graph cache; default :func:`default_cache_dir`.

    Returns
    -------
    Streets
        The prepared graph; ``source`` says which source was actually used.
    """
    bbox = config.bbox
    if osm is not None:
        return streets_from_file(osm, bbox=bbox, cache_dir=cache_dir)
    if config.source in ("auto", "file") and config.file is not None:
        return streets_from_file(config.file, bbox=bbox, cache_dir=cache_dir)
    sketch = {"spacing_m": config.sketch_spacing_m, "seed": config.sketch_seed, "bbox": bbox}
    if config.source in ("auto", "place") and config.place:
        try:
            return streets_from_place(config.place, bbox=bbox, cache_dir=cache_dir)
        except StreetDataError as exc:
            if config.source == "place":
                raise
            note = f"fell back to the sketch: the place query failed: {exc}"
            log.warning(note)
            streets = streets_from_sketch(waypoints, **sketch)
            return replace(streets, source=replace(streets.source, note=note))
    return streets_from_sketch(waypoints, **sketch)


def streets_from_file(
    path: str | os.PathLike[str],
    *,
    bbox: BboxConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> Streets:
    """Load and prepare the walkable streets of an OpenStreetMap or GraphML file.

    OSM files (``.osm``, ``.osm.bz2``, ``.osm.gz``, ``.osm.pbf``) are read with pyosmium,
    filtered with osmnx's own ``walk`` network filter, and built into a graph with
    ``osmnx.graph_from_xml(bidirectional=True)``. GraphML (``.graphml``, ``.graphml.gz``)
    is loaded as it is.

    Raises
    ------
    StreetDataError
        The file is missing, unreadable or holds no walkable street.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise StreetDataError(
            f"{path}: street file not found. Give an existing .osm, .osm.bz2, .osm.gz, "
            ".osm.pbf or .graphml file, or use the offline sketch (streets.source = 'sketch')."
        )
    suffixes = "".join(path.suffixes[-2:]).lower()
    kind = _file_kind(path)
    if kind is None:
        raise StreetDataError(
            f"{path}: unknown street file type {suffixes!r}; allowed: .osm, .osm.bz2, "
            ".osm.gz, .osm.pbf, .graphml, .graphml.gz"
        )
    digest = _sha256(path)
    source = StreetSource(kind="file", detail=str(path), digest=digest)
    return _cached(
        source,
        bbox,
        lambda: _graph_from_graphml(path) if kind == "graphml" else _graph_from_osm(path),
        cache_dir=cache_dir,
        use_cache=use_cache,
    )


def streets_from_place(
    place: str,
    *,
    bbox: BboxConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> Streets:
    """Download the walk network of `place` with ``osmnx.graph_from_place`` (online).

    A prepared graph already in the cache is used without going online.

    Raises
    ------
    StreetDataError
        The query failed (no network, unknown place) or returned no walkable street.
    """
    digest = hashlib.sha256(f"place:{place}".encode()).hexdigest()
    source = StreetSource(kind="place", detail=place, digest=digest)

    def download() -> nx.MultiDiGraph:
        ox.settings.cache_folder = str(Path(cache_dir or default_cache_dir()) / "osmnx")
        try:
            with _walk_tags():
                return ox.graph_from_place(place, network_type="walk")
        except Exception as exc:  # osmnx raises many kinds: network, geocoding, empty
            raise StreetDataError(
                f"place query {place!r} gave no street network ({type(exc).__name__}: {exc}). "
                "Without internet, give a local file (--osm FILE or streets.file) or use "
                "the offline sketch (streets.source = 'sketch')."
            ) from exc

    return _cached(source, bbox, download, cache_dir=cache_dir, use_cache=use_cache)


def streets_from_sketch(
    waypoints: Sequence[tuple[str, float, float]] | None = None,
    *,
    spacing_m: float = 200.0,
    seed: int = 0,
    bbox: BboxConfig | None = None,
) -> Streets:
    """Build the offline Brussels sketch around `waypoints` (default: the 2019 course)."""
    from sim import sketch

    points = tuple(waypoints) if waypoints else sketch.DEFAULT_WAYPOINTS
    try:
        graph = sketch.build_sketch(points, spacing_m=spacing_m, seed=seed)
    except ValueError as exc:  # the sketch's own checks: waypoints, spacing, grid size
        raise StreetDataError(
            f"the offline sketch cannot be built over route.waypoints: {exc}. The sketch "
            "covers a course of a few tens of km in Belgium; for anything else give a "
            "street file (streets.file or --osm)."
        ) from None
    digest = hashlib.sha256(repr((points, spacing_m, seed)).encode()).hexdigest()
    source = StreetSource(kind="sketch", detail="offline sketch", digest=digest)
    return streets_from_graph(graph, source=source, bbox=bbox)


def streets_from_graph(
    graph: nx.MultiDiGraph, *, source: StreetSource, bbox: BboxConfig | None = None
) -> Streets:
    """Prepare an osmnx graph: cut to `bbox`, project, keep the largest strongly
    connected component, attach usable widths, and build the arrays."""
    if graph.number_of_edges() == 0:
        raise StreetDataError(f"{source.detail}: holds no walkable street (no edges)")
    if bbox is not None:
        graph = _truncate(graph, bbox, source)
    graph = ox.project_graph(graph, to_crs=CRS)
    graph = ox.truncate.largest_component(graph, strongly=True)
    if graph.number_of_edges() == 0:
        raise StreetDataError(f"{source.detail}: no connected walkable street network")

    node_id = np.fromiter(graph.nodes, dtype=np.int64, count=graph.number_of_nodes())
    index = {node: i for i, node in enumerate(node_id.tolist())}
    x = np.array([graph.nodes[n]["x"] for n in node_id.tolist()], dtype=float)
    y = np.array([graph.nodes[n]["y"] for n in node_id.tolist()], dtype=float)
    edges = list(graph.edges(keys=True, data=True))
    edge_u = np.array([index[u] for u, _, _, _ in edges], dtype=np.int64)
    edge_v = np.array([index[v] for _, v, _, _ in edges], dtype=np.int64)
    length = np.array([float(d.get("length", 0.0)) for *_, d in edges], dtype=float)
    highway = np.array([_first(d.get("highway")) or "road" for *_, d in edges], dtype=object)
    name = np.array([_joined(d.get("name")) for *_, d in edges], dtype=object)
    widths = [_widths(d) for *_, d in edges]
    width = np.array([w for w, _ in widths], dtype=float)
    carriageway = np.array([c for _, c in widths], dtype=float)
    for (_, _, _, d), w, c in zip(edges, width, carriageway, strict=True):
        d["width_m"], d["carriageway_m"] = float(w), float(c)
    # an edge of zero length (duplicated nodes in OSM) would make densities infinite
    length = np.maximum(length, 0.5)
    return Streets(
        graph=graph,
        source=source,
        node_id=node_id,
        x=x,
        y=y,
        edge_u=edge_u,
        edge_v=edge_v,
        length=length,
        width=width,
        carriageway=carriageway,
        highway=highway,
        name=name,
        meta={"bbox": bbox.model_dump() if bbox else None, "crs": CRS},
    )


def default_cache_dir() -> Path:
    """``$CROWDSIM_CACHE``, else ``$XDG_CACHE_HOME/crowdsim``, else ``~/.cache/crowdsim``."""
    if os.environ.get("CROWDSIM_CACHE"):
        return Path(os.environ["CROWDSIM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crowdsim"


# ----------------------------------------------------------------------------- internals


def _cached(
    source: StreetSource,
    bbox: BboxConfig | None,
    build: Any,
    *,
    cache_dir: str | os.PathLike[str] | None,
    use_cache: bool,
) -> Streets:
    """The prepared graph of `source` from the cache, else built and stored there.

    An entry is read as data only: arrays and JSON, never pickles, so a file planted in
    the cache folder cannot run code. An entry that is damaged, or whose recorded key
    differs from the one asked for, is rebuilt and replaced.
    """
    from sim import __version__

    key_data = {
        "preparation": PREPARATION_VERSION,
        "crowdsim": __version__,
        "osmnx": ox.__version__,
        "kind": source.kind,
        "sha256": source.digest,
        "bbox": bbox.model_dump() if bbox else None,
        "crs": CRS,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()
    entry = Path(cache_dir or default_cache_dir()) / f"streets-{key[:32]}.npz"
    if use_cache and entry.is_file():
        try:
            streets = _read_cache_entry(entry, key=key, source=source)
            return replace(streets, source=replace(source, cached=True))
        except Exception as exc:  # a damaged or foreign entry is rebuilt, never trusted
            log.warning("ignoring unreadable street cache %s: %s", entry, exc)
    streets = streets_from_graph(build(), source=source, bbox=bbox)
    if use_cache:
        try:
            _write_cache_entry(streets, entry, key=key)
        except OSError as exc:
            log.warning("could not write the street cache %s: %s", entry, exc)
    return streets


def _write_cache_entry(streets: Streets, entry: Path, *, key: str) -> None:
    graph = streets.graph
    edges = list(graph.edges(keys=True, data=True))
    meta = {
        "key": key,
        "meta": streets.meta,
        "graph": {k: _to_json(v) for k, v in graph.graph.items()},
        "nodes": [{k: _to_json(v) for k, v in d.items()} for _, d in graph.nodes(data=True)],
        "edges": [{k: _to_json(v) for k, v in d.items()} for *_, d in edges],
    }
    arrays = {
        "node_id": streets.node_id,
        "x": streets.x,
        "y": streets.y,
        "edge_u": streets.edge_u,
        "edge_v": streets.edge_v,
        "edge_key": np.array([k for _, _, k, _ in edges], dtype=np.int64),
        "length": streets.length,
        "width": streets.width,
        "carriageway": streets.carriageway,
        "highway": streets.highway.astype(str),
        "name": streets.name.astype(str),
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    }
    with atomic_path(entry) as tmp, tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)


def _read_cache_entry(entry: Path, *, key: str, source: StreetSource) -> Streets:
    # the file is opened here, so a damaged zip cannot leave numpy's handle open
    with entry.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in (*_CACHE_ARRAYS, "meta")}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    if meta.get("key") != key:
        raise ValueError("written for another source or version")
    for name, kind in _CACHE_ARRAYS.items():
        if arrays[name].ndim != 1 or arrays[name].dtype.kind != kind:
            raise ValueError(f"array {name!r} has the wrong type")
    n, m = len(arrays["node_id"]), len(arrays["edge_u"])
    if {len(arrays[k]) for k in ("x", "y")} != {n} or len(meta["nodes"]) != n:
        raise ValueError("node arrays of different lengths")
    edge_arrays = ("edge_v", "edge_key", "length", "width", "carriageway", "highway", "name")
    if {len(arrays[k]) for k in edge_arrays} != {m} or len(meta["edges"]) != m:
        raise ValueError("edge arrays of different lengths")
    if m and (min(arrays["edge_u"].min(), arrays["edge_v"].min()) < 0
              or max(arrays["edge_u"].max(), arrays["edge_v"].max()) >= n):  # fmt: skip
        raise ValueError("an edge names a node that does not exist")
    graph = nx.MultiDiGraph(**{k: _from_json(k, v) for k, v in meta["graph"].items()})
    _geometries(meta["nodes"])
    _geometries(meta["edges"])
    node_id = arrays["node_id"].tolist()
    graph.add_nodes_from(zip(node_id, meta["nodes"], strict=True))
    graph.add_edges_from(
        (node_id[u], node_id[v], k, d)
        for u, v, k, d in zip(
            arrays["edge_u"].tolist(),
            arrays["edge_v"].tolist(),
            arrays["edge_key"].tolist(),
            meta["edges"],
            strict=True,
        )
    )
    return Streets(
        graph=graph,
        source=source,
        node_id=arrays["node_id"].astype(np.int64),
        x=arrays["x"].astype(float),
        y=arrays["y"].astype(float),
        edge_u=arrays["edge_u"].astype(np.int64),
        edge_v=arrays["edge_v"].astype(np.int64),
        length=arrays["length"].astype(float),
        width=arrays["width"].astype(float),
        carriageway=arrays["carriageway"].astype(float),
        highway=arrays["highway"].astype(object),
        name=arrays["name"].astype(object),
        meta=meta["meta"],
    )


def _to_json(value: Any) -> Any:
    """A graph attribute as JSON: geometries as WKB (hex), the CRS as text, NumPy as Python."""
    from pyproj import CRS as ProjCRS
    from shapely.geometry.base import BaseGeometry

    if isinstance(value, BaseGeometry):
        return {"wkb": value.wkb_hex}
    if isinstance(value, ProjCRS):
        return value.to_string()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _geometries(items: list[dict[str, Any]]) -> None:
    """Turn the ``{"wkb": ...}`` values of attribute dicts back into shapely geometries,
    in one vectorised call (one call per edge takes seconds on the region)."""
    import shapely

    where = [
        (d, key, value["wkb"])
        for d in items
        for key, value in d.items()
        if isinstance(value, dict) and set(value) == {"wkb"} and isinstance(value["wkb"], str)
    ]
    if where:
        geoms = shapely.from_wkb([text for *_, text in where], on_invalid="raise")
        for (d, key, _), geom in zip(where, geoms, strict=True):
            d[key] = geom


def _from_json(key: str, value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"wkb"}:
        import shapely

        return shapely.from_wkb(value["wkb"])
    if key == "crs" and isinstance(value, str):
        from pyproj import CRS as ProjCRS

        return ProjCRS.from_user_input(value)
    return value


def _file_kind(path: Path) -> Literal["osm", "graphml"] | None:
    name = path.name.lower()
    if name.endswith((".osm", ".osm.bz2", ".osm.gz", ".osm.pbf", ".pbf", ".xml")):
        return "osm"
    if name.endswith((".graphml", ".graphml.gz")):
        return "graphml"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_walkable(tags: Any) -> bool:
    """osmnx's ``walk`` filter: highway ways that are not areas, private or foot=no."""
    highway = tags.get("highway")
    if highway is None or _EXCLUDED_HIGHWAY.search(highway):
        return False
    if "yes" in tags.get("area", "") or "private" in tags.get("access", ""):
        return False
    return "no" not in tags.get("foot", "") and "private" not in tags.get("service", "")


def _graph_from_osm(path: Path) -> nx.MultiDiGraph:
    import osmium

    # Read the file once to check it and find the walkable ways, before writing anything:
    # a writer interrupted by a read error would leave its temporary files behind.
    try:
        walkable = {
            way.id
            for way in osmium.FileProcessor(str(path), osmium.osm.WAY)
            if _is_walkable(way.tags)
        }
    except (RuntimeError, ValueError, OSError) as exc:
        raise StreetDataError(
            f"{path}: cannot read it as OpenStreetMap data ({exc}). Check that the file "
            "is complete and is OSM XML (.osm, .osm.bz2, .osm.gz) or PBF (.osm.pbf)."
        ) from exc
    if not walkable:
        raise StreetDataError(
            f"{path}: holds no walkable street (no way with a highway tag that osmnx's "
            "walk filter accepts). Use an extract that covers streets."
        )
    with tempfile.TemporaryDirectory(prefix="crowdsim-osm-") as tmp:
        walk = Path(tmp) / "walk.osm"
        with osmium.BackReferenceWriter(str(walk), ref_src=str(path), overwrite=True) as out:
            for way in osmium.FileProcessor(str(path), osmium.osm.WAY):
                if way.id in walkable:
                    out.add_way(way)
        with _walk_tags():
            try:
                return ox.graph_from_xml(walk, bidirectional=True, retain_all=False)
            except Exception as exc:  # osmnx raises on graphs it cannot build
                raise StreetDataError(f"{path}: osmnx could not build a graph: {exc}") from exc


def _graph_from_graphml(path: Path) -> nx.MultiDiGraph:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return ox.load_graphml(graphml_str=fh.read())
        return ox.load_graphml(path)
    except Exception as exc:  # corrupt gzip, XML or attribute types
        raise StreetDataError(
            f"{path}: cannot read it as osmnx GraphML ({type(exc).__name__}: {exc}). "
            "Save graphs with osmnx.save_graphml."
        ) from exc


class _walk_tags:
    """Keep the tags that widths need while osmnx builds a graph."""

    def __enter__(self) -> None:
        self._saved = list(ox.settings.useful_tags_way)
        ox.settings.useful_tags_way = sorted(set(self._saved) | set(_WAY_TAGS))

    def __exit__(self, *exc: object) -> None:
        ox.settings.useful_tags_way = self._saved


def _truncate(graph: nx.MultiDiGraph, bbox: BboxConfig, source: StreetSource) -> nx.MultiDiGraph:
    crs = str(graph.graph.get("crs", "epsg:4326")).lower()
    if crs not in ("epsg:4326", "wgs84"):
        graph = ox.project_graph(graph, to_latlong=True)
    try:
        return ox.truncate.truncate_graph_bbox(
            graph, (bbox.west, bbox.south, bbox.east, bbox.north)
        )
    except ValueError as exc:
        raise StreetDataError(f"{source.detail}: no street inside bbox {bbox}: {exc}") from exc


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _joined(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(dict.fromkeys(str(v) for v in value))
    return "" if value is None else str(value)


_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def _metres(value: Any) -> float | None:
    values = value if isinstance(value, list) else [value]
    found = [
        float(m.group().replace(",", ".")) for v in values if v and (m := _NUMBER.search(str(v)))
    ]
    found = [v for v in found if 0.3 <= v <= 100.0]
    return min(found) if found else None


def _widths(data: dict[str, Any]) -> tuple[float, float]:
    """(usable width open to traffic, carriageway width) of one edge, in metres."""
    highway = str(_first(data.get("highway")) or "road")
    tagged = _metres(data.get("width"))
    carriageway = CARRIAGEWAY_WIDTH_M.get(highway, 0.0)
    if carriageway == 0.0:  # a way for pedestrians: its width tag is the walkable width
        return (tagged or SIDEWALK_WIDTH_M.get(highway, DEFAULT_SIDEWALK_M)), 0.0
    if tagged is not None:  # on a road, the width tag is the carriageway
        carriageway = tagged
    lanes = _metres(data.get("lanes"))
    if tagged is None and lanes is not None and lanes <= 8:
        carriageway = max(carriageway, 3.25 * lanes)
    sidewalk = str(_first(data.get("sidewalk")) or "").lower()
    usable = SIDEWALK_WIDTH_M.get(highway, DEFAULT_SIDEWALK_M)
    if sidewalk in ("left", "right"):
        usable /= 2.0
    elif sidewalk in ("no", "none", "separate"):
        usable = NO_SIDEWALK_M
    return usable, carriageway
