"""Side by side with JuPedSim: the same bottlenecks and corridor in both simulators (issue #11).

JuPedSim (Forschungszentrum Jülich) moves each pedestrian in continuous 2-D space with its
collision-free speed model (Tordeux, Chraibi & Seyfried 2016) at a 0.01 s step; crowdsim
moves walkers along the streets of a graph with a capacity-constrained node rule at a 1 s
step. Both get the same people (start positions, free speeds, feed times) in the same
places:

bottleneck
    N people at 2 /m2 in a waiting room in front of a bottleneck 10 m long and 1, 2 or 4 m
    wide. Reported: the specific flow J_s (persons/(m s)) through the bottleneck's end over
    the middle 80% of the passages, and the time until the last one has passed.
corridor
    A 40 m x 4 m corridor fed at 1.0 /(m s) (below capacity) for 120 s. Reported: the
    specific flow out at its end while the feed is steady there, the mean time to walk
    it, and the time it clears.

For each run it reports the wall time of the simulation loop and the wall time per
agent-step and per simulated agent-second (an agent-second is one person simulated for one
second; the two models step at different rates, so the second figure is the fair one).
Prints a table and, on its last line, one JSON object (seconds as ``*_s``, ratios as
``ratio_*``).

Run by hand, never as a timed test; it needs the optional extra
(``pip install -e ".[compare]"``). It lives in ``benchmarks/`` rather than ``validation/``
because it reports wall times, needs a dependency that the package does not, and is not
run by ``make bench`` (whose loop picks ``bench_*.py`` only). JuPedSim's cost grows with
N times the clearing time, which itself grows with N / width (about N^2 / width), so the
default N = 300 keeps each case to minutes (the 1 m one ran 9 on a busy 2-core machine;
``--people 150`` halves that; ``--people 2000``, the issue's size, would take hours).
crowdsim also runs each bottleneck alone with 2,000 people, which costs it seconds.

JuPedSim's collision-free speed model has no pushing: at a narrow door its agents can
lock in an arch, each with no free space ahead, and stay there. A bottleneck
run in which nobody passes for two simulated minutes stops; its table row shows how many
passed and its clearing time is NaN.

Usage: ``python benchmarks/compare_jupedsim.py [--people N] [--widths 1 2 4] [--seed S]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Radius of a JuPedSim agent (m) and the least gap between two start positions (m).
RADIUS_M = 0.2
START_GAP_M = 0.45
#: Free walking speeds of both simulators' people (Weidmann 1993: mean 1.34, SD 0.26 m/s).
FREE_SPEED = (1.34, 0.26)
#: Name of crowdsim's runs without a JuPedSim twin (more people than JuPedSim gets here).
ALONE = "crowdsim alone"
#: Name of crowdsim's runs with JuPedSim's measured bottleneck flow as their capacity.
CALIBRATED = "crowdsim q=JPS"


@dataclass(frozen=True)
class Bottleneck:
    """A waiting room of `people` at `density` /m2 in front of a bottleneck.

    The room is ``room_width_m`` wide (at least 8 m and twice the bottleneck plus 4 m, so
    its walls do not shape the queue) and as deep as the people need; the bottleneck
    starts at x = 0 and ends at x = ``length_m``.
    """

    width_m: float
    people: int
    length_m: float = 10.0
    density: float = 2.0

    @property
    def room_width_m(self) -> float:
        return max(8.0, 2.0 * self.width_m + 4.0)

    @property
    def spacing_m(self) -> float:
        """Distance between neighbours on the start grid (m)."""
        return 1.0 / math.sqrt(self.density)

    @property
    def grid_columns(self) -> np.ndarray:
        """Y of the start grid's columns: half a spacing, then 0.3 m, from the walls."""
        a = self.spacing_m
        return np.arange(a / 2, self.room_width_m - 0.3, a)

    @property
    def room_depth_m(self) -> float:
        rows = math.ceil(self.people / len(self.grid_columns))
        return rows * self.spacing_m + 0.5


