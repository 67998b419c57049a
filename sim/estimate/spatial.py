"""What the spatial methods share: the tile raster and the mapping of tiles onto zones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import shapely
from scipy.sparse import csr_matrix

from sim.estimate.base import EstimateInputError, Estimator
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
        How far the raster reaches beyond the outermost cells, metres; zones beyond it
        get nothing.
    **kwargs
        The parameters of :class:`~sim.estimate.base.Estimator`.
    """

    def __init__(self, *, tile_m: float = 100.0, margin_m: float = 1000.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tile_m = tile_m
        self.margin_m = margin_m

    def _fit_space(self, plan: NetworkPlan) -> None:
        if not self.tile_m > 0 or not self.margin_m >= 0:
            raise EstimateInputError(
                f"{type(self).__name__}: tile_m = {self.tile_m}, margin_m = {self.margin_m}; "
                "need tile_m > 0 and margin_m >= 0"
            )
        self.__dict__.pop("_zone_cache", None)
        self.raster_ = raster_for_plan(plan, tile_m=self.tile_m, margin_m=self.margin_m)
        self._fit_footprints(plan)

    def _fit_footprints(self, plan: NetworkPlan) -> None:
        """Compute the method's cell footprints on ``raster_``."""
        raise NotImplementedError

    def zone_matrix(self, zs: ZoneSet) -> csr_matrix:
        """Share of each raster tile in each zone, zones x tiles (cached per zone system)."""
        return self._cached(
            "tiles", zs, lambda: overlap_matrix(zs.geometry, self.raster_, normalise="tile")
        )

    def _cached(self, what: str, zs: ZoneSet, build: Callable[[], csr_matrix]) -> csr_matrix:
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

    def _devices_per_zone(self, counts: np.ndarray, zs: ZoneSet) -> np.ndarray:
        return np.asarray(self.zone_matrix(zs) @ self.tile_devices(counts))
