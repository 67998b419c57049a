"""Rebuild what the report needs from a finished run folder, to redraw it without rerunning.

The report draws from the run folder's tables plus the run's streets and course; those
two are rebuilt by :class:`sim.runfolder.RunFolder` from the resolved scenario and the
street source the run used (a prepared graph is read from the cache: about a second).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        A folder written by ``crowdsim run`` that finished (:func:`sim.runfolder.open_run`).
    cache_dir
        Folder of the prepared street-graph cache.

    Raises
    ------
    RunFolderError
        Not a finished run folder, or its streets changed since the run.
    """
    from sim.runfolder import open_run

    run = open_run(run_dir, purpose="the report", verify=False)
    streets = run.streets(cache_dir=cache_dir)
    return FinishedRun(
        scenario=run.scenario,
        out_dir=run.path,
        stages=dict(run.stages),
        facts=dict(run.facts),
        streets=streets,
        course=run.course(streets),
    )
