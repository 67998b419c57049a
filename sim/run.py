"""One run: a validated scenario in, a run folder out, stage by stage.

The stages run in the order of the data flow (DESIGN §1): streets -> simulate ->
estimators -> validation -> report. ``simulate`` is one clock for the crowd, the
operator's network and the real-time presence counts (:class:`sim.stream.Stream`): the
crowd is computed once and its positions go straight into the network; it writes the
truth, the operator's records and counters, and hands a :class:`sim.stream.MinuteFrame`
per bin to ``on_minute``. Its manifest record splits its wall time by part
(``part_timings_s.simulate``: crowd, network, presence, frames, writing). The
``estimators`` stage then releases the tables from the counts taken live (or from the
records read back, for a method that reads records, or batch mode).

``stream=False`` runs the earlier path, kept to compare against: a ``crowd`` stage runs
the whole crowd, then a ``network`` stage replays it from its seed for the network, and
the estimators read the records back (:data:`BATCH_STAGES`). Both write the same tables
from the same seed (``tests/test_stream.py``).

Each stage records its status, a one-line note and its time in the manifest, which is
written when the run starts and after every stage, so even a failed or killed run says
how far it got and why. The folder's lifecycle (lock, ``overwrite``, statuses) belongs
to :mod:`sim.runfolder`.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from sim import __version__, runfolder
from sim.course import Course
from sim.errors import CrowdsimError, RunFolderError
from sim.io import write_text
from sim.preflight import check_scenario
from sim.scenario import Scenario, dump_scenario
from sim.streets import Streets

if TYPE_CHECKING:
    from sim.stream import MinuteFrame

__all__ = [
    "BATCH_STAGES",
    "STAGES",
    "RunContext",
    "RunResult",
    "Scorer",
    "StageOutput",
    "run_scenario",
    "seed_sequences",
]

#: Subsystems that draw random numbers; each gets its own child of the root SeedSequence.
SUBSYSTEMS = ("crowd", "network", "estimators")
#: Packages whose versions the manifest records.
RECORDED_PACKAGES = (
    "numpy", "scipy", "pandas", "pyarrow", "networkx", "osmnx", "mesa", "simpy",
    "pydantic", "matplotlib", "osmium",
)  # fmt: skip


@dataclass(frozen=True)
class StageOutput:
    """What a stage run from outside :mod:`sim` (the scoring) gives back to the run."""

    note: str
    written: list[Path] = field(default_factory=list)
    facts: dict[str, Any] | None = None


#: Scores a run folder's estimates against its truth (:func:`validation.score_run`).
Scorer = Callable[[Path], StageOutput]


class _Skipped(Exception):
    """A stage that had nothing to do; its message is the note."""


@dataclass
class RunContext:
    """What the stages of one run share."""

    scenario: Scenario
    out_dir: Path
    seeds: dict[str, np.random.SeedSequence]
    osm: Path | None = None
    cache_dir: Path | None = None
    streets: Streets | None = None
    course: Course | None = None
    crowd: Any = None  # batch path: the finished sim.crowd.CrowdModel (replayed by fresh())
    network: Any = None  # the sim.network.simulate.NetworkRun, while it is being written
    zones: Any = None  # the zone systems (sim.zones.Zones), from the crowd's world
    #: real-time presence counts per cell and bin, taken by the stream (None: batch path)
    live_counts: Any = None
    #: estimators the stream fitted on the plan for its frames (reused by the release)
    live_estimators: list[Any] = field(default_factory=list)
    #: called with each sim.stream.MinuteFrame of the streaming run
    on_minute: Callable[[Any], None] | None = None
    progress: bool = False
    outputs: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    #: seconds per part of a stage (e.g. each report figure): not facts, they vary per run
    part_timings: dict[str, dict[str, float]] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    scorer: Scorer | None = None


@dataclass(frozen=True)
class RunResult:
    """The run folder and its manifest."""

    out_dir: Path
    manifest: dict[str, Any]


def seed_sequences(seed: int | np.random.SeedSequence) -> dict[str, np.random.SeedSequence]:
    """One child of the root seed sequence per subsystem, always in one order.

    `seed` is an int (the root is ``SeedSequence(seed)``) or a ``SeedSequence`` itself,
    e.g. one replication of a sweep. The root is rebuilt from its entropy and spawn key,
    so the children do not depend on what was spawned from `seed` before.
    """
    if isinstance(seed, np.random.SeedSequence):
        root = np.random.SeedSequence(
            seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size
        )
    else:
        root = np.random.SeedSequence(seed)
    return dict(zip(SUBSYSTEMS, root.spawn(len(SUBSYSTEMS)), strict=True))


def _streets_stage(ctx: RunContext) -> str:
    # the checks of `crowdsim check`: streets, course, closures, areas, memory
    found = check_scenario(ctx.scenario, osm=ctx.osm, cache_dir=ctx.cache_dir)
    ctx.streets, ctx.course = found.streets, found.course
    ctx.facts["streets"] = ctx.streets.summary()
    ctx.facts["course"] = ctx.course.summary()
    from sim.report.geopackage import write_course_geopackage, write_event_public

    ctx.outputs.append(write_course_geopackage(ctx.streets, ctx.course, ctx.out_dir).name)
    # what the operator knows of the event: its event-aware prior reads only this file
    ctx.outputs.append(write_event_public(ctx.scenario, ctx.streets, ctx.course, ctx.out_dir).name)
    return f"{ctx.streets.n_nodes} nodes, course {ctx.course.length_m / 1000:.2f} km"


def _crowd_stage(ctx: RunContext) -> str:
    """Build and run the crowd, write its ground truth, keep the model for later stages."""
    from sim.crowd import CrowdModel

    assert ctx.streets is not None and ctx.course is not None, "streets stage runs first"
    model = CrowdModel(ctx.scenario, ctx.streets, ctx.course, seed=ctx.seeds["crowd"]).run()
    ctx.crowd = model
    return _write_crowd(ctx, model)


def _write_crowd(ctx: RunContext, model: Any) -> str:
    """Write the crowd's ground truth and zones; record its facts; return the note."""
    ctx.zones = model.zones
    ctx.outputs.extend(p.name for p in model.truth.write(ctx.out_dir))
    ctx.outputs.append(model.zones.write_geopackage(ctx.out_dir / "zones.gpkg").name)
    ctx.facts["crowd"] = model.summary()
    facts = ctx.facts["crowd"]
    return (
        f"{facts['spectators']} spectators, {facts['background']} background, "
        f"peak watching {facts['peak_watching']}"
    )


