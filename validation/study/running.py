"""Running a study: each scenario's sweep (resumed), every variant on every run, the page."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sim import __version__, runfolder
from sim.errors import CrowdsimError
from sim.io import atomic_path, write_json, write_text
from sim.runfolder import FolderLock, open_run
from validation.study.estimating import FLAT, nominal_confidence, score_variants
from validation.study.figures import plot_kwd_literature, plot_metrics, plot_segment_totals
from validation.study.page import (
    PUBLISHED_METHODS,
    RICCIATO_2020,
    PageInputs,
    kwd_ratios,
    render_page,
    render_readme_block,
    update_readme,
)
from validation.study.spec import Study, StudyError, load_study
from validation.study.summary import summarise, winners
from validation.sweep import run_sweep

__all__ = ["PAGE", "StudyResult", "run_study"]

#: The page's file name in the docs folder; its figures go to ``figures/`` beside it.
PAGE = "estimators.md"


@dataclass
class StudyResult:
    """What a study did: its folder, tables, and which runs ran, were reused or failed."""

    out_dir: Path
    metrics: pd.DataFrame
    summary: pd.DataFrame
    runs: pd.DataFrame
    written: list[Path] = field(default_factory=list)
    ran: dict[str, list[str]] = field(default_factory=dict)
    reused: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)


def run_study(
    study: Study | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    docs: str | os.PathLike[str] | None = None,
    readme: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    replications: int | None = None,
    rescore: bool = False,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Run a study: every scenario's sweep, then every variant on every finished run.

    Parameters
    ----------
    study
        A :class:`~validation.study.spec.Study` or the path of a study file.
    out_dir
        The study folder: ``<scenario>/`` is each scenario's sweep folder (its runs in
        ``runs/``); the study's tables go to the top. Finished runs already there are
        reused (:func:`validation.sweep.run_sweep`), so a second call only estimates and
        scores again, and only the variants whose score is not kept for the same run,
        options and code (:func:`~validation.study.estimating.score_variants`).
    docs
        Folder of the page: writes ``estimators.md`` and ``figures/*.png`` there (None:
        no page).
    readme
        README whose study block (between the markers of
        :data:`~validation.study.page.README_BEGIN` and ``README_END``) gets the summary
        table (None: left alone).
    workers
        Local processes per sweep, unless the study file sets a scenario's ``workers``.
    progress
        Progress bars over the runs.
    replications
        Use only the first this many replications (seeds) of each sweep: a preview, or
        what there was time to run; the page says how many of the sweep's it shows.
    rescore
        Estimate and score every variant again, even where a score of the same run,
        variant and code is kept (``DIR/<scenario>/scores/``).
    command
        The command line the page says regenerates it (default: ``crowdsim study``).
    log
        Called with one line per step done (e.g. ``print``).

    Returns
    -------
    StudyResult

    Raises
    ------
    StudyError
        Bad study, variants or sweep file; no run of a scenario finished; a variant that
        cannot be scored; a README without the markers.
    RunFolderError
        Another study holds `out_dir`, or a sweep folder in it.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if replications is not None:
        study = first_replications(study, replications)
    say = log or (lambda _: None)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StudyError(f"{out}: exists and is not a folder; choose another --out")
    readme_path = Path(readme) if readme is not None else None
    if readme_path is not None:  # fail before hours of runs, not after
        update_readme_check(readme_path)
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, what="study"):
        how = _How(workers=workers, progress=progress, reuse=not rescore, command=command)
        return _run_locked(study, out, docs, readme_path, how, say)


def first_replications(study: Study, n: int) -> Study:
    """`study` with only the first `n` replications of each sweep.

    Raises
    ------
    StudyError
        `n` is below 1.
    """
    if n < 1:
        raise StudyError(f"--replications {n}: needs at least 1")
    sweeps = {
        name: dataclasses.replace(sweep, runs=[r for r in sweep.runs if r.replication < n])
        for name, sweep in study.sweeps.items()
    }
    return dataclasses.replace(study, sweeps=sweeps)


def update_readme_check(readme: Path) -> None:
    """Raise :class:`StudyError` now if `readme` lacks the markers (nothing is written)."""
    from validation.study.page import README_BEGIN, README_END

    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"{readme}: cannot read the README to update ({exc})") from None
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise StudyError(
            f"{readme}: needs the study's markers once each, on their own lines:\n"
            f"{README_BEGIN}\n{README_END}\nthe summary table goes between them"
        )


@dataclass(frozen=True)
class _How:
    workers: int | None
    progress: bool
    reuse: bool
    command: str | None


def _run_locked(
    study: Study,
    out: Path,
    docs: str | os.PathLike[str] | None,
    readme: Path | None,
    how: _How,
    say: Callable[[str], None],
) -> StudyResult:
    result = StudyResult(
        out_dir=out, metrics=pd.DataFrame(), summary=pd.DataFrame(), runs=pd.DataFrame()
    )
    metrics, zones, bins, runs = [], [], [], []
    nominal: float | None = None
    for entry in study.spec.scenario:
        sweep = study.sweeps[entry.name]
        t0 = time.perf_counter()
        swept = run_sweep(
            sweep, out / entry.name, workers=entry.workers or how.workers, progress=how.progress
        )
        result.ran[entry.name] = swept.ran
        result.reused[entry.name] = swept.reused
        result.failed[entry.name] = swept.failed
        say(
            f"{entry.name}: {len(swept.ran)} runs made, {len(swept.reused)} reused, "
            f"{len(swept.failed)} failed ({time.perf_counter() - t0:.0f} s)"
        )
        ok = [e for e in swept.state["runs"] if e["status"] == "ok"]
        if not ok:
            errors = "; ".join(f"{e['run_id']}: {e['error']}" for e in swept.state["runs"])
            raise StudyError(f"{entry.name}: no run of its sweep finished ({errors})")
        for entry_run in swept.state["runs"]:
            row: dict[str, Any] = {
                "scenario": entry.name,
                "run_id": entry_run["run_id"],
                "replication": entry_run["replication"],
                "status": entry_run["status"],
                "error": entry_run["error"],
                "seconds": None,  # the run's stages, from its manifest (below)
                "reused": bool(entry_run.get("reused")),
            }
            if entry_run["status"] == "ok":
                scored = _score_run(
                    study, out, entry.name, entry_run["run_id"], row, reuse=how.reuse
                )
                metrics.append(scored.metrics.assign(**_ids(row)))
                zones.append(scored.per_zone.assign(**_ids(row)))
                bins.append(scored.per_bin.assign(**_ids(row)))
                if nominal is None:
                    nominal = scored.nominal
                say(_scored_line(entry.name, row))
            runs.append(row)
    result.metrics = pd.concat(metrics, ignore_index=True)
    per_zone = pd.concat(zones, ignore_index=True)
    per_bin = pd.concat(bins, ignore_index=True)
    result.runs = pd.DataFrame(runs)
    result.summary = summarise(result.metrics)
    result.written = _write_tables(out, result, per_zone, per_bin, study)
    if docs is not None or readme is not None:
        inputs = PageInputs(
            study=study,
            summary=result.summary,
            metrics=result.metrics,
            per_zone=per_zone,
            runs=result.runs,
            winners=winners(result.summary, nominal=nominal, exclude=(FLAT,)),
            nominal=nominal,
            figures={},
            command=how.command or f"crowdsim study {study.source.name} --out {out.name}",
            version=__version__,
            generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
        if docs is not None:
            result.written += _write_page(Path(docs), inputs, per_bin)
        if readme is not None:
            result.written.append(update_readme(readme, render_readme_block(inputs)))
    return result


@dataclass(eq=False)
class _Scored:
    metrics: pd.DataFrame
    per_zone: pd.DataFrame
    per_bin: pd.DataFrame
    nominal: float | None


def _score_run(
    study: Study, out: Path, scenario: str, run_id: str, row: dict[str, Any], *, reuse: bool
) -> _Scored:
    """Every variant on one finished run; fills `row` with its facts and timings."""
    run_dir = out / scenario / "runs" / run_id
    folder = open_run(
        run_dir,
        need=[runfolder.RECORDS, runfolder.CELL_LOAD, runfolder.NETWORK_PLAN],
        verify=False,  # the sweep has just checked every file of the runs it reused
        purpose="the study",
    )
    timings = folder.manifest.get("timings_s") or {}
    row["seconds"] = round(sum(float(t) for t in timings.values()), 3) if timings else None
    network = folder.facts.get("network") or {}
    procedures = network.get("procedures") or 0
    row["rejected_share"] = (network.get("rejected", 0) / procedures) if procedures else None
    row["timezone"] = folder.scenario.event.timezone
    try:
        scores = score_variants(
            folder,
            study.variants,
            out / scenario / "scores" / run_id,
            floor=study.spec.floor,
            kwd_max_bins=study.spec.kwd_max_bins,
            reuse=reuse,
        )
    except CrowdsimError as exc:
        raise StudyError(f"{run_dir}: {exc}") from None
    # estimating and scoring every variant, as long as it took when it was computed
    row["estimate_s"] = round(sum(sum(t.values()) for t in scores.seconds.values()), 3)
    row["variant_seconds"] = scores.seconds
    row["scores_reused"] = list(scores.reused)
    nominal = nominal_confidence(folder, study.variants[0])
    return _Scored(scores.metrics, scores.per_zone, scores.per_bin, nominal)


def _scored_line(scenario: str, row: dict[str, Any]) -> str:
    kept = row["scores_reused"]
    seconds = {v: t for v, t in row["variant_seconds"].items() if v not in kept}
    done = ", ".join(f"{v} {t['estimate_s'] + t['score_s']:.0f} s" for v, t in seconds.items())
    return f"{scenario}/{row['run_id']}: scored {done or 'nothing'}" + (
        f"; kept {', '.join(kept)}" if kept else ""
    )


def _ids(row: dict[str, Any]) -> dict[str, Any]:
    return {"scenario": row["scenario"], "run_id": row["run_id"], "replication": row["replication"]}


def _write_tables(
    out: Path, result: StudyResult, per_zone: pd.DataFrame, per_bin: pd.DataFrame, study: Study
) -> list[Path]:
    written = []
    for name, frame in (
        ("study_metrics", result.metrics),
        ("study_summary", result.summary),
        ("study_zones", per_zone),
        ("study_bins", per_bin),
        ("study_runs", result.runs.drop(columns=["variant_seconds"], errors="ignore")),
    ):
        dest = out / f"{name}.parquet"
        with atomic_path(dest) as tmp:
            frame.to_parquet(tmp, index=False)
        written.append(dest)
    state = {
        "crowdsim": __version__,
        "study_file": str(study.source),
        "variants_file": str(study.variants_file),
        "variants": [v.model_dump() for v in study.variants],
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runs": result.runs.to_dict("records"),
    }
    written.append(write_json(state, out / "study.json"))
    return written


def _write_page(docs: Path, inputs: PageInputs, per_bin: pd.DataFrame) -> list[Path]:
    figures_dir = docs / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    variants = [v.label for v in inputs.study.variants]
    methods = {v.label: v.method for v in inputs.study.variants}
    written: list[Path] = []
    for entry in inputs.study.spec.scenario:
        runs = inputs.runs[
            (inputs.runs["scenario"] == entry.name) & (inputs.runs["status"] == "ok")
        ]
        files = [
            plot_metrics(
                inputs.metrics,
                scenario=entry.name,
                title=entry.title,
                variants=variants,
                methods=methods,
                nominal=inputs.nominal,
                dest=figures_dir / f"estimators_{entry.name}_metrics.png",
            )
        ]
        first = runs.sort_values("replication").iloc[0]
        files.append(
            plot_segment_totals(
                per_bin,
                scenario=entry.name,
                title=entry.title,
                run_id=str(first["run_id"]),
                variants=variants,
                methods=methods,
                timezone=str(first["timezone"]),
                dest=figures_dir / f"estimators_{entry.name}_segments.png",
            )
        )
        inputs.figures[entry.name] = files
        written += files
    ratios = kwd_ratios(inputs.metrics, inputs.study.variants)
    if not ratios.empty:
        titles = {s.name: s.title for s in inputs.study.spec.scenario}
        published = {m: RICCIATO_2020[m] / RICCIATO_2020["flat"] for m in PUBLISHED_METHODS}
        shown = ratios.assign(scenario=ratios["scenario"].map(titles))
        inputs.literature_figure = plot_kwd_literature(
            shown, published, dest=figures_dir / "estimators_kwd_literature.png"
        )
        written.append(inputs.literature_figure)
    written.append(write_text(render_page(inputs), docs / PAGE))
    return written
