"""Two runs compared: open both, check they share their streets, gather every measure."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim import runfolder
from sim.course import Course
from sim.errors import CrowdsimError, RunFolderError
from sim.io import atomic_path
from sim.runfolder import RunFolder
from sim.streets import Streets

from .figure import cut_middle, plot_comparison
from .measures import (
    COLUMNS,
    density_measures,
    estimate_measures,
    outcome_measures,
    signalling_measures,
    walking_measures,
)
from .walking import build_world

__all__ = [
    "REQUIRED_FILES",
    "Comparison",
    "compare_runs",
    "format_table",
    "open_run",
    "write_comparison",
]

#: Files compare reads from a run folder (metrics.parquet only when estimates were made).
REQUIRED_FILES = (
    runfolder.MANIFEST,
    runfolder.SCENARIO,
    runfolder.COURSE,
    runfolder.ZONES,
    runfolder.TRUTH_EDGES,
    runfolder.CELL_LOAD,
    runfolder.CELLS,
)


@dataclass(frozen=True, eq=False)
class Comparison:
    """The comparison of two runs: the table and what the map draws.

    Attributes
    ----------
    run_a, run_b
        The two run folders (B − A is the difference).
    table
        Long table with :data:`COLUMNS`.
    streets
        The street graph both ran on.
    course_a
        Run A's course (drawn on the map).
    edge_peak
        Peak density per street edge: ``edge``, ``run_a``, ``run_b``, ``difference``.
    crossings
        Walks across the course: ``name``, ``in_a``, ``in_b`` (a crossing point of that
        run), ``x``, ``y``, ``run_a``, ``run_b``, ``difference`` (minutes).
    sites
        Rejections per cell site near the course: ``x``, ``y``, ``run_a``, ``run_b``,
        ``difference``, ``temporary_b`` (a temporary event site of B only).
    """

    run_a: RunFolder
    run_b: RunFolder
    table: pd.DataFrame
    streets: Streets
    course_a: Course
    edge_peak: pd.DataFrame
    crossings: pd.DataFrame
    sites: pd.DataFrame


def open_run(path: str | os.PathLike[str]) -> RunFolder:
    """Open a finished run folder for comparing (:func:`sim.runfolder.open_run`).

    Raises
    ------
    RunFolderError
        Not a run folder; a run running, interrupted, failed or mixed; or a file
        compare needs is missing; the message names the folder and the file.
    """
    folder = runfolder.open_run(path, purpose="compare")
    need = [*REQUIRED_FILES, *([runfolder.METRICS] if folder.has_estimates else [])]
    missing = [name for name in need if not folder.file(name).is_file()]
    if missing:
        raise RunFolderError(
            f"{folder.path}: missing {', '.join(missing)}; compare needs a complete run folder "
            "(run the scenario again)"
        )
    return folder


def _street_key(run: RunFolder) -> tuple[Any, ...]:
    src = run.street_source
    bbox = run.scenario.streets.bbox
    return (src.get("kind"), src.get("sha256"), bbox.model_dump() if bbox else None)


def compare_runs(
    run_a: str | os.PathLike[str],
    run_b: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    near_course_m: float = 400.0,
    near_point_m: float = 600.0,
    worst: int = 10,
) -> Comparison:
    """Compare run B with run A (the baseline): every figure for A, B and B − A.

    Parameters
    ----------
    run_a, run_b
        Run folders written by ``crowdsim run`` on the same streets.
    cache_dir
        Folder of the street-graph cache (default: the usual one).
    near_course_m
        Cells within this distance of run A's course line are "near the course".
    near_point_m
        Cells within this distance of the start, finish or a check point count for it.
    worst
        How many of the densest places to list.

    Raises
    ------
    CrowdsimError
        A folder is not a finished run folder, misses a file, or the runs used different
        streets.
    """
    a, b = open_run(run_a), open_run(run_b)
    if _street_key(a) != _street_key(b):
        sa = a.street_source.get("description", "?")
        sb = b.street_source.get("description", "?")
        raise CrowdsimError(
            f"{a.path} and {b.path} ran on different streets ({sa} vs {sb}, or a different "
            "streets.bbox); compare needs two runs on the same street data"
        )
    streets = a.streets(cache_dir=cache_dir)
    wa, wb = build_world(a, streets), build_world(b, streets)
    density, edge_peak = density_measures(a, b, streets, worst=worst)
    walking, crossings = walking_measures(wa, wb)
    signalling, sites = signalling_measures(
        a, b, near_course_m=near_course_m, near_point_m=near_point_m
    )
    rows = [*density, *walking, *outcome_measures(a, b), *signalling, *estimate_measures(a, b)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    return Comparison(a, b, table, streets, wa.course, edge_peak, crossings, sites)


def format_table(table: pd.DataFrame, *, max_rows: int = 12) -> str:
    """The table as text; a measure with more than `max_rows` places (the cells) shows
    the places that changed most, and says how many more are in ``compare.parquet``."""
    lines = []
    head = f"{'measure':<38} {'place':<52} {'run A':>11} {'run B':>11} {'B - A':>11}  unit"
    lines.append(head)
    lines.append("-" * len(head))
    for measure, group in table.groupby("measure", sort=False):
        shown = group
        if len(group) > max_rows:  # the places that changed most
            change = group["difference"].abs()
            changed = change[(change > 0) | (group["run_a"].isna() != group["run_b"].isna())]
            order = changed.fillna(np.inf).sort_values(ascending=False, kind="stable")
            shown = group.loc[order.index[:max_rows]]
            if shown.empty:
                lines.append(
                    f"{_cut(str(measure), 38):<38} no change in any of {len(group)} places "
                    "(all in compare.parquet)"
                )
                continue
        for row in shown.itertuples():
            place = cut_middle(row.place, 52)
            lines.append(
                f"{_cut(str(measure), 38):<38} {place:<52} {_num(row.run_a):>11} "
                f"{_num(row.run_b):>11} {_num(row.difference, signed=True):>11}  {row.unit}"
            )
        if len(group) > len(shown):
            lines.append(f"{'':<38} ... {len(group) - len(shown)} more in compare.parquet")
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(value: float, *, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "n/a" if value is None or np.isnan(value) else ("inf" if value > 0 else "-inf")
    magnitude = abs(value)
    fmt = "{:+.4g}" if signed else "{:.4g}"
    if magnitude >= 1e4:
        fmt = "{:+,.0f}" if signed else "{:,.0f}"
    return fmt.format(value)


def write_comparison(
    comparison: Comparison, out_dir: str | os.PathLike[str], *, dpi: int = 110
) -> list[Path]:
    """Write ``compare.parquet`` and ``compare_map.png`` into `out_dir` (atomically).

    Raises
    ------
    CrowdsimError
        `out_dir` exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CrowdsimError(f"{out}: exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "compare.parquet"
    with atomic_path(dest) as tmp:
        pq.write_table(pa.Table.from_pandas(comparison.table, preserve_index=False), tmp)
    return [dest, plot_comparison(comparison, out / "compare_map.png", dpi=dpi)]
