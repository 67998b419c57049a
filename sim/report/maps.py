"""Map figures.

The course, the crowd at chosen times, truth vs estimates at the peak, the worst levels of
service, and the animated afternoon.

Every map shows the same window (the course and a margin), the streets in grey beneath,
the course in red above, and counts per grid tile on one logarithmic colour scale, so
panels and frames compare at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm

from sim.io import atomic_path
from sim.plotting import (
    LOS_COLOURS,
    TRUTH_COLOUR,
    MapBase,
    save,
    street_lines,
    street_segments,
)

from .tables import GridRaster, RunTables

if TYPE_CHECKING:
    from sim.course import Course
    from sim.streets import Streets

__all__ = [
    "gif_times",
    "plot_course_map",
    "plot_crowd_map",
    "plot_los_map",
    "plot_peak_heatmaps",
    "write_afternoon_gif",
]

#: Colour map of people per tile; tiles under half a person are left blank.
PEOPLE_CMAP = "YlOrRd"
BLANK_BELOW = 0.5


def _tile_image(ax: Axes, grid: GridRaster, image: np.ndarray, norm: LogNorm):
    shown = np.ma.masked_less(np.nan_to_num(image, nan=0.0), BLANK_BELOW)
    return ax.imshow(
        shown,
        origin="lower",
        extent=grid.extent,
        cmap=PEOPLE_CMAP,
        norm=norm,
        interpolation="nearest",
        zorder=2,
        alpha=0.9,
    )


def _people_norm(images: list[np.ndarray]) -> LogNorm:
    top = max((float(np.nanmax(i)) for i in images if np.isfinite(i).any()), default=1.0)
    return LogNorm(vmin=BLANK_BELOW, vmax=max(top, 2.0))


def _tile_label(grid: GridRaster) -> str:
    return f"people per {grid.tile_m:g} m tile"


def plot_course_map(streets: Streets, course: Course, dest: Path, *, dpi: int = 110) -> Path:
    """Map of the street graph with the course, its waypoints and kilometre marks."""
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.add_collection(
        street_lines(street_segments(streets), colors="0.75", linewidths=0.4, rasterized=True)
    )
    cx, cy = streets.x[course.nodes], streets.y[course.nodes]
    label = f"course {course.length_m / 1000:.1f} km"
    if course.n_pieces > 1:
        label += f" ({course.simulated_m / 1000:.1f} km in {course.n_pieces} pieces shown)"
    for p, xy in enumerate(course.piece_xy(streets)):
        ax.plot(xy[:, 0], xy[:, 1], color="crimson", linewidth=2.2, label=None if p else label)
    bounds = course.piece_m
    for km in range(5, int(course.length_m // 1000) + 1, 5):
        if not ((bounds[:, 0] <= km * 1000.0) & (km * 1000.0 <= bounds[:, 1])).any():
            continue  # in a gap of the course
        i = int(np.searchsorted(course.cum_m, km * 1000.0))
        ax.annotate(
            f"km {km}",
            (cx[i], cy[i]),
            fontsize=7,
            color="crimson",
            xytext=(4, -8),
            textcoords="offset points",
        )
    for w, node, km in zip(
        course.route.waypoints, course.waypoint_node, course.waypoint_km, strict=True
    ):
        if w.kind == "via":
            continue
        ax.plot(streets.x[node], streets.y[node], "o", color="black", markersize=5)
        ax.annotate(
            f"{w.name} ({km:.1f} km)",
            (streets.x[node], streets.y[node]),
            fontsize=8,
            xytext=(5, 5),
            textcoords="offset points",
        )
    xmin, ymin, xmax, ymax = streets.extent
    pad_x, pad_y = np.ptp(cx) * 0.15 + 300, np.ptp(cy) * 0.15 + 300
    ax.set_xlim(max(xmin, cx.min() - pad_x), min(xmax, cx.max() + pad_x))
    ax.set_ylim(max(ymin, cy.min() - pad_y), min(ymax, cy.max() + pad_y))
    ax.set_aspect("equal")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.set_xlabel("x (m, EPSG:31370)")
    ax.set_ylabel("y (m, EPSG:31370)")
    ax.set_title(f"{course.route.name}\n{streets.source.describe()}", fontsize=9)
    ax.legend(loc="lower right")
    return save(fig, dest, dpi=dpi)


def plot_crowd_map(
    base: MapBase,
    tables: RunTables,
    times: list[pd.Timestamp],
    dest: Path,
    *,
    dpi: int,
    labels: dict[pd.Timestamp, str] | None = None,
) -> Path | None:
    """The crowd (truth, people per grid tile) on the map at each of `times` (up to 4)."""
    grid = tables.grid()
    times = times[:4]
    if grid is None or not times:
        return None
    truth = tables.grid_truth(times)
    frames = (truth[truth["time"] == t] for t in times)
    images = [grid.raster(g["zone"], g["people"].to_numpy()) for g in frames]
    norm = _people_norm(images)
    cols = 2 if len(times) > 1 else 1
    rows = -(-len(times) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=base.figsize(cols, rows), squeeze=False, layout="constrained"
    )
    im = None
    for ax, t, image in zip(axes.ravel(), times, images, strict=False):
        base.draw(ax)
        im = _tile_image(ax, grid, image, norm)
        extra = f" ({labels[t]})" if labels and t in labels else ""
        ax.set_title(
            f"{t:%H:%M} {tables.timezone}{extra}: {int(np.nansum(image)):,} people", fontsize=9
        )
    for ax in axes.ravel()[len(times) :]:
        ax.set_visible(False)
    axes[0, 0].legend(loc="lower left", fontsize=7)
    assert im is not None  # at least one panel
    fig.colorbar(im, ax=axes, shrink=0.7, label=_tile_label(grid) + " (truth)")
    fig.suptitle("The crowd on the streets (ground truth)")
    return save(fig, dest, dpi=dpi)


def plot_peak_heatmaps(
    base: MapBase, tables: RunTables, peak: pd.Timestamp, dest: Path, *, dpi: int
) -> Path | None:
    """Truth beside each method's grid estimate at the peak bin, on one colour scale."""
    grid = tables.grid()
    if grid is None or not tables.grid_methods:
        return None
    truth = tables.grid_truth([peak])
    est = tables.grid_estimates([peak], methods=tables.grid_methods)
    panels = [("truth", grid.raster(truth["zone"], truth["people"].to_numpy()))]
    for method in tables.grid_methods:
        e = est[est["method"] == method]
        panels.append((method, grid.raster(e["zone"], e["estimate"].to_numpy())))
    norm = _people_norm([p[1] for p in panels])
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=base.figsize(cols, rows), squeeze=False, layout="constrained"
    )
    im = None
    for ax, (name, image) in zip(axes.ravel(), panels, strict=False):
        base.draw(ax, course=True)
        im = _tile_image(ax, grid, image, norm)
        title = "truth" if name == "truth" else f"{tables.grid_view} estimate: {name}"
        ax.set_title(f"{title} ({np.nansum(image):,.0f} people)", fontsize=9, color=TRUTH_COLOUR)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    assert im is not None  # the truth panel at least
    fig.colorbar(
        im, ax=axes, shrink=0.7, label=_tile_label(grid) + f" (blank below {BLANK_BELOW:g})"
    )
    fig.suptitle(
        f"Truth vs estimates at the peak, bin ending {peak:%H:%M} {tables.timezone}\n"
        + _view_note(tables)
    )
    return save(fig, dest, dpi=dpi)


