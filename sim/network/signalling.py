"""Signalling: what the estimating operator's network hears from its phones, tick by tick.

A phone is seen only when it does something the network hears (DESIGN §3, Network):

- IDLE: it camps on the strongest cell; reselection inside a tracking area is silent. It
  sends a tracking area update (TAU) when the camped cell's tracking area differs from
  the one it registered in, and a periodic TAU every T3412 (54 min, random phase).
  Incoming traffic pages the whole tracking area; the phone answers from its cell.
- CONNECTED: the network hands it over on event A3 (a neighbour stronger than the
  serving cell by the A3 offset for the time-to-trigger), and releases it to IDLE after
  the inactivity timer. A tracking-area change made while connected is registered by a
  TAU after the release.
- Traffic: data sessions, pages, calls and SMS arrive as Poisson processes per activity
  class; spectators' rates rise by a burst factor during the race.
- Capacity: each cell holds at most ``rrc_capacity`` connected phones; a request over it
  is rejected and the rejection is itself a record. The core's control plane (MME) is a
  SimPy model (:class:`ControlPlane`) with finite workers: a signalling storm shows as
  queueing delay, and procedures that wait past the timeout are dropped.

The state of every phone is a set of NumPy arrays updated once per tick; no Python
object exists per phone or per event. SimPy serves batches of procedures (at most
``batch_size`` each), so queueing is discrete-event while the phones stay vectorised.
Simplification: a procedure dropped by the MME is recorded as ``dropped`` but the phone's
state proceeds as if it had succeeded (no retry model yet).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy

from sim.network.plan import NetworkPlan
from sim.network.pseudonyms import draw_secret, pseudonymise
from sim.network.radio import RadioEnvironment
from sim.network.records import OUTCOMES, PROCEDURES, RECORD_COLUMNS

__all__ = ["ControlPlane", "Signalling", "SignallingConfig"]

P = {name: i for i, name in enumerate(PROCEDURES)}
OK, REJECTED, DROPPED = (OUTCOMES.index(o) for o in ("ok", "rejected", "dropped"))
IDLE, CONNECTED = 0, 1


@dataclass(frozen=True)
class SignallingConfig:
    """Timers, traffic and capacities of the network (defaults: DESIGN §3 or assumptions)."""

    t3412_s: float = 54 * 60.0  # periodic TAU timer (DESIGN §3, 3GPP TS 24.301 default)
    reselection_hysteresis_db: float = 2.0  # Qhyst of idle cell reselection (assumption)
    a3_offset_db: float = 3.0  # handover hysteresis, 2-3 dB (DESIGN §3)
    time_to_trigger_s: float = 0.32  # A3 time-to-trigger (a common setting; assumption)
    inactivity_s: float = 10.0  # back to IDLE after ~10 s without traffic (DESIGN §3)
    # sessions per hour by activity class light/medium/heavy (assumption)
    data_per_h: tuple[float, float, float] = (1.0, 4.0, 10.0)
    paging_per_h: tuple[float, float, float] = (0.5, 1.5, 3.0)
    session_mean_s: float = 20.0  # data activity beyond one burst (assumption)
    call_per_h: float = 0.3
    call_mean_s: float = 120.0
    sms_per_h: float = 0.3
    burst_factor: float = 3.0  # spectators' use at the race peak (assumption)
    rrc_capacity: int = 400  # RRC-connected users per cell, 300-600 (DESIGN §3)
    # control-plane messages at the MME per procedure (approximate 3GPP call flows)
    messages: dict[str, int] = field(
        default_factory=lambda: {
            "attach": 12, "detach": 4, "tau": 6, "periodic_tau": 4, "service_request": 6,
            "handover": 8, "paging_response": 7, "call": 10, "sms": 6,
        }
    )  # fmt: skip
    mme_workers: int = 8  # parallel MME processors (assumption)
    mme_message_s: float = 0.8e-3  # processing time per message per worker (assumption)
    mme_timeout_s: float = 5.0  # NAS procedures give up after ~5 s (T3417-like; assumption)
    batch_size: int = 64  # procedures per SimPy job


class ControlPlane:
    """The MME as a SimPy queue: batches of procedures wait for one of a few workers.

    A batch that has waited longer than the timeout when a worker takes it is dropped;
    otherwise it holds the worker for its messages times the service time per message.
    """

    def __init__(self, *, workers: int, message_s: float, timeout_s: float) -> None:
        self.env = simpy.Environment()
        self.cpu = simpy.Resource(self.env, capacity=workers)
        self.message_s = message_s
        self.timeout_s = timeout_s
        self.delay: list[float] = []
        self.dropped: list[bool] = []

    def submit(self, at_s: float, messages: int) -> int:
        """Queue a batch of `messages` arriving at `at_s`; return its batch id."""
        batch = len(self.delay)
        self.delay.append(np.nan)
        self.dropped.append(False)
        self.env.process(self._serve(batch, at_s, messages))
        return batch

    def _serve(self, batch: int, at_s: float, messages: int) -> Generator[simpy.Event, None, None]:
        """SimPy process of one batch: wait for a worker, then hold it for the messages."""
        yield self.env.timeout(max(0.0, at_s - self.env.now))
        with self.cpu.request() as turn:
            yield turn
            waited = self.env.now - at_s
            self.delay[batch] = waited
            if waited > self.timeout_s:
                self.dropped[batch] = True
                return
            yield self.env.timeout(messages * self.message_s)

    def run_until(self, t_s: float) -> None:
        """Advance the queue to time `t_s`."""
        self.env.run(until=max(t_s, self.env.now))

    def finish(self) -> None:
        """Serve every batch still queued."""
        self.env.run()


#: Procedures of one tick, grouped: (devices, procedure code, cells).
_Batch = tuple[np.ndarray, int, np.ndarray]


@dataclass(eq=False)
class _Tick:
    """What the phases of one :meth:`Signalling.step` share (arrays over present phones)."""

    t_s: float
    idx: np.ndarray  # the phones present, by index
    pix: np.ndarray  # the radio pixel each stands on
    best: np.ndarray  # its strongest cell (-1: no coverage)
    best_pow: np.ndarray
    covered: np.ndarray
    arrived: np.ndarray  # came into the area this tick, and covered
    serving: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    serving_pow: np.ndarray = field(default_factory=lambda: np.empty(0))
    idle: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    connected: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    ok: list[_Batch] = field(default_factory=list)
    rejected: list[_Batch] = field(default_factory=list)


class Signalling:
    """The estimating operator's phones and the records its network writes about them.

    Parameters
    ----------
    owner
        Person index of each simulated device (the estimating operator's devices only).
    activity
        Activity class of each device.
    spectator
        Whether each device's owner is a spectator (their use bursts during the race).
    plan
        The operator's cells (row order = the radio environment's cell index).
    radio
        The true coverage.
    rng
        The network subsystem's generator.
    start
        Time of tick 0 (UTC).
    dt_s
        Seconds per tick.
    burst
        Function of seconds since start giving the burst weight in [0, 1].
    config
        Timers, rates and capacities.
    timezone
        The event's time zone: pseudonyms rotate at its local midnight.
    """

    def __init__(
        self,
        owner: np.ndarray,
        activity: np.ndarray,
        spectator: np.ndarray,
        *,
        plan: NetworkPlan,
        radio: RadioEnvironment,
        rng: np.random.Generator,
        start: pd.Timestamp,
        dt_s: float,
        burst: Callable[[float], float] | None = None,
        config: SignallingConfig | None = None,
        timezone: str = "Europe/Brussels",
    ) -> None:
        self.cfg = config or SignallingConfig()
        self.timezone = timezone
        self.owner = np.asarray(owner, dtype=np.int64)
        self.activity = np.asarray(activity, dtype=np.int64)
        self.spectator = np.asarray(spectator, dtype=bool)
        self.plan, self.radio, self.rng = plan, radio, rng
        self.start, self.dt = pd.Timestamp(start), float(dt_s)
        self.burst = burst if burst is not None else (lambda t: 0.0)
        n = len(self.owner)
        self.cell_ta = plan.cells["tracking_area"].to_numpy(dtype=np.int64)
        self.n_cells = plan.n_cells
        self.present = np.zeros(n, dtype=bool)
        self.state = np.zeros(n, dtype=np.int8)
        self.cell = np.full(n, -1, dtype=np.int64)
        self.registered_ta = np.full(n, -1, dtype=np.int64)
        self.next_periodic = np.full(n, np.inf)
        self.conn_until = np.zeros(n)
        self.a3_target = np.full(n, -1, dtype=np.int64)
        self.a3_ticks = np.zeros(n, dtype=np.int64)
        self._pix = np.full(n, -1, dtype=np.int64)  # last pixel and its strongest cell
        self._best = np.full(n, -1, dtype=np.int64)
        self._best_pow = np.full(n, -np.inf)
        self._in_use = np.zeros(self.n_cells, dtype=np.int64)
        self.ttt_ticks = max(1, int(np.ceil(self.cfg.time_to_trigger_s / self.dt - 1e-9)))
        # phones with equal traffic rates: (activity class, spectator or not)
        self._groups = [
            (a, bool(sp), np.flatnonzero((self.activity == a) & (self.spectator == sp)))
            for a in range(len(self.cfg.data_per_h))
            for sp in (False, True)
        ]
        self._kinds = (
            ("data", "service_request", self.cfg.session_mean_s),
            ("paging", "paging_response", self.cfg.session_mean_s),
            ("call", "call", self.cfg.call_mean_s),
            ("sms", "sms", None),
        )
        self.msgs = np.array([self.cfg.messages[p] for p in PROCEDURES], dtype=np.int64)
        self.mme = ControlPlane(workers=self.cfg.mme_workers, message_s=self.cfg.mme_message_s,
                                timeout_s=self.cfg.mme_timeout_s)  # fmt: skip
        self._rec: list[tuple[np.ndarray, ...]] = []
        # per minute of ticks: peak connected users and rejections per cell
        self._per_min = max(1, round(60.0 / self.dt))
        self._load: list[tuple[np.ndarray, np.ndarray]] = []
        self.ticks = 0
        self.unreachable_device_ticks = 0
        # where each tick's record chunks and MME batches start (for a streaming run)
        self._tick_chunk: list[int] = []
        self._tick_batch: list[int] = []
        self._first_unsettled = 0

    # ------------------------------------------------------------------ one tick
    def step(self, t_s: float, x: np.ndarray, y: np.ndarray, present: np.ndarray) -> None:
        """Advance every phone by one tick, given where every person is at `t_s`.

        The phases run in this order, each a method: who is here and which cell is
        strongest (:meth:`_sense`), phones arriving (:meth:`_arrive`), idle phones
        reselecting and registering (:meth:`_idle`), connected phones handing over
        (:meth:`_hand_over`) and being released (:meth:`_release`), new traffic
        (:meth:`_traffic`), then the records and the cell load (:meth:`_account`).

        Parameters
        ----------
        t_s
            Seconds since ``start`` at the beginning of this tick.
        x, y
            Position of every person (metres), indexed by person.
        present
            Which persons are in the study area (the others' phones are elsewhere).
        """
        owner = self.owner
        self.step_devices(
            t_s, np.asarray(x)[owner], np.asarray(y)[owner], np.asarray(present, dtype=bool)[owner]
        )

    def step_devices(self, t_s: float, x: np.ndarray, y: np.ndarray, present: np.ndarray) -> None:
        """:meth:`step` given each simulated device's position (its owner's), in device order.

        What a streaming run passes: the crowd computes the positions of the phones'
        owners only (``CrowdModel.positions(rows=owner)``), not of everybody.
        """
        self._tick_chunk.append(len(self._rec))
        self._tick_batch.append(len(self.mme.delay))
        tick = self._sense(t_s, x, y, present)
        self._arrive(tick)
        self._idle(tick)
        self._hand_over(tick)
        self._release(tick)
        self._traffic(tick)
        self._account(tick)

    def _sense(self, t_s: float, x: np.ndarray, y: np.ndarray, present: np.ndarray) -> _Tick:
        """Who is in the area now, the strongest cell where each phone stands (by device)."""
        now_present = np.asarray(present, dtype=bool)
        arrived = now_present & ~self.present
        left = self.present & ~now_present
        self._reset(left)
        self.present = now_present
        idx = np.flatnonzero(now_present)
        pix = self.radio.pixel(np.asarray(x)[idx], np.asarray(y)[idx])
        moved_pixel = pix != self._pix[idx]  # most people stand still: look up only movers
        changed = idx[moved_pixel]
        self._pix[changed] = pix[moved_pixel]
        self._best[changed], self._best_pow[changed] = self.radio.best(pix[moved_pixel])
        self._in_use = np.bincount(
            self.cell[self.present & (self.state == CONNECTED)], minlength=self.n_cells
        )
        best = self._best[idx]
        covered = best >= 0
        self.unreachable_device_ticks += int((~covered).sum())
        return _Tick(
            t_s=t_s,
            idx=idx,
            pix=pix,
            best=best,
            best_pow=self._best_pow[idx],
            covered=covered,
            arrived=arrived[idx] & covered,
        )

    def _arrive(self, tick: _Tick) -> None:
        """Arrivals camp on the best cell; a phone coming from outside registers by TAU.

        Then note each phone's serving cell and its power (where another cell is now
        the strongest), and who is idle and who connected, for the phases after.
        """
        cfg, t_s, arr, best = self.cfg, tick.t_s, tick.arrived, tick.best
        dev = tick.idx[arr]
        self.cell[dev] = best[arr]
        self.state[dev] = IDLE
        if self.ticks == 0:  # already registered when the simulation starts: random phase
            self.registered_ta[dev] = self.cell_ta[best[arr]]
            self.next_periodic[dev] = t_s + self.rng.uniform(0, cfg.t3412_s, len(dev))
        else:
            self.registered_ta[dev] = self.cell_ta[best[arr]]
            self.next_periodic[dev] = t_s + cfg.t3412_s
            tick.ok.append((dev, P["tau"], best[arr]))

        idx, covered = tick.idx, tick.covered
        tick.serving = serving = self.cell[idx]
        # the serving cell's power matters only where another cell is now the strongest
        differs = np.flatnonzero((best != serving) & covered)
        tick.serving_pow = np.full(len(idx), np.inf)
        tick.serving_pow[differs] = np.where(
            serving[differs] >= 0,
            self.radio.power_of(tick.pix[differs], np.maximum(serving[differs], 0)),
            -np.inf,
        )
        tick.idle = (self.state[idx] == IDLE) & covered & ~arr
        tick.connected = (self.state[idx] == CONNECTED) & covered

    def _idle(self, tick: _Tick) -> None:
        """IDLE: silent reselection, TAU on a new tracking area, periodic TAU."""
        cfg, t_s, idx, best = self.cfg, tick.t_s, tick.idx, tick.best
        resel = (
            tick.idle
            & (best != tick.serving)
            & (tick.best_pow > tick.serving_pow + cfg.reselection_hysteresis_db)
        )
        self.cell[idx[resel]] = best[resel]
        d = idx[tick.idle]
        new_ta = self.cell_ta[self.cell[d]] != self.registered_ta[d]
        tau_dev = d[new_ta]
        self._register(tau_dev, t_s)
        tick.ok.append((tau_dev, P["tau"], self.cell[tau_dev]))
        periodic = d[~new_ta & (self.next_periodic[d] <= t_s)]
        self.next_periodic[periodic] = t_s + cfg.t3412_s
        tick.ok.append((periodic, P["periodic_tau"], self.cell[periodic]))

    def _hand_over(self, tick: _Tick) -> None:
        """CONNECTED: A3 handover with time-to-trigger; capacity checked on the target."""
        idx, best = tick.idx, tick.best
        a3 = (
            tick.connected
            & (best != tick.serving)
            & (tick.best_pow > tick.serving_pow + self.cfg.a3_offset_db)
        )
        same = a3 & (self.a3_target[idx] == best)
        self.a3_ticks[idx] = np.where(same, self.a3_ticks[idx] + 1, np.where(a3, 1, 0))
        self.a3_target[idx] = np.where(a3, best, -1)
        trigger = a3 & (self.a3_ticks[idx] >= self.ttt_ticks)
        ho_dev, ho_cell = idx[trigger], best[trigger]
        admitted = self._admit(ho_dev, ho_cell)
        np.subtract.at(self._in_use, self.cell[ho_dev[admitted]], 1)
        self.cell[ho_dev[admitted]] = ho_cell[admitted]
        self.a3_ticks[ho_dev] = 0
        tick.ok.append((ho_dev[admitted], P["handover"], ho_cell[admitted]))
        tick.rejected.append((ho_dev[~admitted], P["handover"], ho_cell[~admitted]))

    def _release(self, tick: _Tick) -> None:
        """Release after inactivity; register a tracking area changed while connected."""
        release = tick.idx[tick.connected & (self.conn_until[tick.idx] <= tick.t_s)]
        self.state[release] = IDLE
        np.subtract.at(self._in_use, self.cell[release], 1)
        moved = release[self.cell_ta[self.cell[release]] != self.registered_ta[release]]
        self._register(moved, tick.t_s)
        tick.ok.append((moved, P["tau"], self.cell[moved]))

    def _traffic(self, tick: _Tick) -> None:
        """New calls, data and SMS in this tick, on the phones present and covered.

        Drawn per group of phones with equal rates and thinned to the reachable ones (the
        same law, O(events)); traffic on an open connection extends it silently.
        """
        cfg, rng, t_s = self.cfg, self.rng, tick.t_s
        reachable = np.zeros(len(self.owner), dtype=bool)
        reachable[tick.idx[tick.covered]] = True
        burst = float(self.burst(t_s))
        for kind, proc, hold in self._kinds:
            chosen = self._arrivals(kind, burst)
            chosen = chosen[reachable[chosen]]
            if hold is None:  # an SMS is a short NAS exchange: seen, no connection kept
                tick.ok.append((chosen, P[proc], self.cell[chosen]))
                continue
            busy = self.state[chosen] == CONNECTED
            extend = chosen[busy]  # traffic on an existing connection: silent
            self.conn_until[extend] = np.maximum(
                self.conn_until[extend], t_s + rng.exponential(hold, len(extend)) + cfg.inactivity_s
            )
            setup = chosen[~busy]
            cells = self.cell[setup]
            ok = self._admit(setup, cells)
            go = setup[ok]
            self.state[go] = CONNECTED
            self.conn_until[go] = t_s + rng.exponential(hold, len(go)) + cfg.inactivity_s
            tick.ok.append((go, P[proc], cells[ok]))
            tick.rejected.append((setup[~ok], P[proc], cells[~ok]))

    def _account(self, tick: _Tick) -> None:
        """Emit the tick's procedures, record the cell load, let the MME catch up."""
        self._emit(tick.t_s, tick.ok, OK)
        self._emit(tick.t_s, tick.rejected, REJECTED)
        rejected_cells = np.concatenate([c for _, _, c in tick.rejected])
        rejections = np.bincount(rejected_cells, minlength=self.n_cells)
        if self.ticks % self._per_min == 0:  # a new minute of ticks
            self._load.append((self._in_use.copy(), rejections))
        else:
            connected, rejected = self._load[-1]
            np.maximum(connected, self._in_use, out=connected)
            rejected += rejections
        self.ticks += 1
        self.mme.run_until(tick.t_s + self.dt)

    # ------------------------------------------------------------------ helpers
    def _arrivals(self, kind: str, burst: float) -> np.ndarray:
        """Phones with at least one arrival of `kind` in this tick (Poisson per phone)."""
        cfg, rng = self.cfg, self.rng
        picked = []
        for activity, spectator, members in self._groups:
            per_h = {
                "data": cfg.data_per_h[activity],
                "paging": cfg.paging_per_h[activity],
                "call": cfg.call_per_h,
                "sms": cfg.sms_per_h,
            }[kind]
            if kind in ("data", "paging") and spectator:
                per_h *= 1.0 + (cfg.burst_factor - 1.0) * burst
            p = -np.expm1(-per_h / 3600.0 * self.dt)
            k = rng.binomial(len(members), p) if len(members) else 0
            if k:
                picked.append(members[rng.choice(len(members), size=k, replace=False)])
        return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)

    def _register(self, dev: np.ndarray, t_s: float) -> None:
        self.registered_ta[dev] = self.cell_ta[self.cell[dev]]
        self.next_periodic[dev] = t_s + self.cfg.t3412_s

    def _reset(self, dev_mask: np.ndarray) -> None:
        self.state[dev_mask] = IDLE
        self.cell[dev_mask] = -1
        self.a3_ticks[dev_mask] = 0
        self.a3_target[dev_mask] = -1

    def _admit(self, dev: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Which of these connection requests fit under each cell's RRC capacity.

        The admitted ones are counted in the cells' connected users at once.
        """
        if len(dev) == 0:
            return np.zeros(0, dtype=bool)
        free = np.maximum(self.cfg.rrc_capacity - self._in_use, 0)
        order = self.rng.permutation(len(dev))  # who gets the last places is random
        c = cells[order]
        by_cell = np.argsort(c, kind="stable")
        sorted_c = c[by_cell]
        first = np.searchsorted(sorted_c, sorted_c, side="left")
        rank = np.empty(len(dev), dtype=np.int64)
        rank[by_cell] = np.arange(len(dev)) - first
        ok = np.empty(len(dev), dtype=bool)
        ok[order] = rank < free[c]
        np.add.at(self._in_use, cells[ok], 1)
        return ok

    def _emit(self, t_s: float, parts: list, outcome: int) -> None:
        for dev, proc, cells in parts:
            if len(dev) == 0:
                continue
            times = t_s + self.rng.uniform(0.0, self.dt, len(dev))
            batches = np.empty(len(dev), dtype=np.int64)
            if outcome == OK:
                for lo in range(0, len(dev), self.cfg.batch_size):
                    hi = min(lo + self.cfg.batch_size, len(dev))
                    batches[lo:hi] = self.mme.submit(float(times[lo:hi].min()),
                                                     int(self.msgs[proc]) * (hi - lo))  # fmt: skip
            else:  # a rejection is answered by the cell; it costs the MME nothing
                batches[:] = -1
            self._rec.append((times, dev, cells.astype(np.int64),
                              np.full(len(dev), proc, np.int8), np.full(len(dev), outcome, np.int8),
                              batches))  # fmt: skip

    # ------------------------------------------------------------------ outputs
    def finish(self) -> None:
        """Serve what the MME still has queued; the records are complete after this.

        The records are then held once, in time order (:meth:`raw_records`); the chunks
        they were written in are dropped.
        """
        self.mme.finish()
        self._raw = self._collect()
        self._rec = []
        self._tick_chunk = []

    def raw_records(self) -> dict[str, np.ndarray]:
        """Records with device and cell indices and MME outcomes (after :meth:`finish`)."""
        if getattr(self, "_raw", None) is None:
            raise RuntimeError("call finish() first: the MME may still hold queued batches")
        return self._raw

    def _collect(self, chunks: list[tuple[np.ndarray, ...]] | None = None) -> dict[str, np.ndarray]:
        """Records of `chunks` (default all) in time order, with the MME's outcomes."""
        chunks = self._rec if chunks is None else chunks
        empty = (np.zeros(0), *(np.zeros(0, np.int64),) * 2, *(np.zeros(0, np.int8),) * 2,
                 np.zeros(0, np.int64))  # fmt: skip
        cols = list(zip(*chunks, strict=True)) if chunks else [[e] for e in empty]
        t, dev, cell, proc, outcome, batch = (np.concatenate(c) for c in cols)
        dropped = np.append(np.asarray(self.mme.dropped, dtype=bool), False)
        delay = np.append(np.asarray(self.mme.delay, dtype=float), 0.0)
        has_batch = batch >= 0
        outcome = outcome.astype(np.int8)
        outcome[has_batch & dropped[np.where(has_batch, batch, 0)]] = DROPPED
        order = np.argsort(t, kind="stable")
        return {
            "t_s": t[order], "device": dev[order].astype(np.int64), "cell": cell[order],
            "procedure": proc[order].astype(np.int8), "outcome": outcome[order],
            "delay_s": np.where(has_batch, delay[np.where(has_batch, batch, 0)], 0.0)[order],
        }  # fmt: skip

    def records(
        self, *, salt: np.random.Generator | None = None, secret: bytes | None = None
    ) -> pd.DataFrame:
        """The operator's records, with pseudonymous ids.

        Ids are keyed per local day of the event's time zone (:mod:`sim.network.pseudonyms`);
        `salt` draws the run's secret, or `secret` is the secret itself (one of the two).
        """
        if (salt is None) == (secret is None):
            raise ValueError("records: give either salt (a generator) or secret (bytes)")
        return pd.concat(list(self.iter_records(salt=salt, secret=secret)), ignore_index=True)

    def iter_records(
        self,
        *,
        salt: np.random.Generator | None = None,
        secret: bytes | None = None,
        rows: int = 1_000_000,
    ) -> Iterator[pd.DataFrame]:
        """The operator's records in time order, `rows` at a time (:meth:`records`).

        A full run holds tens of millions of records: written chunk by chunk, they never
        exist whole as a table. Each pair (local day, device) gets its pseudonym once,
        all pairs of the run together (so two devices of a day can never share an id).
        """
        raw = self.raw_records()
        n = len(raw["t_s"])
        if (salt is None) == (secret is None):
            raise ValueError("iter_records: give either salt (a generator) or secret (bytes)")
        if secret is None:
            assert salt is not None
            secret = draw_secret(salt)
        n_dev = max(1, len(self.owner))

        def chunk(lo: int, hi: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
            times = (self.start + pd.to_timedelta(raw["t_s"][lo:hi], unit="s")).tz_convert("UTC")
            ns = pd.DatetimeIndex(times).as_unit("ns").asi8
            return times, self.pseudonym_keys(raw["device"][lo:hi], ns)

        used = [np.unique(chunk(lo, lo + rows)[1]) for lo in range(0, n, rows)]
        pairs = np.unique(np.concatenate(used)) if used else np.zeros(0, np.int64)
        del used
        day, device = np.divmod(pairs, n_dev)
        noon = pd.DatetimeIndex(self._midnights()[day] + 12 * 3600 * 10**9, tz="UTC")
        ids = pseudonymise(device, noon, secret=secret, timezone=self.timezone)
        cell_ids = self.plan.cells["cell_id"].to_numpy()
        for lo in range(0, max(n, 1), rows):
            hi = min(lo + rows, n)
            times, key = chunk(lo, hi)
            frame = pd.DataFrame({
                "time": times,
                "device": ids[np.searchsorted(pairs, key)],
                "cell_id": cell_ids[raw["cell"][lo:hi]],
                "procedure": pd.Categorical.from_codes(raw["procedure"][lo:hi],
                                                       categories=PROCEDURES),
                "outcome": pd.Categorical.from_codes(raw["outcome"][lo:hi], categories=OUTCOMES),
            })  # fmt: skip
            yield frame.astype(RECORD_COLUMNS)

    def pseudonym_keys(self, device: np.ndarray, time_ns: np.ndarray) -> np.ndarray:
        """One integer per record, the same exactly when its pseudonymous id is the same.

        A pseudonym is a keyed hash of the device and its local day
        (:mod:`sim.network.pseudonyms`), so the key is ``local day x devices + device``
        (days counted from the day before the start). A streaming run's real-time
        presence counts devices by it before the records' ids exist.

        Parameters
        ----------
        device
            Device index of each record.
        time_ns
            Time of each record, ns since the epoch (UTC).
        """
        midnights = self._midnights()
        if len(time_ns) and int(np.max(time_ns)) >= midnights[-1]:
            span = (int(np.max(time_ns)) - midnights[0]) / 86400e9
            midnights = self._midnights(days=int(span) + 2)
        day = np.searchsorted(midnights, time_ns, side="right") - 1
        return day * max(1, len(self.owner)) + np.asarray(device, dtype=np.int64)

    def _midnights(self, days: int = 4) -> np.ndarray:
        """UTC ns of the local midnights from the day before the start, `days` of them."""
        cached = getattr(self, "_midnight_ns", None)
        if cached is not None and len(cached) >= days:
            return cached
        first = pd.Timestamp(self.start).tz_convert(self.timezone).normalize()
        local = pd.date_range(first.tz_localize(None) - pd.Timedelta(days=1), periods=days,
                              freq="D")  # fmt: skip
        self._midnight_ns = (
            local.tz_localize(self.timezone, ambiguous=False, nonexistent="shift_forward")
            .tz_convert("UTC")
            .as_unit("ns")
            .asi8
        )
        return self._midnight_ns

    def record_times(self) -> pd.DatetimeIndex:
        """Time (UTC) of each of :meth:`raw_records`."""
        return self.start + pd.to_timedelta(self.raw_records()["t_s"], unit="s")

    def cell_load(self, minutes: range | None = None) -> pd.DataFrame:
        """Counters per cell per minute.

        Peak connected users, rejections, MME messages (in all and by procedure) and mean
        MME queueing delay of the cell's procedures.

        Parameters
        ----------
        minutes
            Minutes since the start to tabulate (default every one, after :meth:`finish`).
            A streaming run asks for a minute once :meth:`settled` says its counters are
            final; the rows are those of the whole table.
        """
        n_min = len(self._load)
        if minutes is None:
            raw, lo, hi = self.raw_records(), 0, n_min
        else:
            lo, hi = minutes.start, minutes.stop
            if not 0 <= lo <= hi <= n_min or not self.settled(hi * 60.0):
                raise RuntimeError(
                    f"cell_load: minutes {lo}..{hi} are not all simulated and settled "
                    f"({n_min} minutes so far)"
                )
            raw = self._records_of_minutes(lo, hi)
        n_rows = hi - lo
        connected = np.zeros((n_rows, self.n_cells), dtype=np.int64)
        rejections = np.zeros((n_rows, self.n_cells), dtype=np.int64)
        for m, (conn, rej) in enumerate(self._load[lo:hi]):
            connected[m], rejections[m] = conn, rej
        minute = np.minimum((raw["t_s"] // 60).astype(np.int64), n_min - 1)
        inside = (minute >= lo) & (minute < hi)
        if not inside.all():
            raw = {k: v[inside] for k, v in raw.items()}
            minute = minute[inside]
        flat = (minute - lo) * self.n_cells + raw["cell"]
        size = n_rows * self.n_cells
        cost = self.msgs[raw["procedure"]] * (raw["outcome"] != REJECTED)
        messages = np.bincount(flat, weights=cost, minlength=size)
        by_procedure = {
            f"messages_{name}": np.bincount(
                flat[raw["procedure"] == code], weights=cost[raw["procedure"] == code],
                minlength=size,
            ).astype(np.int64)
            for code, name in enumerate(PROCEDURES)
        }  # fmt: skip
        counted = np.bincount(flat, minlength=size)
        delay = np.bincount(flat, weights=raw["delay_s"], minlength=size)
        delay = delay.astype(float)  # an empty bincount is integer
        mean_delay = np.divide(delay, counted, out=np.zeros_like(delay), where=counted > 0)
        minutes_ = self.start + pd.to_timedelta(
            np.repeat(np.arange(lo, hi), self.n_cells), unit="min"
        )
        return pd.DataFrame({
            "minute": minutes_.tz_convert("UTC"),
            "cell_id": np.tile(self.plan.cells["cell_id"].to_numpy(), n_rows),
            "connected_users": connected.ravel(),
            "rejections": rejections.ravel(),
            "messages": messages.astype(np.int64),
            "queue_delay_ms": mean_delay * 1000.0,
            **by_procedure,
        })  # fmt: skip

    # ------------------------------------------------------------------ streaming
    def settled(self, t_s: float) -> bool:
        """Whether every procedure before `t_s` is simulated and taken by the MME.

        Then the outcomes and queueing delays of the records before `t_s`, and the
        counters of the minutes that end by `t_s`, are final.
        """
        ticks = int(np.ceil(t_s / self.dt - 1e-9))  # ticks that start before t_s
        if ticks > self.ticks:
            return False
        upto = self._tick_batch[ticks] if ticks < self.ticks else len(self.mme.delay)
        delay, first = self.mme.delay, self._first_unsettled
        while first < len(delay) and not np.isnan(delay[first]):
            first += 1
        self._first_unsettled = first  # batches before it are all served: it only grows
        return first >= upto

    def _records_of_minutes(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """The records (raw, time order) of the ticks that reach minutes `lo` to `hi`."""
        first = int(np.floor(lo * 60.0 / self.dt + 1e-9))
        last = int(np.ceil(hi * 60.0 / self.dt - 1e-9))
        if getattr(self, "_raw", None) is not None:  # finished: the records are in time order
            t = self._raw["t_s"]
            a = np.searchsorted(t, first * self.dt, side="left")
            b = len(t) if last >= self.ticks else np.searchsorted(t, last * self.dt, side="left")
            return {k: v[a:b] for k, v in self._raw.items()}
        at = [self._tick_chunk[k] if k < self.ticks else len(self._rec) for k in (first, last)]
        return self._collect(self._rec[at[0] : at[1]])

    def new_records(self, cursor: int) -> tuple[dict[str, np.ndarray], int]:
        """The records written since `cursor` (a count of record chunks), and the new cursor.

        Raw, as :meth:`raw_records` (device and cell indices), plus ``time_ns``: the time
        the records table will carry (ns since the epoch, UTC). Outcomes may still change
        from ``ok`` to ``dropped`` until the MME has taken the records (:meth:`settled`).
        """
        chunks = self._rec[cursor:]
        empty = (np.zeros(0), *(np.zeros(0, np.int64),) * 2, *(np.zeros(0, np.int8),) * 2)
        cols = list(zip(*chunks, strict=True)) if chunks else [[e] for e in empty]
        t, dev, cell, proc, outcome = (np.concatenate(c) for c in cols[:5])
        times = self.start + pd.to_timedelta(t, unit="s")
        time_ns = pd.DatetimeIndex(times.tz_convert("UTC")).as_unit("ns").asi8
        raw = {"t_s": t, "time_ns": time_ns, "device": dev.astype(np.int64), "cell": cell,
               "procedure": proc.astype(np.int8), "outcome": outcome.astype(np.int8)}  # fmt: skip
        return raw, len(self._rec)
