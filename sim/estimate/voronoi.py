"""Voronoi with tower seeds: each cell's devices spread uniformly over its Voronoi region.

The classic first estimator of mobile-phone population studies (e.g. Deville et al.
2014; the reference baseline of Ricciato et al. 2020). Sites are the seeds; a site's
Voronoi polygon (clipped to the raster extent) is split among its sectors by azimuth: a
sector gets the wedge between the bisectors of its azimuth and its neighbours' azimuths.
An omni cell gets the whole site polygon; cells sharing an azimuth (several bands) share
the same wedge. Devices of a cell are spread uniformly by area: zone z receives
``area(region ∩ z) / area(region)`` of them, computed exactly on the polygons.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import shapely
from scipy.sparse import csr_matrix

from sim.estimate.base import EstimateInputError
from sim.estimate.outside import check_inside
from sim.estimate.spatial import SpatialEstimator
from sim.estimate.tiles import TileRaster, ZoneSet, overlap_matrix
from sim.network.plan import NetworkPlan

__all__ = ["VoronoiEstimator", "cell_regions"]


def cell_regions(plan: NetworkPlan, raster: TileRaster) -> np.ndarray:
    """The Voronoi region of each cell (plan order), split by azimuth, inside the raster."""
    cells = plan.cells
    box = shapely.box(*raster.bounds)
    site_xy, site_of_cell = np.unique(
        cells[["x", "y"]].to_numpy(dtype=float).round(3), axis=0, return_inverse=True
    )
    site_of_cell = np.asarray(site_of_cell).ravel()
    if len(site_xy) == 1:
        site_poly = np.array([box], dtype=object)
    else:
        diagram = shapely.voronoi_polygons(
            shapely.multipoints(site_xy), extend_to=box, ordered=True
        )
        site_poly = shapely.intersection(shapely.get_parts(diagram), box)
    radius = 2.0 * np.hypot(raster.nx * raster.tile_m, raster.ny * raster.tile_m)
    regions = np.empty(len(cells), dtype=object)
    azimuth = cells["azimuth_deg"].to_numpy(dtype=float)
    for site in range(len(site_xy)):
        members = np.flatnonzero(site_of_cell == site)
        poly = site_poly[site]
        az = np.unique(azimuth[members][~np.isnan(azimuth[members])] % 360.0)
        for c in members:
            if np.isnan(azimuth[c]) or len(az) < 2:
                regions[c] = poly
                continue
            i = int(np.searchsorted(az, azimuth[c] % 360.0))
            prev_az = az[i - 1] if i > 0 else az[-1] - 360.0
            next_az = az[i + 1] if i + 1 < len(az) else az[0] + 360.0
            a0 = (prev_az + az[i]) / 2.0
            a1 = (az[i] + next_az) / 2.0
            regions[c] = shapely.intersection(poly, _wedge(site_xy[site], a0, a1, radius))
    return regions


def _wedge(centre: np.ndarray, a0_deg: float, a1_deg: float, radius: float) -> shapely.Polygon:
    """The wedge between compass bearings a0 and a1 (clockwise), out to `radius`."""
    n = max(2, int(np.ceil((a1_deg - a0_deg) / 5.0)) + 1)
    theta = np.radians(np.linspace(a0_deg, a1_deg, n))
    x = centre[0] + radius * np.sin(theta)
    y = centre[1] + radius * np.cos(theta)
    return shapely.Polygon(np.vstack([centre, np.column_stack([x, y]), centre]))


class VoronoiEstimator(SpatialEstimator):
    """Voronoi tessellation with tower seeds, sectors split by azimuth.

    Parameters are those of :class:`~sim.estimate.spatial.SpatialEstimator`; the raster
    only bounds the outer regions (the zone shares are exact polygon areas).

    Attributes
    ----------
    regions_
        The region of each cell (shapely polygons, plan order).
    footprint_
        Share of each cell's region in each tile (cells x tiles), for maps.
    """

    method = "voronoi"

    def _fit_footprints(self, plan: NetworkPlan | None) -> None:
        if plan is None or self.grid_ is not None:
            raise EstimateInputError(
                "VoronoiEstimator: Voronoi regions come from the plan's sites; give a plan "
                "and no tiles"
            )
        self.regions_ = cell_regions(plan, self.raster_)
        self.footprint_ = overlap_matrix(self.regions_, self.raster_, normalise="region")

    def tile_devices(self, counts: np.ndarray) -> np.ndarray:
        """Devices per tile: each cell's devices spread over its region by area."""
        return np.asarray(self.footprint_.T @ counts)

    location_model: ClassVar[str] = (
        "uniform over each cell's Voronoi region; calibrated where devices are uniform and "
        "camp on the nearest site's sector"
    )

    def zone_given_cell(self, zs: ZoneSet) -> csr_matrix:
        """``P(zone | cell)``: the share of the cell's region in the zone."""
        return self.cell_zone_matrix(zs)

    def cell_zone_matrix(self, zs: ZoneSet) -> csr_matrix:
        """Share of each cell's region inside each zone, zones x cells (exact areas)."""
        return self._cached("cells", zs, lambda: self._cell_zone_matrix(zs))

    def _cell_zone_matrix(self, zs: ZoneSet) -> csr_matrix:
        box = shapely.box(*self.raster_.bounds)
        covered = shapely.area(shapely.intersection(zs.geometry, box))
        check_inside(zs.zone, zs.geometry, covered, system=zs.system, error=EstimateInputError)
        tree = shapely.STRtree(zs.geometry)
        region_idx, zone_idx = tree.query(self.regions_, predicate="intersects")
        area = shapely.area(shapely.intersection(self.regions_[region_idx], zs.geometry[zone_idx]))
        total = shapely.area(self.regions_)
        share = area / np.where(total > 0, total, 1.0)[region_idx]
        keep = share > 0
        return csr_matrix(
            (share[keep], (zone_idx[keep], region_idx[keep])),
            shape=(len(zs.zone), len(self.regions_)),
        )

    def _devices_per_zone(self, counts: np.ndarray, zs: ZoneSet) -> np.ndarray:
        return np.asarray(self.cell_zone_matrix(zs) @ counts)
