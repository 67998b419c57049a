"""The mobile network: coverage, devices and signalling on tiny worlds with known answers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.network.devices import assign_devices
from sim.network.plan import (
    CELL_COLUMNS,
    NetworkPlan,
    SiteDataError,
    generate_cells,
    read_cells_csv,
)
from sim.network.propagation import path_loss_uma, sector_gain_db
from sim.network.radio import build_radio
from sim.network.records import PROCEDURES, validate_records
from sim.network.signalling import Signalling, SignallingConfig

START = pd.Timestamp("2019-07-07 11:00", tz="Europe/Brussels").tz_convert("UTC")
QUIET = SignallingConfig(data_per_h=(0, 0, 0), paging_per_h=(0, 0, 0), call_per_h=0, sms_per_h=0)
EXTENT = (0.0, 0.0, 2000.0, 400.0)


def line_plan(tracking_areas: tuple[int, ...] = (1, 1)) -> NetworkPlan:
    """Omni cells on a line, 1 km apart, at y = 200 m."""
    n = len(tracking_areas)
    cells = pd.DataFrame({
        "cell_id": np.arange(n) + 101, "site_id": np.arange(n),
        "x": 500.0 + 1000.0 * np.arange(n), "y": 200.0, "height_m": 25.0,
        "azimuth_deg": np.nan, "power_dbm": 43.0, "band_mhz": 1800.0,
        "tracking_area": list(tracking_areas), "temporary": False,
    }).astype(CELL_COLUMNS)  # fmt: skip
    return NetworkPlan("op", cells, 1.0, 1.0, ("2019-07-07T09:00Z", "2019-07-07T16:00Z"))


DEFAULT = SignallingConfig()


def simulate(plan, xs, *, config=DEFAULT, ys=None, seed=0, dt=5.0, active=None):
    """Run phones along positions xs[tick, person] (one device each); return raw records."""
    ticks, n = xs.shape
    ys = np.full_like(xs, 200.0) if ys is None else ys
    radio = build_radio(plan, EXTENT, rng=np.random.default_rng(seed), shadowing_db=0.0)
    sig = Signalling(
        np.arange(n), np.full(n, 2), np.zeros(n, bool), plan=plan, radio=radio,
        rng=np.random.default_rng(seed), start=START, dt_s=dt, config=config,
    )  # fmt: skip
    for k in range(ticks):
        present = np.ones(n, bool) if active is None else active[k]
        sig.step(k * dt, xs[k], ys[k], present)
    sig.finish()
    return sig, sig.raw_records()


def names(raw) -> list[str]:
    return [PROCEDURES[p] for p in raw["procedure"]]


def test_path_loss_and_antenna_are_the_published_formulas() -> None:
    # TR 38.901 UMa LOS below the breakpoint: 28 + 22 log10(d3d) + 20 log10(fc)
    d3d = np.hypot(100.0, 23.5)
    assert path_loss_uma(100.0, fc_ghz=2.0, los="los") == pytest.approx(
        28 + 22 * np.log10(d3d) + 20 * np.log10(2.0)
    )
    assert (path_loss_uma([50, 500], fc_ghz=2.0, los="nlos") >= path_loss_uma(
        [50, 500], fc_ghz=2.0, los="los")).all()  # fmt: skip
    assert np.diff(path_loss_uma(np.linspace(20, 5000, 50), fc_ghz=1.8)).min() > 0
    gain = sector_gain_db([0, 65 / 2, 180], 0.0, max_gain_dbi=0.0)
    np.testing.assert_allclose(gain, [0.0, -3.0, -30.0])  # 3 dB at half the beamwidth


def test_standing_phone_sends_only_periodic_tau() -> None:
    xs = np.full((2 * 720, 1), 500.0)  # two hours at 5 s, in the middle of cell 0
    _, raw = simulate(line_plan(), xs, config=QUIET)
    assert set(names(raw)) == {"periodic_tau"}
    assert len(raw["t_s"]) in (2, 3)  # every 54 min from a random phase
    gaps = np.diff(raw["t_s"])
    assert np.allclose(gaps, 54 * 60, atol=5.0)


def test_standing_phone_with_traffic_has_no_mobility_record() -> None:
    xs = np.full((720, 20), 500.0)
    _, raw = simulate(line_plan(), xs)
    seen = set(names(raw))
    assert seen and seen <= {"periodic_tau", "service_request", "paging_response", "call", "sms"}


def test_idle_walk_across_cells_in_one_tracking_area_is_invisible() -> None:
    xs = np.linspace(300, 1700, 300)[:, None]  # walks from cell 101 to cell 102
    sig, raw = simulate(line_plan((7, 7)), xs, config=replace(QUIET, t3412_s=1e9))
    assert len(raw["t_s"]) == 0
    assert sig.cell[0] == 1  # it did reselect, silently


def test_crossing_a_tracking_area_border_gives_exactly_one_tau() -> None:
    xs = np.linspace(300, 1700, 300)[:, None]
    _, raw = simulate(line_plan((1, 2)), xs, config=replace(QUIET, t3412_s=1e9))
    assert names(raw) == ["tau"]
    assert raw["cell"][0] == 1


def test_handover_only_when_connected_and_no_ping_pong() -> None:
    ticks = 400
    wobble = 1000.0 + 40.0 * np.sin(np.arange(ticks) / 2.0)  # back and forth on the border
    xs = np.column_stack([wobble, wobble])
    busy = replace(QUIET, data_per_h=(0, 0, 3600.0 * 10), session_mean_s=1e6)
    _, raw = simulate(line_plan(), xs, config=busy)
    handovers = np.array(names(raw)) == "handover"
    assert handovers.sum() <= 2 * 2  # at most one crossing of the hysteresis band each way
    idle_raw = simulate(line_plan(), xs, config=QUIET)[1]
    assert "handover" not in names(idle_raw)
    # a walk clearly across the border while connected hands over exactly once
    xs = np.linspace(300, 1700, 300)[:, None]
    _, raw = simulate(line_plan(), xs, config=busy)
    assert names(raw).count("handover") == 1


def test_rrc_capacity_rejects_past_the_limit_and_only_then() -> None:
    crowd = np.full((60, 300), 500.0)  # 300 phones in one cell, everyone wants to connect
    eager = replace(QUIET, data_per_h=(0, 0, 3600.0 * 10), session_mean_s=1e6)
    sig, raw = simulate(line_plan(), crowd, config=replace(eager, rrc_capacity=100))
    outcomes = raw["outcome"][np.array(names(raw)) == "service_request"]
    assert (outcomes == 1).sum() > 0  # rejected
    assert (outcomes == 0).sum() == 100  # exactly the capacity got through
    load = sig.cell_load()
    assert load["connected_users"].max() == 100 and load["rejections"].sum() > 0
    _, raw = simulate(line_plan(), crowd, config=replace(eager, rrc_capacity=400))
    assert (raw["outcome"] == 1).sum() == 0


def test_mme_storm_queues_and_drops_only_past_capacity() -> None:
    crowd = np.full((60, 2000), 500.0)
    busy = SignallingConfig(data_per_h=(0, 0, 600.0), rrc_capacity=10_000)
    slow = replace(busy, mme_workers=1, mme_message_s=0.02)
    _, raw = simulate(line_plan(), crowd, config=slow)
    assert (raw["outcome"] == 2).sum() > 0 and raw["delay_s"].max() > slow.mme_timeout_s
    _, raw = simulate(line_plan(), crowd, config=busy)
    assert (raw["outcome"] == 2).sum() == 0 and raw["delay_s"].max() < 0.5


def test_records_are_operator_visible_only_and_reproducible() -> None:
    xs = np.full((300, 50), 500.0) + np.arange(50) * 20.0
    sig, _ = simulate(line_plan((1, 2)), xs, seed=3)
    records = sig.records(salt=np.random.default_rng(9))
    validate_records(records)  # exactly the record columns
    assert list(records.columns) == ["time", "device", "cell_id", "procedure", "outcome"]
    assert not set(records["device"].tolist()) & set(range(50))  # pseudonyms, not owners
    assert set(records["cell_id"]) <= {101, 102}
    again, _ = simulate(line_plan((1, 2)), xs, seed=3)
    pd.testing.assert_frame_equal(records, again.records(salt=np.random.default_rng(9)))
    other, _ = simulate(line_plan((1, 2)), xs, seed=4)
    assert not records.equals(other.records(salt=np.random.default_rng(9)))


def test_pseudonyms_rotate_daily() -> None:
    xs = np.full((4, 1), 500.0)
    sig, _ = simulate(line_plan(), xs, config=replace(QUIET, data_per_h=(0, 0, 1e6)), dt=3600.0 * 8)
    rec = sig.records(salt=np.random.default_rng(1))
    local_day = rec["time"].dt.tz_convert("Europe/Brussels").dt.date
    ids_per_day = rec.groupby(local_day)["device"].nunique()
    assert len(ids_per_day) >= 2 and (ids_per_day == 1).all()
    assert rec["device"].nunique() == len(ids_per_day)


def test_records_in_chunks_are_the_records_with_one_pseudonym_per_device_and_day() -> None:
    from sim.network.pseudonyms import draw_secret, pseudonymise

    xs = np.full((40, 30), 500.0) + np.arange(30) * 40.0
    busy = replace(QUIET, data_per_h=(0, 0, 20.0), sms_per_h=5.0)
    sig, raw = simulate(line_plan((1, 2)), xs, config=busy, dt=1800.0)  # 20 h: two days
    whole = sig.records(salt=np.random.default_rng(5))
    chunks = list(sig.iter_records(salt=np.random.default_rng(5), rows=7))
    assert len(chunks) == -(-len(whole) // 7) and max(map(len, chunks)) == 7
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    # the ids are the keyed hash of (local day, device), record by record
    times = START + pd.to_timedelta(raw["t_s"], unit="s")
    expected = pseudonymise(
        raw["device"], times, secret=draw_secret(np.random.default_rng(5)),
        timezone="Europe/Brussels",
    )  # fmt: skip
    np.testing.assert_array_equal(whole["device"].to_numpy(), expected)
    days = whole["time"].dt.tz_convert("Europe/Brussels").dt.date
    assert days.nunique() == 2


def test_devices_follow_ownership_and_shares() -> None:
    rng = np.random.default_rng(0)
    dev = assign_devices(200_000, rng=rng, market_shares={"proximus": 0.4, "orange": 0.28,
                                                         "base": 0.32})  # fmt: skip
    assert len(dev) / 200_000 == pytest.approx(0.9 * 1.1, rel=0.01)
    assert len(dev.of("proximus")) / len(dev) == pytest.approx(0.4, abs=0.01)
    part = assign_devices(10_000, rng=rng, market_shares={"proximus": 0.5})
    assert len(part) / 10_000 == pytest.approx(0.99 * 0.5, abs=0.03)  # the rest unseen


def test_generated_sites_thin_out_and_cover(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cells = generate_cells((0, 0, 10_000, 10_000), rng=rng, centre=(5000, 5000))
    sites = cells.drop_duplicates("site_id")
    r = np.hypot(sites["x"] - 5000, sites["y"] - 5000)
    assert (r < 1500).sum() / (np.pi * 1.5**2) > (r > 3500).sum() / (100 - np.pi * 3.5**2)
    plan = NetworkPlan("op", cells, 0.4, 1.0, ("a", "b"))
    radio = build_radio(plan, (0, 0, 10_000, 10_000), rng=rng, pixel_m=50.0)
    assert radio.covered_share == 1.0
    assert (np.diff(radio.power_dbm, axis=1) <= 0).all()  # strongest first
    plan.to_json(tmp_path / "plan.json")
    back = NetworkPlan.from_json(tmp_path / "plan.json")
    pd.testing.assert_frame_equal(back.cells, plan.cells)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("cell_id,x,operator,height_m,azimuth_deg,band_mhz,power_dbm\n", "missing column"),
        ("cell_id,x,y,operator,height_m,azimuth_deg,band_mhz,power_dbm\n"
         "1,100,100,p,25,0,1800,-3\n", "row 1, column power_dbm"),
        ("cell_id,x,y,operator,height_m,azimuth_deg,band_mhz,power_dbm\n"
         "1,100,100,p,25,0,1800,43\n1,200,100,p,25,0,1800,43\n", "row 2, column cell_id"),
        ("cell_id,x,y,operator,height_m,azimuth_deg,band_mhz,power_dbm\n"
         "1,100,100,p,25,0,1800,43\n2,900000,100,p,25,0,1800,43\n", "row 2, column x/y"),
        ("cell_id,x,y,operator,height_m,azimuth_deg,band_mhz,power_dbm\n"
         "1,100,abc,p,25,0,1800,43\n", "row 1, column y"),
    ],
)  # fmt: skip
def test_bad_cell_files_name_row_and_column(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "cells.csv"
    path.write_text(text)
    with pytest.raises(SiteDataError, match=words):
        read_cells_csv(path, extent=(0, 0, 1000, 1000))


def test_good_cell_file_with_lonlat(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    path.write_text(
        "cell_id,lon,lat,operator,height_m,azimuth_deg,band_mhz,power_dbm\n"
        "11,4.36,50.84,proximus,30,0,1800,43\n12,4.36,50.84,proximus,30,120,1800,43\n"
        "21,4.37,50.85,orange,30,,800,40\n"
    )
    cells = read_cells_csv(path, operator="proximus")
    assert list(cells["cell_id"]) == [11, 12] and cells["site_id"].nunique() == 1
    assert 140_000 < cells["x"].iloc[0] < 160_000


def test_race_burst_follows_the_timetable() -> None:
    from sim.network.simulate import race_burst
    from sim.scenario import EventConfig

    event = EventConfig.model_validate({
        "name": "e", "date": "2019-07-07", "start": "11:00", "end": "18:00",
        "race": {"caravan": "13:00", "first_start": "14:30", "teams": 22, "interval_min": 5,
                 "ride_min": 29},
    })  # fmt: skip
    weight = race_burst(event)
    hours = lambda h: (h - 11.0) * 3600.0  # noqa: E731
    assert weight(hours(11.0)) == 0.0
    assert weight(hours(12.75)) == pytest.approx(0.5)  # halfway up the ramp to the caravan
    assert weight(hours(15.0)) == 1.0
    last_finish = 16.25 + 29 / 60
    assert weight(hours(last_finish + 0.25)) == pytest.approx(0.5)
    assert weight(hours(17.9)) == 0.0


def test_network_stage_writes_operator_outputs(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sim.network.simulate import build_network, write_network_outputs
    from sim.scenario import EventConfig, NetworkConfig

    event = EventConfig(name="e", date="2019-07-07", start="12:00", end="12:30")
    rng = np.random.default_rng(5)
    n = 3000
    spectator = rng.random(n) < 0.5
    run = build_network(NetworkConfig(), (0, 0, 3000, 3000), event=event, n_people=n,
                        spectator=spectator, rng=rng, dt_s=5.0)  # fmt: skip
    x, y = rng.uniform(0, 3000, n), rng.uniform(0, 3000, n)
    present = rng.random(n) < 0.8
    ticks = run.observe(
        SimpleNamespace(t_s=(k + 1) * 5.0, x=x + k, y=y, present=present, spectator=spectator)
        for k in range(360)
    )
    assert ticks == 360
    summary = run.summary()
    assert summary["procedures"] > 0 and summary["devices_simulated"] < summary[
        "devices_all_operators"]  # fmt: skip
    written = {p.name for p in write_network_outputs(run, tmp_path, salt=rng)}
    assert {"records.parquet", "cell_load.parquet", "network_plan.json", "cells.gpkg",
            "coverage_best_server.png", "coverage_cells.png"} <= written  # fmt: skip
    records = validate_records(pd.read_parquet(tmp_path / "records.parquet"))
    assert records["time"].min() >= pd.Timestamp(event.start_datetime)
    load = pd.read_parquet(tmp_path / "cell_load.parquet")
    assert len(load) == 30 * run.plan.n_cells and (load["connected_users"] >= 0).all()
    # nobody absent is ever seen: every record belongs to a phone of a present person
    raw = run.signalling.raw_records()
    assert len(records) == summary["procedures"] == len(raw["device"])
    assert present[run.signalling.owner[raw["device"]]].all()


def test_a_temporary_event_cell_takes_load_off_a_full_cell() -> None:
    from sim.network.plan import add_event_cells

    crowd = np.tile(np.linspace(400.0, 800.0, 300), (60, 1))  # 300 eager phones by cell 101
    eager = replace(QUIET, data_per_h=(0, 0, 3600.0 * 10), session_mean_s=1e6, rrc_capacity=100)
    plain = line_plan()
    _, before = simulate(plain, crowd, config=eager)
    cells = add_event_cells(plain.cells, [700.0], [230.0], azimuths_deg=(np.nan,), power_dbm=46)
    assert cells["temporary"].sum() == 1 and cells["cell_id"].is_unique
    assert cells["tracking_area"].iloc[-1] == plain.cells["tracking_area"].iloc[0]
    boosted = replace(plain, cells=cells)
    _, after = simulate(boosted, crowd, ys=np.full_like(crowd, 200.0), config=eager)
    assert (after["outcome"] == 1).sum() < (before["outcome"] == 1).sum()


def test_cell_load_counts_messages_by_procedure() -> None:
    xs = np.full((120, 30), 500.0) + np.arange(30) * 40.0
    sig, raw = simulate(line_plan((1, 2)), xs)
    load = sig.cell_load()
    by_proc = load[[c for c in load.columns if c.startswith("messages_")]].sum(axis=1)
    np.testing.assert_array_equal(by_proc.to_numpy(), load["messages"].to_numpy())
    assert load["messages"].sum() == sig.msgs[raw["procedure"][raw["outcome"] != 1]].sum()


def test_cell_load_minute_by_minute_while_running_equals_the_final_table() -> None:
    # a storm: the MME lags behind, so a minute's counters are final only once it caught up
    crowd = np.full((36, 1500), 500.0) + np.arange(1500) % 3 * 600.0
    storm = SignallingConfig(
        data_per_h=(0, 0, 900.0), session_mean_s=0.1, inactivity_s=0.1,
        rrc_capacity=10_000, mme_workers=1, mme_message_s=0.004,
    )  # fmt: skip
    radio = build_radio(line_plan(), EXTENT, rng=np.random.default_rng(1), shadowing_db=0.0)
    sig = Signalling(
        np.arange(1500), np.full(1500, 2), np.zeros(1500, bool), plan=line_plan(),
        radio=radio, rng=np.random.default_rng(1), start=START, dt_s=5.0, config=storm,
    )  # fmt: skip
    seen, waited = [], 0
    for k in range(36):  # three minutes
        sig.step(k * 5.0, crowd[k], np.full(1500, 200.0), np.ones(1500, bool))
        if (k + 1) % 12 == 0:
            if not sig.settled(len(seen) * 60.0 + 60.0):
                waited += 1
                with pytest.raises(RuntimeError, match="not all simulated and settled"):
                    sig.cell_load(range(len(seen), len(seen) + 1))
            while len(seen) < 3 and sig.settled(len(seen) * 60.0 + 60.0):
                seen.append(sig.cell_load(range(len(seen), len(seen) + 1)))
    assert not sig.settled(181.0)  # a time not simulated yet
    sig.finish()
    while len(seen) < 3:
        seen.append(sig.cell_load(range(len(seen), len(seen) + 1)))
    assert waited > 0  # the storm did hold some minute back
    final = sig.cell_load()
    pd.testing.assert_frame_equal(pd.concat(seen, ignore_index=True), final)
    assert final["queue_delay_ms"].max() > 0