def _network_stage(ctx: RunContext) -> str:
    """Build the estimating operator's network and feed it the crowd, tick by tick.

    The batch path: the crowd is replayed from its seed (``crowd.fresh()``), so positions
    stream from model to network without being stored, at the cost of a second crowd.
    """
    assert ctx.crowd is not None, "the crowd stage runs first"
    rng = np.random.default_rng(ctx.seeds["network"])
    net = _build_network(ctx, ctx.crowd.people, rng)
    net.observe(ctx.crowd.fresh().iter_positions())
    ctx.crowd = None  # the finished crowd is not needed any more
    return _write_network(ctx, net, rng)


def _build_network(ctx: RunContext, people: Any, rng: np.random.Generator) -> Any:
    """The estimating operator's network over the streets, for `people` of the crowd."""
    from sim.network.signalling import SignallingConfig
    from sim.network.simulate import build_network

    assert ctx.streets is not None and ctx.course is not None, "streets stage runs first"
    cfg = ctx.scenario.network
    xmin, ymin, xmax, ymax = ctx.streets.extent
    margin = 500.0  # phones at the edge of the street data still see cells beyond it
    start = int(ctx.course.nodes[0])
    signalling = SignallingConfig(
        rrc_capacity=cfg.rrc_capacity,
        burst_factor=cfg.burst_factor,
        mme_workers=cfg.mme_workers,
        mme_message_s=cfg.mme_message_ms / 1000.0,
    )
    return build_network(
        cfg,
        (xmin - margin, ymin - margin, xmax + margin, ymax + margin),
        event=ctx.scenario.event,
        n_people=people.n,
        spectator=people.kind == 0,
        rng=rng,
        centre=(float(ctx.streets.x[start]), float(ctx.streets.y[start])),
        dt_s=ctx.scenario.event.step_s,
        signalling=signalling,
        tracking_area_m=cfg.tracking_area_m,
        pixel_m=cfg.raster_m,
        shadowing_db=cfg.shadowing_db,
        decorrelation_m=cfg.decorrelation_m,
    )


def _as_written(plan: Any) -> Any:
    """`plan` as ``network_plan.json`` will hold it (the file rounds the coordinates)."""
    import tempfile

    from sim.network.plan import NetworkPlan

    with tempfile.TemporaryDirectory(prefix="crowdsim-plan-") as tmp:
        return NetworkPlan.from_json(plan.to_json(Path(tmp) / "network_plan.json"))


