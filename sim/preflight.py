"""Check a scenario against its streets before anything heavy runs.

:func:`check_scenario` does what a run does before it moves anybody: it loads the
streets, builds the course, checks the named closures and areas against the street
data, and estimates whether the run fits in memory. It takes seconds where a run takes
minutes, so ``crowdsim check`` can tell a user (or a test feeding it many scenarios)
whether a scenario is runnable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from sim.budget import MemoryEstimate, check_memory
from sim.course import Course, build_course
from sim.errors import ScenarioError, StreetDataError
from sim.scenario import Scenario
from sim.streets import Streets, load_streets, to_metres
from sim.zones import Places, build_places

__all__ = ["Preflight", "check_scenario"]


@dataclass(frozen=True, eq=False)
class Preflight:
    """What the checks found: the streets, the course and the memory estimate."""

    streets: Streets
    course: Course
    memory: MemoryEstimate

    def summary(self) -> dict[str, Any]:
        """Figures to print: streets, course length, estimated memory."""
        return {
            "streets": self.streets.summary(),
            "course_km": round(self.course.length_m / 1000.0, 3),
            "memory_gb": round(self.memory.total / 1e9, 2),
        }


def check_scenario(
    scenario: Scenario,
    *,
    osm: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    budget: float | None = None,
) -> Preflight:
    """Check `scenario` against its streets: course, closures, areas, memory.

    Parameters
    ----------
    scenario
        A validated scenario.
    osm
        An explicit street file, as ``crowdsim run --osm``.
    cache_dir
        Folder of the prepared street-graph cache.
    budget
        Memory a run may use (bytes); default :func:`sim.budget.memory_budget`.

    Raises
    ------
    CrowdsimError
        A street source that cannot be loaded, a waypoint off the streets, a course of
        length 0, a closure naming an unknown street, an area outside the streets, or a
        run too large for the memory; the message names the file and the key.
    """
    waypoints = [(w.name, w.lat, w.lon) for w in scenario.route.waypoints]
    try:
        streets = load_streets(scenario.streets, osm=osm, waypoints=waypoints, cache_dir=cache_dir)
    except StreetDataError as exc:  # name the scenario whose streets these are
        raise StreetDataError(f"{scenario.where('streets')}: {exc}") from None
    course = build_course(streets, scenario.route, scenario=scenario)
    check_closures(scenario, streets)
    places = build_places(streets.x, streets.y, streets.edge_u, streets.edge_v, streets.length)
    _check_areas(scenario, places)
    memory = check_memory(
        scenario,
        n_zones=_zone_count(scenario, places, course),
        n_street_segments=streets.n_edges // 2,
        n_destinations=_destination_count(scenario, course),
        n_nodes=streets.n_nodes,
        budget=budget,
    )
    return Preflight(streets=streets, course=course, memory=memory)


def check_closures(scenario: Scenario, streets: Streets) -> None:
    """Every street a closure names exists in `streets`."""
    for i, closure in enumerate(scenario.closures):
        for j, street in enumerate(closure.streets):
            if len(streets.edges_named(street)) == 0:
                raise ScenarioError(
                    f"{scenario.where(f'closures[{i}].streets[{j}]')}: no street named "
                    f"{street!r} in {streets.source.describe()}. Use the OSM name, in "
                    "French or Dutch (e.g. 'Rue Belliard' or 'Belliardstraat')."
                )


def _check_areas(scenario: Scenario, places: Places) -> None:
    """Every named area holds a place of the streets (as :func:`sim.zones.build_zones`)."""
    tree = cKDTree(np.column_stack([places.x, places.y]))
    for i, area in enumerate(scenario.zones.areas):
        ax, ay = (float(v) for v in to_metres(area.lon, area.lat))
        if not tree.query_ball_point([ax, ay], area.radius_m, return_length=True):
            raise ScenarioError(
                f"{scenario.where(f'zones.areas[{i}]')} ({area.name!r} at {area.lat}, "
                f"{area.lon}, radius {area.radius_m:g} m) holds no street of the street "
                "data: it lies outside it. Move it, enlarge radius_m, or load data covering it."
            )


def _zone_count(scenario: Scenario, places: Places, course: Course) -> int:
    """Grid tiles holding a place, course segments and named areas."""
    cfg = scenario.zones
    tiles = np.unique(np.column_stack([places.x // cfg.grid_m, places.y // cfg.grid_m]), axis=0)
    m = course.piece_m
    segments = int(np.maximum(np.ceil((m[:, 1] - m[:, 0]) / cfg.segment_m), 1).sum())
    return len(tiles) + segments + len(cfg.areas)


def _destination_count(scenario: Scenario, course: Course) -> int:
    """Routing destinations: viewing stretches (both sides), origins, activity places."""
    people = scenario.people
    m = course.piece_m
    stretches = int(np.ceil((m[:, 1] - m[:, 0]) / people.spectators.stretch_m).sum()) * 2
    places = people.background.activity_places if people.background.count else 0
    return stretches + len(people.spectators.origins) + places
