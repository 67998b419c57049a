"""The dashboard in a real browser: headless Chromium drives ``crowdsim serve`` on the smoke run.

The server runs as a subprocess on 127.0.0.1 and a free port, and is always stopped. The
tests move the clock, switch layers and overlays, click a tile with the mouse, and read
back what the page drew from the browser's own Bokeh document (``Bokeh.documents[0]``),
comparing it with the run's tables read here with pandas. Every request the page makes
must stay on the server's address: the page works offline.

Needs the distribution's ``chromium`` and ``chromedriver`` (Debian: ``apt-get install
chromium chromium-driver``; ``.ci/run`` installs them). Without them the tests are
skipped, except on CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: Seconds to wait for the server, the page, or one redraw (the CI machine may be slow).
START_S = 180
PAGE_S = 120
STEP_S = 60


def _find_browser() -> tuple[str, str]:
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        missing = "chromium" if binary is None else "chromedriver"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is not installed; CI must run the browser tests (.ci/run)")
        pytest.skip(
            f"{missing} is not installed (Debian: apt-get install chromium chromium-driver)"
        )
    return binary, driver


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1300,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(STEP_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``crowdsim serve`` on the smoke run, on 127.0.0.1 and a free port; stopped at the end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim.cli", "serve", str(smoke_run), "--port", str(port),
             "--address", "127.0.0.1", "--no-browser"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"crowdsim serve ended with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"crowdsim serve did not answer in {START_S} s:\n{log.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


# JavaScript run in the page: find models of the Bokeh document and the view of a figure.
JS_HELPERS = """
const ready = () => !!(window.Bokeh && Bokeh.documents && Bokeh.documents.length);
const modelList = () => ready() ? [...Bokeh.documents[0].all_models] : [];
const byType = (t) => modelList().filter(m => m.type === t || m.constructor.__name__ === t);
// the tiles: one RGBA image whose pixels are the tiles
const tileImage = () => modelList().find(m => m.name === 'zones grid' && m.visible
    && m.glyph && m.data_source && m.data_source.get_length() === 1);
function drawnTiles() {  // each tile's zone, value, RGBA bytes and pixel (i, j), as drawn
  const d = tileImage().data_source.data;
  const names = d.zone[0], value = d.value[0], image = d.image[0];
  const bytes = new Uint8Array(image.buffer, image.byteOffset, image.byteLength);
  const nx = names[0].length, out = [];
  names.forEach((row, j) => row.forEach((zone, i) => {
    if (zone === '') return;
    const k = j * nx + i, v = value[k];
    out.push([zone, Number.isNaN(v) ? null : v, Array.from(bytes.slice(4 * k, 4 * k + 4)), i, j]);
  }));
  return out;
}
const widget = (type, key, value) => byType(type).find(m => m[key] === value
    || (Array.isArray(m[key]) && m[key].flat().includes(value)));
const mapFigure = () => modelList().find(
    m => m.title && m.title.text && m.title.text.startsWith('A:'));
function viewOf(model) {
  const stack = [...Bokeh.index.roots];
  while (stack.length) {
    const v = stack.pop();
    if (v.model === model) return v;
    const kids = v.child_views ?? [];
    for (const c of kids) stack.push(c);
  }
  return null;
}
function pageText() {  // the page's text, in Bokeh's shadow roots too
  const parts = [document.body.textContent];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) { parts.push(el.shadowRoot.textContent); walk(el.shadowRoot); }
    }
  };
  walk(document);
  return parts.join(' ');
}
const values = (r, col) => Array.from(r.data_source.data[col]).map(v => Number.isNaN(v) ? null : v);
"""


def run_js(driver: Any, body: str, *args: Any) -> Any:
    return driver.execute_script(JS_HELPERS + body, *args)


def wait_for(driver: Any, body: str, *args: Any, timeout: float = STEP_S) -> Any:
    """Run `body` until it returns a truthy value; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = run_js(driver, body, *args)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not get there in {timeout} s: {body.strip()[:200]}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def page(browser: Any, server: str) -> Any:
    browser.get(server)
    wait_for(
        browser,
        "return ready() && pageText().includes('Overlays') && !!tileImage();",
        timeout=PAGE_S,
    )
    return browser


def set_clock(driver: Any, t: int) -> None:
    run_js(driver, "widget('Slider', 'title', 'bin').value = arguments[0];", t)


def set_layer(driver: Any, layer: str) -> None:
    run_js(
        driver,
        "const w = widget('RadioButtonGroup', 'labels', arguments[0]);"
        "w.active = w.labels.indexOf(arguments[0]);",
        layer,
    )


