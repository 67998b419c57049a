"""The fine raster on which cell footprints live, and how raster tiles map onto zones.

Spatial estimators work on square tiles (100 m by default, aligned to multiples of the
tile size in EPSG:31370 so the grid zone system coincides with them) covering the cells'
extent plus a margin. Any zone system is reached through one sparse ``zones x tiles``
matrix of overlap shares: entry (z, j) is the fraction of tile j's area inside zone z, so
a tile's people are shared among zones by area (people assumed uniform within a tile).

Also here: the operator's coverage model on that raster, ``P(cell | tile)``, from the
textbook propagation (``sim.network.propagation``) with nominal parameters and no
shadowing, which the Simple Bayes and EM methods share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

from sim.network.plan import NetworkPlan
from sim.network.propagation import received_power_dbm

__all__ = [
    "TileRaster",
    "ZoneSet",
    "coverage_matrix",
    "overlap_matrix",
    "raster_for_plan",
    "zone_sets",
]

CRS = "EPSG:31370"


@dataclass(frozen=True)
class TileRaster:
    """Square tiles, row-major from the south-west corner: tile ``row * nx + col``."""

    x0: float
    y0: float
    tile_m: float
    nx: int
    ny: int

    @property
    def n(self) -> int:
        """Number of tiles."""
        return self.nx * self.ny

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax)."""
        return (self.x0, self.y0, self.x0 + self.nx * self.tile_m, self.y0 + self.ny * self.tile_m)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Tile centres (x, y), tile order."""
        col = np.tile(np.arange(self.nx), self.ny)
        row = np.repeat(np.arange(self.ny), self.nx)
        return self.x0 + (col + 0.5) * self.tile_m, self.y0 + (row + 0.5) * self.tile_m

    def boxes(self) -> np.ndarray:
        """Tile squares as shapely polygons, tile order."""
        x, y = self.centres()
        h = self.tile_m / 2
        return shapely.box(x - h, y - h, x + h, y + h)

    def tile_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Tile of each point; -1 outside the raster."""
        col = np.floor((np.asarray(x) - self.x0) / self.tile_m).astype(np.int64)
        row = np.floor((np.asarray(y) - self.y0) / self.tile_m).astype(np.int64)
        inside = (col >= 0) & (col < self.nx) & (row >= 0) & (row < self.ny)
        return np.where(inside, row * self.nx + col, -1)


def raster_for_plan(plan: NetworkPlan, *, tile_m: float, margin_m: float) -> TileRaster:
    """Tiles of `tile_m` covering the plan's cells plus `margin_m`, aligned to `tile_m`."""
    x = plan.cells["x"].to_numpy(dtype=float)
    y = plan.cells["y"].to_numpy(dtype=float)
    x0 = np.floor((x.min() - margin_m) / tile_m) * tile_m
    y0 = np.floor((y.min() - margin_m) / tile_m) * tile_m
    nx = int(np.ceil((x.max() + margin_m - x0) / tile_m))
    ny = int(np.ceil((y.max() + margin_m - y0) / tile_m))
    return TileRaster(float(x0), float(y0), float(tile_m), max(nx, 1), max(ny, 1))


@dataclass(frozen=True, eq=False)
class ZoneSet:
    """One zone system as the estimators need it: its name, zone ids and polygons."""

    system: str
    zone: np.ndarray  # str ids
    geometry: np.ndarray  # shapely polygons, EPSG:31370


def zone_sets(zones: Any, *, error: type[Exception] = ValueError) -> list[ZoneSet]:
    """Normalise the accepted zone inputs to a list of :class:`ZoneSet`.

    Accepted: a :class:`ZoneSet`, ``sim.zones.Zones`` (anything with a ``systems`` mapping), a
    ``sim.zones.ZoneSystem`` (``name``, ``zone_ids``, ``geometry``), a GeoDataFrame with
    ``zone`` and ``geometry`` and a ``system`` column or ``attrs["system"]``, or a mapping
    from system name to a GeoDataFrame or zone system.
    """
    if hasattr(zones, "systems") and isinstance(zones.systems, Mapping):
        zones = dict(zones.systems)
    if isinstance(zones, Mapping):
        # a system without zones (a scenario with no named areas) is skipped, not an error
        nonempty = {k: v for k, v in zones.items() if _size(v) != 0}
        if not nonempty:
            raise error(f"zones: every zone system is empty ({', '.join(map(str, zones))})")
        out: list[ZoneSet] = []
        for name, item in nonempty.items():
            out.extend(_one(item, system=str(name), error=error))
        return out
    return _one(zones, system=None, error=error)


