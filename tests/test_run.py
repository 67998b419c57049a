"""One run end to end, through the API and the `crowdsim` command."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w
from typer.testing import CliRunner

from sim.cli import app
from sim.dashboard.data import SCREEN_CACHE
from sim.run import STAGES, run_scenario
from sim.scenario import Scenario, load_scenario, parse_scenario
from tests.conftest import PENTAGON, SCENARIOS, data_file

runner = CliRunner()


def test_demo_writes_a_complete_run_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert manifest["street_source"]["kind"] == "sketch"
    assert list(manifest["stages"]) == [name for name, _ in STAGES]
    assert {r["status"] for r in manifest["stages"].values()} == {"done"}
    assert manifest["stages"]["streets"]["status"] == "done"
    assert all(v is not None for k, v in manifest["versions"].items() if k != "osmium")
    assert set(manifest["timings_s"]) == set(manifest["stages"])
    for name in manifest["outputs"]:
        assert (out / name).is_file(), name
    # the resolved scenario is a valid scenario equal to the demo's
    resolved = parse_scenario(tomllib.loads((out / "scenario.toml").read_text()))
    assert resolved.model_dump() == load_scenario(SCENARIOS / "demo.toml").model_dump()
    report = (out / "report.html").read_text()
    assert "Street source:</strong> the OFFLINE BRUSSELS SKETCH" in report.split("<h1>")[0]
    assert report.count("data:image/png;base64,") >= 5  # every figure: tests/test_report.py
    for caption in ("The course", "Spectators along the course", "Named areas", "radio"):
        assert caption in report
    # no temporaries left; the screen's arrays for `crowdsim serve` (a cache) are there
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [SCREEN_CACHE]


def _small_smoke() -> Scenario:
    """The smoke scenario cut to half an hour, 900 people and no report: every stage and
    every estimator still runs, in a fraction of the full smoke run's time (determinism
    does not depend on the size, and no table compared here comes from the report)."""
    data = tomllib.loads((SCENARIOS / "smoke.toml").read_text(encoding="utf-8"))
    data["event"]["end"] = dt.time(14, 30)
    data["people"]["spectators"]["count"] = 600
    data["people"]["background"]["count"] = 300
    data["output"] = {"report": False}
    return parse_scenario(data)


def test_same_seed_same_outputs_different_seed_different(tmp_path: Path) -> None:
    scenario = _small_smoke()
    runs = {
        name: run_scenario(scenario, tmp_path / name, seed=seed, progress=False)
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    }
    assert runs["a"].manifest["facts"] == runs["b"].manifest["facts"]
    # sim.run does not import validation: without a scorer the validation stage is skipped
    validation = runs["a"].manifest["stages"]["validation"]
    assert validation["status"] == "skipped" and "no scorer" in validation["note"]
    assert not (tmp_path / "a" / "metrics.parquet").exists()
    assert runs["a"].manifest["status"] == "ok"
    tables = ("truth_zones", "truth_edges", "records", "cell_load", "estimates")
    for table in tables:
        a = pd.read_parquet(tmp_path / "a" / f"{table}.parquet")
        b = pd.read_parquet(tmp_path / "b" / f"{table}.parquet")
        pd.testing.assert_frame_equal(a, b, obj=table)
    for table in ("truth_zones", "records", "estimates"):
        a = pd.read_parquet(tmp_path / "a" / f"{table}.parquet")
        c = pd.read_parquet(tmp_path / "c" / f"{table}.parquet")
        assert not a.equals(c), f"{table} does not depend on the seed"
    assert (tmp_path / "a" / "scenario.toml").read_text() == (
        tmp_path / "b" / "scenario.toml"
    ).read_text()


def test_every_stage_of_the_smoke_run_honours_the_operator_wall(smoke_run: Path) -> None:
    records = pd.read_parquet(smoke_run / "records.parquet")
    assert list(records.columns) == ["time", "device", "cell_id", "procedure", "outcome"]
    # the operator's internal table: every value, never negative, inside its interval
    estimates = pd.read_parquet(smoke_run / "estimates_internal.parquet")
    assert (estimates["estimate"] >= 0).all() and estimates["estimate"].notna().all()
    assert (estimates["lower"] <= estimates["estimate"]).all()
    assert (estimates["estimate"] <= estimates["upper"]).all()
    assert set(estimates["method"]) == {"presence", "voronoi", "bayes", "em"}
    # the published table: nothing left of a suppressed zone-bin, the rest as internal
    published = pd.read_parquet(smoke_run / "estimates.parquet")
    hidden = published["suppressed"].to_numpy(dtype=bool)
    assert hidden.any() and not hidden.all()
    assert published.loc[hidden, ["estimate", "lower", "upper"]].isna().all().all()
    shown = published[~hidden]
    assert (shown["estimate"] >= 0).all() and shown["estimate"].notna().all()
    truth = pd.read_parquet(smoke_run / "truth_zones.parquet")
    assert (truth["people"] >= 0).all() and (truth["spectators"] <= truth["people"]).all()


def test_run_command_bad_scenario_exits_2_naming_the_key(
    tmp_path: Path, minimal: dict[str, Any]
) -> None:
    minimal["people"] = {"spectators": {"count": -1}}
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(minimal))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "people.spectators.count" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # nothing written for a scenario that never ran


def test_unknown_closure_street_fails_the_run_and_the_manifest_says_why(
    tmp_path: Path, minimal: dict[str, Any]
) -> None:
    minimal["closures"] = [
        {"name": "start area", "streets": ["Rue Imaginaire"], "start": "13:00", "end": "14:00"}
    ]
    path = tmp_path / "closure.toml"
    path.write_text(tomli_w.dumps(minimal))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2
    assert "closures[0].streets[0]" in result.output and "Rue Imaginaire" in result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "Rue Imaginaire" in manifest["stages"]["streets"]["note"]


def test_osm_option_overrides_the_scenario_source(tmp_path: Path, minimal: dict[str, Any]) -> None:
    pentagon = data_file(PENTAGON)
    minimal["route"]["waypoints"] = [
        {"name": "Bourse", "lat": 50.8484, "lon": 4.3495, "kind": "start"},
        {"name": "Place Royale", "lat": 50.8423, "lon": 4.3600, "kind": "finish"},
    ]
    path = tmp_path / "pentagon.toml"
    path.write_text(tomli_w.dumps(minimal))
    result = runner.invoke(
        app, ["run", str(path), "--out", str(tmp_path / "run"), "--osm", str(pentagon), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["street_source"]["kind"] == "file"
    assert manifest["street_source"]["detail"] == str(pentagon)


def test_streets_command_prints_figures_and_course(tmp_path: Path) -> None:
    result = runner.invoke(app, ["streets", "sketch", "--scenario", str(SCENARIOS / "demo.toml")])
    assert result.exit_code == 0, result.output
    assert "nodes:" in result.output and "SKETCH" in result.output
    assert "course:" in result.output and " km" in result.output
    missing = runner.invoke(app, ["streets", str(tmp_path / "none.osm")])
    assert missing.exit_code == 2 and "not found" in missing.output
