"""Estimators: turn the operator's records into people per zone and minute (DESIGN §3).

Behind one scikit-learn-style interface (:class:`Estimator`): ``presence`` (people per
cell), ``voronoi`` (tower-seeded Voronoi), ``bayes`` (Simple Bayes with the operator's
coverage model), ``em`` (Ricciato et al. 2020 ML-EM deconvolution) and ``hmm`` (a hidden
Markov model per device, as the ESSnet ``destim`` package), each scaled from devices to
people by the operator's beliefs and marked for privacy; with ``dedup`` on, each device
counts as the persons it stands for after multi-SIM deduplication
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

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
from sim.estimate.hmm import HMMEstimator
from sim.estimate.output import (
    INTERNAL_ESTIMATES_FILE,
    PUBLISHED_ESTIMATES_FILE,
    write_estimates,
    write_release,
)
from sim.estimate.presence import PreparedRecords, prepare_records
from sim.estimate.priors import EVENT_PUBLIC_FILE, EventPrior, read_event_public
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
    "COUNT_METHODS",
    "DUPLICITY_FILE",
    "ESTIMATE_COLUMNS",
    "ESTIMATORS",
    "EVENT_PUBLIC_FILE",
    "INTERNAL_ESTIMATES_FILE",
    "PUBLISHED_ESTIMATES_FILE",
    "BayesEstimator",
    "Duplicity",
    "DuplicityError",
    "EMEstimator",
    "EstimateInputError",
    "Estimator",
    "EventPrior",
    "HMMEstimator",
    "NotFittedError",
    "PresenceEstimator",
    "Release",
    "VoronoiEstimator",
    "counts_suffice",
    "duplicity",
    "make_estimators",
    "period_bins",
    "read_event_public",
    "release_estimates",
    "release_from_counts",
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
    "hmm": HMMEstimator,
}
#: Methods whose estimate is a function of the per-cell presence counts alone (so counts
#: taken live can feed them: :func:`release_from_counts`). Exactly these classes: a
#: subclass or a new method reads the records until it is added here.
COUNT_METHODS: frozenset[type[Estimator]] = frozenset(
    {PresenceEstimator, VoronoiEstimator, BayesEstimator, EMEstimator}
)
#: Methods that take a prior over tiles (``estimators.prior``).
PRIOR_METHODS = ("bayes", "em")


def make_estimators(
    config: Any,
    *,
    random_state: int | np.random.Generator | None = None,
    mode: str = "realtime",
    public: Any = None,
    **overrides: Any,
) -> list[Estimator]:
    """The estimators a scenario's ``[estimators]`` section lists, configured from it.

    Parameters
    ----------
    config
        A ``sim.scenario.EstimatorsConfig`` (or anything with ``methods``, ``window_min``,
        ``latency_min``, ``privacy_threshold``, ``laplace_epsilon``; ``prior``,
        ``prior_weight`` and ``prior_event_share`` when present).
    random_state
        Seed or generator for the Laplace noise; one generator is shared in method order.
    mode
        ``"realtime"`` or ``"batch"``.
    public
        The event's public data for ``prior = "event"``: the path of the run's
        ``event_public.gpkg``, an :class:`~sim.estimate.priors.EventPublic` or a ready
        :class:`EventPrior`; not read with the flat prior.
    **overrides
        Further shared parameters (e.g. ``market_share``, ``roaming_device_share``).

    Raises
    ------
    EstimateInputError
        An unknown method or prior, or ``prior = "event"`` without its public data.
    """
    rng = np.random.default_rng(random_state)
    unknown = [m for m in config.methods if m not in ESTIMATORS]
    if unknown:
        raise EstimateInputError(
            f"estimators.methods: unknown method(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(ESTIMATORS)}"
        )
    own = _prior_params(config, public)
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
    return [
        ESTIMATORS[m](**shared, **(own if m in PRIOR_METHODS else {}))
        for m in dict.fromkeys(config.methods)
    ]


def _prior_params(config: Any, public: Any) -> dict[str, Any]:
    """The prior parameters of Bayes and EM from ``estimators.prior`` (none when flat)."""
    kind = getattr(config, "prior", "flat")
    if kind == "flat":
        return {}
    if kind != "event":
        raise EstimateInputError(f"estimators.prior = {kind!r}; allowed: 'flat', 'event'")
    weight = getattr(config, "prior_weight", 0.5)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise EstimateInputError(
            f"estimators.prior_weight = {weight!r}; must be a number in [0, 1]"
        )
    if public is None:
        raise EstimateInputError(
            f"estimators.prior = 'event' needs the event's public data ({EVENT_PUBLIC_FILE}, "
            "written by a run's street stage); pass public=, or use prior = 'flat'"
        )
    prior = (
        public
        if isinstance(public, EventPrior)
        else EventPrior(public, event_share=getattr(config, "prior_event_share", 0.5))
    )
    return {"prior": prior, "prior_weight": float(weight)}


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
    public: Any = None,
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
    public
        The event's public data, for ``config.prior = "event"`` (:func:`make_estimators`).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`ESTIMATE_COLUMNS`.
    """
    prepared: PreparedRecords = prepare_records(records, plan, error=EstimateInputError)
    frames = []
    for est in make_estimators(
        config, random_state=random_state, mode=mode, public=public, **overrides
    ):
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
    intervals
        What ``lower``/``upper`` mean, per method (:meth:`Estimator.interval_facts`): the
        nominal level, the location model, the real-time bound.
    duplicity
        With deduplication on: each device's probability of being one of a person's two
        phones, from the whole day's records (:mod:`sim.estimate.dedup`); else None.
    """

    internal: pd.DataFrame
    published: pd.DataFrame
    privacy: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, Any] = field(default_factory=dict)
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
    public: Any = None,
    **overrides: Any,
) -> Release:
    """Run every estimator `config` lists; return the internal and the published tables.

    The cell counts are computed once and shared by every method that works from them.
    With ``config.laplace_epsilon`` set, one draw of Laplace noise on those counts feeds
    every such method's published figures, so they cost epsilon per bin whatever the number
    of methods and zone systems (:func:`~sim.estimate.privacy.privacy_budget`, over the
    local days of `timezone`). A method that follows devices through their records
    (``needs_records``: the HMM) gets its own draw on its per-tile posterior sums (also
    sensitivity 1 per bin), which adds epsilon per bin to the budget. Without noise, the
    published table is the internal one restricted to the published system, with
    suppressed values removed.

    Parameters
    ----------
    records, plan, zone_systems, bins, config, counters, mode, public, **overrides
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
    system, sets = _published_system(zone_systems, config, published_system)
    rng = np.random.default_rng(random_state)
    prepared = prepare_records(records, plan, error=EstimateInputError)
    estimators = make_estimators(config, random_state=rng, mode=mode, public=public, **overrides)
    for est in estimators:
        est.set_params(laplace_epsilon=None)  # the internal table is exact
        est.fit(prepared, plan, counters=counters)
    # a method that follows devices (the HMM) works from the records, not the shared counts
    from_counts = [est for est in estimators if not getattr(est, "needs_records", False)]
    tiles = {
        id(est): cast(Any, est).tile_devices(bins)
        for est in estimators
        if getattr(est, "needs_records", False)
    }
    counts = from_counts[0].cell_counts(bins) if from_counts else np.zeros((plan.n_cells, 0))
    return _release(estimators, counts, zone_systems, bins, config, system=system, sets=sets,
                    rng=rng, timezone=timezone, tiles=tiles)  # fmt: skip


