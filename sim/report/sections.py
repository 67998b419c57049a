"""The report's text beside its figures: the head, the course, metrics and worst places.

Each function returns an HTML fragment; :func:`sim.report.write_report` places them on the
page (the head first, a table after the figures of its section).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from .figures import Drawing
from .page import table_html

if TYPE_CHECKING:
    from sim.scenario import Scenario

__all__ = ["AFTER", "course_table", "head", "metrics_table", "worst_table"]


def head(scenario: Scenario, stages: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The page's head: title, description, the event, and each stage's status."""
    sc = scenario
    parts = [
        f"<h1>{html.escape(sc.name)}</h1>",
        f"<p>{html.escape(sc.description)}</p>",
        f"<p>Event: {html.escape(sc.event.name)}, {sc.event.date} "
        f"{sc.event.start}–{sc.event.end} ({sc.event.timezone}); seed {sc.seed}. "
        "All times in the figures are local times of the event.</p>",
        "<h2>Stages</h2><table><tr><th>stage</th><th>status</th><th>note</th></tr>",
    ]
    for name, record in stages.items():
        parts.append(
            f"<tr><td>{name}</td><td>{html.escape(str(record['status']))}</td>"
            f"<td>{html.escape(str(record.get('note', '')))}</td></tr>"
        )
    parts.append("</table>")
    return parts


def course_table(d: Drawing) -> str:
    """The course's length and its waypoints with their kilometre marks and snaps."""
    if d.course is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(w['name'])}</td><td>{w['kind']}</td><td>{w['km']:.2f}</td>"
        f"<td>{'' if w['published_km'] is None else w['published_km']}</td>"
        f"<td>{w['snap_m']:.0f}</td></tr>"
        for w in d.course.summary()["waypoints"]
        if w["kind"] != "via"
    )
    return (
        f"<p>Course: {d.course.length_m / 1000:.2f} km.</p><table><tr><th>waypoint</th>"
        "<th>kind</th><th>km on course</th><th>published km</th><th>snap (m)</th></tr>"
        f"{rows}</table>"
    )


#: Columns of the metrics table: metric, heading, format.
METRIC_COLUMNS = (
    ("mae", "MAE (people)", "{:,.1f}"),
    ("mape", "MAPE (truth ≥ floor)", "{:.0%}"),
    ("bias", "bias (people)", "{:+,.1f}"),
    ("total_error_median_abs", "total error (median |rel|)", "{:.0%}"),
    ("coverage", "interval coverage", "{:.0%}"),
    ("suppressed_share", "suppressed", "{:.0%}"),
    ("kwd_mean_m", "KWD mean (m)", "{:,.0f}"),
)


def metrics_table(d: Drawing) -> str:
    """Every method's scores per zone system (from ``metrics.parquet``)."""
    m = d.tables.metrics
    if m is None or m.empty:
        return "<p><em>No metrics: the validation stage did not score this run.</em></p>"
    wide = m.pivot_table(
        index=["method", "zone_system"], columns="metric", values="value", sort=False
    )
    out = pd.DataFrame(
        {"method": wide.index.get_level_values(0), "zone system": wide.index.get_level_values(1)}
    )
    for key, label, fmt in METRIC_COLUMNS:
        values = wide[key] if key in wide else pd.Series(float("nan"), index=wide.index)
        out[label] = [("" if pd.isna(v) else fmt.format(v)) for v in values]
    return table_html(out, table_id="metrics")


def worst_table(
    places: pd.DataFrame, timezone: str, *, table_id: str, prefix: str, caption: str
) -> str:
    """The ranked street segments of `places` (:func:`.crowding.worst_places`) as a table."""
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


def _places_tables(d: Drawing) -> str:
    tz = d.scenario.event.timezone
    return worst_table(
        d.places,
        tz,
        table_id="worst-places",
        prefix="",
        caption="Worst places by level of service: the street segments with the highest "
        "peak flow per metre of usable width (1, 2, ... on the map)",
    ) + worst_table(
        d.dense,
        tz,
        table_id="densest-places",
        prefix="d",
        caption="Densest places: the street segments with the highest peak density, "
        "standing spectators included (d1, d2, ... on the map)",
    )


#: HTML after the figures of a section, by the section's anchor.
AFTER: dict[str, Callable[[Drawing], str]] = {
    "course": course_table,
    "error": metrics_table,
    "los": _places_tables,
}
