"""The dashboard without a browser: alerts (known answers), the data model, the page's logic,
the live feed (replayed frames) and the commands' bad input.

The browser itself is driven in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.dashboard.alerts import (
    AlertScore,
    density_thresholds,
    episodes,
    score_alerts,
    score_zone_alerts,
)
from sim.dashboard.data import SCREEN_CACHE, RunData, area_outlines, tile_outlines
from sim.errors import RunFolderError
from tests.conftest import SCENARIOS

runner = CliRunner()


# ----------------------------------------------------------------------------- alerts


def test_episodes_are_the_runs_at_or_above_the_threshold() -> None:
    series = np.array([0, 5, 5, 1, np.nan, 7, 9, 0, 5])
    starts, ends = episodes(series, 5)
    assert starts.tolist() == [1, 5, 8]
    assert ends.tolist() == [3, 7, 9]  # exclusive; NaN is below


def test_alerts_known_answer() -> None:
    """Hand-made series, threshold 10, on time within 2 bins.

    truth episodes: [2, 5), [10, 12), [16, 18)
    estimate episodes: [3, 6) (1 bin after the first: on time), [14, 15) (during no
    truth episode nor within 2 bins after one: false), [20, 22) (after the third ended
    but 2 bins later: its window [16, 20) does not reach 20: false); the second truth
    episode is missed; the third is missed too.
    """
    truth = np.zeros(24)
    truth[2:5] = 12
    truth[10:12] = 15
    truth[16:18] = 11
    estimate = np.zeros(24)
    estimate[3:6] = 10
    estimate[14] = 30
    estimate[20:22] = 13
    score = score_alerts(estimate, truth, 10, tolerance=2)
    assert (score.on_time, score.late, score.missed, score.false) == (1, 0, 2, 2)
    assert score.delays.tolist() == [1]
    assert score.truth_onsets.tolist() == [2, 10, 16]
    assert score.estimate_onsets.tolist() == [3, 14, 20]
    assert score.truth_alerts == 3


def test_a_late_alert_and_one_already_on() -> None:
    truth = np.array([0, 0, 20, 20, 20, 20, 0, 0, 0, 20, 20, 0], dtype=float)
    # late: 3 bins after the truth crossed at 2; already on at 8 for the crossing at 9
    estimate = np.array([0, 0, 0, 0, 0, 25, 25, 0, 30, 30, 30, 30], dtype=float)
    score = score_alerts(estimate, truth, 20, tolerance=1)
    assert (score.on_time, score.late, score.missed, score.false) == (1, 1, 0, 0)
    assert score.delays.tolist() == [3, 0]
    # with a tolerance of 3 bins the first one is on time as well
    assert score_alerts(estimate, truth, 20, tolerance=3).late == 0


def test_a_suppressed_estimate_raises_no_alert() -> None:
    truth = np.array([0, 50, 50, 0], dtype=float)
    estimate = np.array([0, np.nan, np.nan, 0])
    score = score_alerts(estimate, truth, 30)
    assert (score.missed, score.false, score.on_time) == (1, 0, 0)


def test_zone_alerts_add_up_per_zone() -> None:
    truth = np.array([[0, 40, 40, 0], [0, 0, 0, 0], [5, 5, 5, 5]], dtype=float)
    estimate = np.array([[0, 0, 45, 0], [0, 35, 0, 0], [5, 5, 5, 5]], dtype=float)
    thresholds = density_thresholds(np.array([1000.0, 1000.0, 1000.0]), 0.03)  # 30 people
    total, per_zone = score_zone_alerts(estimate, truth, thresholds, tolerance=0)
    assert set(per_zone) == {0, 1}  # zone 2 never reaches 30
    assert (per_zone[0].late, per_zone[1].false) == (1, 1)
    assert (total.on_time, total.late, total.missed, total.false) == (0, 1, 0, 1)
    assert isinstance(total + AlertScore(missed=2), AlertScore)
    assert (total + AlertScore(missed=2)).missed == 2


def test_alerts_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="same bins"):
        score_alerts(np.zeros(3), np.zeros(4), 1)
    with pytest.raises(ValueError, match="tolerance"):
        score_alerts(np.zeros(3), np.zeros(3), 1, tolerance=-1)
    with pytest.raises(ValueError, match="density"):
        density_thresholds(np.ones(2), 0.0)


# ----------------------------------------------------------------------------- data model


@pytest.fixture(scope="module")
def smoke_data(smoke_run: Path) -> RunData:
    data = RunData.from_run(smoke_run)
    assert data.wait_extras(timeout=120)
    return data


def _bin_of_end(data: RunData, times: pd.Series) -> np.ndarray:
    return data.bin_index(times, end=True)


def test_the_arrays_hold_the_run_tables(smoke_run: Path, smoke_data: RunData) -> None:
    """Every published grid value and every truth count lands in its zone and bin."""
    data = smoke_data
    grid = data.systems["grid"]
    published = pd.read_parquet(smoke_run / "estimates.parquet")
    assert set(data.methods) == set(published["method"].astype(str))
    for method in data.methods:
        rows = published[published["method"].astype(str) == method]
        r = grid.rows_of(rows["zone"].astype(str))
        c = data.bin_index(rows["bin"])
        assert (r >= 0).all() and (c >= 0).all()
        got = grid.matrix(method)[r, c]
        np.testing.assert_array_equal(got, rows["estimate"].to_numpy(np.float32))
        np.testing.assert_array_equal(
            grid.matrix(method, "suppressed")[r, c], rows["suppressed"].to_numpy(bool)
        )
        assert np.isnan(got[rows["suppressed"].to_numpy(bool)]).all()
    truth = pd.read_parquet(smoke_run / "truth_zones.parquet")
    on_grid = truth[truth["system"].astype(str) == "grid"]
    r = grid.rows_of(on_grid["zone"].astype(str))
    c = _bin_of_end(data, on_grid["time"])
    np.testing.assert_array_equal(grid.truth_matrix()[r, c], on_grid["people"].to_numpy())
    # zone-bins the truth does not list had nobody
    assert grid.truth_matrix().sum() == on_grid["people"].sum()
    # the first bin starts at the event's start, in UTC
    assert data.bins[0] == pd.Timestamp("2019-07-07 12:00", tz="UTC")
    assert data.clock(0) == "14:00" and len(data.bins) == data.n_filled == 60


def test_internal_systems_apply_suppression(smoke_run: Path, smoke_data: RunData) -> None:
    internal = pd.read_parquet(smoke_run / "estimates_internal.parquet")
    area = smoke_data.systems["area"]
    rows = internal[internal["zone_system"].astype(str) == "area"]
    r = area.rows_of(rows["zone"].astype(str))
    c = smoke_data.bin_index(rows["bin"])
    for method in area.methods:
        sel = (rows["method"].astype(str) == method).to_numpy()
        value = area.matrix(method)[r[sel], c[sel]]
        hidden = rows["suppressed"].to_numpy(bool)[sel]
        assert np.isnan(value[hidden]).all()
        np.testing.assert_array_equal(
            value[~hidden], rows["estimate"].to_numpy(np.float32)[sel][~hidden]
        )


def test_tile_outlines_decode_the_zones_file(smoke_run: Path, smoke_data: RunData) -> None:
    import geopandas as gpd

    grid = gpd.read_file(smoke_run / "zones.gpkg", layer="grid")
    ids = grid["zone"].astype(str).tolist()[:50]
    rings = tile_outlines(ids, smoke_data.scenario.zones.grid_m)
    for ring, geom in zip(rings, grid.geometry[:50], strict=True):
        assert np.allclose(sorted(map(tuple, ring[:4])), sorted(geom.exterior.coords[:4]))
    with pytest.raises(ValueError, match="not a grid tile id"):
        tile_outlines(["km0-0.5"], 100.0)
    # the zones' areas (alert densities are people per m² of them)
    tiles = smoke_data.systems["grid"]
    np.testing.assert_allclose(tiles.area_m2[: tiles.n], 100.0 * 100.0)
    segments = gpd.read_file(smoke_run / "zones.gpkg", layer="segment")
    mine = smoke_data.systems["segment"]
    np.testing.assert_allclose(
        mine.area_m2[mine.rows_of(segments["zone"].astype(str))], segments.area, rtol=1e-9
    )


def test_area_outlines_match_the_run_areas(smoke_run: Path, smoke_data: RunData) -> None:
    import geopandas as gpd
    import shapely

    areas = gpd.read_file(smoke_run / "zones.gpkg", layer="area")
    drawn = area_outlines(smoke_data.scenario)
    for name, geom in zip(areas["zone"], areas.geometry, strict=True):
        mine = shapely.Polygon(drawn[name])
        assert mine.symmetric_difference(geom).area < 0.01 * geom.area


def test_sites_and_levels_of_service(smoke_run: Path, smoke_data: RunData) -> None:
    plan = json.loads((smoke_run / "network_plan.json").read_text())
    load = pd.read_parquet(smoke_run / "cell_load.parquet")
    sites = smoke_data.sites
    assert len(sites.site_ids) == len({c["site_id"] for c in plan["cells"]})
    t = 30
    minute = smoke_data.bins[t]
    at = load[load["minute"] == minute]
    connected, rejected = sites.at(t)
    assert connected.sum() == at["connected_users"].sum()
    assert rejected.sum() == at["rejections"].sum()
    edges = pd.read_parquet(smoke_run / "truth_edges.parquet")
    los = smoke_data.los
    assert los is not None
    got_edges, levels, _ = los.at(t)
    end = smoke_data.bins[t] + pd.Timedelta(minutes=1)
    expected = edges[pd.to_datetime(edges["time"], utc=True) == end]
    assert sorted(got_edges.tolist()) == sorted(expected["edge"].tolist())
    assert set(levels.tolist()) <= set(range(6))
    # the streets layer of course.gpkg draws every edge the levels name
    assert smoke_data.streets is not None
    assert got_edges.max() < len(smoke_data.streets.x0)


def test_open_refuses_folders_it_cannot_show(smoke_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="no such run folder"):
        RunData.from_run(tmp_path / "nowhere")
    broken = shutil.copytree(smoke_run, tmp_path / "broken")
    (broken / "cell_load.parquet").unlink()
    with pytest.raises(RunFolderError, match=r"cell_load\.parquet"):
        RunData.from_run(broken)


def _same_grid(a: RunData, b: RunData) -> None:
    ga, gb = a.systems["grid"], b.systems["grid"]
    assert ga.ids == gb.ids and ga.methods == gb.methods
    np.testing.assert_array_equal(ga.truth_matrix(), gb.truth_matrix())
    for method in ga.methods:
        for what in ("estimate", "lower", "upper", "suppressed"):
            np.testing.assert_array_equal(ga.matrix(method, what), gb.matrix(method, what))
    np.testing.assert_array_equal(a.sites.cell_ids, b.sites.cell_ids)
    np.testing.assert_array_equal(a.sites.connected, b.sites.connected)
    np.testing.assert_array_equal(a.sites.rejections, b.sites.rejections)


def test_the_screen_cache_holds_what_the_tables_say(
    smoke_run: Path, smoke_data: RunData, tmp_path: Path
) -> None:
    """The run leaves the screen's arrays; opening from them equals opening from the tables."""
    assert (smoke_run / SCREEN_CACHE).is_file()  # the run's report stage wrote it
    assert "screen_s" in smoke_data.timings and "estimates_s" not in smoke_data.timings
    copy = shutil.copytree(smoke_run, tmp_path / "copy")
    (copy / SCREEN_CACHE).unlink()
    fresh = RunData.from_run(copy, extras=False)  # from the tables, and leaves the cache
    assert "estimates_s" in fresh.timings and (copy / SCREEN_CACHE).is_file()
    _same_grid(fresh, smoke_data)
    again = RunData.from_run(copy, extras=False)
    assert "screen_s" in again.timings
    _same_grid(again, smoke_data)


