"""The study's figures, drawn with the figure kit (:mod:`sim.plotting`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from sim.plotting import TRUTH_COLOUR, local_time_axis, method_colour, save
from validation.metrics import GRID_ONLY, SYSTEMS
from validation.study.summary import HEADLINE

__all__ = ["plot_kwd_literature", "plot_metrics", "plot_segment_totals"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _variant_styles(variants: list[str], methods: dict[str, str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per variant: the method's colour; variants of one method by marker."""
    seen: dict[str, int] = {}
    out = {}
    for v in variants:
        m = methods.get(v, v)
        out[v] = (method_colour(m), _MARKERS[seen.get(m, 0) % len(_MARKERS)])
        seen[m] = seen.get(m, 0) + 1
    return out


def plot_metrics(
    metrics: pd.DataFrame,
    *,
    scenario: str,
    title: str,
    variants: list[str],
    methods: dict[str, str],
    dest: Path,
    nominal: float | None = None,
    dpi: int = 110,
) -> Path:
    """Each headline metric per zone system: one dot per seed, median and quartiles.

    Rows are the metrics of :data:`~validation.study.summary.HEADLINE`, columns the zone
    systems; a grid-only metric leaves its other panels empty.
    """
    table = metrics[(metrics["scenario"] == scenario) & metrics["variant"].isin(variants)]
    styles = _variant_styles(variants, methods)
    rows, cols = list(HEADLINE), list(SYSTEMS)
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(3.6 * len(cols), 2.1 * len(rows)), squeeze=False
    )
    rng = np.random.default_rng(0)  # the dots' sideways jitter only, not data
    for i, metric in enumerate(rows):
        for j, system in enumerate(cols):
            ax = axes[i, j]
            if metric in GRID_ONLY and system != "grid":
                ax.set_axis_off()
                continue
            sub = table[(table["metric"] == metric) & (table["zone_system"] == system)]
            _seed_dots(ax, sub, variants, styles, rng)
            if metric == "coverage" and nominal is not None:
                ax.axhline(nominal, color="grey", ls="--", lw=0.8)
            if metric == "bias":
                ax.axhline(0.0, color="grey", ls="--", lw=0.8)
            ax.set_xticks(range(len(variants)))
            ax.set_xticklabels(variants if i == len(rows) - 1 else [], rotation=30, ha="right")
            if metric in ("mape", "coverage"):
                ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
            if i == 0:
                ax.set_title(system)
            if j == 0:
                ax.set_ylabel(HEADLINE[metric])
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: one dot per seed; bar = interquartile range, tick = median")
    fig.tight_layout()
    return save(fig, dest, dpi=dpi)


def _seed_dots(
    ax: Axes,
    sub: pd.DataFrame,
    variants: list[str],
    styles: dict[str, tuple[str, str]],
    rng: np.random.Generator,
) -> None:
    """One dot per seed at each variant's x, its quartiles as a bar, its median a tick."""
    for k, variant in enumerate(variants):
        values = sub.loc[sub["variant"] == variant, "value"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        colour, marker = styles[variant]
        x = k + rng.uniform(-0.15, 0.15, values.size)
        ax.scatter(x, values, s=12, color=colour, marker=marker, alpha=0.6, lw=0)
        q25, med, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        ax.vlines(k + 0.3, q25, q75, color=colour, lw=3)
        ax.hlines(med, k + 0.18, k + 0.42, color="black", lw=1.5)


def plot_segment_totals(
    bins: pd.DataFrame,
    *,
    scenario: str,
    title: str,
    run_id: str,
    variants: list[str],
    methods: dict[str, str],
    timezone: str,
    dest: Path,
    dpi: int = 110,
) -> Path:
    """People on all course segments over the day: the truth and every variant, one run.

    The undercount of the course and the lag of departures show here as gaps between
    the black line and the coloured ones.
    """
    sub = bins[
        (bins["scenario"] == scenario)
        & (bins["run_id"] == run_id)
        & (bins["zone_system"] == "segment")
    ]
    styles = _variant_styles(variants, methods)
    fig, ax = plt.subplots(figsize=(9, 4))
    truth_drawn = False
    for variant in variants:
        one = sub[sub["variant"] == variant].sort_values("bin")
        if one.empty:
            continue
        when = pd.to_datetime(one["bin"], utc=True)
        if not truth_drawn:
            ax.plot(when, one["truth_total"], color=TRUTH_COLOUR, lw=2, label="truth")
            truth_drawn = True
        colour, marker = styles[variant]
        ax.plot(
            when,
            one["estimate_total"],
            color=colour,
            lw=1.2,
            label=variant,
            marker=marker,
            markevery=max(len(one) // 12, 1),
            ms=4,
        )
    local_time_axis(ax, timezone)
    ax.set_ylabel("people on the course segments")
    ax.set_title(f"{title}, run {run_id}: people within the course segments")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return save(fig, dest, dpi=dpi)


def plot_kwd_literature(
    ratios: pd.DataFrame, published: dict[str, float], *, dest: Path, dpi: int = 110
) -> Path:
    """KWD of each method relative to the flat estimate: each scenario beside the paper.

    `ratios` has columns ``scenario, method, ratio`` (median over seeds of method KWD /
    flat KWD); `published` the paper's ratios by method.
    """
    methods = list(published)
    groups = ["Ricciato & Coluccia 2020", *dict.fromkeys(ratios["scenario"])]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(len(groups), 1)
    for g, group in enumerate(groups):
        if g == 0:
            values = [published[m] for m in methods]
        else:
            sub = ratios[ratios["scenario"] == group].set_index("method")["ratio"]
            values = [float(sub.get(m, np.nan)) for m in methods]
        x = np.arange(len(methods)) + (g - (len(groups) - 1) / 2) * width
        ax.bar(
            x,
            values,
            width,
            label=group,
            color=plt.get_cmap("Greys" if g == 0 else "tab10")(0.5 if g == 0 else g - 1),
        )
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods)
    ax.set_ylabel("KWD / KWD of a flat estimate")
    ax.set_title("How much closer than a flat spread each method is (lower is better)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, dest, dpi=dpi)
