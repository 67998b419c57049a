"""The course as a GeoPackage, for GIS tools (the street stage writes it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sim.io import atomic_path
from sim.runfolder import COURSE_STREETS

if TYPE_CHECKING:
    from sim.course import Course
    from sim.streets import Streets

__all__ = ["write_course_geopackage"]


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
