"""What the spatial methods share: the tile raster and the mapping of tiles onto zones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import shapely
from scipy.sparse import csr_matrix

from sim.estimate.base import EstimateInputError, Estimator
from sim.estimate.intervals import fixed_location_moments
from sim.estimate.outside import check_inside, tile_grid
from sim.estimate.tiles import ZoneSet, overlap_matrix, raster_for_plan
from sim.network.plan import NetworkPlan

__all__ = ["SpatialEstimator"]


class SpatialEstimator(Estimator):
    """An estimator that places each cell's devices on tiles, then sums tiles into zones.

    Parameters
    ----------
    tile_m
        Side of the raster tiles, metres (100: the grid zone system's tiles).
    margin_m
        How far the raster reaches beyond the outermost cells, metres. A zone with more
        than 1% of its area beyond the tiles is an error, not a silent 0.
    tiles
        A user tile grid (GeoDataFrame with ``tile`` ids and polygons, EPSG:31370) instead
        of the raster built from the plan (Bayes and EM; with ``emission``).
    **kwargs
        The parameters of :class:`~sim.estimate.base.Estimator`.
    """

    def __init__(
        self,
        *,
        tile_m: float = 100.0,
        margin_m: float = 1000.0,
        tiles: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tile_m = tile_m
        self.margin_m = margin_m
        self.tiles = tiles

    def _fit_space(self, plan: NetworkPlan | None) -> None:
        if not self.tile_m > 0 or not self.margin_m >= 0:
            raise EstimateInputError(
                f"{type(self).__name__}: tile_m = {self.tile_m}, margin_m = {self.margin_m}; "
                "need tile_m > 0 and margin_m >= 0"
            )
        self.__dict__.pop("_zone_cache", None)
        if self.tiles is not None:
            self.grid_ = tile_grid(self.tiles, error=EstimateInputError)
            self.raster_ = None
        elif plan is None:
            raise EstimateInputError(
                f"{type(self).__name__}: without a network plan, give the tile grid (tiles=) "
                "and the emission model (emission=)"
            )
        else:
            self.raster_ = raster_for_plan(plan, tile_m=self.tile_m, margin_m=self.margin_m)
            self.grid_ = None
        self._fit_footprints(plan)

    @property
    def space_(self) -> Any:
        """The tiles in use: the user's grid or the plan's raster (``n``, ``tile_of``)."""
        return self.grid_ if self.grid_ is not None else self.raster_

    def _fit_footprints(self, plan: NetworkPlan | None) -> None:
        """Compute the method's cell footprints on ``raster_``."""
        raise NotImplementedError

    def zone_matrix(self, zs: ZoneSet) -> csr_matrix:
        """Share of each raster tile in each zone, zones x tiles (cached per zone system)."""
        return self._cached("tiles", zs, lambda: self._zone_matrix(zs))

    def _zone_matrix(self, zs: ZoneSet) -> csr_matrix:
        if self.grid_ is not None:
            return self.grid_.zone_matrix(
                zs.zone, zs.geometry, system=zs.system, error=EstimateInputError
            )
        m = overlap_matrix(zs.geometry, self.raster_, normalise="tile")
        covered = np.asarray(m.sum(axis=1)).ravel() * self.raster_.tile_m**2
        check_inside(zs.zone, zs.geometry, covered, system=zs.system, error=EstimateInputError)
        return m

    def _cached(self, what: str, zs: ZoneSet, build: Callable[[], Any]) -> Any:
        """A zone matrix, built once per zone system (keyed by ids and zone bounds).

        So the real-time minute update does not redo the geometry.
        """
        key = (what, zs.system, hash(tuple(zs.zone)), shapely.bounds(zs.geometry).tobytes())
        cache = self.__dict__.setdefault("_zone_cache", {})
        if key not in cache:
            if len(cache) >= 8:
                cache.clear()
            cache[key] = build()
        return cache[key]

    def tile_devices(self, counts: np.ndarray) -> np.ndarray:
        """Devices per tile (rows) and bin (columns); the method's core."""
        raise NotImplementedError

    # A prior that changes with the closures needs to know which bins the counts are of;
    # the shared pipeline passes counts only, so the two entry points note the bins here.
    def estimate_from_counts(
        self,
        counts: np.ndarray,
        zones: Any,
        bins: pd.DatetimeIndex,
        *,
        noise_epsilon: float | None = None,
        live: bool = False,
    ) -> pd.DataFrame:
        """People per zone and bin from devices per cell and bin (see the base class)."""
        self._bins_in_hand = bins
        try:
            return super().estimate_from_counts(
                counts, zones, bins, noise_epsilon=noise_epsilon, live=live
            )
        finally:
            self._bins_in_hand = None

    def estimate_minute(self, zones: Any, bin_start: pd.Timestamp) -> pd.DataFrame:
        """The real-time update of one bin (see the base class)."""
        self._bins_in_hand = pd.DatetimeIndex([pd.Timestamp(bin_start)])
        try:
            return super().estimate_minute(zones, bin_start)
        finally:
            self._bins_in_hand = None

    def bins_in_hand(self) -> pd.DatetimeIndex:
        """The bins of the counts being estimated (inside an estimate call only)."""
        bins = getattr(self, "_bins_in_hand", None)
        if bins is None:
            raise EstimateInputError(
                f"{type(self).__name__}: a prior that changes over time needs the bins; "
                "call estimate, estimate_from_counts or estimate_minute"
            )
        return bins

    def _devices_per_zone(self, counts: np.ndarray, zs: ZoneSet) -> np.ndarray:
        return np.asarray(self.zone_matrix(zs) @ self.tile_devices(counts))

    def zone_given_cell(self, zs: ZoneSet) -> csr_matrix | None:
        """``P(zone | cell)`` of a device seen in a cell, zones x cells, if fixed over bins.

        None: the method's location model changes with the bin, or it has none and its
        intervals hold sampling only.
        """
        return None

    def _device_variances(
        self,
        counts: np.ndarray,
        sets: list[ZoneSet],
        devices: list[np.ndarray],
        *,
        noise_var: float,
        rng: np.random.Generator,
        bins: pd.DatetimeIndex,
        live: bool = False,
    ) -> list[np.ndarray]:
        """Location-posterior variance per zone-bin (:mod:`sim.estimate.intervals`)."""
        out = []
        for zs, d in zip(sets, devices, strict=True):
            q = self.zone_given_cell(zs)
            if q is None:
                out.append(np.full(d.shape, noise_var))
            else:
                out.append(fixed_location_moments(counts, q, noise_var=noise_var)[1])
        return out
