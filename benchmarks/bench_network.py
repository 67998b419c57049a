"""Benchmark of the network stage (issue #4); run by hand, never as a timed test.

The team-time-trial scenario on the real region extract with the crowd of the crowd
benchmark (200,000 spectators + 300,000 background, 11:00-18:00 at 5 s): the coverage
raster, the phones, the signalling fed by the crowd tick by tick, and the records. The
crowd's own time per tick is measured and subtracted, so ``wall_s`` is the network's.
Prints one JSON object on its last line.

Usage: ``python benchmarks/bench_network.py [--spectators N] [--background N]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.crowd import CrowdModel
from sim.network.simulate import build_network, write_network_outputs

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_crowd", HERE / "bench_crowd.py")
bench_crowd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_crowd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectators", type=int, default=200_000)
    parser.add_argument("--background", type=int, default=300_000)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the outputs (for bench_estimators.py)"
    )
    args = parser.parse_args()
    scenario, streets, course = bench_crowd.bench_scenario(args.spectators, args.background)
    seeds = np.random.SeedSequence(2019).spawn(2)
    crowd = CrowdModel(scenario, streets, course, seed=seeds[0])
    xmin, ymin, xmax, ymax = streets.extent
    start = course.nodes[0]

    t0 = time.perf_counter()
    net = build_network(
        scenario.network, (xmin - 500, ymin - 500, xmax + 500, ymax + 500),
        event=scenario.event, n_people=crowd.people.n, spectator=crowd.people.kind == 0,
        rng=np.random.default_rng(seeds[1]), dt_s=scenario.event.step_s,
        centre=(float(streets.x[start]), float(streets.y[start])),
    )  # fmt: skip
    built = time.perf_counter()
    crowd_s = 0.0
    signalling_s = 0.0
    ticks = 0
    while crowd.tick < crowd.n_ticks:
        a = time.perf_counter()
        crowd.step()
        snap = crowd.positions()
        b = time.perf_counter()
        net.signalling.step(snap.t_s - scenario.event.step_s, snap.x, snap.y, snap.present)
        c = time.perf_counter()
        crowd_s += b - a
        signalling_s += c - b
        ticks += 1
    a = time.perf_counter()
    net.signalling.finish()
    finish_s = time.perf_counter() - a
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_network_"))
    out.mkdir(parents=True, exist_ok=True)
    a = time.perf_counter()
    write_network_outputs(net, out, salt=np.random.default_rng(7))
    write_s = time.perf_counter() - a
    np.save(out / "course_xy.npy", np.column_stack([streets.x[course.nodes],
                                                    streets.y[course.nodes]]))  # fmt: skip
    summary = net.summary()
    wall = (built - t0) + signalling_s + finish_s + write_s
    figures = {
        "wall_s": round(wall, 2),
        "plan_s": round(net.seconds["plan_s"], 2),
        "coverage_s": round(net.seconds["coverage_s"], 2),
        "devices_s": round(net.seconds["devices_s"], 2),
        "signalling_s": round(signalling_s + finish_s, 2),
        "records_write_s": round(write_s, 2),
        "crowd_feed_s_not_counted": round(crowd_s, 2),
        "ticks": ticks,
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "devices_simulated": summary["devices_simulated"],
        "cells": summary["cells"],
        "procedures": summary["procedures"],
        "messages": summary["messages"],
        "rejected": summary["rejected"],
        "dropped": summary["dropped"],
        "procedures_per_s": round(summary["procedures"] / max(wall, 1e-9), 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
