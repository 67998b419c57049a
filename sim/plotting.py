"""The figure kit: the Agg backend, atomic saving, local-time axes, colours, map bases.

Every figure crowdsim writes (the report's, the network's coverage) goes through
:func:`save`, so none is left half written; every time axis through
:func:`local_time_axis`, so all read in the event's local time; every map draws its
streets from :func:`street_segments` and its course from
:meth:`sim.course.Course.piece_xy`, inside one :class:`MapBase`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sim.io import atomic_path

if TYPE_CHECKING:
    from sim.course import Course
    from sim.streets import Streets

__all__ = [
    "COURSE_COLOUR",
    "LOS_COLOURS",
    "METHOD_COLOURS",
    "TRUTH_COLOUR",
    "MapBase",
    "local_time_axis",
    "method_colour",
    "save",
    "street_lines",
    "street_segments",
]

TRUTH_COLOUR = "black"
#: One colour per estimator, the same in every figure.
METHOD_COLOURS = {
    "presence": "tab:purple",
    "voronoi": "tab:blue",
    "bayes": "tab:orange",
    "em": "tab:green",
    "hmm": "tab:red",
}
#: Fruin walkway levels of service, A (free) to F (jammed).
LOS_COLOURS = {
    "A": "#1a9850",
    "B": "#a6d96a",
    "C": "#e6c619",
    "D": "#fd8d3c",
    "E": "#e31a1c",
    "F": "#800026",
}
#: The course over counts: dark blue, apart from the people colour map's yellows and reds.
COURSE_COLOUR = "#1f3b73"


def method_colour(method: str) -> str:
    """The colour of `method` (grey for a method not listed)."""
    return METHOD_COLOURS.get(method, "tab:gray")


def local_time_axis(ax: Axes, timezone: str, *, label: bool = True) -> None:
    """Label the x axis with clock times (HH:MM) in `timezone`."""
    # matplotlib.dates has no annotations on these two: untyped calls, known to be fine
    locator = mdates.AutoDateLocator(tz=timezone, minticks=4, maxticks=9)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.DateFormatter("%H:%M", tz=timezone)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    if label:
        ax.set_xlabel(f"local time ({timezone})")


def save(fig: Figure, dest: Path, *, dpi: int, tight: bool = True) -> Path:
    """Write `fig` as a PNG to `dest` atomically, close it and return `dest`.

    `tight` trims the white border (``bbox_inches="tight"``); a figure laid out with a
    fixed size to the pixel says False.
    """
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return dest


def street_segments(streets: Streets, edges: np.ndarray | None = None) -> np.ndarray:
    """One straight segment per edge (n x 2 x 2).

    All edges, one per direction pair, when `edges` is None; else the edges listed.
    """
    if edges is None:
        keep = streets.edge_u < streets.edge_v
        u, v = streets.edge_u[keep], streets.edge_v[keep]
    else:
        u, v = streets.edge_u[edges], streets.edge_v[edges]
    return np.stack(
        [
            np.column_stack([streets.x[u], streets.y[u]]),
            np.column_stack([streets.x[v], streets.y[v]]),
        ],
        axis=1,
    )


def street_lines(segments: np.ndarray, **style: Any) -> LineCollection:
    """A collection of the (n x 2 x 2) `segments` (from :func:`street_segments`), styled."""
    # matplotlib's stubs ask for a sequence of lines; an (n, 2, 2) array is one
    return LineCollection(segments, **style)  # type: ignore[arg-type]


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    """Pieces of a line as one (n x 2) array, a row of NaN between pieces (a gap)."""
    gap = np.full((1, 2), np.nan)
    return np.concatenate([row for piece in pieces for row in (piece, gap)][:-1])


@dataclass(eq=False)
class MapBase:
    """The shared window of the maps: its extent, the streets in it, the course line."""

    extent: tuple[float, float, float, float]  # xmin, xmax, ymin, ymax
    segments: np.ndarray | None  # streets inside the window (n x 2 x 2), None = unknown
    course_xy: np.ndarray | None  # (n x 2), pieces separated by a row of NaN

    @classmethod
    def build(
        cls,
        streets: Streets | None,
        course: Course | None,
        *,
        course_file: Path | None = None,
        fallback: tuple[float, float, float, float] | None = None,
    ) -> MapBase | None:
        """The window around the course, with a margin.

        The course comes from the run's objects, else from `course_file` (the run's
        ``course.gpkg``); without either the window is `fallback` (e.g. the zone grid's
        extent), and without that there is no map (None).
        """
        pieces: list[np.ndarray] = []
        if streets is not None and course is not None:
            pieces = course.piece_xy(streets)
        elif course_file is not None and course_file.is_file():
            import geopandas as gpd

            line = gpd.read_file(course_file, layer="course").geometry.iloc[0]
            parts = getattr(line, "geoms", [line])
            pieces = [np.asarray(part.coords)[:, :2] for part in parts]
        xy = _joined(pieces) if pieces else None
        if xy is not None:
            lo, hi = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
            pad = float((hi - lo).max()) * 0.08 + 300.0
            extent = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
        elif fallback is not None:
            extent = fallback
        else:
            return None
        xmin, xmax, ymin, ymax = (float(v) for v in extent)
        segments = None
        if streets is not None:
            seg = street_segments(streets)
            inside = (
                (seg[:, :, 0].max(axis=1) >= xmin)
                & (seg[:, :, 0].min(axis=1) <= xmax)
                & (seg[:, :, 1].max(axis=1) >= ymin)
                & (seg[:, :, 1].min(axis=1) <= ymax)
            )
            segments = seg[inside]
        return cls(extent=(xmin, xmax, ymin, ymax), segments=segments, course_xy=xy)

    def draw(self, ax: Axes, *, course: bool = True, streets_alpha: float = 1.0) -> Line2D | None:
        """Streets (grey, beneath), the course (dark blue, returned), the window, axes."""
        if self.segments is not None:
            ax.add_collection(
                street_lines(
                    self.segments,
                    colors="0.78",
                    linewidths=0.3,
                    alpha=streets_alpha,
                    zorder=1,
                    rasterized=True,
                )
            )
        line = None
        if course and self.course_xy is not None:
            (line,) = ax.plot(
                self.course_xy[:, 0],
                self.course_xy[:, 1],
                color=COURSE_COLOUR,
                lw=1.1,
                alpha=0.9,
                zorder=4,
                label="course",
            )
        ax.set_xlim(self.extent[0], self.extent[1])
        ax.set_ylim(self.extent[2], self.extent[3])
        ax.set_aspect("equal")
        ax.ticklabel_format(style="plain", useOffset=False)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("x (m, EPSG:31370)", fontsize=8)
        ax.set_ylabel("y (m, EPSG:31370)", fontsize=8)
        return line

    @property
    def aspect(self) -> float:
        """Height over width of the window."""
        return (self.extent[3] - self.extent[2]) / (self.extent[1] - self.extent[0])

    def figsize(self, cols: int, rows: int, *, width: float = 5.2) -> tuple[float, float]:
        """A figure size whose panels follow the window's aspect ratio."""
        inner = width - 1.0  # tick labels and axis label take about an inch
        return (width * cols + 1.2, inner * self.aspect * rows + 0.9 * rows + 0.5)
