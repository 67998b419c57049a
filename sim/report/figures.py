"""Every figure of the report, in one list: file, section, heading, caption, how to draw it.

The list :data:`FIGURES` drives both the drawing and the page: :func:`sim.report.write_report`
draws each entry that has a draw function and lays out the page from the same entries, so
a new figure is one new entry here. What all figures share (the run's tables, the map
window, the chosen moments, the joined estimates) is read once into a :class:`Drawing`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from sim.plotting import MapBase

from .charts import (
    joined_small,
    plot_cell_load,
    plot_course_crowd,
    plot_error_over_time,
    plot_scatter,
    plot_time_series,
)
from .crowding import EDGE_COLUMNS, plot_densities, worst_per_edge, worst_places
from .maps import (
    gif_times,
    plot_course_map,
    plot_crowd_map,
    plot_los_map,
    plot_peak_heatmaps,
    write_afternoon_gif,
)
from .tables import RunTables

if TYPE_CHECKING:
    from sim.course import Course
    from sim.scenario import Scenario
    from sim.streets import Streets

__all__ = ["FIGURES", "GIF_FRAME_MIN", "GIF_MAX_FRAMES", "Drawing", "Figure", "chosen_times"]

#: GIF frames: one every this many minutes (fewer frames on long runs, at most 48).
GIF_FRAME_MIN = 10.0
GIF_MAX_FRAMES = 48

T = TypeVar("T")


@dataclass(eq=False)
class Drawing:
    """What the figures of one report share, read or computed once.

    Build it with :meth:`prepare`; `seconds` collects how long each part took (the
    preparation steps and then each figure, by file stem).
    """

    scenario: Scenario
    out_dir: Path
    streets: Streets | None
    course: Course | None
    facts: Mapping[str, Any]
    tables: RunTables
    base: MapBase | None
    moments: dict[pd.Timestamp, str]
    peak: pd.Timestamp | None
    frames: list[pd.Timestamp]
    method: str | None
    joined: pd.DataFrame
    edges: pd.DataFrame | None
    worst: pd.DataFrame
    places: pd.DataFrame
    dense: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def dpi(self) -> int:
        """Resolution of the PNGs (``output.dpi``)."""
        return self.scenario.output.dpi

    @property
    def floor(self) -> float | None:
        """The MAPE floor the validation stage used (None: the run was not scored)."""
        floor = (self.facts.get("validation") or {}).get("floor")
        return None if floor is None else float(floor)

    @classmethod
    def prepare(
        cls,
        scenario: Scenario,
        out_dir: Path,
        *,
        streets: Streets | None,
        course: Course | None,
        facts: Mapping[str, Any],
    ) -> Drawing:
        """Read the run folder's tables and work out what the figures share."""
        seconds: dict[str, float] = {}
        timed = _timer(seconds)
        tables = timed(
            "read",
            lambda: RunTables.load(
                out_dir,
                timezone=scenario.event.timezone,
                bin_s=scenario.zones.bin_s,
                tile_m=scenario.zones.grid_m,
            ),
        )
        grid = tables.grid()
        base = timed(
            "map_base",
            lambda: MapBase.build(
                streets,
                course,
                course_file=out_dir / "course.gpkg",
                fallback=None if grid is None else grid.extent,
            ),
        )
        moments = chosen_times(scenario, tables)
        peak = tables.peak_time()
        frames = gif_times(tables, frame_min=GIF_FRAME_MIN, max_frames=GIF_MAX_FRAMES)
        wanted = sorted({*moments, *frames, *([peak] if peak is not None else [])})
        timed("read_details", lambda: tables.load_details(wanted))
        joined = timed("join", lambda: joined_small(tables))
        edges = timed("read_edges", lambda: tables.truth_edges(EDGE_COLUMNS))
        worst = places = dense = pd.DataFrame()
        if edges is not None and not edges.empty:
            worst = timed("worst_places", lambda: worst_per_edge(edges))
            places = worst_places(worst, streets=streets, course=course, by="flow")
            dense = worst_places(worst, streets=streets, course=course, by="density")
        return cls(
            scenario=scenario,
            out_dir=out_dir,
            streets=streets,
            course=course,
            facts=facts,
            tables=tables,
            base=base,
            moments=moments,
            peak=peak,
            frames=frames,
            method=_best_grid_method(tables),
            joined=joined,
            edges=edges,
            worst=worst,
            places=places,
            dense=dense,
            seconds=seconds,
        )

    def timed(self, name: str, make: Callable[[], T]) -> T:
        """Run `make`, recording its seconds under `name`."""
        return _timer(self.seconds)(name, make)


