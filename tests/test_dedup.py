"""Multi-SIM deduplication: known answers on tiny record worlds, the cost, errors, the wall.

The worlds are hand-made operator records (no simulation): devices walking over a grid of
cells, two of them carried by one person (the same cells, their own record times).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sim.estimate import (
    DUPLICITY_FILE,
    DuplicityError,
    EstimateInputError,
    PresenceEstimator,
    VoronoiEstimator,
    duplicity,
)
from sim.estimate.dedup import persons_per_person, twin_prior
from sim.estimate.presence import prepare_records
from sim.network.owners import device_truth
from sim.network.plan import CELL_COLUMNS, NetworkPlan
from sim.network.pseudonyms import pseudonymise
from sim.network.records import RECORD_COLUMNS
from tests.conftest import T0

PERIOD = ("2019-07-07T10:00:00+00:00", "2019-07-07T14:00:00+00:00")
ESTIMATE = Path(__file__).resolve().parents[1] / "sim" / "estimate"


def grid_plan(side: int = 6, spacing: float = 1000.0, share: float = 0.4) -> NetworkPlan:
    """Omni cells on a square lattice, `spacing` apart (farther than `near_m` = 600 m)."""
    n = side * side
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(n) + 1,
            "site_id": np.arange(n),
            "x": spacing * (np.arange(n) % side),
            "y": spacing * (np.arange(n) // side),
            "height_m": 25.0,
            "azimuth_deg": np.nan,
            "power_dbm": 43.0,
            "band_mhz": 1800.0,
            "tracking_area": 1,
            "temporary": False,
        }
    ).astype(CELL_COLUMNS)
    return NetworkPlan("op", cells, share, 1.0, PERIOD)


def records(minutes, device, cell_id) -> pd.DataFrame:
    """Operator records from lists (`minutes` after T0), sorted by time."""
    frame = pd.DataFrame(
        {
            "time": T0 + pd.to_timedelta(np.asarray(minutes, dtype=float), unit="min"),
            "device": np.asarray(device, dtype=np.uint64),
            "cell_id": np.asarray(cell_id, dtype=np.int64),
            "procedure": "service_request",
            "outcome": "ok",
        }
    ).astype(RECORD_COLUMNS)
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def walkers(
    rng: np.random.Generator,
    *,
    n: int = 60,
    minutes: int = 180,
    side: int = 6,
    together: tuple[tuple[int, int], ...] = ((0, 1),),
    rate: float = 0.4,
    move: float = 0.15,
) -> pd.DataFrame:
    """`n` devices (ids 100 + i) walking at random over the grid; each pair in `together`
    follows one path (one person's two phones), every device records at its own times."""
    path = np.zeros((n, minutes), dtype=np.int64)
    pos = rng.integers(0, side, (n, 2))
    for m in range(minutes):
        pos = np.clip(pos + rng.integers(-1, 2, (n, 2)) * (rng.random((n, 1)) < move), 0, side - 1)
        path[:, m] = pos[:, 0] + side * pos[:, 1]
    for a, b in together:
        path[b] = path[a]
    t, dev, cell = [], [], []
    for d in range(n):
        for m in np.flatnonzero(rng.random(minutes) < rate):
            t.append(m + rng.random() * 0.99)
            dev.append(100 + d)
            cell.append(path[d, m] + 1)
    return records(t, dev, cell)


def pair_probability(result, ids: tuple[int, int]) -> float:
    codes = [int(np.flatnonzero(result.device_ids == i)[0]) for i in ids]
    a, b = min(codes), max(codes)
    row = result.pairs[(result.pairs["a"] == a) & (result.pairs["b"] == b)]
    return float(row["probability"].iloc[0]) if len(row) else 0.0


# ------------------------------------------------------------------ known answers


def test_two_devices_moving_together_are_the_only_likely_twins() -> None:
    recs = walkers(np.random.default_rng(3))
    for companions in (0, 3):
        result = duplicity(recs, grid_plan(), prior=0.07, companions=companions)
        p = pd.Series(result.probability, index=result.device_ids.astype(int))
        others = p.drop([100, 101])
        assert pair_probability(result, (100, 101)) > 0.5
        assert p[100] > 0.5 and p[101] > 0.5
        assert others.max() < 0.01, others.sort_values().tail()
        other_pairs = result.pairs["probability"].drop(
            result.pairs.index[result.pairs["probability"].idxmax()]
        )
        assert other_pairs.max() < 0.01
    # without companion classes (the package's own model) the pair is certain; with them,
    # a lone pair moving together might be two friends: it keeps a share of doubt
    alone = duplicity(recs, grid_plan(), prior=0.07, companions=0)
    assert pair_probability(alone, (100, 101)) > 0.999


def test_the_posterior_matches_a_hand_computation() -> None:
    """Four devices, three far-apart cells X, Y, Z, three one-minute slots.

    A and B (one person): X, Y, Z. C stands on X. D: Z, Z, Y. Prior 0.2, no companions.
    """
    x, y, z = 1, 2, 3
    recs = records(
        [0.5, 1.5, 2.5, 0.6, 1.6, 2.6, 0.5, 1.5, 2.5, 0.5, 1.5, 2.5],
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4],
        [x, y, z, x, y, z, x, x, x, z, z, y],
    )
    plan = grid_plan(side=3, spacing=5000.0)
    result = duplicity(recs, plan, prior=0.2, companions=0)
    # candidates: only X in slot 0 and Y, Z in slots 1, 2 are shared (D shares nothing)
    assert result.facts["candidate_pairs"] == 3
    # stay propensities (4 pseudo-transitions at the overall 3/8): A, B 0.25; C 7/12
    s_ab, s_c = 1.5 / 6, 3.5 / 6
    a, near = 0.95, 0.04
    far = 1 - a - near
    # A-B agree in all three slots. Independent: slot 0, 2 of the 3 others on X; slots 1
    # and 2, B was elsewhere before, so it moved (1 - s) to the one other on the cell (1/3)
    log_ind_ab = math.log(2 / 3) + 2 * math.log((1 - s_ab) / 3)
    # A-C agree in slot 0 (2/3), then C stays on X while A is on Y and Z (far):
    # C given A: stays (s_c) or moves elsewhere than A's cell (2/3 of the others);
    # A given C: slot 1, A was on X, so only a move (1 - s_ab) puts it off X (all others
    # are off X); slot 2, A was on Y (off X already): it is far whatever it does
    c_given_a = s_c + (1 - s_c) * 2 / 3
    log_ind_ac = (
        math.log(2 / 3)
        + 0.5 * (math.log(c_given_a) + math.log(1 - s_ab))
        + 0.5 * (math.log(c_given_a) + math.log(1.0))
    )
    w = 4 * 0.2 / 2 / 3  # expected twin pairs N prior / 2 over the 3 candidates

    def posterior(log_twin: float, log_ind: float) -> float:
        t, i = w * math.exp(log_twin), (1 - w) * math.exp(log_ind)
        return t / (t + i)

    r_ab = posterior(3 * math.log(a), log_ind_ab)
    r_ac = posterior(math.log(a) + 2 * math.log(far), log_ind_ac)
    assert pair_probability(result, (1, 2)) == pytest.approx(r_ab, rel=1e-6)
    assert pair_probability(result, (1, 3)) == pytest.approx(r_ac, rel=1e-6)
    assert pair_probability(result, (2, 3)) == pytest.approx(r_ac, rel=1e-6)
    p = dict(zip(result.device_ids.astype(int), result.probability, strict=True))

    def one_to_one(*rs: float) -> float:
        odds = sum(r / (1 - r) for r in rs)
        return odds / (1 + odds)

    # every device was seen with every other where one arrived: no residual prior
    assert p[1] == pytest.approx(one_to_one(r_ab, r_ac), rel=1e-6)
    assert p[3] == pytest.approx(one_to_one(r_ac, r_ac), rel=1e-6)
    assert p[4] == pytest.approx(0.0, abs=1e-9)
    # the "pairs" approach takes the most similar device instead
    best = duplicity(recs, plan, prior=0.2, companions=0, approach="pairs")
    pb = dict(zip(best.device_ids.astype(int), best.probability, strict=True))
    assert pb[1] == pytest.approx(max(r_ab, r_ac), rel=1e-6)
    assert result.persons == pytest.approx(sum(1 - v / 2 for v in p.values()))


