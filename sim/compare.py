"""What changed between two runs, for planners: ``crowdsim compare RUN_A RUN_B``.

Planners rehearse a decision by running a baseline (A) and a variant (B) that differs in
that one decision. This module reads both run folders and puts side by side, for A, B
and B − A: peak density and time at Fruin level of service E or F per course segment and
named area; the ten densest places; walking time from the stations to the course and
across the course at each crossing point; people who found no spot; signalling load and
rejections of the cells near the course; and each estimator's error. The answer is one
long table (``compare.parquet``: measure, place, run_a, run_b, difference, unit) and a
map coloured by the difference (``compare_map.png``).

Walking times are computed, not read: the streets and course are rebuilt from each run's
``scenario.toml`` and manifest (the street cache makes this cheap), and shortest walks
run on the walk graph as the crowd sees it (:mod:`sim.crowd.walkgraph`): the course is a
barrier crossable only at crossing points while it is closed. Both runs must be on the
same streets, or edge-by-edge differences would mean nothing.

Definitions (the ``measure`` column):

- *peak density* of a zone: the highest bin-mean density (persons/m²) of any street
  segment touching it (``truth_edges.parquet``); *time at LOS E or F*: minutes in which
  at least one street touching it was at Fruin level E or F.
- *densest places*: the ``worst`` street segments by peak density in either run, named.
- *walk from station to course*: from each spectator origin of kind ``station`` to the
  nearest course sidewalk, with the closures in force at the first team's start;
  *walk across the course*: from a street node about ``ACROSS_OFFSET_M`` on one side of
  the course near each crossing point (of either run) to one as far on the other side,
  with the course closed; both at ``FREE_SPEED_MPS`` (Weidmann's free speed), so they
  are distances in minutes, free of crowding.
- *rejections* and *signalling messages*: summed over the cells within ``near_course_m``
  of the course, and within ``near_point_m`` of its start, check points and finish; per
  cell also the peak of RRC-connected users (``cell_load.parquet``).
- the crowd outcomes (turned away, unreachable, ...) from ``manifest.json``; the
  estimators' metrics from ``metrics.parquet``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from matplotlib.collections import LineCollection
from matplotlib.colors import CenteredNorm
from matplotlib.ticker import MaxNLocator
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from sim.course import Course, build_course
from sim.crowd.closures import closures_from, connector_pieces, open_edges
from sim.crowd.routing import walk_matrix
from sim.crowd.walkgraph import WalkGraph, build_walk_graph
from sim.errors import CrowdsimError
from sim.io import atomic_path, read_table
from sim.scenario import Scenario, load_scenario
from sim.streets import Streets, streets_from_file, streets_from_place, streets_from_sketch
from sim.streets import to_metres as _to_metres

__all__ = [
    "COLUMNS",
    "Comparison",
    "RunFolder",
    "compare_runs",
    "format_table",
    "open_run",
    "write_comparison",
]

#: Columns of the comparison table (long format: one row per measure and place).
COLUMNS = ["measure", "place", "run_a", "run_b", "difference", "unit"]
#: Files compare reads from a run folder (metrics.parquet only when estimates were made).
REQUIRED_FILES = (
    "manifest.json",
    "scenario.toml",
    "course.gpkg",
    "zones.gpkg",
    "truth_edges.parquet",
    "cell_load.parquet",
    "cells.gpkg",
)
#: Free walking speed for walking times (Weidmann 1993, DESIGN §3), m/s.
FREE_SPEED_MPS = 1.34
#: How far either side of the course the walks across it start and end (m).
ACROSS_OFFSET_M = 125.0
#: Crowd outcomes of the manifest that mean "did not get a spot", with their labels.
OUTCOMES = {
    "turned_away_no_room": "people turned away (every spot full)",
    "unreachable_course": "people who could not reach the course",
    "went_home_without_spot": "people who went home without a spot",
    "moved_on_full_stretch": "people who moved on from a full stretch",
    "no_route": "people with no route",
}
#: Estimator metrics compared, with their units.
METRICS = {
    "mae": "people",
    "rmse": "people",
    "mape": "share",
    "bias": "people",
    "coverage": "share",
    "kwd_mean_m": "m",
}


@dataclass(frozen=True, eq=False)
class RunFolder:
    """A finished run folder: its path, manifest and resolved scenario."""

    path: Path
    manifest: dict[str, Any]
    scenario: Scenario

    @property
    def label(self) -> str:
        """Short name for tables and figures: the scenario's name and the folder."""
        return f"{self.scenario.name} ({self.path.name})"


