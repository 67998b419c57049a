"""Fan areas: an open area off the course that draws spectators, who stand off the streets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sim.crowd import CrowdModel
from sim.crowd.demand import choice_log_weight
from sim.crowd.model import GONE, STAYING
from sim.errors import ScenarioError
from sim.scenario import parse_scenario
from tests.conftest import SCENARIOS
from tests.test_crowd import NODES, node_index, tiny_scenario, tiny_world

NORTH_LON, NORTH_LAT = NODES[4]


def fan_world(**fan: Any) -> dict[str, Any]:
    """The tiny plus world with a fan area around its north node (200 m off the course)."""
    area = {
        "name": "Fan area North",
        "lat": NORTH_LAT,
        "lon": NORTH_LON,
        "radius_m": 50.0,
        "weight": 1000.0,
        "capacity": 4,
    }
    area.update(fan)
    data = tiny_scenario(
        spectators={
            "count": 12,
            "fan_areas": [area],
            "dwell_tail_min": 0.0,
            "early_leaver_share": 0.0,
        }
    )
    data["zones"]["areas"].append(
        {"name": "fan", "lat": NORTH_LAT, "lon": NORTH_LON, "radius_m": 50.0}
    )
    return data


def test_fan_area_draws_spectators_up_to_its_capacity_off_the_street() -> None:
    scenario, streets, course = tiny_world(fan_world())
    model = CrowdModel(scenario, streets, course, seed=3)
    fan = model.stretches.n - 1
    assert model.stretches.fan.tolist() == [False] * fan + [True]
    north = node_index(streets, 4)
    assert north in model.stretches.nodes[fan]
    while model.tick * model.dt < 30 * 60:  # everybody has arrived by 13:30
        model.step()
    p = model.people
    at_fan = (p.dest == fan) & (p.state == STAYING)
    # it is so attractive that it fills, but never beyond its capacity
    assert at_fan.sum() == 4
    assert (p.edge[at_fan] == -1).all()  # on the open ground, not on a street segment
    assert np.isin(p.node[at_fan], model.stretches.nodes[fan]).all()
    on_street = (p.edge >= 0) & (p.state != GONE)
    assert model.occ.sum() == on_street.sum()  # fan visitors take no street room
    # the others watch from the course
    watching = (p.dest < fan) & (p.state == STAYING)
    assert watching.sum() == 12 - 4
    # the truth counts them in the fan area's zone
    truth = model.truth.zones_table()
    last = truth[(truth["system"] == "area") & (truth["zone"] == "fan")].iloc[-1]
    assert last["spectators"] == 4
    # they leave when the last team has passed (13:25 + 10 min; no tail) and go home
    model.run()
    assert (p.state == GONE).all()
    assert model.summary()["fan_area_capacity"] == 4
    assert model.summary()["outcomes"]["turned_away_no_room"] == 0


def test_fan_area_capacity_defaults_to_density_over_the_circle() -> None:
    data = fan_world(capacity=None, density_p_m2=0.5, radius_m=100.0)
    del data["people"]["spectators"]["fan_areas"][0]["capacity"]
    area = parse_scenario(data).people.spectators.fan_areas[0]
    assert area.holds == int(0.5 * np.pi * 100.0**2)


def test_fan_area_outside_the_streets_is_named(tmp_path: Any) -> None:
    data = fan_world(lat=50.70, lon=4.10, radius_m=20.0)
    scenario = parse_scenario(data, source=tmp_path / "fan.toml")
    _, streets, course = tiny_world(data)
    with pytest.raises(ScenarioError) as info:
        CrowdModel(scenario, streets, course, seed=1)
    message = str(info.value)
    assert "fan.toml: people.spectators.fan_areas[0]" in message
    assert "'Fan area North'" in message and "origin_max_snap_m" in message


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"radius_m": 0.0}, "people.spectators.fan_areas[0].radius_m"),
        ({"weight": -1.0}, "people.spectators.fan_areas[0].weight"),
        ({"capacity": 0}, "people.spectators.fan_areas[0].capacity"),
        ({"size": 3}, "people.spectators.fan_areas[0].size: unknown key"),
    ],
)
def test_bad_fan_area_names_the_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ScenarioError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(fan_world(**change), source=SCENARIOS / "x.toml")


def test_fan_area_names_are_unique() -> None:
    data = fan_world()
    areas = data["people"]["spectators"]["fan_areas"]
    areas.append(dict(areas[0]))
    with pytest.raises(ScenarioError, match="used twice"):
        parse_scenario(data)


def test_choice_weight_of_a_fan_area_ignores_its_fill_until_it_is_full() -> None:
    """Course stretches weigh by the share of room left; a fan area only by whether it
    has room; both by attractiveness and walk; unreachable: never."""
    attract = np.array([2.0, 2.0, 3.0, 3.0, 1.0])
    room = np.array([50, 0, 10, 0, 100])
    cap = np.array([100, 100, 1000, 1000, 100])
    dist = np.array([0.0, 0.0, 500.0, 500.0, np.inf])
    fan = np.array([False, False, True, True, False])
    lw = choice_log_weight(attract, room, cap, dist, fan, distance_decay_m=1000.0)
    np.testing.assert_allclose(lw[[0, 2]], [np.log(2.0 * 0.5), np.log(3.0) - 0.5])
    assert np.isneginf(lw[[1, 3, 4]]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fan_area_fills_to_its_capacity_when_its_draw_exceeds_it(seed: int) -> None:
    """200 spectators, 31 % of whom choose the fan area when it is empty (a draw of about
    60) and a capacity of 40: it is full, as its capacity and draw say. (Scaling its draw
    by the room left would stop it at about 40 * (1 - exp(-1.5)) = 31.) With room for
    120 the draw decides: about 60."""
    for capacity, low, high in ((40, 40, 40), (120, 40, 80)):
        data = fan_world(weight=5.3, capacity=capacity)
        data["people"]["spectators"].update(count=200, arrival_sd_min=5.0)
        scenario, streets, course = tiny_world(data)
        model = CrowdModel(scenario, streets, course, seed=seed)
        fan = model.stretches.n - 1
        lw = model._log_weight(model._origin_node[[0]])[0]
        share = np.exp(lw[fan]) / np.exp(lw).sum()
        assert share == pytest.approx(0.306, abs=0.01)  # the draw: 200 * share
        while model.tick * model.dt < 30 * 60:  # everybody has arrived by 13:30
            model.step()
        p = model.people
        at_fan = int(((p.dest == fan) & (p.state == STAYING)).sum())
        assert low <= at_fan <= high
        assert model.summary()["outcomes"]["turned_away_no_room"] == 0
