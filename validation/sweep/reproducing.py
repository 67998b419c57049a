"""Reproducing one run of a sweep from its folder alone."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from sim.runfolder import SCENARIO, read_manifest
from sim.scenario import (
    parse_scenario,
)
from validation.scoring import run_validated
from validation.sweep.spec import SweepError

__all__ = [
    "reproduce_run",
]


def reproduce_run(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, progress: bool = False
) -> Any:
    """Run a run of a sweep again from its folder alone: its scenario.toml and manifest seeds.

    Parameters
    ----------
    run_dir
        A run folder (``DIR/runs/<run_id>``, or any run folder).
    out_dir
        Where to write the new run.

    Returns
    -------
    sim.run.RunResult
        The new run; its tables equal the original's.

    Raises
    ------
    SweepError
        `run_dir` lacks its scenario or a seed, or they are unreadable.
    RunFolderError
        `run_dir` is not a run folder (no readable manifest).
    """
    run = Path(run_dir)
    manifest = read_manifest(run)
    try:
        data = tomllib.loads((run / SCENARIO).read_text(encoding="utf-8"))
        seed = np.random.SeedSequence(
            int(manifest["seed"]), spawn_key=tuple(manifest.get("seed_spawn_key", []))
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SweepError(
            f"{run}: cannot reproduce: needs its manifest (seed, seed_spawn_key) and "
            f"{SCENARIO} ({type(exc).__name__}: {exc})"
        ) from None
    source = manifest.get("scenario_file")
    scenario = parse_scenario(data, source=Path(source) if source else run / SCENARIO)
    return run_validated(scenario, out_dir, seed=seed, progress=progress)
