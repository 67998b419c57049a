"""A sweep's results: one table over every run, and the summary figure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from sim.io import atomic_path
from validation.sweep.spec import ID_COLUMNS, RESULT_COLUMNS, Sweep, _label, _short

__all__ = [
    "plot_sweep",
    "sweep_table",
]


def sweep_table(
    sweep: Sweep, out_dir: str | os.PathLike[str], runs: list[dict[str, Any]]
) -> pd.DataFrame:
    """One row per run x method x zone system x metric, with the parameters as columns.

    Parameters
    ----------
    sweep
        The sweep (its parameters name the columns).
    out_dir
        The sweep folder; each ``ok`` run's ``runs/<run_id>/metrics.parquet`` is read.
    runs
        The run entries of ``sweep.json`` (run_id, point, replication, params, status,
        error).

    Returns
    -------
    DataFrame
        run_id, point, replication, one column per varied parameter (numbers stay
        numbers; tables and lists as JSON text), status, error, method, zone_system,
        metric, value, n. A run without metrics (failed, or no operator records) has one
        row with its status and error and no metric. Sorted by point and replication.
    """
    out = Path(out_dir)
    names = list(sweep.parameters)
    frames = []
    for entry in sorted(runs, key=lambda e: (e["point"], e["replication"])):
        metrics_file = out / "runs" / entry["run_id"] / "metrics.parquet"
        if entry["status"] == "ok" and metrics_file.is_file():
            frame = pd.read_parquet(metrics_file)
        else:
            frame = pd.DataFrame({"method": [None]})
        frame = frame.assign(
            run_id=entry["run_id"],
            point=entry["point"],
            replication=entry["replication"],
            status=entry["status"],
            error=entry.get("error"),
        )
        for name in names:
            frame[name] = [entry["params"].get(name)] * len(frame)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    for column in RESULT_COLUMNS:
        if column not in table:
            table[column] = None
    for name in names:
        table[name] = _parameter_column(table[name])
    table["point"] = table["point"].astype("int64")
    table["replication"] = table["replication"].astype("int64")
    table["value"] = table["value"].astype("float64")
    table["n"] = table["n"].astype("Int64")
    for column in ("run_id", "status", "error", "method", "zone_system", "metric"):
        table[column] = table[column].astype("string")
    return table[[*ID_COLUMNS, *names, *RESULT_COLUMNS]]


def _parameter_column(values: pd.Series) -> pd.Series:
    """Numbers as float or int, text as text, bools as bools, anything else as JSON text."""
    items = list(values)
    if all(isinstance(v, bool) for v in items):
        return pd.Series(items, index=values.index, dtype="boolean")
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        if all(isinstance(v, int) for v in items):
            return pd.Series(items, index=values.index, dtype="int64")
        return pd.Series(items, index=values.index, dtype="float64")
    return pd.Series([_short(v) for v in items], index=values.index, dtype="string")


def plot_sweep(
    table: pd.DataFrame, sweep: Sweep, dest: str | os.PathLike[str], *, dpi: int = 110
) -> Path:
    """Draw error vs parameter, with the spread over replications, into a PNG.

    One row of panels per ``summary.metrics`` entry; in grid mode with several varied
    parameters, one column per combination of the parameters other than ``summary.x``.
    Per method: each run a dot, the median over replications a line, the band from the
    lowest to the highest replication.

    Returns
    -------
    Path
        `dest`, written atomically.
    """
    from matplotlib.figure import Figure

    names = list(sweep.parameters)
    x_name = sweep.spec.summary.x or (names[0] if names else None)
    others = [n for n in names if n != x_name] if sweep.spec.mode == "grid" else []
    facets: list[tuple[Any, ...]] = (
        list(dict.fromkeys(table[others].itertuples(index=False, name=None))) if others else [()]
    )
    panels = sweep.spec.summary.metrics
    ok = table[table["status"] == "ok"]
    fig = Figure(figsize=(4.2 * len(facets) + 1.0, 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(facets), squeeze=False)
    x_values = list(dict.fromkeys(table[x_name])) if x_name else ["base"]
    numeric = x_name is not None and pd.api.types.is_numeric_dtype(table[x_name])
    numeric = numeric and not pd.api.types.is_bool_dtype(table[x_name])
    position = {v: (float(v) if numeric else float(i)) for i, v in enumerate(x_values)}
    methods = sorted(m for m in ok["method"].dropna().unique())
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for row, panel in enumerate(panels):
        system, _, metric = panel.partition("/")
        for col, facet in enumerate(facets):
            ax = axes[row][col]
            sub = ok[(ok["zone_system"] == system) & (ok["metric"] == metric)]
            for name, value in zip(others, facet, strict=True):
                sub = sub[sub[name] == value]
            drawn = False
            for method in methods:
                data = sub[(sub["method"] == method) & sub["value"].notna()]
                if data.empty:
                    continue
                xs = [position[v] for v in (data[x_name] if x_name else ["base"] * len(data))]
                ax.plot(xs, data["value"], "o", color=colours[method], alpha=0.35, ms=4)
                key = data[x_name] if x_name else pd.Series("base", index=data.index)
                stats = data["value"].groupby(key.map(position)).agg(["median", "min", "max"])
                ax.plot(stats.index, stats["median"], "-", color=colours[method], label=method)
                ax.fill_between(stats.index, stats["min"], stats["max"],
                                color=colours[method], alpha=0.15, lw=0)  # fmt: skip
                drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "no value", ha="center", va="center", transform=ax.transAxes)
            if not numeric:
                ax.set_xticks(list(position.values()), [_short(v) for v in x_values])
            ax.set_xlabel(x_name or "base scenario (no parameter varied)")
            ax.set_ylabel(f"{metric} ({system})")
            if facet:
                ax.set_title(_label(dict(zip(others, facet, strict=True))), fontsize=9)
            ax.grid(alpha=0.3)
            if drawn and row == 0 and col == 0:
                ax.legend(fontsize=8)
    n_failed = int(table.drop_duplicates("run_id")["status"].ne("ok").sum())
    fig.suptitle(
        f"{sweep.spec.name}: {sweep.spec.replications} replication(s) per point"
        + (f", {n_failed} run(s) failed" if n_failed else "")
        + "\nline: median over replications; band: lowest to highest; dot: one run",
        fontsize=10,
    )
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return dest
