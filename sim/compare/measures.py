"""The measures of a comparison: one function per kind, each giving rows of the table.

Every function returns rows of :data:`COLUMNS` (A, B and B − A for each place); some also
return what the map draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import shapely

from sim import runfolder
from sim.errors import CrowdsimError, RunFolderError
from sim.io import read_table
from sim.plotting import street_segments
from sim.runfolder import RunFolder
from sim.streets import Streets
from sim.streets import to_metres as _to_metres

from .walking import World, across_minutes, station_minutes, union_points

__all__ = [
    "COLUMNS",
    "METRICS",
    "OUTCOMES",
    "density_measures",
    "estimate_measures",
    "outcome_measures",
    "signalling_measures",
    "walking_measures",
]

#: Columns of the comparison table (long format: one row per measure and place).
COLUMNS = ["measure", "place", "run_a", "run_b", "difference", "unit"]
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
    return shapely.linestrings(street_segments(streets, edges))


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


def density_measures(
    a: RunFolder, b: RunFolder, streets: Streets, *, worst: int
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Peak density and time at LOS E or F per zone, and the `worst` densest places.

    Returns the rows and the peak density per street edge (``edge``, ``run_a``,
    ``run_b``, ``difference``) that the map colours.
    """
    peak_a, zones_a = _zone_figures(a, streets)
    peak_b, zones_b = _zone_figures(b, streets)
    places = list(dict.fromkeys([*zones_a, *zones_b]))
    nan2 = (np.nan, np.nan)
    za = [zones_a.get(p, nan2) for p in places]
    zb = [zones_b.get(p, nan2) for p in places]
    rows = _rows("peak density", "persons/m2", places, [z[0] for z in za], [z[0] for z in zb])
    rows += _rows("time at LOS E or F", "min", places, [z[1] for z in za], [z[1] for z in zb])
    edge_peak = pd.DataFrame({"run_a": peak_a, "run_b": peak_b}).fillna(0.0)
    edge_peak["difference"] = edge_peak["run_b"] - edge_peak["run_a"]
    edge_peak = edge_peak.rename_axis("edge").reset_index()
    top = edge_peak.assign(m=edge_peak[["run_a", "run_b"]].max(axis=1)).nlargest(worst, "m")
    labels = [_edge_label(streets, int(e)) for e in top["edge"]]
    rows += _rows("peak density, densest places", "persons/m2", labels, top["run_a"], top["run_b"])
    return rows, edge_peak


def _stations(run: RunFolder) -> list[tuple[str, float, float]]:
    origins = run.scenario.people.spectators.origins
    return [(o.name, o.lat, o.lon) for o in origins if o.kind == "station"]


def _crossings(run: RunFolder) -> list[tuple[str, float, float]]:
    return [(c.name or f"crossing {i + 1}", c.lat, c.lon)
            for i, c in enumerate(run.scenario.route.crossings)]  # fmt: skip


def walking_measures(wa: World, wb: World) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Walks from the stations to the course, and across the closed course at each
    crossing point of either run.

    Returns the rows and the crossings the map numbers (``name``, ``in_a``, ``in_b``,
    ``x``, ``y``, ``run_a``, ``run_b``, ``difference`` in minutes).
    """
    a, b = wa.run, wb.run
    st = union_points(_stations(a), _stations(b))
    rows = _rows(
        "walk from station to course",
        "min",
        [s[0] for s in st],
        station_minutes(wa, st),
        station_minutes(wb, st),
    )
    cr = union_points(_crossings(a), _crossings(b))
    across_a, across_b = across_minutes(wa, cr), across_minutes(wb, cr)
    rows += _rows("walk across the course (closed)", "min", [c[0] for c in cr], across_a, across_b)
    cx, cy = _to_metres([c[2] for c in cr], [c[1] for c in cr])
    in_a, in_b = set(_crossings(a)), set(_crossings(b))
    frame = pd.DataFrame(
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
    return rows, frame


def outcome_measures(a: RunFolder, b: RunFolder) -> list[dict[str, Any]]:
    """Spectators, peak watching, and the people who found no spot (by reason)."""
    oa, ob = _outcomes(a), _outcomes(b)
    rows = _rows(
        "spectators",
        "people",
        ["all", "peak watching"],
        [oa["spectators"], oa["peak_watching"]],
        [ob["spectators"], ob["peak_watching"]],
    )
    for key, label in OUTCOMES.items():
        rows += _rows(label, "people", ["all"], [oa[key]], [ob[key]])
    return rows


def signalling_measures(
    a: RunFolder, b: RunFolder, *, near_course_m: float, near_point_m: float
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Rejections and signalling messages of the cells near run A's course (and near its
    start, check points and finish), and per cell its peak of connected users.

    Returns the rows and the rejections per cell site near the course (``x``, ``y``,
    ``run_a``, ``run_b``, ``difference``, ``temporary_b``) that the map draws.
    """
    line, points = _course_layers(a)
    cells_a, cells_b = _cell_figures(a), _cell_figures(b)
    both = cells_a[["x", "y"]].combine_first(cells_b[["x", "y"]])
    pts = shapely.points(both["x"].to_numpy(), both["y"].to_numpy())
    near = both.index[shapely.distance(pts, line) <= near_course_m]
    ca, cb = cells_a.reindex(near), cells_b.reindex(near)
    named = points[points["kind"] != "via"]
    rows: list[dict[str, Any]] = []
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
    return rows, sites


def estimate_measures(a: RunFolder, b: RunFolder) -> list[dict[str, Any]]:
    """Each estimator's error per zone system (``metrics.parquet``), for :data:`METRICS`."""
    ma, mb = _metrics(a), _metrics(b)
    keys = list(dict.fromkeys([*ma.index, *mb.index]))
    rows: list[dict[str, Any]] = []
    for metric, unit in METRICS.items():
        sel = [k for k in keys if k[2] == metric]
        rows += _rows(
            f"estimate error: {metric}",
            unit,
            [f"{m} / {s}" for m, s, _ in sel],
            [ma.get(k, np.nan) for k in sel],
            [mb.get(k, np.nan) for k in sel],
        )
    return rows


def _edge_label(streets: Streets, edge: int) -> str:
    name = str(streets.name[edge] or "")
    if not name:
        name = f"unnamed {streets.highway[edge]}"
    return f"{name} (street edge {edge})"


def _outcomes(run: RunFolder) -> dict[str, float]:
    crowd = run.facts.get("crowd")
    if not isinstance(crowd, dict) or "outcomes" not in crowd:
        raise RunFolderError(
            f"{run.file(runfolder.MANIFEST)}: no facts.crowd.outcomes; not a run folder of this "
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