def counts_suffice(config: Any) -> bool:
    """Whether every method `config` lists is a function of the per-cell presence counts.

    True for :data:`COUNT_METHODS` (exactly those classes, not their subclasses): their
    estimates can be computed from counts taken live as the records arrive
    (:class:`~sim.estimate.live.LivePresence`, :func:`release_from_counts`). A method
    that reads the records themselves (a device-level model) needs
    :func:`release_estimates`.
    """
    if getattr(config, "dedup", False):  # device weights come from the records
        return False
    return all(ESTIMATORS.get(m) in COUNT_METHODS for m in config.methods)


def release_from_counts(
    counts: np.ndarray,
    plan: NetworkPlan,
    zone_systems: Any,
    bins: pd.DatetimeIndex,
    config: Any,
    *,
    counters: pd.DataFrame | None = None,
    random_state: int | np.random.Generator | None = None,
    timezone: str = "UTC",
    published_system: str | None = None,
    fitted: Sequence[Estimator] = (),
    **overrides: Any,
) -> Release:
    """The release of :func:`release_estimates` from real-time presence counts.

    The streaming run counts devices per cell at each bin's reference instant as the
    records arrive (:class:`~sim.estimate.live.LivePresence`); given those counts, this
    is :func:`release_estimates` in ``"realtime"`` mode without reading the records
    again: the same tables, the same noise draws.

    Parameters
    ----------
    counts
        Devices per cell (rows, plan order) and bin (columns of `bins`), counted in real
        time with the window and latency of `config`.
    plan, zone_systems, bins, config, counters, random_state, timezone, published_system
        As in :func:`release_estimates`.
    fitted
        Estimators already fitted on `plan` (:meth:`Estimator.fit_plan`) from the same
        `config` and overrides, e.g. those that drew a streaming run's frames: a method
        found there is not fitted again.

    Raises
    ------
    EstimateInputError
        A method is not a function of the counts (:func:`counts_suffice`), the counts do
        not match the plan and the bins, or the published system is unusable.
    """
    if not counts_suffice(config):
        others = [m for m in config.methods if ESTIMATORS.get(m) not in COUNT_METHODS]
        raise EstimateInputError(
            f"estimators.methods: {', '.join(others)} read the records themselves, not only "
            "presence counts; release them with release_estimates(records, ...)"
        )
    system, sets = _published_system(zone_systems, config, published_system)
    rng = np.random.default_rng(random_state)
    ready = {type(est): est for est in fitted if _same_plan(getattr(est, "plan_", None), plan)}
    estimators = []
    for est in make_estimators(config, random_state=rng, mode="realtime", **overrides):
        est.set_params(laplace_epsilon=None)  # the internal table is exact
        if type(est) in ready:  # the fitted one: same parameters, same plan
            est = ready[type(est)].set_params(random_state=rng, laplace_epsilon=None)
        else:
            est.fit_plan(plan, counters=counters)
        estimators.append(est)
    counts = np.asarray(counts, dtype=np.float64)
    return _release(estimators, counts, zone_systems, bins, config, system=system, sets=sets,
                    rng=rng, timezone=timezone)  # fmt: skip


