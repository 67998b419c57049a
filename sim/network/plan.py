"""The operator's network plan: its sites and cells, as the operator itself knows them.

The plan is what an estimator may use besides the records (DESIGN §1, the operator wall):
cell positions, sector azimuths, nominal heights, powers and bands, tracking areas, and
the operator's belief about its market share. It holds nothing of the true radio
environment. Sites come from a CSV (one row per cell) or are generated as a jittered
lattice whose inter-site distance grows from the centre outward.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyproj import Transformer

from sim.errors import CrowdsimError
from sim.io import write_json

__all__ = [
    "CELL_COLUMNS",
    "NetworkPlan",
    "SiteDataError",
    "add_event_cells",
    "generate_cells",
    "generate_two_layer_cells",
    "read_cells_csv",
]

#: Columns of ``NetworkPlan.cells`` and their dtypes.
CELL_COLUMNS: dict[str, str] = {
    "cell_id": "int64",
    "site_id": "int64",
    "x": "float64",
    "y": "float64",
    "height_m": "float64",
    "azimuth_deg": "float64",
    "power_dbm": "float64",
    "band_mhz": "float64",
    "tracking_area": "int64",
    "temporary": "bool",
}


#: WGS84 -> Belgian Lambert 72 (the project's metric CRS), for site files in lon/lat. The
#: plan is operator-side (DESIGN §1): it projects with pyproj itself rather than import
#: the street module of the simulated world.
_TO_METRES = Transformer.from_crs("EPSG:4326", "EPSG:31370", always_xy=True)


class SiteDataError(CrowdsimError, ValueError):
    """A site or cell file is missing columns or holds values that are not allowed."""


@dataclass(frozen=True, eq=False)
class NetworkPlan:
    """One operator's cells and what it believes about its subscribers.

    Attributes
    ----------
    operator
        Operator name, as in the scenario's market shares.
    cells
        One row per cell, columns :data:`CELL_COLUMNS`; coordinates in EPSG:31370 metres;
        ``azimuth_deg`` is compass degrees, NaN for an omni cell.
    market_share
        The share of people the operator believes it serves (its belief, not the truth).
    phones_per_person
        Devices per person the operator assumes.
    period
        (start, end) of the period the records cover, ISO 8601 with time zone.
    """

    operator: str
    cells: pd.DataFrame
    market_share: float
    phones_per_person: float
    period: tuple[str, str]

    @property
    def n_cells(self) -> int:
        """Number of cells."""
        return len(self.cells)

    def to_json(self, dest: str | os.PathLike[str]) -> Path:
        """Write ``network_plan.json`` atomically."""
        data = {
            "operator": self.operator,
            "market_share": self.market_share,
            "phones_per_person": self.phones_per_person,
            "period": list(self.period),
            "crs": "EPSG:31370",
            "cells": json.loads(self.cells.to_json(orient="records")),
        }
        return write_json(data, dest)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> NetworkPlan:
        """Read a plan written by :meth:`to_json`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        cells = pd.DataFrame(data["cells"], columns=list(CELL_COLUMNS)).astype(CELL_COLUMNS)
        return cls(
            operator=data["operator"],
            cells=cells,
            market_share=float(data["market_share"]),
            phones_per_person=float(data["phones_per_person"]),
            period=(data["period"][0], data["period"][1]),
        )


