"""Densities and Fruin levels of service on the streets.

The worst moment of each street segment, the worst places of the run, and how crowding
develops over the afternoon.

Reads ``truth_edges.parquet`` (one row per street segment and bin with somebody on it):
the level of service there is the worse of Fruin's walkway level from the flow per metre
of usable width per minute (A < 23, B < 33, C < 49, D < 66, E < 82, F >= 82) and from
the space per person (A >= 3.3, B >= 2.3, C >= 1.4, D >= 0.9, E >= 0.46, F below, m²;
DESIGN §3), so a standing jam reads F.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sim.crowd.movement import FRUIN_LIMITS
from sim.plotting import LOS_COLOURS, local_time_axis, save

from .tables import RunTables

if TYPE_CHECKING:
    from sim.course import Course
    from sim.streets import Streets

__all__ = ["EDGE_COLUMNS", "plot_densities", "worst_per_edge", "worst_places"]

EDGE_COLUMNS = ["time", "edge", "persons", "density", "flow_pmm", "los"]
LEVELS = "ABCDEF"
#: Densities (persons/m2) where Fruin's walkway levels B, C, D, E and F begin (area per
#: pedestrian 3.25, 2.32, 1.39, 0.93 and 0.46 m2; Fruin 1971, as in the HCM). The truth's
#: level of service is the worse of the flow and the density readings.
DENSITY_LIMITS = (0.31, 0.43, 0.72, 1.08, 2.17)


def worst_per_edge(edges: pd.DataFrame) -> pd.DataFrame:
    """The worst bin of each street segment.

    Its worst level of service, at the highest flow among the bins at that level (the
    first bin reaching it), and apart from it its highest density and when.

    Returns one row per edge: edge, time, flow_pmm, los, persons, peak_density,
    peak_density_time. Grouped by integer codes (``groupby().idxmax()``), linear in rows.
    """
    columns = ["edge", "time", "flow_pmm", "los", "persons", "peak_density",
               "peak_density_time"]  # fmt: skip
    if edges.empty:
        return pd.DataFrame(columns=columns)
    codes, _ = pd.factorize(edges["edge"].to_numpy(np.int64))
    # the level (from flow and density, in the truth) first, then the flow within it
    score = edges["los"].cat.codes.to_numpy(np.float64) * 1e6 + edges["flow_pmm"].to_numpy(
        np.float64
    )
    at_flow = pd.Series(score).groupby(codes).idxmax()
    at_dens = pd.Series(edges["density"].to_numpy(np.float64)).groupby(codes).idxmax()
    worst = edges.iloc[at_flow.to_numpy()]
    dense = edges.iloc[at_dens.to_numpy()]  # the same edges, in the same order
    return pd.DataFrame(
        {
            "edge": worst["edge"].to_numpy(np.int64),
            "time": worst["time"].reset_index(drop=True),
            "flow_pmm": worst["flow_pmm"].to_numpy(np.float64),
            "los": worst["los"].astype(str).to_numpy(),
            "persons": worst["persons"].to_numpy(np.float64),
            "peak_density": dense["density"].to_numpy(np.float64),
            "peak_density_time": dense["time"].reset_index(drop=True),
        }
    )[columns]


def worst_places(
    worst: pd.DataFrame,
    *,
    streets: Streets | None,
    course: Course | None,
    n: int = 10,
    by: str = "flow",
) -> pd.DataFrame:
    """The `n` worst street segments, described.

    Worst by peak flow (``by="flow"``, which sets the level of service) or by peak density
    (``by="density"``).

    Columns: rank, edge, street, width_m, course_km, course_dist_m, los, flow_pmm, time,
    persons, peak_density, peak_density_time.
    """
    if worst.empty:
        return worst.assign(rank=[])
    key = ["peak_density", "flow_pmm"] if by == "density" else ["flow_pmm", "peak_density"]
    top = worst.sort_values(key, ascending=False).head(n).copy()
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    e = top["edge"].to_numpy(np.int64)
    if streets is not None:
        names = [_street_name(streets.name[i]) for i in e]
        top["street"] = names
        top["width_m"] = streets.width[e]
        x = (streets.x[streets.edge_u[e]] + streets.x[streets.edge_v[e]]) / 2
        y = (streets.y[streets.edge_u[e]] + streets.y[streets.edge_v[e]]) / 2
        if course is not None:
            from scipy.spatial import cKDTree

            cx, cy = streets.x[course.nodes], streets.y[course.nodes]
            dist, idx = cKDTree(np.column_stack([cx, cy])).query(np.column_stack([x, y]))
            top["course_km"] = course.cum_m[idx] / 1000.0
            top["course_dist_m"] = dist
    return top


def _street_name(value: object) -> str:
    if isinstance(value, list | tuple):
        value = " / ".join(str(v) for v in value)
    text = "" if value is None else str(value)
    return text if text and text != "nan" else "(unnamed street)"


def plot_densities(
    tables: RunTables,
    edges: pd.DataFrame,
    dest: Path,
    *,
    dpi: int,
    lengths: np.ndarray | None,
) -> Path | None:
    """Crowding over time.

    The highest flow per metre (against Fruin's levels), the highest density, and the
    length of street at each level of service worse than A.
    """
    if edges.empty:
        return None
    ti, times = pd.factorize(edges["time"], sort=True)
    t = pd.DatetimeIndex(times)
    flow = edges["flow_pmm"].to_numpy(np.float64)
    dens = edges["density"].to_numpy(np.float64)
    n_t = len(t)
    max_flow = pd.Series(flow).groupby(ti).max().reindex(range(n_t), fill_value=0).to_numpy()
    max_dens = pd.Series(dens).groupby(ti).max().reindex(range(n_t), fill_value=0).to_numpy()
    order = np.lexsort((dens, ti))  # per bin, the 99th percentile of occupied segments
    counts = np.bincount(ti, minlength=n_t)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    p99 = dens[order][np.minimum(starts + np.floor(0.99 * (counts - 1)).astype(int), len(dens) - 1)]
    level = edges["los"].cat.codes.to_numpy()  # the truth writes levels A-F as categories
    weight = (
        lengths[edges["edge"].to_numpy(np.int64)] / 1000.0
        if lengths is not None
        else np.ones(len(edges))
    )
    per_level = np.bincount(
        np.asarray(level, np.int64) * n_t + ti, weights=weight, minlength=len(LEVELS) * n_t
    ).reshape(len(LEVELS), n_t)

    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True, layout="constrained")
    a_flow, a_dens, a_len = axes
    bounds = [0.0, *FRUIN_LIMITS.tolist(), max(100.0, float(max_flow.max()) * 1.1)]
    top = max(30.0, float(max_flow.max()) * 1.15)
    for k, lvl in enumerate(LEVELS):
        if bounds[k] < top:
            a_flow.axhspan(
                bounds[k], min(bounds[k + 1], top), color=LOS_COLOURS[lvl], alpha=0.25, lw=0
            )
            a_flow.text(
                1.005,
                (bounds[k] + min(bounds[k + 1], top)) / 2,
                lvl,
                fontsize=8,
                va="center",
                transform=a_flow.get_yaxis_transform(),
            )
    a_flow.plot(t, max_flow, color="black", lw=1.3, label="highest street segment")
    a_flow.set_ylim(0, top)
    a_flow.set_ylabel("persons / m / min")
    a_flow.set_title(
        "Highest flow per metre of usable width, with Fruin's walkway levels "
        "of service A-F (bands)",
        fontsize=9,
    )
    a_flow.legend(fontsize=8, loc="upper left")
    a_dens.plot(t, max_dens, color="tab:red", lw=1.3, label="highest street segment")
    a_dens.plot(
        t, p99, color="tab:red", lw=1, ls="--", label="99th percentile of occupied segments"
    )
    top_dens = max(0.5, float(max_dens.max()) * 1.1)
    for lvl, limit in zip(LEVELS[1:], DENSITY_LIMITS, strict=True):
        if limit < top_dens:
            a_dens.axhline(limit, color=LOS_COLOURS[lvl], lw=1, ls=":")
            a_dens.text(
                1.005,
                limit,
                f"{lvl}",
                fontsize=8,
                va="center",
                transform=a_dens.get_yaxis_transform(),
            )
    a_dens.set_ylabel("persons / m²")
    a_dens.set_ylim(0, top_dens)
    a_dens.set_title(
        "Density on the streets (mean over each bin); dotted: where Fruin's walkway "
        "levels B-F begin by density, for reference",
        fontsize=9,
    )
    a_dens.legend(fontsize=8, loc="upper left")
    worse = per_level[1:]
    if worse.sum() > 0:
        a_len.stackplot(
            t,
            worse,
            colors=[LOS_COLOURS[lvl] for lvl in LEVELS[1:]],
            labels=[f"level {lvl}" for lvl in LEVELS[1:]],
        )
        a_len.legend(fontsize=8, loc="upper left", ncol=5)
    else:
        a_len.text(
            0.5,
            0.5,
            "every occupied street segment stayed at level A (free flow)",
            transform=a_len.transAxes,
            ha="center",
            va="center",
            fontsize=9,
        )
    unit = "km of street" if lengths is not None else "street segments"
    a_len.set_ylabel(unit)
    a_len.set_ylim(bottom=0)
    a_len.set_title(f"Street at each level of service worse than A ({unit})", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        local_time_axis(ax, tables.timezone, label=ax is a_len)
    fig.suptitle("Densities and levels of service on the streets (truth)")
    return save(fig, dest, dpi=dpi)
