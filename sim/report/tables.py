"""What the report reads from a run folder, loaded once and put on the event's local time.

The run's tables use two clocks: the truth stamps a count with the END of its bin in
local time, the estimates and the cell counters with the START of a bin (or minute) in
UTC. Here every table gets a ``time`` column in the event's time zone, stamped at the bin
end, so truth and estimates of the same bin share one instant and the axes read as the
clock on the day. Large tables (grid estimates, grid truth) are read only at the bins a
figure needs, with Parquet filters, so the report's cost does not grow with the grid.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.estimate.output import INTERNAL_ESTIMATES_FILE, PUBLISHED_ESTIMATES_FILE

__all__ = ["GridRaster", "RunTables"]

#: Systems small enough to read whole (one row per zone and bin).
SMALL_SYSTEMS = ("area", "segment")
_TILE = re.compile(r"^g(-?\d+)_(-?\d+)$")


def _read(path: Path, **kwargs: Any) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_parquet(path, **kwargs)


@dataclass(eq=False)
class GridRaster:
    """Grid tiles (ids ``g{col}_{row}``) laid out as one raster, for ``imshow``.

    Attributes
    ----------
    tile_m
        Tile side (metres).
    col0, row0
        Column and row of the raster's lower-left tile.
    shape
        Rows x columns of the raster.
    """

    tile_m: float
    col0: int
    row0: int
    shape: tuple[int, int]
    _index: dict[str, tuple[int, int]] = field(repr=False)
    _cache: tuple[pd.Index, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def from_ids(cls, ids: list[str], *, tile_m: float) -> GridRaster | None:
        """The raster covering `ids`; None when no id names a tile."""
        parsed = [(z, _TILE.match(z)) for z in ids]
        cells = {z: (int(m[1]), int(m[2])) for z, m in parsed if m is not None}
        if not cells:
            return None
        cols = np.fromiter((c for c, _ in cells.values()), np.int64)
        rows = np.fromiter((r for _, r in cells.values()), np.int64)
        col0, row0 = int(cols.min()), int(rows.min())
        shape = (int(rows.max()) - row0 + 1, int(cols.max()) - col0 + 1)
        index = {z: (r - row0, c - col0) for z, (c, r) in cells.items()}
        return cls(tile_m=tile_m, col0=col0, row0=row0, shape=shape, _index=index)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) in metres, for ``imshow(extent=...)``."""
        g = self.tile_m
        return (
            self.col0 * g,
            (self.col0 + self.shape[1]) * g,
            self.row0 * g,
            (self.row0 + self.shape[0]) * g,
        )

    def _positions(self, names: pd.Index) -> np.ndarray:
        """(row, col) of each zone name, (-1, -1) for a name that is no tile; cached for
        the last list of names (frames of one table share their categories)."""
        cached = self._cache
        if cached is not None and (cached[0] is names or cached[0].equals(names)):
            return cached[1]
        where = np.array([self._index.get(str(z), (-1, -1)) for z in names], np.int64)
        where = where.reshape(-1, 2)
        self._cache = (names, where)
        return where

    def raster(self, zone: pd.Series | np.ndarray, value: np.ndarray) -> np.ndarray:
        """Values per tile as a raster (rows from south to north); NaN where no value.

        `zone` may be categorical (the run's tables are): tiles are then looked up once
        per category, not per row.
        """
        out = np.full(self.shape, np.nan)
        cat = zone.array if isinstance(zone, pd.Series) else zone
        if not isinstance(cat, pd.Categorical):
            cat = pd.Categorical(np.asarray(zone, dtype=object))
        if len(cat) == 0:
            return out
        codes = np.asarray(cat.codes)
        rc = self._positions(cat.categories)[np.maximum(codes, 0)]
        ok = (codes >= 0) & (rc[:, 0] >= 0)
        out[rc[ok, 0], rc[ok, 1]] = 0.0
        np.add.at(out, (rc[ok, 0], rc[ok, 1]), np.asarray(value, dtype=float)[ok])
        return out