@dataclass(frozen=True)
class Corridor:
    """A corridor fed at its entrance at `feed` persons/(m s) for `feed_s` seconds."""

    width_m: float = 4.0
    length_m: float = 40.0
    feed: float = 1.0
    feed_s: float = 120.0

    @property
    def people(self) -> int:
        return int(self.feed * self.width_m * self.feed_s)


@dataclass(frozen=True)
class People:
    """Who takes part: start positions (m, bottleneck only), start times (s), free speeds."""

    xy: np.ndarray
    start_s: np.ndarray
    free_speed: np.ndarray


@dataclass
class Outcome:
    """What one simulator made of one case."""

    simulator: str
    case: str
    people: int
    flow: float  # specific flow, persons/(m s)
    clear_s: float
    wall_s: float
    agent_steps: float
    agent_seconds: float
    passed: int = -1  # people through; fewer than `people` if the run stopped (clogged)
    travel_s: float = math.nan  # corridor: mean time to walk it

    def __post_init__(self) -> None:
        if self.passed < 0:
            self.passed = self.people

    @property
    def per_agent_step_s(self) -> float:
        return self.wall_s / max(self.agent_steps, 1.0)

    @property
    def per_agent_second_s(self) -> float:
        return self.wall_s / max(self.agent_seconds, 1e-9)


# ----------------------------------------------------------------------------- the people


def free_speeds(n: int, rng: np.random.Generator) -> np.ndarray:
    """Individual free speeds (m/s), clipped to 0.5-2.0 as in both models' usual set-ups."""
    return np.clip(rng.normal(*FREE_SPEED, n), 0.5, 2.0)


def bottleneck_people(case: Bottleneck, *, rng: np.random.Generator) -> People:
    """`case.people` on a jittered grid in the room (x < 0), no two closer than 0.45 m.

    A square grid at the case's density with each point moved by at most 0.1 m keeps every
    pair at least ``1/sqrt(density) - 0.2`` m apart (0.51 m at 2 /m2), so JuPedSim accepts
    them all (its agents must not overlap); the people nearest the bottleneck's axis fill
    the grid first, as in a room that has filled from its door.
    """
    a = case.spacing_m
    if a - 0.2 < START_GAP_M:
        raise ValueError(
            f"density {case.density!r} /m2 is too high to place people {START_GAP_M} m apart"
        )
    cols = case.grid_columns
    rows = np.arange(a / 2, case.room_depth_m - 0.3, a)
    gx, gy = np.meshgrid(-rows, cols, indexing="ij")
    xy = np.column_stack([gx.ravel(), gy.ravel()])
    if len(xy) < case.people:
        raise ValueError(f"room of {case.room_depth_m:g} m holds {len(xy)} < {case.people}")
    # nearest the door first: by distance to the bottleneck's entrance
    order = np.argsort(np.hypot(xy[:, 0], xy[:, 1] - case.room_width_m / 2), kind="stable")
    xy = xy[order[: case.people]] + rng.uniform(-0.1, 0.1, (case.people, 2))
    return People(xy=xy, start_s=np.zeros(case.people), free_speed=free_speeds(case.people, rng))


def corridor_people(case: Corridor, *, rng: np.random.Generator) -> People:
    """Evenly spaced feed times at the case's rate, with their free speeds."""
    n = case.people
    rate = case.feed * case.width_m
    return People(xy=np.zeros((n, 2)), start_s=np.arange(n) / rate, free_speed=free_speeds(n, rng))


def steady_flow(case: Corridor, passes_s: np.ndarray) -> float:
    """Specific flow (persons/(m s)) out of the corridor while its feed is steady there.

    The window is the middle 60% of the feed, shifted by the walk at the mean free speed:
    the middle 80% of the passages would also count the stream's head and tail, which a
    spread of speeds thins out (an outflow below the feed without any jam).
    """
    walk = case.length_m / FREE_SPEED[0]
    start, end = walk + 0.2 * case.feed_s, walk + 0.8 * case.feed_s
    inside = (passes_s >= start) & (passes_s < end)
    return float(inside.sum()) / (end - start) / case.width_m