def _write_network(ctx: RunContext, net: Any, rng: np.random.Generator) -> str:
    """Write what the operator sees (records, counters, plan); record the network's facts."""
    from sim.network.simulate import write_network_outputs

    ctx.network = net
    written = write_network_outputs(net, ctx.out_dir, salt=rng, dpi=ctx.scenario.output.dpi)
    ctx.outputs.extend(p.name for p in written)
    ctx.facts["network"] = net.summary()
    ctx.network = None  # written: the records in memory are not needed any more
    facts = ctx.facts["network"]
    return (
        f"{facts['devices_simulated']} phones of {facts['operator']} on {facts['cells']} cells: "
        f"{facts['procedures']} procedures, {facts['rejected']} rejected, "
        f"{facts['dropped']} dropped"
    )


def _simulate_stage(ctx: RunContext) -> str:
    """Crowd, network and real-time presence on one clock; write truth and operator data.

    One crowd model steps; after each tick its positions go to the network, whose new
    records are counted by the real-time presence; each finished bin is handed to
    ``ctx.on_minute`` as a :class:`sim.stream.MinuteFrame`. The wall time is split by
    part in ``part_timings_s.simulate``.
    """
    from sim.crowd import CrowdModel
    from sim.estimate import counts_suffice
    from sim.stream import ProgressDisplay, Stream

    assert ctx.streets is not None and ctx.course is not None, "streets stage runs first"
    scenario = ctx.scenario
    t0 = time.perf_counter()
    model = CrowdModel(scenario, ctx.streets, ctx.course, seed=ctx.seeds["crowd"])
    t1 = time.perf_counter()
    rng = np.random.default_rng(ctx.seeds["network"])
    net = _build_network(ctx, model.people, rng)
    plan = _as_written(net.plan)  # what the estimators read: the plan's file
    t2 = time.perf_counter()
    display = ProgressDisplay(scenario.event.duration_s) if ctx.progress else None
    try:
        stream = Stream(
            model,
            net,
            plan=plan,
            zones=model.zones,
            config=scenario.estimators,
            bin_s=scenario.zones.bin_s,
            timezone=scenario.event.timezone,
            noise_seed=ctx.seeds["estimators"],
            estimator_params=_estimator_params(scenario.estimators, ctx.out_dir),
            on_minute=ctx.on_minute,
            on_progress=display,
        ).run()
    finally:
        if display is not None:
            display.close()
    t3 = time.perf_counter()
    counts, timings = stream.presence.counts, stream.timings
    ctx.live_estimators = stream.fitted_estimators
    del stream  # it holds the crowd and the network: let them go once written
    crowd_note = _write_crowd(ctx, model)
    del model
    t4 = time.perf_counter()
    network_note = _write_network(ctx, net, rng)
    del net
    t5 = time.perf_counter()
    cfg = scenario.estimators
    if cfg.mode == "realtime" and counts_suffice(cfg):
        ctx.live_counts = counts
    ctx.part_timings["simulate"] = {
        "crowd_setup_s": round(t1 - t0, 3),
        "network_setup_s": round(t2 - t1, 3),
        **timings,
        "write_crowd_s": round(t4 - t3, 3),
        "write_network_s": round(t5 - t4, 3),
    }
    return f"{crowd_note}; {network_note}"