def plot_los_map(
    base: MapBase,
    streets: Streets,
    worst: pd.DataFrame,
    places: pd.DataFrame,
    dense: pd.DataFrame,
    dest: Path,
    *,
    dpi: int,
    zoom_m: float = 700.0,
) -> Path | None:
    """Each street segment coloured by the worst Fruin level of service it reached.

    Over the whole window and zoomed on the worst place; worst places numbered (1, 2, ...)
    and densest places lettered (d1, d2, ...) as in the report's tables.

    `worst` has one row per street segment (edge, los); `places` and `dense` the ranked
    rows (edge, rank).
    """
    if worst.empty:
        return None
    fig, axes = plt.subplots(
        1, 2, figsize=(15, 8.2), layout="constrained", gridspec_kw={"width_ratios": [1.0, 1.0]}
    )
    for ax in axes:
        base.draw(ax, course=False)
        if base.course_xy is not None:
            ax.plot(
                base.course_xy[:, 0],
                base.course_xy[:, 1],
                color="0.3",
                lw=4.0,
                alpha=0.25,
                zorder=2,
                label="course",
            )
        for k, (level, colour) in enumerate(LOS_COLOURS.items()):
            edges = worst.loc[(worst["los"] == level).to_numpy(), "edge"].to_numpy(np.int64)
            if len(edges) == 0:
                continue
            ax.add_collection(
                street_lines(
                    street_segments(streets, edges),
                    colors=colour,
                    linewidths=0.5 if k == 0 else 1.2 + 0.6 * k,
                    alpha=0.55 if k == 0 else 1.0,
                    zorder=3 + k,
                    label=f"{level} ({len(edges):,} segments)",
                )
            )
        for frame, prefix, marker in ((places, "", "o"), (dense, "d", "s")):
            for _, row in frame.iterrows():
                e = int(row["edge"])
                x = (streets.x[streets.edge_u[e]] + streets.x[streets.edge_v[e]]) / 2
                y = (streets.y[streets.edge_u[e]] + streets.y[streets.edge_v[e]]) / 2
                ax.plot(x, y, marker, ms=4, color="black", zorder=11)
                ax.annotate(
                    f"{prefix}{int(row['rank'])}",
                    (x, y),
                    fontsize=7,
                    zorder=12,
                    fontweight="bold",
                    xytext=(3, 3),
                    textcoords="offset points",
                    clip_on=True,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.75, "lw": 0},
                )
    overall, zoom = axes
    overall.legend(loc="lower left", fontsize=8, title="worst level reached (Fruin)")
    overall.set_title("Whole window", fontsize=9)
    if not places.empty:
        e = int(places.iloc[0]["edge"])
        x = (streets.x[streets.edge_u[e]] + streets.x[streets.edge_v[e]]) / 2
        y = (streets.y[streets.edge_u[e]] + streets.y[streets.edge_v[e]]) / 2
        zoom.set_xlim(x - zoom_m, x + zoom_m)
        zoom.set_ylim(y - zoom_m, y + zoom_m)
        overall.add_patch(
            plt.Rectangle(
                (x - zoom_m, y - zoom_m),
                2 * zoom_m,
                2 * zoom_m,
                fill=False,
                ec="black",
                lw=1,
                zorder=13,
            )
        )
        zoom.set_title(f"Around the worst place (1), {2 * zoom_m / 1000:g} km wide", fontsize=9)
    fig.suptitle(
        "Worst walkway level of service reached on each street segment (Fruin: the worse "
        "of the flow and the density readings)"
    )
    return save(fig, dest, dpi=dpi)


