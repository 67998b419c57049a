"""Estimators on tiny known worlds: interface, spatial methods, scaling, privacy, bad input."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import csr_matrix
from scipy.stats import chi2

from sim.estimate import (
    ESTIMATE_COLUMNS,
    BayesEstimator,
    EMEstimator,
    EstimateInputError,
    NotFittedError,
    PresenceEstimator,
    VoronoiEstimator,
    run_estimators,
)
from sim.estimate.em import em_deconvolve, poisson_loglik
from sim.estimate.scaling import people_per_device, poisson_interval
from sim.estimate.tiles import raster_for_plan
from sim.network.plan import CELL_COLUMNS, NetworkPlan
from sim.scenario import EstimatorsConfig
from tests.conftest import T0, operator_records

PERIOD = ("2019-07-07T10:00:00+00:00", "2019-07-07T12:00:00+00:00")
SITES_X = np.array([800.0, 1700.0, 2300.0, 1200.0, 2100.0, 1500.0])
SITES_Y = np.array([900.0, 800.0, 1400.0, 1900.0, 2200.0, 1500.0])
AZIMUTHS = np.array([0.0, 120.0, 240.0])


def make_plan(*, share: float = 1.0, phones: float = 1.0) -> NetworkPlan:
    """Six three-sector sites in a 3 km square; cell id = 100 + 3 site + sector."""
    n = len(SITES_X)
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(3 * n) + 100,
            "site_id": np.repeat(np.arange(n), 3),
            "x": np.repeat(SITES_X, 3),
            "y": np.repeat(SITES_Y, 3),
            "height_m": 25.0,
            "azimuth_deg": np.tile(AZIMUTHS, n),
            "power_dbm": 43.0,
            "band_mhz": 1800.0,
            "tracking_area": 1,
            "temporary": False,
        }
    ).astype(CELL_COLUMNS)
    return NetworkPlan("op", cells, share, phones, PERIOD)


records = operator_records


def voronoi_world(n_people: int = 40_000, seed: int = 1):
    """People uniform over the raster; each on the cell whose Voronoi sector holds them."""
    plan = make_plan()
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = raster_for_plan(plan, tile_m=100.0, margin_m=1000.0).bounds
    px, py = rng.uniform(xmin, xmax, n_people), rng.uniform(ymin, ymax, n_people)
    site = np.hypot(px[:, None] - SITES_X, py[:, None] - SITES_Y).argmin(axis=1)
    bearing = np.degrees(np.arctan2(px - SITES_X[site], py - SITES_Y[site])) % 360.0
    sector = np.abs((bearing[:, None] - AZIMUTHS + 180.0) % 360.0 - 180.0).argmin(axis=1)
    recs = records(
        rng.uniform(0, 30, n_people), list(range(n_people)), list(100 + 3 * site + sector)
    )
    return plan, recs, px, py, (xmin, ymin, xmax, ymax)


def square_zones(bounds, side: float, system: str = "squares") -> gpd.GeoDataFrame:
    xmin, ymin, xmax, ymax = bounds
    gx, gy = np.meshgrid(np.arange(xmin, xmax, side), np.arange(ymin, ymax, side))
    gx, gy = gx.ravel(), gy.ravel()
    # clipped to the bounds: a zone reaching beyond the estimators' tiles is an error
    frame = gpd.GeoDataFrame(
        {"zone": [f"z{i}" for i in range(gx.size)]},
        geometry=shapely.intersection(
            shapely.box(gx, gy, gx + side, gy + side), shapely.box(xmin, ymin, xmax, ymax)
        ),
        crs="EPSG:31370",
    )
    frame.attrs["system"] = system
    return frame


def truth_in(zones: gpd.GeoDataFrame, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    b = shapely.bounds(np.asarray(zones.geometry))
    return np.array(
        [((px >= x0) & (px < x1) & (py >= y0) & (py < y1)).sum() for x0, y0, x1, y1 in b]
    )


@pytest.fixture(scope="module")
def world():
    return voronoi_world()


BIN = pd.DatetimeIndex([T0 + pd.Timedelta(minutes=30)])
OPEN = {"latency_min": 1.0, "privacy_threshold": 0.0}


# -- interface -----------------------------------------------------------------------------
def test_constructor_stores_parameters_only_and_params_round_trip() -> None:
    em = EMEstimator(tol=5.0, window_min=-1)  # bad values are caught by fit, not __init__
    params = em.get_params()
    assert params["tol"] == 5.0 and params["window_min"] == -1 and "tile_m" in params
    assert em.set_params(tol=1e-4, window_min=60) is em and em.tol == 1e-4
    with pytest.raises(EstimateInputError, match="unknown parameter 'tolerance'"):
        em.set_params(tolerance=1)
    assert "EMEstimator(" in repr(em)
    assert not [k for k in vars(em) if k.endswith("_")]


def test_estimate_before_fit_is_an_error() -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        VoronoiEstimator().estimate({}, BIN)


def test_fit_returns_self_and_checks_parameters(world) -> None:
    plan, recs, *_ = world
    est = BayesEstimator(**OPEN)
    assert est.fit(recs, plan) is est
    with pytest.raises(EstimateInputError, match="window_min"):
        BayesEstimator(window_min=0).fit(recs, plan)
    with pytest.raises(EstimateInputError, match="market_share"):
        BayesEstimator(market_share=1.5).fit(recs, plan)


# -- spatial methods on a Voronoi world ------------------------------------------------------
def test_voronoi_recovers_a_uniform_voronoi_world_within_sampling_noise(world) -> None:
    plan, recs, px, py, bounds = world
    zones = square_zones(bounds, 500.0)
    out = VoronoiEstimator(margin_m=1000.0, **OPEN).fit(recs, plan).estimate(zones, BIN)
    truth = truth_in(zones, px, py)
    est = out["estimate"].to_numpy()
    assert est.sum() == pytest.approx(len(px), rel=1e-5)
    # binomial noise of where people fall in a cell: a few standard deviations per zone
    assert np.all(np.abs(est - truth) <= 4.0 * np.sqrt(truth) + 5.0)
    inside = (out["lower"].to_numpy() <= truth) & (truth <= out["upper"].to_numpy())
    assert inside.mean() > 0.8


@pytest.mark.parametrize("cls", [BayesEstimator, EMEstimator])
def test_bayes_and_em_come_close_on_a_voronoi_world(world, cls) -> None:
    plan, recs, px, py, bounds = world
    zones = square_zones(bounds, (bounds[2] - bounds[0]) / 2)
    out = cls(margin_m=1000.0, **OPEN).fit(recs, plan).estimate(zones, BIN)
    truth = truth_in(zones, px, py)
    est = out["estimate"].to_numpy()
    assert est.sum() == pytest.approx(truth.sum(), rel=1e-4)
    assert np.abs(est - truth).sum() / truth.sum() < 0.10


def test_voronoi_regions_tile_the_raster_and_split_sectors(world) -> None:
    plan, recs, *_ = world
    est = VoronoiEstimator(margin_m=1000.0).fit(recs, plan)
    areas = shapely.area(est.regions_)
    raster = shapely.box(*est.raster_.bounds)
    assert areas.sum() == pytest.approx(raster.area, rel=1e-6)
    assert shapely.union_all(est.regions_).area == pytest.approx(raster.area, rel=1e-6)
    # the sector facing north of a site lies north-ish of it
    north = est.regions_[3 * 5]  # site 5, azimuth 0
    assert north.centroid.y > SITES_Y[5]


# -- EM invariants --------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_cells=st.integers(1, 6),
    n_tiles=st.integers(1, 12),
    n_bins=st.integers(1, 3),
)
def test_em_is_nonnegative_conserves_the_total_and_never_loses_likelihood(
    seed: int, n_cells: int, n_tiles: int, n_bins: int
) -> None:
    rng = np.random.default_rng(seed)
    a = rng.random((n_cells, n_tiles)) * (rng.random((n_cells, n_tiles)) < 0.6)
    a[rng.integers(0, n_cells, n_tiles), np.arange(n_tiles)] += 0.1  # every tile covered
    a[np.arange(n_cells), rng.integers(0, n_tiles, n_cells)] += 0.1  # every cell reachable
    a /= a.sum(axis=0, keepdims=True)
    counts = rng.poisson(20.0, (n_cells, n_bins)).astype(float)
    counts[rng.random(n_cells) < 0.3] = 0.0  # cells that count nobody: their tiles drop out
    res = em_deconvolve(counts, csr_matrix(a), tol=1e-12, max_iter=60, trace=True)
    assert (res.u >= 0).all()
    for total in res.totals:
        np.testing.assert_allclose(total, counts.sum(axis=0), rtol=1e-9, atol=1e-9)
    ll = np.array(res.loglik)
    assert (np.diff(ll, axis=0) >= -1e-7 * np.maximum(1.0, np.abs(ll[1:]))).all()


def textbook_em(
    counts: np.ndarray, a: np.ndarray, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's iteration written out plainly, one bin at a time, on the whole problem."""
    sens = a.sum(axis=0)
    u = np.zeros((a.shape[1], counts.shape[1]))
    n_iter = np.zeros(counts.shape[1], dtype=int)
    for b in range(counts.shape[1]):
        if counts[:, b].sum() == 0:
            continue
        x = np.where(sens > 0, counts[:, b].sum() / sens.sum(), 0.0)
        for _ in range(max_iter):
            lam = a @ x
            ratio = np.divide(counts[:, b], lam, out=np.zeros_like(lam), where=lam > 0)
            new = x * np.divide(a.T @ ratio, sens, out=np.zeros_like(x), where=sens > 0)
            change = np.abs(new - x).max()  # devices
            x = new
            n_iter[b] += 1
            if change < tol:
                break
        u[:, b] = x
    return u, n_iter