def specific_flow(passes_s: np.ndarray, width_m: float) -> float:
    """Specific flow (persons/(m s)) over the middle 80% of sorted passage times."""
    n = len(passes_s)
    lo, hi = int(0.1 * n), int(0.9 * n) - 1
    if hi <= lo or passes_s[hi] <= passes_s[lo]:
        return math.nan
    return (hi - lo) / float(passes_s[hi] - passes_s[lo]) / width_m


# ----------------------------------------------------------------------------- JuPedSim


def _lanes(lo: float, hi: float, about_m: float) -> np.ndarray:
    """Edges of lanes about `about_m` wide splitting ``[lo, hi]`` (at least one lane)."""
    return np.linspace(lo, hi, max(1, round((hi - lo) / about_m)) + 1)


def _jps_simulation(
    geometry: object, x0: float, x1: float, lanes: np.ndarray, dt: float
) -> tuple[object, list[tuple[int, int]]]:
    """A collision-free speed model simulation with one exit stage (and journey) per lane.

    JuPedSim's agents head for the centre of their exit polygon, and its documentation
    warns that one wide exit funnels them to that point; one exit per lane of the exit
    strip ``x0 <= x <= x1`` lets them use the whole width, as people do. The strip lies
    in a 1 m run-out beyond the measuring line x0, so an agent is removed as it crosses
    that line and no end wall slows it before.
    """
    import jupedsim as jps
    import shapely

    sim = jps.Simulation(model=jps.CollisionFreeSpeedModel(), geometry=geometry, dt=dt)
    exits = []
    for lo, hi in itertools.pairwise(lanes):
        exit_id = sim.add_exit_stage(shapely.box(x0, lo, x1, hi))
        exits.append((sim.add_journey(jps.JourneyDescription([exit_id])), exit_id))
    return sim, exits


def _jps_agent(journey: int, stage: int, xy: Sequence[float], v0: float) -> object:
    import jupedsim as jps

    return jps.CollisionFreeSpeedModelAgentParameters(
        journey_id=journey,
        stage_id=stage,
        position=(float(xy[0]), float(xy[1])),
        desired_speed=float(v0),
        radius=RADIUS_M,
    )


def jupedsim_bottleneck(
    case: Bottleneck,
    people: People,
    *,
    dt: float = 0.01,
    max_s: float = 20_000.0,
    stall_s: float = 120.0,
) -> Outcome:
    """The bottleneck in JuPedSim's collision-free speed model.

    The exit stages lie just beyond the bottleneck's end, split in lanes; each person
    heads for the lane nearest its own y. An agent's removal is its passage through the
    bottleneck's end (to within one step). A run in which nobody passes for `stall_s`
    (a clogged bottleneck) stops there, and its clearing time is NaN.
    """
    import shapely

    w, b, length = case.room_width_m, case.width_m, case.length_m
    room = shapely.box(-case.room_depth_m, 0.0, 0.0, w)
    neck = shapely.box(0.0, (w - b) / 2, length + 1.0, (w + b) / 2)
    lanes = _lanes((w - b) / 2, (w + b) / 2, 1.0)
    sim, exits = _jps_simulation(shapely.union(room, neck), length, length + 1.0, lanes, dt)
    # each person heads for the lane of the bottleneck nearest its own y
    lane = np.clip(np.searchsorted(lanes, people.xy[:, 1]) - 1, 0, len(exits) - 1)
    for xy, v0, k in zip(people.xy, people.free_speed, lane, strict=True):
        sim.add_agent(_jps_agent(*exits[k], xy, v0))
    passes: list[float] = [0.0]
    steps = 0
    report = round(60.0 / dt)
    t0 = time.perf_counter()
    while sim.agent_count() > 0 and sim.elapsed_time() < max_s:
        before = sim.agent_count()
        steps += before
        sim.iterate()
        gone = before - sim.agent_count()
        if gone:
            passes.extend([sim.elapsed_time()] * gone)
        if sim.iteration_count() % report == 0:
            now = sim.elapsed_time()
            print(f"  JuPedSim {b:g} m: {now:.0f} s, {before} left", file=sys.stderr, flush=True)
            if now - passes[-1] > stall_s:
                print(f"  nobody passed for {stall_s:g} s: stopped", file=sys.stderr)
                break
    wall = time.perf_counter() - t0
    passes = passes[1:]
    t = np.asarray(passes)
    return Outcome(
        simulator="JuPedSim CFSM",
        case=f"bottleneck {b:g} m",
        people=case.people,
        passed=len(t),
        flow=specific_flow(t, b),
        clear_s=float(t[-1]) if len(t) == case.people else math.nan,
        wall_s=wall,
        agent_steps=float(steps),
        agent_seconds=steps * dt,
    )


