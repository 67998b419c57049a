"""Bad input, everywhere: every case ends with exit 2 and a message naming the file and key.

Scenario cases go through ``crowdsim check`` (the checks a run makes before it moves
anybody, in seconds) and, for a few, through ``crowdsim run`` itself; a property-based
test feeds mutated copies of the smoke scenario and allows only exit 0 or 2.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sim import budget
from sim.cli import app
from sim.errors import CrowdsimError, RunFolderError, ScenarioError
from sim.io import read_table
from sim.scenario import load_scenario
from tests.conftest import SCENARIOS
from validation.metrics import join_run

runner = CliRunner()
SMOKE: dict[str, Any] = tomllib.loads((SCENARIOS / "smoke.toml").read_text(encoding="utf-8"))


def smoke() -> dict[str, Any]:
    """The smoke scenario as a dict (a deep copy: tests change it)."""
    return copy.deepcopy(SMOKE)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def exits_2_naming(result: Any, *words: str) -> None:
    """The command ended with exit 2, no traceback, and a message holding `words`."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.output.split())  # messages may wrap
    for word in words:
        assert word in text, (word, text)


def _waypoints(d: dict[str, Any]) -> list[dict[str, Any]]:
    return d["route"]["waypoints"]


#: (change, key in the message, words of the message)
SCENARIO_CASES = [
    pytest.param(  # a typo in lat/lon: far outside the (sketch) streets
        lambda d: _waypoints(d)[1].update(lat=10.0, lon=100.0),
        "route.waypoints",
        "outside",
        id="waypoint-far-outside",
    ),
    pytest.param(  # inside Belgium, but a sketch of a whole province
        lambda d: _waypoints(d)[1].update(lat=49.6, lon=6.3),
        "route.waypoints",
        "sketch_spacing_m",
        id="waypoint-far-in-belgium",
    ),
    pytest.param(
        lambda d: [w.update(lat=50.8417, lon=4.3620) for w in _waypoints(d)],
        "route: waypoints",
        "all lie at the same place",
        id="course-length-0",
    ),
    pytest.param(  # a few metres apart: the sketch merges them, the course has no length
        lambda d: [
            w.update(lat=50.8417 + 1e-6 * i, lon=4.3620) for i, w in enumerate(_waypoints(d))
        ],
        "route.waypoints",
        "same place",
        id="course-length-0-nearly",
    ),
    pytest.param(
        lambda d: d.setdefault("estimators", {}).update(methods=[]),
        "estimators.methods",
        "at least 1",
        id="no-estimators",
    ),
    pytest.param(
        lambda d: d["people"]["spectators"].update(count=10**12),
        "people.spectators.count",
        "less than or equal to 10000000",
        id="people-1e12",
    ),
    pytest.param(
        lambda d: d["people"]["background"].update(count=2**63 - 1),
        "people.background.count",
        "less than or equal to 10000000",
        id="people-2^63-1",
    ),
    pytest.param(
        lambda d: d["zones"]["areas"][0].update(radius_m=math.inf),
        "zones.areas[0].radius_m",
        "finite",
        id="area-radius-inf",
    ),
    pytest.param(
        lambda d: d.setdefault("estimators", {}).update(laplace_epsilon=1e-300),
        "estimators.laplace_epsilon",
        "0.001",
        id="laplace-epsilon-1e-300",
    ),
    pytest.param(
        lambda d: d["event"].update(step_s=600.0, end=dt.time(14, 5)),
        "event",
        "not shorter than the event",
        id="step-longer-than-event",
    ),
    pytest.param(
        lambda d: d["people"].update(free_speed_mps=math.inf),
        "people.free_speed_mps",
        "finite",
        id="free-speed-inf",
    ),
    pytest.param(
        lambda d: d["people"].update(free_speed_mps=1000.0),
        "people.free_speed_mps",
        "2.5",
        id="free-speed-absurd",
    ),
    pytest.param(
        lambda d: d["zones"].update(grid_m=0.001),
        "zones.grid_m",
        "greater than or equal to 10",
        id="grid-0.001",
    ),
    pytest.param(
        lambda d: d["zones"].update(segment_m=0.001),
        "zones.segment_m",
        "greater than or equal to 10",
        id="segment-0.001",
    ),
    pytest.param(
        lambda d: d.setdefault("network", {}).update(shadowing_db=math.nan),
        "network.shadowing_db",
        "finite",
        id="nan",
    ),
    pytest.param(
        lambda d: d.setdefault("network", {}).update(raster_m=0.001),
        "network.raster_m",
        "greater than or equal to 5",
        id="raster-0.001",
    ),
    pytest.param(
        lambda d: d["zones"].update(bin_s=7200.0),
        "zones.bin_s",
        "longer than the event",
        id="bin-longer-than-event",
    ),
    pytest.param(
        lambda d: d["zones"]["areas"][0].update(lat=50.80, lon=4.30),
        "zones.areas[0]",
        "outside",
        id="area-off-the-streets",
    ),
    pytest.param(  # found by the property test: a number read as a time in UTC
        lambda d: d["closures"][0].update(start=0),
        "closures[0].start",
        "local time of day",
        id="time-as-number",
    ),
    pytest.param(
        lambda d: d["event"].update(start="14:00:00+02:00"),
        "event.start",
        "without an offset",
        id="time-with-offset",
    ),
    pytest.param(
        lambda d: d["closures"].append(
            {"name": "x", "streets": ["Rue Imaginaire"], "start": dt.time(14), "end": dt.time(15)}
        ),
        "closures[1].streets[0]",
        "no street named",
        id="closure-unknown-street",
    ),
]


