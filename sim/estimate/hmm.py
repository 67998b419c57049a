"""A device-level hidden Markov model: where is each phone, minute by minute (ESSnet ``destim``).

The static methods place a bin's *counts*; this one follows each *device* through its
records, as the ESSnet Big Data package ``destim`` does (Sanguiao, "Introduction to
destim"; ESSnet WP5 deliverable I.3, §4): the hidden state is the device's tile, the
transitions are movements between neighbouring tiles, the emissions are the operator's
``P(cell | tile)``, and the posterior of the state given the records (filtered in real
time, smoothed in batch) is summed over devices into expected devices per tile and bin.

**State.** A tile of a square raster, 250 m by default (``tile_m``) rather than the 100 m
of Bayes and EM. Why: a cell's footprint (tiles with ``P(cell | tile) >= 1e-3``) spans a
median of 6 x 6 tiles at 250 m (15 x 15 at 100 m) and a device's state lives on a window
of such tiles, so 250 m keeps the state per device near 50 numbers instead of 300 and
the full team time trial within minutes; 250 m is also about the inter-site distance of
the centre (~300 m), below which the records cannot place anybody anyway. Zones get the
tiles' devices by area share (:func:`~sim.estimate.tiles.overlap_matrix`), so a 100 m
grid tile or a 100 m wide course segment gets a fraction of a 250 m tile.

**Transitions.** ``destim``'s rectangle model (``HMMrectangle``: stay, or move to one of
the eight neighbours, rook and diagonal moves each with their own probability), here as
two independent lazy walks along x and y: per step a device moves one tile along an axis
with probability ``q / 2`` each way, so it stays with ``(1 - q)^2``, makes a rook move
with ``q/2 (1 - q)`` and a diagonal one with ``(q/2)^2``. A move off the raster is
refused (the device stays), so the matrix is symmetric and doubly stochastic and its
steady state is uniform (``destim``'s ``initsteady``): a device appears with a uniform
prior, times its first cell's emission. One tile per axis per step is the hard speed
limit (250 m a minute: 4.2 m/s, above any walking pace, so no walker is impossible);
walking speed bounds the *expected* speed, ``q <= v dt / tile`` (``walk_speed_mps``,
0.34 at the defaults). ``destim`` fits its transition probabilities by maximum
likelihood; so does this one (``move_probability="fit"``): the forward algorithm gives
the log-likelihood of a sample of devices for q on a grid below the bound (factors of 4
down to bound / 4096, then halves around the best), and the best q is kept
(``move_probability_``, the curve in ``fit_loglik_``). The street graph would
restrict the moves further; it is not used, because the operator side may not import
the street modules (DESIGN §1, the operator wall) and the plan does not carry it.

**Emissions.** ``P(cell | tile)`` of the operator's coverage model
(:func:`~sim.estimate.tiles.coverage_matrix`, the belief of Bayes and EM), or a user
``emission`` on this raster.

**Observations.** The HMM steps every ``step_s`` (60 s) on a grid from the plan's period
start; the records of ``[t_{j-1}, t_j)`` are the observations of step j, one per distinct
cell (repeated records on one cell in one step say nothing new: the cell a phone camps
on is fixed by where it is). A step without records is *silent*: the phone is idle, not
absent, so the state moves by the transitions alone (no emission term). A device
*appears* at its first record (uniform prior times that cell's emission) and is present
while it has a record within W (``window_min``) before the step: it leaves W after its
last record, after a detach, and a gap longer than W starts a new track. This is exactly
the presence method's rule at the grid instants, so the tile sums of a bin add up to
presence's device total (the totals invariant; tested), in both modes: the model moves
devices, it does not create or drop them.

**Window.** A device's state is held on a ``window_tiles`` x ``window_tiles`` window
(7 x 7 tiles, 1.75 km) centred on the footprint of its last cell; the cell's emission is
truncated to its window (on the benchmark network at 250 m: 98% of a cell's
``sum_tile P(cell | tile)`` kept on average, 100% for the median cell, 76% for the 1%
widest rural sectors). At a record on another cell the state moves to that cell's window;
tiles outside it have no emission, so nothing is lost there. The one approximation is
that between two records the walk stays inside the window (moves out of it are refused,
as at the raster's edge). A world no larger than the window is modelled exactly (the
known-answer tests compare with a textbook forward-backward).

**Impossible moves.** If the predicted state gives a record zero likelihood (a jump
faster than the walk: metro, car, or a cell the coverage model places elsewhere), the
track restarts from the emission alone, the limit of a vanishing jump probability; the
smoothing does not cross the restart (the filtered state before it is its smoothed one).
The likelihood fit counts such a jump as probability ``JUMP_PROBABILITY`` per step.

**Modes.** ``realtime``: the forward filter; bin b is the state at the last grid step at
or before its reference instant ``min(start + latency, end)``, which uses only records
before that instant (tested). ``batch``: scaled forward-backward (Rabiner 1989), the
smoothed marginals at the bin end: a later record within walking reach pulls the
device's earlier positions towards it (a jump beyond reach restarts the track, see
above, and is not smoothed across).

**Computation.** Vectorised over devices: the states of all devices are one
(devices x window tiles) float32 array; a transition is one matrix product with the
window's Kronecker transition matrix; an emission is a gather of the cells' window rows;
each step is normalised per device (scaled forward-backward). Batch keeps the forward
states of a chunk of devices (``batch_memory_mb``) for the backward pass. Real time keeps
the filter's state (:meth:`HMMEstimator.estimate_minute` then costs one step per new
minute; the first call, or a minute before the kept one, replays the filter from the
start of the period).

**What it changes (measured; ``benchmarks/hmm_departures.py``).** On the demo run (the
team time trial on the offline sketch, 3,228 phones, 4 h) the HMM does *not* shorten the
departure lag: the course segments' total falls to 80% of its peak 7 min after the truth
with Voronoi and Bayes in real time, 13 min with the HMM (q fitted 0.042); in batch 3-4
min with Voronoi and Bayes (their nearest-record rule), 7 min with the HMM. A device
walking away changes cells faster than the walk fitted to a mostly standing crowd lets it
move, so the posterior trails behind its records (a fixed q at the walking bound still
trails: 11 min real time). The time of the peak is not better either (segments: median
error 32 min against 26 for Voronoi; plateaus make it noisy). On the one-hour smoke run
its batch mode puts the segments' peaks closer (mean error 1.0 min against 4.0-4.6).
The lag that remains is the presence rule's: a device that leaves without a further
record stays W minutes where it was last seen, in every method.

**Differential privacy.** With ``laplace_epsilon``, Laplace noise of scale ``1 /
epsilon`` is added to every tile's posterior sum in every bin, before zones are formed.
For fixed model parameters (q, emissions) the devices are independent given their own
records: a device's posterior at a bin is a probability vector over tiles (non-negative,
summing to 1) that depends on its records alone. Adding or removing one device therefore
changes a bin's vector of tile sums by at most 1 in L1 norm: the sensitivity is 1 and the
noisy tile sums are epsilon-DP per bin; zones, people scaling and suppression are
post-processing. With ``move_probability="fit"`` q itself is chosen from the records, a
data-dependent parameter the argument does not cover: give a fixed q for a strict
guarantee. The run's release (:func:`sim.estimate.release_estimates`) draws this noise
once, on the HMM's tile sums, besides the one on the cell counts, and accounts for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from sim.estimate.base import EstimateInputError, NotFittedError, concat_estimates
from sim.estimate.outside import emission_matrix
from sim.estimate.presence import PreparedRecords, check_bins, reference_instants
from sim.estimate.privacy import laplace_counts
from sim.estimate.spatial import SpatialEstimator
from sim.estimate.tiles import TileRaster, coverage_matrix
from sim.network.plan import NetworkPlan

__all__ = ["JUMP_PROBABILITY", "HMMEstimator", "Tracks", "device_tracks", "walk_matrix"]

#: Probability per step the likelihood fit gives a move the walk cannot make.
JUMP_PROBABILITY = 1e-6
#: Predicted likelihood below which a record restarts its device's track.
_TINY = 1e-30
#: State values below this (of a state summing to 1) are set to 0 after each move: the
#: walk's far tails would otherwise become float32 subnormals, which are ~100x slower.
_FLUSH = np.float32(1e-20)


def walk_matrix(n: int, q: float) -> np.ndarray:
    """The lazy walk on a line of `n` tiles: move one tile with probability q/2 each way.

    A move off the line is refused (the walker stays), so the matrix is symmetric and
    doubly stochastic.
    """
    d = np.zeros((n, n))
    idx = np.arange(n - 1)
    d[idx, idx + 1] = d[idx + 1, idx] = q / 2
    d[np.arange(n), np.arange(n)] = 1.0 - d.sum(axis=1)
    return d


@dataclass(frozen=True, eq=False)
class Tracks:
    """A device's observations and presence on the HMM's time grid.

    Observations (one per device, step and distinct cell) are sorted by step, device and
    rank (time order within the device's step).

    Attributes
    ----------
    dev, step, cell, rank
        Device code, grid step, cell row (plan order) and rank within the step.
    prev
        Cell of the track's previous observation (-1 for the first).
    start
        True for the first observation of a track (the device appears).
    end_dev, end_step
        One row per track: its device and the last step it is present at.
    n_devices, n_steps
        Devices, and the last step any track reaches.
    """

    dev: np.ndarray
    step: np.ndarray
    cell: np.ndarray
    rank: np.ndarray
    prev: np.ndarray
    start: np.ndarray
    end_dev: np.ndarray
    end_step: np.ndarray
    n_devices: int
    n_steps: int

    def subset(self, devices: np.ndarray) -> Tracks:
        """The tracks of `devices` (sorted codes), renumbered 0..len(devices) - 1."""
        new = np.full(self.n_devices, -1, dtype=np.int64)
        new[devices] = np.arange(len(devices))
        keep = new[self.dev] >= 0
        keep_end = new[self.end_dev] >= 0
        return Tracks(
            dev=new[self.dev[keep]],
            step=self.step[keep],
            cell=self.cell[keep],
            rank=self.rank[keep],
            prev=self.prev[keep],
            start=self.start[keep],
            end_dev=new[self.end_dev[keep_end]],
            end_step=self.end_step[keep_end],
            n_devices=len(devices),
            n_steps=self.n_steps,
        )


def device_tracks(rec: PreparedRecords, *, origin_ns: int, step_ns: int, window_ns: int) -> Tracks:
    """Cut each device's records into tracks and observations on the step grid.

    A record at time x is an observation of step ``j0 = floor((x - origin) / step) + 1``
    (the records of ``[t_{j-1}, t_j)``) and keeps its device present up to step
    ``floor((x + W - origin) / step)`` (a record within W before the step, the presence
    rule). A track breaks where the device is absent for a step, at a detach (which ends
    presence at its step and is not an observation), and at the device's last record.
    """
    i32 = np.int32  # 14 million records in the team time trial: arrays kept small
    dev, det, n = rec.device, rec.detach, rec.n_records
    j0 = ((rec.time_ns - origin_ns) // step_ns + 1).astype(i32)
    jend = ((rec.time_ns + (window_ns - origin_ns)) // step_ns).astype(i32)
    same_prev = np.zeros(n, dtype=bool)
    same_prev[1:] = dev[1:] == dev[:-1]
    new_track = ~same_prev
    new_track[1:] |= det[:-1] | (j0[1:] > jend[:-1] + 1)
    # the end of each record's coverage, cut by a detach right after it
    cut = np.flatnonzero(same_prev[1:] & det[1:])
    jend[cut] = np.minimum(jend[cut], j0[cut + 1] - 1)
    keep = ~det
    del same_prev
    track = (np.cumsum(new_track & keep, dtype=np.int64) - 1)[keep].astype(i32)
    del new_track
    t_dev, k_j0, k_cover, k_cell = dev[keep], j0[keep], jend[keep], rec.cell[keep].astype(i32)
    del j0, jend, keep
    n_tracks = int(track[-1]) + 1 if track.size else 0
    first = np.ones(track.size, dtype=bool)
    first[1:] = track[1:] != track[:-1]
    last = np.ones(track.size, dtype=bool)
    last[:-1] = first[1:]
    start_step = np.empty(n_tracks, dtype=i32)
    start_step[track[first]] = k_j0[first]
    end_step = np.empty(n_tracks, dtype=i32)
    end_step[track[last]] = k_cover[last]
    track_dev = np.empty(n_tracks, dtype=i32)
    track_dev[track[first]] = t_dev[first]
    del t_dev, k_cover, first, last
    # observations inside their track's presence, one per (track, step, cell), in order
    inside = k_j0 <= end_step[track]
    o_track, o_step, o_cell = track[inside], k_j0[inside], k_cell[inside]
    del track, k_j0, k_cell, inside
    n_cells = int(o_cell.max(initial=0)) + 1
    key = (o_track.astype(np.int64) * (int(o_step.max(initial=0)) + 1) + o_step) * n_cells
    _, once = np.unique(key + o_cell, return_index=True)
    once.sort()
    del key
    o_track, o_step, o_cell = o_track[once], o_step[once], o_cell[once]
    del once
    o_start = np.ones(len(o_track), dtype=bool)
    o_start[1:] = o_track[1:] != o_track[:-1]
    o_prev = np.full(len(o_track), -1, dtype=i32)
    o_prev[1:] = np.where(o_start[1:], -1, o_cell[:-1])
    o_dev = track_dev[o_track]
    del o_track
    # rank within (device, step): the records are in time order within a device
    group_start = np.ones(len(o_dev), dtype=bool)
    group_start[1:] = (o_dev[1:] != o_dev[:-1]) | (o_step[1:] != o_step[:-1])
    pos = np.arange(len(o_dev), dtype=i32)
    o_rank = pos - np.maximum.accumulate(np.where(group_start, pos, 0))
    del pos, group_start
    n_devices = int(dev.max()) + 1 if n else 0
    order = np.argsort(
        (o_step.astype(np.int64) * n_devices + o_dev) * (int(o_rank.max(initial=0)) + 1) + o_rank,
        kind="stable",
    )
    live = end_step >= start_step  # a track detached within its first step is never present
    n_steps = int(max(end_step[live].max(initial=0), o_step.max(initial=0)))
    return Tracks(
        dev=o_dev[order],
        step=o_step[order],
        cell=o_cell[order],
        rank=o_rank[order],
        prev=o_prev[order],
        start=o_start[order],
        end_dev=track_dev[live],
        end_step=end_step[live],
        n_devices=n_devices,
        n_steps=n_steps,
    )


@dataclass(frozen=True, eq=False)
class _Model:
    """The HMM's fixed parts on the window: transition, emissions, windows."""

    k: np.ndarray  # window transition, S x S float32 (symmetric)
    k_sparse: csr_matrix  # the same, sparse (at most 9 moves per tile)
    e: np.ndarray  # emission of each cell on its window, cells x S float32
    e_norm: np.ndarray  # the same, rows summing to 1 (a fresh track's state)
    start_loglik: np.ndarray  # log P(cell) under the uniform steady state, per cell
    x0: np.ndarray  # window origin of each cell (tile column, row)
    y0: np.ndarray
    cx: int  # window width and height (tiles)
    cy: int
    tiles: np.ndarray  # raster tile of each window position, cells x S
    n_tiles: int


#: Below this many devices a move is a sparse product: a small BLAS call can cost 100x more
#: than its arithmetic when its threads wait for busy cores.
_SPARSE_BELOW = 4096


def _move(state: np.ndarray, m: _Model) -> np.ndarray:
    """One step of the walk for every device's state (rows), flushing the far tails."""
    if len(state) >= _SPARSE_BELOW:
        out = state @ m.k
    else:
        out = np.ascontiguousarray((m.k_sparse @ state.T).T)  # K is symmetric
    out[out < _FLUSH] = 0.0
    return out


def _shift(a: np.ndarray, src: np.ndarray, dst: np.ndarray, m: _Model) -> np.ndarray:
    """States on the windows of cells `src`, re-indexed onto the windows of `dst`.

    A tile of the destination window outside the source window gets 0.
    """
    dx = (m.x0[dst] - m.x0[src])[:, None]
    dy = (m.y0[dst] - m.y0[src])[:, None]
    ix = np.arange(m.cx)[None, :] + dx
    iy = np.arange(m.cy)[None, :] + dy
    vx = (ix >= 0) & (ix < m.cx)
    vy = (iy >= 0) & (iy < m.cy)
    flat = np.clip(iy, 0, m.cy - 1)[:, :, None] * m.cx + np.clip(ix, 0, m.cx - 1)[:, None, :]
    valid = (vy[:, :, None] & vx[:, None, :]).reshape(len(a), -1)
    return np.take_along_axis(a, flat.reshape(len(a), -1), axis=1) * valid


class _Filter:
    """The forward filter of a set of devices, one grid step at a time.

    ``alpha`` holds each device's filtered state on its window (zeros when absent) and
    ``win`` the cell whose window it is on (-1 when absent).
    """

    def __init__(self, model: _Model, tracks: Tracks, *, keep_resets: bool = False) -> None:
        self.m = model
        self.tr = tracks
        n = tracks.n_devices
        self.alpha = np.zeros((n, model.k.shape[0]), dtype=np.float32)
        self.win = np.full(n, -1, dtype=np.int64)
        self.j = 0
        self.loglik = 0.0
        self.resets = np.zeros(len(tracks.dev), dtype=bool) if keep_resets else None
        self._obs_at = np.searchsorted(tracks.step, np.arange(tracks.n_steps + 2))
        order = np.argsort(tracks.end_step, kind="stable")
        self._end_step = tracks.end_step[order]
        self._end_dev = tracks.end_dev[order]

    def advance(self, j: int) -> None:
        """Step the filter up to grid step `j` (it never goes back)."""
        while self.j < j:
            self.step()

    def step(self) -> None:
        """One grid step: move, drop the devices that left, absorb the step's records."""
        m = self.m
        self.j += 1
        j = self.j
        active = self.win >= 0
        if active.any():
            self.alpha = _move(self.alpha, m)
        a, b = np.searchsorted(self._end_step, [j - 1, j])
        if b > a:
            gone = self._end_dev[a:b]
            self.alpha[gone] = 0.0
            self.win[gone] = -1
        if j > self.tr.n_steps:
            return
        lo, hi = self._obs_at[j], self._obs_at[j + 1]
        if hi == lo:
            return
        ranks = self.tr.rank[lo:hi]
        for r in range(int(ranks.max()) + 1):
            self._absorb(lo + np.flatnonzero(ranks == r))

    def _absorb(self, idx: np.ndarray) -> None:
        """Absorb observations `idx` (at most one per device): start, or update, tracks."""
        m = self.m
        dev, cell = self.tr.dev[idx], self.tr.cell[idx]
        start = self.tr.start[idx]
        if start.any():
            self.alpha[dev[start]] = m.e_norm[cell[start]]
            self.win[dev[start]] = cell[start]
        go = ~start
        if not go.any():
            return
        d, c = dev[go], cell[go]
        x = self.alpha[d]
        moved = self.win[d] != c
        if moved.any():
            x[moved] = _shift(x[moved], self.win[d][moved], c[moved], m)
        x *= m.e[c]
        z = x.sum(axis=1, dtype=np.float64)
        bad = z <= _TINY
        x[~bad] /= z[~bad, None].astype(np.float32)
        if bad.any():  # a move the walk cannot make: the track restarts
            x[bad] = m.e_norm[c[bad]]
            if self.resets is not None:
                self.resets[idx[go][bad]] = True
        self.loglik += float(np.log(z[~bad]).sum())
        self.loglik += float((np.log(JUMP_PROBABILITY) + m.start_loglik[c[bad]]).sum())
        self.alpha[d] = x
        self.win[d] = c

    def tile_sums(self, state: np.ndarray | None = None) -> np.ndarray:
        """Sum over devices of `state` (default: the filtered one) per raster tile."""
        return _tile_sums(self.m, self.alpha if state is None else state, self.win)


def _tile_sums(m: _Model, state: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Per raster tile, the sum of the devices' window states (devices on -1 skipped)."""
    active = np.flatnonzero(win >= 0)
    if active.size == 0:
        return np.zeros(m.n_tiles)
    n_cells = m.e.shape[0]
    onehot = csr_matrix(
        (np.ones(active.size, dtype=np.float32), (win[active], active)),
        shape=(n_cells, len(win)),
    )
    per_window = np.asarray(onehot @ state, dtype=np.float64)
    return np.bincount(m.tiles.ravel(), weights=per_window.ravel(), minlength=m.n_tiles)


def _smooth(model: _Model, tracks: Tracks, steps: np.ndarray, n_steps: int) -> np.ndarray:
    """Forward-backward for a chunk of devices: smoothed tile sums at `steps`."""
    f = _Filter(model, tracks, keep_resets=True)
    s = model.k.shape[0]
    n = tracks.n_devices
    alphas = np.zeros((n_steps + 1, n, s), dtype=np.float32)
    wins = np.full((n_steps + 1, n), -1, dtype=np.int64)
    for j in range(1, n_steps + 1):
        f.step()
        alphas[j] = f.alpha
        wins[j] = f.win
    resets = f.resets
    out = np.zeros((model.n_tiles, len(steps)))
    where = {int(j): i for i, j in enumerate(steps)}
    tr = tracks
    obs_at = np.searchsorted(tr.step, np.arange(n_steps + 2))
    beta = (wins[n_steps] >= 0)[:, None] * np.ones((1, s), dtype=np.float32)
    for j in range(n_steps, 0, -1):
        alpha, win = alphas[j], wins[j]
        if j in where:
            gamma = alpha * beta
            total = gamma.sum(axis=1, keepdims=True)
            ok = total[:, 0] > 0
            gamma[ok] /= total[ok]
            gamma[~ok] = alpha[~ok]  # absent devices are zero either way
            out[:, where[j]] = _tile_sums(model, gamma, win)
        # beta at j - 1: undo the step's records (last rank first), then the move
        b = beta.copy()
        broken = np.zeros(n, dtype=bool)
        lo, hi = obs_at[j], obs_at[j + 1]
        if hi > lo:
            ranks = tr.rank[lo:hi]
            for r in range(int(ranks.max()), -1, -1):
                idx = lo + np.flatnonzero(ranks == r)
                brk = tr.start[idx] | resets[idx]
                broken[tr.dev[idx][brk]] = True
                idx = idx[~brk]
                if idx.size == 0:
                    continue
                d, c, p = tr.dev[idx], tr.cell[idx], tr.prev[idx]
                x = b[d] * model.e[c]
                moved = p != c
                if moved.any():
                    x[moved] = _shift(x[moved], c[moved], p[moved], model)
                b[d] = x
        b = _move(b, model)
        b[broken | (win < 0)] = 1.0
        b[wins[j - 1] < 0] = 0.0
        top = b.max(axis=1)
        b[top > 0] /= top[top > 0, None]
        beta = b
    return out


class HMMEstimator(SpatialEstimator):
    """A hidden Markov model per device: filtered (real time) or smoothed (batch) tiles.

    See the module docstring for the model and its approximations.

    Parameters
    ----------
    tile_m
        Side of the HMM's tiles, metres (250; see the module docstring for why).
    window_tiles
        Side of each device's state window, tiles (7: 1.75 km at 250 m).
    step_s
        The HMM's time step, seconds (60: the bins' minute). A bin is the state at the
        last step at or before its reference instant.
    walk_speed_mps
        Walking speed bounding the expected speed: ``q <= walk_speed * step / tile``.
    move_probability
        q, the probability per step and axis of moving one tile, in [0, 1]; ``"fit"``
        (default) chooses it by maximum likelihood from the records.
    fit_devices
        Devices sampled (evenly over the device codes) for the likelihood fit.
    batch_memory_mb
        Memory for the forward states kept by the batch mode; devices go in chunks that
        fit it.
    emission
        A user ``P(cell | tile)`` on this raster (a sparse cells x tiles matrix, tiles
        numbered row-major from the south-west corner, or a table of cell, tile,
        probability); None = the operator's coverage model.
    spread_db, max_cells, min_probability
        The operator's coverage model (:func:`~sim.estimate.tiles.coverage_matrix`).
    **kwargs
        The parameters of :class:`~sim.estimate.spatial.SpatialEstimator` (``tiles``,
        a user tile grid, is not supported: the walk needs the square raster).

    Attributes
    ----------
    coverage_
        ``P(cell | tile)`` on the raster, cells x tiles.
    emission_kept_
        Per cell, the share of ``sum_tile P(cell | tile)`` inside its window.
    move_probability_
        The q in use (fitted or given).
    fit_loglik_
        With ``"fit"``: log-likelihood of the sampled devices per candidate q.
    tracks_
        The devices' observations and presence on the step grid (:class:`Tracks`).
    """

    method = "hmm"
    #: The release computes this method from records, not from shared cell counts.
    needs_records: ClassVar[bool] = True

    def __init__(
        self,
        *,
        tile_m: float = 250.0,
        window_tiles: int = 7,
        step_s: float = 60.0,
        walk_speed_mps: float = 1.4,
        move_probability: float | str = "fit",
        fit_devices: int = 2000,
        batch_memory_mb: float = 512.0,
        emission: Any = None,
        spread_db: float = 4.0,
        max_cells: int = 24,
        min_probability: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(tile_m=tile_m, **kwargs)
        self.window_tiles = window_tiles
        self.step_s = step_s
        self.walk_speed_mps = walk_speed_mps
        self.move_probability = move_probability
        self.fit_devices = fit_devices
        self.batch_memory_mb = batch_memory_mb
        self.emission = emission
        self.spread_db = spread_db
        self.max_cells = max_cells
        self.min_probability = min_probability

    # -- parameters ------------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        self._check_space_time()
        name = type(self).__name__
        q = self.move_probability
        if isinstance(q, str):
            if q != "fit":
                raise EstimateInputError(
                    f"{name}: move_probability = {q!r}; give 'fit' or a number in [0, 1]"
                )
        elif isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
            raise EstimateInputError(
                f"{name}: move_probability = {q!r}; give 'fit' or a number in [0, 1]"
            )
        if not isinstance(self.fit_devices, int | np.integer) or self.fit_devices < 1:
            raise EstimateInputError(
                f"{name}: fit_devices = {self.fit_devices!r}; must be an integer >= 1"
            )
        if not self.batch_memory_mb > 0:
            raise EstimateInputError(
                f"{name}: batch_memory_mb = {self.batch_memory_mb}; must be > 0"
            )

    def _check_space_time(self) -> None:
        name = type(self).__name__
        if self.tiles is not None:
            raise EstimateInputError(
                f"{name}: tiles = a user tile grid is not supported; the walk between "
                "neighbouring tiles needs the square raster (tile_m, margin_m)"
            )
        if not self.step_s > 0:
            raise EstimateInputError(f"{name}: step_s = {self.step_s}; must be > 0")
        if isinstance(self.window_tiles, bool) or not isinstance(
            self.window_tiles, int | np.integer
        ):
            raise EstimateInputError(
                f"{name}: window_tiles = {self.window_tiles!r}; must be an integer >= 1"
            )
        if self.window_tiles < 1:
            raise EstimateInputError(f"{name}: window_tiles = {self.window_tiles}; must be >= 1")
        if not self.walk_speed_mps > 0:
            raise EstimateInputError(f"{name}: walk_speed_mps = {self.walk_speed_mps}; must be > 0")
        if not self.tile_m > 0:
            raise EstimateInputError(f"{name}: tile_m = {self.tile_m}; must be > 0")
        if self.walk_speed_mps * self.step_s > self.tile_m:
            raise EstimateInputError(
                f"{name}: a walker covers {self.walk_speed_mps * self.step_s:g} m per step "
                f"(walk_speed_mps x step_s) but the walk moves at most one tile of "
                f"tile_m = {self.tile_m:g} m per step; use larger tiles or shorter steps"
            )

    @property
    def move_bound_(self) -> float:
        """The largest q walking speed allows: ``walk_speed * step / tile``."""
        return min(1.0, self.walk_speed_mps * self.step_s / self.tile_m)

    # -- fit -------------------------------------------------------------------------------
    def fit(
        self,
        records: pd.DataFrame | PreparedRecords,
        plan: NetworkPlan,
        *,
        counters: pd.DataFrame | None = None,
    ) -> HMMEstimator:
        """Check the data, build the model and cut the records into tracks; fit q.

        Parameters and errors as :meth:`Estimator.fit
        <sim.estimate.base.Estimator.fit>`, plus the HMM's parameters.
        """
        super().fit(records, plan, counters=counters)
        self._cursor: _Filter | None = None
        self.origin_ns_ = int(pd.Timestamp(plan.period[0]).tz_convert("UTC").value)
        self.step_ns_ = round(self.step_s * 1e9)
        self.tracks_ = device_tracks(
            self.records_,
            origin_ns=self.origin_ns_,
            step_ns=self.step_ns_,
            window_ns=round(self.window_min * 60e9),
        )
        self._fit_walk()
        return self

    def fit_counts(self, counts: pd.DataFrame, plan: NetworkPlan | None = None) -> HMMEstimator:
        """Not possible: the HMM follows devices through their records."""
        raise EstimateInputError(
            f"{type(self).__name__} follows each device through its records; counts per "
            "cell and bin do not say which device is which: fit(records, plan) instead"
        )

    def _fit_footprints(self, plan: NetworkPlan | None) -> None:
        raster: TileRaster = self.raster_
        if self.emission is not None:
            cov = emission_matrix(
                self.emission,
                cells=self.cell_ids_,
                tiles=np.arange(raster.n).astype(str),
                error=EstimateInputError,
            )
        else:
            if not self.spread_db >= 0 or not self.max_cells >= 1:
                raise EstimateInputError("HMMEstimator: need spread_db >= 0 and max_cells >= 1")
            cov = coverage_matrix(
                plan,
                raster,
                spread_db=self.spread_db,
                max_cells=self.max_cells,
                min_probability=self.min_probability,
            )
        self.coverage_ = csr_matrix(cov)
        self._windows(raster)

    def _windows(self, raster: TileRaster) -> None:
        """Each cell's window (centred on its footprint) and its emission on it."""
        cov = self.coverage_
        cx, cy = min(self.window_tiles, raster.nx), min(self.window_tiles, raster.ny)
        rows = np.repeat(np.arange(cov.shape[0]), np.diff(cov.indptr))
        col, row = cov.indices % raster.nx, cov.indices // raster.nx
        w = cov.data
        mass = np.bincount(rows, weights=w, minlength=cov.shape[0])
        if (mass <= 0).any():
            bad = int(np.flatnonzero(mass <= 0)[0])
            raise EstimateInputError(
                f"emission: cell {self.cell_ids_[bad]!r} has no tile that can emit it"
            )
        # centred on the weighted centre of the footprint, or on its peak if that keeps more
        centre_x = np.bincount(rows, weights=w * col, minlength=len(mass)) / mass
        centre_y = np.bincount(rows, weights=w * row, minlength=len(mass)) / mass
        order = np.lexsort((-w, rows))
        peak = order[np.r_[0, np.flatnonzero(np.diff(rows[order])) + 1]]
        best_x, best_y, best_kept = None, None, None
        for px, py in ((np.floor(centre_x), np.floor(centre_y)), (col[peak], row[peak])):
            x0 = np.clip(px.astype(np.int64) - cx // 2, 0, raster.nx - cx)
            y0 = np.clip(py.astype(np.int64) - cy // 2, 0, raster.ny - cy)
            inside = (
                (col >= x0[rows])
                & (col < x0[rows] + cx)
                & (row >= y0[rows])
                & (row < y0[rows] + cy)
            )
            kept = np.bincount(rows, weights=w * inside, minlength=len(mass)) / mass
            if best_kept is None:
                best_x, best_y, best_kept = x0, y0, kept
            else:
                better = kept > best_kept + 1e-12
                best_x = np.where(better, x0, best_x)
                best_y = np.where(better, y0, best_y)
                best_kept = np.where(better, kept, best_kept)
        x0, y0 = best_x, best_y
        lx, ly = np.meshgrid(np.arange(cx), np.arange(cy))
        tiles = (y0[:, None] + ly.ravel()[None, :]) * raster.nx + (
            x0[:, None] + lx.ravel()[None, :]
        )
        n_cells, size = tiles.shape
        e = np.asarray(cov[np.repeat(np.arange(n_cells), size), tiles.ravel()], dtype=np.float32)
        e = e.reshape(n_cells, size)
        self.emission_kept_ = best_kept
        total = e.sum(axis=1, keepdims=True)
        self._model_parts = {
            "e": e,
            "e_norm": (e / total).astype(np.float32),
            "start_loglik": np.log(total[:, 0].astype(np.float64) / raster.n),
            "x0": x0,
            "y0": y0,
            "cx": cx,
            "cy": cy,
            "tiles": tiles,
            "n_tiles": raster.n,
        }

    def _model(self, q: float) -> _Model:
        p = self._model_parts
        k = np.kron(walk_matrix(p["cy"], q), walk_matrix(p["cx"], q)).astype(np.float32)
        return _Model(k=k, k_sparse=csr_matrix(k), **p)

    def _fit_walk(self) -> None:
        if self.move_probability != "fit":
            self.move_probability_ = float(self.move_probability)
            self.fit_loglik_ = {}
            self.model_ = self._model(self.move_probability_)
            return
        n = self.tracks_.n_devices
        sample = np.unique(np.linspace(0, n - 1, min(n, int(self.fit_devices))).astype(np.int64))
        sub = self.tracks_.subset(sample)
        loglik: dict[float, float] = {}

        def evaluate(q: float) -> None:
            if q not in loglik:
                f = _Filter(self._model(q), sub)
                f.advance(sub.n_steps)
                loglik[q] = f.loglik

        # a coarse grid, factors of 4 below the bound, then the best one's halves
        for q in self.move_bound_ / 4.0 ** np.arange(7):
            evaluate(float(q))
        best = max(loglik, key=loglik.__getitem__)
        for q in (best * 2.0, best / 2.0):
            if q <= self.move_bound_ * (1 + 1e-9):
                evaluate(float(min(q, self.move_bound_)))
        self.fit_loglik_ = loglik
        self.move_probability_ = max(loglik, key=loglik.__getitem__)
        self.model_ = self._model(self.move_probability_)

    # -- estimate --------------------------------------------------------------------------
    def _steps(self, bins: pd.DatetimeIndex, width: pd.Timedelta) -> np.ndarray:
        """Grid step of each bin: the last step at or before its reference instant."""
        instants = reference_instants(
            bins, width=width, latency=pd.Timedelta(minutes=self.latency_min), mode=self.mode
        )
        return (instants - self.origin_ns_) // self.step_ns_

    def _check_fitted(self) -> None:
        if getattr(self, "records_", None) is None or not hasattr(self, "model_"):
            raise NotFittedError(f"{type(self).__name__}: call fit(records, plan) first")

    def tile_devices(self, bins: pd.DatetimeIndex) -> np.ndarray:
        """Expected devices per raster tile (rows) and bin (columns).

        The sum over devices of each device's filtered (real time) or smoothed (batch)
        tile probabilities at the bin's step.
        """
        self._check_fitted()
        bins, width = check_bins(bins, self.plan_, error=EstimateInputError)
        steps = self._steps(bins, width)
        if self.mode == "realtime":
            return self._filtered(steps)
        return self._smoothed(steps)

    def _filtered(self, steps: np.ndarray) -> np.ndarray:
        f = _Filter(self.model_, self.tracks_)
        out = np.zeros((self.model_.n_tiles, len(steps)))
        for i in np.argsort(steps, kind="stable"):
            f.advance(int(steps[i]))
            out[:, i] = f.tile_sums()
        self._cursor = f
        return out

    def _smoothed(self, steps: np.ndarray) -> np.ndarray:
        tr = self.tracks_
        last = int(max(steps.max(initial=0), tr.n_steps))
        s = self.model_.k.shape[0]
        per_device = (last + 1) * (s * 4 + 8)
        chunk = max(1, int(self.batch_memory_mb * 2**20 // per_device))
        out = np.zeros((self.model_.n_tiles, len(steps)))
        for lo in range(0, tr.n_devices, chunk):
            devices = np.arange(lo, min(lo + chunk, tr.n_devices))
            out += _smooth(self.model_, tr.subset(devices), steps, last)
        return out

    def estimate(self, zones: Any, bins: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        """People per zone and bin from the devices' posterior tiles.

        Parameters and returns as :meth:`Estimator.estimate
        <sim.estimate.base.Estimator.estimate>`; bins are required.
        """
        self._check_fitted()
        if bins is None:
            raise EstimateInputError("bins: give the bin starts to estimate")
        bins, _ = check_bins(bins, self.plan_, error=EstimateInputError)
        return self.estimate_from_tiles(self.tile_devices(bins), zones, bins)

    def estimate_from_tiles(
        self, tiles: np.ndarray, zones: Any, bins: pd.DatetimeIndex
    ) -> pd.DataFrame:
        """People per zone and bin from expected devices per tile and bin.

        The step after :meth:`tile_devices` (the release adds its noise in between).
        With ``laplace_epsilon``, Laplace noise of scale 1 / epsilon is added to every
        tile-bin first (sensitivity 1; see the module docstring).
        """
        self._check_fitted()
        bins, _ = check_bins(bins, self.plan_, error=EstimateInputError)
        tiles = np.asarray(tiles, dtype=np.float64)
        if tiles.shape != (self.model_.n_tiles, len(bins)):
            raise EstimateInputError(
                f"tile sums have shape {tiles.shape}; need (tiles = {self.model_.n_tiles}, "
                f"bins = {len(bins)})"
            )
        if not np.isfinite(tiles).all() or (tiles < 0).any():
            raise EstimateInputError("tile sums must be finite and >= 0")
        rng = np.random.default_rng(self.random_state)
        if self.laplace_epsilon is not None:
            tiles = laplace_counts(tiles, epsilon=self.laplace_epsilon, rng=rng)
        frames = [
            self._table(np.asarray(self.zone_matrix(zs) @ tiles), zs, bins, rng=rng)
            for zs in self._zone_sets(zones)
        ]
        return concat_estimates(frames, consume=True)

    def estimate_from_counts(
        self,
        counts: np.ndarray,
        zones: Any,
        bins: pd.DatetimeIndex,
        *,
        noise_epsilon: float | None = None,
        live: bool = False,
    ) -> pd.DataFrame:
        """Not possible: cell counts do not say which device is which."""
        raise EstimateInputError(
            f"{type(self).__name__} follows each device through its records and cannot "
            "estimate from cell counts; use estimate(zones, bins) after fit(records, plan)"
        )

    def estimate_minute(self, zones: Any, bin_start: pd.Timestamp) -> pd.DataFrame:
        """The real-time update of one bin: the filter stepped on to the bin's instant.

        The filter's state is kept between calls, so the next minute costs one step; the
        first call, or a bin before the kept state, replays the filter from the start of
        the period. Equal to the same bin of :meth:`estimate`.
        """
        self._check_fitted()
        if self.mode != "realtime":
            raise EstimateInputError(
                f"{type(self).__name__}: estimate_minute is the real-time update; mode is "
                f"{self.mode!r}"
            )
        bins, width = check_bins(
            pd.DatetimeIndex([pd.Timestamp(bin_start)]), self.plan_, error=EstimateInputError
        )
        (step,) = self._steps(bins, width)
        cursor = getattr(self, "_cursor", None)
        if cursor is None or cursor.j > step:
            cursor = self._cursor = _Filter(self.model_, self.tracks_)
        cursor.advance(int(step))
        return self.estimate_from_tiles(cursor.tile_sums()[:, None], zones, bins)