def jupedsim_corridor(
    case: Corridor,
    people: People,
    *,
    rng: np.random.Generator,
    dt: float = 0.01,
    max_s: float = 5_000.0,
) -> Outcome:
    """The fed corridor in JuPedSim's collision-free speed model.

    A person due at the entrance steps in at x = 0.3 m at a random free place across the
    corridor (no agent within 0.45 m; five tries, else it waits for the next step, and the
    wait counts in its walking time) and heads for the exit lane ahead of it, beyond the
    corridor's end. Random places let the agents stagger as people do; in fixed lanes the
    model's time gap of 1 s caps a lane at v / (0.4 m + v 1 s), about 0.77 /s.
    """
    import shapely

    w, length = case.width_m, case.length_m
    lanes = _lanes(0.0, w, 0.5)
    corridor = shapely.box(0.0, 0.0, length + 1.0, w)
    sim, exits = _jps_simulation(corridor, length, length + 1.0, lanes, dt)
    due = 0
    entered: dict[int, float] = {}  # agent id -> due time of the person
    walked: list[float] = []
    passes: list[float] = []
    steps = 0
    n = len(people.start_s)
    t0 = time.perf_counter()
    while (due < n or sim.agent_count() > 0) and sim.elapsed_time() < max_s:
        now = sim.elapsed_time()
        while due < n and people.start_s[due] <= now + 1e-9:
            for y in rng.uniform(RADIUS_M + 0.05, w - RADIUS_M - 0.05, 5):
                spot = (0.3, float(y))
                if next(iter(sim.agents_in_range(spot, START_GAP_M)), None) is None:
                    lane = min(int(np.searchsorted(lanes, y)) - 1, len(exits) - 1)
                    agent = _jps_agent(*exits[max(lane, 0)], spot, people.free_speed[due])
                    entered[sim.add_agent(agent)] = float(people.start_s[due])
                    due += 1
                    break
            else:
                break  # the entrance is full: try again next step
        steps += sim.agent_count()
        sim.iterate()
        for agent_id in sim.removed_agents():
            passes.append(sim.elapsed_time())
            walked.append(sim.elapsed_time() - entered.pop(agent_id))
    wall = time.perf_counter() - t0
    t = np.sort(np.asarray(passes))
    return Outcome(
        simulator="JuPedSim CFSM",
        case=f"corridor {w:g} x {length:g} m",
        people=n,
        passed=len(t),
        flow=steady_flow(case, t),
        clear_s=float(t[-1]) if len(t) == n else math.nan,
        wall_s=wall,
        agent_steps=float(steps),
        agent_seconds=steps * dt,
        travel_s=float(np.mean(walked)) if walked else math.nan,
    )


# ----------------------------------------------------------------------------- crowdsim


