"""Intervals that mean what they say: coverage on worlds that follow each method's model.

Each world is drawn many times with a seeded Generator; each draw is one bin of one
estimate, so every method runs once on all the replications. A device's tile is drawn
from the density the method assumes, its cell from ``P(cell | tile)`` (or the Voronoi
rule), and people carry a device of the operator with the probability the operator
believes. Coverage is pooled over zones and draws and must lie within 5 points of the
nominal level.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from scipy.sparse import csr_matrix

from sim.estimate import BayesEstimator, EMEstimator, EstimateInputError, VoronoiEstimator
from sim.estimate.intervals import (
    density_location_moments,
    fixed_location_moments,
    gamma_interval,
    people_interval,
    zone_pairs,
)
from sim.network.plan import CELL_COLUMNS, NetworkPlan
from tests.conftest import operator_records
from tests.test_estimate import square_zones

NOMINAL = 0.90
#: One bin per replication; the plan's period holds them all.
DRAWS = 150
START = pd.Timestamp("2019-07-07T10:00:00+00:00")
BINS = pd.date_range(START, periods=DRAWS, freq="1min")
PERIOD = (START.isoformat(), (START + pd.Timedelta(hours=4)).isoformat())
SITES = np.array([[800.0, 900.0], [1700, 800], [2300, 1400], [1200, 1900], [2100, 2200],
                  [1500, 1500]])  # fmt: skip
AZIMUTHS = np.array([0.0, 120.0, 240.0])


def plan_of(*, share: float = 1.0, phones: float = 1.0) -> NetworkPlan:
    """Six three-sector sites in a 3 km square (cell id = 100 + 3 site + sector)."""
    n = len(SITES)
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(3 * n) + 100,
            "site_id": np.repeat(np.arange(n), 3),
            "x": np.repeat(SITES[:, 0], 3),
            "y": np.repeat(SITES[:, 1], 3),
            "height_m": 25.0,
            "azimuth_deg": np.tile(AZIMUTHS, n),
            "power_dbm": 43.0,
            "band_mhz": 1800.0,
            "tracking_area": 1,
            "temporary": False,
        }
    ).astype(CELL_COLUMNS)
    return NetworkPlan("op", cells, share, phones, PERIOD)


def count_in(zones, px, py, draw, *, weight=None):
    """People (`weight` per point, 1 if None) per zone (rows) and draw (columns).

    Zones are axis-aligned boxes.
    """
    b = shapely.bounds(np.asarray(zones.geometry))
    inside = (
        (px[None] >= b[:, [0]]) & (px[None] < b[:, [2]]) & (py[None] >= b[:, [1]])
        & (py[None] < b[:, [3]])
    )  # fmt: skip
    out = np.zeros((len(zones), DRAWS))
    for z in range(len(zones)):
        w = None if weight is None else weight[inside[z]]
        out[z] = np.bincount(draw[inside[z]], weights=w, minlength=DRAWS)
    return out


def coverage(table: pd.DataFrame, truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of zone-bins whose truth lies in [lower, upper], per zone system."""
    out = {}
    for system, t in truth.items():
        part = table[table["zone_system"] == system]
        shape = (len(t), DRAWS)
        lo = part["lower"].to_numpy(np.float64).reshape(shape)
        hi = part["upper"].to_numpy(np.float64).reshape(shape)
        # float32 columns: a bound equal to an integer truth may round below it
        out[system] = float(((lo <= t + 1e-3) & (t - 1e-3 <= hi)).mean())
    return out


def crowd_on_tiles(rng, density, n_devices, people_per_device):
    """Devices drawn on tiles by `density`, and the people each stands for.

    People carry a device independently with probability ``r = 1 / f``; read along the
    crowd, the people from one carrier to the next are ``1 + G`` with G geometric (mean
    ``f - 1``), and they stand with that carrier: the unseen are where the seen are.
    """
    tile = rng.choice(len(density), size=n_devices, p=density / density.sum())
    people = rng.geometric(1.0 / people_per_device, size=n_devices)  # 1 + G
    return tile, people


def points_in_tiles(rng, raster, tile):
    """A uniform point inside each tile."""
    x, y = raster.centres()
    h = raster.tile_m / 2
    return (x[tile] + rng.uniform(-h, h, len(tile)), y[tile] + rng.uniform(-h, h, len(tile)))