def _estimators_stage(ctx: RunContext) -> str:
    """Release the listed estimators' tables from what the operator has.

    The plan and the counters are read back from the run folder (``network_plan.json``,
    ``cell_load.parquet``). The devices per cell and bin come from the streaming run's
    real-time presence, counted from the records as they were written
    (:func:`sim.estimate.release_from_counts`); the batch path, batch mode, or a method
    that reads the records themselves read ``records.parquet`` back instead. Either way
    nothing else of the network enters: the operator wall holds in the data flow, not
    only in the imports.
    """
    import pandas as pd

    from sim.estimate import (
        period_bins,
        release_estimates,
        release_from_counts,
        write_duplicity,
        write_release,
    )
    from sim.network.plan import NetworkPlan

    assert ctx.zones is not None, "the crowd gives the zone systems"
    cfg = ctx.scenario.estimators
    plan = NetworkPlan.from_json(ctx.out_dir / "network_plan.json")
    counters = pd.read_parquet(ctx.out_dir / "cell_load.parquet")
    if not ctx.facts.get("network", {}).get("procedures"):
        # nobody with a phone of this operator: nothing to estimate from
        ctx.facts["estimators"] = {"methods": [], "rows": 0, "note": "no operator records"}
        return "no operator records (nobody carried a phone of this operator): no estimates"
    bins = period_bins(plan, bin_s=ctx.scenario.zones.bin_s)
    common: dict[str, Any] = {
        "counters": counters,
        "random_state": np.random.default_rng(ctx.seeds["estimators"]),
        "timezone": ctx.scenario.event.timezone,
        **_estimator_params(cfg, ctx.out_dir),
    }
    if ctx.live_counts is not None:  # counted in real time by the stream
        release = release_from_counts(
            ctx.live_counts, plan, ctx.zones, bins, cfg, fitted=ctx.live_estimators, **common
        )
        ctx.live_estimators = []
        source = "live counts"
    else:
        records = pd.read_parquet(ctx.out_dir / "records.parquet")
        release = release_estimates(records, plan, ctx.zones, bins, cfg, mode=cfg.mode, **common)
        del records
        source = "records"
    table = release.internal
    ctx.outputs.extend(p.name for p in write_release(table, release.published, ctx.out_dir))
    ctx.facts["estimators"] = {
        "methods": list(dict.fromkeys(cfg.methods)),
        "mode": cfg.mode,
        "rows": len(table),
        "published_rows": len(release.published),
        "suppressed_share": round(float(table["suppressed"].mean()), 4) if len(table) else 0.0,
        "privacy": release.privacy,
        "intervals": release.intervals,
    }
    if release.duplicity is not None:  # the operator's own table: device -> duplicity
        ctx.outputs.append(write_duplicity(release.duplicity, ctx.out_dir).name)
        ctx.facts["estimators"]["dedup"] = release.duplicity.facts
    methods = ", ".join(ctx.facts["estimators"]["methods"])
    return f"{len(table)} estimates ({methods}, {cfg.mode}, from {source})"


