"""The comparison's map: B − A peak density per street, crossings and cell sites."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.colors import CenteredNorm
from matplotlib.ticker import MaxNLocator

from sim.io import atomic_path
from sim.plotting import street_segments

from .walking import ACROSS_OFFSET_M, FREE_SPEED_MPS

if TYPE_CHECKING:
    from .comparison import Comparison

__all__ = ["cut_middle", "plot_comparison"]


def plot_comparison(comparison: Comparison, dest: Path, *, dpi: int = 110) -> Path:
    """Map of B − A peak density per street, and walking times across the course."""
    streets, course = comparison.streets, comparison.course_a
    fig = plt.figure(figsize=(15, 9.5), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[1.7, 1])
    ax = fig.add_subplot(grid[0, 0])
    keep = streets.edge_u < streets.edge_v
    base = street_segments(streets, np.flatnonzero(keep))
    ax.add_collection(LineCollection(base, colors="0.8", linewidths=0.4, zorder=1))
    cx, cy = streets.x[course.nodes], streets.y[course.nodes]
    ax.plot(cx, cy, color="0.2", linewidth=6, alpha=0.25, solid_capstyle="round", zorder=2,
            label=f"course of A ({course.length_m / 1000:.1f} km)")  # fmt: skip
    ep = comparison.edge_peak
    changed = ep[ep["difference"] != 0].sort_values("difference", key=np.abs)
    half = float(changed["difference"].abs().max()) if len(changed) else 0.0
    norm = CenteredNorm(vcenter=0.0, halfrange=max(half, 1e-3))
    lines = LineCollection(
        street_segments(streets, changed["edge"].to_numpy()),
        cmap="RdBu_r",
        norm=norm,
        linewidths=2.4,
        zorder=3,
    )
    lines.set_array(changed["difference"].to_numpy())
    ax.add_collection(lines)
    bar = fig.colorbar(
        lines,
        ax=ax,
        location="bottom",
        shrink=0.7,
        aspect=40,
        label="peak density per street, B − A (persons/m²): red denser in B, blue denser in A",
    )
    bar.ax.xaxis.set_major_locator(MaxNLocator(7, symmetric=True))
    cr = comparison.crossings
    style = {  # (in A, in B): face colour, legend label
        (True, True): ("gold", "crossing point"),
        (True, False): ("white", "crossing point of A only (removed in B)"),
        (False, True): ("limegreen", "crossing point of B only (added in B)"),
    }
    shown: set[tuple[bool, bool]] = set()
    for i, row in enumerate(cr.itertuples()):
        key = (bool(row.in_a), bool(row.in_b))
        face, label = style[key]
        ax.plot(row.x, row.y, marker="o", markersize=14, color=face, markeredgecolor="black",
                linestyle="none", zorder=4, label=None if key in shown else label)  # fmt: skip
        shown.add(key)
        ax.annotate(str(i + 1), (row.x, row.y), ha="center", va="center", fontsize=8,
                    fontweight="bold", zorder=5)  # fmt: skip
    _plot_sites(ax, comparison.sites)
    if changed.empty:
        ax.text(0.02, 0.02, "no street's peak density changed", transform=ax.transAxes,
                fontsize=9, bbox={"boxstyle": "round", "fc": "white", "alpha": 0.9})  # fmt: skip
    for w, node in zip(course.route.waypoints, course.waypoint_node, strict=True):
        if w.kind in ("start", "finish"):
            ax.plot(streets.x[node], streets.y[node], "s", color="black", markersize=7, zorder=4)
            ax.annotate(w.kind, (streets.x[node], streets.y[node]), fontsize=9, zorder=5,
                        xytext=(7, 7), textcoords="offset points",
                        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})  # fmt: skip
    # a square view around the course, so long thin courses keep a readable map
    half_side = max(np.ptp(cx), np.ptp(cy)) * 0.56 + 250.0
    mx, my = (cx.min() + cx.max()) / 2.0, (cy.min() + cy.max()) / 2.0
    ax.set_xlim(mx - half_side, mx + half_side)
    ax.set_ylim(my - half_side, my + half_side)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, EPSG:31370)")
    ax.set_ylabel("y (m, EPSG:31370)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(
        "Peak density per street (B − A), rejections per cell site near the course,\n"
        "numbered crossing points",
        fontsize=10,
    )

    bars = fig.add_subplot(grid[0, 1])
    n = len(cr)
    if n:
        pos = np.arange(n)
        a_min, b_min = cr["run_a"].to_numpy(), cr["run_b"].to_numpy()
        bars.barh(pos - 0.19, np.nan_to_num(a_min), height=0.36, color="0.6", label="A")
        bars.barh(pos + 0.19, np.nan_to_num(b_min), height=0.36, color="tab:red", label="B")
        for p, x_a, x_b, d in zip(pos, a_min, b_min, cr["difference"], strict=True):
            text = "n/a" if not np.isfinite(d) else f"{d:+.1f} min"
            right = np.nanmax([x_a, x_b, 0.0])
            weight = "bold" if d > 0.05 else "normal"
            bars.annotate(text, (right, p), xytext=(4, 0), textcoords="offset points",
                          va="center", fontsize=9, fontweight=weight)  # fmt: skip
        labels = [f"{i + 1}. {cut_middle(name, 44)}" for i, name in enumerate(cr["name"])]
        bars.set_yticks(pos, labels, fontsize=7.5)
        bars.set_ylim(max(n, 8) - 0.5, -0.5)  # bars keep their height with few crossings
        top = np.nanmax([*a_min, *b_min, 1.0])
        bars.set_xlim(0, top * 1.35)
        bars.legend(loc="lower right", fontsize=8)
    else:
        bars.text(0.5, 0.5, "no crossing points", ha="center", va="center",
                  transform=bars.transAxes)  # fmt: skip
        bars.set_yticks([])
    bars.set_xlabel(f"minutes at {FREE_SPEED_MPS} m/s (course closed)")
    bars.set_title(
        f"Walk across the course at each crossing point\n"
        f"({ACROSS_OFFSET_M:g} m one side to {ACROSS_OFFSET_M:g} m the other side)",
        fontsize=10,
    )
    fig.suptitle(
        f"crowdsim compare — A: {comparison.run_a.label}   B: {comparison.run_b.label}\n"
        f"streets: {streets.source.describe()}",
        fontsize=10,
    )
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return dest


def _plot_sites(ax: Any, sites: pd.DataFrame) -> None:
    """Cell sites near the course whose rejections changed (triangles sized by the change)
    and B's temporary event sites (stars)."""
    changed = sites[sites["difference"] != 0]
    top = float(changed["difference"].abs().max()) if len(changed) else 1.0
    for sign, marker, colour, label in (
        (1, "^", "tab:red", "cell site: more rejections in B"),
        (-1, "v", "tab:blue", "cell site: fewer rejections in B"),
    ):
        part = changed[np.sign(changed["difference"]) == sign]
        if len(part):
            size = 25.0 + 175.0 * np.sqrt(part["difference"].abs() / top)
            ax.scatter(part["x"], part["y"], s=size, marker=marker, color=colour, alpha=0.8,
                       edgecolors="black", linewidths=0.5, zorder=6, label=label)  # fmt: skip
    temporary = sites[sites["temporary_b"]]
    if len(temporary):
        ax.scatter(temporary["x"], temporary["y"], s=260, marker="*", color="magenta",
                   edgecolors="black", linewidths=0.7, zorder=7,
                   label="temporary event cell site of B")  # fmt: skip


def cut_middle(text: str, width: int) -> str:
    """Shorten `text` in the middle, keeping its end (crossing names end with their km)."""
    if len(text) <= width:
        return text
    tail = max(width // 3, 1)
    return text[: width - tail - 1] + "…" + text[-tail:]
