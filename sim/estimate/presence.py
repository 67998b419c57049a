"""Presence: which devices are in which cell in each time bin, from the operator records.

A device counts at its last-known cell if it was seen within a window W (the periodic TAU
timer T3412 = 54 min makes ~60 min the natural choice), once per bin however often it
changed cells inside the bin (it counts where it was last seen). Every record is a
sighting whatever its procedure or outcome (a rejected request still comes from a device
on that cell); a detach ends the device's presence until its next record.

The counts are computed for all bins at once without a loop over devices: each record is
the device's last-known record for the reference instants r in ``(t_k, min(t_next, t_k + W)]``
(real time) or, in batch mode, for r nearer to ``t_k`` than to the device's neighbouring
records and within W of ``t_k``. Each record therefore covers a contiguous run of bins,
found by ``searchsorted``, and a difference array over (cell, bin) summed along the bins
gives the counts. A record's run in real time depends only on whether later records are
earlier than r, so a record later than r never changes the count at r (the real-time
guarantee; :func:`presence_at` computes one instant from past records alone).

Also here: the checks of the operator's inputs (plan, records, counters, bins), because
presence is where they are first read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from sim.network.plan import CELL_COLUMNS, NetworkPlan
from sim.network.records import COUNTER_COLUMNS, validate_records

__all__ = [
    "PreparedRecords",
    "check_bins",
    "check_counters",
    "check_plan",
    "prepare_records",
    "presence_at",
    "presence_counts",
    "reference_instants",
]


@dataclass(eq=False)
class PreparedRecords:
    """Validated records as arrays sorted by device then time.

    Attributes
    ----------
    plan
        The plan the cell indices refer to.
    device
        Dense device codes (0..n_devices-1).
    time_ns
        Record times, nanoseconds since the epoch (UTC).
    cell
        Row of the record's cell in ``plan.cells``.
    detach
        True where the procedure is a detach (the device leaves the network).
    device_ids
        Pseudonymous id of each device code (``device_ids[code]``).
    """

    plan: NetworkPlan
    device: np.ndarray
    time_ns: np.ndarray
    cell: np.ndarray
    detach: np.ndarray
    _by_time: np.ndarray | None = field(default=None, repr=False)
    _time_sorted: np.ndarray | None = field(default=None, repr=False)
    device_ids: np.ndarray | None = field(default=None, repr=False)
    #: results derived from these records and shared by the estimators fitted on them
    #: (e.g. the deduplication), by key
    derived: dict = field(default_factory=dict, repr=False)

    @property
    def n_records(self) -> int:
        """Number of records."""
        return len(self.time_ns)

    @property
    def by_time(self) -> np.ndarray:
        """Permutation putting the records in time order (stable: device order kept)."""
        if self._by_time is None:
            self._by_time = np.argsort(self.time_ns, kind="stable")
        return self._by_time

    @property
    def time_sorted(self) -> np.ndarray:
        """Record times in time order (``time_ns[by_time]``)."""
        if self._time_sorted is None:
            self._time_sorted = self.time_ns[self.by_time]
        return self._time_sorted


def check_plan(plan: NetworkPlan, *, error: type[Exception] = ValueError) -> NetworkPlan:
    """Check that `plan` has cells, the cell columns, beliefs in range and a period."""
    if not isinstance(plan, NetworkPlan):
        raise error(f"plan: expected a sim.network.plan.NetworkPlan, got {type(plan).__name__}")
    missing = [c for c in CELL_COLUMNS if c not in plan.cells.columns]
    if missing:
        raise error(f"plan.cells: missing column(s) {', '.join(missing)}")
    if plan.cells.empty:
        raise error(
            f"plan of operator {plan.operator!r} has no sites (no cell): an estimator needs "
            "at least one cell to place devices"
        )
    if plan.cells["cell_id"].duplicated().any():
        dup = plan.cells["cell_id"][plan.cells["cell_id"].duplicated()].iloc[0]
        raise error(f"plan.cells: cell_id {dup} appears more than once")
    xy = plan.cells[["x", "y"]].to_numpy(dtype=float)
    if not np.isfinite(xy).all():
        raise error("plan.cells: x/y must be finite numbers (EPSG:31370 metres)")
    _period(plan, error=error)
    return plan


def _period(plan: NetworkPlan, *, error: type[Exception]) -> tuple[pd.Timestamp, pd.Timestamp]:
    try:
        start, end = (pd.Timestamp(p) for p in plan.period)
    except (ValueError, TypeError) as exc:
        raise error(f"plan.period {plan.period!r}: not ISO 8601 times: {exc}") from None
    if start.tz is None or end.tz is None:
        raise error(f"plan.period {plan.period!r}: times need a time zone")
    if not end > start:
        raise error(f"plan.period {plan.period!r}: the end must be after the start")
    return start.tz_convert("UTC"), end.tz_convert("UTC")


def prepare_records(
    records: pd.DataFrame, plan: NetworkPlan, *, error: type[Exception] = ValueError
) -> PreparedRecords:
    """Validate `records` against `plan` and sort them by device and time.

    Raises
    ------
    error
        An empty record set, a cell id the plan does not have, a time outside the plan's
        period (each message names the first offending value and how many there are).
    sim.network.records.RecordsError
        Columns or dtypes are not the record form.
    """
    check_plan(plan, error=error)
    if not isinstance(records, pd.DataFrame):
        raise error(f"records: expected a pandas DataFrame, got {type(records).__name__}")
    if len(records) == 0:
        raise error(
            "records: the record set is empty; an estimator needs at least one record "
            "(did the network stage run for this operator?)"
        )
    records = validate_records(records, where="records")
    rec_cell = records["cell_id"].to_numpy(dtype=np.int64)
    cell_index, known = _cell_rows(plan.cells["cell_id"].to_numpy(dtype=np.int64), rec_cell)
    if not known.all():
        bad = np.unique(rec_cell[~known])
        raise error(
            f"records: {int((~known).sum())} record(s) name {len(bad)} cell id(s) the network "
            f"plan of {plan.operator!r} does not have, e.g. {bad[:5].tolist()}; records and "
            "plan must come from the same operator and run"
        )
    times = records["time"]
    if times.isna().any():
        raise error(f"records: {int(times.isna().sum())} record(s) have no time")
    start, end = _period(plan, error=error)
    outside = (times < start) | (times > end)
    if outside.any():
        first = times[outside].iloc[0]
        raise error(
            f"records: {int(outside.sum())} record(s) fall outside the plan's period "
            f"{start.isoformat()} .. {end.isoformat()}, e.g. {first.isoformat()}"
        )
    codes, device_ids = pd.factorize(records["device"].to_numpy())
    device = codes.astype(np.int64)
    time_ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    # time order (free when the records come time-ordered, as a network writes them),
    # then device order by the unique key (device, rank in time): ties stay as given
    n = len(time_ns)
    if n < 2 or (time_ns[1:] >= time_ns[:-1]).all():
        by_time = np.arange(n)
    else:
        by_time = np.argsort(time_ns, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_time] = np.arange(n)
    # the key holds the rank, so a plain (fast, vectorised) sort gives the permutation
    sort = by_time[np.sort(device * n + rank) % n]
    del rank
    position = np.empty_like(sort)
    position[sort] = np.arange(len(sort))
    detach = (records["procedure"] == "detach").to_numpy()
    prepared = PreparedRecords(
        plan=plan,
        device=device[sort],
        time_ns=time_ns[sort],
        cell=cell_index[sort],
        detach=detach[sort],
        _by_time=position[by_time],
        _time_sorted=time_ns[by_time],
        device_ids=np.asarray(device_ids),
    )
    return prepared


def _cell_rows(cell_ids: np.ndarray, rec_cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row in the plan of each record's cell, and whether the plan has it at all."""
    lo, hi = int(cell_ids.min()), int(cell_ids.max())
    if hi - lo < 50_000_000:  # a lookup table beats a binary search per record
        table = np.full(hi - lo + 1, -1, dtype=np.int64)
        table[cell_ids - lo] = np.arange(len(cell_ids))
        inside = (rec_cell >= lo) & (rec_cell <= hi)
        rows = np.where(inside, table[np.clip(rec_cell - lo, 0, hi - lo)], -1)
        return rows, rows >= 0
    order = np.argsort(cell_ids, kind="stable")
    pos = np.clip(np.searchsorted(cell_ids[order], rec_cell), 0, len(cell_ids) - 1)
    return order[pos], cell_ids[order][pos] == rec_cell