@dataclass(eq=False)
class RunTables:
    """The run-folder tables the report draws, in the event's local time.

    Build with :meth:`load` (truth of areas and segments, metrics, cell load), then
    :meth:`load_details` (estimates, grid at chosen bins). Every table may be None when its
    stage did not write it.

    Attributes
    ----------
    timezone
        The event's time zone (axes are labelled in it).
    bin_s
        Width of a zone bin (seconds).
    truth
        Area and segment truth: time (bin end, local), system, zone, people, spectators.
    estimates
        Area and segment estimates: method, zone_system, zone, time (bin end, local),
        estimate, lower, upper, suppressed.
    metrics, metrics_bins
        Validation tables (``metrics_bins`` with a local ``time`` column).
    cell_load
        Per cell and minute counters, with a local ``time`` (minute start).
    grid_methods
        Methods that estimated grid tiles, in the order of the estimates (set by
        :meth:`load_details`).
    grid_view
        Which table the grid maps draw: ``"published"`` (``estimates.parquet``, what would
        leave the operator: suppressed tiles blank) or ``"internal"`` (a run folder from
        before the split, with one table only).
    """

    out_dir: Path
    timezone: str
    bin_s: float
    tile_m: float
    truth: pd.DataFrame | None
    estimates: pd.DataFrame | None
    metrics: pd.DataFrame | None
    metrics_bins: pd.DataFrame | None
    cell_load: pd.DataFrame | None
    grid_methods: list[str]
    grid_ids: list[str]
    grid_view: str = "internal"
    _grid_estimates: pd.DataFrame | None = field(default=None, repr=False)
    _grid_truth: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def load(cls, out_dir: Path, *, timezone: str, bin_s: float, tile_m: float) -> RunTables:
        """Read the small tables of run folder `out_dir` (the grid is read on demand)."""
        width = pd.Timedelta(seconds=bin_s)
        truth = _read(
            out_dir / "truth_zones.parquet", filters=[("system", "in", list(SMALL_SYSTEMS))]
        )
        if truth is not None:
            truth = truth.assign(
                time=truth["time"].dt.tz_convert(timezone),
                system=truth["system"].astype(str),
                zone=truth["zone"].astype(str),
            )
        grid_ids: list[str] = []
        zones_path = out_dir / "zones.gpkg"
        if zones_path.is_file():
            import pyogrio

            layers = {str(name) for name, _ in pyogrio.list_layers(zones_path)}
            if "grid" in layers:
                ids = pyogrio.read_dataframe(zones_path, layer="grid", read_geometry=False)
                grid_ids = [str(z) for z in ids["zone"]]
        metrics = _read(out_dir / "metrics.parquet")
        metrics_bins = _read(out_dir / "metrics_bins.parquet")
        if metrics_bins is not None and not metrics_bins.empty:
            metrics_bins = metrics_bins.assign(
                time=(pd.to_datetime(metrics_bins["bin"], utc=True) + width).dt.tz_convert(timezone)
            )
        cell_load = _read(
            out_dir / "cell_load.parquet",
            columns=[
                "minute",
                "cell_id",
                "connected_users",
                "rejections",
                "messages",
                "queue_delay_ms",
            ],
        )
        if cell_load is not None:
            cell_load = cell_load.assign(time=cell_load["minute"].dt.tz_convert(timezone))
        return cls(
            out_dir=out_dir,
            timezone=timezone,
            bin_s=bin_s,
            tile_m=tile_m,
            truth=truth,
            estimates=None,
            metrics=metrics,
            metrics_bins=metrics_bins,
            cell_load=cell_load,
            grid_methods=[],
            grid_ids=grid_ids,
        )

    # ------------------------------------------------------------------ times

    def times(self) -> pd.DatetimeIndex:
        """Every bin end of the truth (local), sorted."""
        if self.truth is None or self.truth.empty:
            return pd.DatetimeIndex([], tz=self.timezone)
        return pd.DatetimeIndex(np.sort(self.truth["time"].unique())).tz_convert(self.timezone)

    def peak_time(self) -> pd.Timestamp | None:
        """The bin end when most spectators are along the course (segments; else areas).

        This is the moment the planner cares about, and the one the heat maps show.
        """
        if self.truth is None or self.truth.empty:
            return None
        for system, column in (("segment", "spectators"), ("area", "people")):
            t = self.truth[self.truth["system"] == system]
            if not t.empty and t[column].sum() > 0:
                total = t.groupby("time")[column].sum()
                return pd.Timestamp(total.idxmax())
        return pd.Timestamp(self.times()[len(self.times()) // 2])

    def nearest_times(self, wanted: list[pd.Timestamp]) -> list[pd.Timestamp]:
        """The truth's bin ends nearest to each of `wanted`, without repeats, sorted."""
        times = self.times()
        if len(times) == 0:
            return []
        picked = {times[int(np.abs((times - w).total_seconds()).argmin())] for w in wanted}
        return sorted(pd.Timestamp(t) for t in picked)

    # ------------------------------------------------------------------ grid

    def grid(self) -> GridRaster | None:
        """The raster of the run's grid tiles (None without a grid)."""
        return GridRaster.from_ids(self.grid_ids, tile_m=self.tile_m)

    def _read_grid_truth(self, times: list[pd.Timestamp]) -> pd.DataFrame:
        path = self.out_dir / "truth_zones.parquet"
        if not times or not path.is_file():
            return pd.DataFrame(columns=["time", "zone", "people"])
        frame = pd.read_parquet(
            path,
            columns=["time", "system", "zone", "people"],
            filters=[("system", "==", "grid"), ("time", "in", _as_arrow_times(times))],
        )
        return pd.DataFrame(
            {
                "time": frame["time"].dt.tz_convert(self.timezone),
                "zone": frame["zone"].astype("category"),
                "people": frame["people"].to_numpy(np.float64),
            }
        ).reset_index(drop=True)

    def grid_truth(self, times: list[pd.Timestamp]) -> pd.DataFrame:
        """Truth of the grid tiles at bin ends `times` (read by :meth:`load_details`):
        time, zone, people."""
        cache = self._grid_truth
        if cache is None:
            return pd.DataFrame(columns=["time", "zone", "people"])
        return cache[cache["time"].isin(pd.DatetimeIndex(times)).to_numpy()]

    def load_details(self, grid_times: list[pd.Timestamp]) -> None:
        """Read the estimates in one pass: every area and segment row, and the grid rows of
        the bins ending at `grid_times` (the maps and the animation need no others).

        Sets :attr:`estimates`, :attr:`grid_methods` and the grid caches (the grid truth
        at `grid_times` too).
        """
        self._grid_truth = self._read_grid_truth(grid_times)
        internal = self.out_dir / INTERNAL_ESTIMATES_FILE
        published = self.out_dir / PUBLISHED_ESTIMATES_FILE
        # areas and segments are compared with the truth: the operator's internal table;
        # the grid maps show what would be published (suppressed tiles blank, noise if
        # on), unless the run predates the split and has one table only
        small_path = internal if internal.is_file() else published
        if not small_path.is_file():
            return
        split = internal.is_file() and published.is_file()
        grid_path = published if split else small_path
        self.grid_view = "published" if split else "internal"
        width = pd.Timedelta(seconds=self.bin_s)
        starts = [pd.Timestamp(t).tz_convert("UTC") - width for t in grid_times]
        columns = ["method", "zone_system", "zone", "bin", "estimate", "lower", "upper",
                   "suppressed"]  # fmt: skip
        frames = [
            pd.read_parquet(
                small_path, columns=columns, filters=[("zone_system", "in", list(SMALL_SYSTEMS))]
            )
        ]
        if starts:
            frames.append(
                pd.read_parquet(
                    grid_path,
                    columns=columns,
                    filters=[("zone_system", "==", "grid"), ("bin", "in", _as_arrow_times(starts))],
                )
            )
        frame = pd.concat(
            [f.astype({"method": str, "zone_system": str, "zone": str}) for f in frames],
            ignore_index=True,
        )
        is_grid = (frame["zone_system"] == "grid").to_numpy()
        small = frame[~is_grid].reset_index(drop=True)
        self.estimates = pd.DataFrame(
            {
                "method": small["method"].astype(str),
                "zone_system": small["zone_system"].astype(str),
                "zone": small["zone"].astype(str),
                "time": (small["bin"] + width).dt.tz_convert(self.timezone),
                "estimate": small["estimate"].astype(np.float64),
                "lower": small["lower"].astype(np.float64),
                "upper": small["upper"].astype(np.float64),
                "suppressed": small["suppressed"].astype(bool),
            }
        )
        grid = frame[is_grid].reset_index(drop=True)  # stays categorical: millions of rows
        methods = grid["method"].astype("category").cat.remove_unused_categories()
        order = pd.unique(methods.cat.codes.to_numpy())
        self.grid_methods = [str(methods.cat.categories[c]) for c in order]
        self._grid_estimates = pd.DataFrame(
            {
                "method": methods,
                "time": (grid["bin"] + width).dt.tz_convert(self.timezone),
                "zone": grid["zone"].astype("category"),
                "estimate": grid["estimate"].astype(np.float64),
            }
        )

    def grid_estimates(self, times: list[pd.Timestamp], *, methods: list[str]) -> pd.DataFrame:
        """Grid estimates of `methods` for the bins ending at `times` (read by
        :meth:`load_details`): method, time, zone, estimate."""
        cache = self._grid_estimates
        if cache is None:
            return pd.DataFrame(columns=["method", "time", "zone", "estimate"])
        keep = cache["time"].isin(pd.DatetimeIndex(times)) & cache["method"].isin(methods)
        return cache[keep.to_numpy()]

    # ------------------------------------------------------------------ streets

    def truth_edges(self, columns: list[str]) -> pd.DataFrame | None:
        """Columns of ``truth_edges.parquet`` (None when absent); ``time`` in local time."""
        frame = _read(self.out_dir / "truth_edges.parquet", columns=columns)
        if frame is not None and "time" in frame:
            frame = frame.assign(time=frame["time"].dt.tz_convert(self.timezone))
        return frame


def _as_arrow_times(times: list[pd.Timestamp]) -> list[dt.datetime]:
    """Timestamps as Python datetimes (what pyarrow's ``in`` filter compares), in UTC."""
    return [pd.Timestamp(t).tz_convert("UTC").to_pydatetime() for t in times]


def read_manifest_source(out_dir: Path) -> str | None:
    """The street source described in the run's manifest, if it says one."""
    from sim.errors import RunFolderError
    from sim.runfolder import read_manifest

    try:
        source = read_manifest(out_dir).get("street_source") or {}
    except RunFolderError:
        return None
    return source.get("description") if isinstance(source, dict) else None