def _same_plan(a: NetworkPlan | None, b: NetworkPlan) -> bool:
    """Whether two plans hold the same cells and beliefs (e.g. one file read twice)."""
    if a is b:
        return True
    return (
        a is not None
        and (a.operator, a.market_share, a.phones_per_person) == (b.operator, b.market_share,
                                                                 b.phones_per_person)
        and tuple(a.period) == tuple(b.period)
        and a.cells.equals(b.cells)
    )  # fmt: skip


def _published_system(
    zone_systems: Any, config: Any, published_system: str | None
) -> tuple[str, dict[str, Any]]:
    """The published system's name (checked to be a partition) and every zone set."""
    system = published_system or getattr(config, "published_system", None)
    system = system or DEFAULT_PUBLISHED_SYSTEM
    sets = {zs.system: zs for zs in zone_sets(zone_systems, error=EstimateInputError)}
    if system not in sets:
        raise EstimateInputError(
            f"published system {system!r} is not among the zone systems "
            f"({', '.join(sets) or 'none'})"
        )
    check_partition(sets[system], error=EstimateInputError)
    return system, sets


def _release(
    estimators: list[Estimator],
    counts: np.ndarray,
    zone_systems: Any,
    bins: pd.DatetimeIndex,
    config: Any,
    *,
    system: str,
    sets: dict[str, Any],
    rng: np.random.Generator,
    timezone: str,
    tiles: dict[int, np.ndarray] | None = None,
) -> Release:
    """The internal and published tables of fitted `estimators` from one set of counts.

    `tiles` holds, per device-level method (keyed by ``id``), its expected devices per
    tile and bin (:meth:`~sim.estimate.hmm.HMMEstimator.tile_devices`); those methods
    are estimated from them instead of the shared counts.
    """
    tiles = tiles or {}
    epsilon = config.laplace_epsilon
    internal = concat_estimates(
        [
            cast(Any, est).estimate_from_tiles(tiles[id(est)], zone_systems, bins)
            if id(est) in tiles
            else est.estimate_from_counts(counts, zone_systems, bins)
            for est in estimators
        ]
    )
    statistics = []
    if epsilon is None:
        published = published_view(internal, system=system)
    else:
        one = {system: sets[system]}
        noisy_tables = []
        spatial = [e for e in estimators if id(e) not in tiles and e.method != "presence"]
        if spatial:  # presence reports per cell, outside the published system
            noisy = laplace_counts(counts, epsilon=epsilon, rng=rng)
            noisy_tables += [
                est.estimate_from_counts(noisy, one, bins, noise_epsilon=epsilon) for est in spatial
            ]
            statistics.append("cell counts")
        for est in estimators:  # a device-level method: its own draw on its tile sums
            if id(est) in tiles:
                noisy = laplace_counts(tiles[id(est)], epsilon=epsilon, rng=rng)
                noisy_tables.append(cast(Any, est).estimate_from_tiles(noisy, one, bins))
                statistics.append(f"{est.method} tile sums")
        published = published_view(concat_estimates(noisy_tables), system=system)
    # each noisy statistic is a separate release of sensitivity 1: their epsilons add up
    spent = None if epsilon is None else epsilon * max(len(statistics), 1)
    privacy = {
        "threshold": config.privacy_threshold,
        "published_system": system,
        "published_methods": sorted(map(str, published["method"].unique())),
        "noisy_statistics": statistics,
        "budget": privacy_budget(bins, epsilon=spent, timezone=timezone),
    }
    intervals = {est.method: est.interval_facts() for est in estimators}
    dedup = next((est.day_duplicity() for est in estimators if est.dedup), None)
    return Release(
        internal=internal,
        published=published,
        privacy=privacy,
        intervals=intervals,
        duplicity=dedup,
    )
