"""Figures, geometry files and the self-contained HTML report of a run.

The report's first line says which street source the run used, because a run on the
offline sketch must never be mistaken for one on the real city.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

from sim.io import atomic_path, write_text

if TYPE_CHECKING:
    from sim.course import Course
    from sim.run import RunContext
    from sim.streets import Streets

__all__ = ["plot_course_map", "write_course_geopackage", "write_report"]


def write_course_geopackage(streets: Streets, course: Course, out_dir: Path) -> Path:
    """Write ``course.gpkg``: layer ``course`` (the line, EPSG:31370) and ``waypoints``."""
    import geopandas as gpd
    from shapely.geometry import LineString, Point

    line = LineString(np.column_stack([streets.x[course.nodes], streets.y[course.nodes]]))
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


def _street_segments(streets: Streets) -> np.ndarray:
    """One straight segment per edge (direction pairs drawn once)."""
    keep = streets.edge_u < streets.edge_v
    u, v = streets.edge_u[keep], streets.edge_v[keep]
    return np.stack(
        [
            np.column_stack([streets.x[u], streets.y[u]]),
            np.column_stack([streets.x[v], streets.y[v]]),
        ],
        axis=1,
    )


def plot_course_map(streets: Streets, course: Course, dest: Path, *, dpi: int = 110) -> Path:
    """Map of the street graph with the course, its waypoints and kilometre marks."""
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.add_collection(LineCollection(_street_segments(streets), colors="0.75", linewidths=0.4))
    cx, cy = streets.x[course.nodes], streets.y[course.nodes]
    ax.plot(cx, cy, color="crimson", linewidth=2.2, label=f"course {course.length_m / 1000:.1f} km")
    for km in range(5, int(course.length_m // 1000) + 1, 5):
        i = int(np.searchsorted(course.cum_m, km * 1000.0))
        ax.annotate(f"km {km}", (cx[i], cy[i]), fontsize=7, color="crimson",
                    xytext=(4, -8), textcoords="offset points")  # fmt: skip
    for w, node, km in zip(course.route.waypoints, course.waypoint_node, course.waypoint_km,
                           strict=True):  # fmt: skip
        if w.kind == "via":
            continue
        ax.plot(streets.x[node], streets.y[node], "o", color="black", markersize=5)
        ax.annotate(f"{w.name} ({km:.1f} km)", (streets.x[node], streets.y[node]), fontsize=8,
                    xytext=(5, 5), textcoords="offset points")  # fmt: skip
    xmin, ymin, xmax, ymax = streets.extent
    pad_x, pad_y = np.ptp(cx) * 0.15 + 300, np.ptp(cy) * 0.15 + 300
    ax.set_xlim(max(xmin, cx.min() - pad_x), min(xmax, cx.max() + pad_x))
    ax.set_ylim(max(ymin, cy.min() - pad_y), min(ymax, cy.max() + pad_y))
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, EPSG:31370)")
    ax.set_ylabel("y (m, EPSG:31370)")
    ax.set_title(f"{course.route.name}\n{streets.source.describe()}", fontsize=9)
    ax.legend(loc="lower right")
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return dest


def write_report(ctx: RunContext) -> list[Path]:
    """Write the figures and ``report.html`` of a run; return the files written."""
    out = ctx.out_dir
    written: list[Path] = []
    figures: list[tuple[str, Path]] = []
    if ctx.streets is not None and ctx.course is not None:
        path = plot_course_map(ctx.streets, ctx.course, out / "course_map.png",
                               dpi=ctx.scenario.output.dpi)  # fmt: skip
        figures.append(("The course on the street graph", path))
        written.append(path)
    for caption, path in (
        ("Spectators along the course over the afternoon (truth)", _plot_course_crowd(ctx)),
        ("Named areas: truth and each method's estimate", _plot_area_estimates(ctx)),
    ):
        if path is not None:
            figures.append((caption, path))
            written.append(path)
    for name, caption in (
        ("coverage_best_server.png", "The true radio environment (with shadowing)"),
        ("coverage_cells.png", "Coverage of single cells"),
    ):
        if (out / name).is_file():
            figures.append((caption, out / name))
    source = ctx.streets.source.describe() if ctx.streets else "no street data was loaded"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>crowdsim report: {html.escape(ctx.scenario.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        "img{max-width:100%}</style></head><body>",
        f"<p><strong>Street source:</strong> {html.escape(source)}</p>",
        f"<h1>{html.escape(ctx.scenario.name)}</h1>",
        f"<p>{html.escape(ctx.scenario.description)}</p>",
        f"<p>Event: {html.escape(ctx.scenario.event.name)}, {ctx.scenario.event.date} "
        f"{ctx.scenario.event.start}–{ctx.scenario.event.end} ({ctx.scenario.event.timezone}); "
        f"seed {ctx.scenario.seed}.</p>",
    ]
    if ctx.course is not None:
        rows = "".join(
            f"<tr><td>{html.escape(w['name'])}</td><td>{w['kind']}</td><td>{w['km']:.2f}</td>"
            f"<td>{'' if w['published_km'] is None else w['published_km']}</td>"
            f"<td>{w['snap_m']:.0f}</td></tr>"
            for w in ctx.course.summary()["waypoints"]
            if w["kind"] != "via"
        )
        parts.append(
            f"<h2>Course: {ctx.course.length_m / 1000:.2f} km</h2><table><tr><th>waypoint</th>"
            "<th>kind</th><th>km on course</th><th>published km</th><th>snap (m)</th></tr>"
            f"{rows}</table>"
        )
    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>note</th></tr>")
    for name, record in ctx.stages.items():
        parts.append(
            f"<tr><td>{name}</td><td>{html.escape(record['status'])}</td>"
            f"<td>{html.escape(str(record.get('note', '')))}</td></tr>"
        )
    parts.append("</table>")
    for caption, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{caption}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    parts.append("</body></html>")
    written.append(write_text("\n".join(parts), out / "report.html"))
    return written


def _plot_course_crowd(ctx: RunContext) -> Path | None:
    """Heat map of spectators per course segment (rows: km) and minute (columns)."""
    import pandas as pd

    path = ctx.out_dir / "truth_zones.parquet"
    if not path.is_file():
        return None
    truth = pd.read_parquet(path, filters=[("system", "==", "segment")])
    if truth.empty:
        return None
    table = truth.pivot_table(index="zone", columns="time", values="spectators", fill_value=0,
                              observed=True)  # fmt: skip
    km = [float(str(z).removeprefix("km").split("-")[0]) for z in table.index]
    table = table.iloc[np.argsort(km)]
    times = table.columns
    fig, ax = plt.subplots(figsize=(10, 5))
    im = ax.imshow(table.to_numpy(), aspect="auto", origin="lower", cmap="magma",
                   extent=(0, len(times), 0, len(table)))  # fmt: skip
    ticks = np.linspace(0, len(times) - 1, min(8, len(times))).astype(int)
    ax.set_xticks(ticks + 0.5, [times[i].strftime("%H:%M") for i in ticks])
    yt = np.linspace(0, len(table) - 1, min(10, len(table))).astype(int)
    ax.set_yticks(yt + 0.5, [str(table.index[i]) for i in yt])
    ax.set_xlabel("local time")
    ax.set_ylabel("course segment")
    fig.colorbar(im, ax=ax, label="spectators in the segment (truth)")
    dest = ctx.out_dir / "crowd_course.png"
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=ctx.scenario.output.dpi, bbox_inches="tight")
    plt.close(fig)
    return dest


def _plot_area_estimates(ctx: RunContext) -> Path | None:
    """Truth and estimates per named area over time (an estimate's bin is labelled by its
    end, as the truth is)."""
    import pandas as pd

    truth_path, est_path = ctx.out_dir / "truth_zones.parquet", ctx.out_dir / "estimates.parquet"
    if not (truth_path.is_file() and est_path.is_file()):
        return None
    truth = pd.read_parquet(truth_path, filters=[("system", "==", "area")])
    est = pd.read_parquet(est_path, filters=[("zone_system", "==", "area")])
    if truth.empty or est.empty:
        return None
    areas = list(dict.fromkeys(truth["zone"].astype(str)))[:6]
    width = pd.Timedelta(seconds=ctx.scenario.zones.bin_s)
    est = est.assign(time=(est["bin"] + width).dt.tz_convert(ctx.scenario.event.timezone),
                     zone=est["zone"].astype(str))  # fmt: skip
    cols = min(3, len(areas))
    rows = -(-len(areas) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, area in zip(axes.ravel(), areas, strict=False):
        t = truth[truth["zone"].astype(str) == area]
        ax.plot(t["time"], t["people"], color="black", linewidth=2, label="truth")
        for method, group in est[est["zone"] == area].groupby("method", observed=True):
            ax.plot(group["time"], group["estimate"], linewidth=1, label=str(method))
        ax.set_title(area, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_formatter(
            matplotlib.dates.DateFormatter("%H:%M", tz=ctx.scenario.event.timezone)
        )
    for ax in axes.ravel()[len(areas) :]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("People per named area: truth vs estimates (before privacy suppression)")
    dest = ctx.out_dir / "estimates_areas.png"
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=ctx.scenario.output.dpi, bbox_inches="tight")
    plt.close(fig)
    return dest