@dataclass(frozen=True, eq=False)
class Comparison:
    """The comparison of two runs: the table and what the map draws.

    Attributes
    ----------
    run_a, run_b
        The two run folders (B − A is the difference).
    table
        Long table with :data:`COLUMNS`.
    streets
        The street graph both ran on.
    course_a
        Run A's course (drawn on the map).
    edge_peak
        Peak density per street edge: ``edge``, ``run_a``, ``run_b``, ``difference``.
    crossings
        Walks across the course: ``name``, ``in_a``, ``in_b`` (a crossing point of that
        run), ``x``, ``y``, ``run_a``, ``run_b``, ``difference`` (minutes).
    sites
        Rejections per cell site near the course: ``x``, ``y``, ``run_a``, ``run_b``,
        ``difference``, ``temporary_b`` (a temporary event site of B only).
    """

    run_a: RunFolder
    run_b: RunFolder
    table: pd.DataFrame
    streets: Streets
    course_a: Course
    edge_peak: pd.DataFrame
    crossings: pd.DataFrame
    sites: pd.DataFrame


# ----------------------------------------------------------------------------- reading


def open_run(path: str | os.PathLike[str]) -> RunFolder:
    """Check that `path` is a finished run folder and read its manifest and scenario.

    Raises
    ------
    CrowdsimError
        Not a folder, not a run folder (no manifest), a run that did not finish, or a file
        compare needs is missing; the message names the folder and the file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CrowdsimError(f"{folder}: not a folder; give the run folder a `crowdsim run` wrote")
    if not (folder / "manifest.json").is_file():
        raise CrowdsimError(
            f"{folder}: not a run folder (no manifest.json); give a folder `crowdsim run` wrote"
        )
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CrowdsimError(f"{folder / 'manifest.json'}: not readable JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise CrowdsimError(f"{folder / 'manifest.json'}: not a run manifest (a JSON object)")
    if manifest.get("status") != "ok":
        failed = [
            f"{name}: {rec.get('note', '')}"
            for name, rec in (manifest.get("stages") or {}).items()
            if isinstance(rec, dict) and rec.get("status") == "failed"
        ]
        why = f" ({'; '.join(failed)})" if failed else ""
        raise CrowdsimError(
            f"{folder}: the run did not finish (manifest status {manifest.get('status')!r})"
            f"{why}; compare needs two finished runs"
        )
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if _has_estimates(manifest) and not (folder / "metrics.parquet").is_file():
        missing.append("metrics.parquet")
    if missing:
        raise CrowdsimError(
            f"{folder}: missing {', '.join(missing)}; compare needs a complete run folder "
            "(run the scenario again)"
        )
    scenario = load_scenario(folder / "scenario.toml")  # resolved: extends merged in
    return RunFolder(path=folder, manifest=manifest, scenario=scenario)


def _has_estimates(manifest: dict[str, Any]) -> bool:
    return bool((manifest.get("facts") or {}).get("estimators", {}).get("rows"))


def _street_key(run: RunFolder) -> tuple[Any, ...]:
    src = run.manifest.get("street_source") or {}
    bbox = run.scenario.streets.bbox
    return (src.get("kind"), src.get("sha256"), bbox.model_dump() if bbox else None)


def _reload_streets(run: RunFolder, *, cache_dir: str | os.PathLike[str] | None) -> Streets:
    """The street graph the run used, from its manifest's street source (via the cache)."""
    src = run.manifest.get("street_source") or {}
    cfg = run.scenario.streets
    kind = src.get("kind")
    if kind == "file":
        streets = streets_from_file(src.get("detail", ""), bbox=cfg.bbox, cache_dir=cache_dir)
    elif kind == "place":
        streets = streets_from_place(src.get("detail", ""), bbox=cfg.bbox, cache_dir=cache_dir)
    elif kind == "sketch":
        waypoints = [(w.name, w.lat, w.lon) for w in run.scenario.route.waypoints]
        streets = streets_from_sketch(
            waypoints, spacing_m=cfg.sketch_spacing_m, seed=cfg.sketch_seed, bbox=cfg.bbox
        )
    else:
        raise CrowdsimError(
            f"{run.path / 'manifest.json'}: street_source.kind is {kind!r}; expected "
            "'file', 'place' or 'sketch'"
        )
    if streets.source.digest != src.get("sha256"):
        raise CrowdsimError(
            f"{run.path}: the streets changed since the run ({streets.source.describe()} has "
            f"SHA-256 {streets.source.digest[:12]}…, the run used {str(src.get('sha256'))[:12]}…);"
            " run the scenario again"
        )
    return streets


# ----------------------------------------------------------------------------- walking


