"""The run report: figures and one self-contained ``report.html`` in the run folder.

The report is for the three kinds of reader of DESIGN: planners see the crowd on the
map, its densities and levels of service and the worst places; researchers see every
method against the truth (maps at the peak, time series with intervals, scatter, error
over time, the signalling load behind the estimates); everyone sees first which street
source the run used, because a run on the offline sketch must never be mistaken for one
on the real city. Figures are PNGs (and one animated GIF) drawn with matplotlib's Agg
backend, written atomically beside the tables and embedded in the page as base64.

Modules: :mod:`.tables` reads the run folder once, on local time; :mod:`.maps` draws
maps and the animation; :mod:`.charts` the charts over time and against the truth;
:mod:`.crowding` densities and levels of service; :mod:`.page` the HTML.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sim.io import write_text

from .charts import (
    joined_small,
    plot_cell_load,
    plot_course_crowd,
    plot_error_over_time,
    plot_scatter,
    plot_time_series,
)
from .context import load_run_context
from .crowding import EDGE_COLUMNS, plot_densities, worst_per_edge, worst_places
from .geopackage import write_course_geopackage
from .maps import (
    MapBase,
    gif_times,
    plot_course_map,
    plot_crowd_map,
    plot_los_map,
    plot_peak_heatmaps,
    write_afternoon_gif,
)
from .page import Section, render_page, table_html
from .tables import RunTables, read_manifest_source

if TYPE_CHECKING:
    from sim.run import RunContext
    from sim.scenario import Scenario

__all__ = [
    "FIGURES",
    "chosen_times",
    "load_run_context",
    "plot_course_map",
    "write_course_geopackage",
    "write_report",
]

#: Every figure of the report: file name -> the heading of its section.
FIGURES = {
    "course_map.png": "The course",
    "crowd_map.png": "The crowd on the streets",
    "crowd_course.png": "Spectators along the course",
    "heatmaps_peak.png": "Truth vs estimates at the peak",
    "timeseries.png": "Start, finish and course segments over time",
    "scatter.png": "Estimate vs truth",
    "error_time.png": "Error over time",
    "cell_load.png": "Signalling load per cell",
    "densities.png": "Densities and levels of service",
    "los_map.png": "Densities and levels of service",
    "afternoon.gif": "The afternoon, animated",
}
#: GIF frames: one every this many minutes (fewer frames on long runs, at most 48).
GIF_FRAME_MIN = 10.0
GIF_MAX_FRAMES = 48


def chosen_times(scenario: Scenario, tables: RunTables) -> dict[pd.Timestamp, str]:
    """Moments for the crowd maps: the caravan, the first start, the peak along the course
    and the last team's finish (the truth's bins nearest to them), else the quartiles."""
    tz = scenario.event.timezone
    times = tables.times()
    if len(times) == 0:
        return {}
    wanted: dict[str, pd.Timestamp] = {}
    race = scenario.event.race
    if race is not None:
        day = scenario.event.date

        def local(t: Any) -> pd.Timestamp:
            return pd.Timestamp.combine(day, t).tz_localize(tz)

        if race.caravan is not None:
            wanted["caravan"] = local(race.caravan)
        starts = race.start_times(day)
        wanted["first team starts"] = pd.Timestamp(starts[0]).tz_localize(tz)
        last = pd.Timestamp(starts[-1]).tz_localize(tz) + pd.Timedelta(minutes=race.ride_min)
        wanted["last team finishes"] = last
    peak = tables.peak_time()
    if peak is not None:
        wanted["peak along the course"] = peak
    slack = pd.Timedelta(seconds=tables.bin_s)  # a moment at the very start: the first bin
    inside = {k: v for k, v in wanted.items() if times[0] - slack <= v <= times[-1] + slack}
    if len(inside) < 2:
        inside = {f"{q}% of the run": times[int(q / 100 * (len(times) - 1))] for q in (25, 50, 75)}
        if peak is not None:
            inside["peak along the course"] = peak
    out: dict[pd.Timestamp, str] = {}
    for label, when in sorted(inside.items(), key=lambda kv: kv[1]):
        (t,) = tables.nearest_times([when])
        out[t] = f"{out[t]}, {label}" if t in out else label
    return out


def _best_grid_method(tables: RunTables) -> str | None:
    """The grid method with the lowest MAE (the one the animation shows)."""
    if not tables.grid_methods:
        return None
    m = tables.metrics
    if m is not None and not m.empty:
        mae = m[(m["zone_system"] == "grid") & (m["metric"] == "mae")]
        mae = mae[mae["method"].isin(tables.grid_methods)].dropna(subset=["value"])
        if not mae.empty:
            return str(mae.sort_values("value").iloc[0]["method"])
    return tables.grid_methods[0]


def _metrics_table(tables: RunTables) -> str:
    m = tables.metrics
    if m is None or m.empty:
        return "<p><em>No metrics: the validation stage did not score this run.</em></p>"
    wide = m.pivot_table(
        index=["method", "zone_system"], columns="metric", values="value", sort=False
    )
    cols = [
        ("mae", "MAE (people)", "{:,.1f}"),
        ("mape", "MAPE (truth ≥ floor)", "{:.0%}"),
        ("bias", "bias (people)", "{:+,.1f}"),
        ("total_error_median_abs", "total error (median |rel|)", "{:.0%}"),
        ("coverage", "interval coverage", "{:.0%}"),
        ("suppressed_share", "suppressed", "{:.0%}"),
        ("kwd_mean_m", "KWD mean (m)", "{:,.0f}"),
    ]
    out = pd.DataFrame(
        {"method": wide.index.get_level_values(0), "zone system": wide.index.get_level_values(1)}
    )
    for key, label, fmt in cols:
        values = wide[key] if key in wide else pd.Series(float("nan"), index=wide.index)
        out[label] = [("" if pd.isna(v) else fmt.format(v)) for v in values]
    return table_html(out, table_id="metrics")


def _worst_table(
    places: pd.DataFrame, timezone: str, *, table_id: str, prefix: str, caption: str
) -> str:
    if places.empty:
        return "<p><em>Nobody walked the streets: no places to list.</em></p>"
    frame = pd.DataFrame({"#": [f"{prefix}{r}" for r in places["rank"].astype(int)]})
    if "street" in places:
        frame["street"] = places["street"].to_numpy()
        frame["usable width (m)"] = [f"{w:.1f}" for w in places["width_m"]]
    if "course_km" in places:
        frame["nearest course km"] = [
            f"km {k:.1f} ({d:,.0f} m away)"
            for k, d in zip(places["course_km"], places["course_dist_m"], strict=True)
        ]
    frame["worst level"] = places["los"].to_numpy()
    frame["peak flow (p/m/min)"] = [f"{v:.1f}" for v in places["flow_pmm"]]
    frame["at (local)"] = [f"{t.tz_convert(timezone):%H:%M}" for t in places["time"]]
    frame["people then"] = [f"{v:,.0f}" for v in places["persons"]]
    frame["peak density (p/m²)"] = [f"{v:.2f}" for v in places["peak_density"]]
    frame["density peak at"] = [
        f"{t.tz_convert(timezone):%H:%M}" for t in places["peak_density_time"]
    ]
    return table_html(frame, table_id=table_id, caption=caption)


def write_report(ctx: RunContext) -> list[Path]:
    """Draw every figure of a run and write ``report.html``; return the files written.

    Reads the run folder's tables (truth, estimates, metrics, cell load) and the run's
    streets and course. Records what it drew in ``ctx.facts["report"]`` and the seconds
    each part took in ``ctx.part_timings["report"]``.
    """
    sc = ctx.scenario
    out = ctx.out_dir
    dpi = sc.output.dpi
    seconds: dict[str, float] = {}

    def timed(name: str, make: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = make()
        seconds[name] = round(time.perf_counter() - t0, 3)
        return value

    tables: RunTables = timed(
        "read",
        lambda: RunTables.load(
            out, timezone=sc.event.timezone, bin_s=sc.zones.bin_s, tile_m=sc.zones.grid_m
        ),
    )
    base = timed(
        "map_base", lambda: MapBase.build(ctx.streets, ctx.course, out_dir=out, grid=tables.grid())
    )
    moments = chosen_times(sc, tables)
    peak = tables.peak_time()
    frames = gif_times(tables, frame_min=GIF_FRAME_MIN, max_frames=GIF_MAX_FRAMES)
    wanted = sorted({*moments, *frames, *([peak] if peak is not None else [])})
    timed("read_details", lambda: tables.load_details(wanted))
    paths: dict[str, Path | None] = {name: None for name in FIGURES}
    if ctx.streets is not None and ctx.course is not None:
        paths["course_map.png"] = timed(
            "course_map",
            lambda: plot_course_map(ctx.streets, ctx.course, out / "course_map.png", dpi=dpi),
        )
    if base is not None:
        paths["crowd_map.png"] = timed(
            "crowd_map",
            lambda: plot_crowd_map(
                base, tables, list(moments), out / "crowd_map.png", dpi=dpi, labels=moments
            ),
        )
        if peak is not None:
            paths["heatmaps_peak.png"] = timed(
                "heatmaps_peak",
                lambda: plot_peak_heatmaps(base, tables, peak, out / "heatmaps_peak.png", dpi=dpi),
            )
    paths["crowd_course.png"] = timed(
        "crowd_course", lambda: plot_course_crowd(tables, out / "crowd_course.png", dpi=dpi)
    )
    paths["timeseries.png"] = timed(
        "timeseries", lambda: plot_time_series(tables, out / "timeseries.png", dpi=dpi)
    )
    joined = timed("join", lambda: joined_small(tables))
    paths["scatter.png"] = timed(
        "scatter", lambda: plot_scatter(joined, out / "scatter.png", dpi=dpi)
    )
    paths["error_time.png"] = timed(
        "error_time", lambda: plot_error_over_time(tables, joined, out / "error_time.png", dpi=dpi)
    )
    paths["cell_load.png"] = timed(
        "cell_load",
        lambda: plot_cell_load(
            tables, out / "cell_load.png", dpi=dpi, capacity=sc.network.rrc_capacity
        ),
    )
    edges = timed("read_edges", lambda: tables.truth_edges(EDGE_COLUMNS))
    places = dense = pd.DataFrame()
    if edges is not None and not edges.empty:
        lengths = ctx.streets.length if ctx.streets is not None else None
        paths["densities.png"] = timed(
            "densities",
            lambda: plot_densities(tables, edges, out / "densities.png", dpi=dpi, lengths=lengths),
        )
        worst = timed("worst_places", lambda: worst_per_edge(edges))
        places = worst_places(worst, streets=ctx.streets, course=ctx.course, by="flow")
        dense = worst_places(worst, streets=ctx.streets, course=ctx.course, by="density")
        if base is not None and ctx.streets is not None:
            paths["los_map.png"] = timed(
                "los_map",
                lambda: plot_los_map(
                    base, ctx.streets, worst, places, dense, out / "los_map.png", dpi=dpi
                ),
            )
    method = _best_grid_method(tables)
    if base is not None and method is not None:
        paths["afternoon.gif"] = timed(
            "gif", lambda: write_afternoon_gif(base, tables, method, frames, out / "afternoon.gif")
        )

    source = (
        ctx.streets.source.describe()
        if ctx.streets is not None
        else read_manifest_source(out) or "unknown: no street data was loaded"
    )
    page = timed(
        "html",
        lambda: render_page(
            title=sc.name,
            source=source,
            head=_head(ctx),
            sections=_sections(ctx, tables, paths, moments, peak, method, places, dense),
        ),
    )
    written = [p for p in paths.values() if p is not None]
    written.append(write_text(page, out / "report.html"))
    ctx.facts["report"] = {
        "figures": sorted(p.name for p in written if p.suffix != ".html"),
        "gif_method": method,
        "peak": None if peak is None else peak.isoformat(),
    }
    ctx.part_timings["report"] = seconds
    return written


def _head(ctx: RunContext) -> list[str]:
    sc = ctx.scenario
    parts = [
        f"<h1>{html.escape(sc.name)}</h1>",
        f"<p>{html.escape(sc.description)}</p>",
        f"<p>Event: {html.escape(sc.event.name)}, {sc.event.date} "
        f"{sc.event.start}–{sc.event.end} ({sc.event.timezone}); seed {sc.seed}. "
        "All times in the figures are local times of the event.</p>",
    ]
    parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>note</th></tr>")
    for name, record in ctx.stages.items():
        parts.append(
            f"<tr><td>{name}</td><td>{html.escape(record['status'])}</td>"
            f"<td>{html.escape(str(record.get('note', '')))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _course_table(ctx: RunContext) -> str:
    if ctx.course is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(w['name'])}</td><td>{w['kind']}</td><td>{w['km']:.2f}</td>"
        f"<td>{'' if w['published_km'] is None else w['published_km']}</td>"
        f"<td>{w['snap_m']:.0f}</td></tr>"
        for w in ctx.course.summary()["waypoints"]
        if w["kind"] != "via"
    )
    return (
        f"<p>Course: {ctx.course.length_m / 1000:.2f} km.</p><table><tr><th>waypoint</th>"
        "<th>kind</th><th>km on course</th><th>published km</th><th>snap (m)</th></tr>"
        f"{rows}</table>"
    )


def _view_caption(tables: RunTables) -> str:
    """Says which table the grid maps and the animation draw."""
    if tables.grid_view == "published":
        return (
            "The estimates are shown as published (estimates.parquet): a tile below the "
            "privacy threshold is left blank, since the operator would publish nothing for it."
        )
    return "This run has one estimates table only: the maps show internal estimates."


def _sections(
    ctx: RunContext,
    tables: RunTables,
    paths: dict[str, Path | None],
    moments: dict[pd.Timestamp, str],
    peak: pd.Timestamp | None,
    method: str | None,
    places: pd.DataFrame,
    dense: pd.DataFrame,
) -> list[Section]:
    tz = ctx.scenario.event.timezone
    out = ctx.out_dir
    at = ", ".join(f"{t:%H:%M} ({label})" for t, label in moments.items())
    peak_text = "" if peak is None else f"{peak:%H:%M}"
    coverage = [
        (out / name if (out / name).is_file() else None, caption)
        for name, caption in (
            ("coverage_best_server.png", "The true radio environment (with shadowing)"),
            ("coverage_cells.png", "Coverage of single cells"),
        )
    ]
    sec = [
        Section(
            "course",
            FIGURES["course_map.png"],
            [(paths["course_map.png"], "The course on the street graph")],
            after=_course_table(ctx),
        ),
        Section(
            "crowd-map",
            FIGURES["crowd_map.png"],
            [(paths["crowd_map.png"], f"The crowd (truth, people per grid tile) at {at}")],
        ),
        Section(
            "crowd-course",
            FIGURES["crowd_course.png"],
            [
                (
                    paths["crowd_course.png"],
                    "Spectators along the course over the afternoon (truth, per course "
                    "segment and bin)",
                )
            ],
        ),
        Section(
            "peak",
            FIGURES["heatmaps_peak.png"],
            [
                (
                    paths["heatmaps_peak.png"],
                    f"Truth beside each method's estimate per grid tile at the peak (bin ending "
                    f"{peak_text}, when most spectators line the course); one colour scale. "
                    + _view_caption(tables),
                )
            ],
        ),
        Section(
            "timeseries",
            FIGURES["timeseries.png"],
            [
                (
                    paths["timeseries.png"],
                    "Named areas and course segments: truth and each method's estimate with "
                    "its interval [lower, upper] (summed over the segments of a panel); the "
                    "operator's internal estimates, which are not published",
                )
            ],
        ),
        Section(
            "scatter",
            FIGURES["scatter.png"],
            [
                (
                    paths["scatter.png"],
                    "Estimate vs truth, one point per zone and bin (course segments and "
                    "named areas)",
                )
            ],
        ),
        Section(
            "error",
            FIGURES["error_time.png"],
            [
                (
                    paths["error_time.png"],
                    "Error over time: MAE on the course segments, error of the total along "
                    "the course, KWD on the grid",
                )
            ],
            after=_metrics_table(tables),
        ),
        Section(
            "cell-load",
            FIGURES["cell_load.png"],
            [
                (
                    paths["cell_load.png"],
                    "Signalling load per cell per minute, with rejected requests",
                ),
                *coverage,
            ],
        ),
        Section(
            "los",
            FIGURES["densities.png"],
            [
                (paths["densities.png"], "Densities and Fruin levels of service over time (truth)"),
                (
                    paths["los_map.png"],
                    "Worst level of service reached on each street segment; numbers mark the "
                    "worst places",
                ),
            ],
            after=_worst_table(
                places,
                tz,
                table_id="worst-places",
                prefix="",
                caption="Worst places by level of service: the street "
                "segments with the highest peak flow per metre of usable "
                "width (1, 2, ... on the map)",
            )
            + _worst_table(
                dense,
                tz,
                table_id="densest-places",
                prefix="d",
                caption="Densest places: the street segments with the highest "
                "peak density, standing spectators included (d1, d2, ... on "
                "the map)",
            ),
        ),
        Section(
            "afternoon",
            FIGURES["afternoon.gif"],
            [
                (
                    paths["afternoon.gif"],
                    f"The afternoon, one frame every {GIF_FRAME_MIN:g} minutes (or fewer on "
                    f"long runs): truth (left) and the {method} estimate (right), the method "
                    "with the lowest grid MAE. " + _view_caption(tables),
                )
            ],
        ),
    ]
    return sec
