"""The ``crowdsim`` command: run scenarios, the offline demo, and inspect street sources.

Bad input ends with a one-paragraph message on stderr and exit status 2, never with a
traceback from deep inside.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer

from sim import __version__
from sim.errors import CrowdsimError

app = typer.Typer(
    help="Rehearse how a mobile operator counts a crowd on the Brussels streets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: The scenario ``crowdsim demo`` runs: the offline sketch, no data file, no network.
DEMO_SCENARIO = "demo.toml"


def shipped_scenario(name: str) -> Path:
    """Path of a scenario shipped with crowdsim (source tree, else the installed wheel)."""
    in_tree = Path(__file__).resolve().parent.parent / "scenarios" / name
    if in_tree.is_file():
        return in_tree
    return Path(str(files("sim") / "_scenarios" / name))


#: The --overwrite option of the commands that write a run folder.
OVERWRITE = typer.Option(
    "--overwrite",
    help="If --out holds a run, move its files into --out/.previous/ (else: refused).",
)


def _run(scenario: Any, out: Path, **options: Any) -> Any:
    """Run and score `scenario` (:func:`validation.run_validated`); a signal exits 130/143.

    The command line is where the simulator and its validation are put together: the
    run (:mod:`sim`) does not import the scoring (:mod:`validation`), which imports it.
    """
    from sim.runfolder import MANIFEST, run_status
    from validation.scoring import run_validated

    try:
        return run_validated(scenario, out, **options)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM (sim.runfolder.RunInterrupted)
        how = getattr(exc, "signal", "SIGINT")
        status = run_status(out) if (out / MANIFEST).is_file() else "not started"
        typer.secho(f"{how}: the run stopped; {out} is {status}", err=True, fg="red")
        raise typer.Exit(code=143 if how == "SIGTERM" else 130) from None


def _fail(exc: BaseException) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crowdsim {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Rehearse how a mobile operator counts a crowd on the Brussels streets."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")],
    seed: Annotated[
        int | None, typer.Option(min=0, help="Root seed (>= 0); overrides the scenario's.")
    ] = None,
    spawn_key: Annotated[
        str | None,
        typer.Option(
            "--spawn-key",
            help="Spawn key of the root SeedSequence, e.g. '1' or '0,1': with --seed, "
            "reproduces one run of a sweep (its manifest's seed_spawn_key).",
        ),
    ] = None,
    osm: Annotated[
        Path | None, typer.Option(help="Street file (.osm[.bz2|.gz|.pbf], .graphml[.gz]).")
    ] = None,
    overwrite: Annotated[bool, OVERWRITE] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run SCENARIO and write its run folder (manifest, scenario.toml, outputs).

    Exit 0 when the run finished, 2 on bad input or an unusable --out, 130 or 143 when
    SIGINT or SIGTERM stopped it (the manifest then says 'interrupted').
    """
    import numpy as np

    from sim.scenario import load_scenario

    try:
        root: int | np.random.SeedSequence | None = seed
        if spawn_key is not None:
            root = np.random.SeedSequence(
                _seed_for_spawn_key(seed, scenario), spawn_key=_parse_spawn_key(spawn_key)
            )
        loaded = load_scenario(scenario)
        _writable_folder(out)
        result = _run(loaded, out, seed=root, osm=osm, progress=not quiet, overwrite=overwrite)
    except CrowdsimError as exc:
        raise _fail(exc) from None
    _print_result(result.manifest, result.out_dir)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path(
        "crowdsim-demo"
    ),
    overwrite: Annotated[bool, OVERWRITE] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run the built-in offline demo: the 2019 course on the offline Brussels sketch."""
    from sim.scenario import load_scenario

    try:
        demo_scenario = load_scenario(shipped_scenario(DEMO_SCENARIO))
        _writable_folder(out)
        result = _run(demo_scenario, out, progress=not quiet, overwrite=overwrite)
    except CrowdsimError as exc:
        raise _fail(exc) from None
    _print_result(result.manifest, result.out_dir)


@app.command()
def streets(
    source: Annotated[
        str,
        typer.Argument(help="A street file, 'sketch', or 'place:NAME' (online osmnx query)."),
    ],
    scenario: Annotated[
        Path | None, typer.Option(help="Also build this scenario's course on these streets.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print what a street source gives: nodes, edges, extent, length (and course length)."""
    from sim.course import build_course
    from sim.scenario import StreetsConfig, load_scenario
    from sim.streets import load_streets

    try:
        scen = load_scenario(scenario) if scenario is not None else None
        config = scen.streets if scen is not None else StreetsConfig()
        waypoints = [(w.name, w.lat, w.lon) for w in scen.route.waypoints] if scen else None
        osm = None
        if source == "sketch":
            config = config.model_copy(update={"source": "sketch"})
        elif source.startswith("place:"):
            place = source.removeprefix("place:")
            config = config.model_copy(update={"source": "place", "place": place})
        else:
            osm = source
        graph = load_streets(config, osm=osm, waypoints=waypoints)
        summary = graph.summary()
        if scen is not None:
            summary["course"] = build_course(graph, scen.route, scenario=scen).summary()
    except CrowdsimError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"source: {summary['source']}")
    typer.echo(f"nodes: {summary['nodes']}")
    typer.echo(f"edges: {summary['edges']}")
    typer.echo(f"streets: {summary['street_km']} km")
    typer.echo("extent (lon/lat): {:.5f} {:.5f} {:.5f} {:.5f}".format(*summary["extent_lonlat"]))
    typer.echo("extent (m, EPSG:31370): {:.0f} {:.0f} {:.0f} {:.0f}".format(*summary["extent_m"]))
    if "course" in summary:
        course = summary["course"]
        typer.echo(f"course: {course['length_km']:.2f} km ({course['name']})")
        for w in course["waypoints"]:
            if w["kind"] != "via":
                published = f" (published km {w['published_km']})" if w["published_km"] else ""
                typer.echo(f"  {w['kind']:<10} km {w['km']:6.2f}  {w['name']}{published}")
        for i, piece in enumerate(course.get("pieces", [])):  # a course with gaps
            typer.echo(f"  piece {i}    km {piece['from_km']:6.2f} - {piece['to_km']:6.2f}")