def _size(item: Any) -> int | None:
    """Number of zones of one system, or None if that cannot be told."""
    if isinstance(item, pd.DataFrame):
        return len(item)
    ids = getattr(item, "zone_ids", None)
    return None if ids is None else len(ids)


def _one(item: Any, *, system: str | None, error: type[Exception]) -> list[ZoneSet]:
    if isinstance(item, ZoneSet):
        return [item]
    if all(hasattr(item, a) for a in ("name", "zone_ids", "geometry")) and not isinstance(
        item, pd.DataFrame
    ):
        return [_checked(system or str(item.name), list(item.zone_ids), list(item.geometry), error)]
    if isinstance(item, gpd.GeoDataFrame):
        if "zone" not in item.columns:
            raise error("zones: a GeoDataFrame of zones needs a 'zone' column")
        if item.crs is not None and not item.crs.equals(CRS):
            raise error(f"zones: CRS is {item.crs}; give zones in {CRS} (to_crs({CRS!r}))")
        if "system" in item.columns:
            return [
                _checked(str(name), part["zone"].tolist(), list(part.geometry), error)
                for name, part in item.groupby("system", sort=False, observed=True)
            ]
        name = system or item.attrs.get("system")
        if not name:
            raise error(
                "zones: name the zone system, with a 'system' column, attrs['system'], or a "
                "dict {'grid': frame, ...}"
            )
        return [_checked(str(name), item["zone"].tolist(), list(item.geometry), error)]
    raise error(
        f"zones: cannot read zones from a {type(item).__name__}; give sim.zones.Zones, a "
        "ZoneSystem, a GeoDataFrame with 'zone' and 'geometry', or a dict of them"
    )


def _checked(system: str, zone: list[Any], geometry: list[Any], error: type[Exception]) -> ZoneSet:
    if not zone:
        raise error(f"zones: zone system {system!r} has no zone")
    ids = np.asarray([str(z) for z in zone], dtype=object)
    if len(pd.unique(ids)) != len(ids):
        raise error(f"zones: zone system {system!r} has duplicate zone ids")
    geoms = np.asarray(geometry, dtype=object)
    if len(geoms) != len(ids) or not all(isinstance(g, shapely.Geometry) for g in geoms):
        raise error(f"zones: zone system {system!r} needs one shapely geometry per zone")
    return ZoneSet(system=system, zone=ids, geometry=geoms)


def overlap_matrix(regions: np.ndarray, raster: TileRaster, *, normalise: str) -> csr_matrix:
    """Sparse ``len(regions) x tiles`` matrix of intersection areas between regions and tiles.

    Parameters
    ----------
    regions
        Shapely polygons (zones, or cell footprints).
    raster
        The tiles.
    normalise
        ``"tile"``: divide by the tile area (share of each tile in each region, the
        zone-aggregation matrix); ``"region"``: divide by the region's area inside the
        raster (share of each region in each tile, a uniform footprint).
    """
    regions = np.asarray(regions, dtype=object)
    xmin, ymin = raster.x0, raster.y0
    t = raster.tile_m
    b = shapely.bounds(regions)
    c0 = np.clip(np.floor((b[:, 0] - xmin) / t), 0, raster.nx).astype(np.int64)
    c1 = np.clip(np.ceil((b[:, 2] - xmin) / t), 0, raster.nx).astype(np.int64)
    r0 = np.clip(np.floor((b[:, 1] - ymin) / t), 0, raster.ny).astype(np.int64)
    r1 = np.clip(np.ceil((b[:, 3] - ymin) / t), 0, raster.ny).astype(np.int64)
    ncol = np.maximum(c1 - c0, 0)
    nrow = np.maximum(r1 - r0, 0)
    n_pairs = ncol * nrow
    reg = np.repeat(np.arange(len(regions)), n_pairs)
    k = np.arange(int(n_pairs.sum())) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    col = c0[reg] + k % np.maximum(ncol[reg], 1)
    row = r0[reg] + k // np.maximum(ncol[reg], 1)
    tile = row * raster.nx + col
    x = xmin + col * t
    y = ymin + row * t
    boxes = shapely.box(x, y, x + t, y + t)
    prepared = regions.copy()
    shapely.prepare(prepared)
    full = shapely.contains_properly(prepared[reg], boxes)
    area = np.full(len(reg), t * t)
    part = ~full
    area[part] = shapely.area(shapely.intersection(regions[reg[part]], boxes[part]))
    keep = area > 1e-9 * t * t
    reg, tile, area = reg[keep], tile[keep], area[keep]
    if normalise == "tile":
        weight = area / (t * t)
    elif normalise == "region":
        total = np.bincount(reg, weights=area, minlength=len(regions))
        weight = area / np.where(total > 0, total, 1.0)[reg]
    else:
        raise ValueError(f"normalise = {normalise!r}; use 'tile' or 'region'")
    return csr_matrix((weight, (reg, tile)), shape=(len(regions), raster.n))


