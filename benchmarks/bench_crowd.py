"""Benchmark of the crowd stage (issue #3); run by hand, never as a timed test.

(a) the crowd stage of the team-time-trial scenario on the real region extract with
200,000 spectators and 300,000 background people from 11:00 to 18:00 at a 5 s step
(streets loading is the streets stage and is not timed); (b) the same movement rules as
idiomatic per-agent Mesa (each agent's ``step()`` moves itself) on 20,000 walkers for 200
ticks, next to the vectorised update of the same 20,000 walkers. Prints one JSON object
on its last line.

Usage: ``python benchmarks/bench_crowd.py [--spectators N] [--background N] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import mesa
import numpy as np

from sim.course import build_course
from sim.crowd import CrowdModel
from sim.crowd.movement import Credit, FundamentalDiagram, admit, refill, weidmann_speed
from sim.crowd.walkgraph import WalkGraph
from sim.scenario import load_scenario, parse_scenario
from sim.streets import load_streets, to_lonlat

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "tdf2019_ttt.toml"
DEMO = REPO / "scenarios" / "demo.toml"


def bench_scenario(spectators: int, background: int) -> tuple[Any, Any, Any]:
    """The TTT scenario with the demo's origins, a closed course and a crossing every km."""
    base = load_scenario(SCENARIO)
    streets = load_streets(
        base.streets, waypoints=[(w.name, w.lat, w.lon) for w in base.route.waypoints]
    )
    course = build_course(streets, base.route, scenario=base)
    demo = tomllib.loads(DEMO.read_text())
    data = base.model_dump(mode="json", exclude_none=True)
    data["people"] = {
        "spectators": {"count": spectators, "origins": demo["people"]["spectators"]["origins"]},
        "background": {"count": background},
    }
    data["zones"] = demo["zones"]
    km = np.arange(1000.0, course.length_m - 500.0, 1000.0)
    at = np.searchsorted(course.cum_m, km)
    lon, lat = to_lonlat(streets.x[course.nodes[at]], streets.y[course.nodes[at]])
    data["route"]["crossings"] = [
        {"name": f"km {k / 1000:g}", "lat": float(b), "lon": float(a)}
        for k, a, b in zip(km, lon, lat, strict=True)
    ]
    data["closures"] = [{"name": "course", "course": True, "start": "12:00", "end": "17:30"}]
    scenario = parse_scenario(data, source=SCENARIO)
    return scenario, streets, course


def run_stage(
    scenario: Any, streets: Any, course: Any, out: Path
) -> tuple[float, dict[str, Any], CrowdModel]:
    t0 = time.perf_counter()
    model = CrowdModel(scenario, streets, course, seed=np.random.SeedSequence(2019))
    built = time.perf_counter()
    model.run()
    ran = time.perf_counter()
    model.truth.write(out)
    model.zones.write_geopackage(out / "zones.gpkg")
    done = time.perf_counter()
    timing = {"build_s": built - t0, "ticks_s": ran - built, "write_s": done - ran}
    return done - t0, timing, model


# ----------------------------------------------------------------------------- per-agent Mesa


class Walker(mesa.Agent):
    """One walker moving itself: the rules of sim.crowd.movement, written per agent."""

    def __init__(self, model: PerAgentModel, edge: int, s: float, dest: int, v0: float) -> None:
        super().__init__(model)
        self.edge, self.s, self.dest, self.v0 = edge, s, dest, v0
        self.waiting = False

    def step(self) -> None:
        m = self.model
        g = m.graph
        seg = int(g.seg[self.edge])
        if not self.waiting:
            # Weidmann speed at the density of the moving part, at most rho_c
            moving = m.moving[seg]
            free_area = max(m.area[seg] - (m.occ[seg] - moving) / m.jam, 1e-3 * m.area[seg])
            rho = min(moving / free_area, m.rho_c)
            v = (
                self.v0 * min(1.0, 1.0 - np.exp(-1.913 * (1.0 / rho - 1.0 / m.jam)))
                if rho > 0
                else self.v0
            )
            self.s += v * m.dt
            if self.s >= g.length[self.edge]:
                self.s = float(g.length[self.edge])
                self.waiting = True
                m.moving[seg] -= 1
            return
        node = int(g.ev[self.edge])
        nxt = int(m.next_edge[self.dest, node])
        if nxt < 0:
            self.dest = int(m.random.randrange(m.next_edge.shape[0]))
            return
        nseg = int(g.seg[nxt])
        # node rule: the own edge's demand, the next segment's supply within its room
        if m.send[self.edge] >= 1 and m.recv[nseg] >= 1 and m.occ[nseg] < m.cap[nseg]:
            m.send[self.edge] -= 1
            m.recv[nseg] -= 1
            m.occ[seg] -= 1
            m.occ[nseg] += 1
            m.moving[nseg] += 1
            self.edge, self.s, self.waiting = nxt, 0.0, False