@pytest.mark.parametrize(("change", "key", "words"), SCENARIO_CASES)
def test_check_refuses_bad_scenario_naming_file_and_key(
    tmp_path: Path, change: Any, key: str, words: str
) -> None:
    data = smoke()
    change(data)
    path = write(tmp_path / "bad.toml", data)
    exits_2_naming(runner.invoke(app, ["check", str(path)]), str(path), key, words)


def test_check_passes_the_smoke_scenario() -> None:
    result = runner.invoke(app, ["check", str(SCENARIOS / "smoke.toml")])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "estimated memory" in result.output


def test_run_refuses_before_writing_anything(tmp_path: Path) -> None:
    data = smoke()
    data["people"]["spectators"]["count"] = 10**12
    path = write(tmp_path / "bad.toml", data)
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--quiet"])
    exits_2_naming(result, str(path), "people.spectators.count")
    assert not out.exists()


def test_run_off_the_streets_fails_in_the_streets_stage_naming_file_and_key(
    tmp_path: Path,
) -> None:
    data = smoke()
    for i, w in enumerate(_waypoints(data)):
        w.update(lat=50.8417 + 1e-6 * i, lon=4.3620)
    path = write(tmp_path / "bad.toml", data)
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    exits_2_naming(result, str(path), "route.waypoints", "same place")


def test_negative_seed_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", str(SCENARIOS / "smoke.toml"), "--out", str(tmp_path), "--seed", "-5"]
    )
    exits_2_naming(result, "--seed", "greater than or equal to 0")


@pytest.mark.parametrize("out", ["/proc/crowdsim-run", "/proc/self/status/x"])
def test_out_folder_that_cannot_be_written_is_refused(out: str) -> None:
    result = runner.invoke(app, ["run", str(SCENARIOS / "smoke.toml"), "--out", out, "--quiet"])
    exits_2_naming(result, f"--out {out}", "cannot create or write")


def test_out_check_leaves_no_folder_behind(tmp_path: Path) -> None:
    data = smoke()
    data["zones"]["grid_m"] = 0.001
    out = tmp_path / "new" / "run"
    result = runner.invoke(app, ["run", str(write(tmp_path / "bad.toml", data)), "--out", str(out)])
    exits_2_naming(result, "zones.grid_m")
    assert not (tmp_path / "new").exists()
    from sim.cli import _writable_folder

    _writable_folder(out)
    assert not (tmp_path / "new").exists()


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("x", encoding="utf-8")
    result = runner.invoke(app, ["run", str(SCENARIOS / "smoke.toml"), "--out", str(file)])
    exits_2_naming(result, str(file), "not a folder")