def test_a_stale_or_damaged_screen_cache_is_not_trusted(
    smoke_run: Path, smoke_data: RunData, tmp_path: Path
) -> None:
    copy = shutil.copytree(smoke_run, tmp_path / "copy")
    cache = copy / SCREEN_CACHE
    whole = cache.read_bytes()
    cache.write_bytes(whole[: len(whole) // 2])  # cut short, as by a full disk
    damaged = RunData.from_run(copy, extras=False)
    assert "estimates_s" in damaged.timings
    _same_grid(damaged, smoke_data)
    # another run's cache (its tables differ, so does its key): the tables are read
    with np.load(cache) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["key"] = np.asarray("0" * 64)
    arrays["truth"] = arrays["truth"] + 1.0
    with cache.open("wb") as handle:
        np.savez(handle, **arrays)
    stale = RunData.from_run(copy, extras=False)
    assert "estimates_s" in stale.timings
    _same_grid(stale, smoke_data)


def test_a_mixed_folder_is_refused_with_a_screen_cache_too(smoke_run: Path, tmp_path: Path) -> None:
    """The map's files are checked at opening, the others when the background reads them."""
    copy = shutil.copytree(smoke_run, tmp_path / "copy")
    published = pd.read_parquet(copy / "estimates.parquet")
    published.iloc[:-1].to_parquet(copy / "estimates.parquet")  # another table, same name
    with pytest.raises(RunFolderError, match=r"estimates\.parquet: changed"):
        RunData.from_run(copy)
    copy = shutil.copytree(smoke_run, tmp_path / "copy2")
    with (copy / "truth_edges.parquet").open("ab") as handle:
        handle.write(b"damage")
    data = RunData.from_run(copy)  # the map opens: truth_edges is not one of its files
    with pytest.raises(RunFolderError, match=r"truth_edges\.parquet: changed"):
        data.wait_extras(timeout=120)


# ----------------------------------------------------------------------------- the live path


def frames_of(run: Path, data: RunData) -> list[Any]:
    """The frames a streaming run would hand out, rebuilt from a finished run's files."""
    published = pd.read_parquet(run / "estimates.parquet")
    truth = pd.read_parquet(run / "truth_zones.parquet")
    truth = truth.assign(bin=pd.to_datetime(truth["time"], utc=True) - pd.Timedelta(minutes=1))
    load = pd.read_parquet(run / "cell_load.parquet")
    frames = []
    for k, b in enumerate(data.bins):
        tb = truth[truth["bin"] == b]
        frames.append(
            types.SimpleNamespace(
                bin=b,
                estimates=published[published["bin"] == b],
                truth=pd.DataFrame(
                    {
                        "zone_system": tb["system"].astype(str).to_numpy(),
                        "zone": tb["zone"].astype(str).to_numpy(),
                        "people": tb["people"].to_numpy(),
                        "spectators": tb["spectators"].to_numpy(),
                    }
                ),
                cell_load=load[load["minute"] == b],
                progress=types.SimpleNamespace(describe=lambda k=k: f"bin {k}"),
            )
        )
    return frames


def test_a_live_run_fills_the_same_arrays(smoke_run: Path, smoke_data: RunData) -> None:
    """Frames appended one by one give the finished run's tiles, truth and cell load."""
    from sim.dashboard.app import Dashboard
    from sim.dashboard.serve import LiveFeed

    live = RunData.for_scenario(smoke_data.scenario)
    assert live.live and live.n_filled == 0 and live.systems["grid"].n == 0
    frames = frames_of(smoke_run, smoke_data)
    seen: dict[str, Any] = {}

    def replay(on_minute: Any) -> None:
        # a session opened before the first minute: no tile to draw yet
        seen["early"] = Dashboard([live], live=feed)
        seen["no tiles"] = seen["early"].maps[0].zones["grid"].tiles is None
        for k, frame in enumerate(frames):
            on_minute(frame)
            if k == 9:  # a session opens in the middle of the run, and follows it
                page = Dashboard([live], live=feed)
                page.poll()
                seen["at 10"] = (
                    page.time.value,
                    page.time.end,
                    "bin 10 of 60" in page.clock.object,
                )
                seen["page"] = page
        seen["page"].poll()
        seen["early"].poll()
        seen["at 60"] = (seen["page"].time.value, seen["page"].time.end)

    feed = LiveFeed(live, smoke_run, replay)
    feed._run()  # in this thread: the same code the background thread runs
    assert seen["at 10"] == (9, 9, True)
    assert seen["at 60"] == (59, 59)
    assert seen["no tiles"]
    assert feed.state == "finished", feed.error
    assert feed.final is not None and not feed.final.live
    assert live.n_filled == 60 and feed.frames == 60
    assert live.course is not None and live.sites.site_ids is not None  # read from the folder
    grid, full = live.systems["grid"], smoke_data.systems["grid"]
    rows = full.rows_of(grid.ids)
    assert (rows >= 0).all()
    for method in full.methods:
        np.testing.assert_array_equal(grid.matrix(method), full.matrix(method)[rows])
    np.testing.assert_array_equal(grid.truth_matrix(), full.truth_matrix()[rows])
    # both pages draw every tile the run named, with the estimate at the last minute
    for page in (seen["page"], seen["early"]):
        assert page.maps[0].zones["grid"].n == grid.n
        values, _ = drawn_tiles(page)
        expected = grid.matrix(page.method.value)[:, 59]
        np.testing.assert_array_equal(values, expected.astype(np.float32))
    # tiles nobody ever entered and no estimate named are not drawn live, and had nothing
    unseen = np.setdiff1d(np.arange(full.n), rows)
    assert full.truth_matrix()[unseen].sum() == 0
    area = live.systems["area"]
    np.testing.assert_array_equal(
        area.truth_matrix(),
        smoke_data.systems["area"].truth_matrix()[area.rows_of(smoke_data.systems["area"].ids)],
    )
    np.testing.assert_array_equal(live.sites.at(30)[0], smoke_data.sites.at(30)[0])


def test_a_frame_outside_the_period_is_refused(smoke_data: RunData) -> None:
    live = RunData.for_scenario(smoke_data.scenario)
    frame = types.SimpleNamespace(
        bin=pd.Timestamp("2020-01-01", tz="UTC"),
        estimates=pd.DataFrame(),
        truth=pd.DataFrame(),
        cell_load=pd.DataFrame(),
        progress=None,
    )
    with pytest.raises(ValueError, match="outside the run's period"):
        live.append_frame(frame)


def test_a_failing_live_run_says_why(smoke_data: RunData, tmp_path: Path) -> None:
    from sim.dashboard.serve import LiveFeed

    def fails(on_minute: Any) -> None:
        raise RunFolderError("disk full")

    feed = LiveFeed(RunData.for_scenario(smoke_data.scenario), tmp_path, fails)
    feed._run()
    assert feed.state == "failed"
    assert "disk full" in feed.describe() and "failed" in feed.status_markdown()


# ----------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def dashboard(smoke_data: RunData) -> Any:
    from sim.dashboard.app import Dashboard

    return Dashboard([smoke_data])


def drawn_tiles(dash: Any, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's value and RGBA pixel (n x 4 bytes) in map `k`'s image, in zone order."""
    layer = dash.maps[k].zones["grid"]
    image = np.asarray(layer.source.data["image"][0])
    assert image.dtype == np.uint32 and image.shape == (layer.tiles.ny, layer.tiles.nx)
    value = np.asarray(layer.source.data["value"][0]).ravel()[layer.tiles.pixel]
    rgba = image.ravel()[layer.tiles.pixel].astype("<u4").view(np.uint8).reshape(-1, 4)
    return value, rgba


def test_a_step_of_the_clock_swaps_the_values(dashboard: Any, smoke_data: RunData) -> None:
    from sim.dashboard.app import PEOPLE_PALETTE, SUPPRESSED

    dash = dashboard
    dash.layer.value = "truth"
    dash.time.value = 30
    grid = smoke_data.systems["grid"]
    values, rgba = drawn_tiles(dash)
    truth = grid.truth_matrix()[:, 30]
    np.testing.assert_array_equal(values, truth)
    assert "14:30" in dash.clock.object
    # nobody there: transparent; the busiest tile: the darkest colour of the scale
    assert (rgba[truth < 1] == 0).all() and (rgba[truth >= 1, 3] == 191).all()
    top = dash.maps[0].people.high
    assert top >= truth.max()
    busiest = int(np.argmax(truth))
    darkest = int(np.floor(np.log(truth[busiest]) * len(PEOPLE_PALETTE) / np.log(top)))
    assert _hex(rgba[busiest]) == PEOPLE_PALETTE[min(darkest, len(PEOPLE_PALETTE) - 1)]
    assert _hex(rgba[np.flatnonzero(truth == 1)[0]]) == PEOPLE_PALETTE[0]
    dash.layer.value = "estimate"
    dash.method.value = "em"
    values, rgba = drawn_tiles(dash)
    expected = grid.matrix("em")[:, 30]
    np.testing.assert_array_equal(np.isnan(values), np.isnan(expected))
    hidden = grid.matrix("em", "suppressed")[:, 30]
    assert hidden.any()
    # drawn, as suppressed: a light grey veil
    assert {_hex(c) for c in rgba[hidden]} == {SUPPRESSED} and (rgba[hidden, 3] == 76).all()
    dash.layer.value = "difference"
    diff, _ = drawn_tiles(dash)
    ok = ~np.isnan(expected)
    np.testing.assert_allclose(diff[ok], expected[ok] - grid.truth_matrix()[ok, 30], rtol=1e-6)
    assert dash.maps[0].bar.title.startswith("estimate − truth")
    assert dash.maps[0].bar.color_mapper is dash.maps[0].diff


def _hex(rgba: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3].tolist())


def test_colours_are_those_of_the_mappers() -> None:
    from bokeh.models import LinearColorMapper, LogColorMapper

    from sim.dashboard.app import ALERT_COLOURS, DIFF_PALETTE, PEOPLE_PALETTE, zone_rgba
    from sim.dashboard.tiles import colour_index, hex_rgb, pack_rgba

    # log scale, 7 colours from 1 to 100: 10 is half-way up (floor(3.5)); 100 the last
    n = len(PEOPLE_PALETTE)
    people = np.array([1.0, 10.0, 99.0, 100.0, 1e4, 0.5, np.nan])
    index = colour_index(people, n, low=1.0, high=100.0, log=True)
    assert index.tolist() == [0, 3, 6, 6, 6, 0, -1]
    # linear, 11 colours from -50 to 50: 0 is the middle one (white)
    diff = np.array([-50.0, -60.0, 0.0, 49.0, 50.0, np.nan])
    assert colour_index(diff, 11, low=-50.0, high=50.0, log=False).tolist() == [0, 0, 5, 10, 10, -1]
    # the page's mappers: suppressed (NaN) grey, alpha as the byte A, alpha 0 transparent
    mapper = LogColorMapper(palette=PEOPLE_PALETTE, low=1, high=100, nan_color="#9a9a9a")
    alpha = np.array([0.75, 0.75, 0.75, 0.75, 0.75, 0.0, 0.3])
    pixels = zone_rgba(people, alpha, mapper).view(np.uint8).reshape(-1, 4)
    assert [_hex(p) for p in pixels[:5]] == [PEOPLE_PALETTE[k] for k in (0, 3, 6, 6, 6)]
    assert pixels[:5, 3].tolist() == [191] * 5
    assert pixels[5].tolist() == [0, 0, 0, 0]
    assert pixels[6].tolist() == [0x9A, 0x9A, 0x9A, 76]
    states = np.array([0.0, 1.0, 2.0, 3.0])
    alerts = LinearColorMapper(palette=ALERT_COLOURS, low=-0.5, high=3.5, nan_color="#808080")
    drawn = zone_rgba(states, np.full(4, 0.8), alerts).view(np.uint8).reshape(-1, 4)
    assert [_hex(p) for p in drawn] == list(ALERT_COLOURS)
    assert DIFF_PALETTE[5] == "#f7f7f7"
    # the bytes of a pixel are R, G, B, A
    assert pack_rgba(hex_rgb(["#102030"]), np.array([1.0])).view(np.uint8).tolist() == [
        0x10,
        0x20,
        0x30,
        255,
    ]
    with pytest.raises(ValueError, match=r"'red'.*#rrggbb"):
        hex_rgb(["red"])


def test_the_tiles_image_places_every_tile(smoke_data: RunData) -> None:
    from sim.dashboard.tiles import TileImage

    grid = smoke_data.systems["grid"]
    tiles = TileImage.from_ids(grid.ids, 100.0)
    assert tiles.error < 0.05  # a few metres over the smoke run's 6 x 3.5 km
    # the true centre of each tile on the map (its Mercator ring) falls in its own pixel
    cx = np.array([x[:4].mean() for x in grid.map_xs])
    cy = np.array([y[:4].mean() for y in grid.map_ys])
    rows = [tiles.tile_at(x, y) for x, y in zip(cx, cy, strict=True)]
    assert rows == list(range(grid.n))
    assert all(tiles.tile_at(*tiles.centre(r)) == r for r in range(0, grid.n, 7))
    # off the image, in a cell of the image without a tile, or nowhere: nothing
    assert tiles.tile_at(tiles.x - 1.0, tiles.y + 1.0) is None
    assert tiles.tile_at(tiles.x + tiles.dw + 1.0, tiles.y + 1.0) is None
    assert tiles.tile_at(tiles.x + 1.0, tiles.y + tiles.dh + 1.0) is None
    empty = np.flatnonzero(tiles.row_of_pixel < 0)
    assert len(empty)
    j, i = divmod(int(empty[0]), tiles.nx)
    pixel_w, pixel_h = tiles.dw / tiles.nx, tiles.dh / tiles.ny
    inside = (tiles.x + (i + 0.5) * pixel_w, tiles.y + (j + 0.5) * pixel_h)
    assert tiles.tile_at(*inside) is None
    assert tiles.tile_at(float("nan"), 0.0) is None
    # hover names each pixel's tile, rows bottom-up
    names = tiles.zone_image(grid.ids)
    j, i = divmod(int(tiles.pixel[3]), tiles.nx)
    assert names[j][i] == grid.ids[3] and names[empty[0] // tiles.nx][empty[0] % tiles.nx] == ""


def test_the_tiles_image_refuses_what_it_cannot_draw() -> None:
    from sim.dashboard.tiles import TileImage

    with pytest.raises(ValueError, match="'a12_3': not a grid tile id"):
        TileImage.from_ids(["g1_2", "a12_3"], 100.0)
    with pytest.raises(ValueError, match="'g1_x': not a grid tile id"):
        TileImage.from_ids(["g1_x"], 100.0)
    with pytest.raises(ValueError, match="'g1_2' and 'g01_2': the same grid cell"):
        TileImage.from_ids(["g1_2", "g01_2"], 100.0)
    with pytest.raises(ValueError, match="no tiles"):
        TileImage.from_ids([], 100.0)
    # 260 km across: Lambert 72 and Mercator part by more than half a tile
    with pytest.raises(ValueError, match=r"0.69 of a tile.*too large"):
        TileImage.from_ids(["g200_200", "g2800_2400"], 100.0)
    tiles = TileImage.from_ids(["g1500_1700", "g1502_1701"], 100.0)
    assert (tiles.nx, tiles.ny) == (3, 2)
    with pytest.raises(ValueError, match="3 values for an image of 2 tiles"):
        tiles.spread(np.zeros(3), fill=0.0)


def test_tiles_of_another_size_are_refused(smoke_data: RunData) -> None:
    import copy

    from sim.dashboard.app import Dashboard

    wrong = copy.copy(smoke_data)
    zones = smoke_data.scenario.zones.model_copy(update={"grid_m": 101.0})
    wrong.scenario = smoke_data.scenario.model_copy(update={"zones": zones})
    with pytest.raises(ValueError, match=r"tile 'g\d+_\d+': its outline is .* another tile size"):
        Dashboard([wrong])


def test_a_click_on_a_tile_chooses_it(smoke_data: RunData) -> None:
    from bokeh.events import Tap

    from sim.dashboard.app import Dashboard

    dash = Dashboard([smoke_data])
    m = dash.maps[0]
    grid = smoke_data.systems["grid"]
    row = int(np.argmax(grid.truth_matrix().sum(axis=1)))
    x, y = m.zones["grid"].tiles.centre(row)
    m._tap_point(Tap(m.fig, x=x, y=y))
    assert dash.selected == ("grid", grid.ids[row])
    np.testing.assert_array_equal(dash.series_source.data["truth"], grid.truth_matrix()[row])
    np.testing.assert_array_equal(m.highlight.data["xs"][0], grid.map_xs[row])
    # a click beside the tiles chooses nothing (the choice stays)
    m._tap_point(Tap(m.fig, x=m.zones["grid"].tiles.x - 500.0, y=y))
    assert dash.selected == ("grid", grid.ids[row])
    # with the named areas shown, a click on the (hidden) tiles does not choose a tile
    dash.system.value = "area"
    other = (row + 1) % grid.n
    m._tap_point(Tap(m.fig, x=m.zones["grid"].tiles.centre(other)[0], y=y))
    assert dash.selected == ("grid", grid.ids[row])


def test_choosing_a_zone_shows_its_series_and_interval(dashboard: Any, smoke_data: RunData) -> None:
    dash = dashboard
    dash.layer.value = "estimate"
    dash.method.value = "em"
    area = smoke_data.systems["area"]
    dash.system.value = "area"
    dash._on_tap("area", 0)
    zone = area.ids[0]
    data = dash.series_source.data
    np.testing.assert_array_equal(data["truth"], area.truth_matrix()[0])
    np.testing.assert_array_equal(data["upper"], area.matrix("em", "upper")[0])
    assert zone in dash.zone_text.object and "95 %" in dash.zone_text.object
    assert len(dash.maps[0].highlight.data["xs"]) == 1
    # an alert level on this zone: its crossings are marked on the series
    dash.alert_kind.value = "this zone"
    dash.zone_limit.value = float(np.nanmax(area.truth_matrix()[0])) / 2
    assert dash.limit_span.visible and len(dash.onsets.data["t"]) >= 1
    assert zone in dash.alert_text.object
    dash.alert_kind.value = "density"
    dash.system.value = "grid"


def test_overlays_draw_sites_and_levels_of_service(dashboard: Any, smoke_data: RunData) -> None:
    dash = dashboard
    dash.overlays.value = ["course", "cell load per site", "levels of service"]
    m = dash.maps[0]
    assert m.site_renderer.visible
    assert len(m.sites.data["x"]) == len(smoke_data.sites.site_ids)
    edges, levels, _ = smoke_data.los.at(dash.t)
    drawn = [int(np.isfinite(np.asarray(src.data["x"])).sum()) // 2 for src in m.los]
    assert len(edges) and drawn == np.bincount(levels, minlength=6).tolist()
    assert m.tiles is None  # no web map before it is asked for
    dash.overlays.value = ["course", "web map (online)"]
    assert m.tiles is not None and m.tiles.visible
    assert m.tiles.tile_source.url.startswith("https://tile.openstreetmap.org/")
    dash.overlays.value = ["course"]
    assert not m.site_renderer.visible and not m.tiles.visible


def test_the_difference_scale_saturates_few_zone_bins(dashboard: Any, smoke_data: RunData) -> None:
    """The difference's colour scale is set by the bulk of the gaps, not the few largest."""
    grid = smoke_data.systems["grid"]
    for method in grid.methods:
        gap = np.abs(grid.matrix(method) - grid.truth_matrix())
        gap = gap[np.isfinite(gap)]
        top = dashboard._scale(smoke_data, "grid", "difference", method)
        assert top >= 1.0
        assert (gap > top).sum() <= 0.01 * len(gap) + 1  # at most 1% of them saturate
        if gap.max() > 1.0:
            assert top < gap.max()  # ... and not the single largest gap


def test_play_moves_the_clock_at_the_chosen_speed(dashboard: Any) -> None:
    dash = dashboard
    dash.player.value = 12  # what the player does at each tick
    assert dash.time.value == 12 and "14:12" in dash.clock.object
    dash.time.value = 20  # and the slider moves the player
    assert dash.player.value == 20
    dash.speed.value = "60 min/s"
    assert (dash.player.interval, dash.player.step) == (250, 15)
    dash.speed.value = "1 min/s"
    assert (dash.player.interval, dash.player.step) == (1000, 1)


def test_two_runs_beside_and_their_difference(smoke_data: RunData) -> None:
    import copy

    from bokeh.events import Tap

    from sim.dashboard.app import Dashboard
    from sim.dashboard.data import ZoneSeries

    # a variant with twice the people on every tile, its tiles in the reverse order
    full = smoke_data.systems["grid"]
    variant = copy.copy(smoke_data)
    variant.systems = dict(smoke_data.systems)
    tiles = ZoneSeries("grid", full.n_bins, "published")
    tiles.add_zones(full.ids[::-1], full.outlines[::-1])
    tiles.truth = full.truth_matrix()[::-1] * 2
    variant.systems["grid"] = tiles
    dash = Dashboard([smoke_data, variant])
    assert len(dash.maps) == 3
    dash.view.value = "B − A"
    assert dash.maps[2].fig.visible and not dash.maps[0].fig.visible
    dash.layer.value = "truth"
    dash.time.value = 20
    diff, rgba = drawn_tiles(dash, 2)
    np.testing.assert_array_equal(diff, smoke_data.systems["grid"].truth_matrix()[:, 20])
    assert (rgba[diff >= 1, 3] == 191).all() and (rgba[diff < 1] == 0).all()
    assert dash.maps[2].bar.title == "B − A: truth (people)"
    dash.view.value = "A beside B"
    assert dash.maps[0].fig.visible and dash.maps[1].fig.visible
    b_values, _ = drawn_tiles(dash, 1)
    np.testing.assert_array_equal(b_values, 2 * full.truth_matrix()[::-1, 20])
    # a click on a tile of B chooses that tile (B's rows are not A's)
    b = dash.maps[1]
    b._tap_point(
        Tap(b.fig, x=b.zones["grid"].tiles.centre(0)[0], y=b.zones["grid"].tiles.centre(0)[1])
    )
    assert dash.selected == ("grid", full.ids[-1])
    np.testing.assert_array_equal(dash.series_source.data["truth"], full.truth_matrix()[-1])


# ----------------------------------------------------------------------------- the commands


def exits_2(result: Any, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    text = " ".join(result.output.split())
    for word in words:
        assert word in text, (word, text)


def test_serve_refuses_what_is_not_a_finished_run(smoke_run: Path, tmp_path: Path) -> None:
    exits_2(
        runner.invoke(app, ["serve", str(tmp_path / "none"), "--no-browser"]), "no such run folder"
    )
    (tmp_path / "empty").mkdir()
    exits_2(runner.invoke(app, ["serve", str(tmp_path / "empty"), "--no-browser"]), "manifest.json")
    failed = shutil.copytree(smoke_run, tmp_path / "failed")
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["status"] = "failed"
    manifest["stages"]["network"] = {"status": "failed", "note": "out of memory"}
    (failed / "manifest.json").write_text(json.dumps(manifest))
    exits_2(runner.invoke(app, ["serve", str(failed), "--no-browser"]), "failed", "out of memory")
    partial = shutil.copytree(smoke_run, tmp_path / "partial")
    (partial / "truth_zones.parquet").unlink()
    exits_2(runner.invoke(app, ["serve", str(partial), "--no-browser"]), "truth_zones.parquet")
    three = [str(smoke_run)] * 3
    exits_2(runner.invoke(app, ["serve", *three, "--no-browser"]), "3 run folders")


def test_serve_refuses_a_port_in_use(smoke_run: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["serve", str(smoke_run), "--port", str(port), "--no-browser"])
    exits_2(result, f"--port {port}")


def test_live_refuses_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.dashboard.serve as serve_module

    monkeypatch.setattr(serve_module, "streaming_available", lambda: True)
    exits_2(runner.invoke(app, ["live", str(tmp_path / "none.toml"), "--no-browser"]), "none.toml")
    monkeypatch.setattr(serve_module, "streaming_available", lambda: False)
    exits_2(
        runner.invoke(app, ["live", str(SCENARIOS / "smoke.toml"), "--no-browser"]),
        "no streaming run",
    )


def test_live_refuses_a_folder_holding_a_run(
    smoke_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sim.dashboard.serve as serve_module

    monkeypatch.setattr(serve_module, "streaming_available", lambda: True)
    result = runner.invoke(
        app, ["live", str(SCENARIOS / "smoke.toml"), "--out", str(smoke_run), "--no-browser"]
    )
    exits_2(result, "already holds a run", "--overwrite")


def test_the_report_says_how_to_open_the_dashboard(smoke_run: Path) -> None:
    page = (smoke_run / "report.html").read_text(encoding="utf-8")
    head = page.split("<h1>")[0] if "<h1>" in page else page[:5000]
    assert "crowdsim serve" in head and "http://127.0.0.1:5006/" in head


def test_course_file_holds_the_streets(smoke_run: Path, smoke_data: RunData) -> None:
    import pyogrio

    streets = pyogrio.read_dataframe(smoke_run / "course.gpkg", layer="streets")
    assert streets["edge"].tolist() == list(range(len(streets)))
    # the ends as numbers are the ends of the geometry
    start = streets.geometry.apply(lambda g: g.coords[0])
    end = streets.geometry.apply(lambda g: g.coords[-1])
    np.testing.assert_allclose(streets["x0"], [p[0] for p in start])
    np.testing.assert_allclose(streets["y1"], [p[1] for p in end])
    assert len(smoke_data.streets.x0) == len(streets)
    # each street once: the drawn edges are half of the two-way ones, plus one-way ones
    assert len(streets) / 2 <= len(smoke_data.streets.drawn) < len(streets)