def test_a_device_without_evidence_keeps_the_prior() -> None:
    # two devices that are never seen in the same slot: nothing tells them apart
    recs = records([0.5, 5.5], [1, 2], [1, 2])
    result = duplicity(recs, grid_plan(side=2), prior=0.07)
    assert result.probability == pytest.approx([0.07, 0.07])
    assert result.facts["candidate_pairs"] == 0


def test_beliefs_give_the_prior_and_the_scaling() -> None:
    assert twin_prior(market_share=0.4, second_device=0.1) == pytest.approx(0.08 / 1.1)
    # with every device at its prior, deduplication counts what the fixed factor counts
    s, q, phones = 0.4, 0.1, 0.99
    prior = twin_prior(market_share=s, second_device=q)
    per_person = persons_per_person(market_share=s, phones_per_person=phones, second_device=q)
    assert (1 - prior / 2) / per_person == pytest.approx(1 / (s * phones))
    assert persons_per_person(market_share=1.0, phones_per_person=1.1, second_device=0.1) == (
        pytest.approx(1.0)
    )


# ------------------------------------------------------------------ the cost


def test_finding_candidates_is_not_quadratic_in_a_packed_crowd() -> None:
    """A crowd standing in one cell adds no candidate work; the walkers' work is bounded."""
    rng = np.random.default_rng(5)
    base = walkers(rng, n=40, minutes=120)
    plan = grid_plan()
    sizes, works, pairs = [], [], []
    for crowd in (300, 600):
        minutes = rng.random(crowd * 20) * 119.0
        packed = records(minutes, 10_000 + np.arange(crowd * 20) % crowd, np.full(crowd * 20, 8))
        recs = pd.concat([base, packed]).sort_values("time", kind="stable")
        result = duplicity(recs, plan, prior=0.07, max_token_devices=32)
        sizes.append(result.facts["devices"])
        works.append(result.facts["candidate_work"])
        pairs.append(result.facts["candidate_pairs"])
        n_obs = result.facts["observations"]
        assert result.facts["candidate_work"] <= 2 * 32 * n_obs
        assert result.facts["candidate_pairs"] < 0.01 * sizes[-1] ** 2 / 2
    assert works[1] <= 1.1 * works[0]  # twice the crowd: the work does not grow
    assert pairs[1] <= 1.1 * pairs[0] + 10