def crowdsim_bottleneck(
    case: Bottleneck,
    people: People,
    *,
    dt: float = 1.0,
    q_max: float | None = None,
    seed: int = 0,
) -> Outcome:
    """The bottleneck as three streets: the room, the bottleneck and the way out.

    Each person starts on the room's street as far from the bottleneck as its x in the
    JuPedSim room, with its JuPedSim free speed; its passage is logged at the node at the
    bottleneck's end, which is its destination.
    """
    from sim.crowd import WalkwayModel, walkway_graph

    depth = case.room_depth_m
    graph = walkway_graph(
        [-depth, 0.0, case.length_m], [0.0, 0.0, 0.0], [0, 1], [1, 2],
        width=[case.room_width_m, case.width_m],
    )  # fmt: skip
    model = WalkwayModel(graph, dt=dt, q_max=q_max, seed=seed)
    model.add_walkers(
        None,
        np.full(case.people, 2),
        edge=np.full(case.people, model.edge_id(0, 1)),
        offset=np.clip(people.xy[:, 0] + depth, 0.0, depth),
        free_speed=people.free_speed,
    )
    t0 = time.perf_counter()
    model.run_until_clear(max_s=20_000.0)
    wall = time.perf_counter() - t0
    t = model.passes(2)
    seconds = float(np.nansum(model.arrival_s))  # everybody starts at 0 s
    return Outcome(
        simulator="crowdsim",
        case=f"bottleneck {case.width_m:g} m",
        people=case.people,
        passed=len(t),
        flow=specific_flow(t, case.width_m),
        clear_s=float(t[-1]) if len(t) == case.people else math.nan,
        wall_s=wall,
        agent_steps=seconds / dt,
        agent_seconds=seconds,
    )


def crowdsim_corridor(
    case: Corridor,
    people: People,
    *,
    dt: float = 1.0,
    q_max: float | None = None,
    seed: int = 0,
) -> Outcome:
    """The fed corridor as a line of 10 m streets; walkers start at node 0 when due."""
    from sim.crowd import WalkwayModel, walkway_graph

    pieces = max(1, round(case.length_m / 10.0))
    x = np.linspace(0.0, case.length_m, pieces + 1)
    graph = walkway_graph(
        x, np.zeros_like(x), np.arange(pieces), np.arange(1, pieces + 1), width=case.width_m
    )
    model = WalkwayModel(graph, dt=dt, q_max=q_max, seed=seed)
    n = len(people.start_s)
    model.add_walkers(
        np.zeros(n, np.int64),
        np.full(n, pieces),
        start_s=people.start_s,
        free_speed=people.free_speed,
    )
    t0 = time.perf_counter()
    model.run_until_clear(max_s=5_000.0)
    wall = time.perf_counter() - t0
    t = model.passes(pieces)
    walked = model.arrival_s - people.start_s
    seconds = float(np.nansum(walked))
    return Outcome(
        simulator="crowdsim",
        case=f"corridor {case.width_m:g} x {case.length_m:g} m",
        people=n,
        passed=len(t),
        flow=steady_flow(case, t),
        clear_s=float(t[-1]) if len(t) == n else math.nan,
        wall_s=wall,
        agent_steps=seconds / dt,
        agent_seconds=seconds,
        travel_s=float(np.nanmean(walked)),
    )


# ----------------------------------------------------------------------------- the run


class _Outcomes(list):
    """A list of outcomes that says each one on stderr as it comes (JuPedSim takes minutes)."""

    def append(self, outcome: Outcome) -> None:
        super().append(outcome)
        print(format_table([outcome]).splitlines()[-1], file=sys.stderr, flush=True)


