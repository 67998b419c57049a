"""The JuPedSim comparison script (benchmarks/compare_jupedsim.py) on tiny cases.

The script is run by hand; these tests keep it from rotting. The crowdsim half and the
error paths run everywhere; the JuPedSim half only where the optional ``compare`` extra
is installed (CI installs ``.[test]`` only, so there it skips).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_jupedsim.py"


@pytest.fixture(scope="module")
def cj():
    spec = importlib.util.spec_from_file_location("compare_jupedsim", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_jupedsim"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("compare_jupedsim", None)


def test_start_positions_fit_the_room_and_keep_apart(cj):
    case = cj.Bottleneck(width_m=2.0, people=150)
    people = cj.bottleneck_people(case, rng=np.random.default_rng(0))
    xy = people.xy
    assert xy.shape == (150, 2)
    assert (xy[:, 0] < 0).all() and (xy[:, 0] > -case.room_depth_m).all()
    assert (xy[:, 1] > cj.RADIUS_M).all() and (xy[:, 1] < case.room_width_m - cj.RADIUS_M).all()
    gap = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(gap, np.inf)
    assert gap.min() >= cj.START_GAP_M
    again = cj.bottleneck_people(case, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.xy, xy)
    np.testing.assert_array_equal(again.free_speed, people.free_speed)


@pytest.mark.parametrize("people", [10, 300, 2000])
@pytest.mark.parametrize("width", [1.0, 2.0, 4.0])
def test_the_room_holds_everybody_at_its_density(cj, people, width):
    case = cj.Bottleneck(width_m=width, people=people)
    xy = cj.bottleneck_people(case, rng=np.random.default_rng(1)).xy
    assert len(xy) == people
    # about the case's density over the room (the last row may be part-filled)
    filled = case.room_width_m * (case.room_depth_m - 0.5)
    assert people / filled == pytest.approx(case.density, rel=0.25 if people > 100 else 1.0)


def test_specific_flow_of_evenly_spaced_passages(cj):
    # one passage every 0.5 s through 2 m: 2 /s, 1 /(m s)
    assert cj.specific_flow(np.arange(100) * 0.5, 2.0) == pytest.approx(1.0)
    assert math.isnan(cj.specific_flow(np.zeros(3), 1.0))


def test_bad_input_is_named(cj):
    with pytest.raises(ValueError, match="unknown simulator"):
        cj.run(people=20, widths=[1.0], simulators=["vissim"])
    with pytest.raises(ValueError, match="width -1"):
        cj.run(people=20, widths=[-1.0], simulators=["crowdsim"])
    with pytest.raises(ValueError, match="density 5"):
        cj.bottleneck_people(cj.Bottleneck(1.0, 20, density=5.0), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="corridor feed -1"):
        cj.run(widths=[], corridor=cj.Corridor(feed=-1.0), simulators=["crowdsim"])
    with pytest.raises(SystemExit):
        cj.main(["--people", "3", "--only", "crowdsim"])


def test_crowdsim_side_on_a_tiny_case(cj, capsys):
    cj.main(
        ["--only", "crowdsim", "--people", "120", "--widths", "2", "--feed-s", "90",
         "--crowdsim-people", "200"]
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert "crowdsim" in lines[2]
    figures = json.loads(lines[-1])
    # the mesoscopic model's capacity: Weidmann's 1.22 /(m s) at the bottleneck
    assert 1.0 < figures["crowdsim_bottleneck_2_m_specific_flow"] < 1.5
    assert 1.0 < figures["crowdsim_alone_n200_bottleneck_2_m_specific_flow"] < 1.5
    # clearing: N / (J_s b) plus the walk from the back of the room, within reason
    assert 120 / (1.5 * 2) < figures["crowdsim_bottleneck_2_m_clear_s"] < 120 / (1.0 * 2) + 30
    # the corridor fed below capacity passes its feed (1 /(m s)) through
    assert 0.8 < figures["crowdsim_corridor_4_specific_flow"] < 1.1
    assert figures["crowdsim_corridor_4_walk_s"] > 40 / 2.0
    assert not any(k.startswith("ratio_") for k in figures)  # nothing to pair with


def test_both_simulators_on_a_tiny_bottleneck(cj):
    pytest.importorskip("jupedsim")
    out = cj.run(people=40, widths=[2.0], corridor=cj.Corridor(length_m=10.0, feed_s=30.0))
    names = [o.simulator for o in out]
    assert names == ["JuPedSim CFSM", "crowdsim", cj.CALIBRATED, "JuPedSim CFSM", "crowdsim"]
    for o in out:
        assert o.wall_s > 0 and o.agent_steps > 0
        assert math.isfinite(o.clear_s), f"{o.simulator} {o.case}: somebody never passed"
        assert 0.4 < o.flow < 2.0, f"{o.simulator} {o.case}: J_s {o.flow:.2f} /(m s)"
    # JuPedSim steps every 0.01 s, crowdsim every 1 s: 100 agent-steps per agent-second
    jps, crowd = out[0], out[1]
    assert jps.agent_steps / jps.agent_seconds == pytest.approx(100.0)
    assert crowd.agent_steps / crowd.agent_seconds == pytest.approx(1.0)
    # given JuPedSim's flow as its capacity, crowdsim passes people at about that flow
    assert out[2].flow == pytest.approx(out[0].flow, rel=0.25)
    figures = cj.summary(out)
    assert figures["ratio_per_agent_second_jupedsim_to_crowdsim"] > 0
    assert "ratio_bottleneck_2_m_clear_calibrated_to_jupedsim" in figures
    json.dumps(figures)


def test_a_jupedsim_run_that_stops_early_says_how_many_passed(cj):
    pytest.importorskip("jupedsim")
    case = cj.Bottleneck(width_m=1.0, people=20)
    people = cj.bottleneck_people(case, rng=np.random.default_rng(0))
    # 5 s is too short to walk the 10 m bottleneck: nobody passes, nothing is made up
    out = cj.jupedsim_bottleneck(case, people, max_s=5.0)
    assert out.passed == 0
    assert math.isnan(out.clear_s) and math.isnan(out.flow)
    assert cj.summary([out])["jupedsim_bottleneck_1_m_clear_s"] is None