@app.command()
def check(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    osm: Annotated[
        Path | None, typer.Option(help="Street file (.osm[.bz2|.gz|.pbf], .graphml[.gz]).")
    ] = None,
) -> None:
    """Check SCENARIO without running it: keys, streets, course, closures, memory.

    Exit 0 if a run could start, 2 (with the file and key) if not; in seconds.
    """
    from sim.preflight import check_scenario
    from sim.scenario import load_scenario

    try:
        found = check_scenario(load_scenario(scenario), osm=osm)
    except CrowdsimError as exc:
        raise _fail(exc) from None
    summary = found.summary()
    typer.echo(f"{scenario}: ok")
    typer.echo(f"streets: {summary['streets']['source']}")
    typer.echo(f"course: {summary['course_km']:.2f} km")
    typer.echo(f"estimated memory: {summary['memory_gb']:.1f} GB")


@app.command()
def validate(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run folder(s); several = replications of one scenario.")
    ],
    bounds: Annotated[Path, typer.Option("--bounds", help="Error-bound spec (TOML).")],
) -> None:
    """Check error bounds on run folders: exit 0 if all hold, 1 if any fails, 2 on bad input."""
    from validation.checks import check_bounds, format_results

    try:
        results = check_bounds(run_dirs, bounds)
    except CrowdsimError as exc:
        raise _fail(exc) from None
    typer.echo(format_results(results))
    if not all(r.passed for r in results):
        raise typer.Exit(code=1)


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep TOML file (base, set, vary).")],
    out: Annotated[Path, typer.Option("--out", help="Sweep folder to write (or resume).")],
    workers: Annotated[
        int | None, typer.Option(help="Local worker processes (default: one per core).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address, e.g. tcp://HOST:8786.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run a sweep: exit 0 if every run is ok, 1 if any failed (recorded), 2 on bad input.

    Finished runs already in OUT are kept, so an interrupted sweep resumes.
    """
    from validation.sweep import run_sweep

    try:
        _writable_folder(out)
        result = run_sweep(
            sweep_file, out, workers=workers, scheduler=scheduler, progress=not quiet
        )
    except CrowdsimError as exc:
        raise _fail(exc) from None
    runs = result.state["runs"]
    typer.echo(f"sweep folder: {result.out_dir}")
    typer.echo(
        f"{len(runs)} runs: {len(runs) - len(result.failed)} ok "
        f"({len(result.reused)} reused from an earlier call), {len(result.failed)} failed"
    )
    for entry in runs:
        if entry["status"] != "ok":
            typer.echo(f"  {entry['run_id']}: {entry['error']}")
    typer.echo(f"table: {result.out_dir / 'sweep_metrics.parquet'}")
    typer.echo(f"figure: {result.out_dir / 'sweep_summary.png'}")
    if result.failed:
        raise typer.Exit(code=1)


@app.command()
def study(
    study_file: Annotated[Path, typer.Argument(help="Study TOML file (variants, scenarios).")],
    out: Annotated[Path, typer.Option("--out", help="Study folder to write (or resume).")],
    docs: Annotated[
        Path | None, typer.Option(help="Folder of the page estimators.md and its figures/.")
    ] = Path("docs"),
    readme: Annotated[
        Path | None, typer.Option(help="README whose study block gets the summary table.")
    ] = Path("README.md"),
    workers: Annotated[
        int | None, typer.Option(help="Local processes per sweep (unless the study sets it).")
    ] = None,
    replications: Annotated[
        int | None,
        typer.Option(help="Use only the first N replications of each sweep (a preview)."),
    ] = None,
    rescore: Annotated[
        bool, typer.Option("--rescore", help="Score every variant again, kept scores too.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Compare estimator variants on the same runs over seeds; write the page and table.

    Finished runs already in OUT are reused, so a second call only estimates and scores
    again. Exit 0 when done (runs that failed are left out and listed), 2 on bad input.
    """
    from validation.study import run_study

    command = f"crowdsim study {study_file} --out {out}"
    if replications is not None:
        command += f" --replications {replications}"
    try:
        _writable_folder(out)
        result = run_study(
            study_file,
            out,
            docs=docs,
            readme=readme,
            workers=workers,
            progress=not quiet,
            replications=replications,
            rescore=rescore,
            command=command,
            log=None if quiet else typer.echo,
        )
    except CrowdsimError as exc:
        raise _fail(exc) from None
    typer.echo(f"study folder: {result.out_dir}")
    for name, failed in result.failed.items():
        for run_id in failed:
            typer.echo(f"  {name}/{run_id}: failed, left out (see its sweep.json)")
    for path in result.written:
        if path.suffix in (".md", ".png") or path.name.lower().startswith("readme"):
            typer.echo(f"wrote {path}")


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="Baseline run folder (A).")],
    run_b: Annotated[Path, typer.Argument(help="Variant run folder (B); differences are B - A.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for compare.parquet and the map.")],
) -> None:
    """Compare two runs on the same streets: a table (printed, compare.parquet) and a map."""
    from sim.compare import compare_runs, format_table, write_comparison

    try:
        comparison = compare_runs(run_a, run_b)
        _writable_folder(out)
        written = write_comparison(comparison, out)
    except CrowdsimError as exc:
        raise _fail(exc) from None
    typer.echo(f"A: {comparison.run_a.label}")
    typer.echo(f"B: {comparison.run_b.label}")
    typer.echo(format_table(comparison.table))
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def verify(
    suite: Annotated[str, typer.Argument(help="The suite to run: 'crowd'.")],
    case: Annotated[
        list[str] | None, typer.Option("--case", help="Run only this case (repeatable).")
    ] = None,
) -> None:
    """Check a model against the literature.

    Prints a table of expected vs measured, then one JSON object on the last line; exit
    status 1 if a check fails.
    """
    if suite != "crowd":
        raise _fail(CrowdsimError(f"verify: unknown suite {suite!r}; allowed: 'crowd'"))
    from sim.crowd.verify import format_table, run_cases

    try:
        checks, seconds = run_cases(case)
    except ValueError as exc:
        raise _fail(exc) from exc
    typer.echo(format_table(checks))
    passed = all(c.ok for c in checks)
    summary = {"suite": suite, "passed": passed, "seconds": seconds}
    typer.echo(json.dumps(summary | {"checks": [c.as_dict() for c in checks]}))
    if not passed:
        raise typer.Exit(code=1)