def _reference_s(scenario: Scenario) -> float:
    """Seconds after the start at which walks are measured: the first team's start (when
    spectators want to be in place), else the middle of the event."""
    event = scenario.event
    if event.race is not None:
        start = dt.datetime.combine(event.date, event.start)
        t = (dt.datetime.combine(event.date, event.race.first_start) - start).total_seconds()
        if 0.0 <= t <= event.duration_s:
            return t
    return event.duration_s / 2.0


@dataclass(frozen=True, eq=False)
class _World:
    """One run's streets, course, walk graph and walking matrices."""

    run: RunFolder
    streets: Streets
    course: Course
    graph: WalkGraph
    walk_now: csr_matrix  # closures as at the reference moment
    walk_closed: csr_matrix  # and the course closed


def _world(run: RunFolder, streets: Streets) -> _World:
    scen = run.scenario
    course = build_course(streets, scen.route, scenario=scen)
    graph = build_walk_graph(streets, course, scen)
    # walkable edges at the reference moment by the crowd model's own closure rules, as
    # they are and with the whole course closed to crossing
    t = _reference_s(scen)
    closures = closures_from(scen, streets, graph)
    active = tuple(c.active(t) for c in closures)
    piece = connector_pieces(graph, streets, course)
    now, closed = (
        walk_matrix(graph, open_edges(graph, closures, active, piece, course_closed=shut)[0])
        for shut in (False, True)
    )
    return _World(run, streets, course, graph, now, closed)


def _station_minutes(world: _World, stations: list[tuple[str, float, float]]) -> np.ndarray:
    """Minutes of walking from each station's nearest street node to the nearest course
    sidewalk (either side), with the closures of the reference moment."""
    if not stations:
        return np.zeros(0)
    g = world.graph
    side = g.course_side >= 0
    targets = np.unique(np.concatenate([g.eu[side], g.ev[side]]))
    x, y = _to_metres([s[2] for s in stations], [s[1] for s in stations])
    node, _ = world.streets.nearest_node(x, y)
    dist = dijkstra(world.walk_now, indices=node)
    return np.atleast_2d(dist)[:, targets].min(axis=1) / FREE_SPEED_MPS / 60.0


def _across_minutes(world: _World, points: list[tuple[str, float, float]]) -> np.ndarray:
    """Minutes of walking across the closed course near each point: from a street node
    about ``ACROSS_OFFSET_M`` to one side of the course to one as far on the other side
    (mean of both directions); NaN where no such node exists."""
    streets, course = world.streets, world.course
    cn = course.nodes
    cx, cy = streets.x[cn], streets.y[cn]
    course_tree = cKDTree(np.column_stack([cx, cy]))
    off = np.ones(streets.n_nodes, dtype=bool)
    off[cn] = False
    cand = np.flatnonzero(off)
    cand_xy = np.column_stack([streets.x[cand], streets.y[cand]])
    # the side of every candidate: sign against the course's local direction
    _, k = course_tree.query(cand_xy)
    lo, hi = np.maximum(k - 1, 0), np.minimum(k + 1, len(cn) - 1)
    tx, ty = cx[hi] - cx[lo], cy[hi] - cy[lo]
    cand_left = tx * (cand_xy[:, 1] - cy[k]) - ty * (cand_xy[:, 0] - cx[k]) > 0
    cand_tree = cKDTree(cand_xy)
    out = np.full(len(points), np.nan)
    for i, (_, lat, lon) in enumerate(points):
        px, py = (float(v) for v in _to_metres(lon, lat))
        _, j = course_tree.query([px, py])
        a, b = max(j - 1, 0), min(j + 1, len(cn) - 1)
        t = np.array([cx[b] - cx[a], cy[b] - cy[a]])
        t /= max(float(np.hypot(*t)), 1e-9)
        normal = np.array([-t[1], t[0]])  # to the left of the riding direction
        ends = []
        for sign, want_left in ((1.0, True), (-1.0, False)):
            target = np.array([cx[j], cy[j]]) + sign * ACROSS_OFFSET_M * normal
            near = cand_tree.query_ball_point(target, 4 * ACROSS_OFFSET_M)
            near = [m for m in near if cand_left[m] == want_left]
            if not near:
                break
            d = np.hypot(cand_xy[near, 0] - target[0], cand_xy[near, 1] - target[1])
            ends.append(int(cand[near[int(np.argmin(d))]]))
        if len(ends) < 2:
            continue
        dist = dijkstra(world.walk_closed, indices=ends)
        metres = (dist[0, ends[1]] + dist[1, ends[0]]) / 2.0
        out[i] = metres / FREE_SPEED_MPS / 60.0
    return out


# ----------------------------------------------------------------------------- measures