def _estimator_params(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """Parameters of every estimator beyond the shared ones of ``make_estimators``.

    ``public``: the event's public data the streets stage wrote, for an event-aware prior.
    """
    return {
        "share_error": cfg.share_error,
        "phones_error": cfg.phones_error,
        "public": out_dir / runfolder.EVENT_PUBLIC,
    }


def _validation_stage(ctx: RunContext) -> str:
    """Score the estimates against the truth with the scorer the caller gave.

    Scoring belongs to :mod:`validation`, which imports :mod:`sim` and never the reverse,
    so the run does not import it: the caller (``crowdsim run``, a sweep, or
    :func:`validation.run_validated`) passes the scorer. Without estimates (nobody carried
    a phone of the operator) there is nothing to score.
    """
    if ctx.scorer is None:
        ctx.facts["validation"] = {"note": "not scored (no scorer given)"}
        raise _Skipped("not scored: no scorer given (validation.run_validated scores a run)")
    if not ctx.facts.get("estimators", {}).get("rows"):
        ctx.facts["validation"] = {"note": "no estimates to validate"}
        return "no estimates (no operator records): nothing to validate"
    scored = ctx.scorer(ctx.out_dir)
    ctx.outputs.extend(p.name for p in scored.written)
    if scored.facts is not None:
        ctx.facts["validation"] = scored.facts
    return scored.note


def _report_stage(ctx: RunContext) -> str:
    from sim.report import write_report

    if not ctx.scenario.output.report:
        return "skipped: output.report = false"
    written = write_report(ctx, streets=ctx.streets, course=ctx.course)
    ctx.outputs.extend(p.name for p in written.files)
    ctx.facts["report"] = written.facts
    ctx.part_timings["report"] = written.seconds
    # the screen's arrays for `crowdsim serve`, so that its first opening is quick too (a
    # cache beside the run's files, keyed by the tables the manifest lists so far)
    from sim.dashboard.data import write_screen

    t0 = time.perf_counter()
    screen = write_screen(ctx.out_dir)
    ctx.part_timings["screen"] = {"write": round(time.perf_counter() - t0, 3)}
    return "report.html" + ("" if screen is None else " and the screen's arrays")


#: The stages in the order they run: crowd and network on one clock (``simulate``).
STAGES: tuple[tuple[str, Callable[[RunContext], str]], ...] = (
    ("streets", _streets_stage),
    ("simulate", _simulate_stage),
    ("estimators", _estimators_stage),
    ("validation", _validation_stage),
    ("report", _report_stage),
)
#: The earlier path (``stream=False``): the crowd, then a replay of it for the network.
BATCH_STAGES: tuple[tuple[str, Callable[[RunContext], str]], ...] = (
    ("streets", _streets_stage),
    ("crowd", _crowd_stage),
    ("network", _network_stage),
    ("estimators", _estimators_stage),
    ("validation", _validation_stage),
    ("report", _report_stage),
)


def run_scenario(
    scenario: Scenario,
    out_dir: str | os.PathLike[str],
    *,
    seed: int | np.random.SeedSequence | None = None,
    osm: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    scorer: Scorer | None = None,
    on_minute: Callable[[MinuteFrame], None] | None = None,
    stream: bool = True,
) -> RunResult:
    """Run every stage of `scenario` and write the run folder.

    Parameters
    ----------
    scenario
        A validated scenario (:func:`sim.scenario.load_scenario`).
    out_dir
        The run folder; created if needed. Files in it are replaced atomically.
    seed
        Overrides ``scenario.seed``; the root of every random draw in the run. An int,
        or a ``SeedSequence`` (one replication of a sweep: its entropy becomes the
        scenario's seed, and the manifest records its spawn key, which reproduces it).
    osm
        An explicit street file, overriding the scenario's street source.
    cache_dir
        Folder of the prepared street-graph cache.
    progress
        Show a progress bar over the stages, and inside the simulation the simulated
        clock, people moving, records per second and the time left (a line on stderr
        every 15 s when stderr is not a terminal).
    overwrite
        When `out_dir` already holds a run, move its files into ``.previous/`` instead
        of refusing (:func:`sim.runfolder.move_previous_run`).
    scorer
        Scores the estimates in the validation stage (:func:`validation.score_run`);
        None leaves the stage ``skipped``. :func:`validation.run_validated` passes it.
    on_minute
        Called with a :class:`sim.stream.MinuteFrame` as each bin of the simulation
        finishes (its published estimates, truth, cell counters and the progress), from
        the thread running the scenario; the contract is in :mod:`sim.stream`.
    stream
        True (default): crowd and network on one clock (:data:`STAGES`). False: the
        earlier batch path, which replays the crowd for the network
        (:data:`BATCH_STAGES`); same tables, slower, kept for comparison.

    Returns
    -------
    RunResult
        The folder and the manifest as written.

    Raises
    ------
    CrowdsimError
        Bad input found while running; the manifest records it with status ``failed``.
    RunFolderError
        `out_dir` is not usable: another run or sweep holds it, or it holds a run and
        `overwrite` is false.
    CrowdsimError
        `on_minute` with ``stream=False`` (the batch path has no minutes to show).
    KeyboardInterrupt
        SIGINT or SIGTERM (:class:`sim.runfolder.RunInterrupted`) stopped the run; the
        manifest says ``interrupted`` and no temporary file is left.
    """
    if on_minute is not None and not stream:
        raise CrowdsimError(
            "on_minute: frames come from the streaming run; leave stream=True to receive them"
        )
    root: int | np.random.SeedSequence = scenario.seed
    if isinstance(seed, np.random.SeedSequence):
        if not isinstance(seed.entropy, int | np.integer) or seed.entropy < 0:
            raise CrowdsimError(
                f"seed: a SeedSequence with entropy {seed.entropy!r}; a run needs a whole "
                "number >= 0 as entropy (it becomes the scenario's seed)"
            )
        root = seed
        scenario = scenario.model_copy(update={"seed": int(seed.entropy)})  # keeps the source
    elif seed is not None:
        root = seed
        scenario = scenario.model_copy(update={"seed": seed})
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: exists and is not a folder; choose another --out") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(
            f"{out}: cannot create the run folder ({exc}); choose another --out"
        ) from None
    ctx = RunContext(
        scenario=scenario,
        out_dir=out,
        seeds=seed_sequences(root),
        osm=Path(osm) if osm is not None else None,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        scorer=scorer,
        on_minute=on_minute,
        progress=progress,
    )
    spawn_key = root.spawn_key if isinstance(root, np.random.SeedSequence) else ()
    try:
        lock = runfolder.FolderLock(out, what="run").acquire()
    except OSError as exc:
        raise RunFolderError(
            f"{out}: cannot write the run folder ({exc}); choose another --out"
        ) from None
    try:
        moved = runfolder.move_previous_run(out, overwrite=overwrite)
        head = _manifest_head(scenario, ctx, spawn_key, moved)
        return _run_stages(ctx, head, progress, STAGES if stream else BATCH_STAGES)
    finally:
        lock.release()


