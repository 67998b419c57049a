"""Estimators on outside data: cell counts, a user emission model and tile grid, priors."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import ot
import pandas as pd
import pytest
import shapely
from scipy.sparse import csr_matrix

from sim.estimate import (
    BayesEstimator,
    EMEstimator,
    EstimateInputError,
    NotFittedError,
    PresenceEstimator,
    VoronoiEstimator,
)
from sim.network.plan import NetworkPlan, generate_two_layer_cells
from tests.conftest import T0
from tests.test_estimate import make_plan, square_zones, voronoi_world

BIN0 = pd.Timestamp("2019-07-07 14:00", tz="UTC")


def strip_tiles() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"tile": ["t1", "t2", "t3"]},
        geometry=[shapely.box(x, 0, x + 500, 500) for x in (0, 500, 1000)],
        crs="EPSG:31370",
    )


#: P(cell | tile): four cells over three tiles, full column rank (identifiable).
P = np.array([[0.7, 0.2, 0.0], [0.3, 0.5, 0.1], [0.0, 0.3, 0.3], [0.0, 0.0, 0.6]])
CELLS = ["A", "B", "C", "D"]


def emission_table() -> pd.DataFrame:
    i, j = np.nonzero(P)
    return pd.DataFrame(
        {"cell": np.array(CELLS)[i], "tile": [f"t{k + 1}" for k in j], "probability": P[i, j]}
    )


def counts_table(values: np.ndarray, bins: list[pd.Timestamp]) -> pd.DataFrame:
    """values: cells x bins."""
    return pd.DataFrame(
        {
            "cell_id": np.repeat(CELLS, len(bins)),
            "bin": bins * len(CELLS),
            "devices": values.ravel(),
        }
    )


def one_zone_per_tile() -> gpd.GeoDataFrame:
    zones = strip_tiles().rename(columns={"tile": "zone"})
    zones.attrs["system"] = "tiles"
    return zones


def test_em_on_counts_with_a_user_emission_recovers_exact_densities() -> None:
    u = np.array([[300.0, 120.0], [50.0, 400.0], [200.0, 80.0]])  # tiles x bins
    bins = [BIN0, BIN0 + pd.Timedelta(minutes=15)]
    counts = counts_table(P @ u, bins)  # data exactly as the model says, no noise
    em = EMEstimator(emission=emission_table(), tiles=strip_tiles(), tol=1e-9, max_iter=200_000,
                     privacy_threshold=0)  # fmt: skip
    table = em.fit_counts(counts).estimate(one_zone_per_tile())
    got = table.pivot(index="zone", columns="bin", values="estimate").loc[["t1", "t2", "t3"]]
    np.testing.assert_allclose(got.to_numpy(), u, rtol=1e-4)
    # the same model as a sparse matrix (rows in the counts' cell order) gives the same
    em2 = EMEstimator(emission=csr_matrix(P), tiles=strip_tiles(), tol=1e-9, max_iter=200_000,
                      privacy_threshold=0)  # fmt: skip
    again = em2.fit_counts(counts).estimate(one_zone_per_tile())
    np.testing.assert_allclose(again["estimate"], table["estimate"], rtol=1e-6)
    # one bin of the counts only
    one = em.estimate(one_zone_per_tile(), pd.DatetimeIndex([bins[1]]))
    assert set(one["bin"]) == {bins[1]}
    with pytest.raises(EstimateInputError, match="is not a bin of the counts"):
        em.estimate(one_zone_per_tile(), pd.DatetimeIndex([BIN0 + pd.Timedelta(minutes=1)]))


def test_bayes_uses_the_user_prior() -> None:
    counts = counts_table(np.array([[100.0], [0.0], [0.0], [0.0]]), [BIN0])
    prior = np.array([1.0, 3.0, 1.0])
    bayes = BayesEstimator(emission=emission_table(), tiles=strip_tiles(), prior=prior,
                           privacy_threshold=0).fit_counts(counts)  # fmt: skip
    table = bayes.estimate(one_zone_per_tile())
    post = P[0] * prior / (P[0] * prior).sum()  # cell A's devices over the tiles
    np.testing.assert_allclose(table["estimate"], 100 * post, rtol=1e-5)
    with pytest.raises(EstimateInputError, match="2 weights for 3 tiles"):
        BayesEstimator(emission=emission_table(), tiles=strip_tiles(), prior=[1, 2]).fit_counts(
            counts
        )


def test_em_starts_from_a_prior() -> None:
    counts = counts_table(P @ np.array([[100.0], [100.0], [100.0]]), [BIN0])
    kw = {"emission": emission_table(), "tiles": strip_tiles(), "privacy_threshold": 0}
    flat = EMEstimator(max_iter=1, **kw).fit_counts(counts).estimate(one_zone_per_tile())
    leaning = EMEstimator(max_iter=1, prior=[10.0, 1.0, 1.0], **kw).fit_counts(counts)
    tilted = leaning.estimate(one_zone_per_tile())
    assert tilted["estimate"].iloc[0] > flat["estimate"].iloc[0]  # one step keeps the lean
    assert tilted["estimate"].sum() == pytest.approx(flat["estimate"].sum(), rel=1e-5)


def test_counts_in_equal_records_in_with_a_plan() -> None:
    plan, recs, *_ = voronoi_world(n_people=5_000)
    zones = square_zones((1000.0, 1000.0, 2000.0, 2000.0), 500.0)
    bins = pd.DatetimeIndex([T0 + pd.Timedelta(minutes=30)])
    for cls in (PresenceEstimator, VoronoiEstimator, BayesEstimator, EMEstimator):
        # random_state: EM's interval bootstrap draws counts; same seed, same table
        from_records = cls(latency_min=1.0, random_state=3).fit(recs, plan)
        counts = from_records.cell_counts(bins)
        table = pd.DataFrame(
            {
                "cell_id": np.repeat(plan.cells["cell_id"].to_numpy(), len(bins)),
                "bin": np.tile(bins, plan.n_cells),
                "devices": counts.ravel(),
            }
        )
        want = from_records.estimate(zones, bins)
        got = cls(latency_min=1.0, random_state=3).fit_counts(table, plan).estimate(zones)
        pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize(
    ("emission", "match"),
    [
        (pd.DataFrame({"cell": ["A"], "tile": ["t9"], "probability": [0.5]}), "row 0: tile 't9'"),
        (pd.DataFrame({"cell": ["A"], "tile": ["t1"], "probability": [1.5]}), "row 0: prob"),
        (
            pd.DataFrame({"cell": ["A", "B"], "tile": ["t1", "t1"], "probability": [0.7, 0.6]}),
            "tile 't1': P\\(cell \\| tile\\) sums to 1.3000",
        ),
        (pd.DataFrame({"cell": ["A"], "tile": ["t1"]}), "missing probability"),
        (np.ones((2, 3)) * 0.1, "matrix shape \\(2, 3\\); need \\(cells = 4"),
        ("coverage.csv", "give a sparse matrix"),
    ],
)
def test_bad_emission_is_refused_naming_what(emission, match: str) -> None:
    counts = counts_table(np.ones((4, 1)), [BIN0])
    if isinstance(emission, pd.DataFrame) and "cell" in emission and len(emission) < 4:
        counts = counts[counts["cell_id"].isin(emission["cell"])]
    with pytest.raises(EstimateInputError, match=match):
        EMEstimator(emission=emission, tiles=strip_tiles()).fit_counts(counts)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c.assign(devices=[-1.0, 1, 1, 1]), "row 0: devices -1.0"),
        (lambda c: c.assign(cell_id=["Z", "B", "C", "D"]), "row 0: cell 'Z'"),
        (lambda c: pd.concat([c, c.iloc[[1]]], ignore_index=True), "row 4: cell 'B' and bin"),
        (lambda c: c.assign(bin=pd.DatetimeIndex(c["bin"]).tz_localize(None)), "time zone"),
        (lambda c: c.drop(columns="devices"), "missing devices"),
    ],
)
def test_bad_counts_are_refused_naming_the_row(change, match: str) -> None:
    counts = change(counts_table(np.ones((4, 1)), [BIN0]))
    with pytest.raises(EstimateInputError, match=match):
        EMEstimator(emission=emission_table(), tiles=strip_tiles()).fit_counts(counts)


def test_missing_spatial_inputs_are_errors() -> None:
    counts = counts_table(np.ones((4, 1)), [BIN0])
    with pytest.raises(EstimateInputError, match="without a network plan, give the tile grid"):
        EMEstimator().fit_counts(counts)
    with pytest.raises(EstimateInputError, match="user tiles need a user emission"):
        plan = make_plan()
        BayesEstimator(tiles=strip_tiles()).fit_counts(counts_for(plan, np.ones(18)), plan)
    with pytest.raises(EstimateInputError, match="needs a 'tile' column"):
        EMEstimator(emission=emission_table(), tiles=strip_tiles().rename(columns={"tile": "id"}))\
            .fit_counts(counts)  # fmt: skip
    with pytest.raises(NotFittedError, match="real-time update reads records"):
        EMEstimator(emission=emission_table(), tiles=strip_tiles()).fit_counts(
            counts
        ).estimate_minute(one_zone_per_tile(), BIN0)


def test_zones_outside_the_grid_are_an_error_not_a_zero() -> None:
    counts = counts_table(np.ones((4, 1)), [BIN0])
    em = EMEstimator(emission=emission_table(), tiles=strip_tiles()).fit_counts(counts)
    away = gpd.GeoDataFrame(
        {"zone": ["in", "half", "far"]},
        geometry=[
            shapely.box(0, 0, 100, 100),
            shapely.box(1400, 0, 1600, 100),
            shapely.box(5000, 0, 5100, 100),
        ],
        crs="EPSG:31370",
    )
    away.attrs["system"] = "probe"
    with pytest.raises(EstimateInputError, match="zone 'half' of system 'probe' lies 50% outside"):
        em.estimate(away)
    # the plan's raster too: every spatial method
    plan, recs, *_ = voronoi_world(n_people=2_000)
    far = square_zones((9000.0, 9000.0, 9500.0, 9500.0), 500.0)
    for cls in (VoronoiEstimator, BayesEstimator, EMEstimator):
        est = cls(latency_min=1.0).fit(recs, plan)
        with pytest.raises(EstimateInputError, match="outside the estimators' tile grid"):
            est.estimate(far, pd.DatetimeIndex([T0 + pd.Timedelta(minutes=30)]))


# -- the paper-like comparison -----------------------------------------------------------------
def two_layer_world(seed: int, *, side_m: float = 5000.0, tile_m: float = 200.0):
    """Ricciato & Coluccia (2020)-like: macro sites every 1 km plus 60 small cells, a
    density of hotspots over a thin background, devices drawn exactly from the model:
    Poisson per tile, then each device's cell from P(cell | tile)."""
    rng = np.random.default_rng(seed)
    cells = generate_two_layer_cells((0.0, 0.0, side_m, side_m), rng=rng, n_small=60)
    plan = NetworkPlan("op", cells, 1.0, 1.0, ("2019-07-07T10:00Z", "2019-07-07T11:00Z"))
    kw = {"margin_m": 0.0, "tile_m": tile_m, "privacy_threshold": 0.0}
    probe = counts_for(plan, np.zeros(plan.n_cells))
    model = EMEstimator(**kw).fit_counts(probe, plan)
    raster, a = model.raster_, model.coverage_.toarray()
    tx, ty = raster.centres()
    density = np.full(raster.n, 0.05)
    for _ in range(8):
        hx, hy = rng.uniform(0.15 * side_m, 0.85 * side_m, 2)
        s = rng.uniform(100.0, 400.0)
        density += rng.uniform(1, 6) * np.exp(-0.5 * ((tx - hx) ** 2 + (ty - hy) ** 2) / s**2)
    devices = rng.poisson(density / density.sum() * 100_000)
    c = np.zeros(plan.n_cells)
    for j in np.flatnonzero(devices):
        c += rng.multinomial(devices[j], a[:, j] / a[:, j].sum())
    return plan, kw, raster, devices, c