#: Options of the dashboard commands.
PORT = typer.Option("--port", min=1, max=65535, help="Port of the dashboard's web server.")
ADDRESS = typer.Option(
    "--address", help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: all)."
)
NO_BROWSER = typer.Option("--no-browser", help="Do not open a browser tab.")


@app.command()
def serve(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="A finished run folder; a second one (variant) to compare.")
    ],
    port: Annotated[int, PORT] = 5006,
    address: Annotated[str, ADDRESS] = "127.0.0.1",
    no_browser: Annotated[bool, NO_BROWSER] = False,
) -> None:
    """Show finished runs in the browser: a map with a clock, layers, series and alerts.

    With two folders, the first is the baseline (A) and the second the variant (B),
    beside each other or as their difference. Works offline. Exit 2 on bad input (not a
    finished run folder, a file missing, a port in use).
    """
    from sim.dashboard.serve import dashboard_app, load_runs
    from sim.dashboard.serve import serve as serve_app

    try:
        runs = load_runs(run_dirs)
        typer.echo(" vs ".join(r.label for r in runs))
        serve_app(dashboard_app(runs), port=port, address=address, show=not no_browser)
    except CrowdsimError as exc:
        raise _fail(exc) from None


@app.command()
def live(
    scenario: Annotated[Path, typer.Argument(help="Scenario TOML file.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run folder to write (default: a new temporary folder)."),
    ] = None,
    osm: Annotated[
        Path | None, typer.Option(help="Street file (.osm[.bz2|.gz|.pbf], .graphml[.gz]).")
    ] = None,
    overwrite: Annotated[bool, OVERWRITE] = False,
    port: Annotated[int, PORT] = 5006,
    address: Annotated[str, ADDRESS] = "127.0.0.1",
    no_browser: Annotated[bool, NO_BROWSER] = False,
) -> None:
    """Run SCENARIO as a stream and show each simulated minute in the browser as it is done.

    The run writes its folder as ``crowdsim run`` does (and is scored); when it has
    finished, the page shows the finished run with every layer. Exit 2 on bad input.
    """
    import tempfile

    from sim.dashboard.data import RunData
    from sim.dashboard.serve import LiveFeed, dashboard_app, streaming_available
    from sim.dashboard.serve import serve as serve_app
    from sim.runfolder import MANIFEST
    from sim.scenario import load_scenario

    try:
        if not streaming_available():
            raise CrowdsimError(
                "live: this crowdsim has no streaming run (sim.stream); use `crowdsim run` "
                "and then `crowdsim serve RUN_DIR`"
            )
        loaded = load_scenario(scenario)
        folder = Path(tempfile.mkdtemp(prefix="crowdsim-live-")) if out is None else out
        _writable_folder(folder)
        if (folder / MANIFEST).is_file() and not overwrite:
            raise CrowdsimError(
                f"--out {folder}: already holds a run; give --overwrite (it is moved into "
                f"{folder / '.previous'}) or choose another --out"
            )
        from sim.run import run_scenario
        from validation.scoring import score_run

        def runner(on_minute: Any) -> Any:
            # on_minute: the streaming run's frames (sim.stream.MinuteFrame)
            stream: dict[str, Any] = {"on_minute": on_minute}
            return run_scenario(
                loaded, folder, osm=osm, progress=False, overwrite=overwrite,
                scorer=score_run, **stream,
            )  # fmt: skip

        feed = LiveFeed(RunData.for_scenario(loaded), folder, runner).start()
        typer.echo(f"live run of {loaded.name} into {folder}")
        serve_app(dashboard_app(live=feed), port=port, address=address, show=not no_browser)
    except CrowdsimError as exc:
        raise _fail(exc) from None


