"""Alerts as a crisis centre sets them, and how the estimate's alerts match the truth's.

A crisis centre sets a threshold per zone (people) or one density for every tile
(people per m² of the zone's area; :func:`density_thresholds`). An *alert* is raised
when a series reaches its threshold and lasts while it stays there: an **episode** is a
maximal run of bins at or above the threshold. The screen shows the estimate's alerts;
what really happened are the truth's.

Matching (:func:`score_alerts`), with a tolerance of ``tolerance`` bins:

- a truth episode from bin ``ts`` to ``te`` (exclusive) is **detected** by the first
  estimate episode that overlaps ``[ts, te + tolerance)``; its *delay* is the estimate
  episode's start minus ``ts`` (0 when the estimate was already alerting);
- a detected episode is **on time** when the delay is at most ``tolerance``, else
  **late**; an undetected one is **missed**;
- an estimate episode that overlaps the window of no truth episode is a **false** alert.

A bin whose estimate is missing (NaN: suppressed by disclosure control, or not yet
computed) is below any threshold: a tile the operator does not publish raises no alert
on the screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "AlertScore",
    "density_thresholds",
    "episodes",
    "score_alerts",
    "score_zone_alerts",
]


def episodes(series: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of bins where `series` >= `threshold`.

    NaN counts as below. Returns two int64 arrays of equal length, in time order.
    """
    values = np.asarray(series, dtype=np.float64)
    above = np.zeros(len(values) + 2, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        above[1:-1] = values >= threshold
    step = np.diff(above)
    return np.flatnonzero(step == 1).astype(np.int64), np.flatnonzero(step == -1).astype(np.int64)


@dataclass(frozen=True)
class AlertScore:
    """How one zone's (or many zones' summed) estimate alerts matched the truth's.

    Attributes
    ----------
    on_time, late, missed, false
        Truth episodes detected in time, detected late, not detected; estimate episodes
        matching no truth episode.
    delays
        Delay (bins) of each detected truth episode, in order; 0 when the estimate was
        already alerting.
    truth_onsets, estimate_onsets
        Bins where the truth and the estimate crossed the threshold upwards.
    """

    on_time: int = 0
    late: int = 0
    missed: int = 0
    false: int = 0
    delays: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    truth_onsets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    estimate_onsets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def truth_alerts(self) -> int:
        """Number of truth episodes."""
        return self.on_time + self.late + self.missed

    def __add__(self, other: AlertScore) -> AlertScore:
        """Counts summed, delays joined (onsets are per zone: left empty)."""
        return AlertScore(
            on_time=self.on_time + other.on_time,
            late=self.late + other.late,
            missed=self.missed + other.missed,
            false=self.false + other.false,
            delays=np.concatenate([self.delays, other.delays]),
        )


def score_alerts(
    estimate: np.ndarray, truth: np.ndarray, threshold: float, *, tolerance: int = 0
) -> AlertScore:
    """Match the alerts of `estimate` against those of `truth` (one zone's series).

    Parameters
    ----------
    estimate, truth
        Series over the same bins; NaN is below any threshold.
    threshold
        Alert level (people); an alert is on while the series is at or above it.
    tolerance
        Bins an estimate alert may come after the truth's and still be on time; also how
        long after a truth episode ends an estimate alert still counts for it.

    Returns
    -------
    AlertScore
        Counts of on-time, late, missed and false alerts, delays and onsets.
    """
    if len(estimate) != len(truth):
        raise ValueError(
            f"estimate and truth cover {len(estimate)} and {len(truth)} bins; give series "
            "over the same bins"
        )
    if tolerance < 0:
        raise ValueError(f"tolerance = {tolerance}; must be >= 0 bins")
    ts, te = episodes(truth, threshold)
    es, ee = episodes(estimate, threshold)
    matched = np.zeros(len(es), dtype=bool)
    delays = []
    missed = 0
    for start, end in zip(ts.tolist(), te.tolist(), strict=True):
        hit = (es < end + tolerance) & (ee > start)
        if not hit.any():
            missed += 1
            continue
        matched |= hit
        first = int(np.flatnonzero(hit)[0])
        delays.append(max(int(es[first]) - start, 0))
    delay_arr = np.asarray(delays, dtype=np.int64)
    return AlertScore(
        on_time=int((delay_arr <= tolerance).sum()),
        late=int((delay_arr > tolerance).sum()),
        missed=missed,
        false=int((~matched).sum()),
        delays=delay_arr,
        truth_onsets=ts,
        estimate_onsets=es,
    )


def density_thresholds(area_m2: np.ndarray, density: float) -> np.ndarray:
    """People thresholds of zones of `area_m2` for one density (people per m²)."""
    if not density > 0:
        raise ValueError(f"density = {density}; an alert density must be > 0 people per m²")
    return np.asarray(area_m2, dtype=np.float64) * density


def score_zone_alerts(
    estimate: np.ndarray,
    truth: np.ndarray,
    thresholds: np.ndarray,
    *,
    tolerance: int = 0,
) -> tuple[AlertScore, dict[int, AlertScore]]:
    """Score every zone (rows of `estimate` and `truth`, zones x bins) at its threshold.

    Only zones where either series reaches its threshold are scored one by one (the
    others have no alert at all). Returns the summed score and the score of each zone
    that had an alert, by row.
    """
    est = np.asarray(estimate, dtype=np.float64)
    tru = np.asarray(truth, dtype=np.float64)
    if est.shape != tru.shape:
        raise ValueError(f"estimate {est.shape} and truth {tru.shape}: give the same zones x bins")
    limit = np.asarray(thresholds, dtype=np.float64).reshape(-1, 1)
    with np.errstate(invalid="ignore"):
        busy = np.flatnonzero(((est >= limit) | (tru >= limit)).any(axis=1))
    per_zone = {
        int(z): score_alerts(est[z], tru[z], float(limit[z, 0]), tolerance=tolerance)
        for z in busy.tolist()
    }
    total = sum(per_zone.values(), AlertScore())
    return total, per_zone