def counts_for(plan: NetworkPlan, c: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"cell_id": plan.cells["cell_id"].to_numpy(), "bin": BIN0, "devices": np.asarray(c)}
    )


def kwd_tiles(truth: np.ndarray, estimate: np.ndarray, raster) -> float:
    """Kantorovich-Wasserstein distance between the two distributions, in tile units."""
    tx, ty = raster.centres()
    xy = np.column_stack([tx, ty])
    cost = ot.dist(xy, xy, metric="euclidean") / raster.tile_m
    return float(ot.emd2(truth / truth.sum(), estimate / estimate.sum(), cost, numItermax=10**7))


def test_known_answer_ordering_em_bayes_voronoi_flat() -> None:
    """Where the data follow the model exactly, the published ordering holds: EM closer
    than Bayes, Bayes closer than Voronoi, a flat estimate far worse (Ricciato & Coluccia
    2020 report 2.36 / 6.19 / 10.0 / 72.6 tile units on their larger map)."""
    plan, kw, raster, devices, c = two_layer_world(0)
    counts = counts_for(plan, c)
    dist = {}
    for name, est in (
        ("em", EMEstimator(max_iter=2000, **kw)),
        ("bayes", BayesEstimator(**kw)),
        ("voronoi", VoronoiEstimator(**kw)),
    ):
        tiles = est.fit_counts(counts, plan).tile_devices(c[:, None]).ravel()
        dist[name] = kwd_tiles(devices.astype(float), tiles, raster)
    dist["flat"] = kwd_tiles(devices.astype(float), np.full(raster.n, 1.0), raster)
    assert dist["em"] < dist["bayes"] < dist["voronoi"] < dist["flat"], dist
    assert dist["flat"] > 5 * dist["voronoi"], dist
    assert dist["voronoi"] > 1.3 * dist["em"], dist
