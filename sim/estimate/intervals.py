"""Intervals for people per zone and bin: where the cells' devices are, and who carries one.

An estimate is ``E = f * D``: D devices placed in a zone by a method, f people per
device (:mod:`sim.estimate.scaling`). The ``[lower, upper]`` interval of a zone-bin is a
``confidence`` interval for the people there, built from three parts.

**Location.** A spatial method puts the ``n_c`` devices of
cell c on tiles by ``P(tile | cell) ∝ P(cell | tile) * lambda_tile``: lambda is the Bayes
prior, EM's fitted density, or for Voronoi the uniform density on the cell's region. If
the devices' tiles follow that lambda, the cell each was seen in is all the data say
about it, so given the counts every device is *independently* in zone z with probability
``q_cz = sum_t P(t | c) w_zt`` (``w_zt`` the share of tile t in z). The zone's device
count is then a sum of independent Bernoullis (Poisson-binomial), with

    mean  sum_c n_c q_cz            (the method's own estimate, for Bayes and Voronoi)
    var   sum_c n_c q_cz (1 - q_cz)

computed per zone-bin with sparse products, no loop over devices or zones
(:func:`fixed_location_moments` when q does not change with the bin,
:func:`density_location_moments` when lambda does, as for EM). On a world whose devices
follow the method's lambda and ``P(cell | tile)`` this is the exact posterior of the zone
count, hence calibrated by construction (``tests/test_intervals.py`` measures it).

Why not the parametric bootstrap (redraw counts, re-estimate, take quantiles)? It
measures how much the *estimator* moves when the counts are drawn again, around the
expected count of a zone, not how far the zone's actual devices may be from where the
method put them; an earlier attempt built that way covered 34-45% at a nominal 90% on
the model-consistent world.
Given the counts the location spread is the larger part, and the posterior gives it in
closed form.

**EM's own density.** EM's lambda is fitted to the same counts, so it is uncertain too.
With ``n_bootstrap > 0`` (:class:`~sim.estimate.em.EMEstimator`) the counts are redrawn
from EM's fitted cell means, EM is refitted from the same start with the same stopping
rule, and the location-posterior mean of the *observed* counts is recomputed under each
refitted density (one EM step of the observed counts from it). The mean square of its
change is added to the location variance (:func:`bootstrap_density_variance`). This is
the "uncertainty of lambda" term of a posterior predictive; unlike the bootstrap above
it does not re-count the sampling of the devices' cells. It calibrates EM where the
counts identify the density. Where they do not (far fewer cells than tiles, as in any
real network on a 100 m grid), EM's error is mostly the part of the density the counts
cannot see, and no interval computed from the counts alone bounds it: EM's intervals are
then too short, which validation shows as coverage (measured on six three-sector sites
over 196 tiles of 250 m, devices drawn from a two-spot density, 500 m blocks: 55% with
2,000 devices and 17% with 20,000 at a nominal 90%; 58% and 18% with the bootstrap).

**Sampling.** People carry a device of this operator independently of where they stand,
each with probability ``r = 1 / f`` (binomial thinning; the simulator's second devices
add about 12% to its variance at its default shares, which this ignores). Given M devices
in a zone, under a flat prior on the people N, ``N - M`` is negative binomial:
mean ``(M + 1)(f - 1)``, variance ``(M + 1) f (f - 1)``. The people nobody's device
shows stand where the seen ones stand (a crowd read along its length: the people from
one carrier to the next, ``1 + G`` with G geometric of mean ``f - 1``, stand with that
carrier), so a device's uncertain place carries its f people with it. The people then
have mean ``f D + (f - 1)`` and variance ``f^2 var(D) + (D + 1) f (f - 1)`` (zero when
f = 1: the devices are the people). An empty zone with r = 0.36 gets an upper bound of
about 8 people at 95%, as the exact binomial bound ``ln(0.025) / ln(1 - r)`` says. (Had
the unseen been spread by the prior whatever the seen do, the first term would be
``var(D)``: the interval assumes the clustered crowd, which is what an event is.)

**Beliefs.** The operator knows its market share and phones per person only roughly:
``share_error`` and ``phones_error`` are read as their relative standard uncertainties,
so f has a relative standard uncertainty ``u = sqrt(share_error^2 + phones_error^2)``,
independent of the rest: the variance becomes ``var (1 + u^2) + u^2 mean^2``.

**Noise.** Laplace noise of scale ``1 / epsilon`` on every cell count adds
``2 / epsilon^2 * sum_c q_cz^2`` to the variance of D.

**The interval.** The people's distribution is taken as a Gamma with that mean and
variance (a moment match: it keeps a small count's right skew, which the normal does
not), and ``[lower, upper]`` are its ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
quantiles, each moved out by half a person (the count is whole: a continuity
correction, without which a zone-bin holding a trace of the method's mass, and nobody,
would be counted as missed) and widened if needed to contain the estimate. A zero
variance gives ``[estimate, estimate]``, so zero devices with every person carrying
one give ``[0, 0]``.

What the interval does not hold: a coverage model that differs from the world
(shadowing, buildings), people whose density differs from the method's lambda (a crowd
packed along a course is not the prior's street-length density), devices silent for
longer than the presence window, and beliefs wrong by more than their stated
uncertainty. Validation measures coverage per method and zone system; on the full team
time trial these mismatches, not sampling, are what the intervals miss.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import gammaincinv, ndtri

__all__ = [
    "ZonePairs",
    "belief_uncertainty",
    "bootstrap_density_variance",
    "density_location_moments",
    "fixed_location_moments",
    "gamma_interval",
    "people_interval",
    "zone_pairs",
]

#: Bytes of one block of (cell, zone) pairs x bins in :func:`density_location_moments`.
BLOCK_BYTES = 1 << 26
#: Cell means (devices) below which a cell is taken to hold nobody (EM leaves densities
#: of 1e-300 and less, whose inverse overflows).
_NEGLIGIBLE = 1e-200
#: Gamma shapes from which the Wilson–Hilferty quantile is used (error < 0.2% there).
_WH_FROM = 30.0
#: Smallest Gamma shape tabulated; a smaller one is taken at this shape (its quantiles
#: are then below 1e-30 of the scale at the lower end).
_SHAPE_MIN = 1e-4


def fixed_location_moments(
    counts: np.ndarray, q: csr_matrix, *, noise_var: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of devices per zone-bin when ``q_cz`` is the same in every bin.

    Parameters
    ----------
    counts
        Devices per cell (rows) and bin (columns).
    q
        ``P(zone | cell)``, zones x cells (rows may sum to less than 1: the part of a
        cell outside every zone).
    noise_var
        Variance of the noise added to each cell count (``2 / epsilon^2`` for Laplace).

    Returns
    -------
    mean, var
        Zones x bins: ``sum_c n_c q_cz`` and
        ``sum_c n_c q_cz (1 - q_cz) + noise_var sum_c q_cz^2``.
    """
    c = np.asarray(counts, dtype=np.float64)
    q = csr_matrix(q, dtype=np.float64)
    mean = np.asarray(q @ c)
    q2 = q.multiply(q).tocsr()
    var = mean - np.asarray(q2 @ c)
    if noise_var > 0:
        var += noise_var * np.asarray(q2.sum(axis=1))
    return mean, np.maximum(var, 0.0)


