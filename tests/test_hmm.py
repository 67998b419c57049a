"""The device-level HMM (sim/estimate/hmm.py): known answers on tiny worlds, invariants, errors."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from sim.estimate import (
    ESTIMATORS,
    EstimateInputError,
    HMMEstimator,
    NotFittedError,
    PresenceEstimator,
    release_estimates,
)
from sim.estimate.hmm import _shift, _tile_sums, walk_matrix
from sim.network.plan import CELL_COLUMNS, NetworkPlan
from sim.scenario import EstimatorsConfig
from tests.conftest import T0, operator_records
from tests.test_estimate import make_plan

PERIOD = ("2019-07-07T10:00:00+00:00", "2019-07-07T12:00:00+00:00")
#: P(cell | tile) of the line world: three cells over four 250 m tiles, columns sum to 1.
LINE_P = np.array(
    [
        [0.8, 0.3, 0.0, 0.0],
        [0.2, 0.6, 0.5, 0.1],
        [0.0, 0.1, 0.5, 0.9],
    ]
)
LINE_CELLS = [1, 2, 3]  # cell ids of the rows of LINE_P


def line_plan(n_tiles: int = 4) -> NetworkPlan:
    """Cells whose raster (250 m, no margin) is a line of `n_tiles` tiles from x = 0."""
    n = len(LINE_CELLS) if n_tiles == 4 else n_tiles
    x = np.linspace(10.0, 250.0 * n_tiles - 10.0, n)
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(1, n + 1),
            "site_id": np.arange(1, n + 1),
            "x": x,
            "y": 10.0,
            "height_m": 25.0,
            "azimuth_deg": np.nan,
            "power_dbm": 43.0,
            "band_mhz": 1800.0,
            "tracking_area": 1,
            "temporary": False,
        }
    ).astype(CELL_COLUMNS)
    return NetworkPlan("op", cells, 1.0, 1.0, PERIOD)


def tile_zones(n_tiles: int, system: str = "tiles") -> gpd.GeoDataFrame:
    zones = gpd.GeoDataFrame(
        {"zone": [f"t{i}" for i in range(n_tiles)]},
        geometry=[shapely.box(250.0 * i, 0.0, 250.0 * (i + 1), 250.0) for i in range(n_tiles)],
        crs="EPSG:31370",
    )
    zones.attrs["system"] = system
    return zones


def minute_bins(n: int) -> pd.DatetimeIndex:
    return pd.date_range(T0, periods=n, freq="1min")


LINE = {"tile_m": 250.0, "margin_m": 0.0, "emission": LINE_P, "privacy_threshold": 0.0}


# -- the brute force: a textbook HMM on the whole line ------------------------------------
def textbook(obs: dict[int, list[int]], n_steps: int, q: float, p: np.ndarray):
    """Forward and forward-backward of one device appearing at its first observation.

    `obs` maps a step to the rows of `p` (cells) observed in it. The transition is the lazy
    walk written out by hand; the initial state is uniform times the first emission.
    """
    n = p.shape[1]
    t = np.zeros((n, n))
    for i in range(n):
        for j in (i - 1, i + 1):
            if 0 <= j < n:
                t[i, j] = q / 2
        t[i, i] = 1.0 - t[i].sum()
    first = min(obs)
    alpha = np.zeros((n_steps + 1, n))
    emit = np.ones((n_steps + 1, n))
    for j, cells in obs.items():
        for c in cells:
            emit[j] *= p[c]
    for j in range(first, n_steps + 1):
        prior = np.full(n, 1.0 / n) if j == first else alpha[j - 1] @ t
        a = prior * emit[j]
        alpha[j] = a / a.sum()
    beta = np.ones((n_steps + 1, n))
    for j in range(n_steps - 1, first - 1, -1):
        beta[j] = t @ (emit[j + 1] * beta[j + 1])
        beta[j] /= beta[j].sum()
    gamma = alpha * beta
    gamma[first:] /= gamma[first:].sum(axis=1, keepdims=True)
    return alpha, gamma


def test_forward_and_forward_backward_equal_the_textbook_on_a_line_world() -> None:
    plan = line_plan()
    # step j takes the records of [j - 1, j) minutes: 0.5 -> 1, 3.2 and 3.7 -> 4, 8.1 -> 9
    recs = operator_records([0.5, 3.2, 3.7, 8.1], [7, 7, 7, 7], [1, 2, 3, 3])
    q, n = 0.3, 15
    alpha, gamma = textbook({1: [0], 4: [1, 2], 9: [2]}, n + 1, q, LINE_P)
    # real time, latency 0: bin k is the state at step k
    rt = HMMEstimator(move_probability=q, latency_min=0.0, **LINE).fit(recs, plan)
    got = rt.tile_devices(minute_bins(n))
    np.testing.assert_allclose(got.T, alpha[:n], atol=2e-6)
    # the zones take the tiles one to one
    table = rt.estimate(tile_zones(4), minute_bins(n))
    wide = table.pivot(index="bin", columns="zone", values="estimate")[["t0", "t1", "t2", "t3"]]
    np.testing.assert_allclose(wide.to_numpy(), alpha[:n], atol=2e-6)
    # batch: bin k is the smoothed state at its end, step k + 1
    bt = HMMEstimator(move_probability=q, mode="batch", **LINE).fit(recs, plan)
    got = bt.tile_devices(minute_bins(n))
    np.testing.assert_allclose(got.T, gamma[1 : n + 1], atol=2e-6)
    # smoothing uses the later records: before the 3.2 record they differ from the filter
    assert np.abs(gamma[2] - alpha[2]).max() > 0.05


def test_forward_backward_is_exact_in_two_dimensions_and_with_chunks() -> None:
    """A 3 x 2 raster; devices processed one per chunk give the same as all at once."""
    cells = line_plan().cells.copy()
    cells["y"] = [10.0, 300.0, 490.0]
    cells["x"] = [10.0, 400.0, 740.0]
    plan = NetworkPlan("op", cells, 1.0, 1.0, PERIOD)
    rng = np.random.default_rng(3)
    p = rng.random((3, 6))
    p /= p.sum(axis=0)
    recs = operator_records([0.2, 2.5, 6.1, 1.5, 1.7, 9.0], [1, 1, 1, 2, 2, 2], [1, 3, 2, 2, 1, 3])
    q = 0.2
    kw = {"tile_m": 250.0, "margin_m": 0.0, "emission": p, "move_probability": q}
    est = HMMEstimator(mode="batch", **kw).fit(recs, plan)
    assert (est.raster_.nx, est.raster_.ny) == (3, 2)
    got = est.tile_devices(minute_bins(12))
    # textbook with the 2-D walk as the Kronecker product of two lazy walks
    t2 = np.kron(walk_matrix(2, q), walk_matrix(3, q))
    want = np.zeros((6, 12))
    for device_obs in ({1: [0], 3: [2], 7: [1]}, {2: [1, 0], 10: [2]}):
        n_steps = 13
        first = min(device_obs)
        emit = np.ones((n_steps + 1, 6))
        for j, cs in device_obs.items():
            for c in cs:
                emit[j] *= p[c]
        alpha = np.zeros((n_steps + 1, 6))
        for j in range(first, n_steps + 1):
            prior = np.full(6, 1 / 6) if j == first else alpha[j - 1] @ t2
            alpha[j] = prior * emit[j] / (prior * emit[j]).sum()
        beta = np.ones((n_steps + 1, 6))
        for j in range(n_steps - 1, first - 1, -1):
            beta[j] = t2 @ (emit[j + 1] * beta[j + 1])
        g = alpha * beta
        g[first:] /= g[first:].sum(axis=1, keepdims=True)
        want += g[1:13].T
    np.testing.assert_allclose(got, want, atol=3e-6)
    tiny_chunks = HMMEstimator(mode="batch", batch_memory_mb=1e-4, **kw).fit(recs, plan)
    np.testing.assert_allclose(tiny_chunks.tile_devices(minute_bins(12)), got, atol=1e-7)


def walking_world(n_tiles: int = 12):
    """One cell per tile on a line; P(cell | tile) spreads over the neighbours."""
    plan = line_plan(n_tiles)
    p = np.zeros((n_tiles, n_tiles))
    for i in range(n_tiles):
        for j, w in ((i - 1, 0.2), (i, 0.6), (i + 1, 0.2)):
            if 0 <= j < n_tiles:
                p[j, i] = w
    p /= p.sum(axis=0)
    return plan, p


def test_the_batch_posterior_follows_a_walking_device_and_leads_the_filter() -> None:
    """A device walks the line, one tile every 3 minutes, a record every 5 minutes."""
    n_tiles = 12
    plan, p = walking_world(n_tiles)
    minutes = np.arange(0.5, 36, 5.0)
    true_tile = np.minimum((minutes // 3).astype(int), n_tiles - 1)
    recs = operator_records(minutes, [1] * len(minutes), list(true_tile + 1))
    kw = {"tile_m": 250.0, "margin_m": 0.0, "emission": p, "move_probability": 0.3}
    bins = minute_bins(36)
    centres = np.arange(n_tiles)
    truth = np.minimum(np.arange(1, 37) // 3, n_tiles - 1)  # tile at each bin's end
    mean = {}
    for mode in ("realtime", "batch"):
        est = HMMEstimator(mode=mode, latency_min=1.0, **kw).fit(recs, plan)
        tiles = est.tile_devices(bins)[:, 1:]  # from the first record on
        np.testing.assert_allclose(tiles.sum(axis=0), 1.0, atol=1e-5)
        mean[mode] = centres @ tiles
    err = {m: np.abs(v - truth[1:]) for m, v in mean.items()}
    assert err["batch"].max() < 1.5  # within about a tile all along
    assert err["batch"].mean() < 0.75 * err["realtime"].mean()  # the filter lags behind


def test_silent_periods_keep_the_device_and_spread_it_then_it_leaves_after_w() -> None:
    plan, p = walking_world(9)
    recs = operator_records([0.5], [1], [5])  # one record on the middle tile's cell
    est = HMMEstimator(tile_m=250.0, margin_m=0.0, emission=p, move_probability=0.2,
                       window_min=20.0, window_tiles=9).fit(recs, plan)  # fmt: skip
    tiles = est.tile_devices(minute_bins(30))
    total = tiles.sum(axis=0)
    # present from step 1 (the record's step) to the last instant within W = 20 min
    np.testing.assert_allclose(total[1:21], 1.0, atol=1e-5)
    assert total[0] == 0 and np.all(total[21:] == 0)
    peak = tiles[:, 1:21].max(axis=0)
    assert np.all(np.diff(peak) < 0)  # idle, not absent: it spreads by the walk alone
    np.testing.assert_allclose(np.arange(9) @ tiles[:, 1:21], 4.0, atol=1e-4)  # no drift


def test_a_jump_faster_than_the_walk_restarts_the_track_and_smoothing_stops_there() -> None:
    """Tile 0 to tile 11 in two minutes: the walk cannot, so the record restarts the track."""
    plan, p = walking_world(12)
    recs = operator_records([0.5, 2.5], [1, 1], [1, 12])
    kw = {"tile_m": 250.0, "margin_m": 0.0, "emission": p, "move_probability": 0.2}
    bins = minute_bins(5)
    rt = HMMEstimator(**kw).fit(recs, plan).tile_devices(bins)
    np.testing.assert_allclose(rt[:, 3], p[11] / p[11].sum(), atol=1e-6)  # emission alone
    np.testing.assert_allclose(rt.sum(axis=0), [0, 1, 1, 1, 1], atol=1e-6)
    bt = HMMEstimator(mode="batch", latency_min=0.0, **kw).fit(recs, plan).tile_devices(bins)
    # before the jump the smoothed state is the filtered one: the later record says nothing
    np.testing.assert_allclose(bt[:, :2], rt[:, 1:3], atol=1e-6)
    jumpy = HMMEstimator(**{**kw, "move_probability": "fit"}).fit(recs, plan)
    assert all(np.isfinite(v) for v in jumpy.fit_loglik_.values())


def test_realtime_bins_never_read_records_after_their_instant() -> None:
    plan, p = walking_world(10)
    rng = np.random.default_rng(5)
    n = 40
    minutes = rng.uniform(0, 60, n)
    devices = rng.integers(0, 6, n)
    cells = rng.integers(1, 11, n)
    kw = {"tile_m": 250.0, "margin_m": 0.0, "emission": p, "move_probability": 0.1}
    bins = minute_bins(60)
    cut = 30.0  # bins with instant <= 30 min may not change
    changed = cells.copy()
    later = minutes >= cut
    changed[later] = 11 - cells[later]
    extra = operator_records([31.0, 45.0], [99, 0], [1, 10])
    before = operator_records(minutes, devices, cells)
    after = pd.concat([operator_records(minutes, devices, changed), extra], ignore_index=True)
    for latency in (0.0, 1.0):
        a = HMMEstimator(latency_min=latency, **kw).fit(before, plan).tile_devices(bins)
        b = HMMEstimator(latency_min=latency, **kw).fit(after, plan).tile_devices(bins)
        last = int(cut - latency)  # bin k's instant is k + latency minutes
        np.testing.assert_array_equal(a[:, : last + 1], b[:, : last + 1])
        assert not np.allclose(a[:, last + 1 :], b[:, last + 1 :])
    a = HMMEstimator(mode="batch", **kw).fit(before, plan).tile_devices(bins)
    b = HMMEstimator(mode="batch", **kw).fit(after, plan).tile_devices(bins)
    assert not np.allclose(a[:, :25], b[:, :25])  # batch does use the later records


def moving_records(plan: NetworkPlan, n_devices: int = 300, seed: int = 2) -> pd.DataFrame:
    """Devices hopping between cells, with detaches and gaps longer than W."""
    rng = np.random.default_rng(seed)
    cell_ids = plan.cells["cell_id"].to_numpy()
    rows = []
    for d in range(n_devices):
        t = rng.uniform(0, 30)
        cell = rng.choice(cell_ids)
        while t < 115:
            proc = "detach" if rng.random() < 0.03 else "service_request"
            rows.append((t, d, cell, proc))
            if rng.random() < 0.2:
                cell = rng.choice(cell_ids)
            t += rng.exponential(12.0) + (70.0 if rng.random() < 0.05 else 0.0)
    t, d, c, proc = map(list, zip(*rows, strict=True))
    return operator_records(t, d, c, proc)


def test_tile_sums_add_up_to_the_devices_present_in_both_modes() -> None:
    plan = make_plan()  # six three-sector sites, the operator's coverage model
    recs = moving_records(plan)
    assert (recs["procedure"] == "detach").any()
    bins = pd.date_range(T0, periods=119, freq="1min")
    present = PresenceEstimator(latency_min=1.0).fit(recs, plan).cell_counts(bins).sum(axis=0)
    assert present.max() > 100
    for mode in ("realtime", "batch"):
        est = HMMEstimator(latency_min=1.0, mode=mode).fit(recs, plan)
        total = est.tile_devices(bins).sum(axis=0)
        np.testing.assert_allclose(total, present, atol=1e-3 * present.max())
    assert 0 < est.move_probability_ <= est.move_bound_
    assert est.emission_kept_.min() > 0.5


def test_the_likelihood_fit_finds_the_walk_that_made_the_data() -> None:
    """Devices walk a 20-tile line with q = bound / 4; records drawn from P(cell | tile)."""
    n_tiles = 20
    plan, p = walking_world(n_tiles)
    rng = np.random.default_rng(11)
    q_true = min(1.0, 1.4 * 60 / 250) / 4
    rows = []
    for d in range(300):
        tile = rng.integers(n_tiles)
        for step in range(1, 61):
            u = rng.random()
            if u < q_true / 2:
                tile = max(tile - 1, 0)
            elif u < q_true:
                tile = min(tile + 1, n_tiles - 1)
            if rng.random() < 0.5:
                cell = rng.choice(n_tiles, p=p[:, tile])
                rows.append((step - 1 + rng.uniform(0.01, 0.99), d, cell + 1))
    t, d, c = map(list, zip(*rows, strict=True))
    recs = operator_records(t, d, c)
    est = HMMEstimator(tile_m=250.0, margin_m=0.0, emission=p, window_tiles=n_tiles,
                       fit_devices=300).fit(recs, plan)  # fmt: skip
    assert est.move_probability_ == pytest.approx(q_true)
    curve = np.array([est.fit_loglik_[q] for q in sorted(est.fit_loglik_)])
    best = int(np.argmax(curve))
    assert np.all(np.diff(curve[: best + 1]) > 0) and np.all(np.diff(curve[best:]) < 0)


def test_shifting_a_state_between_windows_keeps_the_shared_tiles() -> None:
    plan = make_plan()
    recs = moving_records(plan, n_devices=20)
    est = HMMEstimator(move_probability=0.1).fit(recs, plan)
    m = est.model_
    rng = np.random.default_rng(0)
    n_cells = m.e.shape[0]
    src = rng.integers(0, n_cells, 50)
    dst = rng.integers(0, n_cells, 50)
    a = rng.random((50, m.k.shape[0])).astype(np.float32)
    moved = _shift(a, src, dst, m)
    for i in range(50):
        before = _tile_sums(m, a[i : i + 1], src[i : i + 1])
        after = _tile_sums(m, moved[i : i + 1], dst[i : i + 1])
        shared = np.zeros(m.n_tiles, dtype=bool)
        shared[m.tiles[dst[i]]] = True
        np.testing.assert_allclose(after[shared], before[shared], rtol=1e-6)
        assert np.all(after[~shared] == 0)


def test_estimate_minute_is_incremental_and_equals_the_same_bin() -> None:
    plan = make_plan()
    recs = moving_records(plan, n_devices=60)
    bins = pd.date_range(T0 + pd.Timedelta(minutes=20), periods=5, freq="1min")
    zones = tile_zones(4, "strip")
    zones["geometry"] = zones.geometry.translate(1000.0, 1000.0)
    est = HMMEstimator(latency_min=1.0, move_probability=0.1, privacy_threshold=0.0)
    est.fit(recs, plan)
    table = est.estimate(zones, bins)
    for b in bins:
        one = est.estimate_minute(zones, b)
        want = table[table["bin"] == b].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, want)
    assert est._cursor.j == int((bins[-1] + pd.Timedelta(minutes=1) - T0) / pd.Timedelta("1min"))
    earlier = est.estimate_minute(zones, bins[0])  # going back replays from the start
    pd.testing.assert_frame_equal(earlier, table[table["bin"] == bins[0]].reset_index(drop=True))


def test_laplace_noise_goes_on_the_tile_sums_and_is_seeded() -> None:
    plan = make_plan()
    recs = moving_records(plan, n_devices=60)
    bins = pd.date_range(T0 + pd.Timedelta(minutes=20), periods=3, freq="1min")
    zones = tile_zones(4, "strip")
    zones["geometry"] = zones.geometry.translate(1000.0, 1000.0)

    def run(seed: int, eps: float | None) -> pd.DataFrame:
        est = HMMEstimator(move_probability=0.1, laplace_epsilon=eps, random_state=seed,
                           privacy_threshold=0.0)  # fmt: skip
        return est.fit(recs, plan).estimate(zones, bins)

    exact = run(0, None)
    pd.testing.assert_frame_equal(run(1, 0.5), run(1, 0.5))
    assert not run(1, 0.5)["estimate"].equals(run(2, 0.5)["estimate"])
    assert not np.allclose(run(1, 0.5)["estimate"], exact["estimate"])
    assert (run(1, 0.5)["estimate"] >= 0).all()


def test_release_runs_the_hmm_from_records_with_its_own_noise_draw() -> None:
    plan = make_plan()
    recs = moving_records(plan, n_devices=80)
    bins = pd.date_range(T0 + pd.Timedelta(minutes=20), periods=3, freq="1min")
    grid = tile_zones(4, "grid")
    grid["geometry"] = grid.geometry.translate(1000.0, 1000.0)
    config = EstimatorsConfig(methods=["presence", "bayes", "hmm"], laplace_epsilon=1.0,
                              privacy_threshold=0)  # fmt: skip
    release = release_estimates(recs, plan, {"grid": grid}, bins, config, random_state=4)
    assert set(release.internal["method"]) == {"presence", "bayes", "hmm"}
    assert set(release.published["method"]) == {"bayes", "hmm"}
    # the internal HMM rows are the plain estimator's; the published ones are noisy
    plain = HMMEstimator(latency_min=1.0, privacy_threshold=0)
    want = plain.fit(recs, plan).estimate({"grid": grid}, bins)
    got = release.internal[release.internal["method"] == "hmm"]
    np.testing.assert_allclose(got["estimate"], want["estimate"], rtol=1e-6)
    noisy = release.published[release.published["method"] == "hmm"]
    assert not np.allclose(noisy["estimate"].to_numpy(), want["estimate"].to_numpy())
    budget = release.privacy["budget"]
    assert budget["epsilon_per_bin"] == pytest.approx(2.0)  # counts + the HMM's tile sums
    assert release.privacy["noisy_statistics"] == ["cell counts", "hmm tile sums"]


def test_hmm_is_a_registered_method_a_scenario_can_choose() -> None:
    assert ESTIMATORS["hmm"] is HMMEstimator
    assert EstimatorsConfig(methods=["hmm"]).methods == ["hmm"]


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"window_tiles": 0}, "window_tiles = 0; must be >= 1"),
        ({"window_tiles": 2.5}, "window_tiles = 2.5; must be an integer"),
        ({"move_probability": 1.5}, "move_probability = 1.5; give 'fit' or a number"),
        ({"move_probability": "ml"}, "move_probability = 'ml'; give 'fit'"),
        ({"step_s": 0}, "step_s = 0; must be > 0"),
        ({"walk_speed_mps": -1.0}, "walk_speed_mps = -1.0; must be > 0"),
        ({"tile_m": 50.0}, "a walker covers 84 m per step .* tile_m = 50 m"),
        ({"fit_devices": 0}, "fit_devices = 0; must be an integer >= 1"),
        ({"batch_memory_mb": 0}, "batch_memory_mb = 0; must be > 0"),
        ({"tiles": tile_zones(2)}, "a user tile grid is not supported"),
        ({"mode": "live"}, "mode = 'live'"),
    ],
)
def test_bad_parameters_are_named(params, match: str) -> None:
    plan = line_plan()
    recs = operator_records([0.5], [1], [1])
    with pytest.raises(EstimateInputError, match=match):
        HMMEstimator(**{**LINE, **params}).fit(recs, plan)


def test_misuse_is_an_error_that_says_what_to_do() -> None:
    plan = line_plan()
    recs = operator_records([0.5, 2.0], [1, 1], [1, 2])
    est = HMMEstimator(**LINE)
    with pytest.raises(NotFittedError, match="call fit"):
        est.estimate(tile_zones(4), minute_bins(3))
    with pytest.raises(EstimateInputError, match="counts per cell and bin do not say"):
        est.fit_counts(pd.DataFrame({"cell_id": [1], "bin": [T0], "devices": [1.0]}), plan)
    est.fit(recs, plan)
    with pytest.raises(EstimateInputError, match="cannot estimate from cell counts"):
        est.estimate_from_counts(np.zeros((3, 1)), tile_zones(4), minute_bins(1))
    with pytest.raises(EstimateInputError, match="tile sums have shape"):
        est.estimate_from_tiles(np.zeros((3, 1)), tile_zones(4), minute_bins(1))
    with pytest.raises(EstimateInputError, match="give the bin starts"):
        est.estimate(tile_zones(4))
    batch = HMMEstimator(mode="batch", **LINE).fit(recs, plan)
    with pytest.raises(EstimateInputError, match="estimate_minute is the real-time update"):
        batch.estimate_minute(tile_zones(4), T0)
    far = tile_zones(4)
    far["geometry"] = far.geometry.translate(5000.0, 0.0)
    with pytest.raises(EstimateInputError, match="outside the estimators' tile grid"):
        est.estimate(far, minute_bins(2))
    with pytest.raises(EstimateInputError, match="emission: matrix shape"):
        HMMEstimator(**{**LINE, "emission": LINE_P[:, :3]}).fit(recs, plan)
