"""Zone systems in which people are counted: grid tiles, course segments, named areas.

Positions are counted through *places*: every walking edge is cut into pieces of at most
``PIECE_M`` metres, and every node is a place of its own (people waiting at a node or
indoors there). Each zone system is a sparse matrix ``zones x places`` saying which place
lies in which zone (by the place's midpoint), so counting one snapshot of everybody is one
``bincount`` and three sparse products, whatever the number of people. A place may lie in
several named areas (areas may overlap) and in no segment (far from the course).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree
from shapely.geometry import LineString, Point, box

from sim.budget import check_memory
from sim.course import Course
from sim.errors import ScenarioError
from sim.io import atomic_path
from sim.scenario import Scenario
from sim.streets import CRS, to_metres

__all__ = ["PIECE_M", "Places", "ZoneSystem", "Zones", "build_places", "build_zones"]

#: Longest piece of an edge counted as one place (m): the resolution of zone counts.
PIECE_M = 10.0
SYSTEMS = ("grid", "segment", "area")


@dataclass(frozen=True, eq=False)
class Places:
    """Pieces of edges plus nodes: where a person can be, at ``PIECE_M`` resolution.

    Attributes
    ----------
    edge_start, edge_pieces
        Place of the first piece of each edge and the number of pieces it has.
    node_place
        Offset of node places: node ``i`` is place ``node_place + i``.
    x, y
        Midpoint of every place (EPSG:31370 metres).
    """

    edge_start: np.ndarray
    edge_pieces: np.ndarray
    node_place: int
    x: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        """Number of places."""
        return len(self.x)

    def of(
        self, edge: np.ndarray, s: np.ndarray, node: np.ndarray, length: np.ndarray
    ) -> np.ndarray:
        """Place of people on `edge` at offset `s`, or at `node` where ``edge < 0``."""
        out = self.node_place + node
        on = np.flatnonzero(edge >= 0)
        e = edge[on]
        pieces = self.edge_pieces[e]
        k = np.minimum((s[on] * pieces / length[e]).astype(np.int64), pieces - 1)
        out[on] = self.edge_start[e] + np.maximum(k, 0)
        return out


def build_places(
    x: np.ndarray, y: np.ndarray, eu: np.ndarray, ev: np.ndarray, length: np.ndarray
) -> Places:
    """Cut edges ``eu -> ev`` (node coordinates `x`, `y`) into pieces of at most PIECE_M."""
    pieces = np.maximum(np.ceil(length / PIECE_M).astype(np.int64), 1)
    start = np.concatenate([[0], np.cumsum(pieces)[:-1]])
    total = int(pieces.sum())
    edge_of = np.repeat(np.arange(len(eu)), pieces)
    k = np.arange(total) - start[edge_of]
    f = (k + 0.5) / pieces[edge_of]
    px = x[eu[edge_of]] + (x[ev[edge_of]] - x[eu[edge_of]]) * f
    py = y[eu[edge_of]] + (y[ev[edge_of]] - y[eu[edge_of]]) * f
    return Places(
        edge_start=start,
        edge_pieces=pieces,
        node_place=total,
        x=np.concatenate([px, x]),
        y=np.concatenate([py, y]),
    )


@dataclass(frozen=True, eq=False)
class ZoneSystem:
    """One zone system: ids, shapes, and which place lies in which zone."""

    name: str
    zone_ids: list[str]
    geometry: list[object]
    membership: csr_matrix  # zones x places, 0/1

    def count(self, place_counts: np.ndarray) -> np.ndarray:
        """People per zone given people per place."""
        return np.asarray(self.membership @ place_counts).ravel()


@dataclass(frozen=True, eq=False)
class Zones:
    """The three zone systems of a run."""

    systems: dict[str, ZoneSystem]

    def to_geodataframe(self) -> gpd.GeoDataFrame:
        """Every zone as a polygon in EPSG:31370, with its system and id."""
        rows = [
            (system.name, zid, geom)
            for system in self.systems.values()
            for zid, geom in zip(system.zone_ids, system.geometry, strict=True)
        ]
        return gpd.GeoDataFrame(
            {"system": [r[0] for r in rows], "zone": [r[1] for r in rows]},
            geometry=[r[2] for r in rows],
            crs=CRS,
        )

    def write_geopackage(self, dest: str | os.PathLike[str]) -> Path:
        """Write the zones to a GeoPackage (one layer per system), atomically."""
        with atomic_path(dest) as tmp:
            tmp.unlink()
            for system in self.systems.values():
                frame = gpd.GeoDataFrame(
                    {"zone": system.zone_ids}, geometry=list(system.geometry), crs=CRS
                )
                frame.to_file(tmp, layer=system.name, driver="GPKG")
        return Path(dest)


def _membership(zone: np.ndarray, n_zones: int, n_places: int) -> csr_matrix:
    ok = zone >= 0
    places = np.flatnonzero(ok)
    return csr_matrix((np.ones(len(places)), (zone[ok], places)), shape=(n_zones, n_places))


def build_zones(
    places: Places, course: Course, course_xy: tuple[np.ndarray, np.ndarray], scenario: Scenario
) -> Zones:
    """Grid tiles, course segments and named areas over `places`.

    Parameters
    ----------
    places
        Where people can be.
    course
        The course (its ``cum_m`` cuts the segments).
    course_xy
        Coordinates of ``course.nodes``.
    scenario
        ``zones`` gives the tile size, segment length and buffer, and the named areas.

    Raises
    ------
    ScenarioError
        A named area holds no place of the street data (it lies outside it), or the zone
        tables of the run would not fit in memory (:func:`sim.budget.check_memory`).
    """
    cfg = scenario.zones
    # grid: only tiles that hold a place
    g = cfg.grid_m
    col = np.floor(places.x / g).astype(np.int64)
    row = np.floor(places.y / g).astype(np.int64)
    key = (col - col.min()) * (row.max() - row.min() + 1) + (row - row.min())
    used, tile = np.unique(key, return_inverse=True)
    # before the zones and their tables are built: will they fit?
    pieces = course.piece_m
    n_seg_estimate = int(
        np.maximum(np.ceil((pieces[:, 1] - pieces[:, 0]) / cfg.segment_m), 1).sum()
    )
    check_memory(
        scenario,
        n_zones=len(used) + n_seg_estimate + len(cfg.areas),
        n_street_segments=len(places.edge_start) // 2,
    )
    ucol = used // (row.max() - row.min() + 1) + col.min()
    urow = used % (row.max() - row.min() + 1) + row.min()
    grid = ZoneSystem(
        name="grid",
        zone_ids=[f"g{c}_{r}" for c, r in zip(ucol.tolist(), urow.tolist(), strict=True)],
        geometry=[
            box(c * g, r * g, (c + 1) * g, (r + 1) * g)
            for c, r in zip(ucol.tolist(), urow.tolist(), strict=True)
        ],
        membership=_membership(tile, len(used), places.n),
    )
    # course segments: nearest sample of the course line within the buffer; a course in
    # pieces is sampled and cut piece by piece, so no segment spans a gap
    cx, cy = course_xy
    step = min(5.0, cfg.segment_m / 4)
    parts = [
        _sample_line(cx[a:b], cy[a:b], course.cum_m[a:b], step=step)
        for a, b in zip(course.piece_start.tolist(), course.piece_stop.tolist(), strict=True)
    ]
    sx, sy, sm = (np.concatenate([part[i] for part in parts]) for i in range(3))
    sample_seg, seg_lo, seg_hi = course.bins(sm, cfg.segment_m)
    n_seg = len(seg_lo)
    # only places within the buffer matter: bounding the search lets the tree skip the far
    # ones (most of the area); those come back with dist inf and index len(sm)
    reach = cfg.segment_buffer_m + 1e-9
    dist, idx = cKDTree(np.column_stack([sx, sy])).query(
        np.column_stack([places.x, places.y]), distance_upper_bound=reach * (1 + 1e-9) + 1e-6
    )
    idx = np.minimum(idx, len(sm) - 1)
    seg = np.where(dist <= reach, sample_seg[idx], -1).astype(np.int64)
    sample_piece = course.piece_at(sm)
    seg_piece = course.piece_at(seg_lo)
    geoms = []
    for k in range(n_seg):
        m = (sm >= seg_lo[k]) & (sm <= seg_hi[k]) & (sample_piece == seg_piece[k])
        pts = np.column_stack([sx[m], sy[m]])
        line = LineString(pts) if len(pts) >= 2 else Point(pts[0] if len(pts) else (cx[0], cy[0]))
        geoms.append(line.buffer(max(cfg.segment_buffer_m, 0.5)))
    segment = ZoneSystem(
        name="segment",
        zone_ids=[
            f"km{lo / 1000:g}-{hi / 1000:.3g}"
            for lo, hi in zip(seg_lo.tolist(), seg_hi.tolist(), strict=True)
        ],
        geometry=geoms,
        membership=_membership(seg, n_seg, places.n),
    )
    # named areas: circles, may overlap
    rows, cols, geoms = [], [], []
    tree = cKDTree(np.column_stack([places.x, places.y]))
    for i, area in enumerate(cfg.areas):
        ax, ay = (float(v) for v in to_metres(area.lon, area.lat))
        inside = tree.query_ball_point([ax, ay], area.radius_m)
        if not inside:
            raise ScenarioError(
                f"{scenario.where(f'zones.areas[{i}]')} ({area.name!r} at {area.lat}, "
                f"{area.lon}, radius {area.radius_m:g} m) holds no street of the street "
                "data: it lies outside it. Move it, enlarge radius_m, or load data covering it."
            )
        rows.extend([i] * len(inside))
        cols.extend(inside)
        geoms.append(Point(ax, ay).buffer(area.radius_m))
    areas = ZoneSystem(
        name="area",
        zone_ids=[a.name for a in cfg.areas],
        geometry=geoms,
        membership=csr_matrix(
            (np.ones(len(rows)), (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
            shape=(len(cfg.areas), places.n),
        ),
    )
    return Zones(systems={"grid": grid, "segment": segment, "area": areas})


def _sample_line(
    x: np.ndarray, y: np.ndarray, cum: np.ndarray, *, step: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every `step` metres along a polyline, with their distance from its start."""
    m = float(cum[0]) + np.arange(0.0, float(cum[-1] - cum[0]) + step, step)
    m = np.minimum(m, cum[-1])
    return np.interp(m, cum, x), np.interp(m, cum, y), m
