"""What the dashboard shows, pre-aggregated: one run as zones x bins arrays.

A run is read once (:meth:`RunData.from_run`) into NumPy arrays, one row per zone and
one column per bin, for every zone system, every method and the truth, so a step of the
clock only takes a column of each array and a redraw only swaps a colour array. The same
class serves a run that is still going (``crowdsim live``): :meth:`RunData.for_scenario`
starts it empty and :meth:`RunData.append_frame` fills one bin at a time from the
streaming run's frames (:class:`sim.stream.MinuteFrame`). A lock guards the arrays:
the run's thread writes, the browser sessions read.

Where each layer comes from (a finished run):

- tiles (the published zone system, ``grid``): ``estimates.parquet``, the published
  view, where a suppressed zone-bin has no value (NaN, ``suppressed`` true);
- course segments and named areas: ``estimates_internal.parquet`` (the operator's own
  table; these systems are not published), with its suppression applied in the same
  way, so the screen never shows a value the operator would have withheld;
- the truth: ``truth_zones.parquet`` (an absent zone-bin had nobody);
- cell load and rejections per site: ``cell_load.parquet`` and the operator's
  ``network_plan.json`` (a site is the mean position of its cells);
- levels of service on the streets: ``truth_edges.parquet``;
- the map: the streets, the course and its waypoints from ``course.gpkg``, the zones
  from ``zones.gpkg``. Everything is drawn in Web Mercator (EPSG:3857), so web map
  tiles can lie beneath when the browser is online.

The estimate tables and the levels of service of the course segments and areas are
loaded in a background thread after the map opens (:meth:`RunData.wait_extras`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim import runfolder
from sim.errors import RunFolderError

if TYPE_CHECKING:
    import pyproj

    from sim.scenario import Scenario

__all__ = [
    "MAP_CRS",
    "RUN_CRS",
    "SYSTEMS",
    "CourseLines",
    "LevelsOfService",
    "RunData",
    "SiteLoad",
    "StreetLines",
    "ZoneSeries",
    "area_outlines",
    "interval_note",
    "tile_outlines",
    "to_map",
]

#: The runs' projected CRS (Belgian Lambert 72, metres) and the map's (Web Mercator).
RUN_CRS = "EPSG:31370"
MAP_CRS = "EPSG:3857"
#: Zone systems, the published one first; the others come from the internal table.
SYSTEMS = ("grid", "segment", "area")
#: Fruin's walkway levels, A (free) to F (jammed), as ``truth_edges.parquet`` codes them.
LOS_LEVELS = "ABCDEF"
#: What the ``lower``/``upper`` columns are (sim.estimate.intervals), said beside every
#: interval when the run's manifest does not say it per method (a live run, an old run).
INTERVAL_NOTE = (
    "95 % interval of the people: where the cells' devices are (the method's location "
    "posterior), who carries a device (binomial thinning) and the operator's uncertain "
    "market share and phones per person; it does not hold a crowd whose density differs "
    "from the method's model (as one packed along a course)"
)


def interval_note(facts: dict[str, Any] | None) -> str:
    """One sentence on a method's interval from its manifest facts (``interval_facts()``)."""
    if not facts:
        return INTERVAL_NOTE
    level = float(facts.get("confidence", 0.95))
    text = (
        f"{level * 100:g} % interval of the people: location ({facts.get('location', '?')}), "
        f"sampling ({facts.get('sampling', '?')})"
    )
    sd = facts.get("belief_relative_sd")
    if sd:
        text += f", beliefs (relative sd {float(sd):.0%} of people per device)"
    realtime = facts.get("realtime")
    if realtime and realtime != "the same as in batch":
        text += f"; in real time: {realtime}"
    return text


#: Files a run folder must hold for the dashboard.
NEEDED = (
    runfolder.ESTIMATES,
    runfolder.TRUTH_ZONES,
    runfolder.ZONES,
    runfolder.COURSE,
    runfolder.CELL_LOAD,
    runfolder.NETWORK_PLAN,
)
#: The screen's arrays of a finished run: its published grid, the grid's truth and the
#: cell load per tile (cell) and bin, as the map draws them. A cache, not a run file (so
#: hidden): keyed by the checksums of the files it comes from, built at the end of a run
#: (its report stage) or by the first ``serve`` of it, and read in a fraction of the time
#: the tables take (on the full team time trial the published table alone is 24 million
#: rows). A stale or damaged cache is built again, never trusted.
SCREEN_CACHE = ".screen.npz"
#: The files the screen's arrays come from.
SCREEN_SOURCES = (runfolder.ESTIMATES, runfolder.TRUTH_ZONES, runfolder.CELL_LOAD, runfolder.ZONES)
#: Bumped when what the cache holds changes.
SCREEN_FORMAT = 2
#: The values of an estimate the cache keeps (with its suppressed marks).
VALUES = ("estimate", "lower", "upper")
#: The files the map needs at once when the cache is good (the others are read later).
NEEDED_WITH_SCREEN = (runfolder.ZONES, runfolder.COURSE, runfolder.NETWORK_PLAN, *SCREEN_SOURCES)