def set_select(driver: Any, option: str) -> None:
    run_js(driver, "widget('CustomSelect', 'options', arguments[0]).value = arguments[0];", option)


def drawn_values(driver: Any) -> dict[str, float | None]:
    """Each tile's value in the page's image (None: suppressed)."""
    return {zone: value for zone, value, *_ in run_js(driver, "return drawnTiles();")}


def drawn_colours(driver: Any) -> dict[str, list[int]]:
    """Each tile's RGBA bytes in the page's image."""
    return {zone: rgba for zone, _, rgba, *_ in run_js(driver, "return drawnTiles();")}


def wait_drawn(driver: Any, expected: dict[str, float | None], what: str) -> None:
    """Wait until the tiles' values are `expected` (None: suppressed), then compare."""
    deadline = time.monotonic() + STEP_S
    while True:
        got = drawn_values(driver)
        same = all(
            (got.get(z) is None) if v is None else got.get(z) is not None and abs(got[z] - v) < 1e-3
            for z, v in expected.items()
        )
        if same:
            return
        if time.monotonic() > deadline:
            wrong = [(z, v, got.get(z)) for z, v in expected.items() if got.get(z) != v][:5]
            raise AssertionError(f"{what}: the page drew other values, e.g. {wrong}")
        time.sleep(0.25)


def truth_at(run: Path, t: int) -> dict[str, float | None]:
    truth = pd.read_parquet(run / "truth_zones.parquet")
    end = pd.Timestamp("2019-07-07 12:00", tz="UTC") + pd.Timedelta(minutes=t + 1)
    rows = truth[
        (truth["system"].astype(str) == "grid") & (pd.to_datetime(truth["time"], utc=True) == end)
    ]
    return {str(z): float(p) for z, p in zip(rows["zone"], rows["people"], strict=True)}


def published_at(run: Path, method: str, t: int) -> dict[str, float | None]:
    est = pd.read_parquet(run / "estimates.parquet")
    b = pd.Timestamp("2019-07-07 12:00", tz="UTC") + pd.Timedelta(minutes=t)
    rows = est[(est["method"].astype(str) == method) & (est["bin"] == b)]
    return {
        str(z): None if s else float(e)
        for z, e, s in zip(rows["zone"], rows["estimate"], rows["suppressed"], strict=True)
    }


def test_the_page_loads_nothing_from_the_internet(page: Any, server: str) -> None:
    urls = set()
    for entry in page.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.add(message["params"]["url"])
    assert any(u.startswith(server) for u in urls)
    assert any(u.startswith(server.replace("http", "ws")) for u in urls), "no websocket"
    local = (server, server.replace("http://", "ws://"), "data:", "blob:")
    outside = sorted(u for u in urls if not u.startswith(local))
    assert not outside, f"requests that leave the server: {outside[:5]}"
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors[:3]


def test_moving_the_clock_redraws_the_truth(page: Any, smoke_run: Path) -> None:
    set_layer(page, "truth")
    set_clock(page, 35)
    expected = truth_at(smoke_run, 35)
    assert len(expected) > 10
    wait_drawn(page, expected, "truth at 14:35")
    wait_for(page, "return pageText().includes('14:35');")
    drawn = drawn_values(page)
    assert sum(v for v in drawn.values() if v) == pytest.approx(sum(expected.values()))
    # the colours: those the colour bar's own (BokehJS) mapper gives the values, at
    # opacity 0.75 where somebody is there, transparent elsewhere
    painted, by_mapper = run_js(
        page,
        "const tiles = drawnTiles().filter(t => t[2][3] > 0);"
        "const bar = byType('ColorBar').find(b => b.visible);"
        "const rgba = bar.color_mapper.rgba_mapper.v_compute(tiles.map(t => t[1]));"
        "return [tiles.map(t => t[2].slice(0, 3)),"
        " tiles.map((t, k) => Array.from(rgba.slice(4 * k, 4 * k + 3)))];",
    )
    assert len(painted) == sum(v >= 1 for v in expected.values()) > 10
    assert painted == by_mapper
    colours = drawn_colours(page)
    assert all(colours[z][3] == 0 for z, v in drawn.items() if not v or v < 1)