def gif_times(
    tables: RunTables, *, frame_min: float = 10.0, max_frames: int = 48
) -> list[pd.Timestamp]:
    """Bin ends for the animation: one every `frame_min` minutes, at most `max_frames`."""
    times = tables.times()
    if len(times) == 0:
        return []
    span_min = (times[-1] - times[0]).total_seconds() / 60.0
    step = max(frame_min, span_min / max(max_frames - 1, 1))
    wanted = [times[0] + pd.Timedelta(minutes=step * k) for k in range(int(span_min // step) + 1)]
    return tables.nearest_times(wanted)


def write_afternoon_gif(
    base: MapBase,
    tables: RunTables,
    method: str,
    frames: list[pd.Timestamp],
    dest: Path,
    *,
    dpi: int = 80,
    frame_s: float = 0.6,
) -> Path | None:
    """Animated GIF: truth and `method`'s grid estimate side by side at each of `frames`.

    The map (streets, axes, colour bar) is drawn once; each frame redraws only the two
    rasters, the course over them and the clock (blitting), so a frame costs milliseconds.
    """
    from PIL import Image

    grid = tables.grid()
    if grid is None or not frames:
        return None
    truth = tables.grid_truth(frames)
    est = tables.grid_estimates(frames, methods=[method])
    t_images = {
        pd.Timestamp(t): grid.raster(g["zone"], g["people"].to_numpy())
        for t, g in truth.groupby("time")
    }
    e_images = {
        pd.Timestamp(t): grid.raster(g["zone"], g["estimate"].to_numpy())
        for t, g in est.groupby("time")
    }
    empty = np.full(grid.shape, np.nan)
    norm = _people_norm(list(t_images.values()) + list(e_images.values()))
    rows, cols = (2, 1) if base.aspect < 0.6 else (1, 2)  # wide windows stack
    fig, axes = plt.subplots(
        rows, cols, figsize=base.figsize(cols, rows, width=5.0), layout="constrained", dpi=dpi
    )
    ims, lines = [], []
    for ax, name in zip(axes, ("truth", f"estimate: {method}"), strict=True):
        lines.append(base.draw(ax))
        ims.append(_tile_image(ax, grid, empty, norm))
        ax.set_title(f"{name} (dark blue line: the course)\n" + (
            _view_note(tables) if name != "truth" else "ground truth"), fontsize=8)  # fmt: skip
    fig.colorbar(ims[0], ax=axes, shrink=0.8, label=_tile_label(grid))
    head = fig.suptitle(f"00:00 {tables.timezone}: truth vs {method} (people per tile)")
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)  # the Agg backend (sim.plotting)
    canvas.draw()  # lay out once, then freeze the layout
    fig.set_layout_engine("none")
    moving = [*ims, *(line for line in lines if line is not None), head]
    for artist in moving:
        artist.set_animated(True)
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    pictures = []
    for t in frames:
        for im, images in zip(ims, (t_images, e_images), strict=True):
            image = images.get(pd.Timestamp(t), empty)
            im.set_data(np.ma.masked_less(np.nan_to_num(image, nan=0.0), BLANK_BELOW))
        head.set_text(f"{t:%H:%M} {tables.timezone}: truth vs {method} (people per tile)")
        canvas.restore_region(background)
        for artist in moving:
            fig.draw_artist(artist)
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]
        pictures.append(Image.fromarray(rgb).quantize(colors=255, method=Image.Quantize.FASTOCTREE))
    plt.close(fig)
    durations = [int(frame_s * 1000)] * len(pictures)
    durations[-1] = int(frame_s * 4000)  # linger on the last frame before looping
    with atomic_path(dest) as tmp:
        pictures[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=pictures[1:],
            duration=durations,
            loop=0,
            optimize=False,
        )
    return dest


def _view_note(tables: RunTables) -> str:
    """Which estimates a grid map draws (the published view by default)."""
    if tables.grid_view == "published":
        return "estimates as published: suppressed tiles (below the threshold) left blank"
    return "internal estimates (this run has no separate published table)"
