"""The run report: every figure drawn, valid, embedded under its heading; the helpers behind it.

The session's smoke run (``smoke_run`` in conftest) is shared by the tests of this module;
the figures were also looked at by eye on the demo and on a large team-time-trial run
(see the README).
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from sim.dashboard.data import SCREEN_CACHE
from sim.report import FIGURES, chosen_times, load_run_context, write_report
from sim.report.charts import joined_small
from sim.report.crowding import worst_per_edge, worst_places
from sim.report.tables import GridRaster, RunTables
from sim.scenario import load_scenario
from tests.conftest import SCENARIOS

PNG = b"\x89PNG\r\n\x1a\n"
#: The figures the report draws itself (the coverage figures are the network stage's).
DRAWN = {f.file for f in FIGURES if f.draw is not None}


def _sections(page: str) -> dict[str, str]:
    """Heading -> the HTML of its section (every section that has a heading)."""
    found = re.findall(r"<section id='[^']+'><h2>(.*?)</h2>(.*?)</section>", page, flags=re.S)
    out: dict[str, str] = {}
    for heading, body in found:
        out[heading] = out.get(heading, "") + body
    return out


def test_every_figure_is_a_valid_image_embedded_under_its_heading(smoke_run: Path) -> None:
    page = (smoke_run / "report.html").read_text(encoding="utf-8")
    sections = _sections(page)
    for name, heading in ((f.file, f.heading) for f in FIGURES):
        path = smoke_run / name
        assert path.is_file(), f"{name} was not drawn"
        data = path.read_bytes()
        with Image.open(path) as image:
            if name.endswith(".png"):
                assert data.startswith(PNG), name
                assert image.format == "PNG" and min(image.size) >= 150 and max(image.size) >= 600
            else:
                assert data.startswith(b"GIF89a"), name
                assert image.format == "GIF" and image.n_frames >= 4, (name, image.n_frames)
            image.verify()
        assert heading in sections, f"no section headed {heading!r}"
        mime = "image/png" if name.endswith(".png") else "image/gif"
        encoded = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        assert encoded in sections[heading], f"{name} is not embedded under {heading!r}"
    # the network's coverage figures sit with the signalling load
    assert page.count("data:image/png;base64,") == len(FIGURES) - 1
    assert "<img src='data:image/gif;base64," in sections["The afternoon, animated"]


def test_report_starts_with_the_street_source_and_lists_the_worst_places(
    smoke_run: Path,
) -> None:
    page = (smoke_run / "report.html").read_text(encoding="utf-8")
    head = page.split("<h1>")[0]
    assert "Street source:</strong> the OFFLINE BRUSSELS SKETCH" in head
    section = _sections(page)["Densities and levels of service"]
    for table_id in ("worst-places", "densest-places"):
        match = re.search(rf"<table id='{table_id}'>(.*?)</table>", section, flags=re.S)
        assert match, f"no table {table_id}"
        rows = match.group(1).count("<tr>") - 1  # the header row
        assert 1 <= rows <= 10
        assert "peak flow (p/m/min)" in match.group(1) and "street" in match.group(1)
    levels = re.findall(r"<td>([A-F])</td>", section)
    assert levels and set(levels) <= set("ABCDEF")
    assert "<table id='metrics'>" in page  # the scores beside the error figure


def test_report_records_its_parts_and_redraws_from_the_run_folder(
    smoke_run: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(smoke_run, tmp_path / "run")
    manifest_before = (folder / "manifest.json").read_bytes()
    run = load_run_context(folder)
    facts_before = copy.deepcopy(dict(run.facts))
    before = (folder / "report.html").stat().st_mtime_ns
    written = write_report(run, streets=run.streets, course=run.course)
    assert {p.name for p in written.files} == {*DRAWN, "report.html"}
    assert (folder / "report.html").stat().st_mtime_ns >= before
    assert set(written.facts["figures"]) == DRAWN
    assert written.facts["gif_method"] in {"voronoi", "bayes", "em"}
    assert {"read", "map_base", "html", "afternoon"} <= set(written.seconds)
    assert all(s >= 0 for s in written.seconds.values())
    # the report hands back what it wrote; the run's record is the caller's business
    assert (folder / "manifest.json").read_bytes() == manifest_before
    assert dict(run.facts) == facts_before
    # no temporary left (the run's screen cache, copied with the folder, is not one)
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != SCREEN_CACHE]


def test_one_list_of_figures_drives_the_page() -> None:
    files = [f.file for f in FIGURES]
    assert len(files) == len(set(files))
    anchors = list(dict.fromkeys(f.anchor for f in FIGURES))
    for anchor in anchors:  # a section's figures come together and share one heading
        entries = [i for i, f in enumerate(FIGURES) if f.anchor == anchor]
        assert entries == list(range(entries[0], entries[-1] + 1)), anchor
        assert len({FIGURES[i].heading for i in entries}) == 1, anchor
    assert DRAWN < set(files)  # the coverage figures are the network stage's


def test_estimates_meet_the_truth_of_the_same_bin_in_local_time(smoke_run: Path) -> None:
    sc = load_scenario(SCENARIOS / "smoke.toml")
    tables = RunTables.load(smoke_run, timezone="Europe/Brussels", bin_s=60.0, tile_m=100.0)
    tables.load_details([])
    joined = joined_small(tables)
    assert str(joined["time"].dt.tz) == "Europe/Brussels"
    local = joined["time"].dt.tz_localize(None)  # the wall clock in Brussels
    day = pd.Timestamp(sc.event.date)
    assert local.min() >= day + pd.Timedelta("14:00:00")  # bin ends, local clock
    assert local.max() <= day + pd.Timedelta("15:00:00")
    # a bin's estimate sits beside the truth of the same bin: the start area fills up
    start = joined[(joined["zone"] == "Start area (Palais Royal)") & (joined["method"] == "em")]
    assert start["truth"].iloc[-10:].mean() > 5 * max(start["truth"].iloc[:3].mean(), 1.0)
    assert np.corrcoef(start["truth"], start["estimate"])[0, 1] > 0.5


def test_grid_raster_places_tiles_by_their_ids() -> None:
    grid = GridRaster.from_ids(["g10_20", "g11_20", "g10_22", "not a tile"], tile_m=100.0)
    assert grid is not None
    assert grid.shape == (3, 2)  # rows 20..22, columns 10..11
    assert grid.extent == (1000.0, 1200.0, 2000.0, 2300.0)
    image = grid.raster(pd.Categorical(["g11_20", "g10_22", "g11_20", "elsewhere"]),
                        np.array([1.0, 2.0, 3.0, 9.0]))  # fmt: skip
    assert image[0, 1] == 4.0 and image[2, 0] == 2.0  # repeats add up
    assert np.isnan(image[0, 0]) and np.isnan(image[1, 1])
    assert GridRaster.from_ids(["a", "b"], tile_m=100.0) is None


def test_worst_places_rank_by_flow_or_density() -> None:
    t = pd.date_range("2019-07-07 14:00", periods=3, freq="min", tz="Europe/Brussels")
    edges = pd.DataFrame(
        {
            "time": [t[0], t[1], t[2], t[0], t[1]],
            "edge": [5, 5, 5, 8, 8],
            "persons": [1.0, 20.0, 3.0, 50.0, 40.0],
            "density": [0.1, 0.2, 0.9, 2.5, 1.0],
            "flow_pmm": [5.0, 40.0, 2.0, 1.0, 3.0],
            "los": pd.Categorical(["A", "C", "A", "A", "A"], categories=list("ABCDEF")),
        }
    )
    worst = worst_per_edge(edges).set_index("edge")
    assert worst.loc[5, "flow_pmm"] == 40.0 and worst.loc[5, "los"] == "C"
    assert worst.loc[5, "time"] == t[1] and worst.loc[5, "persons"] == 20.0
    assert worst.loc[5, "peak_density"] == 0.9 and worst.loc[5, "peak_density_time"] == t[2]
    assert worst.loc[8, "peak_density"] == 2.5 and worst.loc[8, "peak_density_time"] == t[0]
    by_flow = worst_places(worst.reset_index(), streets=None, course=None, by="flow")
    by_density = worst_places(worst.reset_index(), streets=None, course=None, by="density")
    assert by_flow["edge"].tolist() == [5, 8] and by_flow["rank"].tolist() == [1, 2]
    assert by_density["edge"].tolist() == [8, 5]


def test_crowd_maps_show_the_race_moments_on_the_local_clock(smoke_run: Path) -> None:
    sc = load_scenario(SCENARIOS / "smoke.toml")
    tables = RunTables.load(smoke_run, timezone="Europe/Brussels", bin_s=60.0, tile_m=100.0)
    moments = {f"{t:%H:%M}": label for t, label in chosen_times(sc, tables).items()}
    assert moments["14:15"] == "first team starts"  # first_start 14:15
    assert moments["14:43"] == "last team finishes"  # 14:15 + 4 x 5 min + 8 min ride
    assert any("peak along the course" in label for label in moments.values())


def test_report_without_estimates_draws_the_truth_and_says_what_is_missing(
    smoke_run: Path, tmp_path: Path
) -> None:
    import shutil

    skip = {"estimates.parquet", "estimates_internal.parquet", "metrics.parquet",
            "metrics_bins.parquet", "report.html"}  # fmt: skip
    for path in smoke_run.iterdir():
        if path.name not in skip and not path.name.endswith((".png", ".gif")):
            shutil.copy2(path, tmp_path / path.name)
    run = load_run_context(tmp_path)
    written = {p.name for p in write_report(run, streets=run.streets, course=run.course).files}
    assert {"crowd_map.png", "crowd_course.png", "densities.png", "los_map.png"} <= written
    assert not written & {"heatmaps_peak.png", "scatter.png", "afternoon.gif"}
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "not drawn: the run has no data for it" in page
    assert "No metrics: the validation stage did not score this run." in page


def test_worst_bin_is_the_worst_level_even_at_lower_flow() -> None:
    """A standing jam (level F from its density) outranks a busier free-flowing bin (A)."""
    t = pd.date_range("2019-07-07 14:00", periods=2, freq="min", tz="Europe/Brussels")
    edges = pd.DataFrame(
        {
            "time": [t[0], t[1]],
            "edge": [3, 3],
            "persons": [10.0, 50.0],
            "density": [0.3, 5.4],
            "flow_pmm": [20.0, 2.0],
            "los": pd.Categorical(["A", "F"], categories=list("ABCDEF")),
        }
    )
    worst = worst_per_edge(edges).set_index("edge")
    assert worst.loc[3, "los"] == "F" and worst.loc[3, "time"] == t[1]