# ------------------------------------------------------------------ the estimators


def test_deduplicated_counts_weight_each_device_and_rescale() -> None:
    recs = walkers(np.random.default_rng(3), n=20)
    plan = grid_plan(share=0.4)
    bins = pd.date_range(T0 + pd.Timedelta(minutes=60), periods=30, freq="min")
    on = PresenceEstimator(privacy_threshold=0, mode="batch", dedup=True).fit(recs, plan)
    weights = dict(zip(on.day_duplicity().device_ids, on.day_duplicity().weights, strict=True))
    twins = min(weights, key=weights.get), sorted(weights, key=weights.get)[1]
    assert sorted(twins) == [100, 101] and weights[100] < 0.99  # they weigh least
    # each device counts its weight where a count without deduplication puts it
    expected = np.zeros((plan.n_cells, len(bins)))
    for device, own in recs.groupby("device"):
        alone = PresenceEstimator(privacy_threshold=0, mode="batch").fit(own, plan)
        expected += weights[device] * alone.cell_counts(bins)
    assert on.cell_counts(bins) == pytest.approx(expected)
    # people: divided by the share of people with a phone of the operator, not s * p
    off = PresenceEstimator(privacy_threshold=0, mode="batch").fit(recs, plan)
    assert off.people_per_device_ == pytest.approx(1 / 0.4)
    assert on.people_per_device_ == pytest.approx(
        1 / persons_per_person(market_share=0.4, phones_per_person=1.0, second_device=0.1)
    )


def test_real_time_deduplication_never_reads_a_later_record() -> None:
    recs = walkers(np.random.default_rng(4), minutes=150)
    plan = grid_plan()
    bins = pd.date_range(T0, periods=150, freq="min")
    est = VoronoiEstimator(privacy_threshold=0, dedup=True, dedup_refresh_min=30)
    table = est.fit(recs, plan).estimate({"grid": _grid_zones(plan)}, bins)
    cut = T0 + pd.Timedelta(minutes=70)
    # after the cut, the rest of the day changes: a new pair walks together everywhere
    later = recs[recs["time"] < cut]
    extra = walkers(np.random.default_rng(9), n=4, minutes=150, together=((0, 1), (2, 3)))
    extra = extra[extra["time"] >= cut].assign(device=lambda f: f["device"] + 1000)
    changed = pd.concat([later, extra]).astype(RECORD_COLUMNS)
    other = VoronoiEstimator(privacy_threshold=0, dedup=True, dedup_refresh_min=30)
    table2 = other.fit(changed, plan).estimate({"grid": _grid_zones(plan)}, bins)
    before = table["bin"] < cut - pd.Timedelta(minutes=1)  # reference instant < cut
    assert np.allclose(
        table.loc[before, "estimate"].to_numpy(), table2.loc[before, "estimate"].to_numpy()
    )
    # the one-minute update equals the same bin of the whole-day computation
    minute = est.estimate_minute({"grid": _grid_zones(plan)}, bins[100])
    same = table[table["bin"] == bins[100]]
    assert np.allclose(minute["estimate"].to_numpy(), same["estimate"].to_numpy())