def _writable_folder(out: Path) -> None:
    """Check a file can be written in `out`, or say why not.

    Done before a command works for minutes to write there; `out` is created for the test
    and removed again if it was not there.
    """
    import tempfile

    if out.exists() and not out.is_dir():
        raise CrowdsimError(f"--out {out}: exists and is not a folder; choose another --out")
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
        for folder in created:  # innermost first; the command creates them when it writes
            folder.rmdir()
    except OSError as exc:
        raise CrowdsimError(
            f"--out {out}: cannot create or write this folder ({exc.strerror or exc}); "
            "choose a folder you may write in"
        ) from None


def _parse_spawn_key(text: str) -> tuple[int, ...]:
    try:
        key = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        key = (-1,)
    if not key or min(key) < 0:
        raise CrowdsimError(
            f"--spawn-key: {text!r} is not a spawn key; give whole numbers >= 0 separated by "
            "commas, as in a sweep run's manifest 'seed_spawn_key' (e.g. '1' or '0,1')"
        )
    return key


def _seed_for_spawn_key(seed: int | None, scenario: Path) -> int:
    if seed is None:
        raise CrowdsimError(
            f"--spawn-key needs --seed too (the sweep's seed; see 'seed' in the run's "
            f"manifest) for {scenario}"
        )
    return seed


def _print_result(manifest: dict, out_dir: Path) -> None:
    typer.echo(f"run folder: {out_dir}")
    typer.echo(f"street source: {manifest['street_source']['description']}")
    for name, record in manifest["stages"].items():
        typer.echo(f"  {name:<11} {record['status']:<10} {record.get('note', '')}")
    report = out_dir / "report.html"
    if report.is_file():
        typer.echo(f"report: {report}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