def cells_of(rng, coverage_matrix, tile):
    """Each device's cell, drawn from P(cell | tile) (a column of the coverage matrix)."""
    a = coverage_matrix.toarray()
    cdf = np.cumsum(a[:, tile], axis=0)
    u = rng.random(len(tile)) * cdf[-1]
    return (cdf < u[None]).sum(axis=0)


def counts_of(cell, draw, n_cells):
    """Devices per cell (rows) and draw (columns)."""
    out = np.zeros((n_cells, DRAWS))
    np.add.at(out, (cell, draw), 1.0)
    return out


def blobs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A crowd: two dense spots on a thin background."""
    return (
        0.3
        + 4.0 * np.exp(-((x - 1500) ** 2 + (y - 1500) ** 2) / (2 * 300.0**2))
        + 3.0 * np.exp(-((x - 2200) ** 2 + (y - 900) ** 2) / (2 * 200.0**2))
    )


@pytest.mark.parametrize(("share", "phones"), [(1.0, 1.0), (0.4, 0.9)])
def test_bayes_covers_at_its_level_where_devices_follow_its_prior(share, phones) -> None:
    rng = np.random.default_rng(11)
    plan = plan_of(share=share, phones=phones)
    kw = {"tile_m": 250.0, "margin_m": 750.0, "privacy_threshold": 0.0, "confidence": NOMINAL}
    probe = BayesEstimator(**kw).fit(operator_records([1], [1], [100]), plan)
    raster = probe.raster_
    density = blobs(*raster.centres())
    est = BayesEstimator(prior=density, random_state=0, **kw)
    est.fit(operator_records([1], [1], [100]), plan)
    n = 4000
    draw = np.repeat(np.arange(DRAWS), n)
    tile, people = crowd_on_tiles(rng, density, n * DRAWS, est.people_per_device_)
    px, py = points_in_tiles(rng, raster, tile)
    counts = counts_of(cells_of(rng, est.coverage_, tile), draw, plan.n_cells)
    zones = {
        "tile": square_zones(raster.bounds, 250.0, "tile"),
        "block": square_zones(raster.bounds, 750.0, "block"),
    }
    table = est.estimate_from_counts(counts, zones, BINS)
    truth = {name: count_in(z, px, py, draw, weight=people) for name, z in zones.items()}
    got = coverage(table, truth)
    print("bayes", share, got)
    for system, c in got.items():
        assert abs(c - NOMINAL) <= 0.05, (system, c)


def test_voronoi_covers_at_its_level_on_a_uniform_voronoi_world() -> None:
    rng = np.random.default_rng(12)
    plan = plan_of()
    est = VoronoiEstimator(margin_m=750.0, privacy_threshold=0.0, confidence=NOMINAL)
    est.fit(operator_records([1], [1], [100]), plan)
    xmin, ymin, xmax, ymax = bounds = est.raster_.bounds
    n = 4000
    draw = np.repeat(np.arange(DRAWS), n)
    px, py = rng.uniform(xmin, xmax, n * DRAWS), rng.uniform(ymin, ymax, n * DRAWS)
    site = np.hypot(px[:, None] - SITES[:, 0], py[:, None] - SITES[:, 1]).argmin(axis=1)
    bearing = np.degrees(np.arctan2(px - SITES[site, 0], py - SITES[site, 1])) % 360.0
    sector = np.abs((bearing[:, None] - AZIMUTHS + 180.0) % 360.0 - 180.0).argmin(axis=1)
    counts = counts_of(3 * site + sector, draw, plan.n_cells)
    zones = {
        "tile": square_zones(bounds, 250.0, "tile"),
        "block": square_zones(bounds, 750.0, "block"),
    }
    table = est.estimate_from_counts(counts, zones, BINS)
    got = coverage(table, {name: count_in(z, px, py, draw) for name, z in zones.items()})
    print("voronoi", got)
    for system, c in got.items():
        assert abs(c - NOMINAL) <= 0.05, (system, c)


def strip_world(n_tiles: int = 40):
    """A row of 100 m tiles, one cell per tile seeing its neighbours too (identifiable)."""
    x0 = np.arange(n_tiles) * 100.0
    tiles = gpd.GeoDataFrame(
        {"tile": [f"t{i}" for i in range(n_tiles)]},
        geometry=shapely.box(x0, 0.0, x0 + 100.0, 100.0),
        crs="EPSG:31370",
    )
    j = np.arange(n_tiles)
    a = np.exp(-0.5 * ((j[None, :] - j[:, None]) / 1.5) ** 2)
    a[a < 1e-3] = 0.0
    a /= a.sum(axis=0, keepdims=True)
    density = 0.3 + np.exp(-0.5 * ((j - 12) / 3.0) ** 2) + 2 * np.exp(-0.5 * ((j - 30) / 2.0) ** 2)
    return tiles, csr_matrix(a), density


def em_coverage(draws: int, **params) -> float:
    """Coverage of EM's block intervals on the strip world, over `draws` draws."""
    rng = np.random.default_rng(13)
    tiles, a, density = strip_world()
    n_tiles, n = len(tiles), 3000
    draw = np.repeat(np.arange(draws), n)
    tile = rng.choice(n_tiles, size=n * draws, p=density / density.sum())
    cdf = np.cumsum(a.toarray()[:, tile], axis=0)
    cell = (cdf < rng.random(len(tile))[None] * cdf[-1]).sum(axis=0)
    counts = np.zeros((n_tiles, draws))
    np.add.at(counts, (cell, draw), 1.0)
    cells = np.repeat([f"c{i:03d}" for i in range(n_tiles)], draws)
    bins = np.tile(BINS[:draws], n_tiles)
    table = pd.DataFrame({"cell_id": cells, "bin": bins, "devices": counts.ravel()})
    em = EMEstimator(emission=a, tiles=tiles, privacy_threshold=0.0, confidence=NOMINAL,
                     random_state=1, **params)  # fmt: skip
    x0 = np.arange(0, n_tiles * 100, 400.0)
    blocks = gpd.GeoDataFrame(
        {"zone": [f"b{i}" for i in range(n_tiles // 4)]},
        geometry=shapely.box(x0, 0.0, x0 + 400.0, 100.0),
        crs="EPSG:31370",
    )
    blocks.attrs["system"] = "block"
    out = em.fit_counts(table).estimate(blocks)
    truth = np.zeros((n_tiles // 4, draws))
    np.add.at(truth, (tile // 4, draw), 1.0)
    lo = out["lower"].to_numpy(np.float64).reshape(truth.shape)
    hi = out["upper"].to_numpy(np.float64).reshape(truth.shape)
    return float(((lo <= truth + 1e-3) & (truth - 1e-3 <= hi)).mean())


def test_em_covers_at_its_level_where_the_counts_identify_its_density() -> None:
    # 40 cells for 40 tiles, each seeing its neighbours: the counts identify the density,
    # and the bootstrap of the fitted density (every 15th draw, carried to the others)
    # adds what the location posterior under it misses
    got = em_coverage(DRAWS)
    print("em", got)
    assert abs(got - NOMINAL) <= 0.05


def test_em_without_the_density_bootstrap_is_too_short() -> None:
    # the location posterior under EM's own fitted density alone ignores that the density
    # is fitted to the same counts: on the same world it covers far too little
    assert em_coverage(30, n_bootstrap=0) < 0.75


# -- the maths on known answers ------------------------------------------------------------
def test_location_moments_are_those_of_independent_bernoullis() -> None:
    # 2 cells, 3 zones: a device of cell 0 is in zone 0 w.p. 0.5, zone 1 w.p. 0.3 (0.2 in
    # no zone); a device of cell 1 is in zone 1 w.p. 0.6 and zone 2 w.p. 0.4
    q = csr_matrix(np.array([[0.5, 0.0], [0.3, 0.6], [0.0, 0.4]]))
    counts = np.array([[10.0, 0.0], [5.0, 2.0]])
    mean, var = fixed_location_moments(counts, q)
    np.testing.assert_allclose(mean[:, 0], [5.0, 3.0 + 3.0, 2.0])
    np.testing.assert_allclose(var[:, 0], [2.5, 10 * 0.21 + 5 * 0.24, 5 * 0.24])
    np.testing.assert_allclose(var[:, 1], [0.0, 2 * 0.24, 2 * 0.24])
    # noise of variance s on each count adds s * sum_c q_cz^2
    _, noisy = fixed_location_moments(counts, q, noise_var=2.0)
    np.testing.assert_allclose(noisy - var, 2.0 * np.array([[0.25], [0.45], [0.16]]) + 0 * var)


def test_density_moments_equal_the_fixed_ones_when_the_density_is_fixed() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((5, 30)) * (rng.random((5, 30)) < 0.5)
    a[rng.integers(0, 5, 30), np.arange(30)] += 0.1
    a /= a.sum(axis=0, keepdims=True)
    w = rng.random((7, 30)) * (rng.random((7, 30)) < 0.3)  # fractional zone shares
    w /= np.maximum(w.sum(axis=0, keepdims=True), 1.0)
    lam = rng.random(30) + 0.1
    counts = rng.poisson(20.0, (5, 4)).astype(float)
    post = a * lam / (a * lam).sum(axis=1, keepdims=True)  # P(tile | cell)
    want = fixed_location_moments(counts, csr_matrix(w @ post.T), noise_var=0.5)
    pairs = zone_pairs(csr_matrix(a), csr_matrix(w))
    dens = np.repeat(lam[:, None], 4, axis=1)
    got = density_location_moments(counts, csr_matrix(a), dens, pairs, noise_var=0.5)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)


def test_gamma_interval_matches_the_exact_quantiles() -> None:
    from scipy.stats import gamma

    mean = np.array([0.01, 0.5, 3.0, 40.0, 2000.0, 5.0, 0.0])
    var = np.array([0.5, 0.5, 4.0, 30.0, 2500.0, 0.0, 0.0])
    lo, hi = gamma_interval(mean, var, confidence=0.9)
    k, s = mean[:5] ** 2 / var[:5], var[:5] / mean[:5]
    np.testing.assert_allclose(hi[:5], gamma.ppf(0.95, k, scale=s), rtol=2e-3, atol=1e-9)
    np.testing.assert_allclose(lo[:5], gamma.ppf(0.05, k, scale=s), rtol=2e-3, atol=1e-9)
    assert (lo[5], hi[5], lo[6], hi[6]) == (5.0, 5.0, 0.0, 0.0)


def test_people_interval_thinning_beliefs_and_the_estimate_inside() -> None:
    d = np.array([0.0, 1.0, 30.0, 300.0])
    # f = 1: the devices are the people; no location spread, no interval
    lo, hi = people_interval(d, np.zeros(4), people_per_device=1.0, confidence=0.95)
    np.testing.assert_array_equal(lo, d)
    np.testing.assert_array_equal(hi, d)
    # f = 2.5: people given devices are negative binomial; wider than f = 1, estimate inside
    lo, hi = people_interval(d, np.zeros(4), people_per_device=2.5, confidence=0.95)
    assert (lo <= 2.5 * d).all() and (2.5 * d <= hi).all() and hi[0] > 0
    # the zero-device bound agrees with the exact binomial one, ln(0.025) / ln(1 - 0.4)
    assert hi[0] == pytest.approx(np.log(0.025) / np.log(0.6), rel=0.1)
    # stated uncertainty of the beliefs widens large zones in proportion
    lo_b, hi_b = people_interval(
        d, np.zeros(4), people_per_device=2.5, confidence=0.95, belief_sd=0.1
    )
    assert (hi_b >= hi).all() and (lo_b <= lo).all()
    assert (hi_b[3] - lo_b[3]) / (2.5 * 300) > 2 * 1.96 * 0.1


# -- through the estimators ----------------------------------------------------------------
def tiny_world():
    rng = np.random.default_rng(5)
    plan = plan_of(share=0.4, phones=0.9)
    recs = operator_records(
        rng.uniform(0, 30, 3000), list(range(3000)), list(100 + rng.integers(0, 18, 3000))
    )
    zones = square_zones((0.0, 0.0, 3000.0, 3000.0), 500.0, "squares")
    return plan, recs, zones


def test_laplace_noise_widens_the_intervals() -> None:
    plan, recs, zones = tiny_world()
    est = BayesEstimator(latency_min=1.0, privacy_threshold=0.0).fit(recs, plan)
    bins = pd.DatetimeIndex([START + pd.Timedelta(minutes=30)])
    counts = est.cell_counts(bins)
    plain = est.estimate_from_counts(counts, zones, bins)
    noisy = est.estimate_from_counts(counts, zones, bins, noise_epsilon=0.1)
    np.testing.assert_array_equal(plain["estimate"], noisy["estimate"])
    assert ((noisy["upper"] - noisy["lower"]) > (plain["upper"] - plain["lower"])).all()
    with pytest.raises(EstimateInputError, match="noise_epsilon = 0"):
        est.estimate_from_counts(counts, zones, bins, noise_epsilon=0)


def test_em_bootstrap_is_seeded_and_the_realtime_minute_skips_it() -> None:
    plan, recs, zones = tiny_world()
    bins = pd.date_range(START + pd.Timedelta(minutes=20), periods=3, freq="1min")
    kw = {"latency_min": 1.0, "privacy_threshold": 0.0, "tile_m": 250.0}
    a = EMEstimator(random_state=4, **kw).fit(recs, plan).estimate(zones, bins)
    b = EMEstimator(random_state=4, **kw).fit(recs, plan).estimate(zones, bins)
    pd.testing.assert_frame_equal(a, b)
    plain = EMEstimator(random_state=4, n_bootstrap=0, **kw).fit(recs, plan)
    c = plain.estimate(zones, bins)
    np.testing.assert_array_equal(a["estimate"], c["estimate"])
    assert (a["upper"] >= c["upper"] - 1e-3).all() and (a["upper"] > c["upper"] + 1e-3).any()
    est = EMEstimator(random_state=4, **kw).fit(recs, plan)
    minute = est.estimate_minute(zones, bins[1])
    same = c[c["bin"] == bins[1]].reset_index(drop=True)
    np.testing.assert_allclose(minute["estimate"], same["estimate"], rtol=1e-6)
    np.testing.assert_allclose(minute["upper"], same["upper"], rtol=1e-5)
    facts = est.interval_facts()
    assert facts["confidence"] == 0.95 and "without" in facts["realtime"]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_bootstrap": -1}, "n_bootstrap = -1; give an integer >= 0"),
        ({"n_bootstrap": 2.5}, "n_bootstrap = 2.5"),
        ({"bootstrap_every": 0}, "bootstrap_every = 0; give an integer >= 1"),
    ],
)
def test_bad_bootstrap_parameters_are_refused(params, match) -> None:
    plan, recs, _ = tiny_world()
    with pytest.raises(EstimateInputError, match=match):
        EMEstimator(**params).fit(recs, plan)


def test_vanishing_densities_give_finite_bounds_without_overflow() -> None:
    # EM leaves densities of 1e-310 on tiles it emptied; 1 / lambda would overflow
    a = csr_matrix(np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 1.0]]))
    zones = csr_matrix(np.eye(3))
    dens = np.array([[1e-310], [1e-320], [4.0]])
    counts = np.array([[3.0], [4.0]])
    mean, var = density_location_moments(counts, a, dens, zone_pairs(a, zones))
    assert np.isfinite(mean).all() and np.isfinite(var).all()
    lo, hi = people_interval(np.array([1e-310, 0.0, 4.0]), np.array([1e-300, 0.0, 0.0]),
                             people_per_device=1.0, confidence=0.95)  # fmt: skip
    assert np.isfinite(lo).all() and np.isfinite(hi).all() and lo[0] == 0.0


def test_the_release_states_each_methods_interval_and_widens_the_noisy_one(monkeypatch) -> None:
    import sim.estimate as estimate_pkg
    from sim.estimate import release_estimates
    from sim.scenario import EstimatorsConfig

    plan, recs, _ = tiny_world()
    bins = pd.date_range(START + pd.Timedelta(minutes=20), periods=2, freq="1min")
    grid = {"grid": square_zones((0.0, 0.0, 3000.0, 3000.0), 500.0, "grid")}
    drawn = []
    real = estimate_pkg.laplace_counts

    def keep(counts, **kw):
        drawn.append(real(counts, **kw))
        return drawn[-1]

    monkeypatch.setattr(estimate_pkg, "laplace_counts", keep)
    cfg = EstimatorsConfig(methods=["presence", "bayes"], privacy_threshold=0,
                           laplace_epsilon=0.2)  # fmt: skip
    release = release_estimates(recs, plan, grid, bins, cfg, random_state=3)
    assert set(release.intervals) == {"presence", "bayes"}
    assert release.intervals["bayes"]["confidence"] == 0.95
    assert "posterior" in release.intervals["bayes"]["location"]
    assert release.intervals["presence"]["location"].startswith("none")
    # the published figures come from the noisy counts, and their intervals carry the noise
    bayes = BayesEstimator(latency_min=1.0, privacy_threshold=0).fit(recs, plan)
    with_noise = bayes.estimate_from_counts(drawn[0], grid, bins, noise_epsilon=0.2)
    without = bayes.estimate_from_counts(drawn[0], grid, bins)
    published = release.published.reset_index(drop=True)
    np.testing.assert_allclose(published["upper"], with_noise["upper"], rtol=1e-6)
    assert (with_noise["upper"] - with_noise["lower"] > without["upper"] - without["lower"]).all()