@pytest.mark.parametrize("seed", range(12))
def test_em_gives_the_textbook_iteration_on_the_reduced_problem(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # em_deconvolve iterates only counted cells and the tiles they cover, block by block:
    # neither may change the estimate or the iterations used
    import sim.estimate.em as em

    rng = np.random.default_rng(seed)
    n_cells, n_tiles, n_bins = rng.integers(2, 25), rng.integers(2, 90), rng.integers(1, 7)
    a = rng.random((n_cells, n_tiles)) ** 4 * (rng.random((n_cells, n_tiles)) < 0.3)
    a[:, rng.random(n_tiles) < 0.15] = 0.0  # tiles no cell covers
    counts = rng.poisson(rng.uniform(0.5, 30.0), (n_cells, n_bins)).astype(float)
    counts[rng.random(n_cells) < 0.4] = 0.0  # cells that count nobody
    counts[:, rng.random(n_bins) < 0.2] = 0.0  # empty bins
    tol, max_iter = 10 ** rng.uniform(-6, -1), int(rng.integers(1, 400))
    want, want_iter = textbook_em(counts, a, tol, max_iter)
    monkeypatch.setattr(em, "BLOCK_BYTES", int(rng.integers(8, 400)))  # several tile blocks
    got = em_deconvolve(counts, csr_matrix(a), tol=tol, max_iter=max_iter)
    np.testing.assert_array_equal(got.n_iter, want_iter)
    np.testing.assert_allclose(got.u, want, rtol=1e-10, atol=1e-12 * want.max(initial=1.0))


def test_em_recovers_densities_when_its_model_is_true() -> None:
    plan = make_plan()
    est = EMEstimator(margin_m=1000.0).fit(records([1], [1], [100]), plan)
    a = est.coverage_
    rng = np.random.default_rng(3)
    u_true = np.zeros(a.shape[1])
    u_true[: a.shape[1] // 2] = 30.0  # the southern half is full, the northern half empty
    counts = rng.poisson(a @ u_true)[:, None].astype(float)
    res = em_deconvolve(counts, a, tol=1e-5, max_iter=2000)
    assert res.u[: a.shape[1] // 2].sum() / res.u.sum() > 0.95
    assert poisson_loglik(counts, a, res.u)[0] >= poisson_loglik(counts, a, u_true[:, None])[0]


def test_em_stops_by_its_rule_and_reports_iterations(world) -> None:
    plan, recs, *_ = world
    zones = square_zones(raster_for_plan(plan, tile_m=100, margin_m=1000).bounds, 1000.0)
    loose = EMEstimator(tol=1e-2, **OPEN).fit(recs, plan)
    tight = EMEstimator(tol=1e-4, **OPEN).fit(recs, plan)
    loose.estimate(zones, BIN)
    tight.estimate(zones, BIN)
    assert 1 <= loose.n_iter_[0] < tight.n_iter_[0] <= 300


# -- scaling ------------------------------------------------------------------------------
def test_share_one_and_one_phone_each_leave_device_counts_unchanged(world) -> None:
    plan, recs, *_ = world
    out = PresenceEstimator(**OPEN).fit(recs, plan).estimate(None, BIN)
    devices = recs.groupby("cell_id")["device"].nunique()
    got = out.set_index(out["zone"].astype(str))["estimate"]
    for cell, n in devices.items():
        assert got[str(cell)] == n
    assert out["zone_system"].unique().tolist() == ["cell"]


def test_scaling_uses_the_operators_beliefs_and_roamers() -> None:
    plan = make_plan(share=0.4, phones=0.9)
    recs = records([1, 2, 3, 4], [1, 2, 3, 4], [100, 100, 100, 100])
    out = PresenceEstimator(latency_min=5, privacy_threshold=0).fit(recs, plan)
    assert out.people_per_device_ == pytest.approx(1 / 0.36)
    table = out.estimate(None, pd.DatetimeIndex([T0 + pd.Timedelta(minutes=5)]))
    assert table.loc[table["zone"] == "100", "estimate"].item() == pytest.approx(4 / 0.36)
    f = people_per_device(
        market_share=0.4, phones_per_person=1.0, roaming_device_share=0.25, roaming_market_share=0.1
    )
    assert f == pytest.approx(0.75 / 0.4 + 0.25 / 0.1)
    assert people_per_device(market_share=1, phones_per_person=1) == 1.0


def test_poisson_interval_is_garwood_and_honest_at_zero() -> None:
    k = np.array([0.0, 1.0, 5.0, 29.0, 30.0, 100.0, 1000.0])
    lo, hi = poisson_interval(k, confidence=0.95)
    exact_lo = np.where(k > 0, chi2.ppf(0.025, 2 * k) / 2, 0.0)
    exact_hi = chi2.ppf(0.975, 2 * k + 2) / 2
    np.testing.assert_allclose(lo, exact_lo, rtol=2e-3)
    np.testing.assert_allclose(hi, exact_hi, rtol=2e-3)
    assert lo[0] == 0.0 and hi[0] == pytest.approx(-np.log(0.025))


# -- privacy ------------------------------------------------------------------------------
def test_suppressed_rows_are_kept_in_the_table(world) -> None:
    plan, recs, *_ = world
    zones = square_zones(raster_for_plan(plan, tile_m=100, margin_m=1000).bounds, 200.0)
    out = VoronoiEstimator(latency_min=1.0, privacy_threshold=120).fit(recs, plan)
    table = out.estimate(zones, BIN)
    assert len(table) == len(zones)
    np.testing.assert_array_equal(table["suppressed"], table["estimate"] < 120)
    assert table["suppressed"].any() and not table["suppressed"].all()


def test_laplace_noise_is_seeded_and_keeps_counts_nonnegative(world) -> None:
    plan, recs, *_ = world
    zones = square_zones(raster_for_plan(plan, tile_m=100, margin_m=1000).bounds, 500.0)

    def run(seed: int) -> pd.DataFrame:
        est = BayesEstimator(laplace_epsilon=0.5, random_state=seed, **OPEN)
        return est.fit(recs, plan).estimate(zones, BIN)

    a, b, c = run(7), run(7), run(8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["estimate"], c["estimate"])
    assert (a["estimate"] >= 0).all() and (a["lower"] <= a["estimate"]).all()
    assert (a["estimate"] <= a["upper"]).all()
    clean = BayesEstimator(**OPEN).fit(recs, plan).estimate(zones, BIN)
    assert np.abs(a["estimate"] - clean["estimate"]).max() < 60  # scale 2: tails << 60


# -- empty bins and output form -----------------------------------------------------------
def test_an_empty_bin_gives_zero_with_honest_bounds(world) -> None:
    plan, recs, *_ = world
    zones = square_zones(raster_for_plan(plan, tile_m=100, margin_m=1000).bounds, 1000.0)
    late = pd.DatetimeIndex([T0 + pd.Timedelta(minutes=100)])  # nobody seen within 60 min
    # people carry a device with probability r = 0.36: nobody seen leaves room for a few;
    # the exact binomial bound on N with none of N seen is ln(0.025) / ln(1 - r) = 8.3
    exact = np.log(0.025) / np.log(1 - 0.36)
    for cls in (VoronoiEstimator, BayesEstimator, EMEstimator):
        out = cls(**OPEN).fit(recs, plan).estimate(zones, late)
        # share 1, one phone each: every person is seen, so nobody is there
        assert (out[["estimate", "lower", "upper"]] == 0).all().all()
        thinned = cls(market_share=0.4, phones_per_person=0.9, **OPEN).fit(recs, plan)
        out = thinned.estimate(zones, late)
        assert (out["estimate"] == 0).all() and (out["lower"] == 0).all()
        np.testing.assert_allclose(out["upper"], exact, rtol=0.1)
        assert not out[["estimate", "lower", "upper"]].isna().any().any()


def test_run_estimators_writes_every_listed_method_in_one_table(world) -> None:
    plan, recs, _, _, bounds = world
    zones = {
        "grid": square_zones(bounds, 500.0),
        "segment": square_zones((1000, 1000, 2000, 2000), 500.0),
    }
    bins = pd.date_range(T0 + pd.Timedelta(minutes=20), periods=3, freq="1min")
    table = run_estimators(recs, plan, zones, bins, EstimatorsConfig(privacy_threshold=0))
    assert list(table.columns) == list(ESTIMATE_COLUMNS)
    assert table.dtypes.astype(str).tolist() == [str(t) for t in ESTIMATE_COLUMNS.values()]
    assert set(table["method"]) == {"presence", "voronoi", "bayes", "em"}
    spatial = table[table["method"] != "presence"]
    assert set(spatial["zone_system"]) == {"grid", "segment"}
    assert (table["mode"] == "realtime").all()
    per = spatial.groupby(["method", "zone_system", "bin"], observed=True)["estimate"].sum()
    assert per.loc[("voronoi", "grid")].to_numpy() == pytest.approx(per.loc[("em", "grid")])
    only = run_estimators(recs, plan, zones, bins, EstimatorsConfig(methods=["voronoi"]))
    assert set(only["method"]) == {"voronoi"}


def test_zones_from_sim_zones_objects_are_accepted(world) -> None:
    from sim.zones import Zones, ZoneSystem

    plan, recs, _, _, bounds = world
    frame = square_zones(bounds, 1000.0)
    system = ZoneSystem(
        name="grid",
        zone_ids=frame["zone"].tolist(),
        geometry=list(frame.geometry),
        membership=csr_matrix((len(frame), 1)),
    )
    est = VoronoiEstimator(**OPEN).fit(recs, plan)
    a = est.estimate(Zones(systems={"grid": system}), BIN)
    b = est.estimate(frame, BIN)
    np.testing.assert_allclose(a["estimate"], b["estimate"])
    assert set(a["zone_system"]) == {"grid"}


# -- bad input ----------------------------------------------------------------------------
def test_records_with_unknown_cells_are_refused_naming_them() -> None:
    with pytest.raises(EstimateInputError, match=r"cell id\(s\).*999"):
        VoronoiEstimator().fit(records([1, 2], [1, 2], [100, 999]), make_plan())


def test_records_outside_the_period_are_refused() -> None:
    with pytest.raises(EstimateInputError, match="outside the plan's period"):
        VoronoiEstimator().fit(records([1, 500], [1, 2], [100, 101]), make_plan())


def test_an_empty_record_set_is_refused() -> None:
    with pytest.raises(EstimateInputError, match="record set is empty"):
        EMEstimator().fit(records([], [], []), make_plan())


def test_a_plan_without_sites_is_refused() -> None:
    plan = make_plan()
    empty = NetworkPlan("op", plan.cells.iloc[:0], 0.4, 0.9, PERIOD)
    with pytest.raises(EstimateInputError, match="has no sites"):
        BayesEstimator().fit(records([1], [1], [100]), empty)


def test_records_with_columns_an_operator_cannot_see_are_refused() -> None:
    from sim.network.records import RecordsError

    recs = records([1], [1], [100]).assign(x=5.0)
    with pytest.raises(RecordsError, match="not operator-visible: x"):
        PresenceEstimator().fit(recs, make_plan())


@pytest.mark.parametrize(
    ("bins", "match"),
    [
        (pd.DatetimeIndex(["2019-07-07 10:30"]), "time zone"),
        (pd.DatetimeIndex(["2019-07-07 13:30"], tz="UTC"), "outside the plan's period"),
        (pd.DatetimeIndex(["2019-07-07 10:31", "2019-07-07 10:30"], tz="UTC"), "increasing"),
        (pd.DatetimeIndex([], tz="UTC"), "no bin"),
    ],
)
def test_bad_bins_are_refused(bins, match) -> None:
    est = PresenceEstimator().fit(records([1], [1], [100]), make_plan())
    with pytest.raises(EstimateInputError, match=match):
        est.estimate(None, bins)


def test_bad_zones_are_refused() -> None:
    est = VoronoiEstimator().fit(records([1], [1], [100]), make_plan())
    frame = square_zones((0, 0, 2000, 2000), 1000.0)
    with pytest.raises(EstimateInputError, match="'zone' column"):
        est.estimate(frame.rename(columns={"zone": "id"}), BIN)
    with pytest.raises(EstimateInputError, match="CRS"):
        est.estimate(frame.set_crs("EPSG:4326", allow_override=True), BIN)
    unnamed = frame.copy()
    unnamed.attrs = {}
    with pytest.raises(EstimateInputError, match="name the zone system"):
        est.estimate(unnamed, BIN)
    with pytest.raises(EstimateInputError, match="cannot read zones"):
        est.estimate([1, 2, 3], BIN)


def test_a_land_use_prior_moves_bayes_mass_where_the_prior_is(world) -> None:
    plan, recs, _, _, bounds = world
    zones = square_zones(bounds, (bounds[2] - bounds[0]) / 2)
    xs, ys = np.meshgrid(np.arange(-150.0, 3300.0, 100.0), np.arange(-150.0, 1500.0, 100.0))
    south = pd.DataFrame({"x": xs.ravel(), "y": ys.ravel(), "weight": 1.0})  # streets south
    uniform = BayesEstimator(**OPEN).fit(recs, plan).estimate(zones, BIN)
    streets = BayesEstimator(prior=south, **OPEN).fit(recs, plan).estimate(zones, BIN)
    south_zone = zones.geometry.centroid.y.to_numpy() < 1500
    share = streets["estimate"].to_numpy()[south_zone].sum() / streets["estimate"].sum()
    base = uniform["estimate"].to_numpy()[south_zone].sum() / uniform["estimate"].sum()
    assert share > base + 0.1
    assert streets["estimate"].sum() == pytest.approx(uniform["estimate"].sum(), rel=1e-5)
    with pytest.raises(EstimateInputError, match="x, y, weight"):
        BayesEstimator(prior=south.drop(columns="weight")).fit(recs, plan)
    with pytest.raises(EstimateInputError, match="'uniform'"):
        BayesEstimator(prior="streets").fit(recs, plan)


def test_a_zone_table_with_a_system_column_gives_one_system_each(world) -> None:
    plan, recs, _, _, bounds = world
    a = square_zones(bounds, 1000.0).assign(system="grid")
    b = square_zones((1000, 1000, 2000, 2000), 500.0).assign(system="segment")
    both = gpd.GeoDataFrame(pd.concat([a, b], ignore_index=True), crs="EPSG:31370")
    out = VoronoiEstimator(**OPEN).fit(recs, plan).estimate(both, BIN)
    assert out.groupby("zone_system", observed=True).size().to_dict() == {
        "grid": len(a),
        "segment": len(b),
    }


def test_an_empty_zone_system_in_a_set_is_skipped(world) -> None:
    plan, recs, _, _, bounds = world
    grid = square_zones(bounds, 1000.0)
    est = VoronoiEstimator(**OPEN).fit(recs, plan)
    out = est.estimate({"grid": grid, "area": grid.iloc[:0]}, BIN)
    assert set(out["zone_system"]) == {"grid"}
    with pytest.raises(EstimateInputError, match="every zone system is empty"):
        est.estimate({"area": grid.iloc[:0]}, BIN)
    with pytest.raises(EstimateInputError, match="has no zone"):
        est.estimate(grid.iloc[:0], BIN)


def test_estimates_parquet_round_trips(world, tmp_path) -> None:
    from sim.estimate import write_estimates

    plan, recs, _, _, bounds = world
    table = run_estimators(
        recs, plan, {"grid": square_zones(bounds, 1000.0)}, BIN, EstimatorsConfig()
    )
    path = write_estimates(table, tmp_path / "estimates.parquet")
    back = pd.read_parquet(path)
    assert list(back.columns) == list(ESTIMATE_COLUMNS) and len(back) == len(table)
    np.testing.assert_array_equal(back["estimate"], table["estimate"])
    assert str(back["bin"].dtype) == "datetime64[ns, UTC]"
    with pytest.raises(EstimateInputError, match="columns must be"):
        write_estimates(table.drop(columns="mode"), tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_a_single_omni_site_spreads_its_devices_over_the_whole_raster() -> None:
    one = make_plan().cells.iloc[[0]].assign(azimuth_deg=np.nan)
    plan = NetworkPlan("op", one, 1.0, 1.0, PERIOD)
    est = VoronoiEstimator(**OPEN).fit(records([1.0, 2.0], [1, 2], [100, 100]), plan)
    assert shapely.area(est.regions_[0]) == pytest.approx(shapely.box(*est.raster_.bounds).area)
    out = est.estimate(square_zones(est.raster_.bounds, 400.0), BIN)
    assert out["estimate"].sum() == pytest.approx(2.0)
    assert np.ptp(out["estimate"]) == pytest.approx(0.0, abs=1e-6)


def test_period_bins_cover_the_plan_period_minute_by_minute() -> None:
    from sim.estimate import period_bins

    bins = period_bins(make_plan())
    assert len(bins) == 120 and bins[0] == T0 and str(bins.tz) == "UTC"
    assert bins[-1] == T0 + pd.Timedelta(minutes=119)
    with pytest.raises(EstimateInputError, match="shorter than one bin"):
        period_bins(make_plan(), bin_s=3 * 3600)


def test_belief_errors_scale_the_people_per_device() -> None:
    plan = make_plan(share=0.4, phones=1.0)
    recs = records([1.0], [1], [100])
    exact = PresenceEstimator().fit(recs, plan).people_per_device_
    off = PresenceEstimator(share_error=-0.2, phones_error=0.25).fit(recs, plan)
    assert off.people_per_device_ == pytest.approx(exact / (0.8 * 1.25))
    with pytest.raises(EstimateInputError, match="market_share"):
        PresenceEstimator(share_error=2.0).fit(recs, plan)


def test_em_warm_start_reaches_the_likelihood_of_a_cold_start_in_fewer_iterations() -> None:
    from scipy.sparse import csr_matrix

    from sim.estimate.em import em_deconvolve, poisson_loglik

    rng = np.random.default_rng(3)
    a = rng.random((40, 120)) ** 6  # peaked footprints: cells x tiles
    a = csr_matrix(a / a.sum(axis=0, keepdims=True))
    truth = rng.gamma(0.5, 20.0, 120)
    # presence counts of consecutive minutes share most devices: a few arrive each minute
    base = rng.poisson(a @ truth)
    counts = base[:, None] + np.cumsum(rng.poisson(0.05, (40, 10)), axis=1)
    cold = em_deconvolve(counts, a, tol=1e-5, max_iter=20_000)
    first = em_deconvolve(counts[:, :1], a, tol=1e-5, max_iter=20_000)
    warm = em_deconvolve(counts[:, 1:], a, tol=1e-5, max_iter=20_000, init=first.u[:, 0])
    assert warm.n_iter.mean() < 0.8 * cold.n_iter[1:].mean()
    ll_cold = poisson_loglik(counts[:, 1:], a, cold.u[:, 1:])
    ll_warm = poisson_loglik(counts[:, 1:], a, warm.u)
    assert (ll_warm >= ll_cold - 1e-3 * np.abs(ll_cold)).all()
    # the start is rescaled: every bin's weighted total is its count total at once
    np.testing.assert_allclose(np.asarray(a.sum(axis=0)).ravel() @ warm.u, counts[:, 1:].sum(0))
