"""The departure calendar: who is due to move on at which tick.

Staying people (watchers, people indoors) move on at their ``leave_s``. The tick must not
scan everybody to find them, so each is filed under the tick its time falls in. Filing
per tick costs one Python step per distinct tick, and stays spread over hours touch
thousands of ticks: only the next ``CALENDAR_TICKS`` ticks are filed per tick, later ones
wait in one flat list that is split when the horizon moves on. Entries go stale when a
person's plans change; the model drops them when their tick comes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CALENDAR_TICKS", "DepartureCalendar"]

#: Ticks of departures filed per tick at a time (later ones wait in one flat list).
CALENDAR_TICKS = 120


class DepartureCalendar:
    """Rows of people filed under the tick they are due at.

    Parameters
    ----------
    dt
        Tick (s).
    """

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self._due: dict[int, list[np.ndarray]] = {}  # ticks before _horizon, one list each
        self._horizon = 0
        self._far_tick: list[np.ndarray] = []  # later ticks, filed per tick only when near
        self._far_rows: list[np.ndarray] = []

    def schedule(self, rows: np.ndarray, leave_s: np.ndarray, now_tick: int) -> None:
        """File `rows` under the tick at which their `leave_s` falls (not before the next
        tick after `now_tick`; infinite times are not filed)."""
        fin = np.isfinite(leave_s)
        rows, leave = rows[fin], leave_s[fin]
        if len(rows) == 0:
            return
        tick = np.maximum(np.ceil(leave / self.dt - 1e-9).astype(np.int64), now_tick + 1)
        near = tick < self._horizon
        if not near.all():
            # splitting per tick costs a Python step per distinct tick (stays last hours
            # spread over thousands of them), so later ticks wait in one flat list
            far = ~near
            self._far_tick.append(tick[far])
            self._far_rows.append(rows[far])
            tick, rows = tick[near], rows[near]
        self._file(tick, rows)

    def pop(self, tick: int) -> np.ndarray | None:
        """The rows filed under `tick` (removed; may repeat rows or be stale), or None."""
        if tick >= self._horizon:
            self._advance(tick)
        due = self._due.pop(tick, None)
        return np.concatenate(due) if due else None

    def _file(self, tick: np.ndarray, rows: np.ndarray) -> None:
        """File `rows` under `tick` in the per-tick lists."""
        if len(rows) == 0:
            return
        order = np.argsort(tick, kind="stable")
        tick, rows = tick[order], rows[order]
        cut = np.flatnonzero(np.diff(tick)) + 1
        for tk, chunk in zip(tick[np.r_[0, cut]].tolist(), np.split(rows, cut), strict=True):
            self._due.setdefault(tk, []).append(chunk)

    def _advance(self, tick: int) -> None:
        """File the next ``CALENDAR_TICKS`` ticks of the flat list per tick."""
        self._horizon = tick + CALENDAR_TICKS
        if not self._far_tick:
            return
        ticks = np.concatenate(self._far_tick)
        rows = np.concatenate(self._far_rows)
        near = ticks < self._horizon
        self._far_tick, self._far_rows = [ticks[~near]], [rows[~near]]
        self._file(ticks[near], rows[near])