def _rows(measure: str, unit: str, places: list[str], a: Any, b: Any) -> list[dict[str, Any]]:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore"):
        diff = b - a
    return [
        {
            "measure": measure,
            "place": p,
            "run_a": float(x),
            "run_b": float(y),
            "difference": float(d),
            "unit": unit,
        }
        for p, x, y, d in zip(places, a, b, diff, strict=True)
    ]


def _edge_lines(streets: Streets, edges: np.ndarray) -> np.ndarray:
    return shapely.linestrings(_segments(streets, edges))


def _zone_figures(
    run: RunFolder, streets: Streets
) -> tuple[pd.Series, dict[str, tuple[float, float]]]:
    """Peak density per street edge, and per zone (course segment, named area) its peak
    density (densest street touching it) and minutes with a street in it at LOS E or F."""
    import geopandas as gpd

    edges = read_table(
        run.path / "truth_edges.parquet",
        required=(),
        columns=["time", "edge", "density", "los"],
        error=CrowdsimError,
    )
    if len(edges) and int(edges["edge"].max()) >= streets.n_edges:
        raise CrowdsimError(
            f"{run.path / 'truth_edges.parquet'}: edge {int(edges['edge'].max())} is not an edge"
            f" of the run's streets ({streets.n_edges} edges)"
        )
    peak = edges.groupby("edge")["density"].max()
    bad = edges.loc[edges["los"].astype(str).isin(["E", "F"]), ["time", "edge"]]
    bin_min = run.scenario.zones.bin_s / 60.0
    lines = _edge_lines(streets, peak.index.to_numpy())
    tree = shapely.STRtree(lines)
    out: dict[str, tuple[float, float]] = {}
    for system in ("segment", "area"):
        try:
            zones = gpd.read_file(run.path / "zones.gpkg", layer=system)
        except Exception as exc:  # pyogrio raises several kinds for a missing layer
            raise CrowdsimError(
                f"{run.path / 'zones.gpkg'}: no layer {system!r} ({type(exc).__name__})"
            ) from None
        zone_idx, edge_idx = tree.query(zones.geometry.to_numpy(), predicate="intersects")
        pairs = pd.DataFrame(
            {"zone": zones["zone"].to_numpy()[zone_idx], "edge": peak.index.to_numpy()[edge_idx]}
        )
        zpeak = pairs.assign(d=peak.to_numpy()[edge_idx]).groupby("zone")["d"].max()
        ef = pairs.merge(bad, on="edge").groupby("zone")["time"].nunique() * bin_min
        for zone in zones["zone"]:
            out[f"{system} {zone}"] = (float(zpeak.get(zone, 0.0)), float(ef.get(zone, 0.0)))
    return peak, out


def _cell_figures(run: RunFolder) -> pd.DataFrame:
    """Per cell: position, peak connected users, rejections and MME messages over the run."""
    import geopandas as gpd

    cells = gpd.read_file(run.path / "cells.gpkg")
    load = read_table(
        run.path / "cell_load.parquet",
        required=(),
        columns=["cell_id", "connected_users", "rejections", "messages"],
        error=CrowdsimError,
    )
    per = load.groupby("cell_id").agg(
        peak_users=("connected_users", "max"),
        rejections=("rejections", "sum"),
        messages=("messages", "sum"),
    )
    frame = pd.DataFrame(
        {
            "cell_id": cells["cell_id"].to_numpy(),
            "x": cells.geometry.x.to_numpy(),
            "y": cells.geometry.y.to_numpy(),
            "temporary": cells["temporary"].astype(bool).to_numpy()
            if "temporary" in cells
            else False,
        }
    ).set_index("cell_id")
    return frame.join(per, how="left").fillna(0.0)


def _course_layers(run: RunFolder) -> tuple[Any, pd.DataFrame]:
    import geopandas as gpd

    line = gpd.read_file(run.path / "course.gpkg", layer="course").geometry.iloc[0]
    points = gpd.read_file(run.path / "course.gpkg", layer="waypoints")
    return line, points