def _grid_zones(plan: NetworkPlan):
    import geopandas as gpd
    from shapely.geometry import box

    xs, ys = plan.cells["x"].to_numpy(), plan.cells["y"].to_numpy()
    geoms = [box(x - 500, y - 500, x + 500, y + 500) for x, y in zip(xs, ys, strict=True)]
    return gpd.GeoDataFrame(
        {"zone": [f"z{i}" for i in range(len(geoms))]}, geometry=geoms, crs="EPSG:31370"
    ).assign(system="grid")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prior": 1.0}, r"prior = 1\.0: must be in \[0, 1\)"),
        ({"prior": 0.07, "approach": "best"}, r"approach = 'best': use one of 1to1, pairs"),
        ({"prior": 0.07, "slot_s": 0}, r"slot_s = 0: must be > 0"),
        ({"prior": 0.07, "twin_agreement": (0.9, 0.2)}, r"twin_agreement .* sum to < 1"),
        ({"prior": 0.07, "twin_agreement": "high"}, r"twin_agreement = 'high'"),
        ({"prior": 0.07, "companions": 4}, r"companions = 4: must be an int from 0 to 3"),
        ({"prior": 0.07, "max_token_devices": 1}, r"max_token_devices = 1"),
        ({"prior": 0.07, "p_min": 0.0}, r"p_min = 0\.0"),
        ({"prior": 0.07, "n_devices": 1}, r"n_devices = 1: must be an int >= the records' 2"),
    ],
)
def test_bad_parameters_are_refused_naming_them(options: dict, message: str) -> None:
    recs = records([0.5, 1.5], [1, 2], [1, 2])
    with pytest.raises(DuplicityError, match=message):
        duplicity(recs, grid_plan(side=2), **options)


def test_estimator_errors_name_the_parameter() -> None:
    recs = records([0.5, 1.5], [1, 2], [1, 2])
    with pytest.raises(EstimateInputError, match=r"second_device = 1\.5; must be in \[0, 1\)"):
        PresenceEstimator(dedup=True, second_device=1.5).fit(recs, grid_plan(side=2))
    with pytest.raises(EstimateInputError, match="dedup = 'yes'; must be True or False"):
        PresenceEstimator(dedup="yes").fit(recs, grid_plan(side=2))
    with pytest.raises(EstimateInputError, match="dedup reads each device's records"):
        counts = pd.DataFrame({"cell_id": [1], "bin": [T0], "devices": [3.0]})
        PresenceEstimator(dedup=True).fit_counts(counts, grid_plan(side=2))
    with pytest.raises(EstimateInputError, match="dedup is off"):
        PresenceEstimator().fit(recs, grid_plan(side=2)).day_duplicity()
    prepared = prepare_records(recs, grid_plan(side=2))
    with pytest.raises(DuplicityError, match="prepared for another network plan"):
        duplicity(prepared, grid_plan(side=2), prior=0.07)


def test_the_scenario_key_is_named_in_errors(minimal: dict) -> None:
    from sim.scenario import Scenario

    minimal["estimators"] = {"dedup": "maybe"}
    with pytest.raises(ValueError, match=r"estimators\.dedup"):
        Scenario.model_validate(minimal)
    minimal["estimators"] = {"dedup": True, "second_device": 1.0}
    with pytest.raises(ValueError, match=r"estimators\.second_device"):
        Scenario.model_validate(minimal)
    minimal["estimators"] = {"dedup": True}
    assert Scenario.model_validate(minimal).estimators.dedup is True


# ------------------------------------------------------------------ the truth and the wall