# ----------------------------------------------------------------------------- memory


def test_memory_estimate_refuses_what_does_not_fit_and_says_what_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = smoke()
    data["people"]["background"]["count"] = 9_000_000
    path = write(tmp_path / "big.toml", data)
    monkeypatch.setenv("CROWDSIM_MEMORY_GB", "4")
    result = runner.invoke(app, ["check", str(path)])
    exits_2_naming(result, str(path), "9,002,000 people", "4.0 GB", "What would fit: at most")
    # what it says fits, fits
    fits = int(result.output.split("at most ")[1].split(" people")[0].replace(",", ""))
    data["people"]["background"]["count"] = fits - data["people"]["spectators"]["count"]
    result = runner.invoke(app, ["check", str(write(path, data))])
    assert result.exit_code == 0, result.output


def test_memory_estimate_grows_with_people_zones_and_time() -> None:
    scenario = load_scenario(SCENARIOS / "smoke.toml")
    small = budget.estimate_memory(scenario, n_zones=100, n_street_segments=100)
    more_zones = budget.estimate_memory(scenario, n_zones=1000, n_street_segments=100)
    assert more_zones.zone_tables == pytest.approx(10 * small.zone_tables)
    assert more_zones.total > small.total
    with pytest.raises(ScenarioError, match=r"zones\.grid_m"):
        budget.check_memory(scenario, n_zones=10**9, n_street_segments=100, budget=8e9)
    routed = budget.estimate_memory(
        scenario, n_zones=100, n_street_segments=100, n_destinations=1000, n_nodes=10**5
    )
    assert routed.routing == pytest.approx(1000 * 10**5 * budget.ROUTING_CELL_BYTES)
    with pytest.raises(ScenarioError, match=r"spectators\.stretch_m"):
        budget.check_memory(
            scenario, n_zones=100, n_street_segments=100, n_destinations=10**6, n_nodes=10**5
        )


def test_memory_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROWDSIM_MEMORY_GB", "2.5")
    assert budget.memory_budget() == 2.5e9
    monkeypatch.setenv("CROWDSIM_MEMORY_GB", "lots")
    with pytest.raises(ScenarioError, match="CROWDSIM_MEMORY_GB"):
        budget.memory_budget()
    monkeypatch.delenv("CROWDSIM_MEMORY_GB")
    assert budget.memory_budget() > 0


def test_sketch_limits_match_the_sketch() -> None:
    from sim import scenario, sketch

    assert scenario.SKETCH_MAX_NODES == sketch._MAX_GRID_NODES
    assert scenario.SKETCH_MARGIN_M == 1500.0  # build_sketch's default margin_m


# ----------------------------------------------------------------------------- tables


def test_read_table_names_missing_damaged_and_wrong_tables(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}).to_parquet(good)
    assert list(read_table(good, required=("a",), error=CrowdsimError)["a"]) == [1, 2]
    with pytest.raises(CrowdsimError, match="missing"):
        read_table(tmp_path / "none.parquet", required=(), error=CrowdsimError)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CrowdsimError, match=r"truncated\.parquet: damaged"):
        read_table(truncated, required=(), error=CrowdsimError)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    with pytest.raises(CrowdsimError, match="damaged"):
        read_table(garbage, required=(), error=CrowdsimError)
    with pytest.raises(CrowdsimError, match=r"not the expected table: column\(s\) c missing"):
        read_table(good, required=("a", "c"), error=CrowdsimError)
    with pytest.raises(CrowdsimError, match="column"):
        read_table(good, required=(), columns=["z"], error=CrowdsimError)


def _copy_of_smoke(smoke_run: Path, folder: Path) -> Path:
    """A finished run folder of the smoke scenario that a test may damage."""
    return Path(shutil.copytree(smoke_run, folder))


