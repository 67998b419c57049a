"""Shared figure plumbing: the Agg backend, atomic saving, local-time axes, method colours.

Every figure of the report goes through :func:`save`, so none is left half written, and
every time axis through :func:`local_time_axis`, so all read in the event's local time.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sim.io import atomic_path

__all__ = ["METHOD_COLOURS", "TRUTH_COLOUR", "local_time_axis", "method_colour", "save"]

TRUTH_COLOUR = "black"
#: One colour per estimator, the same in every figure.
METHOD_COLOURS = {
    "presence": "tab:purple",
    "voronoi": "tab:blue",
    "bayes": "tab:orange",
    "em": "tab:green",
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


def method_colour(method: str) -> str:
    """The colour of `method` (grey for a method not listed)."""
    return METHOD_COLOURS.get(method, "tab:gray")


def local_time_axis(ax: Axes, timezone: str, *, label: bool = True) -> None:
    """Label the x axis with clock times (HH:MM) in `timezone`."""
    locator = mdates.AutoDateLocator(tz=timezone, minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone))
    if label:
        ax.set_xlabel(f"local time ({timezone})")


def save(fig: Figure, dest: Path, *, dpi: int) -> Path:
    """Write `fig` as a PNG to `dest` atomically, close it and return `dest`."""
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return dest