def read_cells_csv(  # noqa: C901 - one check per column of the file, each with its own message
    path: str | os.PathLike[str],
    *,
    operator: str | None = None,
    extent: tuple[float, float, float, float] | None = None,
    tracking_area_m: float = 3000.0,
) -> pd.DataFrame:
    """Read cells from a CSV file, one row per cell.

    Columns: ``cell_id``; ``x`` and ``y`` (EPSG:31370 metres) or ``lon`` and ``lat``;
    ``operator``; ``height_m``; ``azimuth_deg`` (empty for omni); ``band_mhz``;
    ``power_dbm``; optional ``site_id`` (default: cells at the same place share a site)
    and ``tracking_area`` (default: squares of `tracking_area_m`).

    Parameters
    ----------
    path
        The CSV file.
    operator
        Keep only this operator's cells.
    extent
        (xmin, ymin, xmax, ymax) of the study area; a cell outside it is an error.

    Raises
    ------
    SiteDataError
        Missing columns, unparsable or out-of-range values, duplicate cell ids, cells
        outside the study area; the message names the row (1 = first data row) and column.
    """
    path = Path(path)
    if not path.is_file():
        raise SiteDataError(f"{path}: cell file not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SiteDataError(f"{path}: not a readable CSV file: {exc}") from None
    has_xy = {"x", "y"} <= set(raw.columns)
    has_lonlat = {"lon", "lat"} <= set(raw.columns)
    needed = ["cell_id", "operator", "height_m", "azimuth_deg", "band_mhz", "power_dbm"]
    missing = [c for c in needed if c not in raw.columns]
    if not (has_xy or has_lonlat):
        missing.append("x and y (or lon and lat)")
    if missing:
        raise SiteDataError(
            f"{path}: missing column(s) {', '.join(missing)}; a cell file needs cell_id, x/y "
            "or lon/lat, operator, height_m, azimuth_deg, band_mhz, power_dbm"
        )
    if operator is not None:
        raw = raw[raw["operator"] == operator]

    def number(column: str, *, allow_empty: bool = False) -> np.ndarray:
        values = pd.to_numeric(raw[column].str.strip().replace("", np.nan), errors="coerce")
        bad = values.isna() & ~(allow_empty & raw[column].str.strip().eq(""))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise SiteDataError(
                f"{path}: row {raw.index[row] + 1}, column {column}: "
                f"{raw[column].iloc[row]!r} is not a number"
            )
        return values.to_numpy(dtype=float)

    cell_id = number("cell_id")
    if has_xy:
        x, y = number("x"), number("y")
    else:
        x, y = (np.asarray(v) for v in _TO_METRES.transform(number("lon"), number("lat")))
    cells = pd.DataFrame(
        {
            "cell_id": cell_id.astype(np.int64),
            "x": x,
            "y": y,
            "height_m": number("height_m"),
            "azimuth_deg": number("azimuth_deg", allow_empty=True),
            "power_dbm": number("power_dbm"),
            "band_mhz": number("band_mhz"),
        },
        index=raw.index,
    )
    checks = [
        ("cell_id", cells["cell_id"] != cell_id, "is not a whole number"),
        ("height_m", ~cells["height_m"].between(1.0, 300.0), "must be 1-300 m"),
        ("azimuth_deg", ~cells["azimuth_deg"].between(0.0, 360.0) & cells["azimuth_deg"].notna(),
         "must be 0-360 degrees or empty (omni)"),
        ("power_dbm", ~cells["power_dbm"].between(0.0, 70.0), "must be 0-70 dBm (not negative)"),
        ("band_mhz", ~cells["band_mhz"].between(400.0, 6000.0), "must be 400-6000 MHz"),
        ("cell_id", cells["cell_id"].duplicated(keep="first"), "duplicates an earlier cell id"),
    ]  # fmt: skip
    if extent is not None:
        xmin, ymin, xmax, ymax = extent
        outside = ~(cells["x"].between(xmin, xmax) & cells["y"].between(ymin, ymax))
        checks.append(("x/y", outside, f"lies outside the study area {extent}"))
    for column, bad, what in checks:
        if bad.any():
            row = bad.to_numpy().nonzero()[0][0]
            shown = raw.iloc[row][column] if column in raw.columns else cells.iloc[row][["x", "y"]]
            raise SiteDataError(
                f"{path}: row {cells.index[row] + 1}, column {column}: {shown!r} {what}"
            )
    if cells.empty:
        raise SiteDataError(f"{path}: no cell" + (f" of operator {operator!r}" if operator else ""))
    if "site_id" in raw.columns and raw["site_id"].str.strip().ne("").all():
        cells["site_id"] = number("site_id").astype(np.int64)
    else:
        place = [cells["x"].round(1), cells["y"].round(1)]
        cells["site_id"] = cells.groupby(place, sort=False).ngroup().astype(np.int64)
    if "tracking_area" in raw.columns and raw["tracking_area"].str.strip().ne("").all():
        cells["tracking_area"] = number("tracking_area").astype(np.int64)
    else:
        cells["tracking_area"] = _tracking_areas(cells["x"], cells["y"], tracking_area_m)
    cells["temporary"] = False
    return cells[list(CELL_COLUMNS)].astype(CELL_COLUMNS).reset_index(drop=True)


def generate_cells(
    extent: tuple[float, float, float, float],
    *,
    rng: np.random.Generator,
    centre: tuple[float, float] | None = None,
    isd_centre_m: float = 300.0,
    isd_growth_per_km: float = 0.25,
    isd_max_m: float = 1500.0,
    jitter: float = 0.2,
    azimuths_deg: tuple[float, ...] = (0.0, 120.0, 240.0),
    band_mhz: float = 1800.0,
    power_dbm: float = 43.0,
    height_m: float = 25.0,
    tracking_area_m: float = 3000.0,
) -> pd.DataFrame:
    """Generate sites on a jittered lattice that thins out away from the centre.

    The inter-site distance at distance r (km) from `centre` is
    ``min(isd_centre_m * (1 + isd_growth_per_km * r), isd_max_m)``: dense in the city
    centre, sparser in the suburbs, as macro networks are built. Sites are accepted
    greedily from the centre outward when no accepted site is closer than the local
    distance; each gets one cell per azimuth.

    Returns
    -------
    pandas.DataFrame
        Cells with the columns of :data:`CELL_COLUMNS`.
    """
    xmin, ymin, xmax, ymax = extent
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"extent {extent} is empty")
    if isd_centre_m <= 0 or isd_max_m < isd_centre_m:
        raise ValueError("needs 0 < isd_centre_m <= isd_max_m")
    cx, cy = centre if centre is not None else ((xmin + xmax) / 2, (ymin + ymax) / 2)
    step = isd_centre_m / 2.0
    gx, gy = np.meshgrid(np.arange(xmin, xmax + step, step), np.arange(ymin, ymax + step, step))
    gx = gx + rng.uniform(-jitter, jitter, gx.shape) * step
    gy = gy + rng.uniform(-jitter, jitter, gy.shape) * step
    px, py = gx.ravel(), gy.ravel()
    r = np.hypot(px - cx, py - cy)
    order = np.argsort(r, kind="stable")
    isd = np.minimum(isd_centre_m * (1.0 + isd_growth_per_km * r / 1000.0), isd_max_m)
    accepted: list[int] = []
    ax = np.empty(len(order))
    ay = np.empty(len(order))
    for i in order.tolist():
        n = len(accepted)
        if n and np.min((ax[:n] - px[i]) ** 2 + (ay[:n] - py[i]) ** 2) < (0.9 * isd[i]) ** 2:
            continue
        ax[n], ay[n] = px[i], py[i]
        accepted.append(i)
    sx, sy = ax[: len(accepted)], ay[: len(accepted)]
    inside = (sx >= xmin) & (sx <= xmax) & (sy >= ymin) & (sy <= ymax)
    sx, sy = sx[inside], sy[inside]
    n_sites, n_sectors = len(sx), len(azimuths_deg)
    site_id = np.repeat(np.arange(n_sites, dtype=np.int64), n_sectors)
    sector = np.tile(np.arange(n_sectors), n_sites)
    cells = pd.DataFrame(
        {
            "cell_id": site_id * 10 + sector + 1,
            "site_id": site_id,
            "x": np.repeat(sx, n_sectors),
            "y": np.repeat(sy, n_sectors),
            "height_m": height_m,
            "azimuth_deg": np.tile(np.asarray(azimuths_deg, dtype=float), n_sites),
            "power_dbm": power_dbm,
            "band_mhz": band_mhz,
            "tracking_area": np.repeat(_tracking_areas(sx, sy, tracking_area_m), n_sectors),
            "temporary": False,
        }
    )
    return cells.astype(CELL_COLUMNS)


