"""Will a run fit in memory? An estimate made before the large arrays are allocated.

A run's memory grows with the people it moves over the event (their arrays and the
operator records their phones make), with its routing tables (one row over every node
per destination: viewing stretch, origin, activity place) and with the count tables it
writes (zones x bins for the truth and each estimator, street segments x bins for the
street figures). The
estimate below adds these with per-row sizes that are this project's assumptions,
chosen on the high side of what the tables hold (8-byte numbers, a zone id, pandas and
Arrow copies while writing); it is an order of magnitude, not a measurement. The
budget is the machine's memory (``CROWDSIM_MEMORY_GB`` overrides it), so a scenario
that cannot fit is refused with what would fit, instead of dying in an allocation.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from sim.errors import ScenarioError
from sim.scenario import Scenario

__all__ = ["MemoryEstimate", "check_memory", "estimate_memory", "memory_budget"]

#: Fixed part: Python, the libraries, the street graph and the network plan (bytes).
BASE_BYTES = 1.0e9
#: Per person and hour of the event: state arrays, routes, and the operator records of
#: the phones (a few procedures per phone and hour, about 40 bytes each) (assumption).
PERSON_HOUR_BYTES = 1000.0
#: Per row of a zone x bin table (truth, and each estimator's estimates) (assumption).
ZONE_ROW_BYTES = 100.0
#: Per row of the street-segment x bin table of the truth (assumption).
STREET_ROW_BYTES = 60.0
#: Per destination and node of the routing tables: next edge and distance (4 bytes each),
#: and the Dijkstra run's own arrays while a table is rebuilt.
ROUTING_CELL_BYTES = 24.0
#: Share of the machine's memory a run may plan to use.
BUDGET_SHARE = 0.8


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of a run, by part (bytes)."""

    people: float
    zone_tables: float
    street_tables: float
    routing: float = 0.0
    base: float = BASE_BYTES

    @property
    def total(self) -> float:
        """The whole estimate (bytes)."""
        return self.base + self.people + self.routing + self.zone_tables + self.street_tables


def memory_budget() -> float:
    """Bytes a run may use: ``CROWDSIM_MEMORY_GB``, else 80 % of the machine's memory."""
    text = os.environ.get("CROWDSIM_MEMORY_GB")
    if text:
        try:
            gb = float(text)
        except ValueError:
            gb = math.nan
        if not (math.isfinite(gb) and gb > 0):
            raise ScenarioError(
                f"CROWDSIM_MEMORY_GB = {text!r}: give the memory a run may use, in GB (> 0)"
            )
        return gb * 1e9
    try:
        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not on this platform
        total = 16e9
    return BUDGET_SHARE * float(total)


def estimate_memory(
    scenario: Scenario,
    *,
    n_zones: int,
    n_street_segments: int,
    n_destinations: int = 0,
    n_nodes: int = 0,
) -> MemoryEstimate:
    """Estimate the peak memory of running `scenario`.

    Parameters
    ----------
    scenario
        Gives the people, the event's length, the bin and the estimators.
    n_zones
        Grid tiles + course segments + named areas.
    n_street_segments
        Street segments (both directions of a street are one).
    n_destinations, n_nodes
        Routing destinations and nodes of the walking graph (0: routing left out).
    """
    hours = scenario.event.duration_s / 3600.0
    bins = math.ceil(scenario.event.duration_s / scenario.zones.bin_s)
    people = scenario.people.spectators.count + scenario.people.background.count
    tables = 1 + len(set(scenario.estimators.methods))
    return MemoryEstimate(
        people=people * hours * PERSON_HOUR_BYTES,
        zone_tables=float(n_zones) * bins * tables * ZONE_ROW_BYTES,
        street_tables=float(n_street_segments) * bins * STREET_ROW_BYTES,
        routing=float(n_destinations) * n_nodes * ROUTING_CELL_BYTES,
    )


def check_memory(
    scenario: Scenario,
    *,
    n_zones: int,
    n_street_segments: int,
    n_destinations: int = 0,
    n_nodes: int = 0,
    budget: float | None = None,
) -> MemoryEstimate:
    """Refuse a scenario whose estimated memory exceeds the budget, saying what fits.

    Raises
    ------
    ScenarioError
        The estimate exceeds `budget` (default :func:`memory_budget`); the message names
        the scenario file, the keys that drive the estimate and values that would fit.
    """
    budget = memory_budget() if budget is None else budget
    est = estimate_memory(
        scenario,
        n_zones=n_zones,
        n_street_segments=n_street_segments,
        n_destinations=n_destinations,
        n_nodes=n_nodes,
    )
    if est.total <= budget:
        return est
    gb = 1e9
    people = scenario.people.spectators.count + scenario.people.background.count
    room = budget - est.base - est.routing - est.zone_tables - est.street_tables
    hours = scenario.event.duration_s / 3600.0
    fits = []
    if room > 0 and est.people > 0:
        fits.append(f"at most {int(room / (hours * PERSON_HOUR_BYTES)):,} people in all")
    tables = est.zone_tables + est.street_tables
    if tables > 0:
        share = max(budget - est.base - est.people - est.routing, 0.0) / tables
        if share > 0:
            fits.append(
                f"zone and street tables about {share:.2g} times their size (e.g. a larger "
                f"zones.grid_m, about {scenario.zones.grid_m / math.sqrt(share):.0f} m, or "
                f"zones.bin_s, or a shorter event)"
            )
    if est.routing > 0:
        share = max(budget - est.total + est.routing, 0.0) / est.routing
        if share > 0:
            fits.append(
                f"routing tables about {share:.2g} times their size ({n_destinations:,} "
                f"destinations x {n_nodes:,} nodes: a longer people.spectators.stretch_m, "
                "fewer origins or activity places)"
            )
    raise ScenarioError(
        f"{scenario.where('people, event, zones')}: the run would need about "
        f"{est.total / gb:.1f} GB (people {est.people / gb:.1f} GB for {people:,} people over "
        f"{hours:.1f} h; routing {est.routing / gb:.1f} GB; zone tables "
        f"{est.zone_tables / gb:.1f} GB for {n_zones:,} zones; "
        f"street tables {est.street_tables / gb:.1f} GB), more than the {budget / gb:.1f} GB "
        "this machine allows (set CROWDSIM_MEMORY_GB to change it). What would fit: "
        + ("; or ".join(fits) if fits else "nothing at this size")
        + "."
    )
