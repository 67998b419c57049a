"""The streaming run: crowd, network and real-time estimators on one clock.

Each tick the crowd moves (:class:`~sim.crowd.CrowdModel`), its positions go straight
into the operator's network (:class:`~sim.network.signalling.Signalling`), and the
records the network writes are counted by the real-time estimators' presence
(:class:`~sim.estimate.live.LivePresence`). The crowd is computed once; no position is
stored. When a bin (a simulated minute by default) is over, the screen's view of it is
handed to a callback as a :class:`MinuteFrame`; a batch run is this stream written to
files (:mod:`sim.run`), and the tables it writes are those of the run that replayed the
crowd for the network (``tests/test_stream.py`` compares them).

The contract of a frame (the dashboard, ``crowdsim live``, builds on it)
-------------------------------------------------------------------------
``run_scenario(scenario, out, on_minute=callback)`` calls ``callback(frame)`` once per
bin, in bin order, from the thread that runs the scenario, as soon as the bin's
estimate, truth and counters are final (usually within one tick of the bin's end). A
:class:`MinuteFrame` holds:

``bin``
    UTC start of the bin just finished (``pandas.Timestamp``).
``estimates``
    That bin's rows of the *published* view, as ``estimates.parquet`` holds them: the
    columns of :data:`sim.estimate.ESTIMATE_COLUMNS`, the published zone system only
    (the grid by default), every real-time method that works from presence counts
    (``voronoi``, ``bayes``, ``em``; ``presence`` reports per cell, which is not
    published), a suppressed zone-bin kept with ``suppressed`` true and no value (NaN
    estimate and bounds); with differential privacy on, from the same noisy counts as the
    file. Only records up to the bin start plus the latency were read. ``mode`` is
    ``realtime`` whatever ``estimators.mode`` says: a screen cannot show the day's batch.
``truth``
    That bin's ground truth at its end: ``zone_system``, ``zone`` (the same zone ids as
    the estimates), ``people`` and ``spectators``; every zone system (grid tiles, course
    segments, named areas); the grid lists occupied tiles only (a tile absent had nobody).
``cell_load``
    That bin's per-cell per-minute counters, the rows of ``cell_load.parquet`` (its
    columns; one row per cell and minute of the bin).
``progress``
    A :class:`StreamProgress`: simulated clock, people present and moving, records per
    simulated second, wall time and an estimate of the wall time left.

Frames are values: the callback may keep them or send them to another thread. A callback
that raises stops the run (its stage fails with that error). What is not in the frames:
methods that read the records themselves rather than presence counts (none of the
shipped four; see :data:`sim.estimate.COUNT_METHODS`) appear in the files only.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sim.crowd.people import STAYING, WAITING, WALKING
from sim.estimate import (
    COUNT_METHODS,
    concat_estimates,
    make_estimators,
    period_bins,
)
from sim.estimate.live import LivePresence
from sim.estimate.presence import check_bins, reference_instants
from sim.estimate.privacy import DEFAULT_PUBLISHED_SYSTEM, published_view
from sim.estimate.tiles import zone_sets
from sim.network.records import PROCEDURES

__all__ = ["MinuteFrame", "ProgressDisplay", "Stream", "StreamProgress"]

_DETACH = PROCEDURES.index("detach")


@dataclass(frozen=True)
class StreamProgress:
    """How far a streaming run is, for a progress bar or a screen.

    Attributes
    ----------
    clock
        The simulated time now (time-zone-aware, the event's zone).
    elapsed_s, duration_s
        Simulated seconds since the start, and of the whole event.
    people_present
        People in the study area now (waiting, walking or staying).
    people_moving
        People waiting at a node or walking on an edge now.
    records
        Operator records written so far.
    records_per_s
        Records per simulated second over the last bin (the network's load as the
        operator sees it).
    wall_s
        Wall-clock seconds since the stream started.
    eta_s
        Estimated wall-clock seconds left (the pace so far applied to the simulated time
        left), None before the first tick.
    """

    clock: pd.Timestamp
    elapsed_s: float
    duration_s: float
    people_present: int
    people_moving: int
    records: int
    records_per_s: float
    wall_s: float
    eta_s: float | None

    @property
    def fraction(self) -> float:
        """Share of the simulated period done, in [0, 1]."""
        return min(1.0, self.elapsed_s / self.duration_s) if self.duration_s > 0 else 1.0

    @property
    def speed(self) -> float:
        """Simulated seconds per wall-clock second so far."""
        return self.elapsed_s / self.wall_s if self.wall_s > 0 else 0.0

    def describe(self) -> str:
        """One line: clock, people moving, records per second, time left."""
        left = "?" if self.eta_s is None else _duration(self.eta_s)
        return (
            f"{self.clock:%H:%M} | {self.people_moving:,} moving of {self.people_present:,} "
            f"| {self.records_per_s:,.0f} records/s simulated | {self.speed:,.0f}x real time "
            f"| {left} left"
        )


@dataclass(frozen=True)
class MinuteFrame:
    """What the screen shows for one bin; see the module notes for the contract."""

    bin: pd.Timestamp
    estimates: pd.DataFrame
    truth: pd.DataFrame
    cell_load: pd.DataFrame
    progress: StreamProgress


@dataclass
class _Timer:
    """Wall seconds spent per part of the stream."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[part] = self.seconds.get(part, 0.0) + now - since
        return now


class Stream:
    """Crowd, network and real-time presence advancing tick by tick.

    Parameters
    ----------
    crowd
        A new :class:`~sim.crowd.CrowdModel` (tick 0).
    network
        The network built for it (:func:`sim.network.simulate.build_network`).
    plan
        The operator's plan as its ``network_plan.json`` holds it (the estimators'
        view; default the network's own, whose coordinates the file rounds).
    zones
        The zone systems (``crowd.zones``).
    config
        ``scenario.estimators``: window, latency, methods, threshold, noise.
    bin_s
        Width of a bin (``scenario.zones.bin_s``).
    timezone
        The event's time zone, in which the progress shows the simulated clock.
    noise_seed
        The run's ``estimators`` seed: with ``laplace_epsilon`` set, the frames' noise is
        the release's (the same first draws of the same generator).
    estimator_params
        Further parameters of every estimator, as the release gets them (e.g. the
        operator's belief errors ``share_error``, ``phones_error``).
    on_minute
        Called with each :class:`MinuteFrame`; None computes no frame (the presence counts
        are still taken, for the release).
    on_progress
        Called with a :class:`StreamProgress` after a tick, at most every
        ``progress_every_s`` (0.25 s) of wall time, and after the last tick.

    Attributes
    ----------
    presence
        The real-time presence counts per cell and bin (``presence.counts``).
    bins
        The bins (UTC starts) of the counts.
    timings
        Wall seconds of the crowd, the network, the presence and the frames.
    """

    def __init__(
        self,
        crowd: Any,
        network: Any,
        *,
        plan: Any = None,
        zones: Any,
        config: Any,
        bin_s: float,
        timezone: str,
        noise_seed: np.random.SeedSequence | int | None = None,
        estimator_params: dict[str, Any] | None = None,
        on_minute: Callable[[MinuteFrame], None] | None = None,
        on_progress: Callable[[StreamProgress], None] | None = None,
    ) -> None:
        self.crowd = crowd
        self.network = network
        self.signalling = network.signalling
        self.plan = network.plan if plan is None else plan
        self.config = config
        self.timezone = timezone
        self.on_minute = on_minute
        self.on_progress = on_progress
        self.timer = _Timer()
        self.dt = float(crowd.dt)
        self.start = self.signalling.start  # UTC
        self.duration_s = crowd.n_ticks * self.dt
        self.bins = period_bins(self.plan, bin_s=bin_s)
        self.bin_s = float(bin_s)
        bins, width = check_bins(self.bins, self.plan)
        instants = reference_instants(
            bins, width=width, latency=pd.Timedelta(minutes=config.latency_min), mode="realtime"
        )
        self.presence = LivePresence(
            self.plan.n_cells, instants, window=pd.Timedelta(minutes=config.window_min)
        )
        self._cursor = 0
        self._start_ns = pd.Timestamp(self.start).as_unit("ns").value
        self._dt_ns = round(self.dt * 1e9)
        self._emitted = 0
        self._records_at_bin: list[int] = [0]
        self._wall0 = self._shown = time.perf_counter()
        #: wall seconds between two calls of `on_progress`
        self.progress_every_s = 0.25
        self._frames: _FrameMaker | None = None
        if on_minute is not None:
            self._frames = _FrameMaker(
                self.plan, zones, self.bins, config, noise_seed=noise_seed,
                params=estimator_params or {},
            )  # fmt: skip

    @property
    def fitted_estimators(self) -> list[Any]:
        """The estimators fitted on the plan for the frames (none without frames)."""
        return list(self._frames.estimators) if self._frames is not None else []

    @property
    def timings(self) -> dict[str, float]:
        """Wall seconds per part: crowd, network, presence, frames."""
        return {f"{k}_s": round(v, 3) for k, v in self.timer.seconds.items()}

    def run(self) -> Stream:
        """Run every tick, hand out every frame; return self."""
        crowd, signalling, timer = self.crowd, self.signalling, self.timer
        dt, owner = self.dt, self.signalling.owner
        while crowd.tick < crowd.n_ticks:
            t0 = time.perf_counter()
            crowd.step()
            snap = crowd.positions(rows=owner)  # the phones' owners only
            t0 = timer.add("crowd", t0)
            signalling.step_devices(snap.t_s - dt, snap.x, snap.y, snap.present)
            t0 = timer.add("network", t0)
            self._take_records(crowd.tick)
            timer.add("presence", t0)
            self._emit_ready(final=False)
            if self.on_progress is not None and (
                time.perf_counter() - self._shown >= self.progress_every_s
                or crowd.tick == crowd.n_ticks
            ):
                self._shown = time.perf_counter()
                self.on_progress(self.progress())
        t0 = time.perf_counter()
        signalling.finish()
        timer.add("network", t0)
        self._take_records(None)
        self._emit_ready(final=True)
        return self

    # ------------------------------------------------------------------ presence
    def _take_records(self, tick: int | None) -> None:
        """Count the new records and close the bins whose reference instant has passed.

        `tick` ticks are done (None: all, the network finished). The records are taken
        only when an instant is due, so once per bin rather than once per tick.
        """
        if tick is None:
            now_ns = np.iinfo(np.int64).max
        else:  # every record of the ticks done is earlier than this (integer ns)
            now_ns = self._start_ns + tick * self._dt_ns
            due = self.presence.next_instant()
            if due is None or due > now_ns:
                return
        raw, self._cursor = self.signalling.new_records(self._cursor)
        if len(raw["t_s"]):
            self.presence.add(
                raw["time_ns"],
                self.signalling.pseudonym_keys(raw["device"], raw["time_ns"]),
                raw["cell"],
                raw["procedure"] == _DETACH,
                order=raw["t_s"],
            )
        self.presence.close_until(now_ns)

    # ------------------------------------------------------------------ frames
    def _emit_ready(self, *, final: bool) -> None:
        """Hand out the frames of the bins whose estimate, truth and counters are final."""
        n_bins = len(self.bins)
        while self._emitted < n_bins:
            j = self._emitted
            end_s = (j + 1) * self.bin_s
            if self.presence.closed <= j or self.crowd.truth.n_bins <= j:
                return
            if not final and not self.signalling.settled(end_s):
                return
            records_now = self.presence.records
            self._records_at_bin.append(records_now)
            if self._frames is not None and self.on_minute is not None:
                t0 = time.perf_counter()
                frame = self._frames.frame(
                    j,
                    counts=self.presence.counts[:, j],
                    truth=self.crowd.truth.bin_zones(j),
                    cell_load=self.signalling.cell_load(_minutes_of(j, self.bin_s)),
                    progress=self.progress(),
                )
                self.timer.add("frames", t0)
                self.on_minute(frame)
            self._emitted += 1

    def progress(self) -> StreamProgress:
        """Where the stream is now."""
        crowd = self.crowd
        elapsed = crowd.tick * self.dt
        state = crowd.people.state
        moving = int(np.count_nonzero((state == WAITING) | (state == WALKING)))
        present = moving + int(np.count_nonzero(state == STAYING))
        wall = time.perf_counter() - self._wall0
        per_bin = self._records_at_bin[-1] - (
            self._records_at_bin[-2] if len(self._records_at_bin) > 1 else 0
        )
        eta = wall * (self.duration_s - elapsed) / elapsed if elapsed > 0 else None
        clock = (self.start + pd.Timedelta(seconds=elapsed)).tz_convert(self.timezone)
        return StreamProgress(
            clock=clock,
            elapsed_s=elapsed,
            duration_s=self.duration_s,
            people_present=present,
            people_moving=moving,
            records=self.presence.records,
            records_per_s=per_bin / self.bin_s,
            wall_s=wall,
            eta_s=eta,
        )


def _minutes_of(j: int, bin_s: float) -> range:
    """The minutes (since the start) whose start falls in bin `j`."""
    return range(math.ceil(j * bin_s / 60 - 1e-9), math.ceil((j + 1) * bin_s / 60 - 1e-9))


class _FrameMaker:
    """The published view of one bin from its presence counts (and the release's noise)."""

    def __init__(
        self,
        plan: Any,
        zones: Any,
        bins: pd.DatetimeIndex,
        config: Any,
        *,
        noise_seed: np.random.SeedSequence | int | None,
        params: dict[str, Any],
    ) -> None:
        system = getattr(config, "published_system", None) or DEFAULT_PUBLISHED_SYSTEM
        sets = {zs.system: zs for zs in zone_sets(zones)}
        self.system = system
        self.zones = {system: sets[system]}
        self.bins = bins
        estimators = make_estimators(
            config, random_state=None, mode="realtime", **params
        )  # no noise is drawn here: the frames take the release's
        self.estimators = []
        for est in estimators:
            if type(est) not in COUNT_METHODS or est.method == "presence":
                continue  # presence is per cell: not in the published view
            est.set_params(laplace_epsilon=None)
            self.estimators.append(est.fit_plan(plan))
        self.noise: np.ndarray | None = None
        self.epsilon: float | None = config.laplace_epsilon
        if config.laplace_epsilon is not None:
            # the release's draw (sim.estimate.release_from_counts): the first of the
            # estimators' generator, one value per cell and bin
            rng = np.random.default_rng(noise_seed)
            self.noise = rng.laplace(
                0.0, 1.0 / config.laplace_epsilon, size=(plan.n_cells, len(bins))
            )

    def frame(
        self,
        j: int,
        *,
        counts: np.ndarray,
        truth: pd.DataFrame,
        cell_load: pd.DataFrame,
        progress: StreamProgress,
    ) -> MinuteFrame:
        column = np.asarray(counts, dtype=np.float64)[:, None]
        if self.noise is not None:
            column = np.maximum(column + self.noise[:, j : j + 1], 0.0)
        one = self.bins[j : j + 1]
        # the noise's variance goes into the intervals, as in the release; a frame is the
        # real-time minute update, so each method's real-time bound (EM: no bootstrap)
        epsilon = self.epsilon
        tables = [
            est.estimate_from_counts(column, self.zones, one, noise_epsilon=epsilon, live=True)
            for est in self.estimators
        ]
        estimates = published_view(concat_estimates(tables), system=self.system)
        return MinuteFrame(
            bin=self.bins[j],
            estimates=estimates,
            truth=truth,
            cell_load=cell_load,
            progress=progress,
        )


class ProgressDisplay:
    """Shows a stream's progress: a tqdm bar on a terminal, else a line on stderr now and then.

    Parameters
    ----------
    total_s
        Simulated seconds of the event.
    every_s
        Wall seconds between two lines when stderr is not a terminal.
    """

    def __init__(self, total_s: float, *, every_s: float = 15.0, desc: str = "simulate") -> None:
        self.every_s = every_s
        self._last = -math.inf
        self._bar = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=round(total_s), desc=desc, unit="sim s", leave=False, position=1,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}",
            )  # fmt: skip
        self._done = 0

    def __call__(self, progress: StreamProgress) -> None:
        """Show `progress` (throttled to a few updates a second)."""
        now = time.perf_counter()
        if self._bar is not None:
            if now - self._last < 0.2 and progress.fraction < 1.0:
                return
            self._last = now
            step = round(progress.elapsed_s) - self._done
            self._done += step
            self._bar.set_postfix_str(progress.describe(), refresh=False)
            self._bar.update(step)
        elif now - self._last >= self.every_s or progress.fraction >= 1.0:
            self._last = now
            print(f"crowdsim: {progress.fraction:4.0%} {progress.describe()}", file=sys.stderr)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 60}:{seconds % 60:02d}"
        if seconds < 3600
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"
    )