def generate_two_layer_cells(
    extent: tuple[float, float, float, float],
    *,
    rng: np.random.Generator,
    macro_isd_m: float = 1000.0,
    n_small: int = 20,
    macro_power_dbm: float = 43.0,
    macro_height_m: float = 30.0,
    small_power_dbm: float = 30.0,
    small_height_m: float = 6.0,
    band_mhz: float = 1800.0,
    tracking_area_m: float = 3000.0,
) -> pd.DataFrame:
    """A two-layer network: three-sector macro sites plus omni small cells.

    The layout of the synthetic comparison in Ricciato & Coluccia (2020): a macro layer
    on a jittered lattice of inter-site distance `macro_isd_m` (the same everywhere),
    overlaid by `n_small` low-power, low omni small cells placed uniformly at random,
    whose small footprints sit inside the macro cells'. Small cells get cell ids from
    ``100_000``.

    Returns
    -------
    pandas.DataFrame
        Cells with the columns of :data:`CELL_COLUMNS`.
    """
    if n_small < 0:
        raise ValueError(f"n_small = {n_small}; must be >= 0")
    macro = generate_cells(
        extent,
        rng=rng,
        isd_centre_m=macro_isd_m,
        isd_growth_per_km=0.0,
        isd_max_m=macro_isd_m,
        power_dbm=macro_power_dbm,
        height_m=macro_height_m,
        band_mhz=band_mhz,
        tracking_area_m=tracking_area_m,
    )
    xmin, ymin, xmax, ymax = extent
    sx, sy = rng.uniform(xmin, xmax, n_small), rng.uniform(ymin, ymax, n_small)
    first_site = int(macro["site_id"].max()) + 1 if len(macro) else 0
    small = pd.DataFrame(
        {
            "cell_id": 100_000 + np.arange(n_small, dtype=np.int64),
            "site_id": first_site + np.arange(n_small, dtype=np.int64),
            "x": sx,
            "y": sy,
            "height_m": small_height_m,
            "azimuth_deg": np.nan,
            "power_dbm": small_power_dbm,
            "band_mhz": band_mhz,
            "tracking_area": _tracking_areas(sx, sy, tracking_area_m),
            "temporary": False,
        }
    ).astype(CELL_COLUMNS)
    return pd.concat([macro, small], ignore_index=True).astype(CELL_COLUMNS)