def _bounds(tmp_path: Path, limit: str = "0.5") -> Path:
    path = tmp_path / "bounds.toml"
    path.write_text(
        "[[bound]]\n"
        'scenario = "smoke"\nmethod = "voronoi"\nzone_system = "area"\nmetric = "mape"\n'
        f"max = {limit}\n",
        encoding="utf-8",
    )
    return path


def test_validate_names_a_damaged_table(smoke_run: Path, tmp_path: Path) -> None:
    run = _copy_of_smoke(smoke_run, tmp_path / "run")
    whole = (run / "truth_zones.parquet").read_bytes()
    (run / "truth_zones.parquet").write_bytes(whole[:-40])
    result = runner.invoke(app, ["validate", str(run), "--bounds", str(_bounds(tmp_path))])
    exits_2_naming(result, "truth_zones.parquet", "damaged")


def test_scoring_names_the_wrong_table(smoke_run: Path, tmp_path: Path) -> None:
    """Past the run folder's checks (a library call on the folder), the reader still names
    a table that is not the one expected."""
    run = _copy_of_smoke(smoke_run, tmp_path / "run")
    # the street table copied over the zone table
    pd.DataFrame({"time": [1], "edge": [0], "density": [0.1]}).to_parquet(
        run / "truth_zones.parquet"
    )
    result = runner.invoke(app, ["validate", str(run), "--bounds", str(_bounds(tmp_path))])
    exits_2_naming(result, "truth_zones.parquet", "another run")
    with pytest.raises(RunFolderError, match=r"truth_zones\.parquet.*not the expected table"):
        join_run(run)


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf"])
def test_bounds_file_with_nan_or_inf_is_refused(
    smoke_run: Path, tmp_path: Path, limit: str
) -> None:
    run = smoke_run
    path = _bounds(tmp_path, limit)
    result = runner.invoke(app, ["validate", str(run), "--bounds", str(path)])
    exits_2_naming(result, str(path), "bound[0].max", "finite")


# ----------------------------------------------------------------------------- property

#: Values a careless or hostile user might put anywhere: every TOML type, extremes.
NONSENSE = st.sampled_from(
    [
        0, -1, -5, 1, 2**31, 2**63 - 1, -(2**63), 10**12,
        0.0, -0.0, 1e-300, -1e-300, 1e308, -1e308, math.inf, -math.inf, math.nan, 0.5,
        True, False, "", "x", "nonsense", "14:00", "é" * 200,
        [], [1, "a"], [[]], {}, {"extra": 1},
        dt.time(0, 0), dt.time(23, 59, 59), dt.date(1900, 1, 1),
        dt.datetime(2019, 7, 7, 14, 0),
    ]
)  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a TOML tree (tables and list items)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


PATHS = _paths(SMOKE)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The smoke scenario with 1-3 keys dropped, replaced by nonsense, or added."""
    data = smoke()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            parent[last]  # the path may be gone after an earlier mutation
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            del parent[last]
        elif action == "replace":
            parent[last] = draw(NONSENSE)
        elif isinstance(parent[last], dict):
            parent[last][draw(st.sampled_from(["extra", "count", "name"]))] = draw(NONSENSE)
    return data


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=mutated())
def test_mutated_scenarios_exit_0_or_2_never_a_traceback(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    path = tmp_path / "mutated.toml"
    try:
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
    except (TypeError, ValueError):  # not expressible in TOML (e.g. a list of mixed tables)
        return
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code in (0, 2), (result.output, result.exception)
    assert isinstance(result.exception, SystemExit | None), result.exception
    if result.exit_code == 2:
        assert str(path) in " ".join(result.output.split())


def test_numpy_floats_in_the_schema_are_finite() -> None:
    """Every float of every section refuses inf and nan (the model config, not per key)."""
    from sim.scenario import Scenario, _Section

    assert _Section.model_config.get("allow_inf_nan") is False
    assert Scenario.model_config.get("allow_inf_nan") is False
    assert np.isfinite(load_scenario(SCENARIOS / "smoke.toml").people.free_speed_mps)
