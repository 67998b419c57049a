"""The estimator interface: parameters in the constructor, ``fit`` on operator data, ``estimate``.

Every method (presence, Voronoi, Simple Bayes, EM) is an :class:`Estimator`. As in
scikit-learn, the constructor stores parameters only, ``fit(records, plan)`` checks its
inputs and computes what does not depend on the zones or the bins (attributes ending in
``_``), and ``estimate(zones, bins)`` returns one table in the ``estimates.parquet``
form. The shared pipeline lives here so that every method runs on the same inputs and
writes the same table: presence counts per cell and bin -> devices per zone (the only
step a method defines) -> people (scaling) -> intervals -> privacy.

Only operator-side data enters (DESIGN §1): the records, per-cell counters and the
network plan. ``tests/test_operator_wall.py`` checks the imports of this package.

Bounds. ``lower`` and ``upper`` are a ``confidence`` (default 95%) interval for the
people of a zone-bin (:mod:`sim.estimate.intervals`). They carry where the devices of
each cell may be (the method's location posterior: a zone's device count is a sum of
independent Bernoullis, one per device, with ``P(zone | cell)`` from the method's
prior, fitted density or footprint; for EM optionally the uncertainty of its fitted
density), who carries a device (binomial thinning by market share and phones per
person), the stated uncertainty of those beliefs (``share_error``, ``phones_error``)
and Laplace noise when it is on. On a world that follows the method's own model they
cover at their nominal level (``tests/test_intervals.py``). They do *not* hold a
coverage model that differs from the world's radio, a crowd whose density differs from
the method's prior, devices silent for longer than the window, nor the part of EM's
density the counts cannot identify: validation measures how often the truth falls
outside, per method and zone system. The presence method (zone = cell) has no location
part. An empty zone-bin gets 0 and ``[0, u]`` with u the people who could stand there
unseen (0 when every person carries a device).
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from sim.errors import CrowdsimError
from sim.estimate.dedup import (
    Duplicity,
    DuplicityError,
    dedup_weights,
    persons_per_person,
    shared_duplicity,
    twin_prior,
)
from sim.estimate.intervals import belief_uncertainty, people_interval
from sim.estimate.outside import counts_matrix
from sim.estimate.presence import (
    PreparedRecords,
    check_bins,
    check_counters,
    check_plan,
    prepare_records,
    presence_at,
    presence_counts,
    reference_instants,
)
from sim.estimate.privacy import laplace_counts
from sim.estimate.scaling import people_per_device
from sim.estimate.tiles import ZoneSet, zone_sets
from sim.network.plan import NetworkPlan

__all__ = ["ESTIMATE_COLUMNS", "EstimateInputError", "Estimator", "NotFittedError"]

#: Columns of ``estimates.parquet`` and their dtypes. ``estimate`` is people; ``lower``
#: and ``upper`` bound them with the estimator's nominal level ``confidence`` (default
#: 95%, written in the manifest's estimator facts under ``intervals``), carrying the
#: location and sampling uncertainty described in :mod:`sim.estimate.intervals`.
#: ``mode`` says whether an estimate could have been shown live (``realtime``) or used
#: the whole day (``batch``).
ESTIMATE_COLUMNS: dict[str, object] = {
    "method": "category",
    "zone_system": "category",
    "zone": "category",
    "bin": "datetime64[ns, UTC]",
    "estimate": "float32",
    "lower": "float32",
    "upper": "float32",
    "suppressed": "bool",
    "mode": "category",
}


#: Zone-bins whose interval is computed at a time (keeps the temporaries near 100 MB).
_INTERVAL_BLOCK = 1 << 20


class EstimateInputError(CrowdsimError, ValueError):
    """Records, counters, plan, zones or bins given to an estimator are not usable."""


class NotFittedError(CrowdsimError, RuntimeError):
    """``estimate`` was called before ``fit``."""


class Estimator:
    """Base class of the estimators: scikit-learn-style parameters, fit, estimate.

    The parameters below are shared by every method.

    Parameters
    ----------
    window_min
        Presence window W: a device counts at its last-known cell if seen within W
        minutes. The periodic TAU timer (T3412 = 54 min) plus a margin makes ~60 natural.
    latency_min
        Real-time mode: the estimate of the bin starting at t uses only records before
        ``min(t + latency, bin end)``. 0 shows the state at the bin start; a latency of
        one bin width shows the state at the bin end, which is when the truth counts.
    mode
        ``"realtime"`` (what a crisis-centre screen could show) or ``"batch"`` (the whole
        day: a device is put at its record nearest in time to the bin end, within W on
        either side, so later records are used; the output's ``mode`` column says so).
    market_share, phones_per_person
        The operator's beliefs used to scale devices to people; None takes the values of
        the network plan (which holds the operator's belief, not the simulator's truth).
    share_error, phones_error
        Relative error put on those beliefs, ``belief * (1 + error)``: the knob that makes
        the operator know its share and phones per person only approximately when the
        plan carries the simulator's values (e.g. -0.05 = believes 5% less).
    roaming_device_share
        Share of the devices in the records the operator believes to be inbound roamers
        (their phones are scaled by `roaming_market_share`, not by the home share).
    roaming_market_share
        Share of foreign visitors' phones believed to roam onto this operator; None =
        `market_share`.
    privacy_threshold
        Zone-bins with fewer people than this are marked suppressed (Proximus: 30).
    laplace_epsilon
        If given, Laplace noise of scale 1 / epsilon is added to every cell's device count
        in every bin before anything is estimated (sensitivity 1: a device counts in one
        cell per bin), so the whole table is epsilon-DP per bin by post-processing
        (:mod:`sim.estimate.privacy`). The run's release draws this noise once for all
        methods instead (:func:`sim.estimate.release_estimates`).
    confidence
        Nominal level of the [lower, upper] intervals (:mod:`sim.estimate.intervals`);
        the run's manifest states it (``facts.estimators.intervals``).
    random_state
        Seed or ``numpy.random.Generator`` for the noise; same seed, same output.
    dedup
        Multi-SIM deduplication (:mod:`sim.estimate.dedup`): each device counts
        ``1 - p / 2`` persons, p its probability of being one of a person's two phones of
        this operator, learned from the records (devices that move together), and persons
        are scaled by the share of people with at least one phone of the operator instead
        of ``market_share * phones_per_person``. Batch mode computes p once from the whole
        day; real time recomputes it every `dedup_refresh_min` from the records before,
        so no estimate uses a later record. Needs records (not :meth:`fit_counts`).
    second_device
        The operator's belief in the share of people carrying a second phone (DESIGN §3:
        about 0.1): the deduplication's prior; ownership is then
        ``phones_per_person / (1 + second_device)``. Unused without `dedup`.
    dedup_refresh_min
        Real time with `dedup`: minutes between recomputations of the probabilities. Each
        recomputation reads every record before it, so a day of H hours costs about
        ``H / (2 refresh)`` batch computations; until the first, every device counts at
        the prior (the fixed factor's count).
    """

    #: Name in the ``method`` column.
    method: ClassVar[str] = ""

    def __init__(
        self,
        *,
        window_min: float = 60.0,
        latency_min: float = 0.0,
        mode: Literal["realtime", "batch"] = "realtime",
        market_share: float | None = None,
        phones_per_person: float | None = None,
        roaming_device_share: float = 0.0,
        roaming_market_share: float | None = None,
        share_error: float = 0.0,
        phones_error: float = 0.0,
        privacy_threshold: float = 30.0,
        laplace_epsilon: float | None = None,
        confidence: float = 0.95,
        random_state: int | np.random.Generator | None = None,
        dedup: bool = False,
        second_device: float = 0.1,
        dedup_refresh_min: float = 60.0,
    ) -> None:
        self.window_min = window_min
        self.latency_min = latency_min
        self.mode = mode
        self.market_share = market_share
        self.phones_per_person = phones_per_person
        self.roaming_device_share = roaming_device_share
        self.roaming_market_share = roaming_market_share
        self.share_error = share_error
        self.phones_error = phones_error
        self.privacy_threshold = privacy_threshold
        self.laplace_epsilon = laplace_epsilon
        self.confidence = confidence
        self.random_state = random_state
        self.dedup = dedup
        self.second_device = second_device
        self.dedup_refresh_min = dedup_refresh_min

    # -- scikit-learn parameter protocol -------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" not in klass.__dict__ or klass is object:
                continue
            init = klass.__dict__["__init__"]  # the class's own, not an inherited one
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind == p.KEYWORD_ONLY and p.name not in names:
                    names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters and their current values."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Set constructor parameters; an unknown name is an error. Returns self."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise EstimateInputError(
                    f"{type(self).__name__}: unknown parameter {name!r}; "
                    f"parameters are {', '.join(sorted(valid))}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        """The class and its parameters, as scikit-learn prints an estimator."""
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- fit / estimate --------------------------------------------------------------------
    def fit(
        self,
        records: pd.DataFrame | PreparedRecords,
        plan: NetworkPlan,
        *,
        counters: pd.DataFrame | None = None,
    ) -> Estimator:
        """Check the operator data and prepare what does not depend on zones or bins.

        Parameters
        ----------
        records
            Operator records in the ``RECORD_COLUMNS`` form, or records already prepared
            by :func:`sim.estimate.presence.prepare_records` for this plan (lets several
            estimators share one validation and sort).
        plan
            The operator's network plan.
        counters
            Per-cell per-minute counters (``COUNTER_COLUMNS``); checked and kept as
            ``counters_``; the reference methods here do not use them.

        Returns
        -------
        Estimator
            self, fitted.

        Raises
        ------
        EstimateInputError
            The plan has no cells, records are empty, name unknown cells or fall outside
            the plan's period, counters are malformed, or a parameter is out of range.
        """
        self._check_params()
        self.plan_ = check_plan(plan, error=EstimateInputError)
        self.cell_ids_ = plan.cells["cell_id"].astype(str).to_numpy(dtype=object)
        self.counts_ = self.count_bins_ = None
        if isinstance(records, PreparedRecords):
            if records.plan is not plan:
                raise EstimateInputError(
                    "records were prepared for another network plan; prepare them again"
                )
            self.records_ = records
        else:
            self.records_ = prepare_records(records, plan, error=EstimateInputError)
        self.counters_ = check_counters(counters, plan, error=EstimateInputError)
        self._fit_scaling(plan)
        self._fit_space(plan)
        return self

    def fit_plan(self, plan: NetworkPlan, *, counters: pd.DataFrame | None = None) -> Estimator:
        """Prepare on the network plan alone, for counts counted elsewhere.

        A streaming run counts devices per cell as the records arrive
        (:class:`~sim.estimate.live.LivePresence`) and hands the counts to
        :meth:`estimate_from_counts`; what the method prepares from the plan (scaling,
        footprints) is what :meth:`fit` prepares; no records are kept, so the real-time
        update of a record-reading method (:meth:`estimate_minute`) is not available.

        Raises
        ------
        EstimateInputError
            The plan has no cells or is malformed, counters are malformed, or a parameter
            is out of range.
        """
        self._check_params()
        self.plan_ = check_plan(plan, error=EstimateInputError)
        self.cell_ids_ = plan.cells["cell_id"].astype(str).to_numpy(dtype=object)
        self.counts_ = self.count_bins_ = None
        self.records_ = None
        self.counters_ = check_counters(counters, plan, error=EstimateInputError)
        self._fit_scaling(plan)
        self._fit_space(plan)
        return self

    def _dedup_weights(self, instants: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Groups of reference instants and the device weights that apply to them.

        Without `dedup`: one group, no weights. Batch: one group, weights from every
        record. Real time: one group per refresh period, weights from the records before
        the period's start (:func:`sim.estimate.dedup.dedup_weights`).
        """
        if not self.dedup:
            return [(np.arange(len(instants)), None)]
        return dedup_weights(
            self.records_,
            instants,
            prior=self.twin_prior_,
            refresh=None if self.mode == "batch" else pd.Timedelta(minutes=self.dedup_refresh_min),
            error=EstimateInputError,
        )

    def day_duplicity(self) -> Duplicity:
        """The deduplication of the whole day's records (what ``duplicity.parquet`` holds).

        Shared with the other estimators fitted on the same prepared records.
        """
        if not self.dedup:
            raise EstimateInputError(f"{type(self).__name__}: dedup is off")
        if getattr(self, "records_", None) is None:
            raise NotFittedError(f"{type(self).__name__}: call fit(records, plan) first")
        return shared_duplicity(self.records_, prior=self.twin_prior_)

    def fit_counts(self, counts: pd.DataFrame, plan: NetworkPlan | None = None) -> Estimator:
        """Fit on devices per cell and bin instead of records (outside data).

        Parameters
        ----------
        counts
            A table with columns ``cell_id``, ``bin`` (time-zone-aware bin start) and
            ``devices`` (>= 0, may be fractional); a cell-bin absent from it counts 0.
        plan
            The operator's network plan, if there is one. Without it, the Bayes and EM
            estimators need ``emission`` and ``tiles`` (their cells are the emission's
            rows), and people are devices scaled by ``market_share`` and
            ``phones_per_person`` (1 when not given: the output is then devices).

        Returns
        -------
        Estimator
            self, fitted; :meth:`estimate` then takes ``bins=None`` for every bin of the
            counts. The real-time update (:meth:`estimate_minute`) needs records.

        Raises
        ------
        EstimateInputError
            Malformed counts (naming the row), a cell unknown to the plan or emission, or
            missing spatial inputs.
        """
        self._check_params()
        self.plan_ = None if plan is None else check_plan(plan, error=EstimateInputError)
        known = (
            plan.cells["cell_id"].astype(str).to_numpy(dtype=object)
            if plan is not None
            else self._outside_cells()
        )
        if self.dedup:
            raise EstimateInputError(
                f"{type(self).__name__}: dedup reads each device's records; counts per cell "
                "have none. Use fit(records, plan), or dedup=False"
            )
        matrix, cells, bins = counts_matrix(counts, cells=known, error=EstimateInputError)
        self.cell_ids_, self.counts_, self.count_bins_ = cells, matrix, bins
        self.records_ = None
        self.counters_ = None
        self._fit_scaling(plan)
        self._fit_space(plan)
        return self

    def _outside_cells(self) -> np.ndarray | None:
        """The cells a method knows without a plan (the emission's); None = the counts'."""
        return None

    def _fit_scaling(self, plan: NetworkPlan | None) -> None:
        default_share = plan.market_share if plan is not None else 1.0
        default_phones = plan.phones_per_person if plan is not None else 1.0
        share = self.market_share if self.market_share is not None else default_share
        phones = self.phones_per_person if self.phones_per_person is not None else default_phones
        share, phones = share * (1.0 + self.share_error), phones * (1.0 + self.phones_error)
        if self.dedup:
            # devices weighted by 1 - p/2 count the people with a phone of the operator
            try:
                self.twin_prior_ = twin_prior(market_share=share, second_device=self.second_device)
                phones = persons_per_person(
                    market_share=share, phones_per_person=phones,
                    second_device=self.second_device,
                ) / share  # fmt: skip
            except DuplicityError as exc:
                raise EstimateInputError(f"{type(self).__name__}: {exc}") from None
        self.people_per_device_ = people_per_device(
            market_share=share,
            phones_per_person=phones,
            roaming_device_share=self.roaming_device_share,
            roaming_market_share=self.roaming_market_share,
            error=EstimateInputError,
        )

    def estimate(self, zones: Any, bins: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        """People per zone and bin, with intervals and suppression marks.

        Parameters
        ----------
        zones
            A ``sim.zones.Zones`` or ``ZoneSystem``, a GeoDataFrame (EPSG:31370) with
            columns ``zone`` and ``geometry`` and either a ``system`` column or
            ``attrs["system"]``, or a dict ``{system name: any of those}``. Ignored by the
            presence method, which reports per cell.
        bins
            Bin starts, time-zone-aware (converted to UTC), strictly increasing, inside the
            plan's period; the width is the smallest step (1 minute for a single bin).
            After :meth:`fit_counts`: bins of the counts, None for all of them.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`ESTIMATE_COLUMNS`, one row per zone and bin.
        """
        if getattr(self, "counts_", None) is not None:
            if bins is None:
                return self.estimate_from_counts(self.counts_, zones, self.count_bins_)
            bins = _aware_bins(bins)
            where = self.count_bins_.get_indexer(bins)
            if (where < 0).any():
                raise EstimateInputError(
                    f"bins: {bins[int(np.flatnonzero(where < 0)[0])].isoformat()} is not a bin "
                    "of the counts"
                )
            return self.estimate_from_counts(self.counts_[:, where], zones, bins)
        if not hasattr(self, "records_"):
            raise NotFittedError(f"{type(self).__name__}: call fit(records, plan) first")
        if bins is None:
            raise EstimateInputError("bins: give the bin starts to estimate")
        bins, width = check_bins(bins, self.plan_, error=EstimateInputError)
        return self.estimate_from_counts(self.cell_counts(bins, width=width), zones, bins)

    def estimate_from_counts(
        self,
        counts: np.ndarray,
        zones: Any,
        bins: pd.DatetimeIndex,
        *,
        noise_epsilon: float | None = None,
        live: bool = False,
    ) -> pd.DataFrame:
        """People per zone and bin from devices per cell (rows, plan order) and bin.

        The step after :meth:`cell_counts`: lets several methods share one set of
        counts (e.g. one draw of privacy noise) and takes counts from outside.

        Parameters
        ----------
        counts
            Devices per cell and bin, shape (cells, bins), finite and >= 0.
        zones, bins
            As in :meth:`estimate`.
        noise_epsilon
            The counts already carry Laplace noise of scale ``1 / noise_epsilon`` (as the
            release's shared draw does): the intervals are widened for it.
        live
            The counts are the real-time minute update (a streaming run's frame): a
            method may use its cheaper real-time bound, as :meth:`estimate_minute` does
            (``interval_facts()["realtime"]`` says which).
        """
        if not hasattr(self, "cell_ids_"):
            raise NotFittedError(f"{type(self).__name__}: call fit first")
        if self.plan_ is not None:
            bins, _ = check_bins(bins, self.plan_, error=EstimateInputError)
        else:
            bins = _aware_bins(bins)
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (len(self.cell_ids_), len(bins)):
            raise EstimateInputError(
                f"counts have shape {counts.shape}; need (cells = {len(self.cell_ids_)}, "
                f"bins = {len(bins)})"
            )
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise EstimateInputError("counts must be finite and >= 0")
        if noise_epsilon is not None and not noise_epsilon > 0:
            raise EstimateInputError(f"noise_epsilon = {noise_epsilon}; must be > 0 or None")
        rng = np.random.default_rng(self.random_state)
        epsilon = noise_epsilon
        if self.laplace_epsilon is not None:
            counts = laplace_counts(counts, epsilon=self.laplace_epsilon, rng=rng)
            epsilon = self.laplace_epsilon
        return self._tables(
            counts, self._zone_sets(zones), bins, epsilon=epsilon, rng=rng, live=live
        )

    def _tables(
        self,
        counts: np.ndarray,
        sets: list[ZoneSet],
        bins: pd.DatetimeIndex,
        *,
        epsilon: float | None,
        rng: np.random.Generator,
        live: bool = False,
    ) -> pd.DataFrame:
        """Devices per zone, their location variance, then the tables of every system.

        `live`: the real-time minute update, where a method may use a cheaper bound.
        """
        devices = [self._devices_per_zone(counts, zs) for zs in sets]
        noise_var = 0.0 if epsilon is None else 2.0 / epsilon**2  # Laplace variance
        variances = self._device_variances(
            counts, sets, devices, noise_var=noise_var, rng=rng, bins=bins, live=live
        )
        frames = [
            self._table(d, zs, bins, rng=rng, device_var=v)
            for d, zs, v in zip(devices, sets, variances, strict=True)
        ]
        return concat_estimates(frames, consume=True)

    def estimate_minute(self, zones: Any, bin_start: pd.Timestamp) -> pd.DataFrame:
        """The real-time update of one bin: what the crisis-centre screen shows for it.

        Reads only the records in ``[r - W, r)`` with r the bin's reference instant
        (:func:`~sim.estimate.presence.presence_at`), so it never touches a record later
        than the bin start plus the latency. Its estimates equal the same bin of
        :meth:`estimate`; so do its bounds, except where a method uses a cheaper bound in
        real time (EM skips its density bootstrap: ``interval_facts()["realtime"]``).
        """
        if getattr(self, "records_", None) is None:
            raise NotFittedError(
                f"{type(self).__name__}: the real-time update reads records; call "
                "fit(records, plan) first"
            )
        if self.mode != "realtime":
            raise EstimateInputError(
                f"{type(self).__name__}: estimate_minute is the real-time update; mode is "
                f"{self.mode!r}"
            )
        bins, width = check_bins(
            pd.DatetimeIndex([pd.Timestamp(bin_start)]), self.plan_, error=EstimateInputError
        )
        (instant,) = reference_instants(
            bins, width=width, latency=pd.Timedelta(minutes=self.latency_min), mode="realtime"
        )
        ((_, weights),) = self._dedup_weights(np.array([int(instant)]))
        counts = presence_at(
            self.records_,
            int(instant),
            window=pd.Timedelta(minutes=self.window_min),
            weights=weights,
        )[:, None]
        rng = np.random.default_rng(self.random_state)
        if self.laplace_epsilon is not None:
            counts = laplace_counts(counts, epsilon=self.laplace_epsilon, rng=rng)
        return self._tables(
            counts, self._zone_sets(zones), bins, epsilon=self.laplace_epsilon, rng=rng, live=True
        )

    def cell_counts(
        self, bins: pd.DatetimeIndex, *, width: pd.Timedelta | None = None
    ) -> np.ndarray:
        """Devices present per cell (rows, plan order) and bin (columns)."""
        if width is None:
            bins, width = check_bins(bins, self.plan_, error=EstimateInputError)
        instants = reference_instants(
            bins, width=width, latency=pd.Timedelta(minutes=self.latency_min), mode=self.mode
        )
        window = pd.Timedelta(minutes=self.window_min)
        counts = np.zeros((self.plan_.n_cells, len(instants)))
        for which, weights in self._dedup_weights(instants):
            counts[:, which] = presence_counts(
                self.records_, instants[which], window=window, mode=self.mode, weights=weights
            )
        return counts

    # -- what a method defines ------------------------------------------------------------
    def _fit_space(self, plan: NetworkPlan) -> None:
        """Prepare the spatial model (cell footprints); nothing for presence."""

    def _zone_sets(self, zones: Any) -> list[ZoneSet]:
        return zone_sets(zones, error=EstimateInputError)

    def _devices_per_zone(self, counts: np.ndarray, zs: ZoneSet) -> np.ndarray:
        """Devices per zone (rows) and bin (columns) from devices per cell and bin."""
        raise NotImplementedError

    #: How a method's intervals place a cell's devices (the manifest's interval facts).
    location_model: ClassVar[str] = "none: a zone is one cell (sampling and noise only)"

    def _device_variances(
        self,
        counts: np.ndarray,
        sets: list[ZoneSet],
        devices: list[np.ndarray],
        *,
        noise_var: float,
        rng: np.random.Generator,
        bins: pd.DatetimeIndex,
        live: bool = False,
    ) -> list[np.ndarray]:
        """Variance of each zone-bin's device count given the cell counts.

        A method whose zones are its cells (presence) knows where its devices are: only
        the count noise is left. Spatial methods return the variance of their location
        posterior (:mod:`sim.estimate.intervals`). `live` is the real-time minute update.
        """
        return [np.full(d.shape, noise_var) for d in devices]

    def interval_facts(self) -> dict[str, Any]:
        """What the ``lower``/``upper`` columns mean, for the manifest."""
        return {
            "confidence": self.confidence,
            "location": self.location_model,
            "sampling": "binomial thinning by people per device, negative-binomial "
            "people given devices",
            "belief_relative_sd": round(belief_uncertainty(self.share_error, self.phones_error), 6),
            "distribution": "Gamma with the interval's mean and variance",
            "realtime": "the same as in batch",
        }

    # -- shared tail: people, intervals, privacy --------------------------------------------
    def _table(
        self,
        devices: np.ndarray,
        zs: ZoneSet,
        bins: pd.DatetimeIndex,
        *,
        rng: np.random.Generator,
        device_var: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """The table of one zone system; `device_var` None = no location uncertainty."""
        devices = np.maximum(devices, 0.0)
        f = self.people_per_device_
        lower = np.empty(devices.shape, dtype=np.float32)
        upper = np.empty(devices.shape, dtype=np.float32)
        rows = max(1, _INTERVAL_BLOCK // max(devices.shape[1], 1))  # bounded temporaries
        for lo in range(0, devices.shape[0], rows):
            part = slice(lo, lo + rows)
            lower[part], upper[part] = people_interval(
                devices[part],
                np.zeros_like(devices[part]) if device_var is None else device_var[part],
                people_per_device=f,
                confidence=self.confidence,
                belief_sd=belief_uncertainty(self.share_error, self.phones_error),
            )
        est = devices * f
        suppressed = est < self.privacy_threshold
        n_zones, n_bins = devices.shape
        zone_codes = np.repeat(np.arange(n_zones, dtype=np.int32), n_bins)
        return pd.DataFrame(
            {
                "method": pd.Categorical.from_codes(
                    np.zeros(n_zones * n_bins, dtype=np.int8), categories=[self.method]
                ),
                "zone_system": pd.Categorical.from_codes(
                    np.zeros(n_zones * n_bins, dtype=np.int8), categories=[zs.system]
                ),
                "zone": pd.Categorical.from_codes(zone_codes, dtype=_zone_dtype(zs)),
                "bin": _utc(np.tile(bins.asi8, n_zones)),
                "estimate": est.ravel().astype(np.float32),
                "lower": lower.ravel().astype(np.float32),
                "upper": upper.ravel().astype(np.float32),
                "suppressed": suppressed.ravel(),
                "mode": pd.Categorical.from_codes(
                    np.zeros(n_zones * n_bins, dtype=np.int8), categories=[self.mode]
                ),
            }
        )

    def _check_params(self) -> None:
        name = type(self).__name__
        if not self.window_min > 0:
            raise EstimateInputError(f"{name}: window_min = {self.window_min}; must be > 0")
        if not self.latency_min >= 0:
            raise EstimateInputError(f"{name}: latency_min = {self.latency_min}; must be >= 0")
        if self.mode not in ("realtime", "batch"):
            raise EstimateInputError(f"{name}: mode = {self.mode!r}; use 'realtime' or 'batch'")
        if not 0 < self.confidence < 1:
            raise EstimateInputError(f"{name}: confidence = {self.confidence}; must be in (0, 1)")
        if not self.privacy_threshold >= 0:
            raise EstimateInputError(
                f"{name}: privacy_threshold = {self.privacy_threshold}; must be >= 0"
            )
        if self.laplace_epsilon is not None and not self.laplace_epsilon > 0:
            raise EstimateInputError(
                f"{name}: laplace_epsilon = {self.laplace_epsilon}; must be > 0 or None"
            )
        if not isinstance(self.dedup, bool | np.bool_):
            raise EstimateInputError(f"{name}: dedup = {self.dedup!r}; must be True or False")
        if not 0.0 <= self.second_device < 1.0:
            raise EstimateInputError(
                f"{name}: second_device = {self.second_device}; must be in [0, 1)"
            )
        if not self.dedup_refresh_min > 0:
            raise EstimateInputError(
                f"{name}: dedup_refresh_min = {self.dedup_refresh_min}; must be > 0"
            )


_ZONE_DTYPES: weakref.WeakKeyDictionary[ZoneSet, pd.CategoricalDtype] = weakref.WeakKeyDictionary()


def _zone_dtype(zs: ZoneSet) -> pd.CategoricalDtype:
    """The zone column's dtype of a zone set, built once: tables of one zone set share it.

    A streaming run builds a small table per method and minute; with one dtype their
    stacking (:func:`concat_estimates`) needs no union of categories. Kept while the
    zone set lives.
    """
    dtype = _ZONE_DTYPES.get(zs)
    if dtype is None:
        dtype = _ZONE_DTYPES[zs] = pd.CategoricalDtype(pd.Index(zs.zone))
    return dtype


def _aware_bins(bins: Any) -> pd.DatetimeIndex:
    """Bin starts without a plan: aware, strictly increasing, in UTC."""
    if not isinstance(bins, pd.DatetimeIndex) or bins.tz is None or len(bins) == 0:
        raise EstimateInputError("bins: give a non-empty, time-zone-aware DatetimeIndex")
    bins = bins.tz_convert("UTC").as_unit("ns")
    if (np.diff(bins.asi8) <= 0).any():
        raise EstimateInputError("bins: bin starts must be strictly increasing")
    return bins


def concat_estimates(frames: list[pd.DataFrame], *, consume: bool = False) -> pd.DataFrame:
    """Stack estimate tables, unioning their categories.

    With ``consume=True`` each column is dropped from the input frames once stacked, so
    the peak memory is about one copy of the result rather than two.
    """
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in ESTIMATE_COLUMNS.items()})
    if consume and len(frames) == 1 and list(frames[0].columns) == list(ESTIMATE_COLUMNS):
        return frames[0]  # given up by the caller: nothing to stack
    out: dict[str, Any] = {}
    for column, dtype in ESTIMATE_COLUMNS.items():
        first = frames[0][column].dtype if dtype == "category" else None
        if first is not None and all(f[column].dtype is first for f in frames[1:]):
            # one dtype (e.g. the zones of one zone set): the codes stack as they are
            codes = np.concatenate([f[column].cat.codes.to_numpy() for f in frames])
            out[column] = pd.Categorical.from_codes(codes, dtype=first)
        elif dtype == "category":
            cats = pd.Index(
                pd.unique(np.concatenate([f[column].cat.categories.to_numpy() for f in frames]))
            )
            codes = np.concatenate(
                [
                    cats.get_indexer(f[column].cat.categories).astype(np.int32)[f[column].cat.codes]
                    for f in frames
                ]
            )
            out[column] = pd.Categorical.from_codes(codes, categories=cats)
        elif column == "bin":
            out[column] = _utc(np.concatenate([f[column].array.asi8 for f in frames]))
        else:
            out[column] = np.concatenate([f[column].to_numpy() for f in frames])
        if consume:
            for f in frames:
                del f[column]
    return pd.DataFrame(out, copy=False)


def _utc(ns: np.ndarray) -> pd.DatetimeIndex:
    """UTC times from ns since the epoch, without passing through Python objects."""
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")
