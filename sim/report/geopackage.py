"""The course as a GeoPackage, for GIS tools (the street stage writes it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sim.io import atomic_path

if TYPE_CHECKING:
    from sim.course import Course
    from sim.streets import Streets

__all__ = ["write_course_geopackage"]


def write_course_geopackage(streets: Streets, course: Course, out_dir: Path) -> Path:
    """Write ``course.gpkg``: layer ``course`` (the line, EPSG:31370) and ``waypoints``."""
    import geopandas as gpd
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
    dest = out_dir / "course.gpkg"
    with atomic_path(dest) as tmp:
        tmp.unlink()
        course_gdf.to_file(tmp, layer="course", driver="GPKG")
        points.to_file(tmp, layer="waypoints", driver="GPKG", mode="a")
    return dest
