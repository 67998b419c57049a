"""Presence counted as the records arrive: the real-time estimators' input, minute by minute.

A crisis-centre screen cannot wait for the day's records. :class:`LivePresence` takes the
operator's records in the order the network writes them (chunk by chunk, each chunk
from a time the clock has passed) and, at each reference instant ``r`` (the bin start
plus the latency, :func:`~sim.estimate.presence.reference_instants`), gives the devices
per cell that :func:`~sim.estimate.presence.presence_counts` gives in real-time mode for
that instant: each device at the cell of its last record before ``r``, if that record
is no older than the window W and is not a detach. Only records before ``r`` are read,
so the count never uses the future.

It keeps one last-known record per device, not the records: the work per instant is a
sort of the records that arrived since the previous instant and one pass over the
devices, and the memory is a few arrays over the devices, whatever the length of the
event. The counts per bin are kept (cells x bins, small), so the estimators' tables of
a whole run are built from them at the end (:func:`sim.estimate.release_from_counts`)
instead of from the records read back.

Devices are given as integer keys. The records' pseudonymous ids map one to one onto
``(device, local day)`` pairs (:mod:`sim.network.pseudonyms`: distinct devices of a day
get distinct ids, a device gets a new id each local day), so counting by such a key
counts exactly what counting by the pseudonyms counts; the caller chooses the key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["LivePresence"]


class LivePresence:
    """Devices per cell at successive instants, from records given as they are written.

    Parameters
    ----------
    n_cells
        Cells of the plan (rows of the counts, plan order).
    instants
        Increasing reference instants, ns since the epoch (one per bin).
    window
        Presence window W.

    Attributes
    ----------
    counts
        Devices per cell (rows) and bin (columns); a column is filled when its instant is
        closed (:meth:`close_until`), zero before.
    closed
        Number of instants closed so far.
    """

    def __init__(self, n_cells: int, instants: np.ndarray, *, window: pd.Timedelta) -> None:
        self.n_cells = int(n_cells)
        self.instants = np.asarray(instants, dtype=np.int64)
        if (np.diff(self.instants) <= 0).any():
            raise ValueError("LivePresence: instants must be strictly increasing")
        self.window_ns = int(pd.Timedelta(window).value)
        if self.window_ns <= 0:
            raise ValueError(f"LivePresence: window {window} must be > 0")
        self.counts = np.zeros((self.n_cells, len(self.instants)))
        self.closed = 0
        self.records = 0
        # per device key: its last record so far (time, cell, detach)
        self._last_t = np.full(0, np.iinfo(np.int64).min, dtype=np.int64)
        self._last_cell = np.zeros(0, dtype=np.int64)
        self._last_detach = np.zeros(0, dtype=bool)
        # records written but not yet at or before a closed instant
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._seq = 0

    def add(
        self,
        time_ns: np.ndarray,
        key: np.ndarray,
        cell: np.ndarray,
        detach: np.ndarray | None = None,
        *,
        order: np.ndarray | None = None,
    ) -> None:
        """Take a chunk of records, in the order they are written.

        Parameters
        ----------
        time_ns
            Record times, ns since the epoch.
        key
            Device key of each record (integers >= 0; see the module notes).
        cell
            Row of each record's cell in the plan.
        detach
            Whether each record is a detach (ends the device's presence).
        order
            Sort key breaking ties of equal ``time_ns`` before the write order (e.g. the
            float seconds the ns were rounded from); default: the write order alone.
        """
        time_ns = np.asarray(time_ns, dtype=np.int64)
        n = len(time_ns)
        if n == 0:
            return
        if detach is None:
            detach = np.zeros(n, dtype=bool)
        seq = self._seq + np.arange(n, dtype=np.int64)
        self._seq += n
        tie = (
            np.asarray(order, dtype=np.float64) if order is not None else np.zeros(n)
        )  # compared before the write order
        self._pending.append(
            (
                time_ns,
                np.asarray(key, dtype=np.int64),
                np.asarray(cell, dtype=np.int64),
                np.asarray(detach, dtype=bool),
                np.column_stack([tie, seq.astype(np.float64)]),
            )
        )
        self.records += n

    def next_instant(self) -> int | None:
        """The next instant to close (ns), or None when every one is closed."""
        return int(self.instants[self.closed]) if self.closed < len(self.instants) else None

    def close_until(self, now_ns: int) -> list[int]:
        """Close every instant up to `now_ns`, the time up to which all records are in.

        Returns the indices of the bins closed (their columns of :attr:`counts` are set).
        The caller promises that every record earlier than `now_ns` has been added.
        """
        done = []
        while self.closed < len(self.instants) and self.instants[self.closed] <= now_ns:
            j = self.closed
            self._apply_before(int(self.instants[j]))
            self.counts[:, j] = self._count_at(int(self.instants[j]))
            self.closed += 1
            done.append(j)
        return done

    def _apply_before(self, r: int) -> None:
        """Move the pending records earlier than `r` into the devices' last records."""
        if not self._pending:
            return
        t, key, cell, detach, tie = (np.concatenate(c) for c in zip(*self._pending, strict=True))
        now = t < r
        later = ~now
        self._pending = (
            [(t[later], key[later], cell[later], detach[later], tie[later])] if later.any() else []
        )
        if not now.any():
            return
        t, key, cell, detach, tie = t[now], key[now], cell[now], detach[now], tie[now]
        # time order, ties by the given order, then by the write order (as the records file)
        by = np.lexsort((tie[:, 1], tie[:, 0], t))
        t, key, cell, detach = t[by], key[by], cell[by], detach[by]
        # each key's last record in that order
        rev_keys, rev_first = np.unique(key[::-1], return_index=True)
        last = len(key) - 1 - rev_first
        if rev_keys.size and int(rev_keys[-1]) >= len(self._last_t):
            grow = int(rev_keys[-1]) + 1 - len(self._last_t)
            self._last_t = np.concatenate(
                [self._last_t, np.full(grow, np.iinfo(np.int64).min, dtype=np.int64)]
            )
            self._last_cell = np.concatenate([self._last_cell, np.zeros(grow, dtype=np.int64)])
            self._last_detach = np.concatenate([self._last_detach, np.zeros(grow, dtype=bool)])
        self._last_t[rev_keys] = t[last]
        self._last_cell[rev_keys] = cell[last]
        self._last_detach[rev_keys] = detach[last]

    def _count_at(self, r: int) -> np.ndarray:
        """Devices per cell at `r` from the last records (all earlier than `r`)."""
        seen = (self._last_t >= r - self.window_ns) & ~self._last_detach
        return np.bincount(self._last_cell[seen], minlength=self.n_cells).astype(np.float64)
