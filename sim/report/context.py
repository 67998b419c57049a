"""Rebuild what the report needs from a finished run folder, to redraw it without rerunning.

The report draws from the run folder's tables plus the run's streets and course; those
two are rebuilt from the resolved ``scenario.toml`` and the street source the manifest
names (a prepared graph is read from the cache, so this costs about a second).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sim.errors import CrowdsimError

if TYPE_CHECKING:
    from sim.run import RunContext

__all__ = ["load_run_context"]


def load_run_context(
    run_dir: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> RunContext:
    """The :class:`~sim.run.RunContext` of a finished run, with its streets and course.

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
    from sim.run import RunContext, seed_sequences
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
    ctx = RunContext(
        scenario=scenario,
        out_dir=run,
        seeds=seed_sequences(scenario.seed),
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        streets=streets,
        course=build_course(streets, route, scenario=scenario),
    )
    ctx.stages.update(manifest.get("stages") or {})
    ctx.facts.update(manifest.get("facts") or {})
    return ctx