class PerAgentModel(mesa.Model):
    """20,000 walkers as Mesa agents, shuffled and stepped one by one."""

    def __init__(
        self, graph: WalkGraph, next_edge: np.ndarray, start: dict[str, np.ndarray], *, seed: int
    ) -> None:
        super().__init__(rng=seed)
        self.graph, self.next_edge = graph, next_edge
        self.dt, self.jam = 5.0, 5.4
        self.fd = FundamentalDiagram(1.34, jam_density=self.jam)
        self.rho_c = self.fd.rho_c
        self.width = graph.seg_width()
        self.area = np.maximum(graph.seg_length() * self.width, 1e-9)
        self.cap = np.floor(self.jam * self.area).astype(np.int64)
        self.occ = np.bincount(graph.seg[start["edge"]], minlength=graph.n_segs).astype(np.int64)
        self.moving = self.occ.copy()
        self.recv_cap = self.fd.q_max * self.width * self.dt
        self.send = np.ones(graph.n_edges)
        self.recv = np.ones(graph.n_segs)
        for e, s, d, v in zip(start["edge"], start["s"], start["dest"], start["v0"], strict=True):
            Walker(self, int(e), float(s), int(d), float(v))

    def step(self) -> None:
        # this tick's capacities (the model's own bookkeeping, as CrowdModel._refill)
        refill(self.send, self.recv_cap[self.graph.seg])
        supply = self.recv_cap.copy()
        rho = self.occ / self.area
        dense = rho > self.rho_c
        supply[dense] = self.fd.supply(rho[dense]) * self.width[dense] * self.dt
        refill(self.recv, supply)
        self.agents.shuffle_do("step")


