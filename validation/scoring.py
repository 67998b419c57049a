"""The validation stage of a run, and the entry point of a run that is scored.

``validation`` imports :mod:`sim`, never the reverse (DESIGN §2), so the run does not
import its scorer: whoever starts a run that should be scored (``crowdsim run``, a
sweep, a script) calls :func:`run_validated`, which hands :func:`score_run` to
:func:`sim.run.run_scenario` as its validation stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sim.run import RunResult, StageOutput, run_scenario
from sim.scenario import Scenario
from validation.metrics import write_metrics

__all__ = ["KWD_MAX_BINS", "run_validated", "score_run"]

#: The KWD (the costly metric) is computed on at most this many bins of a run.
KWD_MAX_BINS = 12
#: Metrics of each method and zone system that the manifest keeps (the rest: metrics.json).
_KEPT = ("mae", "mape", "bias", "coverage", "kwd_mean_m")


def score_run(run_dir: str | os.PathLike[str]) -> StageOutput:
    """Score a run folder's estimates against its truth: the validation stage of a run.

    Writes ``metrics.parquet`` (+ per zone, per bin) and ``metrics.json``. The KWD is
    computed every 5 bins, or on :data:`KWD_MAX_BINS` bins spread over the run when it
    is longer than an hour.

    Returns
    -------
    sim.run.StageOutput
        The note (area MAPE per method, the headline), the files written and the facts
        the manifest keeps.
    """
    written, summary = write_metrics(Path(run_dir), kwd_max_bins=KWD_MAX_BINS)
    facts: dict[str, Any] = {
        "floor": summary["floor"],
        "kwd_stride": summary["kwd_stride"],
        "unscored": summary["unscored"],
        "metrics": {
            method: {
                system: {k: v for k, v in values.items() if k in _KEPT}
                for system, values in by_system.items()
            }
            for method, by_system in summary["metrics"].items()
        },
    }
    if "persons" in summary:  # people among the operator's devices (multi-SIM)
        facts["persons"] = summary["persons"]
    area = {m: s["area"]["mape"] for m, s in summary["metrics"].items() if "area" in s}
    shown = ", ".join(f"{m} {v:.0%}" if v is not None else f"{m} n/a" for m, v in area.items())
    note = f"metrics of {len(summary['metrics'])} methods; area MAPE: {shown or 'n/a'}"
    return StageOutput(note=note, written=list(written), facts=facts)


def run_validated(
    scenario: Scenario,
    out_dir: str | os.PathLike[str],
    *,
    seed: int | np.random.SeedSequence | None = None,
    osm: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> RunResult:
    """Run `scenario` with every stage, the scoring included: what ``crowdsim run`` does.

    The parameters are those of :func:`sim.run.run_scenario`; the validation stage is
    :func:`score_run`.
    """
    return run_scenario(
        scenario,
        out_dir,
        seed=seed,
        osm=osm,
        cache_dir=cache_dir,
        progress=progress,
        overwrite=overwrite,
        scorer=score_run,
    )