def _timer(seconds: dict[str, float]) -> Callable[[str, Callable[[], T]], T]:
    def timed(name: str, make: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        value = make()
        seconds[name] = round(time.perf_counter() - t0, 3)
        return value

    return timed


def chosen_times(scenario: Scenario, tables: RunTables) -> dict[pd.Timestamp, str]:
    """Moments for the crowd maps, each with its label.

    The caravan, the first start, the peak along the course and the last team's finish
    (the truth's bins nearest to them), else the quartiles of the run.
    """
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


# ------------------------------------------------------------------- one entry per figure


@dataclass(frozen=True)
class Figure:
    """One figure of the report and its place on the page.

    Attributes
    ----------
    file
        File name in the run folder.
    anchor, heading
        The page section it belongs to; consecutive figures with one anchor share it.
    caption
        Text under the figure (from the drawing: times, the method shown).
    draw
        Draws the figure to the given path and returns it, or None when the run has no
        data for it. None for a figure an earlier stage drew (the network's coverage).
    """

    file: str
    anchor: str
    heading: str
    caption: Callable[[Drawing], str]
    draw: Callable[[Drawing, Path], Path | None] | None


def _course_map(d: Drawing, dest: Path) -> Path | None:
    if d.streets is None or d.course is None:
        return None
    return plot_course_map(d.streets, d.course, dest, dpi=d.dpi)


def _crowd_map(d: Drawing, dest: Path) -> Path | None:
    if d.base is None:
        return None
    return plot_crowd_map(d.base, d.tables, list(d.moments), dest, dpi=d.dpi, labels=d.moments)


def _peak_heatmaps(d: Drawing, dest: Path) -> Path | None:
    if d.base is None or d.peak is None:
        return None
    return plot_peak_heatmaps(d.base, d.tables, d.peak, dest, dpi=d.dpi)


def _cell_load(d: Drawing, dest: Path) -> Path | None:
    return plot_cell_load(d.tables, dest, dpi=d.dpi, capacity=d.scenario.network.rrc_capacity)


def _densities(d: Drawing, dest: Path) -> Path | None:
    if d.edges is None or d.edges.empty:
        return None
    lengths = d.streets.length if d.streets is not None else None
    return plot_densities(d.tables, d.edges, dest, dpi=d.dpi, lengths=lengths)


def _los_map(d: Drawing, dest: Path) -> Path | None:
    if d.base is None or d.streets is None or d.worst.empty:
        return None
    return plot_los_map(d.base, d.streets, d.worst, d.places, d.dense, dest, dpi=d.dpi)


def _afternoon(d: Drawing, dest: Path) -> Path | None:
    if d.base is None or d.method is None:
        return None
    return write_afternoon_gif(d.base, d.tables, d.method, d.frames, dest)


def _moments_caption(d: Drawing) -> str:
    at = ", ".join(f"{t:%H:%M} ({label})" for t, label in d.moments.items())
    return f"The crowd (truth, people per grid tile) at {at}"


def _view_caption(d: Drawing) -> str:
    """Say which table the grid maps and the animation draw."""
    if d.tables.grid_view == "published":
        return (
            "The estimates are shown as published (estimates.parquet): a tile below the "
            "privacy threshold is left blank, since the operator would publish nothing for it."
        )
    return "This run has one estimates table only: the maps show internal estimates."


def _peak_caption(d: Drawing) -> str:
    peak = "" if d.peak is None else f"{d.peak:%H:%M}"
    return (
        f"Truth beside each method's estimate per grid tile at the peak (bin ending {peak}, "
        "when most spectators line the course); one colour scale. " + _view_caption(d)
    )


def _afternoon_caption(d: Drawing) -> str:
    return (
        f"The afternoon, one frame every {GIF_FRAME_MIN:g} minutes (or fewer on long runs): "
        f"truth (left) and the {d.method} estimate (right), the method with the lowest grid "
        "MAE. " + _view_caption(d)
    )


def _text(caption: str) -> Callable[[Drawing], str]:
    return lambda _: caption


_LOS = "Densities and levels of service"

#: Every figure of the report, in page order.
FIGURES: tuple[Figure, ...] = (
    Figure(
        "course_map.png",
        "course",
        "The course",
        _text("The course on the street graph"),
        _course_map,
    ),
    Figure(
        "crowd_map.png",
        "crowd-map",
        "The crowd on the streets",
        _moments_caption,
        _crowd_map,
    ),
    Figure(
        "crowd_course.png",
        "crowd-course",
        "Spectators along the course",
        _text("Spectators along the course over the afternoon (truth, per course segment and bin)"),
        lambda d, dest: plot_course_crowd(d.tables, dest, dpi=d.dpi),
    ),
    Figure(
        "heatmaps_peak.png",
        "peak",
        "Truth vs estimates at the peak",
        _peak_caption,
        _peak_heatmaps,
    ),
    Figure(
        "timeseries.png",
        "timeseries",
        "Start, finish and course segments over time",
        _text(
            "Named areas and course segments: truth and each method's estimate with its "
            "interval [lower, upper] (summed over the segments of a panel); the operator's "
            "internal estimates, which are not published"
        ),
        lambda d, dest: plot_time_series(d.tables, dest, dpi=d.dpi),
    ),
    Figure(
        "scatter.png",
        "scatter",
        "Estimate vs truth",
        _text("Estimate vs truth, one point per zone and bin (course segments and named areas)"),
        lambda d, dest: plot_scatter(d.joined, dest, dpi=d.dpi, floor=d.floor),
    ),
    Figure(
        "error_time.png",
        "error",
        "Error over time",
        _text(
            "Error over time: MAE on the course segments, error of the total along the "
            "course, KWD on the grid"
        ),
        lambda d, dest: plot_error_over_time(d.tables, d.joined, dest, dpi=d.dpi),
    ),
    Figure(
        "cell_load.png",
        "cell-load",
        "Signalling load per cell",
        _text("Signalling load per cell per minute, with rejected requests"),
        _cell_load,
    ),
    Figure(
        "coverage_best_server.png",
        "cell-load",
        "Signalling load per cell",
        _text("The true radio environment (with shadowing)"),
        None,
    ),
    Figure(
        "coverage_cells.png",
        "cell-load",
        "Signalling load per cell",
        _text("Coverage of single cells"),
        None,
    ),
    Figure(
        "densities.png",
        "los",
        _LOS,
        _text("Densities and Fruin levels of service over time (truth)"),
        _densities,
    ),
    Figure(
        "los_map.png",
        "los",
        _LOS,
        _text(
            "Worst level of service reached on each street segment; numbers mark the worst places"
        ),
        _los_map,
    ),
    Figure(
        "afternoon.gif",
        "afternoon",
        "The afternoon, animated",
        _afternoon_caption,
        _afternoon,
    ),
)
