"""GeoPackages the street stage writes: the course for GIS tools, the event's public data.

``event_public.gpkg`` holds what anybody, an operator included, can know of the event
before it happens: the published course, the closures (the organiser's and the police's
notices), the fan areas (the organiser's programme) and the street network as drawn from
OpenStreetMap (with the usable widths the simulator derives from its tags). It is the
only input of the operator's event-aware prior (:mod:`sim.estimate.priors`), which
lives on the operator's side of the wall and so reads this file instead of the
scenario, the streets or the course. Nothing in it comes from the simulated crowd.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from sim.io import atomic_path
from sim.runfolder import COURSE_STREETS, EVENT_PUBLIC

if TYPE_CHECKING:
    import geopandas as gpd

    from sim.course import Course
    from sim.scenario import Scenario
    from sim.streets import Streets

__all__ = ["write_course_geopackage", "write_event_public"]


def write_course_geopackage(streets: Streets, course: Course, out_dir: Path) -> Path:
    """Write ``course.gpkg``: layers ``course`` (the line), ``waypoints`` and ``streets``.

    ``streets`` holds every directed edge of the run's street graph as a straight line
    from node ``u`` to node ``v`` (EPSG:31370; its ends also as ``x0, y0, x1, y1``), with
    its index ``edge`` (as in ``truth_edges.parquet``), so a map of the run (``crowdsim
    serve``) needs no street source and no graph: the run's own folder is enough.
    """
    import geopandas as gpd
    import numpy as np
    import shapely
    from shapely.geometry import LineString, MultiLineString, Point

    pieces = course.piece_xy(streets)
    # a course in pieces: nothing is drawn across its gaps
    line = LineString(pieces[0]) if len(pieces) == 1 else MultiLineString(pieces)
    course_gdf = gpd.GeoDataFrame(
        {"name": [course.route.name], "length_m": [course.length_m]},
        geometry=[line],
        crs="EPSG:31370",
    )
    points = gpd.GeoDataFrame(
        {
            "name": [w.name for w in course.route.waypoints],
            "kind": [w.kind for w in course.route.waypoints],
            "km": course.waypoint_km,
            "snap_m": course.waypoint_snap_m,
        },
        geometry=[Point(streets.x[n], streets.y[n]) for n in course.waypoint_node.tolist()],
        crs="EPSG:31370",
    )
    u, v = streets.edge_u, streets.edge_v
    segments = np.stack(
        [
            np.column_stack([streets.x[u], streets.y[u]]),
            np.column_stack([streets.x[v], streets.y[v]]),
        ],
        axis=1,
    )
    edges = gpd.GeoDataFrame(
        {
            "edge": np.arange(len(u), dtype=np.int64),
            "u": u.astype(np.int64),
            "v": v.astype(np.int64),
            # the ends again as numbers: a map reads them without parsing geometries
            "x0": segments[:, 0, 0],
            "y0": segments[:, 0, 1],
            "x1": segments[:, 1, 0],
            "y1": segments[:, 1, 1],
        },
        geometry=shapely.linestrings(segments),
        crs="EPSG:31370",
    )
    dest = out_dir / "course.gpkg"
    with atomic_path(dest) as tmp:
        tmp.unlink()
        course_gdf.to_file(tmp, layer="course", driver="GPKG")
        points.to_file(tmp, layer="waypoints", driver="GPKG", mode="a")
        # no spatial index: readers take the whole layer (it only slows the writing)
        edges.to_file(tmp, layer=COURSE_STREETS, driver="GPKG", mode="a", SPATIAL_INDEX="NO")
    return dest


def write_event_public(scenario: Scenario, streets: Streets, course: Course, out_dir: Path) -> Path:
    """Write ``event_public.gpkg``: the event's public data, for the operator (EPSG:31370).

    Layers (times are UTC, ISO 8601 text):

    - ``course``: one line per piece of the course (``piece``, ``name``);
    - ``closures``: one row per closure and street edge it closes, or per closure and
      course piece (``closure``, ``closed_to``, ``course``, ``piece``, ``start``,
      ``end``, the edge's usable ``width_m`` and ``carriageway_m``);
    - ``fan_areas``: the circle of each fan area (``name``, ``radius_m``);
    - ``streets``: every walkable street edge once, a straight line between its nodes as
      the crowd walks it (``name``, ``highway``, ``width_m`` usable when open to
      traffic, ``carriageway_m`` walkable when closed to it).
    """
    import geopandas as gpd
    import shapely

    from sim.streets import CRS, to_metres

    xy = np.column_stack([streets.x, streets.y])
    pieces = course.piece_xy(streets)
    course_gdf = gpd.GeoDataFrame(
        {"piece": np.arange(len(pieces)), "name": [course.route.name] * len(pieces)},
        geometry=[shapely.LineString(p) for p in pieces],
        crs=CRS,
    )
    # each two-way street once: the first of its two directed edges
    pair = np.minimum(streets.edge_u, streets.edge_v) * streets.n_nodes + np.maximum(
        streets.edge_u, streets.edge_v
    )
    _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    rep = first[inverse]  # the edge that stands for each directed edge's street
    once = rep == np.arange(streets.n_edges)
    lines = shapely.linestrings(
        np.stack([xy[streets.edge_u], xy[streets.edge_v]], axis=1)
    )  # one straight line per directed edge
    streets_gdf = gpd.GeoDataFrame(
        {
            "name": streets.name[once].astype(str),
            "highway": streets.highway[once].astype(str),
            "width_m": streets.width[once].astype(float),
            "carriageway_m": streets.carriageway[once].astype(float),
        },
        geometry=lines[once],
        crs=CRS,
    )
    closures_gdf = _closures_frame(scenario, streets, lines, rep, pieces)
    fan = scenario.people.spectators.fan_areas
    fx, fy = to_metres([f.lon for f in fan], [f.lat for f in fan])
    fan_gdf = gpd.GeoDataFrame(
        {"name": [f.name for f in fan], "radius_m": [float(f.radius_m) for f in fan]},
        geometry=shapely.buffer(
            shapely.points(np.asarray(fx), np.asarray(fy)), [f.radius_m for f in fan], quad_segs=16
        ),
        crs=CRS,
    )
    dest = out_dir / EVENT_PUBLIC
    with atomic_path(dest) as tmp:
        tmp.unlink()
        course_gdf.to_file(tmp, layer="course", driver="GPKG")
        closures_gdf.to_file(tmp, layer="closures", driver="GPKG", mode="a")
        fan_gdf.to_file(tmp, layer="fan_areas", driver="GPKG", mode="a")
        streets_gdf.to_file(tmp, layer="streets", driver="GPKG", mode="a")
    return dest


def _closures_frame(
    scenario: Scenario,
    streets: Streets,
    lines: np.ndarray,
    rep: np.ndarray,
    pieces: list[np.ndarray],
) -> gpd.GeoDataFrame:
    """One row per closure and edge (or course piece) it closes, with its UTC times."""
    import geopandas as gpd
    import shapely

    from sim.streets import CRS

    zone = ZoneInfo(scenario.event.timezone)

    def utc(t: dt.time) -> str:
        local = dt.datetime.combine(scenario.event.date, t, tzinfo=zone)
        return local.astimezone(dt.UTC).isoformat()

    rows: list[dict[str, object]] = []
    geoms: list[object] = []
    for c in scenario.closures:
        common = {"closure": c.name, "closed_to": c.closed_to, "start": utc(c.start),
                  "end": utc(c.end)}  # fmt: skip
        if c.course:
            # pieces the route lacks are refused when the scenario loads
            for k in c.pieces if c.pieces is not None else range(len(pieces)):
                rows.append({**common, "course": True, "piece": int(k), "width_m": 0.0,
                             "carriageway_m": 0.0})  # fmt: skip
                geoms.append(shapely.LineString(pieces[k]))
        named = [streets.edges_named(s) for s in c.streets]
        for e in np.unique(rep[np.concatenate(named)]) if named else ():
            rows.append({**common, "course": False, "piece": -1,
                         "width_m": float(streets.width[e]),
                         "carriageway_m": float(streets.carriageway[e])})  # fmt: skip
            geoms.append(lines[e])
    columns = ["closure", "closed_to", "start", "end", "course", "piece", "width_m",
               "carriageway_m"]  # fmt: skip
    frame = {col: [r[col] for r in rows] for col in columns}
    return gpd.GeoDataFrame(frame, geometry=geoms, crs=CRS)