def check_counters(
    counters: pd.DataFrame | None, plan: NetworkPlan, *, error: type[Exception] = ValueError
) -> pd.DataFrame | None:
    """Check per-cell counters: the ``COUNTER_COLUMNS`` and only cells of the plan."""
    if counters is None:
        return None
    missing = [c for c in COUNTER_COLUMNS if c not in counters.columns]
    if missing:
        raise error(f"counters: missing column(s) {', '.join(missing)}")
    unknown = ~counters["cell_id"].isin(plan.cells["cell_id"])
    if unknown.any():
        raise error(
            f"counters: {int(unknown.sum())} row(s) name cell ids the plan does not have, "
            f"e.g. {counters['cell_id'][unknown].iloc[0]}"
        )
    return counters


def check_bins(
    bins: pd.DatetimeIndex, plan: NetworkPlan, *, error: type[Exception] = ValueError
) -> tuple[pd.DatetimeIndex, pd.Timedelta]:
    """Check bin starts (aware, increasing, inside the plan's period).

    Returns them in UTC and the bin width (the smallest step; 1 minute for a single bin).
    """
    if not isinstance(bins, pd.DatetimeIndex):
        raise error(
            f"bins: expected a pandas DatetimeIndex of bin starts, got {type(bins).__name__}"
        )
    if len(bins) == 0:
        raise error("bins: no bin; give at least one bin start")
    if bins.tz is None:
        raise error("bins: bin starts need a time zone (e.g. tz='UTC')")
    bins = bins.tz_convert("UTC").as_unit("ns")
    steps = np.diff(bins.asi8)
    if (steps <= 0).any():
        raise error("bins: bin starts must be strictly increasing")
    width = pd.Timedelta(int(steps.min()), unit="ns") if len(steps) else pd.Timedelta(minutes=1)
    start, end = _period(plan, error=error)
    if bins[0] < start or bins[-1] + width > end + pd.Timedelta(seconds=1):
        raise error(
            f"bins: {bins[0].isoformat()} .. {(bins[-1] + width).isoformat()} reach outside "
            f"the plan's period {start.isoformat()} .. {end.isoformat()}"
        )
    return bins, width