def coverage_matrix(
    plan: NetworkPlan,
    raster: TileRaster,
    *,
    spread_db: float = 4.0,
    max_cells: int = 24,
    min_probability: float = 1e-3,
    h_ut_m: float = 1.5,
    beamwidth_deg: float = 65.0,
) -> csr_matrix:
    """``P(cell | tile)`` under the operator's assumed radio model, cells x tiles (sparse).

    For each tile centre, the received power of its `max_cells` nearest cells is computed
    with TR 38.901 UMa path loss and the sector pattern at the plan's nominal power,
    height, azimuth and band, without shadowing. A device camps on the best server; the
    operator does not know the shadowing, so it spreads its belief with a softmax of the
    powers at temperature `spread_db` (the best-server probability when the unknown
    per-cell errors are Gumbel with scale `spread_db`); ``spread_db = 0`` is the hard
    best-server map. Probabilities below `min_probability` are dropped and each tile's
    column renormalised to 1, so every tile is covered. A cell that is best nowhere keeps
    its single most likely tile, so that every cell can explain its devices.
    """
    cells = plan.cells
    cx = cells["x"].to_numpy(dtype=float)
    cy = cells["y"].to_numpy(dtype=float)
    tx, ty = raster.centres()
    k = int(min(max_cells, len(cells)))
    _, nearest = cKDTree(np.column_stack([cx, cy])).query(np.column_stack([tx, ty]), k=k)
    nearest = np.asarray(nearest).reshape(raster.n, k)
    tile = np.repeat(np.arange(raster.n), k)
    cell = nearest.ravel()
    power = received_power_dbm(
        tx[tile] - cx[cell],
        ty[tile] - cy[cell],
        power_dbm=cells["power_dbm"].to_numpy(dtype=float)[cell],
        azimuth_deg=cells["azimuth_deg"].to_numpy(dtype=float)[cell],
        fc_ghz=cells["band_mhz"].to_numpy(dtype=float)[cell] / 1000.0,
        h_bs_m=cells["height_m"].to_numpy(dtype=float)[cell],
        h_ut_m=h_ut_m,
        beamwidth_deg=beamwidth_deg,
    ).reshape(raster.n, k)
    best = power.max(axis=1, keepdims=True)
    if spread_db > 0:
        w = np.exp((power - best) / spread_db)
    else:
        w = (power == best).astype(float)
    p = (w / w.sum(axis=1, keepdims=True)).ravel()
    # each cell keeps its most likely tile even if it is best nowhere
    order = np.lexsort((-p, cell))
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    keep = p >= min_probability
    keep[order[first]] = True
    rows, cols, vals = cell[keep], tile[keep], p[keep]
    # a cell among nobody's nearest (many cells at one site) keeps its own site's tile
    absent = np.setdiff1d(np.arange(len(cells)), rows)
    if absent.size:
        rows = np.concatenate([rows, absent])
        cols = np.concatenate([cols, raster.tile_of(cx[absent], cy[absent])])
        vals = np.concatenate([vals, np.ones(absent.size)])
    a = csr_matrix((vals, (rows, cols)), shape=(len(cells), raster.n))
    a.sum_duplicates()
    col = np.asarray(a.sum(axis=0)).ravel()
    a = a @ _diag(1.0 / np.where(col > 0, col, 1.0))
    return csr_matrix(a)


def _diag(values: np.ndarray) -> csr_matrix:
    n = len(values)
    return csr_matrix((values, (np.arange(n), np.arange(n))), shape=(n, n))
