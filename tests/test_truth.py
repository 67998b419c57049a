"""Ground truth tables: complete, consistent with the crowd, written atomically."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from sim.crowd import CrowdModel
from sim.crowd.model import STAYING
from sim.run import run_scenario
from sim.scenario import load_scenario, parse_scenario
from tests.conftest import MINIMAL, SCENARIOS
from tests.test_crowd import _sketch_world, sketch_scenario


def test_truth_matches_the_crowd_bin_by_bin(tmp_path: Path) -> None:
    streets, course = _sketch_world()
    scenario = sketch_scenario(1200, 600, closures=True)
    model = CrowdModel(scenario, streets, course, seed=4)
    present_at_bin_end: list[tuple[int, int]] = []

    def record(m: CrowdModel) -> None:
        if m.tick % m.bin_ticks == 0:
            here = m.present()
            spectators = int(np.count_nonzero(here[: m.n_spectators]))
            present_at_bin_end.append((int(here.sum()), spectators))

    model.add_observer(record)
    model.run()
    written = model.truth.write(tmp_path)
    assert [p.name for p in written] == ["truth_zones.parquet", "truth_edges.parquet"]
    zones = pd.read_parquet(tmp_path / "truth_zones.parquet")
    edges = pd.read_parquet(tmp_path / "truth_edges.parquet")
    bins = sorted(zones["time"].unique())
    assert len(bins) == model.n_ticks // model.bin_ticks == len(present_at_bin_end)
    assert all(b.tzinfo is not None for b in bins)
    assert (pd.Series(bins).diff().dropna() == pd.Timedelta(seconds=60)).all()
    # every present person lies in exactly one grid tile: grid totals are headcounts
    grid = zones[zones["system"] == "grid"].groupby("time")[["people", "spectators"]].sum()
    expected = pd.DataFrame(present_at_bin_end, columns=["people", "spectators"], index=bins)
    np.testing.assert_array_equal(grid.to_numpy(), expected.to_numpy())
    # segments and areas have a row in every bin
    n_seg = len(model.zones.systems["segment"].zone_ids)
    assert (zones[zones["system"] == "segment"].groupby("time").size() == n_seg).all()
    assert set(edges["los"]) <= set("ABCDEF")
    assert (edges["density"] <= scenario.people.jam_density + 1e-9).all()
    assert (edges["density"] > 0).any() and (edges["flow_pmm"] >= 0).all()
    assert edges["edge"].between(0, streets.n_edges - 1).all()


def test_zero_spectators_give_zero_spectator_counts() -> None:
    streets, course = _sketch_world()
    model = CrowdModel(sketch_scenario(0, 500, closures=False), streets, course, seed=1).run()
    zones = model.truth.zones_table()
    assert len(zones) and zones["spectators"].sum() == 0 and zones["people"].sum() > 0
    assert model.summary()["peak_watching"] == 0


def test_run_writes_truth_and_zones_and_reports_the_crowd(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    data["event"]["end"] = "13:30"
    demo = load_scenario(SCENARIOS / "demo.toml")
    data["people"] = demo.people.model_dump(mode="json")
    data["people"]["spectators"]["count"] = 500
    origins = data["people"]["spectators"]["origins"]  # those inside this small sketch
    data["people"]["spectators"]["origins"] = [origins[i] for i in (0, 3, 4, 5)]
    data["people"]["background"]["count"] = 200
    data["output"] = {"report": False}
    result = run_scenario(parse_scenario(data), tmp_path / "run", progress=False)
    out = result.out_dir
    for name in ("truth_zones.parquet", "truth_edges.parquet", "zones.gpkg"):
        assert (out / name).is_file() and name in result.manifest["outputs"]
    facts = result.manifest["facts"]["crowd"]
    assert facts["spectators"] == 500 and facts["background"] == 200
    assert sum(facts["state_at_end"].values()) == 700
    held = facts["held_at_end"]  # queues at the end, in the manifest
    assert held["held"] == facts["state_at_end"]["waiting"]
    assert sum(q["held"] for q in held["queues"]) <= held["held"] and len(held["queues"]) <= 10
    zones = pd.read_parquet(out / "truth_zones.parquet")
    first = zones["time"].min().to_pydatetime()
    assert first == dt.datetime(2019, 7, 7, 13, 1, tzinfo=first.tzinfo)


def test_cached_places_of_people_staying_match_their_positions() -> None:
    streets, course = _sketch_world()
    model = CrowdModel(sketch_scenario(800, 800, closures=True), streets, course, seed=8)
    p = model.people
    for _ in range(200):
        model.step()
        still = np.flatnonzero(p.state == STAYING)
        direct = model.places.of(p.edge[still], p.s[still], p.node[still], model.graph.length)
        np.testing.assert_array_equal(model._still_place[still], direct)