def screen_key(manifest: dict[str, Any]) -> str | None:
    """The key of a run's screen cache: its sources' checksums (None: not all recorded)."""
    import hashlib
    import json

    files = manifest.get("files") or {}
    sums = {name: (files.get(name) or {}).get("sha256") for name in SCREEN_SOURCES}
    if not all(sums.values()):
        return None
    record = json.dumps({"format": SCREEN_FORMAT, "sources": sums}, sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()


def write_screen(folder: str | Path) -> Path | None:
    """Build a run's screen cache from its tables (a run's report stage calls this).

    Reads the run's files as the manifest written so far lists them (the run may still be
    running); returns the cache's path, or None when the run has no published table yet.
    """
    folder = Path(folder)
    manifest = runfolder.read_manifest(folder)
    key = screen_key(manifest)
    if key is None:
        return None
    from sim.scenario import load_scenario

    data = RunData._from_folder(folder, load_scenario(folder / runfolder.SCENARIO), manifest)
    grid = data._zone_layers(("grid",))["grid"]
    data._put_tables(grid)
    return data._write_screen(grid, key)


@cache
def _transformer() -> pyproj.Transformer:
    import pyproj

    return pyproj.Transformer.from_crs(RUN_CRS, MAP_CRS, always_xy=True)


def to_map(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:31370 metres to the map's Web Mercator metres."""
    mx, my = _transformer().transform(np.asarray(x, dtype=np.float64), np.asarray(y, np.float64))
    return np.asarray(mx, dtype=np.float64), np.asarray(my, dtype=np.float64)


# ----------------------------------------------------------------------------- geometry


def tile_outlines(ids: Sequence[str], grid_m: float) -> list[np.ndarray]:
    """Outlines (EPSG:31370, closed rings of 5 points) of grid tiles from their ids.

    A tile id is ``g{column}_{row}`` with the tile covering ``[column, column + 1) x
    [row, row + 1)`` times `grid_m` metres (:func:`sim.zones.build_zones`), so a tile a
    live run names for the first time can be drawn without the zones file.

    Raises
    ------
    ValueError
        An id that is not a tile id.
    """
    rings = []
    for zid in ids:
        col, sep, row = zid[1:].partition("_")
        try:
            if not zid.startswith("g") or not sep:
                raise ValueError(zid)
            c, r = int(col), int(row)
        except ValueError:
            raise ValueError(f"zone {zid!r}: not a grid tile id (g<column>_<row>)") from None
        x0, y0, x1, y1 = c * grid_m, r * grid_m, (c + 1) * grid_m, (r + 1) * grid_m
        rings.append(np.array([[x1, y0], [x1, y1], [x0, y1], [x0, y0], [x1, y0]], dtype=float))
    return rings


def area_outlines(scenario: Scenario, *, n: int = 64) -> dict[str, np.ndarray]:
    """Outlines (EPSG:31370) of the scenario's named areas: circles, as the run builds them."""
    from sim.streets import to_metres

    out = {}
    angle = np.linspace(0.0, 2.0 * np.pi, n + 1)
    for area in scenario.zones.areas:
        ax, ay = (float(v) for v in to_metres(area.lon, area.lat))
        out[area.name] = np.column_stack(
            [ax + area.radius_m * np.cos(angle), ay + area.radius_m * np.sin(angle)]
        )
    return out


def _outlines_of(geoms: np.ndarray) -> list[np.ndarray]:
    """Exterior ring of each polygon (of a multipolygon: its largest part), vectorised."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    multi = shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOLYGON
    if multi.any():
        geoms = geoms.copy()
        for k in np.flatnonzero(multi):
            geoms[k] = max(geoms[k].geoms, key=lambda g: g.area)
    coords, owner = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    cuts = np.flatnonzero(np.diff(owner)) + 1
    return np.split(coords, cuts)


@dataclass(eq=False)
class StreetLines:
    """Every directed street edge as a straight segment on the map (EPSG:3857).

    Edge ``e`` (as in ``truth_edges.parquet``) runs from ``(x0[e], y0[e])`` to
    ``(x1[e], y1[e])``; ``drawn`` are the edges that draw each street once.
    """

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    drawn: np.ndarray

    @classmethod
    def from_course_file(cls, path: Path) -> StreetLines | None:
        """The ``streets`` layer of ``course.gpkg``, or None for a run written without it."""
        import pyogrio
        import shapely

        if runfolder.COURSE_STREETS not in {name for name, _ in pyogrio.list_layers(path)}:
            return None
        ends = ["x0", "y0", "x1", "y1"]
        info = pyogrio.read_info(path, layer=runfolder.COURSE_STREETS)
        numbers = set(ends) <= set(info["fields"])
        meta, table = pyogrio.read_arrow(
            path,
            layer=runfolder.COURSE_STREETS,
            columns=["edge", "u", "v", *(ends if numbers else [])],
            read_geometry=not numbers,
        )
        if numbers:
            xy = np.column_stack([table.column(c).to_numpy() for c in ends]).reshape(-1, 2, 2)
        else:  # written before the ends were columns: from the geometries
            geometry = table.column(meta["geometry_name"] or "wkb_geometry")
            lines = shapely.from_wkb(np.asarray(geometry.to_numpy(zero_copy_only=False)))
            xy = shapely.get_coordinates(lines).reshape(-1, 2, 2)
        edge = table.column("edge").to_numpy()
        u, v = table.column("u").to_numpy(), table.column("v").to_numpy()
        order = np.argsort(edge)
        return cls.from_segments(xy[order], u[order], v[order])

    @classmethod
    def from_segments(cls, xy: np.ndarray, u: np.ndarray, v: np.ndarray) -> StreetLines:
        """From (n x 2 x 2) EPSG:31370 segments of edges ``u -> v``, in edge order."""
        # a node is the end of several edges: transform each node once
        nodes, first, back = np.unique(
            np.concatenate([u, v]), return_index=True, return_inverse=True
        )
        ends = np.concatenate([xy[:, 0], xy[:, 1]])[first]
        mx, my = to_map(ends[:, 0], ends[:, 1])
        n = len(u)
        x0, y0, x1, y1 = mx[back[:n]], my[back[:n]], mx[back[n:]], my[back[n:]]
        # one line per street: u < v, and the one-way edges whose reverse is missing
        size = int(nodes.max()) + 1 if len(nodes) else 1
        key = u.astype(np.int64) * size + v
        one_way = ~np.isin(v.astype(np.int64) * size + u, key)
        drawn = np.flatnonzero((u < v) | one_way)
        return cls(x0, y0, x1, y1, drawn)


@dataclass(eq=False)
class CourseLines:
    """The course (its pieces) and its waypoints on the map."""

    xs: list[np.ndarray]
    ys: list[np.ndarray]
    waypoints: pd.DataFrame  # name, kind, km, x, y (map)

    @classmethod
    def from_course_file(cls, path: Path) -> CourseLines:
        """The ``course`` and ``waypoints`` layers of ``course.gpkg``."""
        import pyogrio
        import shapely

        course = pyogrio.read_dataframe(path, layer="course")
        xs, ys = [], []
        for geom in course.geometry:
            parts = geom.geoms if geom.geom_type == "MultiLineString" else [geom]
            for part in parts:
                xy = shapely.get_coordinates(part)
                mx, my = to_map(xy[:, 0], xy[:, 1])
                xs.append(mx)
                ys.append(my)
        points = pyogrio.read_dataframe(path, layer="waypoints")
        px, py = to_map(points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
        waypoints = pd.DataFrame(
            {
                "name": points["name"].astype(str).to_numpy(),
                "kind": points["kind"].astype(str).to_numpy(),
                "km": points["km"].to_numpy(np.float64),
                "x": px,
                "y": py,
            }
        )
        return cls(xs, ys, waypoints)


@dataclass(eq=False)
class SiteLoad:
    """Per-cell counters by bin, and the operator's sites they belong to.

    ``connected`` (peak RRC-connected users in the bin) and ``rejections`` (summed) are
    cells x bins; :meth:`at` adds them up per site.
    """

    cell_ids: np.ndarray
    connected: np.ndarray
    rejections: np.ndarray
    site_of_cell: np.ndarray | None = None  # site row of each cell; None: no plan yet
    site_ids: np.ndarray | None = None
    site_x: np.ndarray | None = None  # map coordinates
    site_y: np.ndarray | None = None
    site_cells: np.ndarray | None = None

    def attach_plan(self, plan_file: Path) -> None:
        """Place the cells at their sites from the operator's ``network_plan.json``."""
        from sim.network.plan import NetworkPlan

        cells = NetworkPlan.from_json(plan_file).cells
        sites = cells.groupby("site_id", sort=True).agg(
            x=("x", "mean"), y=("y", "mean"), n=("cell_id", "size")
        )
        row_of_site = pd.Series(np.arange(len(sites)), index=sites.index)
        site_of = pd.Series(
            row_of_site.loc[cells["site_id"]].to_numpy(), index=cells["cell_id"].to_numpy()
        )
        mapped = site_of.reindex(self.cell_ids).to_numpy(np.float64)
        self.site_of_cell = np.where(np.isnan(mapped), -1, mapped).astype(np.int64)
        self.site_ids = sites.index.to_numpy()
        self.site_x, self.site_y = to_map(sites["x"].to_numpy(), sites["y"].to_numpy())
        self.site_cells = sites["n"].to_numpy(np.int64)

    def at(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Connected users and rejections per site in bin `t` (empty without a plan)."""
        if self.site_of_cell is None or self.site_ids is None:
            return np.zeros(0), np.zeros(0)
        ok = self.site_of_cell >= 0
        n = len(self.site_ids)
        where = self.site_of_cell[ok]
        return (
            np.bincount(where, weights=self.connected[ok, t], minlength=n),
            np.bincount(where, weights=self.rejections[ok, t], minlength=n),
        )

    def add(self, table: pd.DataFrame, bin_of: Any) -> None:
        """Fold rows of ``cell_load.parquet`` into the arrays (`bin_of` maps minutes to bins)."""
        if table.empty:
            return
        cells = table["cell_id"].to_numpy(np.int64)
        new = np.setdiff1d(np.unique(cells), self.cell_ids)
        if len(new):
            n_bins = self.connected.shape[1]
            self.cell_ids = np.concatenate([self.cell_ids, new])
            order = np.argsort(self.cell_ids, kind="stable")
            self.cell_ids = self.cell_ids[order]
            pad = np.zeros((len(new), n_bins))
            self.connected = np.concatenate([self.connected, pad])[order]
            self.rejections = np.concatenate([self.rejections, pad])[order]
            self.site_of_cell = None  # cells changed: place them again
        row = np.searchsorted(self.cell_ids, cells)
        col = bin_of(table["minute"])
        keep = (col >= 0) & (col < self.connected.shape[1])
        row, col = row[keep], col[keep]
        np.maximum.at(self.connected, (row, col), table["connected_users"].to_numpy()[keep])
        np.add.at(self.rejections, (row, col), table["rejections"].to_numpy()[keep])


@dataclass(eq=False)
class LevelsOfService:
    """The street edges with somebody on them, bin by bin, and their Fruin level.

    Rows ``start[t]:start[t + 1]`` are bin `t`'s: ``edge`` (street edge), ``level``
    (0 = A ... 5 = F) and ``density`` (persons/m²).
    """

    start: np.ndarray
    edge: np.ndarray
    level: np.ndarray
    density: np.ndarray

    def at(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges, levels and densities of bin `t`."""
        a, b = int(self.start[t]), int(self.start[t + 1])
        return self.edge[a:b], self.level[a:b], self.density[a:b]


# ----------------------------------------------------------------------------- series


@dataclass(eq=False)
class ZoneSeries:
    """One zone system: its zones on the map and their series (zones x bins).

    The arrays grow when a live run names a zone for the first time; rows beyond
    :attr:`n` are capacity. Estimates are NaN where suppressed (``suppressed`` true) or
    not yet known; the truth is 0 where nobody was counted.
    """

    system: str
    n_bins: int
    source: str  # "published" or "internal"
    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    outlines: list[np.ndarray] = field(default_factory=list)  # EPSG:31370 rings
    area_m2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    truth: np.ndarray = field(init=False)
    estimate: dict[str, np.ndarray] = field(default_factory=dict)
    lower: dict[str, np.ndarray] = field(default_factory=dict)
    upper: dict[str, np.ndarray] = field(default_factory=dict)
    suppressed: dict[str, np.ndarray] = field(default_factory=dict)
    map_xs: list[np.ndarray] = field(default_factory=list)
    map_ys: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:  # noqa: D105 - the arrays start empty
        self.truth = np.zeros((0, self.n_bins), dtype=np.float32)

    @property
    def n(self) -> int:
        """Number of zones."""
        return len(self.ids)

    @property
    def methods(self) -> list[str]:
        """Methods with estimates in this system."""
        return list(self.estimate)

    def add_zones(self, ids: Sequence[str], outlines: Sequence[np.ndarray]) -> None:
        """Append zones (ids not yet known) with their EPSG:31370 outlines."""
        if not ids:
            return
        start = self.n
        self.ids.extend(ids)
        self.index.update({z: start + i for i, z in enumerate(ids)})
        self.outlines.extend(outlines)
        self.area_m2 = np.concatenate([self.area_m2, _ring_areas(outlines)])
        # one transformation for all the rings, then cut per ring
        every = np.concatenate(list(outlines))
        mx, my = to_map(every[:, 0], every[:, 1])
        cuts = np.cumsum([len(r) for r in outlines])[:-1]
        self.map_xs.extend(np.split(mx, cuts))
        self.map_ys.extend(np.split(my, cuts))
        self._grow(self.n)

    def _grow(self, rows: int) -> None:
        have = self.truth.shape[0]
        if rows <= have:
            return
        cap = max(rows, 2 * have, 64)

        def grown(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((cap, self.n_bins), fill, dtype=a.dtype)
            out[: a.shape[0]] = a
            return out

        self.truth = grown(self.truth, 0)
        for store, fill in (
            (self.estimate, np.nan),
            (self.lower, np.nan),
            (self.upper, np.nan),
            (self.suppressed, False),
        ):
            for method in store:
                store[method] = grown(store[method], fill)

    def ensure_method(self, method: str) -> None:
        """Make room for `method`'s estimates."""
        if method in self.estimate:
            return
        shape = (self.truth.shape[0], self.n_bins)
        self.estimate[method] = np.full(shape, np.nan, dtype=np.float32)
        self.lower[method] = np.full(shape, np.nan, dtype=np.float32)
        self.upper[method] = np.full(shape, np.nan, dtype=np.float32)
        self.suppressed[method] = np.zeros(shape, dtype=bool)

    # the arrays hold capacity rows beyond `n`: readers go through these views
    def truth_matrix(self) -> np.ndarray:
        """Truth, zones x bins (a view)."""
        return self.truth[: self.n]

    def matrix(self, method: str, what: str = "estimate") -> np.ndarray:
        """`what` (estimate, lower, upper, suppressed) of `method`, zones x bins (a view)."""
        store = {
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "suppressed": self.suppressed,
        }[what]
        return store[method][: self.n]

    def rows_of(self, zones: Iterable[str]) -> np.ndarray:
        """Row of each zone id (-1 for an unknown one)."""
        get = self.index.get
        return np.fromiter((get(z, -1) for z in zones), dtype=np.int64)

    def put_estimates(self, table: pd.DataFrame, cols: np.ndarray, *, suppress: bool) -> None:
        """Write estimate rows (method, zone, lower, upper, suppressed) at bins `cols`.

        With `suppress`, a suppressed row's value is dropped (the internal table keeps it).
        """
        method_codes, methods = _codes(table["method"])
        self.put_estimate_arrays(
            [str(m) for m in methods],
            method_codes,
            self.rows_of_column(table["zone"]),
            cols,
            # copies: the suppression must not write into the caller's table
            {c: np.array(table[c], dtype=np.float32) for c in ("estimate", "lower", "upper")},
            table["suppressed"].to_numpy(bool),
            suppress=suppress,
        )

    def put_estimate_arrays(
        self,
        methods: Sequence[str],
        method_codes: np.ndarray,
        rows: np.ndarray,
        cols: np.ndarray,
        values: dict[str, np.ndarray],
        hidden: np.ndarray,
        *,
        suppress: bool,
    ) -> None:
        """Write estimates given as arrays: method code, zone row and bin of each value.

        `values` holds ``estimate``, ``lower`` and ``upper`` (float32; changed in place
        with `suppress`). A run's table comes grouped by method, then zone, then bin: each
        method is then one block of rows, written with one scatter into the flat arrays
        (or one copy, when the block holds every zone and bin in order).
        """
        if suppress:
            for column in values.values():
                column[hidden] = np.nan
        flat = rows * self.n_bins + cols
        flat[(rows < 0) | (cols < 0) | (cols >= self.n_bins)] = -1
        for k, name in enumerate(methods):
            part = _block(method_codes, k)
            index = flat[part]
            keep = index >= 0
            if not keep.any():
                continue
            self.ensure_method(name)
            whole = bool(keep.all()) and _is_range(index)
            targets = (
                self.estimate[name], self.lower[name], self.upper[name], self.suppressed[name],
            )  # fmt: skip
            sources = (values["estimate"], values["lower"], values["upper"], hidden)
            for target, source in zip(targets, sources, strict=True):
                out = target.reshape(-1)  # a view: the arrays are C-ordered
                if whole:
                    out[index[0] : index[0] + len(index)] = source[part]
                else:
                    out[index[keep]] = source[part][keep]

    def rows_of_column(self, zone: pd.Series) -> np.ndarray:
        """Row of each zone of a table's column (-1 for zones not known)."""
        codes, uniques = _codes(zone)
        lookup = np.append(self.rows_of(str(u) for u in uniques), -1)
        return lookup[codes]  # code -1 (missing) takes the appended -1

    def put_truth(self, zones: pd.Series, people: np.ndarray, cols: np.ndarray) -> None:
        """Write truth counts of `zones` at bins `cols` (unknown zones are skipped)."""
        rows = self.rows_of_column(zones)
        ok = (rows >= 0) & (cols >= 0) & (cols < self.n_bins)
        self.truth[rows[ok], cols[ok]] = people[ok]


# ----------------------------------------------------------------------------- run data


@dataclass(eq=False)
class RunData:
    """A run, finished or live, ready to draw: see the module notes.

    Attributes
    ----------
    label
        Short name of the run (scenario and folder).
    bins
        UTC starts of the bins (all of the run, also those a live run has not reached).
    n_filled
        Bins with data: all of a finished run; those a live run has streamed.
    systems
        The zone systems' series, by name (``grid`` first).
    """

    label: str
    scenario: Scenario
    bins: pd.DatetimeIndex
    bin_s: float
    timezone: str
    systems: dict[str, ZoneSeries]
    sites: SiteLoad
    path: Path | None = None
    n_filled: int = 0
    streets: StreetLines | None = None
    course: CourseLines | None = None
    los: LevelsOfService | None = None
    live: bool = False
    #: bumped whenever the data change (sessions redraw what changed)
    version: int = 0
    progress: Any = None
    #: each method's interval facts, from the manifest (``facts.estimators.intervals``)
    interval_facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: a finished run's manifest (its files are checked against it as they are read)
    manifest: dict[str, Any] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    _extras: threading.Thread | None = None
    _extras_error: BaseException | None = None
    timings: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def period(scenario: Scenario) -> tuple[pd.DatetimeIndex, float]:
        """The bins of `scenario` (UTC starts, every ``zones.bin_s`` seconds) and their width."""
        bin_s = float(scenario.zones.bin_s)
        start = pd.Timestamp(scenario.event.start_datetime).tz_convert("UTC")
        n = int(scenario.event.duration_s // bin_s)
        bins = pd.date_range(start, periods=n, freq=pd.Timedelta(seconds=bin_s)).as_unit("ns")
        return bins, bin_s

    @classmethod
    def for_scenario(cls, scenario: Scenario, *, label: str | None = None) -> RunData:
        """An empty run of `scenario`, filled by :meth:`append_frame` (``crowdsim live``).

        Tiles are added as the frames name them; the named areas are known from the start.
        """
        bins, bin_s = cls.period(scenario)
        systems = {"grid": ZoneSeries("grid", len(bins), "published")}
        areas = area_outlines(scenario)
        if areas:
            systems["area"] = ZoneSeries("area", len(bins), "internal")
            systems["area"].add_zones(list(areas), list(areas.values()))
        from sim.estimate import make_estimators

        # what each method's interval holds depends on its parameters, not on its prior
        config = scenario.estimators.model_copy(update={"prior": "flat"})
        facts = {e.method: e.interval_facts() for e in make_estimators(config)}
        return cls(
            interval_facts=facts,
            label=label or f"{scenario.name} (live)",
            scenario=scenario,
            bins=bins,
            bin_s=bin_s,
            timezone=scenario.event.timezone,
            systems=systems,
            sites=SiteLoad(
                np.zeros(0, np.int64), np.zeros((0, len(bins))), np.zeros((0, len(bins)))
            ),
            live=True,
        )

    @classmethod
    def from_run(cls, path: str | Path, *, extras: bool = True) -> RunData:
        """Read a finished run folder (checked by :func:`sim.runfolder.open_run`).

        Parameters
        ----------
        path
            A folder ``crowdsim run`` wrote, with status ``ok``.
        extras
            Load the course segments, areas and levels of service in a background thread
            (True), or not at all.

        Raises
        ------
        RunFolderError
            Not a finished run folder, or a file the dashboard reads is missing or not
            what the run wrote. The message names the folder and the file.
        """
        import time

        t0 = time.perf_counter()
        folder = Path(path)
        # the files the map reads now are checked now; the others when they are read
        key = None
        if (folder / SCREEN_CACHE).is_file():
            key = screen_key(runfolder.read_manifest(folder))
        rf = runfolder.open_run(
            folder,
            need=NEEDED,
            verify=NEEDED_WITH_SCREEN if key is not None else NEEDED,
            purpose="serve",
        )
        data = cls._from_folder(rf.path, rf.scenario, rf.manifest, label=rf.label)
        t0 = data._time("open_run_s", t0)
        grid = data._zone_layers(("grid",))["grid"]
        grid.source = "published"
        data.systems["grid"] = grid
        t0 = data._time("zones_s", t0)
        if key is None or not data._read_screen(grid, key):
            data._put_tables(grid)
            t0 = time.perf_counter()
            key = screen_key(rf.manifest)
            if key is not None:
                data._write_screen(grid, key)  # for the next time (or nothing, if read-only)
            t0 = data._time("screen_written_s", t0)
        else:
            t0 = data._time("screen_s", t0)
        data.sites.attach_plan(rf.file(runfolder.NETWORK_PLAN))
        t0 = data._time("plan_s", t0)
        data._load_map(rf.file(runfolder.COURSE))
        data._time("map_s", t0)
        if extras:
            data._extras = threading.Thread(
                target=data._load_extras, name=f"dashboard-extras-{rf.path.name}", daemon=True
            )
            data._extras.start()
        return data

    @classmethod
    def _from_folder(
        cls, folder: Path, scenario: Scenario, manifest: dict[str, Any], *, label: str = ""
    ) -> RunData:
        """An empty RunData of a run folder: its period, sites and interval facts."""
        bins, bin_s = cls.period(scenario)
        data = cls(
            label=label or f"{scenario.name} ({folder.name})",
            scenario=scenario,
            bins=bins,
            bin_s=bin_s,
            timezone=scenario.event.timezone,
            systems={},
            sites=SiteLoad(
                np.zeros(0, np.int64), np.zeros((0, len(bins))), np.zeros((0, len(bins)))
            ),
            path=folder,
            n_filled=len(bins),
            manifest=manifest,
        )
        facts = (manifest.get("facts") or {}).get("estimators") or {}
        data.interval_facts = dict(facts.get("intervals") or {})
        return data

    def _put_tables(self, grid: ZoneSeries) -> None:
        """The grid's published estimates, its truth and the cell load, from the tables."""
        import time

        assert self.path is not None
        t0 = time.perf_counter()
        self._put_published(self.path / runfolder.ESTIMATES, grid)
        t0 = self._time("estimates_s", t0)
        self._put_truth_file(self.path / runfolder.TRUTH_ZONES, {"grid": grid})
        t0 = self._time("truth_s", t0)
        self.sites.add(_read_table(self.path / runfolder.CELL_LOAD), self.minute_index)
        self._time("cell_load_s", t0)

    def _screen_arrays(self, grid: ZoneSeries) -> dict[str, Any]:
        """The arrays of the cache, most of them sparse.

        Most published zone-bins are suppressed (79% on the full team time trial), so a
        method's values are kept only where one of them is a number (flat index and
        value), and its suppressed marks as bits: 150 MB there instead of 365 MB as
        dense arrays, and no slower to read back.
        """
        arrays: dict[str, Any] = {
            "zones": np.asarray(grid.ids, dtype=str),
            "bins": self.bins.asi8,
            "methods": np.asarray(grid.methods, dtype=str),
            "truth": grid.truth_matrix(),
            "cell_ids": self.sites.cell_ids,
            "connected": self.sites.connected,
            "rejections": self.sites.rejections,
        }
        for k, method in enumerate(grid.methods):
            values = {what: grid.matrix(method, what).reshape(-1) for what in VALUES}
            shown = np.zeros(grid.n * self.n_bins, dtype=bool)
            for column in values.values():
                shown |= ~np.isnan(column)
            index = np.flatnonzero(shown)
            arrays[f"index_{k}"] = index.astype(np.int64)
            arrays.update({f"{what}_{k}": column[index] for what, column in values.items()})
            arrays[f"suppressed_{k}"] = np.packbits(grid.matrix(method, "suppressed"))
        return arrays

    def _write_screen(self, grid: ZoneSeries, key: str) -> Path | None:
        """Store the screen's arrays under `key` (None when the folder is not writable)."""
        from sim.io import atomic_path

        assert self.path is not None
        dest = self.path / SCREEN_CACHE
        try:
            with atomic_path(dest) as tmp, tmp.open("wb") as handle:
                np.savez(handle, key=np.asarray(key), **self._screen_arrays(grid))
        except OSError:
            return None
        return dest

    def _read_screen(self, grid: ZoneSeries, key: str) -> bool:
        """Fill the grid and the cell load from the screen cache, if it is `key`'s and whole.

        False (and nothing filled) when it is stale, damaged or of other zones or bins.
        """
        import zipfile

        assert self.path is not None
        try:
            # the file opened here, so that a damaged one is closed too (np.load leaks it)
            with (
                (self.path / SCREEN_CACHE).open("rb") as handle,
                np.load(handle, allow_pickle=False) as z,
            ):
                if str(z["key"]) != key:
                    return False
                if not np.array_equal(z["bins"], self.bins.asi8) or z["zones"].tolist() != grid.ids:
                    return False
                arrays = {name: z[name] for name in z.files if name not in ("key", "bins", "zones")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return False
        shape = (grid.n, self.n_bins)
        size = grid.n * self.n_bins
        if arrays["truth"].shape != shape:
            return False
        filled: dict[str, dict[str, np.ndarray]] = {}
        for k, method in enumerate(str(m) for m in arrays["methods"]):
            index = arrays[f"index_{k}"]
            if len(index) and (index.min() < 0 or index.max() >= size):
                return False
            columns = {}
            for what in VALUES:
                column = np.full(size, np.nan, dtype=np.float32)
                column[index] = arrays[f"{what}_{k}"]
                columns[what] = column.reshape(shape)
            bits = np.unpackbits(arrays[f"suppressed_{k}"], count=size)
            columns["suppressed"] = bits.astype(bool).reshape(shape)
            filled[method] = columns
        grid.truth = arrays["truth"]
        for method, columns in filled.items():
            grid.estimate[method] = columns["estimate"]
            grid.lower[method] = columns["lower"]
            grid.upper[method] = columns["upper"]
            grid.suppressed[method] = columns["suppressed"]
        self.sites = SiteLoad(arrays["cell_ids"], arrays["connected"], arrays["rejections"])
        return True

    @property
    def n_bins(self) -> int:
        """Bins of the period."""
        return len(self.bins)

    def _time(self, key: str, since: float) -> float:
        import time

        now = time.perf_counter()
        self.timings[key] = round(now - since, 3)
        return now

    def _put_published(self, path: Path, grid: ZoneSeries) -> None:
        """The published table's tiles, read with pyarrow chunk by chunk.

        Tens of millions of rows for a full run: the zone and method columns are
        dictionaries per chunk, mapped to rows with one small lookup per chunk, which is
        much faster than building the table's pandas categoricals.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        columns = ["method", "zone_system", "zone", "bin", "estimate", "lower", "upper",
                   "suppressed"]  # fmt: skip
        try:
            table = pq.read_table(path, columns=columns)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise RunFolderError(
                f"{path}: not readable as the run's table ({exc}); run the scenario again"
            ) from None
        systems: list[str] = []
        system_codes = _dictionary_rows(table.column("zone_system"), systems.index, systems)
        if systems != ["grid"]:  # another published system: its rows are left out
            keep = system_codes == (systems.index("grid") if "grid" in systems else -2)
            table = table.filter(pa.array(keep))
        methods: list[str] = []
        method_codes = _dictionary_rows(table.column("method"), methods.index, methods)
        rows = _dictionary_rows(table.column("zone"), grid.index.get)
        stamps = table.column("bin")
        if pa.types.is_timestamp(stamps.type):  # ns since the epoch, UTC: one subtraction
            ns = pc.cast(stamps, pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy()
            width = round(self.bin_s * 1e9)
            cols = np.floor_divide(ns - self.bins[0].value, width)
            cols[(cols < 0) | (cols >= len(self.bins))] = -1
        else:
            cols = self.bin_index(pd.to_datetime(stamps.to_numpy(), utc=True))
        # the published view has no value where suppressed (NaN): nothing to drop
        values = {c: table.column(c).to_numpy() for c in ("estimate", "lower", "upper")}
        hidden = np.asarray(table.column("suppressed").to_numpy(zero_copy_only=False), dtype=bool)
        grid.put_estimate_arrays(methods, method_codes, rows, cols, values, hidden, suppress=False)

    def _zone_layers(self, names: Sequence[str]) -> dict[str, ZoneSeries]:
        """Read zone systems `names` from the run's ``zones.gpkg``."""
        import pyogrio
        import shapely

        assert self.path is not None
        path = self.path / runfolder.ZONES
        out = {}
        for name in names:
            try:
                meta, table = pyogrio.read_arrow(path, layer=name)
            except Exception as exc:  # pyogrio raises its own DataLayerError and others
                raise RunFolderError(
                    f"{path}: no readable layer {name!r} ({exc}); the run folder is damaged: "
                    "run the scenario again"
                ) from None
            geoms = shapely.from_wkb(
                np.asarray(
                    table.column(meta["geometry_name"] or "wkb_geometry").to_numpy(
                        zero_copy_only=False
                    )
                )
            )
            series = ZoneSeries(name, len(self.bins), "internal")
            ids = [str(z) for z in table.column("zone").to_pylist()]
            series.add_zones(ids, _outlines_of(geoms))
            out[name] = series
        return out

    def _put_truth_file(self, path: Path, systems: dict[str, ZoneSeries]) -> None:
        table = _read_table(
            path, columns=["time", "system", "zone", "people"], read_dictionary=["zone"]
        )
        for name, series in systems.items():
            sel = table[(table["system"] == name).to_numpy()]
            if sel.empty:
                continue
            # the truth is counted at the end of a bin: its bin starts one bin earlier
            cols = self.bin_index(sel["time"], end=True)
            series.put_truth(sel["zone"], sel["people"].to_numpy(np.float32), cols)

    def _load_map(self, course_file: Path) -> None:
        streets = StreetLines.from_course_file(course_file)
        if streets is None and self.path is not None and not self.live:
            streets = self._streets_from_source()
        self.streets = streets
        self.course = CourseLines.from_course_file(course_file)

    def _streets_from_source(self) -> StreetLines:
        """The streets of a run written before ``course.gpkg`` held them: from its source."""
        from sim.plotting import street_segments

        assert self.path is not None
        rf = runfolder.open_run(self.path, verify=False, purpose="serve")
        streets = rf.streets()
        every = np.arange(streets.n_edges)
        xy = street_segments(streets, every)
        return StreetLines.from_segments(xy, streets.edge_u, streets.edge_v)

    def _load_extras(self) -> None:
        """Course segments and areas (internal estimates, truth) and levels of service."""
        try:
            assert self.path is not None
            if self.manifest is not None:  # checked here, as the map's files were at open
                later = (runfolder.ESTIMATES_INTERNAL, runfolder.TRUTH_ZONES, runfolder.TRUTH_EDGES)
                runfolder.verify_files(self.path, self.manifest, later)
            names = [s for s in SYSTEMS[1:] if s not in self.systems]
            layers = self._zone_layers(names)
            internal = _read_table(
                self.path / runfolder.ESTIMATES_INTERNAL,
                filters=[("zone_system", "in", names)],
            )
            for name, series in layers.items():
                rows = internal[(internal["zone_system"] == name).to_numpy()]
                series.put_estimates(rows, self.bin_index(rows["bin"]), suppress=True)
            self._put_truth_file(self.path / runfolder.TRUTH_ZONES, layers)
            los = self._read_los(self.path / runfolder.TRUTH_EDGES)
            with self.lock:
                self.systems.update(layers)
                self.los = los
                self.version += 1
        except BaseException as exc:  # kept, and raised where the extras are awaited
            self._extras_error = exc

    def _read_los(self, path: Path) -> LevelsOfService | None:
        if not path.is_file():
            return None
        table = _read_table(path, columns=["time", "edge", "density", "los"])
        cols = self.bin_index(table["time"], end=True)
        keep = (cols >= 0) & (cols < len(self.bins))
        order = np.argsort(cols[keep], kind="stable")
        cols = cols[keep][order]
        level = table["los"]
        codes = (
            level.cat.codes.to_numpy()
            if isinstance(level.dtype, pd.CategoricalDtype)
            and list(level.cat.categories) == list(LOS_LEVELS)
            else level.astype(str).map({c: i for i, c in enumerate(LOS_LEVELS)}).to_numpy()
        )
        return LevelsOfService(
            start=np.searchsorted(cols, np.arange(len(self.bins) + 1)),
            edge=table["edge"].to_numpy(np.int64)[keep][order],
            level=np.asarray(codes, dtype=np.int8)[keep][order],
            density=table["density"].to_numpy(np.float64)[keep][order],
        )

    def wait_extras(self, timeout: float | None = None) -> bool:
        """Wait for the background loading; True when done. Re-raises its error."""
        if self._extras is not None:
            self._extras.join(timeout)
            if self._extras.is_alive():
                return False
        if self._extras_error is not None:
            raise self._extras_error
        return True

    # ------------------------------------------------------------------ time
    def bin_index(self, times: pd.Series | pd.DatetimeIndex, *, end: bool = False) -> np.ndarray:
        """Bin of each time (a bin start, or with `end` a bin end); -1 outside the period."""
        ns = pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ns").asi8
        width = round(self.bin_s * 1e9)
        offset = ns - self.bins[0].value - (width if end else 0)
        col = np.floor_divide(offset, width)
        return np.where((col >= 0) & (col < len(self.bins)), col, -1).astype(np.int64)

    def minute_index(self, minutes: pd.Series) -> np.ndarray:
        """Bin of each minute of ``cell_load.parquet`` (a minute starts in one bin)."""
        return self.bin_index(minutes)

    def clock(self, t: int) -> str:
        """Local time of the start of bin `t`, e.g. ``14:35``."""
        return f"{self.bins[t].tz_convert(self.timezone):%H:%M}"

    def local_times(self) -> pd.DatetimeIndex:
        """Bin starts in local time without zone (for time axes)."""
        return self.bins.tz_convert(self.timezone).tz_localize(None)

    # ------------------------------------------------------------------ live
    def append_frame(self, frame: Any) -> int:
        """Put one :class:`sim.stream.MinuteFrame` into the arrays; return its bin.

        Tiles named for the first time are added (outlines from their ids); truth rows
        of zone systems the dashboard does not draw yet are skipped.

        Raises
        ------
        ValueError
            The frame's bin is not a bin of the run's period.
        """
        t = int(self.bin_index(pd.DatetimeIndex([frame.bin]))[0])
        if t < 0:
            raise ValueError(
                f"frame of bin {frame.bin}: outside the run's period {self.bins[0]} to "
                f"{self.bins[-1]}"
            )
        with self.lock:
            grid = self.systems["grid"]
            new: set[str] = set()
            for table in (frame.estimates, frame.truth):
                column = "zone_system" if "zone_system" in table else "system"
                if len(table):
                    on_grid = table[table[column].astype(str) == "grid"]["zone"].astype(str)
                    new.update(z for z in pd.unique(on_grid) if z not in grid.index)
            if new:
                ids = sorted(new)
                grid.add_zones(ids, tile_outlines(ids, float(self.scenario.zones.grid_m)))
            est = frame.estimates
            if len(est):
                cols = np.full(len(est), t, dtype=np.int64)
                for name, series in self.systems.items():
                    rows = est[est["zone_system"].astype(str) == name]
                    if len(rows):
                        series.put_estimates(rows, cols[: len(rows)], suppress=True)
            truth = frame.truth
            for name, series in self.systems.items():
                rows = truth[truth["zone_system"].astype(str) == name]
                series.truth[:, t] = 0.0
                if len(rows):
                    series.put_truth(
                        rows["zone"],
                        rows["people"].to_numpy(np.float32),
                        np.full(len(rows), t, dtype=np.int64),
                    )
            self.sites.add(frame.cell_load, self.minute_index)
            self.n_filled = max(self.n_filled, t + 1)
            self.progress = frame.progress
            self.version += 1
        return t

    def attach_folder(self, out_dir: Path) -> bool:
        """Take the map and the sites from a live run's folder once it wrote them.

        Returns True when something new was attached.
        """
        changed = False
        course = out_dir / runfolder.COURSE
        if self.course is None and course.is_file():
            streets = StreetLines.from_course_file(course)
            lines = CourseLines.from_course_file(course)
            with self.lock:
                self.streets, self.course = streets, lines
                changed = True
        plan = out_dir / runfolder.NETWORK_PLAN
        if self.sites.site_of_cell is None and plan.is_file():
            with self.lock:
                self.sites.attach_plan(plan)
                changed = True
        if changed:
            with self.lock:
                self.version += 1
        return changed

    # ------------------------------------------------------------------ reading
    @property
    def methods(self) -> list[str]:
        """Methods with estimates on the published system."""
        return self.systems["grid"].methods if "grid" in self.systems else []

    def summary(self) -> dict[str, Any]:
        """Sizes, for the benchmark and the page's footer."""
        return {
            "bins": len(self.bins),
            "filled": self.n_filled,
            "zones": {name: s.n for name, s in self.systems.items()},
            "methods": self.methods,
            "sites": 0 if self.sites.site_ids is None else len(self.sites.site_ids),
            "street_edges": 0 if self.streets is None else len(self.streets.x0),
        }


def _read_table(
    path: Path,
    *,
    columns: list[str] | None = None,
    filters: list[Any] | None = None,
    read_dictionary: list[str] | None = None,
) -> pd.DataFrame:
    """A Parquet table of the run, or a :class:`RunFolderError` naming the file.

    Columns in `read_dictionary` are read as categoricals (zone ids: one string each).
    """
    options: dict[str, Any] = (
        {} if read_dictionary is None else {"read_dictionary": read_dictionary}
    )
    try:
        return pd.read_parquet(path, columns=columns, filters=filters, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise RunFolderError(
            f"{path}: not readable as the run's table ({exc}); run the scenario again"
        ) from None


def _codes(column: pd.Series) -> tuple[np.ndarray, Sequence[Any]]:
    """Integer codes and the values they stand for (-1 = missing); cheap on categoricals."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(np.int64), list(column.cat.categories)
    codes, uniques = pd.factorize(column, sort=False)
    return codes.astype(np.int64), list(uniques)


def _ring_areas(rings: Sequence[np.ndarray]) -> np.ndarray:
    """Area (m²) inside each closed ring (the shoelace formula, all rings at once)."""
    lengths = np.array([len(r) for r in rings])
    every = np.concatenate(list(rings))
    x, y = every[:, 0], every[:, 1]
    cross = np.append(x[:-1] * y[1:] - x[1:] * y[:-1], 0.0)
    ends = np.cumsum(lengths)
    cross[ends - 1] = 0.0  # the step from a ring's last point into the next ring
    total = np.add.reduceat(cross, ends - lengths)
    return np.abs(total) / 2.0


def _block(codes: np.ndarray, k: int) -> slice | np.ndarray:
    """The rows whose code is `k`: a slice when they are one run, else a boolean mask."""
    where = np.flatnonzero(codes == k)
    if len(where) and where[-1] - where[0] + 1 == len(where):
        return slice(int(where[0]), int(where[-1]) + 1)
    return codes == k


def _is_range(index: np.ndarray) -> bool:
    """Whether `index` is consecutive integers (a block that fills a contiguous span)."""
    return (
        bool(len(index))
        and index[-1] - index[0] + 1 == len(index)
        and bool((np.diff(index) == 1).all())
    )


def _dictionary_rows(column: Any, lookup: Any, new: list[str] | None = None) -> np.ndarray:
    """Map a (chunked, dictionary-encoded) Arrow column to ints with `lookup`, per chunk.

    A chunk's dictionary goes through `lookup` (None: -1) once; row groups of one file
    usually share it, so it is mapped once for all. With `new`, an unknown value is
    appended to `new` first (so `lookup` finds it).
    """
    import pyarrow as pa

    out = []
    seen: Any = None
    table = np.array([-1])
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        if seen is None or not chunk.dictionary.equals(seen):
            seen = chunk.dictionary
            words = [str(w) for w in seen.to_pylist()]
            if new is not None:
                new.extend(w for w in words if w not in new)
            table = np.array([-1 if (r := lookup(w)) is None else r for w in words] + [-1])
        codes = chunk.indices.to_numpy(zero_copy_only=False)
        if chunk.indices.null_count:
            codes = np.where(chunk.indices.is_null().to_numpy(zero_copy_only=False), -1, codes)
        out.append(table[codes])
    return np.concatenate(out).astype(np.int64, copy=False) if out else np.zeros(0, np.int64)
