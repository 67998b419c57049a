"""Estimators: turn the operator's records into people per zone and minute (DESIGN §3).

Behind one scikit-learn-style interface (:class:`Estimator`): ``presence`` (people per
cell), ``voronoi`` (tower-seeded Voronoi), ``bayes`` (Simple Bayes with the operator's
coverage model) and ``em`` (Ricciato et al. 2020 ML-EM deconvolution), each scaled from
devices to people by the operator's beliefs and marked for privacy. Only operator data
enters: records, counters, the network plan (the operator wall, DESIGN §1).

The run stage calls :func:`run_estimators` with the records, the estimating operator's
plan, the zone systems (``sim.zones.Zones``), the bin starts (:func:`period_bins`) and
``scenario.estimators``, and writes the result with :func:`write_estimates`. The ``bin``
column is the bin *start*; an estimate describes the instant ``min(start + latency,
end)`` (real time) or the bin end (batch), so ``latency_min`` equal to the bin width
compares like for like with a truth counted at the bin end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.estimate.base import (
    ESTIMATE_COLUMNS,
    EstimateInputError,
    Estimator,
    NotFittedError,
    concat_estimates,
)
from sim.estimate.bayes import BayesEstimator
from sim.estimate.cellcount import PresenceEstimator
from sim.estimate.em import EMEstimator
from sim.estimate.output import write_estimates
from sim.estimate.presence import PreparedRecords, prepare_records
from sim.estimate.voronoi import VoronoiEstimator
from sim.network.plan import NetworkPlan

__all__ = [
    "ESTIMATE_COLUMNS",
    "ESTIMATORS",
    "BayesEstimator",
    "EMEstimator",
    "EstimateInputError",
    "Estimator",
    "NotFittedError",
    "PresenceEstimator",
    "VoronoiEstimator",
    "make_estimators",
    "period_bins",
    "run_estimators",
    "write_estimates",
]

#: Method name -> estimator class.
ESTIMATORS: dict[str, type[Estimator]] = {
    "presence": PresenceEstimator,
    "voronoi": VoronoiEstimator,
    "bayes": BayesEstimator,
    "em": EMEstimator,
}


def make_estimators(
    config: Any,
    *,
    random_state: int | np.random.Generator | None = None,
    mode: str = "realtime",
    **overrides: Any,
) -> list[Estimator]:
    """The estimators a scenario's ``[estimators]`` section lists, configured from it.

    Parameters
    ----------
    config
        A ``sim.scenario.EstimatorsConfig`` (or anything with ``methods``, ``window_min``,
        ``latency_min``, ``privacy_threshold``, ``laplace_epsilon``).
    random_state
        Seed or generator for the Laplace noise; one generator is shared in method order.
    mode
        ``"realtime"`` or ``"batch"``.
    **overrides
        Further shared parameters (e.g. ``market_share``, ``roaming_device_share``).
    """
    rng = np.random.default_rng(random_state)
    unknown = [m for m in config.methods if m not in ESTIMATORS]
    if unknown:
        raise EstimateInputError(
            f"estimators.methods: unknown method(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(ESTIMATORS)}"
        )
    shared = {
        "window_min": config.window_min,
        "latency_min": config.latency_min,
        "privacy_threshold": config.privacy_threshold,
        "laplace_epsilon": config.laplace_epsilon,
        "mode": mode,
        "random_state": rng,
        **overrides,
    }
    return [ESTIMATORS[m](**shared) for m in dict.fromkeys(config.methods)]


def period_bins(plan: NetworkPlan, *, bin_s: float = 60.0) -> pd.DatetimeIndex:
    """Bin starts (UTC) covering the plan's period.

    One every `bin_s` seconds, the last bin ending at or before the period's end.
    """
    start, end = (pd.Timestamp(p).tz_convert("UTC") for p in plan.period)
    width = pd.Timedelta(seconds=bin_s)
    n = int((end - start) // width)
    if n < 1:
        raise EstimateInputError(
            f"plan.period {plan.period} is shorter than one bin of {bin_s:g} s"
        )
    return pd.date_range(start, periods=n, freq=width).as_unit("ns")


def run_estimators(
    records: pd.DataFrame,
    plan: NetworkPlan,
    zone_systems: Any,
    bins: pd.DatetimeIndex,
    config: Any,
    *,
    counters: pd.DataFrame | None = None,
    random_state: int | np.random.Generator | None = None,
    mode: str = "realtime",
    **overrides: Any,
) -> pd.DataFrame:
    """Run every estimator `config` lists; return the ``estimates.parquet`` table.

    Parameters
    ----------
    records
        Operator records (``sim.network.records.RECORD_COLUMNS``).
    plan
        The estimating operator's network plan.
    zone_systems
        ``sim.zones.Zones`` (or any zone input :meth:`Estimator.estimate` accepts).
    bins
        Bin starts (UTC DatetimeIndex, e.g. one per minute of the event).
    config
        ``scenario.estimators``.
    counters
        Per-cell counters, optional.
    random_state
        Seed or generator for the noise (the run's ``estimators`` SeedSequence).
    mode
        ``"realtime"`` (default) or ``"batch"``; written in the ``mode`` column.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ESTIMATE_COLUMNS`.
    """
    prepared: PreparedRecords = prepare_records(records, plan, error=EstimateInputError)
    frames = []
    for est in make_estimators(config, random_state=random_state, mode=mode, **overrides):
        est.fit(prepared, plan, counters=counters)
        frames.append(est.estimate(zone_systems, bins))
    return concat_estimates(frames, consume=True)
