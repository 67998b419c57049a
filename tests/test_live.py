"""Presence counted as the records arrive, and the release from those counts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.estimate import (
    ESTIMATORS,
    EstimateInputError,
    VoronoiEstimator,
    counts_suffice,
    release_estimates,
    release_from_counts,
)
from sim.estimate.live import LivePresence
from sim.estimate.presence import prepare_records, presence_counts, reference_instants
from tests.conftest import T0, operator_records
from tests.test_estimate_presence import plan

MINUTE = pd.Timedelta(minutes=1).value


def instants(n_bins: int, latency_min: float) -> np.ndarray:
    bins = pd.date_range(T0, periods=n_bins, freq="1min").as_unit("ns")
    return reference_instants(
        bins,
        width=pd.Timedelta(minutes=1),
        latency=pd.Timedelta(minutes=latency_min),
        mode="realtime",
    )


def stream_counts(
    recs: pd.DataFrame, at: np.ndarray, *, window_min: float, tick_min: float
) -> LivePresence:
    """Feed `recs` tick by tick in the order given, closing instants as the clock passes."""
    prepared = prepare_records(recs, plan())  # for the dense device codes and cell rows
    order = prepared.by_time  # device order -> time order (ties as given)
    time_ns = prepared.time_ns[order]
    device = prepared.device[order]
    cell = prepared.cell[order]
    detach = prepared.detach[order]
    live = LivePresence(plan().n_cells, at, window=pd.Timedelta(minutes=window_min))
    tick = round(tick_min * MINUTE)
    end = int(at[-1]) + tick
    for t in range(int(T0.value), end + tick, tick):
        now = (time_ns >= t) & (time_ns < t + tick)
        live.add(time_ns[now], device[now], cell[now], detach[now])
        live.close_until(t + tick)
    return live


def test_known_answer_last_cell_window_and_detach() -> None:
    recs = operator_records(
        [0.2, 0.7, 1.5, 3.0, 3.5], [1, 1, 2, 2, 1], [1, 2, 3, 3, 4],
        ["attach", "service_request", "attach", "detach", "tau"],
    )  # fmt: skip
    at = instants(5, latency_min=1.0)  # the ends of minutes 0..4
    live = stream_counts(recs, at, window_min=2.0, tick_min=0.25)
    # at 1 min: device 1 on cell 2; at 2: device 1 (1.3 min old) and device 2 on cell 3;
    # at 3: device 1 out of the window (2.3 min), device 2's detach at 3.0 not yet before
    # the instant; at 4: device 2 detached, device 1 seen again on cell 4; at 5: still
    assert live.counts.tolist() == [
        [0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 1, 1],
    ]
    assert live.closed == 5 and live.records == 5


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    window=st.sampled_from([5.0, 30.0, 60.0]),
    latency=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    tick=st.sampled_from([1 / 12, 0.25, 1.0]),
)
def test_live_counts_equal_the_whole_day_presence(
    seed: int, window: float, latency: float, tick: float
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    procs = list(rng.choice(["service_request", "detach", "periodic_tau"], n, p=[0.7, 0.1, 0.2]))
    # whole and half minutes make ties and records on the instants themselves likely
    minutes = rng.integers(0, 240, n) / 2.0
    recs = operator_records(minutes, rng.integers(0, 40, n), rng.integers(1, 5, n), procs)
    recs = recs.sort_values("time", kind="stable").reset_index(drop=True)  # as written
    at = instants(120, latency)
    whole = presence_counts(prepare_records(recs, plan()), at, window=pd.Timedelta(minutes=window))
    live = stream_counts(recs, at, window_min=window, tick_min=tick)
    np.testing.assert_array_equal(live.counts, whole)


def test_an_instant_is_closed_only_when_the_clock_reaches_it() -> None:
    at = instants(3, latency_min=1.0)
    live = LivePresence(4, at, window=pd.Timedelta(minutes=60))
    live.add(np.array([T0.value + 30 * 10**9]), np.array([0]), np.array([2]))
    assert live.close_until(int(at[0]) - 1) == [] and live.next_instant() == at[0]
    assert live.close_until(int(at[1])) == [0, 1]
    assert live.counts[:, :2].tolist() == [[0, 0], [0, 0], [1, 1], [0, 0]]
    # a record at the instant itself is not before it: it counts from the next instant on
    live.add(np.array([int(at[2])]), np.array([1]), np.array([0]))
    live.close_until(int(at[2]))
    assert live.counts[:, 2].tolist() == [0, 0, 1, 0]
    assert live.next_instant() is None


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        LivePresence(2, np.array([5, 5]), window=pd.Timedelta(minutes=1))
    with pytest.raises(ValueError, match="must be > 0"):
        LivePresence(2, np.array([5, 6]), window=pd.Timedelta(0))


def config(**changes: object) -> SimpleNamespace:
    base = {
        "methods": ["presence", "voronoi"],
        "window_min": 60.0,
        "latency_min": 1.0,
        "privacy_threshold": 3,
        "laplace_epsilon": None,
        "published_system": "grid",
    }
    return SimpleNamespace(**(base | changes))


def grid_zones() -> dict[str, object]:
    import geopandas as gpd
    from shapely.geometry import box

    tiles = [box(x - 500.0, -500.0, x + 500.0, 500.0) for x in (0.0, 1000.0, 2000.0, 3000.0)]
    frame = gpd.GeoDataFrame({"zone": ["a", "b", "c", "d"]}, geometry=tiles, crs="EPSG:31370")
    frame.attrs["system"] = "grid"
    return {"grid": frame}


@pytest.mark.parametrize("epsilon", [None, 0.5])
def test_release_from_live_counts_equals_the_release_from_records(epsilon: float | None) -> None:
    rng = np.random.default_rng(11)
    n = 400
    recs = operator_records(rng.uniform(0, 90, n), rng.integers(0, 60, n), rng.integers(1, 5, n))
    recs = recs.sort_values("time", kind="stable").reset_index(drop=True)
    cfg = config(laplace_epsilon=epsilon)
    bins = pd.date_range(T0, periods=90, freq="1min")
    live = stream_counts(recs, instants(90, 1.0), window_min=60.0, tick_min=1 / 12)
    kwargs = {"random_state": np.random.default_rng(5), "timezone": "Europe/Brussels"}
    from_records = release_estimates(recs, plan(), grid_zones(), bins, cfg, **kwargs)
    kwargs["random_state"] = np.random.default_rng(5)
    from_counts = release_from_counts(live.counts, plan(), grid_zones(), bins, cfg, **kwargs)
    pd.testing.assert_frame_equal(from_counts.internal, from_records.internal)
    pd.testing.assert_frame_equal(from_counts.published, from_records.published)
    assert from_counts.privacy == from_records.privacy


def test_a_method_that_reads_records_cannot_be_released_from_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DeviceModel(VoronoiEstimator):
        method = "device_model"

    monkeypatch.setitem(ESTIMATORS, "device_model", DeviceModel)
    cfg = config(methods=["voronoi", "device_model"])
    assert counts_suffice(config()) and not counts_suffice(cfg)
    bins = pd.date_range(T0, periods=2, freq="1min")
    with pytest.raises(EstimateInputError, match="device_model read the records"):
        release_from_counts(np.zeros((4, 2)), plan(), grid_zones(), bins, cfg)