def test_the_estimate_layer_shows_the_published_view(page: Any, smoke_run: Path) -> None:
    set_select(page, "em")
    set_layer(page, "estimate")
    set_clock(page, 40)
    expected = published_at(smoke_run, "em", 40)
    assert any(v is None for v in expected.values()), "the smoke run suppresses small tiles"
    wait_drawn(page, expected, "em estimate at 14:40 (None = suppressed)")
    # a suppressed tile is drawn (grey), not left out
    colours = drawn_colours(page)
    hidden = [z for z, v in expected.items() if v is None]
    assert all(colours[z] == [0x9A, 0x9A, 0x9A, 76] for z in hidden)  # grey, a light veil


def test_the_difference_layer(page: Any, smoke_run: Path) -> None:
    set_layer(page, "difference")
    est, truth = published_at(smoke_run, "em", 40), truth_at(smoke_run, 40)
    expected = {z: None if v is None else v - truth.get(z, 0.0) for z, v in est.items()}
    wait_drawn(page, expected, "em minus truth at 14:40")
    assert wait_for(page, "return pageText().includes('estimate − truth') || "
                    "modelList().some(m => m.title === 'estimate − truth (people)');")  # fmt: skip


def test_overlays_draw_sites_and_levels_of_service(page: Any, smoke_run: Path) -> None:
    run_js(
        page,
        "const w = byType('CheckboxGroup').find(m => m.labels.includes('levels of service'));"
        "w.active = [0, 1, 2];",
    )
    plan = json.loads((smoke_run / "network_plan.json").read_text())
    n_sites = len({c["site_id"] for c in plan["cells"]})
    wait_for(
        page,
        "const r = modelList().find(m => m.glyph && m.data_source && m.data_source.data.site);"
        "return r.visible && r.data_source.get_length() === arguments[0];",
        n_sites,
    )
    # the streets with somebody on them at 14:40, coloured by level of service (0 = A)
    edges = pd.read_parquet(smoke_run / "truth_edges.parquet")
    end = pd.Timestamp("2019-07-07 12:41", tz="UTC")
    busy = edges[pd.to_datetime(edges["time"], utc=True) == end]
    # one line per level, broken by NaN between streets: count its segments
    per_level = wait_for(
        page,
        "const rs = modelList().filter(m => m.glyph && m.name && m.name.startsWith('los '));"
        "const n = rs.map(r => values(r, 'x').filter(v => v !== null).length / 2);"
        "return rs.every(r => r.visible) && n.reduce((a, b) => a + b, 0) === arguments[0]"
        " && Object.fromEntries(rs.map((r, k) => [r.name.slice(4), n[k]]));",
        len(busy),
    )
    expected = busy["los"].astype(str).value_counts()
    assert {k: v for k, v in per_level.items() if v} == expected[expected > 0].to_dict()