def _tracking_areas(x: Any, y: Any, size_m: float) -> np.ndarray:
    """Tracking area of each point: squares of `size_m`, numbered from 1."""
    ix = np.floor(np.asarray(x, dtype=float) / size_m).astype(np.int64)
    iy = np.floor(np.asarray(y, dtype=float) / size_m).astype(np.int64)
    return pd.factorize(ix * 1_000_003 + iy)[0].astype(np.int64) + 1


def add_event_cells(
    cells: pd.DataFrame,
    x: Any,
    y: Any,
    *,
    azimuths_deg: tuple[float, ...] = (0.0, 120.0, 240.0),
    height_m: float = 15.0,
    power_dbm: float = 40.0,
    band_mhz: float = 2600.0,
) -> pd.DataFrame:
    """Add temporary event sites (cells on wheels) at points (x, y), metres.

    Each gets one cell per azimuth, marked ``temporary``, in the tracking area of the
    nearest permanent cell (operators fold a temporary site into the local area). Defaults
    are a small capacity layer: a 15 m mast, 40 dBm, 2600 MHz (assumption).
    """
    px, py = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    if len(px) == 0:
        return cells
    if cells.empty:
        raise ValueError("event cells need a permanent network to join (the plan is empty)")
    near = np.argmin((cells["x"].to_numpy()[None, :] - px[:, None]) ** 2
                     + (cells["y"].to_numpy()[None, :] - py[:, None]) ** 2, axis=1)  # fmt: skip
    n_sec = len(azimuths_deg)
    first_site = int(cells["site_id"].max()) + 1
    first_cell = (int(cells["cell_id"].max()) // 10 + 1) * 10
    site = np.repeat(np.arange(len(px), dtype=np.int64) + first_site, n_sec)
    extra = pd.DataFrame(
        {
            "cell_id": first_cell + np.arange(len(px) * n_sec, dtype=np.int64),
            "site_id": site,
            "x": np.repeat(px, n_sec),
            "y": np.repeat(py, n_sec),
            "height_m": height_m,
            "azimuth_deg": np.tile(np.asarray(azimuths_deg, dtype=float), len(px)),
            "power_dbm": power_dbm,
            "band_mhz": band_mhz,
            "tracking_area": np.repeat(cells["tracking_area"].to_numpy()[near], n_sec),
            "temporary": True,
        }
    ).astype(CELL_COLUMNS)
    return pd.concat([cells, extra], ignore_index=True)
