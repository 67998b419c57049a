"""Rebuild what the report needs from a finished run folder, to redraw it without rerunning.

The report draws from the run folder's tables plus the run's streets and course; those
two are rebuilt from the resolved ``scenario.toml`` and the street source the manifest
names (a prepared graph is read from the cache, so this costs about a second).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.errors import CrowdsimError

if TYPE_CHECKING:
    from sim.course import Course
    from sim.scenario import Scenario
    from sim.streets import Streets

__all__ = ["FinishedRun", "load_run_context"]


@dataclass(frozen=True, eq=False)
class FinishedRun:
    """A finished run as the report reads it: folder, scenario, stages, facts, streets, course.

    It is a :class:`~sim.report.write.RunView`: ``write_report(run, streets=run.streets,
    course=run.course)`` redraws the run's report.
    """

    scenario: Scenario
    out_dir: Path
    stages: Mapping[str, Mapping[str, Any]]
    facts: Mapping[str, Any]
    streets: Streets
    course: Course


def load_run_context(
    run_dir: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> FinishedRun:
    """A finished run folder, with its streets and course rebuilt, to redraw its report.

    Parameters
    ----------
    run_dir
        A folder written by ``crowdsim run`` (``scenario.toml`` and ``manifest.json``).
    cache_dir
        Folder of the prepared street-graph cache.

    Raises
    ------
    CrowdsimError
        The folder lacks ``scenario.toml`` or ``manifest.json``.
    """
    from sim.course import build_course
    from sim.scenario import load_scenario
    from sim.streets import load_streets

    run = Path(run_dir)
    for name in ("scenario.toml", "manifest.json"):
        if not (run / name).is_file():
            raise CrowdsimError(f"{run / name}: missing; give a folder `crowdsim run` wrote.")
    scenario = load_scenario(run / "scenario.toml")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    source = manifest.get("street_source") or {}
    osm = source.get("detail") if source.get("kind") == "file" else None
    route = scenario.route
    streets = load_streets(
        scenario.streets,
        osm=osm,
        waypoints=[(w.name, w.lat, w.lon) for w in route.waypoints],
        cache_dir=cache_dir,
    )
    return FinishedRun(
        scenario=scenario,
        out_dir=run,
        stages=dict(manifest.get("stages") or {}),
        facts=dict(manifest.get("facts") or {}),
        streets=streets,
        course=build_course(streets, route, scenario=scenario),
    )
