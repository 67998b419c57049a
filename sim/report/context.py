"""Rebuild what the report needs from a finished run folder, to redraw it without rerunning.

The report draws from the run folder's tables plus the run's streets and course; those
two are rebuilt by :class:`sim.runfolder.RunFolder` from the resolved scenario and the
street source the run used (a prepared graph is read from the cache: about a second).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

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
        A folder written by ``crowdsim run`` that finished (:func:`sim.runfolder.open_run`).
    cache_dir
        Folder of the prepared street-graph cache.

    Raises
    ------
    RunFolderError
        Not a finished run folder, or its streets changed since the run.
    """
    from sim.run import RunContext, seed_sequences
    from sim.runfolder import open_run

    run = open_run(run_dir, purpose="the report", verify=False)
    streets = run.streets(cache_dir=cache_dir)
    ctx = RunContext(
        scenario=run.scenario,
        out_dir=run.path,
        seeds=seed_sequences(run.scenario.seed),
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        streets=streets,
        course=run.course(streets),
    )
    ctx.stages.update(run.stages)
    ctx.facts.update(run.facts)
    return ctx
