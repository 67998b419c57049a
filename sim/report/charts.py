"""Charts over time and against the truth.

Counts per area and segment with intervals, estimate vs truth, error over time, and the
signalling load of the cells.

Every chart reads the tables of :class:`~.tables.RunTables` (local time, bin ends), is
vectorised over zones and bins (pivots and NumPy reductions, no loop over rows), and
labels its axes with units and the event's local time.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from sim.plotting import TRUTH_COLOUR, local_time_axis, method_colour, save

from .tables import RunTables

__all__ = [
    "joined_small",
    "plot_cell_load",
    "plot_error_over_time",
    "plot_scatter",
    "plot_time_series",
]


def joined_small(tables: RunTables) -> pd.DataFrame:
    """Area and segment estimates with the truth of the same zone and bin beside them.

    Columns: method, zone_system, zone, time, estimate, lower, upper, truth.
    """
    if tables.estimates is None or tables.truth is None:
        return pd.DataFrame(
            columns=["method", "zone_system", "zone", "time", "estimate", "lower", "upper", "truth"]
        )
    truth = tables.truth.rename(columns={"system": "zone_system", "people": "truth"})
    out = tables.estimates.merge(
        truth[["zone_system", "zone", "time", "truth"]],
        on=["zone_system", "zone", "time"],
        how="left",
    )
    return out.assign(truth=out["truth"].fillna(0.0).astype(float))


def _segment_km(zone: str) -> float:
    try:
        return float(zone.removeprefix("km").split("-")[0])
    except ValueError:
        return float("nan")


def _panels(tables: RunTables) -> list[tuple[str, str, list[str]]]:
    """(title, system, zones summed) per panel.

    Start and finish areas first, the other areas, all course segments together, then the
    two busiest segments.
    """
    assert tables.truth is not None
    areas = list(dict.fromkeys(tables.truth.loc[tables.truth["system"] == "area", "zone"]))

    def rank(name: str) -> int:
        low = name.lower()
        return 0 if "start" in low else 1 if "finish" in low else 2

    panels = [(a, "area", [a]) for a in sorted(areas, key=rank)[:6]]
    seg = tables.truth[tables.truth["system"] == "segment"]
    if not seg.empty:
        zones = sorted(seg["zone"].unique(), key=_segment_km)
        panels.append((f"all {len(zones)} course segments together", "segment", zones))
        busiest = seg.groupby("zone")["spectators"].max().sort_values(ascending=False)
        for zone in busiest.index[:2]:
            panels.append((f"course segment {zone} (busiest)", "segment", [zone]))
    return panels


def plot_time_series(  # noqa: C901 - one panel per area and segment group, each optional
    tables: RunTables, dest: Path, *, dpi: int
) -> Path | None:
    """Truth and each method's estimate with its interval, per named area and segment.

    A panel of several course segments sums them, intervals summed too.
    """
    if tables.truth is None or tables.truth.empty:
        return None
    panels = _panels(tables)
    if not panels:
        return None
    est = tables.estimates if tables.estimates is not None else pd.DataFrame()
    methods = list(dict.fromkeys(est["method"])) if not est.empty else []
    cols = 3 if len(panels) > 4 else 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(5.2 * cols, 3.3 * rows),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    for ax, (title, system, zones) in zip(axes.ravel(), panels, strict=False):
        t = tables.truth[(tables.truth["system"] == system) & tables.truth["zone"].isin(zones)]
        truth = t.groupby("time")["people"].sum()
        ax.plot(truth.index, truth.to_numpy(), color=TRUTH_COLOUR, lw=2, label="truth", zorder=5)
        if not est.empty:
            e = est[(est["zone_system"] == system) & est["zone"].isin(zones)]
            sums = e.groupby(["method", "time"])[["estimate", "lower", "upper"]].sum()
            for method in methods:
                if method not in sums.index.get_level_values(0):
                    continue
                s = sums.loc[method]
                colour = method_colour(method)
                ax.fill_between(s.index, s["lower"], s["upper"], color=colour, alpha=0.15, lw=0)
                ax.plot(s.index, s["estimate"], color=colour, lw=1.1, label=method)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("people", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        local_time_axis(ax, tables.timezone, label=False)
        ax.tick_params(labelbottom=True)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    for col in range(cols):  # the lowest panel of each column names the axis
        shown = [ax for ax in axes[:, col] if ax.get_visible()]
        if shown:
            shown[-1].set_xlabel(f"local time ({tables.timezone})", fontsize=8)
    handles: list[Artist] = [Line2D([], [], color=TRUTH_COLOUR, lw=2, label="truth")]
    handles += [
        Line2D([], [], color=method_colour(m), lw=1.1, label=f"{m} estimate") for m in methods
    ]
    if methods:
        handles.append(Patch(color="0.5", alpha=0.3, label="interval [lower, upper]"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9)
    fig.suptitle(
        "Named areas and course segments: truth vs estimates (before privacy suppression), per bin",
        fontsize=11,
    )
    return save(fig, dest, dpi=dpi)


def plot_scatter(
    joined: pd.DataFrame,
    dest: Path,
    *,
    dpi: int,
    floor: float | None = None,
    max_points: int = 20_000,
) -> Path | None:
    """Estimate vs truth per method, one point per zone and bin (areas and segments).

    `floor` is the validation's MAPE floor (zone-bins with at least this many people
    enter relative errors), read from the run's facts; without it (a run not scored)
    the panels give the correlation only.
    """
    if joined.empty:
        return None
    methods = list(dict.fromkeys(joined["method"]))
    fig, axes = plt.subplots(
        1, len(methods), figsize=(4.4 * len(methods), 4.6), squeeze=False, layout="constrained"
    )
    top = float(max(joined["truth"].max(), joined["estimate"].max(), 10.0)) * 1.3
    for ax, method in zip(axes[0], methods, strict=True):
        m = joined[joined["method"] == method]
        for system, marker, colour in (
            ("segment", "o", method_colour(method)),
            ("area", "^", "black"),
        ):
            s = m[m["zone_system"] == system]
            if s.empty:
                continue
            step = max(1, len(s) // max_points)  # every k-th point: bounded and reproducible
            s = s.iloc[::step]
            ax.scatter(
                s["truth"],
                s["estimate"],
                s=6 if system == "segment" else 12,
                marker=marker,
                color=colour,
                alpha=0.35,
                linewidths=0,
                label=f"{'course segments' if system == 'segment' else 'named areas'}"
                f" ({len(s):,} zone-bins)",
            )
        ax.plot([0, top], [0, top], color="0.3", lw=1, ls="--", label="estimate = truth")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_yscale("symlog", linthresh=10)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal")
        r = np.corrcoef(m["truth"], m["estimate"])[0, 1] if len(m) > 2 else float("nan")
        title = f"{method}: r = {r:.2f}"
        if floor is not None:
            big = m[m["truth"] >= floor]
            mape = float((np.abs(big["estimate"] - big["truth"]) / big["truth"]).mean())
            title += f", MAPE {mape:.0%} (truth ≥ {floor:g})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("truth (people; symmetric log, linear below 10)", fontsize=8)
        ax.set_ylabel("estimate (people)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Estimate vs truth per zone and bin")
    return save(fig, dest, dpi=dpi)


def plot_error_over_time(
    tables: RunTables, joined: pd.DataFrame, dest: Path, *, dpi: int
) -> Path | None:
    """Error per bin, three ways.

    Mean absolute error on the course segments, relative error of the total along the
    course, and the Kantorovich-Wasserstein distance on the grid.
    """
    seg = joined[joined["zone_system"] == "segment"] if not joined.empty else joined
    mb = tables.metrics_bins
    if seg.empty and (mb is None or mb.empty):
        return None
    fig, axes = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True, layout="constrained")
    a_mae, a_tot, a_kwd = axes
    if not seg.empty:
        err = seg.assign(abs_err=(seg["estimate"] - seg["truth"]).abs())
        g = err.groupby(["method", "time"])["abs_err"].mean()
        for method in dict.fromkeys(seg["method"]):
            s = g.loc[method]
            a_mae.plot(s.index, s, color=method_colour(method), lw=1.2, label=method)
    if mb is not None and not mb.empty:  # validation's own per-bin error of the total
        tot = mb[mb["zone_system"] == "segment"]
        for method, s in tot.groupby("method", sort=False):
            colour = method_colour(str(method))
            a_tot.plot(s["time"], 100 * s["total_error"], color=colour, lw=1.2, label=method)
    a_mae.set_ylabel("people per segment")
    a_mae.set_title("Mean absolute error over the course segments", fontsize=9)
    a_tot.axhline(0, color="0.3", lw=0.8)
    a_tot.set_ylabel("% of the true total")
    a_tot.set_title("Error of the total along the course (all segments summed)", fontsize=9)
    if mb is not None and not mb.empty and "kwd_m" in mb:
        k = mb[(mb["zone_system"] == "grid") & mb["kwd_m"].notna()]
        for method, s in k.groupby("method", sort=False):
            a_kwd.plot(
                s["time"],
                s["kwd_m"],
                "o-",
                ms=3,
                lw=1,
                color=method_colour(str(method)),
                label=str(method),
            )
    a_kwd.set_ylabel("metres")
    a_kwd.set_title(
        "Kantorovich-Wasserstein distance between estimated and true spatial "
        "distributions (grid; bins where computed)",
        fontsize=9,
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
        local_time_axis(ax, tables.timezone, label=ax is a_kwd)
    a_mae.set_ylim(bottom=0)
    a_kwd.set_ylim(bottom=0)
    fig.suptitle("Error over time, per bin")
    return save(fig, dest, dpi=dpi)


def plot_cell_load(
    tables: RunTables, dest: Path, *, dpi: int, capacity: int | None, busiest: int = 30
) -> Path | None:
    """Signalling load per minute.

    Connected users per cell (spread over the cells, with the capacity), MME messages of
    the busiest cells, and rejected requests.
    """
    cl = tables.cell_load
    if cl is None or cl.empty:
        return None
    ti, times = pd.factorize(cl["time"], sort=True)
    ci, cells = pd.factorize(cl["cell_id"], sort=True)
    shape = (len(times), len(cells))

    def grid_of(column: str) -> np.ndarray:
        out = np.zeros(shape)
        out[ti, ci] = cl[column].to_numpy(np.float64)
        return out

    users, messages, rejected = (
        grid_of("connected_users"),
        grid_of("messages"),
        grid_of("rejections"),
    )
    t = pd.DatetimeIndex(times)
    fig, axes = plt.subplots(
        3,
        1,
        figsize=(10, 10),
        sharex=True,
        layout="constrained",
        gridspec_kw={"height_ratios": [1, 1.3, 0.8]},
    )
    a_users, a_msg, a_rej = axes
    for q, style in ((100, "-"), (99, "--"), (50, ":")):
        label = (
            "busiest cell"
            if q == 100
            else f"{q}th percentile of cells"
            if q != 50
            else ("median cell")
        )
        a_users.plot(
            t, np.percentile(users, q, axis=1), ls=style, color="tab:blue", lw=1.3, label=label
        )
    busiest_users = float(users.max()) if users.size else 0.0
    top_users = max(10.0, busiest_users * 1.25)
    cap_note = ""
    if capacity is not None and capacity <= 3 * top_users:
        top_users = max(top_users, capacity * 1.1)
        a_users.axhline(
            capacity,
            color="tab:red",
            lw=1.6,
            ls=(0, (4, 3)),
            zorder=1,
            label=f"capacity ({capacity} per cell)",
        )
    elif capacity is not None:
        cap_note = f"; capacity {capacity} per cell, off the scale"
    a_users.set_ylabel("RRC-connected users")
    a_users.set_title(f"Connected users per cell ({len(cells):,} cells{cap_note})", fontsize=9)
    a_users.set_ylim(0, top_users)
    a_users.legend(fontsize=8, loc="upper left")
    top = np.argsort(messages.sum(axis=0))[::-1][:busiest]
    block = messages[:, top].T
    positive = block[block > 0]
    norm = LogNorm(
        vmin=max(1.0, float(positive.min()) if positive.size else 1.0),
        vmax=max(2.0, float(block.max())),
    )
    dnum = plt.matplotlib.dates.date2num(t.to_pydatetime())
    step = np.median(np.diff(dnum)) if len(dnum) > 1 else 1 / 1440
    im = a_msg.imshow(
        np.ma.masked_less_equal(block, 0),
        aspect="auto",
        origin="upper",
        cmap="viridis",
        norm=norm,
        interpolation="nearest",
        extent=(dnum[0], dnum[-1] + step, len(top), 0),
    )
    a_msg.set_yticks(np.arange(len(top)) + 0.5, [str(c) for c in cells[top]], fontsize=6)
    a_msg.set_ylabel("cell id (busiest first)")
    a_msg.set_title(f"MME signalling messages per minute, the {len(top)} busiest cells", fontsize=9)
    fig.colorbar(
        im, ax=axes, label="messages per minute (middle panel)", shrink=0.4, pad=0.01
    )  # over every panel: the time axes stay aligned
    total_rej = rejected.sum(axis=1)
    a_rej.bar(t, total_rej, width=step * 0.9, color="tab:red", label="rejected requests")
    a_rej.set_ylabel("rejections per minute")
    cells_rej = (rejected > 0).sum(axis=1)
    if total_rej.sum() > 0:
        twin = a_rej.twinx()
        twin.plot(t, cells_rej, color="0.3", lw=1, label="cells rejecting")
        twin.set_ylabel("cells rejecting", fontsize=8)
        twin.set_ylim(bottom=0, top=int(cells_rej.max()) + 1)
        h1, l1 = a_rej.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        a_rej.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    else:
        a_rej.text(
            0.5,
            0.5,
            "no request was rejected: no cell reached its capacity",
            transform=a_rej.transAxes,
            ha="center",
            va="center",
            fontsize=9,
        )
        a_rej.set_ylim(0, 1)
    a_rej.set_title(
        f"Rejected requests (over capacity): {int(total_rej.sum()):,} in all", fontsize=9
    )
    for ax in axes:
        ax.tick_params(labelsize=8)
        local_time_axis(ax, tables.timezone, label=ax is a_rej)
    a_users.set_xlim(dnum[0], dnum[-1] + step)
    a_users.grid(alpha=0.3)
    fig.suptitle("Signalling load of the estimating operator's cells, per minute")
    return save(fig, dest, dpi=dpi)


def plot_course_crowd(tables: RunTables, dest: Path, *, dpi: int) -> Path | None:
    """Heat map of spectators per course segment (rows: km) and bin (columns)."""
    if tables.truth is None:
        return None
    seg = tables.truth[tables.truth["system"] == "segment"]
    if seg.empty:
        return None
    table = seg.pivot_table(
        index="zone", columns="time", values="spectators", fill_value=0, aggfunc="sum"
    )
    table = table.iloc[np.argsort([_segment_km(z) for z in table.index])]
    times = pd.DatetimeIndex(table.columns)
    dnum = plt.matplotlib.dates.date2num(times.to_pydatetime())
    step = float(np.median(np.diff(dnum))) if len(dnum) > 1 else 1 / 1440
    fig, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
    im = ax.imshow(
        table.to_numpy(),
        aspect="auto",
        origin="lower",
        cmap="magma",
        interpolation="nearest",
        extent=(dnum[0] - step, dnum[-1], 0, len(table)),
    )
    ax.xaxis_date()
    yt = np.linspace(0, len(table) - 1, min(12, len(table))).astype(int)
    ax.set_yticks(yt + 0.5, [str(table.index[i]) for i in yt], fontsize=7)
    local_time_axis(ax, tables.timezone)
    ax.set_ylabel("course segment (km from the start)")
    ax.set_title("Spectators along the course over the afternoon (truth)")
    fig.colorbar(im, ax=ax, label="spectators in the segment (truth)")
    return save(fig, dest, dpi=dpi)
