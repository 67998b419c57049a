"""Over seeds: the median and spread of each metric, and which variant wins where.

A study's metrics table has one row per scenario x run x variant x zone system x metric
(:func:`validation.study.estimating.score_variants`). Here each (scenario, variant, zone
system, metric) becomes one row of its median, quartiles, minimum and maximum over the
runs (seeds), and each (scenario, zone system, metric) names its best variant and says
whether the runs separate it from the next one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from validation.metrics import GRID_ONLY, METRICS

__all__ = [
    "HEADLINE",
    "SUMMARY_COLUMNS",
    "Winner",
    "summarise",
    "winners",
]

#: The metrics of the study's tables, in column order, with how the page names them.
HEADLINE: dict[str, str] = {
    "mape": "MAPE",
    "kwd_mean_m": "KWD (m)",
    "bias": "bias (people)",
    "peak_time_error_median_abs_min": "time-of-peak error (min)",
    "coverage": "interval coverage",
}
#: Columns of the summary table.
SUMMARY_COLUMNS = (
    "scenario", "variant", "method", "zone_system", "metric",
    "seeds", "median", "q25", "q75", "min", "max",
)  # fmt: skip
_KEYS = ["scenario", "variant", "method", "zone_system", "metric"]


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Median, quartiles, minimum and maximum over runs of every metric.

    Parameters
    ----------
    table
        Long metrics: ``scenario, run_id, variant, method, zone_system, metric, value``.
        A NaN value (nothing to compute it over in that run) is left out of its group.

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`; ``seeds`` is the number of runs with a value (a group
        without any has NaN statistics and ``seeds`` 0), quartiles interpolate linearly.

    Raises
    ------
    ValueError
        A column is missing, or a run holds two values for one key.
    """
    missing = [c for c in (*_KEYS, "run_id", "value") if c not in table.columns]
    if missing:
        raise ValueError(f"metrics table: missing column(s) {', '.join(missing)}")
    twice = table.duplicated([*_KEYS, "run_id"])
    if twice.any():
        row = table[twice].iloc[0]
        raise ValueError(
            f"metrics table: run {row['run_id']!r} has two values of {row['metric']} for "
            f"{row['variant']} on {row['zone_system']} ({row['scenario']})"
        )
    rows = []
    for key, group in table.groupby(_KEYS, sort=False, observed=True):
        values = group["value"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            q25, q75 = np.quantile(values, [0.25, 0.75]).tolist()
            stats = [float(np.median(values)), q25, q75, float(values.min()), float(values.max())]
        else:
            stats = [math.nan] * 5
        rows.append([*key, int(values.size), *stats])
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


@dataclass(frozen=True)
class Winner:
    """The best variant of one scenario, zone system and metric, over seeds.

    Attributes
    ----------
    scenario, zone_system, metric
        What was compared.
    best, value
        The variant with the best median, and that median.
    runner_up, runner_value
        The next best variant and its median (None with a single variant).
    separated
        Whether the interquartile ranges of the two do not overlap, i.e. the seeds keep
        them apart; False means the order may be chance.
    tied
        Variants whose median equals the best one's.
    """

    scenario: str
    zone_system: str
    metric: str
    best: str
    value: float
    runner_up: str | None
    runner_value: float | None
    separated: bool
    tied: tuple[str, ...] = ()


def _badness(metric: str, values: np.ndarray, target: float | None) -> np.ndarray:
    """How bad each value is (lower is better) by the metric's direction."""
    values = np.asarray(values, dtype=float)
    if metric.startswith("coverage") and target is not None:
        values = np.abs(values - target)  # an interval is honest at its stated level
    elif METRICS.get(metric, "low") == "high":
        values = -values
    elif METRICS.get(metric, "low") == "zero":
        values = np.abs(values)
    return values


def winners(
    summary: pd.DataFrame,
    *,
    metrics: Mapping[str, str] = HEADLINE,
    nominal: float | None = None,
    exclude: tuple[str, ...] = (),
) -> list[Winner]:
    """The best variant of each scenario, zone system and metric, by median over seeds.

    Parameters
    ----------
    summary
        :func:`summarise`'s table.
    metrics
        The metrics to judge.
    nominal
        The intervals' stated level: coverage is best closest to it (else highest).
    exclude
        Variants that are references, not contenders (the flat estimate).

    Returns
    -------
    list of Winner
        One per (scenario, zone system, metric) with at least one finite median; a
        grid-only metric on other systems is skipped.
    """
    out: list[Winner] = []
    rows = summary[summary["metric"].isin(list(metrics)) & ~summary["variant"].isin(exclude)]
    for (scenario, system, metric), group in rows.groupby(
        ["scenario", "zone_system", "metric"], sort=False
    ):
        if metric in GRID_ONLY and system != "grid":
            continue
        group = group[np.isfinite(group["median"].to_numpy(dtype=float))]
        if group.empty:
            continue
        bad = _badness(metric, group["median"].to_numpy(dtype=float), nominal)
        order = np.argsort(bad, kind="stable")
        first = group.iloc[order[0]]
        tied = tuple(str(group.iloc[i]["variant"]) for i in order[1:] if bad[i] == bad[order[0]])
        second = group.iloc[order[1]] if len(order) > 1 else None
        separated = second is not None and _apart(first, second, metric, nominal)
        out.append(
            Winner(
                scenario=str(scenario),
                zone_system=str(system),
                metric=str(metric),
                best=str(first["variant"]),
                value=float(first["median"]),
                runner_up=None if second is None else str(second["variant"]),
                runner_value=None if second is None else float(second["median"]),
                separated=bool(separated) and not tied,
                tied=tied,
            )
        )
    return out


def _apart(first: pd.Series, second: pd.Series, metric: str, nominal: float | None) -> bool:
    """Whether the interquartile ranges of two variants, judged by badness, do not overlap."""
    if (metric.startswith("coverage") and nominal is not None) or METRICS.get(metric) == "zero":
        # |x - target| over an interval straddling the target reaches down to 0
        a, b = _abs_range(first, metric, nominal), _abs_range(second, metric, nominal)
    else:
        a = _badness(metric, np.array([first["q25"], first["q75"]], dtype=float), nominal)
        b = _badness(metric, np.array([second["q25"], second["q75"]], dtype=float), nominal)
    return bool(np.max(a) < np.min(b))


def _abs_range(row: pd.Series, metric: str, nominal: float | None) -> np.ndarray:
    target = nominal if metric.startswith("coverage") and nominal is not None else 0.0
    lo, hi = float(row["q25"]) - target, float(row["q75"]) - target
    low = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    return np.array([low, max(abs(lo), abs(hi))])
