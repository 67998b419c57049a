"""Estimators: turn the operator's records into people per zone and minute (DESIGN §3).

Behind one scikit-learn-style interface (:class:`Estimator`): ``presence`` (people per
cell), ``voronoi`` (tower-seeded Voronoi), ``bayes`` (Simple Bayes with the operator's
coverage model) and ``em`` (Ricciato et al. 2020 ML-EM deconvolution), each scaled from
devices to people by the operator's beliefs and marked for privacy; with ``dedup`` on,
each device counts as the persons it stands for after multi-SIM deduplication
(:mod:`sim.estimate.dedup`). Only operator data enters: records, counters, the network
plan (the operator wall, DESIGN §1).

The run stage calls :func:`release_estimates` with the records, the estimating operator's
plan, the zone systems (``sim.zones.Zones``), the bin starts (:func:`period_bins`) and
``scenario.estimators``, and writes its internal and published tables with
:func:`write_release`; :func:`run_estimators` is the plain table of every method, for
scripts and tests. The ``bin``
column is the bin *start*; an estimate describes the instant ``min(start + latency,
end)`` (real time) or the bin end (batch), so ``latency_min`` equal to the bin width
compares like for like with a truth counted at the bin end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from sim.estimate.dedup import (
    DUPLICITY_FILE,
    Duplicity,
    DuplicityError,
    duplicity,
    write_duplicity,
)
from sim.estimate.em import EMEstimator
from sim.estimate.output import (
    INTERNAL_ESTIMATES_FILE,
    PUBLISHED_ESTIMATES_FILE,
    write_estimates,
    write_release,
)
from sim.estimate.presence import PreparedRecords, prepare_records
from sim.estimate.privacy import (
    DEFAULT_PUBLISHED_SYSTEM,
    check_partition,
    laplace_counts,
    privacy_budget,
    published_view,
)
from sim.estimate.tiles import zone_sets
from sim.estimate.voronoi import VoronoiEstimator
from sim.network.plan import NetworkPlan

__all__ = [
    "DUPLICITY_FILE",
    "ESTIMATE_COLUMNS",
    "ESTIMATORS",
    "INTERNAL_ESTIMATES_FILE",
    "PUBLISHED_ESTIMATES_FILE",
    "BayesEstimator",
    "Duplicity",
    "DuplicityError",
    "EMEstimator",
    "EstimateInputError",
    "Estimator",
    "NotFittedError",
    "PresenceEstimator",
    "Release",
    "VoronoiEstimator",
    "duplicity",
    "make_estimators",
    "period_bins",
    "release_estimates",
    "run_estimators",
    "write_duplicity",
    "write_estimates",
    "write_release",
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
        **_dedup_params(config),
        **overrides,
    }
    return [ESTIMATORS[m](**shared) for m in dict.fromkeys(config.methods)]


def _dedup_params(config: Any) -> dict[str, Any]:
    """The deduplication settings of ``[estimators]`` (none when the config has no key)."""
    if not getattr(config, "dedup", False):
        return {}
    return {"dedup": True, "second_device": getattr(config, "second_device", 0.1)}


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


@dataclass(eq=False)
class Release:
    """What a run's estimator stage produces (:func:`release_estimates`).

    Attributes
    ----------
    internal
        The operator's own table before release: every method and zone system, from the
        exact counts, suppressed zone-bins marked but kept (validation scores this).
    published
        What would leave the operator: the published zone system only, suppressed
        zone-bins without value or bounds, from noisy counts if differential privacy is
        on (:mod:`sim.estimate.privacy`).
    privacy
        The release's facts for the manifest: threshold, published system, and the
        privacy budget (:func:`sim.estimate.privacy.privacy_budget`).
    duplicity
        With deduplication on: each device's probability of being one of a person's two
        phones, from the whole day's records (:mod:`sim.estimate.dedup`); else None.
    """

    internal: pd.DataFrame
    published: pd.DataFrame
    privacy: dict[str, Any] = field(default_factory=dict)
    duplicity: Duplicity | None = None


def release_estimates(
    records: pd.DataFrame,
    plan: NetworkPlan,
    zone_systems: Any,
    bins: pd.DatetimeIndex,
    config: Any,
    *,
    counters: pd.DataFrame | None = None,
    random_state: int | np.random.Generator | None = None,
    mode: str = "realtime",
    timezone: str = "UTC",
    published_system: str | None = None,
    **overrides: Any,
) -> Release:
    """Run every estimator `config` lists; return the internal and the published tables.

    The cell counts are computed once and shared by every method. With
    ``config.laplace_epsilon`` set, one draw of Laplace noise on those counts feeds every
    method's published figures, so the release costs epsilon per bin whatever the number
    of methods and zone systems (:func:`~sim.estimate.privacy.privacy_budget`, over the
    local days of `timezone`). Without noise, the published table is the internal one
    restricted to the published system, with suppressed values removed.

    Parameters
    ----------
    records, plan, zone_systems, bins, config, counters, mode, **overrides
        As in :func:`run_estimators`.
    random_state
        Seed or generator for the noise.
    timezone
        The event's time zone (days of the privacy budget).
    published_system
        The one zone system published; default ``config.published_system`` if it has one,
        else ``"grid"``. It must be a partition (:func:`check_partition`).

    Raises
    ------
    EstimateInputError
        The published system is not among the zone systems, or its zones overlap.
    """
    system = published_system or getattr(config, "published_system", None)
    system = system or DEFAULT_PUBLISHED_SYSTEM
    sets = {zs.system: zs for zs in zone_sets(zone_systems, error=EstimateInputError)}
    if system not in sets:
        raise EstimateInputError(
            f"published system {system!r} is not among the zone systems "
            f"({', '.join(sets) or 'none'})"
        )
    check_partition(sets[system], error=EstimateInputError)
    rng = np.random.default_rng(random_state)
    epsilon = config.laplace_epsilon
    prepared = prepare_records(records, plan, error=EstimateInputError)
    estimators = make_estimators(config, random_state=rng, mode=mode, **overrides)
    for est in estimators:
        est.set_params(laplace_epsilon=None)  # the internal table is exact
        est.fit(prepared, plan, counters=counters)
    counts = estimators[0].cell_counts(bins) if estimators else np.zeros((plan.n_cells, 0))
    internal = concat_estimates(
        [est.estimate_from_counts(counts, zone_systems, bins) for est in estimators]
    )
    if epsilon is None:
        published = published_view(internal, system=system)
    else:
        noisy = laplace_counts(counts, epsilon=epsilon, rng=rng)
        one = {system: sets[system]}
        spatial = [est for est in estimators if est.method != "presence"]  # "cell" system
        noisy_tables = [est.estimate_from_counts(noisy, one, bins) for est in spatial]
        published = published_view(concat_estimates(noisy_tables), system=system)
    privacy = {
        "threshold": config.privacy_threshold,
        "published_system": system,
        "published_methods": sorted(map(str, published["method"].unique())),
        "budget": privacy_budget(bins, epsilon=epsilon, timezone=timezone),
    }
    dedup = next((est.day_duplicity() for est in estimators if est.dedup), None)
    return Release(internal=internal, published=published, privacy=privacy, duplicity=dedup)