def _run_stages(
    ctx: RunContext,
    manifest: dict[str, Any],
    progress: bool,
    stages: Sequence[tuple[str, Callable[[RunContext], str]]] = STAGES,
) -> RunResult:
    """Run the stages in order, writing the manifest after each; the folder is locked."""
    out = ctx.out_dir
    write_text(dump_scenario(ctx.scenario), out / runfolder.SCENARIO)
    files = runfolder.file_records(out, [runfolder.SCENARIO])
    manifest["files"] = files
    runfolder.write_manifest(manifest, out)

    bar = tqdm(stages, desc="crowdsim", unit="stage", disable=not progress, leave=False)
    error: BaseException | None = None
    status = "ok"
    with runfolder.stop_on_signals() as hold_signals:
        try:
            for name, stage in bar:
                bar.set_postfix_str(name)
                t0 = time.perf_counter()
                first_new = len(ctx.outputs)
                record: dict[str, Any] = {"status": "done"}
                try:
                    record["note"] = stage(ctx)
                except _Skipped as skip:
                    record = {"status": "skipped", "note": str(skip)}
                except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM as RunInterrupted
                    how = getattr(exc, "signal", "SIGINT")
                    record = {"status": "interrupted", "note": f"stopped by {how}"}
                    manifest["interrupted_by"] = how
                    error, status = exc, "interrupted"
                except BaseException as exc:
                    record = {"status": "failed", "note": f"{type(exc).__name__}: {exc}"}
                    error, status = exc, "failed"
                record["seconds"] = round(time.perf_counter() - t0, 3)
                # the process's peak memory so far: which stage sets a run's peak
                record["peak_rss_mb"] = _peak_rss_mb()
                ctx.stages[name] = record
                files.update(runfolder.file_records(out, ctx.outputs[first_new:]))
                if error is not None:
                    break
                _update_manifest(manifest, ctx, files)
        except KeyboardInterrupt as exc:  # between stages, or while writing the manifest
            manifest["interrupted_by"] = getattr(exc, "signal", "SIGINT")
            error, status = exc, "interrupted"
        hold_signals()  # the final manifest is written whole, whatever arrives now
        bar.close()
        manifest.update(finished=_now(), status=status)
        _update_manifest(manifest, ctx, files)
        runfolder.write_manifest(manifest, out)
        runfolder.remove_temporaries(out)
    if error is not None:
        raise error
    return RunResult(out_dir=out, manifest=manifest)


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (None where not measured)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _update_manifest(manifest: dict[str, Any], ctx: RunContext, files: dict[str, Any]) -> None:
    """Bring the manifest up to the stages done so far; write it while the run runs."""
    manifest.update(
        street_source=_source_record(ctx.streets),
        facts=ctx.facts,
        outputs=sorted({runfolder.MANIFEST, runfolder.SCENARIO, *ctx.outputs}),
        files=files,
        timings_s={name: rec["seconds"] for name, rec in ctx.stages.items()},
        part_timings_s=ctx.part_timings,
    )
    if manifest["status"] == "running":
        runfolder.write_manifest(manifest, ctx.out_dir)


def _manifest_head(
    scenario: Scenario,
    ctx: RunContext,
    spawn_key: tuple[int, ...] = (),
    moved: Sequence[str] = (),
) -> dict[str, Any]:
    versions = {"crowdsim": __version__, "python": platform.python_version()}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "crowdsim": __version__,
        "started": _now(),
        "finished": None,
        "status": "running",
        "command": " ".join(sys.argv),
        "scenario_file": str(scenario.source) if scenario.source else None,
        "seed": scenario.seed,
        # the root SeedSequence is SeedSequence(seed, spawn_key=seed_spawn_key): [] for a
        # plain seed, [replication] (or [point, replication]) for a run of a sweep
        "seed_spawn_key": list(spawn_key),
        "seed_streams": {name: list(ss.spawn_key) for name, ss in ctx.seeds.items()},
        "versions": versions,
        "scenario": scenario.model_dump(mode="json"),
        "street_source": None,
        "stages": ctx.stages,
        # files of the folder's earlier run, moved into .previous/ by overwrite
        "previous_moved": list(moved),
        "outputs": [runfolder.MANIFEST, runfolder.SCENARIO],
        "files": {},
    }


def _source_record(streets: Streets | None) -> dict[str, Any] | None:
    if streets is None:
        return None
    src = streets.source
    return {
        "kind": src.kind,
        "detail": src.detail,
        "sha256": src.digest,
        "from_cache": src.cached,
        "note": src.note,
        "description": src.describe(),
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
