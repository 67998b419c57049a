"""The scenario schema: valid files load, every kind of bad input names file and key."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from sim.errors import ScenarioError
from sim.scenario import dump_scenario, load_scenario, parse_scenario
from tests.conftest import SCENARIOS


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def test_minimal_scenario_fills_defaults(minimal: dict[str, Any]) -> None:
    scenario = parse_scenario(minimal)
    assert scenario.event.step_s == 5.0
    assert scenario.zones.grid_m == 100.0
    assert scenario.estimators.privacy_threshold == 30
    assert scenario.network.market_shares["proximus"] == pytest.approx(0.40)
    assert scenario.event.duration_s == 3600.0
    assert scenario.event.start_datetime.utcoffset() == dt.timedelta(hours=2)  # CEST


#: The study's files that are not scenarios: its spec, its variants and its sweeps
#: (tests/test_study.py loads them); the sweep files of scenarios/sweeps/ are not either.
STUDY_FILES = {
    "estimators.toml",
    "estimators_ttt.toml",
    "variants.toml",
    "ttt_sweep.toml",
    "stage1_sweep.toml",
}
#: Every scenario file shipped.
SHIPPED = sorted(
    p
    for p in SCENARIOS.glob("**/*.toml")
    if "sweeps" not in p.parts and not ("study" in p.parts and p.name in STUDY_FILES)
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.source == path
    # the resolved copy is itself a valid scenario with the same content
    again = parse_scenario(tomllib.loads(dump_scenario(scenario)))
    # ... except that `extends` is merged in, not named again
    assert again.model_dump(exclude={"extends"}) == scenario.model_dump(exclude={"extends"})


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d["people"].update(spectatorz={}), "people.spectatorz", "allowed keys here:"),
        (lambda d: d.update(sede=3), "sede", "unknown key"),
        (lambda d: d["people"]["spectators"].update(count=-5), "people.spectators.count", "-5"),
        (lambda d: d["event"].update(end="12:00"), "event", "not after start"),
        (lambda d: d["event"].update(timezone="Europe/Bruxelles"), "event.timezone", "IANA"),
        (lambda d: d["event"].update(step_s=0), "event.step_s", "greater than or equal to 0.1"),
        (lambda d: d["route"]["waypoints"][1].update(lat=95.0), "route.waypoints[1].lat", "95"),
        (lambda d: d["route"]["waypoints"][0].update(kind="via"), "route", "kind = 'start'"),
        (lambda d: d["route"].update(waypoints=[]), "route.waypoints", "at least 2"),
        (lambda d: d["network"].update(market_shares={"a": 0.7, "b": 0.6}), "network", "sum"),
        (lambda d: d["network"].update(estimating_operator="x"), "network", "not in market"),
        (lambda d: d["estimators"].update(methods=["magic"]), "estimators.methods[0]", "voronoi"),
        (lambda d: d["zones"].update(bin_s=7), "zones.bin_s", "whole number"),
        (lambda d: d["streets"].update(source="file"), "streets", "needs file"),
        (lambda d: d.pop("route"), "route", "required key is missing"),
        (
            lambda d: d["closures"].append(
                {"name": "x", "start": "14:00", "end": "13:00", "course": True}
            ),
            "closures[0]",
            "not after start",
        ),
        (
            lambda d: d["people"]["spectators"].update(count=10),
            "people",
            "needs at least one",
        ),
    ],
)
def test_bad_input_names_file_and_key(
    tmp_path: Path, minimal: dict[str, Any], change: Any, key: str, words: str
) -> None:
    minimal.update(people={"spectators": {}}, network={}, estimators={}, zones={}, closures=[])
    change(minimal)
    path = write(tmp_path / "bad.toml", minimal)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert words in message


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"broken.toml: not valid TOML.*line 1"):
        load_scenario(broken)


def test_extends_overrides_only_what_changes(tmp_path: Path, minimal: dict[str, Any]) -> None:
    minimal["streets"]["file"] = "data/streets.osm.bz2"
    minimal["streets"]["source"] = "auto"
    write(tmp_path / "base.toml", minimal)
    (tmp_path / "variants").mkdir()
    child = write(
        tmp_path / "variants" / "double.toml",
        {"extends": "../base.toml", "name": "double", "event": {"end": "15:00"}},
    )
    scenario = load_scenario(child)
    assert scenario.name == "double"
    assert scenario.event.end == dt.time(15, 0)
    assert scenario.event.start == dt.time(13, 0)  # kept from the base
    assert scenario.route.waypoints[1].name == "B"
    # a relative path is relative to the file that names it, not to the child
    assert scenario.streets.file == (tmp_path / "data" / "streets.osm.bz2").resolve()
    # the resolved dump (a run folder's scenario.toml) stands alone, wherever it is copied
    (tmp_path / "run").mkdir()
    dumped = tmp_path / "run" / "scenario.toml"
    dumped.write_text(dump_scenario(scenario), encoding="utf-8")
    again = load_scenario(dumped)
    assert again.extends is None
    assert again.model_dump(exclude={"extends", "source"}) == scenario.model_dump(
        exclude={"extends", "source"}
    )


def test_extends_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", {"extends": "b.toml"})
    write(tmp_path / "b.toml", {"extends": "a.toml"})
    with pytest.raises(ScenarioError, match="cycle"):
        load_scenario(tmp_path / "a.toml")