class ZonePairs:
    """The (cell, zone) pairs a cell's devices can reach through the tiles.

    ``spread`` (pairs x tiles) holds ``a_ct w_zt``, so ``spread @ lambda`` gives, per pair,
    ``sum_t a_ct w_zt lambda_t``: divided by the cell's ``(A lambda)_c`` it is ``q_cz``.
    ``members`` (zones x pairs) sums pairs into zones; ``cell`` is each pair's cell.
    """

    def __init__(self, spread: csr_matrix, members: csr_matrix, cell: np.ndarray) -> None:
        self.spread = spread
        self.members = members
        self.cell = cell


def zone_pairs(coverage: csr_matrix, zones: csr_matrix) -> ZonePairs:
    """Index the (cell, zone) pairs of a coverage model and a zone matrix.

    Parameters
    ----------
    coverage
        ``a_ct = P(cell | tile)``, cells x tiles.
    zones
        ``w_zt``, share of each tile in each zone, zones x tiles.
    """
    a = csr_matrix(coverage, dtype=np.float64).tocoo()
    wt = csr_matrix(zones, dtype=np.float64).T.tocsr()  # tiles x zones
    n_zones, n_tiles = zones.shape
    per = np.diff(wt.indptr)[a.col]  # zones of each entry's tile
    total = int(per.sum())
    entry = np.repeat(np.arange(a.nnz), per)
    offset = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
    where = wt.indptr[a.col[entry]] + offset
    zone = wt.indices[where]
    value = a.data[entry] * wt.data[where]
    key = a.row[entry].astype(np.int64) * n_zones + zone
    pairs, pair_of = np.unique(key, return_inverse=True)
    spread = csr_matrix((value, (pair_of, a.col[entry])), shape=(len(pairs), n_tiles))
    members = csr_matrix(
        (np.ones(len(pairs)), (pairs % n_zones, np.arange(len(pairs)))),
        shape=(n_zones, len(pairs)),
    )
    return ZonePairs(spread=spread, members=members, cell=(pairs // n_zones).astype(np.int64))


def density_location_moments(
    counts: np.ndarray,
    coverage: csr_matrix,
    density: np.ndarray,
    pairs: ZonePairs,
    *,
    noise_var: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of devices per zone-bin when lambda changes with the bin (EM).

    Parameters
    ----------
    counts
        Devices per cell and bin.
    coverage
        ``P(cell | tile)``, cells x tiles.
    density
        lambda per tile (rows) and bin (columns), >= 0.
    pairs
        :func:`zone_pairs` of `coverage` and the zone matrix.
    noise_var
        As in :func:`fixed_location_moments`.

    Returns
    -------
    mean, var
        Zones x bins, as in :func:`fixed_location_moments` with ``q_cz`` of each bin.

    Notes
    -----
    Blocks of bins keep the pairs x bins arrays under :data:`BLOCK_BYTES`.
    """
    c = np.asarray(counts, dtype=np.float64)
    u = np.asarray(density, dtype=np.float64).reshape(coverage.shape[1], -1)
    a = csr_matrix(coverage, dtype=np.float64)
    n_zones, n_bins = pairs.members.shape[0], c.shape[1]
    mean = np.zeros((n_zones, n_bins))
    var = np.zeros((n_zones, n_bins))
    step = max(1, BLOCK_BYTES // (8 * max(pairs.spread.shape[0], 1)))
    for lo in range(0, n_bins, step):
        b = slice(lo, min(lo + step, n_bins))
        lam = np.asarray(a @ u[:, b])[pairs.cell]
        g = np.asarray(pairs.spread @ u[:, b])  # sum_t a_ct w_zt lambda_t per pair, <= lam
        np.divide(g, lam, out=g, where=lam > _NEGLIGIBLE)  # q_cz
        g[lam <= _NEGLIGIBLE] = 0.0
        first = c[pairs.cell, b] * g
        mean[:, b] = pairs.members @ first
        g *= g  # q^2
        weight = c[pairs.cell, b] - noise_var
        var[:, b] = mean[:, b] - pairs.members @ (weight * g)
    return mean, np.maximum(var, 0.0)


def bootstrap_density_variance(
    counts: np.ndarray,
    coverage: csr_matrix,
    density: np.ndarray,
    refit: Callable[[np.ndarray, np.ndarray], np.ndarray],
    zones: csr_matrix,
    *,
    n_bootstrap: int,
    rng: np.random.Generator,
    keys: np.ndarray | None = None,
    block_columns: int = 256,
) -> np.ndarray:
    """Variance of the location-posterior mean from the uncertainty of a fitted density.

    Parameters
    ----------
    counts
        Observed devices per cell and bin.
    coverage
        ``P(cell | tile)``, cells x tiles.
    density
        The fitted density per tile and bin.
    refit
        ``refit(counts, bins) -> density``: the method's fit (same start and stopping
        rule); `bins` gives, per column of the replicate counts, its bin among `counts`.
    zones
        Share of each tile in each zone, zones x tiles.
    n_bootstrap
        Replicates per bin.
    rng
        Draws the replicate counts; with `keys`, only one seed is drawn from it and each
        bin's replicates come from a generator seeded by that seed and the bin's key, so
        a bin gets the same replicates whichever other bins are estimated with it (the
        real-time minute equals the same bin of the day).
    keys
        One integer per bin (e.g. its start in ns), or None to draw from `rng` directly.
    block_columns
        Bins x replicates refitted at a time (memory: tiles x this many floats).

    Returns
    -------
    numpy.ndarray
        Zones x bins: the mean over replicates of ``(m*_z - m_z)^2``, with ``m_z`` the
        posterior mean of the observed counts' devices in zone z under `density` and
        ``m*_z`` the same under a density refitted to counts drawn as Poisson with the
        fitted cell means. Without mean subtraction, so it holds the refit's bias too.
    """
    c = np.asarray(counts, dtype=np.float64)
    u = np.asarray(density, dtype=np.float64)
    a = csr_matrix(coverage, dtype=np.float64)
    at = a.T.tocsr()
    w = csr_matrix(zones, dtype=np.float64)
    n_bins = c.shape[1]
    out = np.zeros((w.shape[0], n_bins))
    if n_bootstrap < 1 or n_bins == 0:
        return out

    def posterior_mean(cols: np.ndarray, dens: np.ndarray) -> np.ndarray:
        lam = np.asarray(a @ dens)
        ratio = np.divide(c[:, cols], lam, out=np.zeros_like(lam), where=lam > _NEGLIGIBLE)
        return np.asarray(w @ (dens * np.asarray(at @ ratio)))

    root = int(rng.integers(2**63)) if keys is not None else 0
    per = max(1, block_columns // n_bootstrap)
    for lo in range(0, n_bins, per):
        cols = np.arange(lo, min(lo + per, n_bins))
        base = posterior_mean(cols, u[:, cols])
        means = np.repeat(np.asarray(a @ u[:, cols]), n_bootstrap, axis=1)
        if keys is None:
            drawn = rng.poisson(means).astype(np.float64)
        else:
            drawn = np.empty_like(means)
            for i, b in enumerate(cols):
                part = slice(i * n_bootstrap, (i + 1) * n_bootstrap)
                own = np.random.default_rng([root, int(keys[b]) & 0xFFFFFFFFFFFFFFFF])
                drawn[:, part] = own.poisson(means[:, part])
        refitted = refit(drawn, np.repeat(cols, n_bootstrap))
        again = posterior_mean(np.repeat(cols, n_bootstrap), refitted)
        diff = again - np.repeat(base, n_bootstrap, axis=1)
        out[:, cols] = (diff**2).reshape(w.shape[0], len(cols), n_bootstrap).mean(axis=2)
    return out


def belief_uncertainty(share_error: float, phones_error: float) -> float:
    """Relative standard uncertainty of people per device from the beliefs' stated errors."""
    return float(np.hypot(share_error, phones_error))


def people_interval(
    devices: np.ndarray,
    device_var: np.ndarray,
    *,
    people_per_device: float,
    confidence: float,
    belief_sd: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``confidence`` interval for the people of each zone-bin.

    Parameters
    ----------
    devices
        The method's devices per zone-bin (D).
    device_var
        Variance of the zone's device count: location (and noise), 0 for none.
    people_per_device
        f.
    confidence
        Nominal level, in (0, 1).
    belief_sd
        Relative standard uncertainty of f (:func:`belief_uncertainty`).

    Returns
    -------
    lower, upper
        Arrays shaped like `devices`, ``lower <= f D <= upper``.
    """
    d = np.maximum(np.asarray(devices, dtype=np.float64), 0.0)
    f = float(people_per_device)
    extra = max(f - 1.0, 0.0)  # thinning: none when every person carries >= 1 device
    mean = f * d + extra
    var = f * f * np.asarray(device_var, dtype=np.float64) + (d + 1.0) * f * extra
    if belief_sd > 0:
        var = var * (1.0 + belief_sd**2) + (belief_sd * mean) ** 2
    lower, upper = gamma_interval(mean, var, confidence=confidence)
    # people are whole: the Gamma stands for a count, so each end moves out by half a
    # person (continuity correction); a zone-bin whose truth may well be 0 gets lower 0
    spread = var > 0
    lower = np.where(spread, np.maximum(lower - 0.5, 0.0), lower)
    upper = np.where(spread, upper + 0.5, upper)
    estimate = f * d
    return np.minimum(lower, estimate), np.maximum(upper, estimate)


def gamma_interval(
    mean: np.ndarray, var: np.ndarray, *, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Central `confidence` interval of the Gamma with this mean and variance.

    A zero variance gives ``[mean, mean]``. Shapes ``mean^2 / var`` below 30 are read
    from a table of exact quantiles (interpolated in log shape: relative error below
    1e-3 where the quantile is above 1e-9 of the scale), larger ones from the
    Wilson–Hilferty approximation.
    """
    m = np.maximum(np.asarray(mean, dtype=np.float64), 0.0)
    v = np.maximum(np.asarray(var, dtype=np.float64), 0.0)
    lower = m.copy()
    upper = m.copy()
    spread = (v > 0) & (m > _NEGLIGIBLE)
    lower[~spread & (m <= _NEGLIGIBLE)] = 0.0
    upper[~spread & (m <= _NEGLIGIBLE)] = 0.0
    if not spread.any():
        return lower, upper
    ms, vs = m[spread], v[spread]
    shape = ms * ms / vs
    scale = vs / ms
    lo = np.empty_like(ms)
    hi = np.empty_like(ms)
    big = shape >= _WH_FROM
    if big.any():
        z = float(ndtri(0.5 + confidence / 2.0))
        k = shape[big]
        c = 1.0 / (9.0 * k)
        lo[big] = k * np.maximum(1.0 - c - z * np.sqrt(c), 0.0) ** 3
        hi[big] = k * (1.0 - c + z * np.sqrt(c)) ** 3
    small = ~big
    if small.any():
        grid, lo_tab, hi_tab = _gamma_table(float(confidence))
        x = np.log(np.maximum(shape[small], _SHAPE_MIN))
        lo[small] = np.interp(x, grid, lo_tab)
        hi[small] = np.interp(x, grid, hi_tab)
    lower[spread] = lo * scale
    upper[spread] = hi * scale
    return lower, upper


@lru_cache(maxsize=8)
def _gamma_table(confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log shapes and the Gamma(shape, 1) quantiles at the interval's two ends."""
    grid = np.linspace(np.log(_SHAPE_MIN), np.log(_WH_FROM), 4000)
    k = np.exp(grid)
    alpha = 1.0 - confidence
    return grid, gammaincinv(k, alpha / 2.0), gammaincinv(k, 1.0 - alpha / 2.0)