def test_device_truth_joins_the_records_pseudonyms() -> None:
    secret = bytes(range(32))
    times = pd.DatetimeIndex(
        ["2019-07-07T10:00", "2019-07-07T10:01", "2019-07-07T10:02", "2019-07-07T23:30"],
        tz="UTC",
    )
    device = np.array([0, 1, 2, 0])  # devices 0 and 1 are person 5's; 2 is person 7's
    owner = np.array([5, 5, 7])
    phones = np.zeros(8, dtype=np.int64)
    phones[[5, 7]] = [2, 1]
    truth = device_truth(device, times, owner, phones, secret=secret, timezone="Europe/Brussels")
    ids = pseudonymise(device, times, secret=secret, timezone="Europe/Brussels")
    assert set(truth["device"]) == set(ids)
    # 23:30 UTC is the next local day in Brussels: device 0 has a new pseudonym, alone
    assert list(truth["day"]) == ["2019-07-07"] * 3 + ["2019-07-08"]
    assert list(truth["person"]) == [5, 5, 7, 5]
    assert list(truth["twin"]) == [True, True, False, False]
    assert list(truth["second"]) == [False, True, False, False]
    assert list(truth["phones"]) == [2, 2, 1, 2]


def test_the_operator_side_never_names_the_truth_of_devices() -> None:
    for path in sorted(ESTIMATE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "truth_devices" not in text and "TRUTH_DEVICES" not in text, path.name


def test_the_estimator_stage_reads_no_truth(
    smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With dedup on, the run's estimator stage succeeds though every truth file is
    unreadable and every attempt to read one fails."""
    import geopandas as gpd
    import pyarrow.parquet as pq

    from sim import run as run_module
    from sim.scenario import load_scenario

    folder = tmp_path / "run"
    shutil.copytree(smoke_run, folder)
    for name in ("truth_devices.parquet", "truth_zones.parquet", "truth_edges.parquet"):
        (folder / name).write_bytes(b"not a table")
    read_parquet, read_table = pd.read_parquet, pq.read_table

    def guarded(reader):
        def read(path, *args, **kwargs):
            assert "truth_" not in str(path), f"the operator side read {path}"
            return reader(path, *args, **kwargs)

        return read

    monkeypatch.setattr(pd, "read_parquet", guarded(read_parquet))
    monkeypatch.setattr(pq, "read_table", guarded(read_table))
    scenario = load_scenario(folder / "scenario.toml")
    scenario = scenario.model_copy(
        update={
            "estimators": scenario.estimators.model_copy(
                update={"dedup": True, "methods": ["presence", "voronoi"]}
            )
        }
    )
    zones = {
        s: gpd.read_file(folder / "zones.gpkg", layer=s).assign(system=s)
        for s in ("grid", "segment", "area")
    }
    ctx = run_module.RunContext(
        scenario=scenario,
        out_dir=folder,
        seeds=run_module.seed_sequences(1),
        crowd=SimpleNamespace(zones=zones),
        zones=zones,
    )
    ctx.facts["network"] = {"procedures": len(pd.read_parquet(folder / "records.parquet"))}
    note = run_module._estimators_stage(ctx)
    assert "estimates" in note
    assert DUPLICITY_FILE in ctx.outputs
    table = pd.read_parquet(folder / DUPLICITY_FILE)
    assert table["probability"].between(0, 1).all()
    assert ctx.facts["estimators"]["dedup"]["devices"] == len(table)


def test_the_smoke_run_scores_persons_among_devices(smoke_run: Path) -> None:
    import json

    from validation.persons import score_persons

    truth = pd.read_parquet(smoke_run / "truth_devices.parquet")
    recs = pd.read_parquet(smoke_run / "records.parquet")
    assert set(truth["device"]) == set(recs["device"])
    assert truth["phones"].isin([1, 2]).all()
    assert (truth["second"] <= truth["twin"]).all()
    # the run did not deduplicate: its scoring gives the fixed factor only (computing the
    # duplicity from the records is on demand: minutes on a full run)
    persons = json.loads((smoke_run / "metrics.json").read_text())["persons"]
    assert persons == score_persons(smoke_run, compute=False)
    assert "error_dedup" not in persons
    full = score_persons(smoke_run)
    assert full is not None and full["dedup_source"] == "computed from records.parquet"
    assert persons["devices"] == len(truth)
    assert persons["persons_true"] == truth["person"].nunique()
    for value in (persons["error_fixed"], full["error_dedup"]):
        assert abs(value) < 0.05  # within 5% of the people among the devices
