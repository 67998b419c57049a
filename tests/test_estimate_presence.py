"""Presence per cell and bin: the window, de-duplication, detach, real time and batch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.estimate import EstimateInputError, PresenceEstimator, VoronoiEstimator
from sim.estimate.presence import (
    prepare_records,
    presence_at,
    presence_counts,
    reference_instants,
)
from sim.network.plan import CELL_COLUMNS, NetworkPlan
from sim.network.records import COUNTER_COLUMNS
from tests.conftest import T0, operator_records

PERIOD = ("2019-07-07T10:00:00+00:00", "2019-07-07T14:00:00+00:00")


def plan(n_cells: int = 4) -> NetworkPlan:
    cells = pd.DataFrame(
        {
            "cell_id": np.arange(n_cells) + 1,
            "site_id": np.arange(n_cells),
            "x": 1000.0 * np.arange(n_cells),
            "y": 0.0,
            "height_m": 25.0,
            "azimuth_deg": np.nan,
            "power_dbm": 43.0,
            "band_mhz": 1800.0,
            "tracking_area": 1,
            "temporary": False,
        }
    ).astype(CELL_COLUMNS)
    return NetworkPlan("op", cells, 1.0, 1.0, PERIOD)


records = operator_records


def counts(recs: pd.DataFrame, minutes: list[float], **params) -> np.ndarray:
    """People per cell (rows) and bin (columns); share 1, one phone each, no suppression."""
    est = PresenceEstimator(privacy_threshold=0, **params).fit(recs, plan())
    bins = pd.DatetimeIndex([T0 + pd.Timedelta(minutes=m) for m in minutes])
    table = est.estimate(None, bins)
    return table["estimate"].to_numpy().reshape(plan().n_cells, len(bins))


def test_a_device_changing_cells_inside_a_bin_counts_once_at_its_last_cell() -> None:
    recs = records([10.1, 10.4, 10.8], [7, 7, 7], [1, 2, 3])
    c = counts(recs, [10], latency_min=1)
    assert c[:, 0].tolist() == [0, 0, 1, 0]


def test_a_device_counts_only_within_the_window() -> None:
    recs = records([0.0], [1], [2])
    c = counts(recs, [58, 59, 60, 61], latency_min=1, window_min=60)
    # reference instants 59, 60, 61, 62 min: seen at 0, counted while within 60 min
    assert c[1].tolist() == [1, 1, 0, 0]


def test_a_detach_ends_presence_until_the_next_record() -> None:
    recs = records([1, 5, 20], [1, 1, 1], [1, 1, 2], ["attach", "detach", "tau"])
    c = counts(recs, [2, 10, 21], latency_min=1)
    assert c[:, 0].tolist() == [1, 0, 0, 0]
    assert c.sum(axis=0).tolist() == [1, 0, 1]


def test_latency_decides_whether_the_bins_own_records_are_used() -> None:
    recs = records([10.5], [1], [3])
    assert counts(recs, [10], latency_min=0)[2, 0] == 0  # state at the bin start
    assert counts(recs, [10], latency_min=1)[2, 0] == 1  # state at the bin end


def test_realtime_ignores_records_later_than_bin_start_plus_latency() -> None:
    rng = np.random.default_rng(2)
    n = 300
    past = records(rng.uniform(0, 60, n), rng.integers(0, 80, n), rng.integers(1, 5, n))
    # the future: known devices move, new devices appear, some detach, from minute 60.5
    m = 200
    future = records(
        rng.uniform(60.5, 200, m),
        rng.integers(0, 160, m),
        rng.integers(1, 5, m),
        list(rng.choice(["service_request", "detach", "attach"], m)),
    )
    minutes = [30.0, 45.0, 59.0, 60.0]  # with latency 0.5: cut-offs up to 60.5
    before = counts(past, minutes, latency_min=0.5)
    after = counts(pd.concat([past, future], ignore_index=True), minutes, latency_min=0.5)
    np.testing.assert_array_equal(before, after)
    # and a later bin does see them
    later = counts(pd.concat([past, future], ignore_index=True), [120.0], latency_min=0.5)
    assert not np.array_equal(later, counts(past, [120.0], latency_min=0.5))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    window=st.sampled_from([5.0, 30.0, 60.0]),
    latency=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
)
def test_the_one_minute_update_equals_the_whole_day_computation(
    seed: int, window: float, latency: float
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    procs = list(rng.choice(["service_request", "detach", "periodic_tau"], n, p=[0.7, 0.1, 0.2]))
    # whole minutes make ties and boundary instants likely
    recs = records(rng.integers(0, 120, n), rng.integers(0, 30, n), rng.integers(1, 5, n), procs)
    prepared = prepare_records(recs, plan())
    bins = pd.date_range(T0, periods=120, freq="1min")
    instants = reference_instants(
        bins, width=pd.Timedelta(minutes=1), latency=pd.Timedelta(minutes=latency),
        mode="realtime",
    )  # fmt: skip
    whole = presence_counts(prepared, instants, window=pd.Timedelta(minutes=window))
    for b in rng.integers(0, 120, 10):
        one = presence_at(prepared, int(instants[b]), window=pd.Timedelta(minutes=window))
        np.testing.assert_array_equal(one, whole[:, b])


def test_estimate_minute_matches_the_same_bin_of_estimate() -> None:
    rng = np.random.default_rng(4)
    n = 500
    recs = records(rng.uniform(0, 90, n), rng.integers(0, 100, n), rng.integers(1, 5, n))
    est = VoronoiEstimator(latency_min=1, privacy_threshold=0).fit(recs, plan())
    import geopandas as gpd
    import shapely

    zones = gpd.GeoDataFrame(
        {"zone": ["west", "east"]},
        geometry=[shapely.box(-1000, -1000, 1500, 1000), shapely.box(1500, -1000, 4000, 1000)],
        crs="EPSG:31370",
    )
    zones.attrs["system"] = "halves"
    bins = pd.date_range(T0 + pd.Timedelta(minutes=40), periods=5, freq="1min")
    day = est.estimate(zones, bins)
    minute = est.estimate_minute(zones, bins[3])
    expected = day[day["bin"] == bins[3]].reset_index(drop=True)
    np.testing.assert_allclose(minute["estimate"], expected["estimate"])
    np.testing.assert_allclose(minute["upper"], expected["upper"])


def test_batch_mode_uses_later_records_and_says_so() -> None:
    recs = records([0.0, 40.0], [1, 1], [1, 2])
    # at the end of the bin starting at 30 min (31), the record at 40 is nearer than the one at 0
    realtime = counts(recs, [30], latency_min=1)
    batch = counts(recs, [30], mode="batch")
    assert realtime[:, 0].tolist() == [1, 0, 0, 0]
    assert batch[:, 0].tolist() == [0, 1, 0, 0]
    # a device first seen later is present in batch (within W) but not in real time
    assert counts(records([50.0], [1], [4]), [10], mode="batch")[3, 0] == 1
    assert counts(records([50.0], [1], [4]), [10], latency_min=1)[3, 0] == 0
    est = PresenceEstimator(mode="batch").fit(recs, plan())
    assert set(est.estimate(None, pd.DatetimeIndex([T0])).loc[:, "mode"]) == {"batch"}
    with pytest.raises(EstimateInputError, match="real-time update"):
        est.estimate_minute(None, T0)


def test_counters_are_checked() -> None:
    recs = records([1.0], [1], [1])
    good = pd.DataFrame(
        {
            "minute": [T0],
            "cell_id": [1],
            "connected_users": [3],
            "rejections": [0],
            "messages": [10],
            "queue_delay_ms": [0.5],
            **{c: [0] for c in COUNTER_COLUMNS if c.startswith("messages_")},
        }
    ).astype(COUNTER_COLUMNS)
    est = PresenceEstimator().fit(recs, plan(), counters=good)
    assert est.counters_ is good
    with pytest.raises(EstimateInputError, match="cell ids the plan does not have"):
        PresenceEstimator().fit(recs, plan(), counters=good.assign(cell_id=99))
    with pytest.raises(EstimateInputError, match="missing column"):
        PresenceEstimator().fit(recs, plan(), counters=good.drop(columns="messages"))


def test_records_prepared_for_another_plan_are_refused() -> None:
    prepared = prepare_records(records([1.0], [1], [1]), plan())
    with pytest.raises(EstimateInputError, match="another network plan"):
        PresenceEstimator().fit(prepared, plan())


@pytest.mark.parametrize("far_id", [50, 10**12])  # lookup table and binary search
def test_cell_ids_are_matched_whatever_their_range(far_id: int) -> None:
    p = plan()
    cells = p.cells.assign(cell_id=[1, 2, 3, far_id])
    wide = NetworkPlan("op", cells, 1.0, 1.0, PERIOD)
    prepared = prepare_records(records([1, 2, 3], [1, 2, 3], [far_id, 1, far_id]), wide)
    assert sorted(prepared.cell.tolist()) == [0, 3, 3]
    with pytest.raises(EstimateInputError, match=r"1 record\(s\) name 1 cell id"):
        PresenceEstimator().fit(records([1, 2], [1, 2], [far_id, far_id + 1]), wide)