def _union_points(*lists: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points of both runs once each, in order (same name within 10 m: one point), so a
    crossing point removed in B is still measured in B, where it was."""
    out: list[tuple[str, float, float]] = []
    seen: list[tuple[str, float, float]] = []  # name, x, y
    for items in lists:
        for name, lat, lon in items:
            x, y = (float(v) for v in _to_metres(lon, lat))
            if not any(n == name and np.hypot(x - sx, y - sy) < 10.0 for n, sx, sy in seen):
                seen.append((name, x, y))
                out.append((name, lat, lon))
    return out


def compare_runs(
    run_a: str | os.PathLike[str],
    run_b: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    near_course_m: float = 400.0,
    near_point_m: float = 600.0,
    worst: int = 10,
) -> Comparison:
    """Compare run B with run A (the baseline): every figure for A, B and B − A.

    Parameters
    ----------
    run_a, run_b
        Run folders written by ``crowdsim run`` on the same streets.
    cache_dir
        Folder of the street-graph cache (default: the usual one).
    near_course_m
        Cells within this distance of run A's course line are "near the course".
    near_point_m
        Cells within this distance of the start, finish or a check point count for it.
    worst
        How many of the densest places to list.

    Raises
    ------
    CrowdsimError
        A folder is not a finished run folder, misses a file, or the runs used different
        streets.
    """
    a, b = open_run(run_a), open_run(run_b)
    if _street_key(a) != _street_key(b):
        sa = (a.manifest.get("street_source") or {}).get("description", "?")
        sb = (b.manifest.get("street_source") or {}).get("description", "?")
        raise CrowdsimError(
            f"{a.path} and {b.path} ran on different streets ({sa} vs {sb}, or a different "
            "streets.bbox); compare needs two runs on the same street data"
        )
    streets = _reload_streets(a, cache_dir=cache_dir)
    wa, wb = _world(a, streets), _world(b, streets)
    rows: list[dict[str, Any]] = []

    # crowd: peak density and LOS E/F per zone, the densest places
    peak_a, zones_a = _zone_figures(a, streets)
    peak_b, zones_b = _zone_figures(b, streets)
    places = list(dict.fromkeys([*zones_a, *zones_b]))
    nan2 = (np.nan, np.nan)
    za = [zones_a.get(p, nan2) for p in places]
    zb = [zones_b.get(p, nan2) for p in places]
    rows += _rows("peak density", "persons/m2", places, [z[0] for z in za], [z[0] for z in zb])
    rows += _rows("time at LOS E or F", "min", places, [z[1] for z in za], [z[1] for z in zb])
    edge_peak = pd.DataFrame({"run_a": peak_a, "run_b": peak_b}).fillna(0.0)
    edge_peak["difference"] = edge_peak["run_b"] - edge_peak["run_a"]
    edge_peak = edge_peak.rename_axis("edge").reset_index()
    top = edge_peak.assign(m=edge_peak[["run_a", "run_b"]].max(axis=1)).nlargest(worst, "m")
    labels = [_edge_label(streets, int(e)) for e in top["edge"]]
    rows += _rows("peak density, densest places", "persons/m2", labels, top["run_a"], top["run_b"])

    # walking: from the stations to the course, across the course at each crossing
    def stations(run: RunFolder) -> list[tuple[str, float, float]]:
        origins = run.scenario.people.spectators.origins
        return [(o.name, o.lat, o.lon) for o in origins if o.kind == "station"]

    st = _union_points(stations(a), stations(b))
    rows += _rows(
        "walk from station to course",
        "min",
        [s[0] for s in st],
        _station_minutes(wa, st),
        _station_minutes(wb, st),
    )

    def crossings(run: RunFolder) -> list[tuple[str, float, float]]:
        return [(c.name or f"crossing {i + 1}", c.lat, c.lon)
                for i, c in enumerate(run.scenario.route.crossings)]  # fmt: skip

    cr = _union_points(crossings(a), crossings(b))
    across_a, across_b = _across_minutes(wa, cr), _across_minutes(wb, cr)
    rows += _rows("walk across the course (closed)", "min", [c[0] for c in cr], across_a, across_b)
    cx, cy = _to_metres([c[2] for c in cr], [c[1] for c in cr])
    in_a, in_b = set(crossings(a)), set(crossings(b))
    crossing_frame = pd.DataFrame(
        {
            "name": [c[0] for c in cr],
            "in_a": [c in in_a for c in cr],
            "in_b": [c in in_b for c in cr],
            "x": np.atleast_1d(cx),
            "y": np.atleast_1d(cy),
            "run_a": across_a,
            "run_b": across_b,
            "difference": across_b - across_a,
        }
    )

    # people who found no spot
    oa = _outcomes(a)
    ob = _outcomes(b)
    rows += _rows(
        "spectators",
        "people",
        ["all", "peak watching"],
        [oa["spectators"], oa["peak_watching"]],
        [ob["spectators"], ob["peak_watching"]],
    )
    for key, label in OUTCOMES.items():
        rows += _rows(label, "people", ["all"], [oa[key]], [ob[key]])

    # signalling near the course
    line, points = _course_layers(a)
    cells_a, cells_b = _cell_figures(a), _cell_figures(b)
    both = cells_a[["x", "y"]].combine_first(cells_b[["x", "y"]])
    pts = shapely.points(both["x"].to_numpy(), both["y"].to_numpy())
    near = both.index[shapely.distance(pts, line) <= near_course_m]
    ca, cb = cells_a.reindex(near), cells_b.reindex(near)
    named = points[points["kind"] != "via"]
    for col, measure, unit in (
        ("rejections", "rejections", "requests"),
        ("messages", "signalling messages", "messages"),
    ):
        rows += _rows(
            f"{measure}, cells near the course",
            unit,
            [f"within {near_course_m:g} m of the course ({len(near)} cells)"],
            [ca[col].sum()],
            [cb[col].sum()],
        )
        for _, p in named.iterrows():
            d = np.hypot(both["x"] - p.geometry.x, both["y"] - p.geometry.y)
            ids = both.index[d <= near_point_m]
            rows += _rows(
                f"{measure}, cells near the course",
                unit,
                [f"within {near_point_m:g} m of the {p['kind']} {p['name']} ({len(ids)} cells)"],
                [cells_a.reindex(ids)[col].sum()],
                [cells_b.reindex(ids)[col].sum()],
            )
    cell_places = [f"cell {int(c)}" for c in near]
    for col, measure, unit in (
        ("peak_users", "cell peak RRC-connected users", "users"),
        ("rejections", "cell rejections", "requests"),
        ("messages", "cell signalling messages", "messages"),
    ):
        rows += _rows(measure, unit, cell_places, ca[col], cb[col])

    # estimate error per method
    ma, mb = _metrics(a), _metrics(b)
    keys = list(dict.fromkeys([*ma.index, *mb.index]))
    for metric, unit in METRICS.items():
        sel = [k for k in keys if k[2] == metric]
        rows += _rows(
            f"estimate error: {metric}",
            unit,
            [f"{m} / {s}" for m, s, _ in sel],
            [ma.get(k, np.nan) for k in sel],
            [mb.get(k, np.nan) for k in sel],
        )

    table = pd.DataFrame(rows, columns=COLUMNS)
    # rejections per site (sectors share a mast), for the map
    temp_b = cb["temporary"].eq(True) & ~ca["temporary"].eq(True)
    sites = (
        pd.DataFrame(
            {
                "x": both.loc[near, "x"].round(1),
                "y": both.loc[near, "y"].round(1),
                "run_a": ca["rejections"].fillna(0.0),
                "run_b": cb["rejections"].fillna(0.0),
                "temporary_b": temp_b,
            }
        )
        .groupby(["x", "y"], as_index=False)
        .agg(run_a=("run_a", "sum"), run_b=("run_b", "sum"), temporary_b=("temporary_b", "any"))
    )
    sites["difference"] = sites["run_b"] - sites["run_a"]
    return Comparison(a, b, table, streets, wa.course, edge_peak, crossing_frame, sites)


def _edge_label(streets: Streets, edge: int) -> str:
    name = str(streets.name[edge] or "")
    if not name:
        name = f"unnamed {streets.highway[edge]}"
    return f"{name} (street edge {edge})"


def _outcomes(run: RunFolder) -> dict[str, float]:
    crowd = (run.manifest.get("facts") or {}).get("crowd")
    if not isinstance(crowd, dict) or "outcomes" not in crowd:
        raise CrowdsimError(
            f"{run.path / 'manifest.json'}: no facts.crowd.outcomes; not a run folder of this "
            "crowdsim version (run the scenario again)"
        )
    out = {k: float(crowd["outcomes"].get(k, 0)) for k in OUTCOMES}
    out["spectators"] = float(crowd.get("spectators", np.nan))
    out["peak_watching"] = float(crowd.get("peak_watching", np.nan))
    return out


def _metrics(run: RunFolder) -> pd.Series:
    path = run.path / "metrics.parquet"
    if not path.is_file():  # no operator records, no estimates (open_run checked)
        return pd.Series(dtype=float)
    frame = read_table(
        path, required=("method", "zone_system", "metric", "value"), error=CrowdsimError
    )
    frame = frame[frame["metric"].isin(list(METRICS))]
    return frame.set_index(["method", "zone_system", "metric"])["value"].astype(float)


# ----------------------------------------------------------------------------- output


def format_table(table: pd.DataFrame, *, max_rows: int = 12) -> str:
    """The table as text; a measure with more than `max_rows` places (the cells) shows
    the places that changed most, and says how many more are in ``compare.parquet``."""
    lines = []
    head = f"{'measure':<38} {'place':<52} {'run A':>11} {'run B':>11} {'B - A':>11}  unit"
    lines.append(head)
    lines.append("-" * len(head))
    for measure, group in table.groupby("measure", sort=False):
        shown = group
        if len(group) > max_rows:  # the places that changed most
            change = group["difference"].abs()
            changed = change[(change > 0) | (group["run_a"].isna() != group["run_b"].isna())]
            order = changed.fillna(np.inf).sort_values(ascending=False, kind="stable")
            shown = group.loc[order.index[:max_rows]]
            if shown.empty:
                lines.append(
                    f"{_cut(str(measure), 38):<38} no change in any of {len(group)} places "
                    "(all in compare.parquet)"
                )
                continue
        for row in shown.itertuples():
            place = _cut_middle(row.place, 52)
            lines.append(
                f"{_cut(str(measure), 38):<38} {place:<52} {_num(row.run_a):>11} "
                f"{_num(row.run_b):>11} {_num(row.difference, signed=True):>11}  {row.unit}"
            )
        if len(group) > len(shown):
            lines.append(f"{'':<38} ... {len(group) - len(shown)} more in compare.parquet")
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cut_middle(text: str, width: int) -> str:
    """Shorten `text` in the middle, keeping its end (crossing names end with their km)."""
    if len(text) <= width:
        return text
    tail = max(width // 3, 1)
    return text[: width - tail - 1] + "…" + text[-tail:]


def _num(value: float, *, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a" if value is None or np.isnan(value) else ("inf" if value > 0 else "-inf")
    magnitude = abs(value)
    fmt = "{:+.4g}" if signed else "{:.4g}"
    if magnitude >= 1e4:
        fmt = "{:+,.0f}" if signed else "{:,.0f}"
    return fmt.format(value)


def write_comparison(
    comparison: Comparison, out_dir: str | os.PathLike[str], *, dpi: int = 110
) -> list[Path]:
    """Write ``compare.parquet`` and ``compare_map.png`` into `out_dir` (atomically).

    Raises
    ------
    CrowdsimError
        `out_dir` exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CrowdsimError(f"{out}: exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "compare.parquet"
    with atomic_path(dest) as tmp:
        pq.write_table(pa.Table.from_pandas(comparison.table, preserve_index=False), tmp)
    return [dest, plot_comparison(comparison, out / "compare_map.png", dpi=dpi)]


def plot_comparison(comparison: Comparison, dest: Path, *, dpi: int = 110) -> Path:
    """Map of B − A peak density per street, and walking times across the course."""
    streets, course = comparison.streets, comparison.course_a
    fig = plt.figure(figsize=(15, 9.5), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[1.7, 1])
    ax = fig.add_subplot(grid[0, 0])
    keep = streets.edge_u < streets.edge_v
    base = _segments(streets, np.flatnonzero(keep))
    ax.add_collection(LineCollection(base, colors="0.8", linewidths=0.4, zorder=1))
    cx, cy = streets.x[course.nodes], streets.y[course.nodes]
    ax.plot(cx, cy, color="0.2", linewidth=6, alpha=0.25, solid_capstyle="round", zorder=2,
            label=f"course of A ({course.length_m / 1000:.1f} km)")  # fmt: skip
    ep = comparison.edge_peak
    changed = ep[ep["difference"] != 0].sort_values("difference", key=np.abs)
    half = float(changed["difference"].abs().max()) if len(changed) else 0.0
    norm = CenteredNorm(vcenter=0.0, halfrange=max(half, 1e-3))
    lines = LineCollection(
        _segments(streets, changed["edge"].to_numpy()),
        cmap="RdBu_r",
        norm=norm,
        linewidths=2.4,
        zorder=3,
    )
    lines.set_array(changed["difference"].to_numpy())
    ax.add_collection(lines)
    bar = fig.colorbar(
        lines,
        ax=ax,
        location="bottom",
        shrink=0.7,
        aspect=40,
        label="peak density per street, B − A (persons/m²): red denser in B, blue denser in A",
    )
    bar.ax.xaxis.set_major_locator(MaxNLocator(7, symmetric=True))
    cr = comparison.crossings
    style = {  # (in A, in B): face colour, legend label
        (True, True): ("gold", "crossing point"),
        (True, False): ("white", "crossing point of A only (removed in B)"),
        (False, True): ("limegreen", "crossing point of B only (added in B)"),
    }
    shown: set[tuple[bool, bool]] = set()
    for i, row in enumerate(cr.itertuples()):
        key = (bool(row.in_a), bool(row.in_b))
        face, label = style[key]
        ax.plot(row.x, row.y, marker="o", markersize=14, color=face, markeredgecolor="black",
                linestyle="none", zorder=4, label=None if key in shown else label)  # fmt: skip
        shown.add(key)
        ax.annotate(str(i + 1), (row.x, row.y), ha="center", va="center", fontsize=8,
                    fontweight="bold", zorder=5)  # fmt: skip
    _plot_sites(ax, comparison.sites)
    if changed.empty:
        ax.text(0.02, 0.02, "no street's peak density changed", transform=ax.transAxes,
                fontsize=9, bbox={"boxstyle": "round", "fc": "white", "alpha": 0.9})  # fmt: skip
    for w, node in zip(course.route.waypoints, course.waypoint_node, strict=True):
        if w.kind in ("start", "finish"):
            ax.plot(streets.x[node], streets.y[node], "s", color="black", markersize=7, zorder=4)
            ax.annotate(w.kind, (streets.x[node], streets.y[node]), fontsize=9, zorder=5,
                        xytext=(7, 7), textcoords="offset points",
                        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})  # fmt: skip
    # a square view around the course, so long thin courses keep a readable map
    half_side = max(np.ptp(cx), np.ptp(cy)) * 0.56 + 250.0
    mx, my = (cx.min() + cx.max()) / 2.0, (cy.min() + cy.max()) / 2.0
    ax.set_xlim(mx - half_side, mx + half_side)
    ax.set_ylim(my - half_side, my + half_side)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, EPSG:31370)")
    ax.set_ylabel("y (m, EPSG:31370)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(
        "Peak density per street (B − A), rejections per cell site near the course,\n"
        "numbered crossing points",
        fontsize=10,
    )

    bars = fig.add_subplot(grid[0, 1])
    n = len(cr)
    if n:
        pos = np.arange(n)
        a_min, b_min = cr["run_a"].to_numpy(), cr["run_b"].to_numpy()
        bars.barh(pos - 0.19, np.nan_to_num(a_min), height=0.36, color="0.6", label="A")
        bars.barh(pos + 0.19, np.nan_to_num(b_min), height=0.36, color="tab:red", label="B")
        for p, x_a, x_b, d in zip(pos, a_min, b_min, cr["difference"], strict=True):
            text = "n/a" if not np.isfinite(d) else f"{d:+.1f} min"
            right = np.nanmax([x_a, x_b, 0.0])
            weight = "bold" if d > 0.05 else "normal"
            bars.annotate(text, (right, p), xytext=(4, 0), textcoords="offset points",
                          va="center", fontsize=9, fontweight=weight)  # fmt: skip
        labels = [f"{i + 1}. {_cut_middle(name, 44)}" for i, name in enumerate(cr["name"])]
        bars.set_yticks(pos, labels, fontsize=7.5)
        bars.set_ylim(max(n, 8) - 0.5, -0.5)  # bars keep their height with few crossings
        top = np.nanmax([*a_min, *b_min, 1.0])
        bars.set_xlim(0, top * 1.35)
        bars.legend(loc="lower right", fontsize=8)
    else:
        bars.text(0.5, 0.5, "no crossing points", ha="center", va="center",
                  transform=bars.transAxes)  # fmt: skip
        bars.set_yticks([])
    bars.set_xlabel(f"minutes at {FREE_SPEED_MPS} m/s (course closed)")
    bars.set_title(
        f"Walk across the course at each crossing point\n"
        f"({ACROSS_OFFSET_M:g} m one side to {ACROSS_OFFSET_M:g} m the other side)",
        fontsize=10,
    )
    fig.suptitle(
        f"crowdsim compare — A: {comparison.run_a.label}   B: {comparison.run_b.label}\n"
        f"streets: {streets.source.describe()}",
        fontsize=10,
    )
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return dest