def test_clicking_a_tile_shows_its_series(page: Any, smoke_run: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    set_layer(page, "truth")
    truth = pd.read_parquet(smoke_run / "truth_zones.parquet")
    grid = truth[truth["system"].astype(str) == "grid"]
    busiest = str(grid.groupby("zone", observed=True)["people"].sum().idxmax())
    # where the tile is on the screen, from the map's own scales, once the layout is still
    # (a colour bar's new title moves the frame by a few pixels: a tile is about ten)
    set_clock(page, 40)
    wait_drawn(page, truth_at(smoke_run, 40), "truth at 14:40")
    where = """
        const d = tileImage().data_source.data;
        const [, , , i, j] = drawnTiles().find(t => t[0] === arguments[0]);
        const nx = d.zone[0][0].length, ny = d.zone[0].length;
        const view = viewOf(mapFigure());
        const sx = view.frame.x_scale.compute(d.x[0] + (i + 0.5) * d.dw[0] / nx);
        const sy = view.frame.y_scale.compute(d.y[0] + (j + 0.5) * d.dh[0] / ny);
        const box = view.canvas_view.el.getBoundingClientRect();
        return [box.left + sx, box.top + sy];
    """
    before = None
    for _ in range(40):
        x, y = run_js(page, where, busiest)
        if before == (x, y):
            break
        before = (x, y)
        time.sleep(0.5)
    # hovering the tile names it and its value
    tip = "return [...document.querySelectorAll('*')].map(e => e.shadowRoot).filter(r => r)"
    tip += ".flatMap(r => [...r.querySelectorAll('.bk-tooltip-content')])"
    tip += ".map(e => e.textContent).join(' | ');"
    hover = ActionBuilder(page)
    hover.pointer_action.move_to_location(int(x), int(y))
    hover.perform()
    value = truth_at(smoke_run, 40)[busiest]
    shown = wait_for(
        page, f"const t = (() => {{ {tip} }})(); return t.includes(arguments[0]) && t;", busiest
    )
    assert f"{value:.1f}" in shown, shown
    # a pixel of the image that is no tile shows nothing
    empty = run_js(
        page,
        "const d = tileImage().data_source.data, names = d.zone[0];"
        "const j = names.findIndex(row => row.includes('')), i = names[j].indexOf('');"
        "const view = viewOf(mapFigure()), box = view.canvas_view.el.getBoundingClientRect();"
        "const sx = view.frame.x_scale.compute(d.x[0] + (i + 0.5) * d.dw[0] / names[0].length);"
        "const sy = view.frame.y_scale.compute(d.y[0] + (j + 0.5) * d.dh[0] / names.length);"
        "return [box.left + sx, box.top + sy];",
    )
    hover = ActionBuilder(page)
    hover.pointer_action.move_to_location(int(empty[0]), int(empty[1]))
    hover.perform()
    time.sleep(1.0)
    assert "zone" not in run_js(page, f"return (() => {{ {tip} }})();")
    click = ActionBuilder(page)  # a real mouse click at that point of the window
    click.pointer_action.move_to_location(int(x), int(y)).click()
    click.perform()
    wait_for(page, "return pageText().includes(arguments[0] + ' (tiles');", busiest)
    # the chosen tile is outlined on the map, around the point clicked
    ring = wait_for(
        page,
        "const r = modelList().find(m => m.name === 'highlight' && mapFigure().renderers"
        ".includes(m)); const xs = r.data_source.data.xs, ys = r.data_source.data.ys;"
        "return xs.length === 1 && [Array.from(xs[0]), Array.from(ys[0])];",
    )
    centre = run_js(
        page,
        "const d = tileImage().data_source.data;"
        "const [, , , i, j] = drawnTiles().find(t => t[0] === arguments[0]);"
        "return [d.x[0] + (i + 0.5) * d.dw[0] / d.zone[0][0].length,"
        " d.y[0] + (j + 0.5) * d.dh[0] / d.zone[0].length];",
        busiest,
    )
    assert min(ring[0]) < centre[0] < max(ring[0]) and min(ring[1]) < centre[1] < max(ring[1])
    series = wait_for(
        page,
        "const r = modelList().find(m => m.glyph && m.data_source && m.data_source.data.truth_b);"
        "const t = values(r, 'truth'); return t.some(v => v !== null && v > 0) && t;",
    )
    rows = grid[grid["zone"].astype(str) == busiest]
    expected = np.zeros(60)
    minutes = pd.to_datetime(rows["time"], utc=True) - pd.Timestamp("2019-07-07 12:01", tz="UTC")
    expected[(minutes / pd.Timedelta(minutes=1)).astype(int).to_numpy()] = rows["people"]
    np.testing.assert_allclose(np.asarray(series, dtype=float), expected)
    assert wait_for(page, "return pageText().includes('95 % interval');")
    page.save_screenshot(str(tmp_path / "dashboard_clicked.png"))


def test_clicking_a_named_area_shows_its_series(page: Any) -> None:
    """Areas are patches, chosen by Bokeh's tap tool; the tiles' click handler keeps out."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    set_select(page, "named areas (internal table)")
    where = """
        const r = modelList().find(m => m.visible && m.glyph && m.data_source
            && m.glyph.constructor.__name__ === 'Patches' && m.data_source.data.zone);
        if (!r || r.data_source.get_length() === 0) return null;
        const d = r.data_source.data, k = d.zone.length - 1;
        const xs = Array.from(d.xs[k]), ys = Array.from(d.ys[k]);
        const view = viewOf(mapFigure());
        const sx = view.frame.x_scale.compute(xs.reduce((a, b) => a + b) / xs.length);
        const sy = view.frame.y_scale.compute(ys.reduce((a, b) => a + b) / ys.length);
        const box = view.canvas_view.el.getBoundingClientRect();
        return [d.zone[k], box.left + sx, box.top + sy];
    """
    before = None
    for _ in range(40):
        zone, x, y = wait_for(page, where)
        if before == (x, y):
            break
        before = (x, y)
        time.sleep(0.5)
    assert not run_js(page, "return !!tileImage();")  # the tiles are hidden
    click = ActionBuilder(page)
    click.pointer_action.move_to_location(int(x), int(y)).click()
    click.perform()
    wait_for(page, "return pageText().includes(arguments[0] + ' (named areas');", zone)
    set_select(page, "tiles (published view)")