def run(  # noqa: C901 - the measurement, step by step: each simulator, each case
    *,
    people: int = 300,
    widths: Sequence[float] = (1.0, 2.0, 4.0),
    corridor: Corridor | None = None,
    seed: int = 0,
    simulators: Sequence[str] = ("jupedsim", "crowdsim"),
    crowdsim_people: int | None = None,
    q_max: float | None = None,
    calibrate: bool = True,
) -> list[Outcome]:
    """Every case in each simulator, on the same people (same seed -> same people).

    With `crowdsim_people`, crowdsim also runs each bottleneck alone with that many people
    (e.g. the issue's 2,000, too slow for JuPedSim here), to show its cost per agent at a
    size where the fixed cost of a tick no longer dominates. `q_max` is crowdsim's
    capacity (persons/(m s); ``None``: Weidmann's, about 1.22). With `calibrate`, crowdsim
    runs each bottleneck once more with JuPedSim's measured J_s as its capacity: given the
    same capacity, does the mesoscopic model clear the room as fast?
    """
    unknown = set(simulators) - {"jupedsim", "crowdsim"}
    if unknown:
        raise ValueError(f"unknown simulator(s) {sorted(unknown)}; use jupedsim, crowdsim")
    rng = np.random.default_rng(seed)
    out = _Outcomes()
    for b in widths:
        if not b > 0:
            raise ValueError(f"bottleneck width {b!r} m must be > 0")
        case = Bottleneck(width_m=float(b), people=people)
        crowd = bottleneck_people(case, rng=rng)
        jps_flow = math.nan
        if "jupedsim" in simulators:
            out.append(jupedsim_bottleneck(case, crowd))
            jps_flow = out[-1].flow
        if "crowdsim" in simulators:
            out.append(crowdsim_bottleneck(case, crowd, q_max=q_max, seed=seed))
            if calibrate and math.isfinite(jps_flow):
                twin = crowdsim_bottleneck(case, crowd, q_max=jps_flow, seed=seed)
                twin.simulator = CALIBRATED
                out.append(twin)
        if crowdsim_people and "crowdsim" in simulators:
            big = Bottleneck(width_m=float(b), people=crowdsim_people)
            alone = crowdsim_bottleneck(
                big, bottleneck_people(big, rng=rng), q_max=q_max, seed=seed
            )
            alone.simulator = ALONE
            out.append(alone)
    if corridor is not None:
        if not (corridor.feed > 0 and corridor.feed_s > 0 and corridor.people >= 10):
            raise ValueError(
                f"corridor feed {corridor.feed!r} /(m s) for {corridor.feed_s!r} s brings "
                f"{corridor.people} people; both must be > 0 and bring at least 10"
            )
        crowd = corridor_people(corridor, rng=rng)
        if "jupedsim" in simulators:
            out.append(jupedsim_corridor(corridor, crowd, rng=rng))
        if "crowdsim" in simulators:
            out.append(crowdsim_corridor(corridor, crowd, q_max=q_max, seed=seed))
    return list(out)


def format_table(outcomes: Sequence[Outcome]) -> str:
    """One row per simulator and case."""
    head = (
        f"{'case':<20} {'simulator':<15} {'N':>5} {'passed':>6} {'J_s /(m s)':>10} {'clear s':>8} "
        f"{'walk s':>7} {'wall s':>8} {'us/agent-step':>13} {'us/agent-s':>10}"
    )
    rows = [head, "-" * len(head)]
    for o in outcomes:
        rows.append(
            f"{o.case:<20} {o.simulator:<15} {o.people:>5} {o.passed:>6} {o.flow:>10.2f} "
            f"{o.clear_s:>8.0f} "
            f"{o.travel_s:>7.1f} {o.wall_s:>8.2f} {o.per_agent_step_s * 1e6:>13.2f} "
            f"{o.per_agent_second_s * 1e6:>10.2f}"
        )
    return "\n".join(rows)