def vectorised_walkers(
    graph: WalkGraph, next_edge: np.ndarray, start: dict[str, np.ndarray], ticks: int
) -> float:
    """The same rules over arrays; returns seconds for `ticks` ticks.

    Per tick: the node capacities are refilled (each edge's demand, each segment's supply,
    ``refill``); walkers at a node look up their next edge and pass if their own edge may
    still send (first come first served, ``admit``) and the next segment may still
    receive within its room (``admit``), or pick a new destination where there is no
    route; then every walker on an edge moves at its Weidmann speed at the density of the
    moving part of its segment (at most rho_c) and stops at the end. Static lookups
    (segment of every edge as ``intp``, the routing table as one flat array) are built
    before the clock starts; each walker's segment and edge length are kept with it and
    change only when it enters an edge.
    """
    edge, s, dest, v0 = (start[k].copy() for k in ("edge", "s", "dest", "v0"))
    dt, jam = 5.0, 5.4
    fd = FundamentalDiagram(1.34, jam_density=jam)
    waiting = np.zeros(len(edge), dtype=bool)
    width = graph.seg_width()
    area = np.maximum(graph.seg_length() * width, 1e-9)
    cap = np.floor(jam * area).astype(np.int64)
    edge_seg = graph.seg.astype(np.intp)  # intp: fancy indexing casts other index types
    occ = np.bincount(edge_seg[edge], minlength=graph.n_segs).astype(np.int64)
    recv_cap = fd.q_max * width * dt
    send_cap = recv_cap[edge_seg]
    send, recv = np.ones(graph.n_edges), np.ones(graph.n_segs)
    since = np.zeros(len(edge))
    n_nodes = next_edge.shape[1]
    flat_next = np.ascontiguousarray(next_edge).ravel().astype(np.intp)
    end_node = graph.ev.astype(np.intp)
    seg = edge_seg[edge]  # segment and length of each walker's edge
    end_len = graph.length[edge]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for tick in range(ticks):
        refill(send, send_cap)
        supply = recv_cap.copy()
        rho = occ / area
        dense = np.flatnonzero(rho > fd.rho_c)
        supply[dense] = fd.supply(rho[dense]) * width[dense] * dt
        refill(recv, supply)
        w = np.flatnonzero(waiting)
        if len(w):
            nxt = flat_next[dest[w] * n_nodes + end_node[edge[w]]]
            lost = nxt < 0
            if lost.any():  # no route from here: a new destination (as Walker does)
                dest[w[lost]] = rng.integers(0, next_edge.shape[0], int(lost.sum()))
                w, nxt = w[~lost], nxt[~lost]
            go = admit(edge[w], since[w], Credit(send))  # demand
            w, nxt = w[go], nxt[go]
            want = edge_seg[nxt]
            go = admit(want, since[w], Credit(recv, cap, occ))  # supply
            w, nxt, want = w[go], nxt[go], want[go]
            np.subtract.at(send, edge[w], 1.0)
            np.subtract.at(recv, want, 1.0)
            np.subtract.at(occ, seg[w], 1)
            np.add.at(occ, want, 1)
            edge[w], s[w], waiting[w] = nxt, 0.0, False
            seg[w], end_len[w] = want, graph.length[nxt]
        walking = ~waiting
        moving = np.bincount(seg[walking], minlength=len(occ))
        free_area = np.maximum(area - (occ - moving) / jam, 1e-3 * area)
        factor = weidmann_speed(np.minimum(moving / free_area, fd.rho_c), 1.0, jam_density=jam)
        v = v0 * factor[seg]
        v *= dt
        v += s
        np.copyto(s, np.minimum(v, end_len), where=walking)
        end = v >= end_len
        end &= walking
        done = np.flatnonzero(end)
        waiting[done] = True
        since[done] = tick
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spectators", type=int, default=200_000)
    parser.add_argument("--background", type=int, default=300_000)
    parser.add_argument("--walkers", type=int, default=20_000)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    scenario, streets, course = bench_scenario(args.spectators, args.background)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_crowd_"))
    out.mkdir(parents=True, exist_ok=True)
    wall, timing, model = run_stage(scenario, streets, course, out)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    vec_rate = model.people.n * model.n_ticks / timing["ticks_s"]
    print(json.dumps({"stage": timing, "summary": model.summary()}, default=str), file=sys.stderr)

    rng = np.random.default_rng(1)
    g = model.graph
    n = args.walkers
    real = np.flatnonzero(~g.connector)
    start = {
        "edge": rng.choice(real, n),
        "s": np.zeros(n),
        "dest": rng.integers(0, model.routes.next_edge.shape[0], n),
        "v0": np.clip(rng.normal(1.34, 0.26, n), 0.3, 2.5),
    }
    start["s"] = rng.random(n) * g.length[start["edge"]]
    kernel_s = vectorised_walkers(g, model.routes.next_edge, start, args.ticks)
    per_agent = PerAgentModel(g, model.routes.next_edge, start, seed=1)
    t0 = time.perf_counter()
    for _ in range(args.ticks):
        per_agent.step()
    mesa_s = time.perf_counter() - t0
    mesa_rate = n * args.ticks / mesa_s
    kernel_rate = n * args.ticks / kernel_s
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "peak_mem_mb": round(peak_mb, 1),
                "people": int(model.people.n),
                "ticks": int(model.n_ticks),
                "build_s": round(timing["build_s"], 2),
                "ticks_s": round(timing["ticks_s"], 2),
                "write_s": round(timing["write_s"], 2),
                "vectorised_agent_ticks_per_s": round(vec_rate),
                "vectorised_kernel_agent_ticks_per_s": round(kernel_rate),
                "mesa_agent_ticks_per_s": round(mesa_rate),
                "ratio_vs_mesa": round(vec_rate / mesa_rate, 1),
                "ratio_kernel_vs_mesa": round(kernel_rate / mesa_rate, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
