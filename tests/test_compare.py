"""`crowdsim compare`: what changed between a baseline run and a variant, for planners."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.compare import COLUMNS, compare_runs, format_table, open_run, write_comparison
from sim.errors import CrowdsimError
from sim.scenario import load_scenario, parse_scenario
from tests.conftest import REGION, SCENARIOS, data_file
from validation.scoring import run_validated

runner = CliRunner()
ACROSS = "walk across the course (closed)"


def _smoke() -> dict[str, Any]:
    """The smoke scenario, 40 minutes and 1,300 people (a run takes a few seconds)."""
    data = tomllib.loads((SCENARIOS / "smoke.toml").read_text(encoding="utf-8"))
    data["event"]["end"] = dt.time(14, 40)
    data["people"]["spectators"]["count"] = 1000
    data["people"]["background"]["count"] = 300
    data["estimators"] = {"methods": ["voronoi", "em"]}
    data["output"] = {"report": False}
    return data


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Baseline, one crossing point removed, and three times the spectators."""
    root = tmp_path_factory.mktemp("compare-runs")
    base, nocross, more = _smoke(), _smoke(), _smoke()
    crossings = base["route"]["crossings"]
    assert [c["name"] for c in crossings] == ["Rue Belliard", "Cinquantenaire arcade"]
    nocross["route"]["crossings"] = crossings[1:]
    more["people"]["spectators"]["count"] = 3000
    out = {}
    for name, data in (("base", base), ("nocross", nocross), ("more", more)):
        data["name"] = f"smoke_{name}"
        run_validated(parse_scenario(data), root / name, progress=False)
        out[name] = root / name
    return out


def _row(table: pd.DataFrame, measure: str, place: str) -> pd.Series:
    rows = table[(table["measure"] == measure) & (table["place"] == place)]
    assert len(rows) == 1, (measure, place, table["measure"].unique())
    return rows.iloc[0]


def test_a_run_compared_with_itself_differs_in_nothing(runs: dict[str, Path]) -> None:
    table = compare_runs(runs["base"], runs["base"]).table
    assert list(table.columns) == COLUMNS
    measures = set(table["measure"])
    for expected in (
        "peak density",
        "time at LOS E or F",
        "peak density, densest places",
        "walk from station to course",
        ACROSS,
        "people turned away (every spot full)",
        "rejections, cells near the course",
        "cell rejections",
        "cell peak RRC-connected users",
        "estimate error: mae",
    ):
        assert expected in measures, expected
    both = table["run_a"].notna() & table["run_b"].notna()
    assert (table.loc[both, "difference"] == 0).all()
    assert (table["run_a"].isna() == table["run_b"].isna()).all()
    # every course segment and named area has a row; ten densest places, with street names
    places = set(table.loc[table["measure"] == "peak density", "place"])
    assert {"area Start area (Palais Royal)", "area Parc du Cinquantenaire"} <= places
    assert sum(p.startswith("segment km") for p in places) == 7  # 3.3 km in 500 m segments
    worst = table[table["measure"] == "peak density, densest places"]
    assert len(worst) == 10 and worst["place"].str.contains(r"\(street edge \d+\)").all()
    assert (worst["run_a"].diff().dropna() <= 0).all()  # densest first
    assert table.loc[table["measure"] == ACROSS, "run_a"].gt(0).all()
    text = format_table(table)
    assert "cell rejections                        no change in any of" in text


def test_removing_a_crossing_lengthens_the_walk_across_the_course(runs: dict[str, Path]) -> None:
    comparison = compare_runs(runs["base"], runs["nocross"])
    removed = _row(comparison.table, ACROSS, "Rue Belliard")
    kept = _row(comparison.table, ACROSS, "Cinquantenaire arcade")
    assert removed["run_b"] > removed["run_a"] + 2.0  # minutes: a detour, not noise
    assert removed["difference"] == pytest.approx(removed["run_b"] - removed["run_a"])
    assert kept["difference"] == 0
    crossings = comparison.crossings.set_index("name")
    assert bool(crossings.loc["Rue Belliard", "in_a"]) and not crossings.loc["Rue Belliard", "in_b"]
    # the printed table shows it
    text = format_table(comparison.table)
    line = next(ln for ln in text.splitlines() if ln.startswith(ACROSS) and "Rue Belliard" in ln)
    assert f"{removed['difference']:+.4g}" in line


def test_more_people_give_higher_peak_density(runs: dict[str, Path]) -> None:
    table = compare_runs(runs["base"], runs["more"]).table
    assert _row(table, "spectators", "all")["difference"] == 2000
    dense = table[table["measure"] == "peak density"]
    assert dense["run_b"].max() > dense["run_a"].max() * 1.5
    assert (dense["difference"] >= 0).mean() > 0.5
    worst = table[table["measure"] == "peak density, densest places"]
    assert (worst["difference"] > 0).all()
    course = next(p for p in table["place"] if p.startswith("within 400 m of the course"))
    load = _row(table, "signalling messages, cells near the course", course)
    assert load["difference"] > 0


