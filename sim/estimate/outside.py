"""Outside data: cell counts, an emission model and a tile grid supplied by the user.

A researcher with operator data usually has *counts* (devices per cell and time bin),
perhaps a coverage model from a radio-planning tool (``P(cell | tile)``) and a tile grid
of their own. The estimators take these directly (:meth:`Estimator.fit_counts
<sim.estimate.base.Estimator.fit_counts>`, the ``emission`` and ``tiles`` parameters of
the Bayes and EM estimators), so nothing has to be dressed up as records or a network
plan. This module reads and checks those inputs; every error names the row or id.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import csr_matrix, issparse

__all__ = ["TileGrid", "counts_matrix", "emission_matrix", "tile_grid"]

CRS = "EPSG:31370"
#: Share of a zone's area that may lie outside the tiles before it is an error.
OUTSIDE_TOLERANCE = 0.01


class TileGrid:
    """Tiles given as polygons (any shapes, non-overlapping), with ids.

    Attributes
    ----------
    ids
        Tile ids (str), in the order of the emission matrix's columns.
    geometry
        Tile polygons, EPSG:31370.
    """

    def __init__(self, ids: np.ndarray, geometry: np.ndarray) -> None:
        self.ids = ids
        self.geometry = geometry
        self.area = shapely.area(geometry)
        self._tree = shapely.STRtree(geometry)
        self._union = None

    @property
    def n(self) -> int:
        """Number of tiles."""
        return len(self.ids)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Tile centroids (x, y)."""
        c = shapely.centroid(self.geometry)
        return shapely.get_x(c), shapely.get_y(c)

    def tile_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Tile holding each point; -1 outside every tile."""
        points = shapely.points(np.asarray(x, float), np.asarray(y, float))
        p, t = self._tree.query(points, predicate="within")
        out = np.full(len(points), -1, dtype=np.int64)
        out[p] = t
        return out

    def zone_matrix(
        self, zone_ids: np.ndarray, zones: np.ndarray, *, system: str, error: type[Exception]
    ) -> csr_matrix:
        """Share of each tile in each zone, zones x tiles.

        A zone outside the tiles is an error (more than :data:`OUTSIDE_TOLERANCE` of its
        area not covered).
        """
        zones = np.asarray(zones, dtype=object)
        z, t = self._tree.query(zones, predicate="intersects")
        area = shapely.area(shapely.intersection(zones[z], self.geometry[t]))
        covered = np.bincount(z, weights=area, minlength=len(zones))
        check_inside(zone_ids, zones, covered, system=system, error=error)
        keep = area > 0
        share = area[keep] / self.area[t[keep]]
        return csr_matrix((share, (z[keep], t[keep])), shape=(len(zones), self.n))


def check_inside(
    zone_ids: np.ndarray,
    zones: np.ndarray,
    covered: np.ndarray,
    *,
    system: str,
    error: type[Exception],
) -> None:
    """Raise if a zone has more than :data:`OUTSIDE_TOLERANCE` of its area off the tiles."""
    total = shapely.area(zones)
    outside = (total - covered) > OUTSIDE_TOLERANCE * np.maximum(total, 1e-9)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise error(
            f"zones: zone {zone_ids[k]!r} of system {system!r} lies "
            f"{1 - covered[k] / max(total[k], 1e-9):.0%} outside the estimators' tile grid "
            f"({int(outside.sum())} zone(s) in all); its people cannot be estimated: give "
            "tiles that cover it (or a larger margin_m), or leave the zone out"
        )


def tile_grid(tiles: Any, *, error: type[Exception] = ValueError) -> TileGrid:
    """Read a user tile grid: a GeoDataFrame with a ``tile`` column (ids) and polygons.

    Raises
    ------
    error
        Not a GeoDataFrame, a CRS other than EPSG:31370, no ``tile`` column, duplicate
        ids, empty or non-polygon geometries.
    """
    if not isinstance(tiles, gpd.GeoDataFrame):
        raise error(
            f"tiles: expected a GeoDataFrame with 'tile' and polygons, got {type(tiles).__name__}"
        )
    if "tile" not in tiles.columns:
        raise error("tiles: the GeoDataFrame needs a 'tile' column of tile ids")
    if tiles.crs is not None and not tiles.crs.equals(CRS):
        raise error(f"tiles: CRS is {tiles.crs}; give tiles in {CRS} (to_crs({CRS!r}))")
    if tiles.empty:
        raise error("tiles: no tile")
    ids = tiles["tile"].astype(str).to_numpy(dtype=object)
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise error(f"tiles: tile id {ids[dup][0]!r} appears more than once")
    geoms = np.asarray(tiles.geometry, dtype=object)
    kinds = shapely.get_type_id(geoms)
    bad = ~np.isin(kinds, [3, 6]) | shapely.is_empty(geoms)  # Polygon, MultiPolygon
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise error(f"tiles: tile {ids[k]!r} (row {k}) is not a non-empty polygon")
    return TileGrid(ids, geoms)


def emission_matrix(
    emission: Any,
    *,
    cells: np.ndarray,
    tiles: np.ndarray,
    error: type[Exception] = ValueError,
) -> csr_matrix:
    """``P(cell | tile)`` as a cells x tiles sparse matrix, in the order of `cells`, `tiles`.

    Parameters
    ----------
    emission
        A SciPy sparse matrix or NumPy array (cells x tiles, already in that order), or a
        table with columns ``cell``, ``tile`` and ``probability``.
    cells, tiles
        Cell ids (the rows of the counts) and tile ids (the tile grid), as strings.

    Raises
    ------
    error
        A wrong shape, an unknown cell or tile (naming the row), a probability outside
        [0, 1], a tile whose probabilities sum above 1, or a cell no tile can emit.
    """
    cells = np.asarray(cells).astype(str).astype(object)  # Python str: plain ids in messages
    tiles = np.asarray(tiles).astype(str).astype(object)
    if isinstance(emission, pd.DataFrame):
        need = {"cell", "tile", "probability"}
        if not need <= set(emission.columns):
            raise error(
                "emission: a table needs columns cell, tile, probability; missing "
                + ", ".join(sorted(need - set(emission.columns)))
            )
        ci = pd.Index(cells).get_indexer(emission["cell"].astype(str))
        ti = pd.Index(tiles).get_indexer(emission["tile"].astype(str))
        for what, index, column in (("cell", ci, "cell"), ("tile", ti, "tile")):
            if (index < 0).any():
                row = int(np.flatnonzero(index < 0)[0])
                raise error(
                    f"emission: row {row}: {what} {emission[column].iloc[row]!r} is not among "
                    f"the {what}s of the {'counts' if what == 'cell' else 'tile grid'}"
                )
        p = pd.to_numeric(emission["probability"], errors="coerce").to_numpy(dtype=float)
        _check_probabilities(p, rows=np.arange(len(p)), error=error)
        a = csr_matrix((p, (ci, ti)), shape=(len(cells), len(tiles)))
        a.sum_duplicates()
    elif issparse(emission) or isinstance(emission, np.ndarray):
        a = csr_matrix(emission, dtype=float)
        if a.shape != (len(cells), len(tiles)):
            raise error(
                f"emission: matrix shape {a.shape}; need (cells = {len(cells)}, "
                f"tiles = {len(tiles)}) in the order of the counts' cells and the tile grid"
            )
        _check_probabilities(a.data, rows=None, error=error)
    else:
        raise error(
            f"emission: give a sparse matrix (cells x tiles) or a table with cell, tile, "
            f"probability; got {type(emission).__name__}"
        )
    per_tile = np.asarray(a.sum(axis=0)).ravel()
    if (per_tile > 1 + 1e-6).any():
        j = int(np.flatnonzero(per_tile > 1 + 1e-6)[0])
        raise error(
            f"emission: tile {tiles[j]!r}: P(cell | tile) sums to {per_tile[j]:.4f} over the "
            "cells; it may not exceed 1"
        )
    per_cell = np.asarray(a.sum(axis=1)).ravel()
    if (per_cell <= 0).any():
        i = int(np.flatnonzero(per_cell <= 0)[0])
        raise error(f"emission: cell {cells[i]!r} has probability 0 on every tile")
    return a


def _check_probabilities(p: np.ndarray, *, rows: np.ndarray | None, error: type[Exception]) -> None:
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        where = f"row {int(rows[k])}: " if rows is not None else ""
        raise error(f"emission: {where}probability {float(p[k])!r} is not a number in [0, 1]")


def counts_matrix(
    counts: pd.DataFrame,
    *,
    cells: np.ndarray | None,
    error: type[Exception] = ValueError,
) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """Devices per cell (rows) and bin (columns) from a table of counts.

    The table has ``cell_id``, ``bin``, ``devices``: one row per cell and bin; absent
    pairs are 0.

    Parameters
    ----------
    counts
        The table; ``bin`` time-zone-aware bin starts.
    cells
        The known cells (str ids, row order), or None to take the cells of the table.

    Returns
    -------
    matrix, cells, bins
        The counts, the cell ids of its rows, the bins (UTC) of its columns.

    Raises
    ------
    error
        Missing columns, naive or unparseable bins, negative or non-finite devices, an
        unknown cell (naming the row), or a cell-bin given twice.
    """
    if not isinstance(counts, pd.DataFrame):
        raise error(f"counts: expected a DataFrame, got {type(counts).__name__}")
    need = ["cell_id", "bin", "devices"]
    missing = [c for c in need if c not in counts.columns]
    if missing:
        raise error(f"counts: columns cell_id, bin, devices needed; missing {', '.join(missing)}")
    if counts.empty:
        raise error("counts: no row")
    try:
        bins = pd.DatetimeIndex(counts["bin"])
    except (ValueError, TypeError) as exc:
        raise error(f"counts: column bin is not times: {exc}") from None
    if bins.tz is None:
        raise error("counts: bin starts need a time zone (e.g. UTC)")
    devices = pd.to_numeric(counts["devices"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(devices) | (devices < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise error(
            f"counts: row {row}: devices {counts['devices'].tolist()[row]!r} is not a number >= 0"
        )
    ids = counts["cell_id"].astype(str).to_numpy(dtype=object)
    known = pd.Index(pd.unique(ids)) if cells is None else pd.Index(np.asarray(cells).astype(str))
    ci = known.get_indexer(ids)
    if (ci < 0).any():
        row = int(np.flatnonzero(ci < 0)[0])
        raise error(f"counts: row {row}: cell {ids[row]!r} is not a cell of the plan or emission")
    utc = bins.tz_convert("UTC").as_unit("ns")
    bi, uniq = pd.factorize(utc, sort=True)
    flat = ci * len(uniq) + bi
    if len(np.unique(flat)) != len(flat):
        dup = pd.Index(flat).duplicated()
        row = int(np.flatnonzero(dup)[0])
        raise error(f"counts: row {row}: cell {ids[row]!r} and bin {utc[row]} given twice")
    matrix = np.zeros((len(known), len(uniq)))
    matrix[ci, bi] = devices
    return matrix, known.to_numpy(dtype=object), pd.DatetimeIndex(uniq)