def _plot_sites(ax: Any, sites: pd.DataFrame) -> None:
    """Cell sites near the course whose rejections changed (triangles sized by the change)
    and B's temporary event sites (stars)."""
    changed = sites[sites["difference"] != 0]
    top = float(changed["difference"].abs().max()) if len(changed) else 1.0
    for sign, marker, colour, label in (
        (1, "^", "tab:red", "cell site: more rejections in B"),
        (-1, "v", "tab:blue", "cell site: fewer rejections in B"),
    ):
        part = changed[np.sign(changed["difference"]) == sign]
        if len(part):
            size = 25.0 + 175.0 * np.sqrt(part["difference"].abs() / top)
            ax.scatter(part["x"], part["y"], s=size, marker=marker, color=colour, alpha=0.8,
                       edgecolors="black", linewidths=0.5, zorder=6, label=label)  # fmt: skip
    temporary = sites[sites["temporary_b"]]
    if len(temporary):
        ax.scatter(temporary["x"], temporary["y"], s=260, marker="*", color="magenta",
                   edgecolors="black", linewidths=0.7, zorder=7,
                   label="temporary event cell site of B")  # fmt: skip


def _segments(streets: Streets, edges: np.ndarray) -> np.ndarray:
    u, v = streets.edge_u[edges], streets.edge_v[edges]
    return np.stack(
        [
            np.column_stack([streets.x[u], streets.y[u]]),
            np.column_stack([streets.x[v], streets.y[v]]),
        ],
        axis=1,
    )
