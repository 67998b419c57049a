"""The crowd against pedestrian-dynamics literature (``crowdsim verify crowd``), and the
public walkways API it is built on."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.crowd import WalkwayModel, walkway_graph
from sim.crowd.verify import CASES, Check, format_table, run_cases


@pytest.fixture(scope="module")
def checks() -> dict[str, list[Check]]:
    out: dict[str, list[Check]] = {}
    lost: list[int] = []
    for name, case in CASES.items():
        out[name] = case(lost)
    out["lost"] = [Check("conservation", "lost", "0", float(max(lost)), 0.0, 0.0, "")]
    return out


def _by(checks: list[Check], text: str) -> list[Check]:
    found = [c for c in checks if text in c.quantity]
    assert found, text
    return found


def test_lone_walker_takes_free_walking_time(checks: dict[str, list[Check]]) -> None:
    km, forty = checks["free walking"]
    assert abs(km.measured - 1000 / 1.34) < 0.01 * 746  # 746 s
    assert 26.0 <= forty.measured <= 34.0  # RiMEA test 1


@pytest.mark.parametrize("rho", [2, 3, 4, 5])
def test_ring_follows_weidmann_within_ten_percent(checks: dict[str, list[Check]], rho: int) -> None:
    v0, jam = 1.34, 5.4
    v = v0 * (1 - np.exp(-1.913 * (1 / rho - 1 / jam)))
    (speed,) = _by(checks["fundamental diagram"], f"speed at {rho} /m2")
    (flow,) = _by(checks["fundamental diagram"], f"specific flow at {rho} /m2")
    assert abs(speed.measured - v) <= 0.1 * v
    assert abs(flow.measured - rho * v) <= 0.1 * rho * v


def test_corridor_below_capacity_passes_through(checks: dict[str, list[Check]]) -> None:
    flow, peak = checks["fed corridor"]
    assert abs(flow.measured - 1.15) <= 0.05 * 1.15
    assert peak.measured < 1.75  # the entry never reaches the critical density


def test_bottleneck_flow_is_capacity_and_linear_in_width(checks: dict[str, list[Check]]) -> None:
    flows = [c.measured for c in _by(checks["bottleneck"], "specific flow")]
    assert len(flows) == 3
    assert all(1.1 <= j <= 1.9 for j in flows)
    assert (max(flows) - min(flows)) / np.mean(flows) < 0.1  # flow = J_s * width
    for width, clear in zip((1, 2, 4), _by(checks["bottleneck"], "time to clear"), strict=True):
        expected = 2000 / (1.22 * width)
        assert abs(clear.measured - expected) <= 0.25 * expected


def test_counterflow_clears(checks: dict[str, list[Check]]) -> None:
    (done,) = checks["counterflow"]
    assert done.measured < 1400.0


def test_nobody_lost_and_no_gridlock(checks: dict[str, list[Check]]) -> None:
    arrived, clear = checks["conservation"]
    assert arrived.measured == 4000
    assert clear.ok
    assert checks["lost"][0].measured == 0


def test_every_check_passes(checks: dict[str, list[Check]]) -> None:
    failed = [c for group in checks.values() for c in group if not c.ok]
    assert not failed, format_table(failed)


# ----------------------------------------------------------------------------- public API


def test_walkers_queue_for_a_narrow_street_first_come_first_served() -> None:
    """Ten walkers at a node in front of a 0.5 m street: capacity 0.61 /s lets them in
    one by one, in the order they came."""
    g = walkway_graph([0.0, 10.0, 20.0], [0.0, 0.0, 0.0], [0, 1], [1, 2], width=[0.5, 5.0])
    model = WalkwayModel(g, dt=1.0, free_speed_sd=0.0, seed=0)
    rows = model.add_walkers(np.zeros(10, np.int64), np.full(10, 2), start_s=np.arange(10) * 0.1)
    assert model.run_until_clear(max_s=200.0)
    through = model.passes(1)
    assert len(through) == 10
    rate = 9 / (through[-1] - through[0])
    assert rate == pytest.approx(model.fd.q_max * 0.5, rel=0.15)
    assert (np.diff(model.arrival_s[rows]) >= 0).all()  # first come, first served


def test_capacity_is_a_parameter() -> None:
    """A planner's q_max of 1.8 (short bottlenecks, Seyfried et al. 2009) lets a 1 m
    bottleneck pass 1.6-1.9 /(m s) instead of Weidmann's 1.22. Not quite 1.8: inside the
    10 m bottleneck walkers still walk at Weidmann's speeds, and the denser queue there
    takes some of the supply."""
    g = walkway_graph([0.0, 20.0, 30.0, 50.0], np.zeros(4), [0, 1, 2], [1, 2, 3],
                      width=[20.0, 1.0, 20.0])  # fmt: skip
    flow = {}
    for q_max in (None, 1.8):
        model = WalkwayModel(g, dt=1.0, q_max=q_max, seed=1)
        model.add_walkers(None, np.full(300, 3), edge=model.edge_id(0, 1),
                          offset=np.linspace(0, 20, 300))  # fmt: skip
        assert model.run_until_clear(max_s=2000.0)
        through = model.passes(2)
        flow[q_max] = 200 / (through[250] - through[50])
    assert flow[None] == pytest.approx(1.22, rel=0.05)
    assert 1.6 <= flow[1.8] <= 1.9


def test_same_seed_same_walk() -> None:
    g = walkway_graph([0.0, 30.0, 60.0], [0.0, 0.0, 0.0], [0, 1], [1, 2], width=1.0)
    out = []
    for _ in range(2):
        model = WalkwayModel(g, dt=1.0, seed=7)
        model.add_walkers(np.zeros(50, np.int64), np.full(50, 2))
        model.run_until_clear(max_s=500.0)
        out.append(model.arrival_s)
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"origin": [0], "destination": [9]}, "destination node 9 not in 0-2"),
        ({"origin": [5], "destination": [1]}, "origin node 5 not in 0-2"),
        ({"origin": [0], "destination": [2], "start_s": [-1.0]}, "start -1 s"),
        ({"origin": None, "destination": [2]}, "either origin nodes or start edges"),
        ({"origin": None, "destination": [2], "edge": [0], "offset": [99.0]}, "off its edge"),
        ({"origin": [0], "destination": [2], "free_speed": [0.0]}, "free_speed must be > 0"),
    ],
)
def test_bad_walkers_are_refused(kwargs: dict, message: str) -> None:
    g = walkway_graph([0.0, 10.0, 20.0], [0.0, 0.0, 0.0], [0, 1], [1, 2], width=1.0)
    model = WalkwayModel(g, seed=0)
    with pytest.raises(ValueError, match=message):
        model.add_walkers(**kwargs)
    assert model.people.n == 0  # nothing half-added


def test_unreachable_destination_is_refused() -> None:
    g = walkway_graph([0.0, 10.0, 20.0, 30.0], np.zeros(4), [0, 2], [1, 3], width=1.0)
    model = WalkwayModel(g, seed=0)
    with pytest.raises(ValueError, match="cannot be reached from node 0"):
        model.add_walkers([0], [3])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([0.0, 1.0], [0.0, 0.0], [0], [2]), "nodes are 0-1"),
        (([0.0, 1.0], [0.0, 0.0], [0], [0]), "starts and ends at node 0"),
        (([0.0, 1.0], [0.0, 0.0], [0], [1]), "width 0;"),
    ],
)
def test_bad_walkways_are_refused(args: tuple, message: str) -> None:
    width = 0.0 if "width" in message else 1.0
    with pytest.raises(ValueError, match=message):
        walkway_graph(*args, width=width)


# ----------------------------------------------------------------------------- command


def test_cli_prints_table_and_json_and_fails_nonzero_on_unknown() -> None:
    result = CliRunner().invoke(app, ["verify", "crowd", "--case", "free walking"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:2] == ["case", "quantity"]
    summary = json.loads(lines[-1])
    assert summary["passed"] is True
    assert {c["case"] for c in summary["checks"]} == {"free walking", "conservation"}
    bad = CliRunner().invoke(app, ["verify", "crowd", "--case", "nope"])
    assert bad.exit_code == 2
    assert "unknown case" in bad.output
    assert CliRunner().invoke(app, ["verify", "weather"]).exit_code == 2


def test_run_cases_counts_nobody_lost() -> None:
    checks, seconds = run_cases(["free walking"])
    assert checks[-1].quantity.startswith("walkers lost") and checks[-1].measured == 0
    assert set(seconds) == {"free walking"}
