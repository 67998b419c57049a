"""Verification of the crowd's movement against pedestrian-dynamics literature.

RiMEA-style cases (RiMEA 2016, Guideline for Microscopic Evacuation Analysis, tests 1
and 4 in spirit) on small hand-made walkways, through the public :mod:`sim.crowd.walkways`
API only: the same tick as the city-scale model. Each case returns checks of one measured
figure against an expected value or range with its source; ``crowdsim verify crowd`` prints
them and exits non-zero when one fails.

Cases
-----
free walking
    A lone walker covers 1 km at its free speed 1.34 m/s in 746 s (Weidmann 1993), and
    40 m at 1.33 m/s in 26-34 s (RiMEA test 1).
fundamental diagram
    A one-way ring 500 m x 4 m filled evenly at 2, 3, 4 and 5 persons/m2: mean speed and
    specific flow within 10% of Weidmann's ``v(rho)`` and ``rho v(rho)`` (the mean speed
    is the specific flow over the density, which is constant on a ring).
fed corridor
    A 100 m x 4 m corridor fed at 1.15 /(m s) with identical walkers (the diagram's mean
    walker), below capacity: the same flow comes out
    (within 5%), and the entry segment stays below the critical density (no jam; the
    cell-transmission free branch).
bottlenecks
    2,000 people in a room in front of a bottleneck 10 m long and 1, 2 or 4 m wide: the
    specific flow through it within 1.1-1.9 /(m s) (Weidmann 1993; Kretz et al. 2006;
    Seyfried et al. 2009), the flow linear in the width (specific flows within 10% of each
    other), and the time to clear within 25% of ``N / (J_s b)`` with the model's capacity.
counterflow
    1,000 + 1,000 people crossing in a 50 m x 3 m street: all through in under 1,400 s.
conservation and gridlock
    4,000 walkers with random origins and destinations on a 4 x 4 grid of 1.5 m streets:
    everybody arrives (no permanent gridlock), and in every case at every tick the walkers
    present plus those arrived are all the walkers (nobody lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from sim.crowd.movement import weidmann_speed
from sim.crowd.walkways import WalkwayModel, walkway_graph

__all__ = ["CASES", "Check", "format_table", "run_cases"]

V0 = 1.34  # Weidmann's mean free speed (m/s)
JAM = 5.4


@dataclass(frozen=True)
class Check:
    """One measured figure against its expectation (``lo <= measured <= hi``)."""

    case: str
    quantity: str
    expected: str
    measured: float
    lo: float
    hi: float
    source: str
    unit: str = ""

    @property
    def ok(self) -> bool:
        """Whether the measured figure lies within its bounds."""
        return bool(np.isfinite(self.measured) and self.lo <= self.measured <= self.hi)

    def as_dict(self) -> dict[str, object]:
        """The check as plain values (for JSON)."""
        return asdict(self) | {"measured": round(float(self.measured), 4), "ok": self.ok}


class _Conservation:
    """Observer: present + arrived == added at every tick (nobody lost or doubled)."""

    def __init__(self) -> None:
        self.worst = 0

    def __call__(self, model: WalkwayModel) -> None:
        counts = model.state_counts()
        present = counts["waiting"] + counts["walking"] + counts["staying"] + counts["pending"]
        arrived = int(np.isfinite(model.arrival_s).sum())
        gone = counts["gone"]
        off = abs(present + arrived - model.people.n) + abs(gone - arrived)
        self.worst = max(self.worst, off)


def _line(n_pieces: int, piece_m: float, width: float) -> tuple[np.ndarray, ...]:
    x = np.arange(n_pieces + 1) * piece_m
    return x, np.zeros(n_pieces + 1), np.arange(n_pieces), np.arange(1, n_pieces + 1), width


def free_walking(lost: list[int]) -> list[Check]:
    """A lone walker: 1 km at 1.34 m/s, 40 m at 1.33 m/s (RiMEA test 1)."""
    out = []
    for length, v0, lo, hi, expected, source in (
        (1000.0, 1.34, 738.0, 754.0, "746 s (+-1%)", "Weidmann 1993 (v0 = 1.34 m/s)"),
        (40.0, 1.33, 26.0, 34.0, "26-34 s", "RiMEA test 1 (40 m at 1.33 m/s)"),
    ):
        x, y, u, v, w = _line(max(int(length // 20), 1), min(20.0, length), 2.0)
        model = WalkwayModel(walkway_graph(x, y, u, v, width=w), dt=0.5, seed=0)
        check = _Conservation()
        model.add_observer(check)
        model.add_walkers([0], [len(x) - 1], free_speed=[v0])
        model.run_until_clear(max_s=3 * length / v0)
        lost.append(check.worst)
        out.append(
            Check(
                "free walking",
                f"time to walk {length:g} m",
                expected,
                float(model.arrival_s[0]),
                lo,
                hi,
                source,
                "s",
            )
        )
    return out


def fundamental_diagram(lost: list[int]) -> list[Check]:
    """A one-way ring 500 m x 4 m at 2/3/4/5 persons/m2: speed and specific flow."""
    length, pieces, width = 500.0, 50, 4.0
    angle = np.arange(pieces) / pieces * 2 * np.pi
    radius = length / (2 * np.pi)
    nodes = np.arange(pieces)
    graph = walkway_graph(
        radius * np.cos(angle),
        radius * np.sin(angle),
        nodes,
        (nodes + 1) % pieces,
        width=width,
        length=length / pieces,
        one_way=True,
    )
    out = []
    for rho in (2.0, 3.0, 4.0, 5.0):
        model = WalkwayModel(graph, dt=1.0, seed=1)
        check = _Conservation()
        model.add_observer(check)
        n = round(rho * length * width)
        pos = (np.arange(n) + 0.5) / n * length  # evenly spread
        edge = np.minimum((pos // (length / pieces)).astype(np.int64), pieces - 1)
        offset = pos - edge * (length / pieces)
        # destination: the start of the edge behind, almost a full lap away
        model.add_walkers(None, (edge - 1) % pieces, edge=edge, offset=offset)
        model.run(until_s=220.0)
        lost.append(check.worst)
        flow = float(np.mean([model.flow(k, 60.0, 220.0) for k in range(0, pieces, 5)]))
        j_s = flow / width
        v_w = float(weidmann_speed(np.array([rho]), V0, jam_density=JAM)[0])
        out.append(
            Check(
                "fundamental diagram",
                f"speed at {rho:g} /m2 (J_s / rho)",
                f"{v_w:.3f} m/s (+-10%)",
                j_s / rho,
                0.9 * v_w,
                1.1 * v_w,
                "Weidmann 1993",
                "m/s",
            )
        )
        out.append(
            Check(
                "fundamental diagram",
                f"specific flow at {rho:g} /m2",
                f"{rho * v_w:.3f} /(m s) (+-10%)",
                j_s,
                0.9 * rho * v_w,
                1.1 * rho * v_w,
                "Weidmann 1993",
                "/(m s)",
            )
        )
    return out


def fed_corridor(lost: list[int]) -> list[Check]:
    """A 100 m x 4 m corridor fed at 1.15 /(m s) for 600 s: the flow passes through."""
    width, feed = 4.0, 1.15
    x, y, u, v, _ = _line(10, 10.0, width)
    # identical walkers: Weidmann's diagram is that of the mean walker. With the usual
    # spread of free speeds (SD 0.26 m/s) and free overtaking, a steady stream is denser
    # by the harmonic mean of the speeds (about 5%), which puts 1.15 at capacity
    model = WalkwayModel(walkway_graph(x, y, u, v, width=width), dt=1.0, free_speed_sd=0.0, seed=3)
    check = _Conservation()
    model.add_observer(check)
    rate = feed * width
    n = int(rate * 600.0)
    model.add_walkers(np.zeros(n, np.int64), np.full(n, 10), start_s=np.arange(n) / rate)
    first = model.edge_id(0, 1)
    peak = [0.0]
    model.add_observer(lambda m: peak.append(max(peak[-1], m.density(first))))
    model.run_until_clear(max_s=2000.0)
    lost.append(check.worst)
    return [
        Check(
            "fed corridor",
            "specific flow out (90 m downstream)",
            "1.15 /(m s) (+-5%)",
            model.flow(9, 200.0, 600.0) / width,
            0.95 * feed,
            1.05 * feed,
            "cell transmission, free branch (Daganzo 1994)",
            "/(m s)",
        ),
        Check(
            "fed corridor",
            "peak density on the entry segment",
            f"< rho_c = {model.fd.rho_c:.2f} /m2 (no jam)",
            peak[-1],
            0.0,
            model.fd.rho_c,
            "below capacity nothing queues (Daganzo 1994)",
            "/m2",
        ),
    ]


def bottlenecks(lost: list[int]) -> list[Check]:
    """2,000 people through bottlenecks 10 m long, 1/2/4 m wide."""
    n = 2000
    out = []
    specific = []
    for b in (1.0, 2.0, 4.0):
        # room 20 m x 40 m, bottleneck 10 m x b, exit 20 m x 40 m
        graph = walkway_graph([0.0, 20.0, 30.0, 50.0], np.zeros(4), [0, 1, 2], [1, 2, 3],
                              width=[40.0, b, 40.0])  # fmt: skip
        model = WalkwayModel(graph, dt=1.0, seed=4)
        check = _Conservation()
        model.add_observer(check)
        rng = np.random.default_rng(4)
        model.add_walkers(
            None, np.full(n, 3), edge=np.full(n, model.edge_id(0, 1)), offset=rng.random(n) * 20.0
        )
        model.run_until_clear(max_s=20_000.0)
        lost.append(check.worst)
        through = model.passes(2)
        lo, hi = through[int(0.1 * n)], through[int(0.9 * n)]
        j_s = 0.8 * n / (hi - lo) / b
        specific.append(j_s)
        clear = float(through[-1]) if len(through) == n else np.nan
        expected = n / (model.fd.q_max * b)
        out.append(
            Check(
                "bottleneck",
                f"specific flow, {b:g} m wide",
                "1.1-1.9 /(m s)",
                j_s,
                1.1,
                1.9,
                "Weidmann 1993; Kretz et al. 2006; Seyfried et al. 2009",
                "/(m s)",
            )
        )
        out.append(
            Check(
                "bottleneck",
                f"time to clear, {b:g} m wide",
                f"N/(J_s b) = {expected:.0f} s (+-25%)",
                clear,
                0.75 * expected,
                1.25 * expected,
                "N / (J_s b), J_s = model capacity",
                "s",
            )
        )
    spread = (max(specific) - min(specific)) / float(np.mean(specific))
    out.append(
        Check(
            "bottleneck",
            "flow linear in width: spread of J_s over 1/2/4 m",
            "< 10%",
            spread,
            0.0,
            0.10,
            "Seyfried et al. 2009 (flow grows linearly with width)",
        )
    )
    return out


def counterflow(lost: list[int]) -> list[Check]:
    """1,000 + 1,000 people crossing in a 50 m x 3 m street."""
    x = np.array([0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 90.0])
    graph = walkway_graph(x, np.zeros(8), np.arange(7), np.arange(1, 8),
                          width=[40.0, 3, 3, 3, 3, 3, 40.0])  # fmt: skip
    model = WalkwayModel(graph, dt=1.0, seed=5)
    check = _Conservation()
    model.add_observer(check)
    rng = np.random.default_rng(5)
    n = 1000
    for start, end, dest in ((0, 1, 7), (7, 6, 0)):
        model.add_walkers(
            None,
            np.full(n, dest),
            edge=np.full(n, model.edge_id(start, end)),
            offset=rng.random(n) * 20.0,
        )
    model.run_until_clear(max_s=5000.0)
    lost.append(check.worst)
    arrival = model.arrival_s
    return [
        Check(
            "counterflow",
            "time until all 2,000 are through",
            "< 1,400 s",
            float(arrival.max()) if np.isfinite(arrival).all() else np.nan,
            0.0,
            1400.0,
            "shared capacity both ways (Zhang et al. 2012)",
            "s",
        )
    ]


def gridlock(lost: list[int]) -> list[Check]:
    """4,000 random trips on a 4 x 4 grid of narrow streets: everybody arrives."""
    side, n = 4, 4000
    gx, gy = np.meshgrid(np.arange(side) * 30.0, np.arange(side) * 30.0)
    idx = np.arange(side * side).reshape(side, side)
    u = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    v = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    model = WalkwayModel(walkway_graph(gx.ravel(), gy.ravel(), u, v, width=1.5), dt=1.0, seed=6)
    check = _Conservation()
    model.add_observer(check)
    rng = np.random.default_rng(6)
    origin = rng.integers(0, side * side, n)
    dest = rng.integers(0, side * side - 1, n)
    dest = np.where(dest >= origin, dest + 1, dest)  # never the origin itself
    model.add_walkers(origin, dest, start_s=rng.random(n) * 300.0)
    model.run_until_clear(max_s=20_000.0)
    lost.append(check.worst)
    arrived = np.isfinite(model.arrival_s)
    return [
        Check(
            "conservation",
            "walkers arrived on a crossing grid (no gridlock)",
            "4000 of 4000",
            float(arrived.sum()),
            n,
            n,
            "every walker reaches its destination",
        ),
        Check(
            "conservation",
            "time until the grid is clear",
            "< 3,000 s (load ends at 300 s)",
            float(model.arrival_s[arrived].max()) if arrived.all() else np.nan,
            0.0,
            3000.0,
            "no permanent gridlock",
            "s",
        ),
    ]


#: The cases in the order they are run and printed.
CASES: dict[str, Callable[[list[int]], list[Check]]] = {
    "free walking": free_walking,
    "fundamental diagram": fundamental_diagram,
    "fed corridor": fed_corridor,
    "bottleneck": bottlenecks,
    "counterflow": counterflow,
    "conservation": gridlock,
}


def run_cases(names: list[str] | None = None) -> tuple[list[Check], dict[str, float]]:
    """Run the cases (all, or those named); returns the checks and seconds per case.

    The last check counts walkers lost or doubled at any tick of any case run (0).
    """
    unknown = sorted(set(names or []) - set(CASES))
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; allowed: {list(CASES)}")
    checks: list[Check] = []
    seconds: dict[str, float] = {}
    lost: list[int] = []
    for name, case in CASES.items():
        if names and name not in names:
            continue
        t0 = time.perf_counter()
        checks.extend(case(lost))
        seconds[name] = round(time.perf_counter() - t0, 2)
    checks.append(
        Check(
            "conservation",
            "walkers lost or doubled at any tick, all cases",
            "0",
            float(max(lost, default=0)),
            0.0,
            0.0,
            "present + arrived = added",
        )
    )
    return checks, seconds


def format_table(checks: list[Check]) -> str:
    """The checks as a plain-text table: case, quantity, expected, measured, source."""
    rows = [("case", "quantity", "expected", "measured", "ok", "source")]
    for c in checks:
        rows.append(
            (
                c.case,
                c.quantity,
                c.expected,
                f"{c.measured:.4g} {c.unit}".strip(),
                "pass" if c.ok else "FAIL",
                c.source,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