def summary(outcomes: Sequence[Outcome]) -> dict[str, float | None]:
    """The figures as one flat dict: per case and simulator, then JuPedSim/crowdsim ratios.

    Ratios over all paired cases add up wall times and agent-steps (or agent-seconds)
    first. A figure that could not be measured (nobody passed) is ``None``.
    """
    out: dict[str, float] = {}
    by: dict[str, dict[str, Outcome]] = {}
    for o in outcomes:
        sim = "jupedsim" if o.simulator.startswith("JuPedSim") else "crowdsim"
        key = o.case.split(" x ")[0].replace(" ", "_").replace(".", "p")
        if o.simulator == ALONE:
            sim = f"crowdsim_alone_n{o.people}"
        elif o.simulator == CALIBRATED:
            sim = "crowdsim_calibrated"
        by.setdefault(key, {})[sim] = o
        out[f"{sim}_{key}_specific_flow"] = round(o.flow, 3)
        out[f"{sim}_{key}_clear_s"] = round(o.clear_s, 1)
        out[f"{sim}_{key}_passed"] = o.passed
        if not math.isnan(o.travel_s):
            out[f"{sim}_{key}_walk_s"] = round(o.travel_s, 1)
        out[f"{sim}_{key}_wall_s"] = round(o.wall_s, 3)
        out[f"{sim}_{key}_per_agent_step_s"] = float(f"{o.per_agent_step_s:.3g}")
        out[f"{sim}_{key}_per_agent_second_s"] = float(f"{o.per_agent_second_s:.3g}")
    for key, pair in by.items():
        if "jupedsim" not in pair or "crowdsim" not in pair:
            continue
        j, c = pair["jupedsim"], pair["crowdsim"]
        out[f"ratio_{key}_flow_crowdsim_to_jupedsim"] = round(c.flow / j.flow, 3)
        out[f"ratio_{key}_clear_crowdsim_to_jupedsim"] = round(c.clear_s / j.clear_s, 3)
        out[f"ratio_{key}_wall_jupedsim_to_crowdsim"] = round(j.wall_s / c.wall_s, 1)
        out[f"ratio_{key}_per_agent_second_jupedsim_to_crowdsim"] = round(
            j.per_agent_second_s / c.per_agent_second_s, 1
        )
        if "crowdsim_calibrated" in pair:
            twin = pair["crowdsim_calibrated"]
            out[f"ratio_{key}_clear_calibrated_to_jupedsim"] = round(twin.clear_s / j.clear_s, 3)
    pairs = [p for p in by.values() if "jupedsim" in p and "crowdsim" in p]
    if pairs:
        cost = {
            sim: (
                sum(p[sim].wall_s for p in pairs),
                sum(p[sim].agent_steps for p in pairs),
                sum(p[sim].agent_seconds for p in pairs),
            )
            for sim in ("jupedsim", "crowdsim")
        }
        (jw, jn, js), (cw, cn, cs) = cost["jupedsim"], cost["crowdsim"]
        out["jupedsim_wall_s"] = round(jw, 2)
        out["crowdsim_wall_s"] = round(cw, 2)
        out["ratio_wall_jupedsim_to_crowdsim"] = round(jw / cw, 1)
        out["ratio_per_agent_step_jupedsim_to_crowdsim"] = round((jw / jn) / (cw / cn), 2)
        out["ratio_per_agent_second_jupedsim_to_crowdsim"] = round((jw / js) / (cw / cs), 1)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=300, help="people in the waiting room")
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--feed", type=float, default=1.0, help="corridor feed, /(m s)")
    parser.add_argument("--feed-s", type=float, default=120.0, help="corridor feed time, s")
    parser.add_argument("--no-corridor", action="store_true")
    parser.add_argument("--only", choices=["jupedsim", "crowdsim"], default=None)
    parser.add_argument(
        "--crowdsim-people",
        type=int,
        default=2000,
        help="also run crowdsim alone on each bottleneck with this many (0: no)",
    )
    parser.add_argument(
        "--q-max", type=float, default=None, help="crowdsim's capacity, /(m s) (Weidmann's)"
    )
    parser.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip crowdsim's rerun with JuPedSim's bottleneck flow as its capacity",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.people < 10:
        parser.error(f"--people {args.people}: at least 10 are needed to measure a flow")
    corridor = None if args.no_corridor else Corridor(feed=args.feed, feed_s=args.feed_s)
    outcomes = run(
        people=args.people,
        widths=args.widths,
        corridor=corridor,
        seed=args.seed,
        simulators=[args.only] if args.only else ["jupedsim", "crowdsim"],
        crowdsim_people=args.crowdsim_people or None,
        q_max=args.q_max,
        calibrate=not args.no_calibrate,
    )
    print(format_table(outcomes))
    print(json.dumps(summary(outcomes)))


if __name__ == "__main__":
    main()