def reference_instants(
    bins: pd.DatetimeIndex,
    *,
    width: pd.Timedelta,
    latency: pd.Timedelta,
    mode: Literal["realtime", "batch"],
) -> np.ndarray:
    """The instant (ns since epoch) whose presence stands for each bin.

    Real time: ``min(bin start + latency, bin end)``, the latest instant whose records
    have arrived when the bin is shown. Batch: the bin end (when the truth counts).
    """
    start = bins.asi8
    end = start + width.value
    if mode == "batch":
        return end
    return np.minimum(start + latency.value, end)


def _record_runs(
    rec: PreparedRecords, *, window_ns: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """For each record, the instants (open start, closed end] for which it places its device."""
    t = rec.time_ns
    same_next = np.zeros(len(t), dtype=bool)
    same_next[:-1] = rec.device[1:] == rec.device[:-1]
    big = np.iinfo(np.int64).max // 2
    t_next = np.full(len(t), big, dtype=np.int64)
    t_next[:-1] = np.where(same_next[:-1], t[1:], big)
    if mode == "realtime":
        start = t.copy()
        end = np.minimum(t_next, t + window_ns)
    else:
        same_prev = np.zeros(len(t), dtype=bool)
        same_prev[1:] = same_next[:-1]
        prev_detach = np.zeros(len(t), dtype=bool)
        prev_detach[1:] = rec.detach[:-1]
        next_detach = np.zeros(len(t), dtype=bool)
        next_detach[:-1] = rec.detach[1:]
        t_prev = np.full(len(t), -big, dtype=np.int64)
        t_prev[1:] = np.where(same_prev[1:], t[:-1], -big)
        # half-way to a neighbouring record; a detach is a hard edge
        mid_prev = np.where(same_prev & ~prev_detach, t_prev + (t - t_prev) // 2, -big)
        mid_prev = np.where(same_prev & prev_detach, t - 1, mid_prev)
        mid_next = np.where(same_next & ~next_detach, t + (t_next - t) // 2, big)
        mid_next = np.where(same_next & next_detach, t_next, mid_next)
        start = np.maximum(mid_prev, t - window_ns - 1)
        end = np.minimum(mid_next, t + window_ns)
    end = np.where(rec.detach, start, end)  # a detach places nobody
    return start, end


def presence_counts(
    rec: PreparedRecords,
    instants: np.ndarray,
    *,
    window: pd.Timedelta,
    mode: Literal["realtime", "batch"] = "realtime",
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Devices present per cell (rows, plan order) at each reference instant (columns).

    Parameters
    ----------
    rec
        Prepared records.
    instants
        Increasing reference instants, ns since the epoch (:func:`reference_instants`).
    window
        Presence window W.
    mode
        ``"realtime"``: last record before the instant, within W. ``"batch"``: the record
        nearest in time, within W either side.
    weights
        What each device counts for, by device code (e.g. persons per device after
        deduplication, :mod:`sim.estimate.dedup`); None counts every device 1.
    """
    n_cells, n_bins = rec.plan.n_cells, len(instants)
    start, end = _record_runs(rec, window_ns=int(window.value), mode=mode)
    lo = np.searchsorted(instants, start, side="right")
    hi = np.searchsorted(instants, end, side="right")
    keep = hi > lo
    stride = n_bins + 1
    cell = rec.cell[keep]
    size = n_cells * stride
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[rec.device[keep]]
    diff = np.bincount(cell * stride + lo[keep], weights=w, minlength=size) - np.bincount(
        cell * stride + hi[keep], weights=w, minlength=size
    )
    counts = np.cumsum(diff.reshape(n_cells, stride), axis=1)[:, :n_bins].astype(np.float64)
    if w is not None:  # a weighted running sum leaves round-off below 0 where it returns to 0
        np.maximum(counts, 0.0, out=counts)
    return counts


def presence_at(
    rec: PreparedRecords,
    instant_ns: int,
    *,
    window: pd.Timedelta,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Devices per cell at one instant in real time, reading only records before it.

    The crisis-centre update of one minute: the records in ``[instant - W, instant)``
    (a slice of the time-sorted records), each device's last one, its cell counted.
    Equals the corresponding column of :func:`presence_counts` in real-time mode (with
    the same `weights`).
    """
    order = rec.by_time
    times = rec.time_sorted
    a = np.searchsorted(times, instant_ns - int(window.value), side="left")
    b = np.searchsorted(times, instant_ns, side="left")
    idx = order[a:b]  # positions (in device order) of the records inside the window
    if idx.size == 0:
        return np.zeros(rec.plan.n_cells)
    # a device's records are in time order in device order: its last one has the largest
    # position among the window's
    last = np.full(int(rec.device[-1]) + 1, -1, dtype=np.int64)
    np.maximum.at(last, rec.device[idx], idx)
    last = last[last >= 0]
    last = last[~rec.detach[last]]
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[rec.device[last]]
    return np.bincount(rec.cell[last], weights=w, minlength=rec.plan.n_cells).astype(np.float64)
