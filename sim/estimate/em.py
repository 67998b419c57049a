"""Iterative maximum likelihood (EM) deconvolution of cell counts into tile densities.

Ricciato, Lanzieri, Wirthmann & Seynaeve (2020), "Towards a methodological framework
for estimating present population density from mobile network operator data",
Pervasive and Mobile Computing 68, 101263. With ``c_i`` the devices counted in cell i
and ``a_ij = P(detected in cell i | in tile j)`` (the operator's coverage model), the
counts are modelled as independent Poisson with means ``(A u)_i`` and the ML estimate of
the tile densities u is sought by the EM (Richardson–Lucy / Shepp–Vardi) iteration

    u_j <- u_j / sum_i a_ij * sum_i c_i a_ij / sum_k a_ik u_k

started from a uniform positive u (any positive start is admissible; the uniform one
assumes nothing). Each iteration keeps u >= 0, conserves ``sum_j u_j sum_i a_ij =
sum_i c_i`` (here every tile's ``sum_i a_ij`` is 1, so the tile total equals the cell
total) and never decreases the Poisson likelihood.
Stopping rule: a bin stops when no tile's density changed by more than `tol` devices in
the last iteration (the largest change in expected devices per tile,
``max_j |u_new_j - u_j| < tol``), or after `max_iter` iterations. The rule is in
devices, not relative: the sampling error of a tile holding u devices is about sqrt(u),
so an absolute threshold makes the optimisation error small against the sampling error
at every scale, and the error keeps falling like 1/sqrt(N) as the devices N grow. The
former relative rule (``|u_new - u|_1 / |u|_1 < tol``) stopped at the same relative
distance from the ML solution whatever N, so its bias did not shrink with more devices
(about 0.9% in an identifiable toy world; ``tests/test_em_convergence.py``).
Default ``tol = 0.01`` device: far below one device, the smallest sampling error of an
occupied tile.

Early stopping as a regulariser. Like Richardson–Lucy deconvolution, ML-EM fits noise
when run very long: from the uniform start, stopping early keeps the estimate smooth,
which helps when the operator's coverage model is wrong (the simulated world has
shadowing, the model not). In practice the cap `max_iter` (300) is what stops EM on
the runs here (see :class:`EMEstimator` for the measured effect on the smoke run).

A prior (maximum a posteriori EM). With an independent gamma prior on each tile's
density, shape ``1 + w N q_j`` and rate ``w`` (q a prior over tiles summing to 1, N the
bin's device total, w the ``prior_weight``), the EM for the posterior mode has the
closed-form M-step of Lange & Carson (1984, "EM reconstruction algorithms for emission
and transmission tomography", J. Comput. Assist. Tomogr. 8(2); the gamma-prior case of
Lange, Bahn & Little 1987, IEEE Trans. Med. Imaging 6(2))

    u_j <- (u_j * sum_i c_i a_ij / sum_k a_ik u_k  +  w N q_j) / (sum_i a_ij + w)

i.e. with every ``sum_i a_ij = 1`` each update is ``(1 - w') ML-EM step + w' N q_j``
with ``w' = w / (1 + w)``: the prior counts as w times the bin's devices, its mode is
the prior's expected count ``N q_j``, the total stays N, and like every EM the iteration
never decreases the log-posterior. ``w = 0`` is the ML-EM above (a flat prior). The
prior is renormalised over the tiles some cell covers (a tile no cell sees stays 0, as
in ML-EM).

All bins are iterated together as columns of one matrix; a bin leaves the iteration
when it meets the rule. How the iteration is made cheap without changing its result is
in the notes of :func:`em_deconvolve`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.sparse import csc_matrix, csr_matrix, vstack

from sim.estimate.base import EstimateInputError
from sim.estimate.bayes import check_prior_weight, coverage_for, outside_cells, prior_over_time
from sim.estimate.intervals import (
    bootstrap_density_variance,
    density_location_moments,
    zone_pairs,
)
from sim.estimate.spatial import SpatialEstimator
from sim.estimate.tiles import ZoneSet
from sim.network.plan import NetworkPlan

__all__ = ["EMEstimator", "EMResult", "em_deconvolve", "poisson_loglik"]


@dataclass(frozen=True)
class EMResult:
    """Tile densities, iterations used per bin, and (if asked) the per-iteration trace."""

    u: np.ndarray
    n_iter: np.ndarray
    loglik: list[np.ndarray]
    totals: list[np.ndarray]


def poisson_loglik(counts: np.ndarray, coverage: csr_matrix, u: np.ndarray) -> np.ndarray:
    """Poisson log-likelihood per bin (without the ``log c!`` constant)."""
    lam = np.asarray(coverage @ u)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(counts > 0, counts * np.log(np.where(lam > 0, lam, 1.0)), 0.0)
        term = np.where((counts > 0) & (lam <= 0), -np.inf, term)
    return term.sum(axis=0) - lam.sum(axis=0)


def em_deconvolve(
    counts: np.ndarray,
    coverage: csr_matrix,
    *,
    tol: float = 0.01,
    max_iter: int = 300,
    trace: bool = False,
    init: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    prior_state: np.ndarray | None = None,
    prior_weight: float = 0.0,
) -> EMResult:
    """ML-EM estimate of tile densities from cell counts, all bins at once.

    Parameters
    ----------
    counts
        Devices per cell (rows) and bin (columns), >= 0.
    coverage
        ``a_ij``, cells x tiles.
    tol
        Stop a bin when no tile's density changed by `tol` devices or more in the last
        iteration.
    max_iter
        Iteration cap.
    trace
        Record, after each iteration, the log-likelihood and the weighted total
        ``sum_j u_j sum_i a_ij`` of every bin (for tests and diagnostics).
    init
        Starting densities (tiles,) or (tiles x bins), e.g. the previous minute's
        solution; each bin's start is rescaled to its count total and mixed with 10% of
        the uniform start so that no covered tile starts at zero (EM cannot revive one).
        Default: the uniform start.
    prior, prior_state, prior_weight
        The MAP prior (module docstring): `prior` is a prior over tiles, (tiles,) for
        every bin or (states, tiles) with `prior_state` giving each bin's row;
        `prior_weight` w >= 0 its strength (0: none, the ML estimate).

    Returns
    -------
    EMResult
        ``u`` is tiles x bins.

    Notes
    -----
    The iteration runs on the part of the problem that can hold devices: the cells that
    count somebody in some bin and the tiles those cells cover. This changes no result.
    A tile whose covering cells all count zero gets the factor ``sum_i a_ij c_i / lam_i
    = 0`` in the first iteration and stays exactly 0 (EM cannot revive a tile), and a
    cell counting zero adds exactly 0 to every tile's factor; the mass such tiles hold at
    the start is kept in the first iteration's largest change, as the stopping rule
    asks. On the network benchmark this halves the coverage matrix (1,425 of 1,935
    cells, 28,333 of 44,091 tiles, 47% of the non-zeros). The forward product ``A u``
    runs on the compressed columns of A, reading u once in order and accumulating into
    the small cells x bins array (3 times faster than on rows); the back projection runs
    on the rows of ``A^T`` divided beforehand by ``sum_i a_ij``, and with the update and
    the change block by block in place (:func:`_iterate`). All in float64, as the
    invariants need. On the benchmark (420 minutes, 300 iterations each) this took the
    iteration from 79 s to 14 s of CPU, measured back to back, with the same densities
    (largest difference 1.2e-11 devices per tile) and the same iterations. Splitting the
    bins over two threads (SciPy's sparse products and NumPy release the GIL) gave no
    gain on the benchmark's 2-vCPU machine, so it is not done.
    """
    c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    if c.ndim != 2 or c.shape[0] != coverage.shape[0]:
        raise EstimateInputError(
            f"counts have shape {c.shape}; need (cells = {coverage.shape[0]}, bins)"
        )
    a = csr_matrix(coverage, dtype=np.float64)
    sens = np.asarray(a.sum(axis=0)).ravel()  # sum_i a_ij
    covered = sens > 0
    n_tiles, n_bins = a.shape[1], c.shape[1]
    total = c.sum(axis=0)
    u = np.zeros((n_tiles, n_bins))
    u[covered] = total / max(float(sens[covered].sum()), 1e-300)
    if init is not None:
        start = np.broadcast_to(np.asarray(init, dtype=np.float64).reshape(n_tiles, -1),
                                (n_tiles, n_bins)) * covered[:, None]  # fmt: skip
        mass = sens @ start
        scaled = start * np.divide(total, mass, out=np.zeros_like(total), where=mass > 0)
        u = np.where(mass > 0, 0.9 * scaled + 0.1 * u, u)
    q = _map_prior(prior, prior_state, prior_weight, covered=covered, n_bins=n_bins)
    n_iter = np.zeros(n_bins, dtype=np.int64)
    active = np.flatnonzero(total > 0)  # bins that iterate
    loglik: list[np.ndarray] = []
    totals: list[np.ndarray] = []
    if active.size == 0 or max_iter < 1:
        return EMResult(u=u, n_iter=n_iter, loglik=loglik, totals=totals)
    # the part that can hold devices: counted cells, the tiles they cover
    ca = c[:, active]
    cells = np.flatnonzero((ca > 0).any(axis=1))
    rows = a[cells]
    tiles = np.unique(rows.indices[rows.data > 0])
    dead = np.ones(n_tiles, dtype=bool)
    dead[tiles] = False
    fwd = csc_matrix(rows[:, tiles])  # a_ij, counted cells x their tiles
    back = csr_matrix(fwd.T.multiply(1.0 / sens[tiles][:, None]))  # a_ij / sum_i a_ij
    ca = ca[cells]
    start = u[np.ix_(tiles, active)]
    # where every tile not in `tiles` is after one iteration and stays: 0, or with a prior
    # the prior's share alone, (w N q_j) / (sum_i a_ij + w), as its ML step is 0
    settled = np.zeros((int(dead.sum()), active.size))
    if q is not None:
        qs, state = q
        settled = (prior_weight * qs[:, dead].T[:, state[active]] * total[active]
                   / (sens[dead] + prior_weight)[:, None])  # fmt: skip
    # largest change of those tiles in the first iteration (part of the first change)
    lost = np.abs(u[np.ix_(dead, active)] - settled).max(axis=0, initial=0.0)
    u[np.ix_(dead, active)] = settled

    def record(columns: np.ndarray, work: np.ndarray) -> None:
        u[np.ix_(tiles, active[columns])] = work
        loglik.append(poisson_loglik(c, a, u))
        totals.append(sens @ u)

    pull = None
    if q is not None:  # the MAP step on the reduced problem
        qs, state = q
        pull = _Pull(
            q=np.ascontiguousarray(qs[:, tiles].T * prior_weight),
            state=state[active],
            total=total[active],
            sens=sens[tiles],
            weight=prior_weight,
        )
    work, n_iter[active] = _iterate(
        fwd, back, ca, start, lost, tol=tol, max_iter=max_iter,
        record=record if trace else None, pull=pull,
    )  # fmt: skip
    u[np.ix_(tiles, active)] = work
    return EMResult(u=u, n_iter=n_iter, loglik=loglik, totals=totals)


#: Default replicates of the bootstrap of EM's density in the intervals, and every how
#: many bins one is bootstrapped (see :class:`EMEstimator`).
N_BOOTSTRAP = 8
BOOTSTRAP_EVERY = 15


@dataclass(frozen=True)
class _Pull:
    """The MAP prior's part of the update on the reduced tiles (:func:`em_deconvolve`).

    ``q`` is tiles x states, already times the weight w; ``state`` and ``total`` are per
    iterating bin; ``sens`` is ``sum_i a_ij`` per tile.
    """

    q: np.ndarray
    state: np.ndarray
    total: np.ndarray
    sens: np.ndarray
    weight: float

    def keep(self, mask: np.ndarray) -> _Pull:
        """The same for the bins still iterating."""
        return _Pull(self.q, self.state[mask], self.total[mask], self.sens, self.weight)

    def apply(self, tiles: slice, ml: np.ndarray) -> np.ndarray:
        """``(s_j ML_j + w N q_j) / (s_j + w)`` for a block of tiles, in place of `ml`."""
        s = self.sens[tiles][:, None]
        ml *= s
        ml += self.q[tiles][:, self.state] * self.total
        ml /= s + self.weight
        return ml


def _map_prior(
    prior: np.ndarray | None,
    state: np.ndarray | None,
    weight: float,
    *,
    covered: np.ndarray,
    n_bins: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The MAP prior as (states x tiles, renormalised on covered tiles; state per bin)."""
    if not weight >= 0:
        raise EstimateInputError(f"prior_weight = {weight}; must be >= 0")
    if prior is None or weight == 0:
        return None
    qs = np.atleast_2d(np.asarray(prior, dtype=np.float64))
    if qs.shape[1] != len(covered) or not np.isfinite(qs).all() or (qs < 0).any():
        raise EstimateInputError(
            f"prior: need finite weights >= 0, one per tile ({len(covered)}), per state; "
            f"got shape {qs.shape}"
        )
    qs = qs * covered
    mass = qs.sum(axis=1)
    if not (mass > 0).all():
        raise EstimateInputError("prior: no weight on the tiles the cells cover")
    state = np.zeros(n_bins, np.int64) if state is None else np.asarray(state, np.int64)
    if len(state) != n_bins or (state < 0).any() or (state >= len(qs)).any():
        raise EstimateInputError(f"prior_state: need one state in [0, {len(qs)}) per bin")
    return qs / mass[:, None], state


#: Bytes of one block of tiles x bins in the back projection: small enough to stay in a
#: core's L2 cache while it is multiplied, compared and written back.
BLOCK_BYTES = 1 << 20


def _iterate(
    fwd: csc_matrix,
    back: csr_matrix,
    counts: np.ndarray,
    start: np.ndarray,
    lost: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    record: Callable[[np.ndarray, np.ndarray], None] | None = None,
    pull: _Pull | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Iterate bins (columns) from `start` until each meets the stopping rule.

    `fwd` is A and `back` is ``A^T`` with rows divided by ``sum_i a_ij``, both on the
    reduced problem. `start` (tiles x bins, C order) is overwritten with the result.
    `lost` is each bin's largest start density on tiles outside the problem, which the
    first iteration sets to zero. `record(columns, densities)` is called after every iteration
    with the bins still iterating. `pull` turns each update into the MAP update of a
    prior. Returns the densities and the iterations used.

    The back projection, the update and the change run block by block of tiles, in
    place: no tiles x bins array is allocated per iteration (fresh memory costs page
    faults), and each block is read from memory once per iteration instead of once per
    array operation (on the benchmark 45-50 ms per iteration instead of 75-85).
    """
    out = work = start  # `work` holds the bins still iterating
    n_iter = np.zeros(start.shape[1], dtype=np.int64)
    active = np.arange(start.shape[1])
    ca = counts
    rows = max(1, BLOCK_BYTES // (8 * start.shape[1]))
    blocks = [(slice(lo, lo + rows), back[lo : lo + rows]) for lo in range(0, start.shape[0], rows)]
    for _ in range(max_iter):
        if active.size == 0:
            break
        lam = fwd @ work
        ratio = np.divide(ca, lam, out=np.zeros_like(lam), where=lam > 0)
        change = lost  # max_j |u_new - u|, devices
        for tiles, part in blocks:
            old = work[tiles]
            new = part @ ratio
            new *= old
            if pull is not None:
                pull.apply(tiles, new)
            np.subtract(old, new, out=old)
            np.abs(old, out=old)
            change = np.maximum(change, old.max(axis=0, initial=0.0))
            old[...] = new
        lost = np.zeros_like(lost)
        n_iter[active] += 1
        if record is not None:
            record(active, work)
        done = change < tol
        if done.any():
            keep = ~done
            out[:, active[done]] = work[:, done]
            work, ca, active = work[:, keep], ca[:, keep], active[keep]
            lost = lost[keep]
            pull = None if pull is None else pull.keep(keep)
    out[:, active] = work
    return out, n_iter


class EMEstimator(SpatialEstimator):
    """Iterative maximum likelihood deconvolution (Ricciato et al. 2020).

    Parameters
    ----------
    tol, max_iter
        The stopping rule (:func:`em_deconvolve`): no tile's density changes by `tol`
        devices (default 0.01) in an iteration, at most `max_iter` iterations.
    warm_start, block
        Off by default (the paper starts every minute from the uniform density). When on,
        `block` consecutive minutes are solved at a time, each block started from the last
        solution of the one before (mixed with 10% uniform). On the network benchmark's
        records (crowd of 500,000) every minute hit 300 iterations from the uniform start;
        warm starts stopped at a median of 49 (18 s against 61 s, measured before the
        iteration was made 3 times cheaper) with a likelihood at least as high. But EM's
        early stop from the uniform start also regularises: carried over from minute to
        minute, the solution grows spikier, and on the demo the named areas' MAPE rose
        from 29% to 36% (the finish area worst). Hence not the default.
    prior
        None (start from the uniform density, as the paper) or a prior over tiles (as
        for :class:`~sim.estimate.bayes.BayesEstimator`, an
        :class:`~sim.estimate.priors.EventPrior` included): EM then starts from it (90%
        prior, 10% uniform, so no covered tile starts at zero). The ML fixed point does
        not depend on the start, but the early-stopped solution does, and a tile the
        data cannot resolve keeps the prior's shape.
    prior_weight
        ``w`` in [0, 1]: with a prior, each update is the MAP-EM update of a gamma prior
        whose mode is the prior's expected count and which counts as w times the bin's
        devices (module docstring; Lange & Carson 1984). 0 (default): the prior only
        sets the start.
    emission
        A user-supplied ``P(cell | tile)`` (needs ``tiles``); see
        :class:`~sim.estimate.bayes.BayesEstimator`.
    spread_db, max_cells, min_probability
        The operator's coverage model (:func:`~sim.estimate.tiles.coverage_matrix`).
    n_bootstrap, bootstrap_every
        Intervals: replicates of the parametric bootstrap of EM's density (counts drawn
        from the fitted cell means, EM refitted from its usual start, also when
        `warm_start` is on), whose effect on the location posterior
        is added to the interval (:mod:`sim.estimate.intervals`); 0 = the location
        posterior under the fitted density alone. Each replicate costs one more EM fit,
        so only every `bootstrap_every`-th bin is bootstrapped; a bin between takes the
        gain ``(V_loc + V_boot + 1) / (V_loc + 1)`` of the nearest bootstrapped bin, zone
        by zone, on its own location variance (the density's uncertainty relative to
        the location's changes slowly from minute to minute). On the estimators
        benchmark (1,833 cells, 39,794 tiles) one EM fit of a minute took 0.17 s of CPU
        and its 8 replicates 0.67 s more, measured on a loaded machine, against the
        1 s of the whole update; so the real-time minute update (:meth:`estimate_minute`)
        does not bootstrap: its interval is the location posterior under the fitted density
        alone, narrower than the batch one (``interval_facts()["realtime"]`` says so).
    **kwargs
        The parameters of :class:`~sim.estimate.spatial.SpatialEstimator`.

    Attributes
    ----------
    coverage_
        ``a_ij = P(cell i | tile j)``, cells x tiles.
    n_iter_
        Iterations used per bin by the last call of :meth:`estimate`.
    """

    method = "em"

    def __init__(
        self,
        *,
        tol: float = 0.01,
        max_iter: int = 300,
        warm_start: bool = False,
        block: int = 5,
        prior: Any = None,
        prior_weight: float = 0.0,
        emission: Any = None,
        spread_db: float = 4.0,
        max_cells: int = 24,
        min_probability: float = 1e-3,
        n_bootstrap: int = N_BOOTSTRAP,
        bootstrap_every: int = BOOTSTRAP_EVERY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_bootstrap = n_bootstrap
        self.bootstrap_every = bootstrap_every
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.block = block
        self.prior = prior
        self.prior_weight = prior_weight
        self.emission = emission
        self.spread_db = spread_db
        self.max_cells = max_cells
        self.min_probability = min_probability

    def _outside_cells(self) -> np.ndarray | None:
        return outside_cells(self.emission)

    def _fit_footprints(self, plan: NetworkPlan | None) -> None:
        if not self.tol > 0 or not self.max_iter >= 1:
            raise EstimateInputError("EMEstimator: need tol > 0 and max_iter >= 1")
        if not self.spread_db >= 0 or not self.max_cells >= 1:
            raise EstimateInputError("EMEstimator: need spread_db >= 0 and max_cells >= 1")
        for name, least in (("n_bootstrap", 0), ("bootstrap_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                isinstance(value, int | np.integer) and value >= least
            ):
                raise EstimateInputError(
                    f"EMEstimator: {name} = {value!r}; give an integer >= {least}"
                )
        weight = check_prior_weight(self)
        self.coverage_ = coverage_for(self, plan)
        self.prior_ = (
            None if self.prior is None else prior_over_time(self.prior, self.space_, weight=1.0)
        )
        self._map_weight = weight
        self.__dict__.pop("_cache_key", None)

    location_model: ClassVar[str] = (
        "posterior P(tile | cell) with EM's fitted density, plus a parametric bootstrap of "
        "that density (n_bootstrap); calibrated where the counts identify the density"
    )

    def interval_facts(self) -> dict[str, Any]:
        """The shared facts, the bootstrap's replicates and what the real-time bound is."""
        return {
            **super().interval_facts(),
            "n_bootstrap": int(self.n_bootstrap),
            "bootstrap_every": int(self.bootstrap_every),
            "realtime": "location posterior under the fitted density, without the "
            "density's bootstrap (a refit per replicate is too slow for the minute update)",
        }

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
        """Location posterior under the fitted density, plus the density's bootstrap.

        The bootstrap refits once for all zone systems (their zone matrices stacked), on
        every `bootstrap_every`-th bin; not in the real-time update (`live`).
        """
        u = self.tile_devices(counts)
        out = []
        for zs in sets:
            pairs = self._cached("pairs", zs, partial(self._pairs, zs))
            out.append(
                density_location_moments(counts, self.coverage_, u, pairs, noise_var=noise_var)[1]
            )
        if self.n_bootstrap == 0 or not sets or live:
            return out
        n_bins = counts.shape[1]
        every = int(self.bootstrap_every)
        picked = np.arange(0, n_bins, every)
        stacked = vstack([self.zone_matrix(zs) for zs in sets]).tocsr()
        states = self._prior_states()
        self._boot_states = None if states is None else states[picked]
        extra = bootstrap_density_variance(
            counts[:, picked],
            self.coverage_,
            u[:, picked],
            self._refit,
            stacked,
            n_bootstrap=int(self.n_bootstrap),
            rng=rng,
            keys=bins.asi8[picked],
        )
        nearest = np.minimum(np.rint(np.arange(n_bins) / every).astype(np.int64), len(picked) - 1)
        rows = np.cumsum([0] + [len(zs.zone) for zs in sets])
        for k, (lo, hi) in enumerate(pairwise(rows)):
            loc = out[k][:, picked]
            gain = (loc + extra[lo:hi] + 1.0) / (loc + 1.0)
            out[k] = (out[k] + 1.0) * gain[:, nearest] - 1.0
        return out

    def _pairs(self, zs: ZoneSet) -> Any:
        return zone_pairs(self.coverage_, self.zone_matrix(zs))

    def _refit(self, counts: np.ndarray, bins: np.ndarray) -> np.ndarray:
        """EM's densities for replicate counts: same start, prior and stopping rule, no cache.

        `bins`: each replicate column's bin among the bootstrapped ones, whose prior states
        are ``_boot_states``.
        """
        states = getattr(self, "_boot_states", None)
        return self._deconvolve(counts, None if states is None else states[bins])[0]

    def _prior_states(self) -> np.ndarray | None:
        """The prior's state per bin in hand; None for no prior or one that never changes."""
        p = self.prior_
        if p is None or p.n_states <= 1:
            return None
        return p.states(self.bins_in_hand())

    def tile_devices(self, counts: np.ndarray) -> np.ndarray:
        """Devices per tile: the EM densities (computed once per set of counts and bins)."""
        states = self._prior_states()
        key = (counts.shape, hash(counts.tobytes()), None if states is None else states.tobytes())
        if getattr(self, "_cache_key", None) != key:
            u, n_iter = self._deconvolve(counts, states)
            self._cache_key, self._cache_u = key, u
            self.n_iter_ = n_iter
        return self._cache_u

    def _deconvolve(
        self, counts: np.ndarray, states: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The EM densities and iterations of `counts` (bins of the given prior states)."""
        p = self.prior_
        if states is None:
            states = np.zeros(counts.shape[1], dtype=np.int64)
        prior: dict[str, Any] = (
            {} if p is None else {"prior": p.weights, "prior_weight": self._map_weight}
        )

        def start(cols: np.ndarray | slice) -> np.ndarray | None:
            if p is None:
                return None
            return p.weights[0] if p.n_states == 1 else p.weights[states[cols]].T

        if not self.warm_start:
            result = em_deconvolve(counts, self.coverage_, tol=self.tol, max_iter=self.max_iter,
                                   init=start(slice(None)), prior_state=states,
                                   **prior)  # fmt: skip
            return result.u, result.n_iter
        # blocks of consecutive bins, each started from the previous block's end
        u = np.zeros((self.coverage_.shape[1], counts.shape[1]))
        n_iter = np.zeros(counts.shape[1], dtype=np.int64)
        prev = None  # the last solution so far
        for lo in range(0, counts.shape[1], max(1, self.block)):
            hi = min(lo + max(1, self.block), counts.shape[1])
            init = prev if prev is not None else start(slice(lo, hi))
            result = em_deconvolve(counts[:, lo:hi], self.coverage_, tol=self.tol,
                                   max_iter=self.max_iter, init=init,
                                   prior_state=states[lo:hi], **prior)  # fmt: skip
            u[:, lo:hi], n_iter[lo:hi] = result.u, result.n_iter
            if counts[:, hi - 1].sum() > 0:
                prev = result.u[:, -1]
        return u, n_iter