def test_the_command_prints_the_table_and_writes_the_files(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(runs["base"]), str(runs["nocross"]),
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "A: smoke_base (base)" in result.output
    assert "B: smoke_nocross (nocross)" in result.output
    assert any(ACROSS in ln and "Rue Belliard" in ln for ln in result.output.splitlines())
    table = pd.read_parquet(out / "compare.parquet")
    assert list(table.columns) == COLUMNS
    pd.testing.assert_frame_equal(table, compare_runs(runs["base"], runs["nocross"]).table)
    assert (out / "compare_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def _copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_bad_input_names_the_folder_and_what_is_wrong(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    base = runs["base"]
    with pytest.raises(CrowdsimError, match="nowhere: no such run folder"):
        open_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        CrowdsimError, match=r"manifest\.json: missing; .*empty is not a run folder"
    ):
        open_run(tmp_path / "empty")

    failed = _copy_run(base, tmp_path / "failed")
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest["status"] = "failed"
    manifest["stages"]["network"] = {"status": "failed", "note": "ScenarioError: bad cell"}
    (failed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CrowdsimError, match=r"failed: the run failed \(network: Scen"):
        open_run(failed)

    missing = _copy_run(base, tmp_path / "missing")
    (missing / "cells.gpkg").unlink()
    (missing / "truth_edges.parquet").unlink()
    with pytest.raises(
        CrowdsimError,
        match=r"missing: missing cells\.gpkg, truth_edges\.parquet, which the run wrote",
    ):
        compare_runs(base, missing)

    elsewhere = _copy_run(base, tmp_path / "elsewhere")
    manifest = json.loads((elsewhere / "manifest.json").read_text())
    manifest["street_source"]["sha256"] = "0" * 64
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CrowdsimError, match="ran on different streets"):
        compare_runs(base, elsewhere)
    with pytest.raises(CrowdsimError, match="the streets changed since the run"):
        compare_runs(elsewhere, elsewhere)

    comparison = compare_runs(base, base)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CrowdsimError, match="file: exists and is not a folder"):
        write_comparison(comparison, tmp_path / "file")

    result = runner.invoke(app, ["compare", str(base), str(tmp_path / "empty"),
                                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2
    assert "not a run folder" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- real streets

#: A reduced population and a short window around the first finishes (14:59 on): the
#: real-street rehearsals in about 25 s a run.
REDUCED = {"spectators": 4000, "background": 1000, "start": "14:20:00", "end": "15:00:00"}


def _reduced_rehearsal(scenario: Path, folder: Path, rrc_capacity: int) -> Path:
    """A scenario file extending `scenario` with the reduced population and window, the
    RRC capacity scaled down with the population, a coarse coverage raster, one method."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"reduced_{scenario.stem}.toml"
    path.write_text(
        f'extends = "{scenario.resolve()}"\n'
        f"[event]\nstart = {REDUCED['start']}\nend = {REDUCED['end']}\n"
        f"[people.spectators]\ncount = {REDUCED['spectators']}\n"
        f"[people.background]\ncount = {REDUCED['background']}\n"
        f"[network]\nraster_m = 100.0\nrrc_capacity = {rrc_capacity}\n"
        '[estimators]\nmethods = ["voronoi"]\n[output]\nreport = false\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def rehearsals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reduced runs of the baseline and the two rehearsals the issue checks."""
    data_file(REGION)
    root = tmp_path_factory.mktemp("rehearsals")
    baseline = load_scenario(SCENARIOS / "tdf2019_ttt.toml")
    people = baseline.people.spectators.count + baseline.people.background.count
    scale = (REDUCED["spectators"] + REDUCED["background"]) / people
    # scaled with the population, so the cells near the finish reject at the peak
    rrc = max(1, round(baseline.network.rrc_capacity * scale))
    out = {}
    for name, file in (
        ("base", SCENARIOS / "tdf2019_ttt.toml"),
        ("crossing", SCENARIOS / "rehearsals" / "crossing_removed_bois.toml"),
        ("event_cell", SCENARIOS / "rehearsals" / "event_cell_finish.toml"),
    ):
        scenario = load_scenario(_reduced_rehearsal(file, root / "scenarios", rrc))
        run_validated(scenario, root / name, progress=False)
        out[name] = root / name
    return out


@pytest.mark.realdata
def test_rehearsal_crossing_removed_lengthens_walks_across_near_it(
    rehearsals: dict[str, Path],
) -> None:
    base = load_scenario(SCENARIOS / "tdf2019_ttt.toml")
    variant = load_scenario(SCENARIOS / "rehearsals" / "crossing_removed_bois.toml")
    kept = {c.name for c in variant.route.crossings}
    removed = [c.name for c in base.route.crossings if c.name not in kept]
    assert len(removed) == 1 and "Bois de la Cambre" in removed[0]
    comparison = compare_runs(rehearsals["base"], rehearsals["crossing"])
    row = _row(comparison.table, ACROSS, removed[0])
    assert row["run_b"] > row["run_a"] + 2.0, row  # minutes of detour around the Bois
    others = comparison.table[
        (comparison.table["measure"] == ACROSS) & (comparison.table["place"] != removed[0])
    ]
    assert (others["difference"].dropna() <= 1e-9).all()  # no crossing gets easier
    text = format_table(comparison.table)
    assert any(ln.startswith(ACROSS) and f"{row['difference']:+.4g}" in ln
               for ln in text.splitlines())  # fmt: skip


@pytest.mark.realdata
def test_rehearsal_event_cell_lowers_rejections_near_the_finish(
    rehearsals: dict[str, Path], tmp_path: Path
) -> None:
    comparison = compare_runs(rehearsals["base"], rehearsals["event_cell"])
    table = comparison.table
    near_finish = table[
        (table["measure"] == "rejections, cells near the course")
        & table["place"].str.contains("of the finish")
    ]
    assert len(near_finish) == 1
    row = near_finish.iloc[0]
    assert row["run_a"] > 0, "the baseline's cells near the finish must reject at the peak"
    assert row["run_b"] < row["run_a"]
    written = write_comparison(comparison, tmp_path)
    assert [p.name for p in written] == ["compare.parquet", "compare_map.png"]
    assert np.isfinite(pd.read_parquet(written[0])["run_a"]).any()
