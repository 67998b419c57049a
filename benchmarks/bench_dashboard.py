"""Benchmark of the dashboard (issue #14); run by hand, never as a timed test.

On a finished run folder (the full team-time-trial run for the targets: opens in under
3 s, a step of the clock redraws in under 200 ms) it times:

- ``import_s``: importing the dashboard and Panel (once per server, not per run);
- ``open_s``: :meth:`sim.dashboard.RunData.from_run`, the tiles' published estimates,
  the truth, cell load, streets and course read into zones x bins arrays (the map can be
  drawn), with its parts ``open_<part>_s``; ``extras_s``: the course segments, named
  areas and levels of service, loaded in the background after it. A run leaves the
  screen's arrays beside its files (``.screen.npz``), which ``open_s`` reads; a run
  without them (written before they existed) is read from its tables once, and that
  first opening, which also builds them, is ``first_open_s`` (parts ``first_open_<part>``);
- ``page_s``: building one browser session's page (Bokeh models) in Python;
- ``redraw_py_s_median``: one step of the clock in Python (new values for every map);
- in headless Chromium against ``crowdsim serve`` (a subprocess on 127.0.0.1):
  ``page_load_s`` (navigation to the map drawn) and ``step_s_median`` / ``step_s_p90`` /
  ``step_s_max``: from setting the slider in the page to the map's data updated and
  painted (the round trip through the server: what a user waits for).

Prints one JSON object on its last line with the run's size (zones, bins, street edges),
the CPU count and the load average (a busy machine's wall times are longer).

Usage: ``python benchmarks/bench_dashboard.py --run DIR [--steps 20] [--no-browser]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: In the page: wait until the map's image of the tiles is a new array, then two frames
#: (painted).
STEP_JS = """
const [t, done] = [arguments[0], arguments[arguments.length - 1]];
const models = [...Bokeh.documents[0].all_models];
const tiles = models.find(m => m.glyph && m.visible && m.name === 'zones grid');
const slider = models.find(m => m.constructor.__name__ === 'Slider' && m.title === 'bin');
const before = tiles.data_source.data.image;
const t0 = performance.now();
slider.value = t;
(function wait() {
  if (tiles.data_source.data.image !== before) {
    requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
  } else if (performance.now() - t0 > 60000) {
    done(-1);
  } else {
    setTimeout(wait, 2);
  }
})();
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def python_side(run: Path, steps: list[int]) -> dict[str, Any]:
    t0 = time.perf_counter()
    import panel  # noqa: F401  (what a server imports once)

    from sim.dashboard.app import Dashboard
    from sim.dashboard.data import RunData

    out: dict[str, Any] = {"import_s": round(time.perf_counter() - t0, 3)}
    t0 = time.perf_counter()
    data = RunData.from_run(run)
    if "screen_s" not in data.timings:  # read from the tables: the screen's arrays built
        out["first_open_s"] = round(time.perf_counter() - t0, 3)
        out.update({f"first_open_{k}": v for k, v in data.timings.items()})
        data.wait_extras()
        t0 = time.perf_counter()
        data = RunData.from_run(run)
    out["open_s"] = round(time.perf_counter() - t0, 3)
    out.update({f"open_{k}": v for k, v in data.timings.items()})
    t0 = time.perf_counter()
    data.wait_extras()
    out["extras_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    dash = Dashboard([data])
    out["page_s"] = round(time.perf_counter() - t0, 3)
    times = []
    for t in steps:
        t0 = time.perf_counter()
        dash.time.value = t
        times.append(time.perf_counter() - t0)
    out["redraw_py_s_median"] = round(float(np.median(times)), 4)
    out["redraw_py_s_max"] = round(float(np.max(times)), 4)
    out.update({"size": data.summary()})
    return out


def browser_side(run: Path, steps: list[int]) -> dict[str, Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((shutil.which(b) for b in ("chromium", "google-chrome") if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        return {"browser": "chromium or chromedriver not installed: not measured"}
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim.cli", "serve", str(run), "--port", str(port), "--no-browser"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1300,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = None
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(url, timeout=10):
                    break
            except OSError:
                time.sleep(0.5)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        driver.set_script_timeout(120)
        t0 = time.perf_counter()
        driver.get(url)
        while not driver.execute_script(
            "return !!(window.Bokeh && Bokeh.documents.length && [...Bokeh.documents[0]"
            ".all_models].some(m => m.glyph && m.visible && m.name === 'zones grid'"
            " && m.data_source.get_length() === 1))"
        ):
            time.sleep(0.05)
        page_load = time.perf_counter() - t0
        driver.execute_async_script(STEP_JS, steps[-1])  # warm up
        ms = [driver.execute_async_script(STEP_JS, t) for t in steps]
        seconds = np.asarray(ms, dtype=float) / 1000.0
        return {
            "page_load_s": round(page_load, 3),
            "step_s_median": round(float(np.median(seconds)), 4),
            "step_s_p90": round(float(np.percentile(seconds, 90)), 4),
            "step_s_max": round(float(seconds.max()), 4),
            "steps": len(steps),
        }
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder")
    parser.add_argument("--steps", type=int, default=20, help="steps of the clock to time")
    parser.add_argument("--no-browser", action="store_true", help="Python side only")
    args = parser.parse_args()
    from sim.dashboard.data import RunData

    n_bins = len(RunData.period(_scenario(args.run))[0])
    rng = np.random.default_rng(0)
    steps = [int(t) for t in rng.integers(0, n_bins, size=args.steps)]
    result: dict[str, Any] = {"run": str(args.run)}
    result.update(python_side(args.run, steps))
    if not args.no_browser:
        result.update(browser_side(args.run, steps))
    result["ratio_open_to_target"] = round(result["open_s"] / 3.0, 3)
    if "step_s_median" in result:
        result["ratio_step_to_target"] = round(result["step_s_median"] / 0.2, 3)
    result["cpus"] = os.cpu_count()
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


def _scenario(run: Path) -> Any:
    from sim.scenario import load_scenario

    return load_scenario(run / "scenario.toml")


if __name__ == "__main__":
    main()
