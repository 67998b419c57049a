"""Replications and sweeps: one scenario run many times, over parameter values and seeds.

A sweep file (TOML) names a base scenario, what to change in it for every run, which
parameters to vary and how many replications (seeds) each parameter point gets::

    name = "smoke_market_share"
    base = "../smoke.toml"        # relative to this file
    seed = 2019                   # root SeedSequence of the sweep (default: the base's seed)
    replications = 3              # runs per parameter point, each with its own seeds
    mode = "grid"                 # grid: every combination; list: the i-th values together
    seeds = "common"              # common: replication r has the same seeds at every point

    [set]                         # fixed changes for every run; tables merge like `extends`
    output.report = false

    [vary]                        # parameter path -> its values
    "network.market_shares.proximus" = [0.2, 0.4]
    "estimators.privacy_threshold" = [0, 30]

    [summary]                     # the summary figure (optional)
    x = "network.market_shares.proximus"     # default: the first varied parameter
    metrics = ["area/mape", "grid/kwd_mean_m"]

A parameter path is a dotted path into the scenario (``closures.0.start`` indexes a
list); it must exist in the base scenario, and every point must give a valid scenario,
both checked before anything runs.

Seeds. The sweep's root is ``SeedSequence(seed)``; replication ``r`` runs with the child
``SeedSequence(seed, spawn_key=(r,))`` (``seeds = "common"``, the default: the points of
one replication share their crowd, so differences between points come from the
parameters, not from another crowd: common random numbers) or
``SeedSequence(seed, spawn_key=(point, r))`` (``seeds = "independent"``). Each run
spawns its subsystems (crowd, network, estimators) from that child
(:func:`sim.run.seed_sequences`). The seeds of a run depend only on its point and
replication, never on the order in which runs finish, so a sweep gives the same tables
in local processes and on a Dask cluster. A run's manifest records ``seed`` and
``seed_spawn_key``; :func:`reproduce_run` runs it again from its folder alone.

The output folder::

    DIR/sweep.json              the sweep, its points and every run's status and error,
                                rewritten (atomically) after each finished run
    DIR/runs/<run_id>/          one ordinary run folder per run (p000-r000, ...)
    DIR/sweep_metrics.parquet   one row per run x method x zone system x metric, with the
                                parameter values as columns (a failed run: one row with
                                its error and no metric)
    DIR/sweep_summary.png       error vs parameter: median over replications, band from
                                the lowest to the highest replication, each run a dot

Resuming. Running a sweep into a folder that already holds some of its runs skips every
run whose manifest says ``ok`` for the same resolved scenario and seeds; the others
(unfinished, failed, or of other parameter values) are run again. A failing run is
recorded with its error and the other runs go on. With a Dask scheduler the workers
must be able to import crowdsim and write to DIR at the same path (a shared folder), and
should run one task at a time each (``dask worker ADDRESS --nthreads 1``): a run is
NumPy-bound and draws figures with matplotlib, whose pyplot is not thread-safe.
"""

from __future__ import annotations

import concurrent.futures
import copy
import datetime as dt
import functools
import itertools
import json
import multiprocessing
import os
import shutil
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sim import __version__
from sim.errors import CrowdsimError, ScenarioError
from sim.io import atomic_path, read_toml, write_json
from sim.runfolder import SCENARIO, FolderLock, open_run, read_manifest
from sim.scenario import (
    Scenario,
    describe_error,
    load_scenario,
    merge_tables,
    parse_scenario,
)
from validation.metrics import GRID_ONLY, METRICS, SYSTEMS
from validation.scoring import run_validated

__all__ = [
    "Sweep",
    "SweepError",
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "load_sweep",
    "plot_sweep",
    "reproduce_run",
    "run_sweep",
    "sweep_table",
]

#: Columns of ``sweep_metrics.parquet`` before the parameter columns, and after them.
ID_COLUMNS = ("run_id", "point", "replication")
RESULT_COLUMNS = ("status", "error", "method", "zone_system", "metric", "value", "n")
#: Scenario keys a sweep may not change: the sweep's own `seed` and `replications` set them.
RESERVED = ("seed",)


class SweepError(CrowdsimError, ValueError):
    """A sweep file is unreadable or describes runs that cannot be made."""


class SummarySpec(BaseModel):
    """What the summary figure shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: str | None = Field(None, description="the varied parameter on the x axis")
    metrics: list[str] = Field(
        default_factory=lambda: ["area/mape", "grid/kwd_mean_m"],
        min_length=1,
        description="'zone_system/metric' per panel row",
    )

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for item in value:
            system, _, metric = item.partition("/")
            if system not in SYSTEMS or metric not in METRICS:
                raise ValueError(
                    f"{item!r}: needs 'zone_system/metric' with a zone system of "
                    f"{', '.join(SYSTEMS)} and a metric of {', '.join(METRICS)}"
                )
            if metric in GRID_ONLY and system != "grid":
                raise ValueError(f"{item!r}: metric {metric!r} exists for 'grid' only")
        return value


class SweepSpec(BaseModel):
    """A sweep file as written (see the module docstring for the keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    base: str = Field(min_length=1, description="base scenario, relative to the sweep file")
    seed: int | None = Field(None, ge=0, description="root seed; default: the base's seed")
    replications: int = Field(1, ge=1, le=100_000)
    mode: Literal["grid", "list"] = "grid"
    seeds: Literal["common", "independent"] = "common"
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")
    vary: dict[str, list[Any]] = Field(default_factory=dict)
    summary: SummarySpec = Field(default_factory=SummarySpec)


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: a parameter point, a replication, its seeds and its scenario."""

    run_id: str
    point: int
    replication: int
    params: dict[str, Any]
    seed: int
    spawn_key: tuple[int, ...]
    scenario: Scenario


@dataclass(frozen=True)
class Sweep:
    """A loaded, checked sweep: its spec, the base scenario, the points and the runs."""

    spec: SweepSpec
    source: Path
    base: Path
    seed: int
    parameters: dict[str, list[Any]]
    points: list[dict[str, Any]]
    runs: list[SweepRun]


@dataclass
class SweepResult:
    """What a sweep did: its folder, table, state and which runs ran, were reused, failed."""

    out_dir: Path
    table: pd.DataFrame
    state: dict[str, Any]
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and check a sweep file; build the scenario of every point.

    Parameters
    ----------
    path
        The sweep TOML file.

    Returns
    -------
    Sweep
        The points (in grid or list order) and the runs (point by point, replications
        within), each run with its validated scenario and seeds.

    Raises
    ------
    SweepError
        The file is missing or not TOML; a key is unknown or wrong; the base scenario
        is missing or invalid; a parameter path does not exist in the base scenario; a
        parameter has no values; or a point gives an invalid scenario. The message
        names the sweep file and the key.
    """
    path = Path(path)
    data = read_toml(path, error=SweepError, what="sweep file")
    vary = data.get("vary", {})
    if not isinstance(vary, dict):
        raise SweepError(f"{path}: vary: needs a table of 'parameter.path' = [values]")
    data["vary"] = _flatten_vary(vary, path)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{path}: {describe_error(err, root=SweepSpec)}" for err in exc.errors()]
        raise SweepError(
            "\n".join(problems) + "\nThe keys of a sweep file: see validation/sweep.py."
        ) from None
    return _build(spec, path)


def _flatten_vary(table: dict[str, Any], path: Path, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [..]}}`` and ``{"a.b": [..]}`` alike become ``{"a.b": [..]}``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_vary(value, path, prefix=f"{name}."))
        elif not isinstance(value, list):
            raise SweepError(
                f"{path}: vary.{name}: needs a list of values, e.g. [0.2, 0.4], got {value!r}"
            )
        elif not value:
            raise SweepError(f"{path}: vary.{name}: empty list of values; give at least one")
        else:
            out[name] = value
    return out


def _build(spec: SweepSpec, path: Path) -> Sweep:
    base_path = (path.parent / spec.base).resolve()
    if not base_path.is_file():
        raise SweepError(
            f"{path}: base: no scenario file {spec.base!r} (looked for {base_path}; a relative "
            "path is relative to the sweep file's folder)"
        )
    try:
        base = load_scenario(base_path)
    except ScenarioError as exc:
        raise SweepError(f"{path}: base: the base scenario is not valid: {exc}") from None
    for key in RESERVED:
        if key in spec.overrides or key in spec.vary:
            raise SweepError(
                f"{path}: {key}: a sweep sets the seed of its runs itself (its `seed` key and "
                "`replications`); remove it from [set] and [vary]"
            )
    data = merge_tables(base.model_dump(mode="json", exclude_none=True), spec.overrides)
    try:
        with_set = parse_scenario(data, source=base_path)
    except ScenarioError as exc:
        raise SweepError(f"{path}: set: the base with these changes is not valid: {exc}") from None
    for name in spec.vary:
        _check_path(with_set, name, where=f"{path}: vary.{name}")
    points = _points(spec, path)
    if spec.summary.x is not None and spec.summary.x not in spec.vary:
        raise SweepError(
            f"{path}: summary.x: {spec.summary.x!r} is not a varied parameter; varied: "
            f"{', '.join(spec.vary) or 'none'}"
        )
    seed = with_set.seed if spec.seed is None else spec.seed
    runs = []
    for p, params in enumerate(points):
        point_data = copy.deepcopy(data)
        for name, value in params.items():
            _set_path(point_data, name, value)
        point_data["seed"] = seed
        try:
            scenario = parse_scenario(point_data, source=base_path)
        except ScenarioError as exc:
            raise SweepError(
                f"{path}: vary: point {p} ({_label(params)}) is not a valid scenario: {exc}"
            ) from None
        for r in range(spec.replications):
            key = (r,) if spec.seeds == "common" else (p, r)
            runs.append(
                SweepRun(
                    run_id=f"p{p:03d}-r{r:03d}",
                    point=p,
                    replication=r,
                    params=params,
                    seed=seed,
                    spawn_key=key,
                    scenario=scenario,
                )
            )
    return Sweep(
        spec=spec,
        source=path,
        base=base_path,
        seed=seed,
        parameters=dict(spec.vary),
        points=points,
        runs=runs,
    )


def _points(spec: SweepSpec, path: Path) -> list[dict[str, Any]]:
    names = list(spec.vary)
    if not names:
        return [{}]  # replications of the base only
    values = [spec.vary[n] for n in names]
    if spec.mode == "grid":
        combos: Iterable[tuple[Any, ...]] = itertools.product(*values)
    else:
        lengths = {n: len(v) for n, v in spec.vary.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n}: {k}" for n, k in lengths.items())
            raise SweepError(
                f"{path}: vary: mode = 'list' pairs the i-th values of every parameter, so "
                f"every list needs the same length ({shown}); or use mode = 'grid'"
            )
        combos = zip(*values, strict=True)
    return [dict(zip(names, combo, strict=True)) for combo in combos]


def _check_path(scenario: Scenario, name: str, *, where: str) -> None:
    """Raise SweepError unless `name` is a path to an existing value of `scenario`."""
    node: Any = scenario
    done: list[str] = []
    for part in name.split("."):
        here = ".".join(done) or "(top level)"
        if isinstance(node, BaseModel):
            fields = type(node).model_fields
            if part not in fields:
                raise SweepError(
                    f"{where}: unknown parameter path: {here} has no key {part!r}; allowed "
                    f"keys there: {', '.join(fields)}"
                )
            node = getattr(node, part)
        elif isinstance(node, dict):
            if part not in node:
                raise SweepError(
                    f"{where}: unknown parameter path: {here} has no key {part!r} in the base "
                    f"scenario; it has {', '.join(map(str, node)) or 'none'}"
                )
            node = node[part]
        elif isinstance(node, list | tuple):
            if not part.isdigit() or int(part) >= len(node):
                raise SweepError(
                    f"{where}: unknown parameter path: {here} is a list of {len(node)} in the "
                    f"base scenario; index it with 0..{len(node) - 1}, got {part!r}"
                )
            node = node[int(part)]
        elif node is None:
            raise SweepError(
                f"{where}: {here} is not set in the base scenario; set the whole table in "
                f"[set] first, or vary {here!r} itself with tables as values"
            )
        else:
            raise SweepError(f"{where}: {here} is a single value ({node!r}), not a table")
        done.append(part)


def _set_path(data: dict[str, Any], name: str, value: Any) -> None:
    parts = name.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(value)
    else:
        node[last] = copy.deepcopy(value)


def _label(params: dict[str, Any]) -> str:
    if not params:
        return "base"
    return ", ".join(f"{n.rsplit('.', 1)[-1]}={_short(v)}" for n, v in params.items())


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


# ----------------------------------------------------------------------------- running


def _execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep run in a worker; return its status, never raise for a run's failure."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {"run_id": task["run_id"], "status": "ok", "error": None}
    try:
        scenario = parse_scenario(task["scenario"], source=Path(task["source"]))
        seed = np.random.SeedSequence(task["seed"], spawn_key=tuple(task["spawn_key"]))
        # the sweep owns its runs' folders: an earlier attempt's files are replaced
        run_validated(scenario, task["out_dir"], seed=seed, progress=False, overwrite=True)
    except Exception as exc:
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, CrowdsimError):  # a bug, not bad input: keep where it was
            record["traceback"] = "".join(traceback.format_exception(exc)[-6:])
    record["seconds"] = round(time.perf_counter() - t0, 3)
    record["finished"] = _now()
    return record


def _expected(run: SweepRun) -> dict[str, Any]:
    """The scenario as the run's manifest records it."""
    return run.scenario.model_dump(mode="json")


def _is_done(run: SweepRun, run_dir: Path) -> bool:
    """True when `run_dir` holds a complete, undamaged run of `run` (same scenario, seeds).

    A run that is interrupted, failed, damaged or mixed (:func:`sim.runfolder.open_run`)
    is not done: the sweep runs it again.
    """
    try:
        folder = open_run(run_dir, purpose="the sweep")
    except CrowdsimError:
        return False
    if folder.seed != run.seed or folder.spawn_key != tuple(run.spawn_key):
        return False
    return folder.manifest.get("scenario") == _expected(run)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the sweep's process ends, however it ends.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); a
    thread also checks every half second that the parent is still this worker's parent
    (other systems, or a parent that died before the first call). So ``kill -9`` of a
    sweep leaves no worker writing runs; its unfinished runs read ``interrupted``.
    """
    import ctypes
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - no usable libc
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


class _Pool:
    """Local processes or a Dask client behind one submit / as_completed / close."""

    def __init__(self, workers: int | None, scheduler: str | None, n_tasks: int) -> None:
        self.scheduler = scheduler
        if scheduler is None:
            n = workers if workers is not None else min(os.cpu_count() or 1, n_tasks)
            # spawn: a fresh interpreter per worker, safe whatever threads the parent runs
            self._executor: Any = concurrent.futures.ProcessPoolExecutor(
                max_workers=max(n, 1),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
            self.submit: Callable[..., Any] = self._executor.submit
            self.as_completed: Callable[..., Iterator[Any]] = concurrent.futures.as_completed
            self.describe = f"{max(n, 1)} local process(es)"
            return
        try:
            from distributed import Client, as_completed
        except ImportError as exc:  # pragma: no cover - a dependency of crowdsim
            raise SweepError(f"--scheduler needs the 'distributed' package ({exc})") from None
        try:
            self._executor = Client(scheduler, timeout=10, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise SweepError(
                f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc}); give "
                "the address it prints, e.g. tcp://HOST:8786"
            ) from None
        self.submit = functools.partial(self._executor.submit, pure=False)
        self.as_completed = functools.partial(as_completed, loop=self._executor.loop)
        self.describe = f"Dask scheduler {scheduler}"

    def close(self, *, wait: bool = True) -> None:
        if self.scheduler is None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
        else:
            self._executor.close()


def run_sweep(
    sweep: Sweep | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run every run of a sweep that is not already complete in `out_dir`; write the results.

    Parameters
    ----------
    sweep
        A :class:`Sweep` (:func:`load_sweep`) or the path of a sweep file.
    out_dir
        The sweep folder; created if needed. Complete runs already in it are kept.
    workers
        Local worker processes (default: the number of cores, at most one per run).
    scheduler
        Address of a Dask scheduler (``tcp://HOST:8786``): run there instead of in local
        processes. The workers must import crowdsim and see `out_dir` at the same path.
    progress
        Show a progress bar over the runs.
    on_result
        Called in this process with each finished run's record (status, error, seconds).

    Returns
    -------
    SweepResult
        The table (also in ``sweep_metrics.parquet``), the state (``sweep.json``) and
        which runs ran, were reused from an earlier call, and failed.

    Raises
    ------
    SweepError
        Bad sweep file, both `workers` and `scheduler`, bad `workers`, or an unreachable
        scheduler. A failing run does not raise: it is recorded and the others go on.
    RunFolderError
        Another sweep (or run) holds `out_dir`.

    Notes
    -----
    Local workers are started with ``spawn`` (a fresh interpreter each, whatever threads
    this process runs), so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard. They die with this process, however it ends
    (:func:`_die_with_parent`); Dask workers are the cluster's and are not stopped. The
    sweep holds the lock of `out_dir` while it runs, each run the lock of its folder; a
    finished run is reused only when :func:`sim.runfolder.open_run` accepts it (status
    ``ok``, every file as the run wrote it), else it is run again and ``attempts`` in
    ``sweep.json`` counts its tries.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    if workers is not None and scheduler is not None:
        raise SweepError(
            "--workers is for local processes; with --scheduler the cluster's workers run "
            "the sweep. Give one of the two."
        )
    if workers is not None and workers < 1:
        raise SweepError(f"--workers {workers}: needs at least 1")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SweepError(f"{out}: exists and is not a folder; choose another --out")
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(
            f"{out}: cannot create the sweep folder ({exc}); choose another --out"
        ) from None
    with FolderLock(out, what="sweep"):  # a second sweep into `out` is refused
        return _run_locked(sweep, out, workers, scheduler, progress, on_result)


def _run_locked(
    sweep: Sweep,
    out: Path,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    on_result: Callable[[dict[str, Any]], None] | None,
) -> SweepResult:
    """The body of :func:`run_sweep`, run holding the sweep folder's lock."""
    previous = _previous_runs(out)
    state = _state_head(sweep, scheduler=scheduler)
    entries: dict[str, dict[str, Any]] = {}
    todo: list[SweepRun] = []
    reused: list[str] = []
    for run in sweep.runs:
        entry = {
            "run_id": run.run_id,
            "point": run.point,
            "replication": run.replication,
            "params": run.params,
            "seed": run.seed,
            "spawn_key": list(run.spawn_key),
            "status": "pending",
            "error": None,
            "attempts": 0,
            "seconds": None,
            "finished": None,
        }
        before = previous.get(run.run_id)
        same = before is not None and before.get("spawn_key") == list(run.spawn_key)
        if same and before is not None and before.get("params") == _jsonable(run.params):
            entry["attempts"] = int(before.get("attempts", 0))
        if _is_done(run, out / "runs" / run.run_id):
            entry["status"] = "ok"
            entry["reused"] = True
            if same and before is not None:
                entry.update(seconds=before.get("seconds"), finished=before.get("finished"))
            reused.append(run.run_id)
        else:
            # an unfinished run starts afresh: no file of an earlier attempt may linger
            shutil.rmtree(out / "runs" / run.run_id, ignore_errors=True)
            todo.append(run)
        entries[run.run_id] = entry
    state["runs"] = list(entries.values())
    _write_state(state, out)

    ran: list[str] = []
    if todo:
        pool = _Pool(workers, scheduler, len(todo))
        state["executor"] = pool.describe
        try:
            ids = {pool.submit(_execute, _task(run, out)): run.run_id for run in todo}
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=sweep.spec.name, unit="run", disable=not progress)
            for future in pool.as_completed(list(ids)):
                record = _outcome(future, ids[future])
                entry = entries[record["run_id"]]
                entry.update({k: v for k, v in record.items() if k != "run_id"})
                entry["attempts"] += 1
                entry["reused"] = False
                ran.append(record["run_id"])
                state["runs"] = list(entries.values())
                _write_state(state, out)
                bar.update()
                if on_result is not None:
                    on_result(dict(entry))
            bar.close()
        except BaseException:
            pool.close(wait=False)  # interrupted: finished runs are kept, the rest resume
            raise
        pool.close()

    table = sweep_table(sweep, out, state["runs"])
    dest = out / "sweep_metrics.parquet"
    with atomic_path(dest) as tmp:
        table.to_parquet(tmp, index=False)
    plot_sweep(table, sweep, out / "sweep_summary.png")
    state["finished"] = _now()
    _write_state(state, out)
    failed = [e["run_id"] for e in state["runs"] if e["status"] != "ok"]
    return SweepResult(
        out_dir=out, table=table, state=state, ran=sorted(ran), reused=reused, failed=failed
    )


def _task(run: SweepRun, out: Path) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "out_dir": str((out / "runs" / run.run_id).resolve()),
        "scenario": run.scenario.model_dump(mode="json", exclude_none=True),
        "source": str(run.scenario.source),
        "seed": run.seed,
        "spawn_key": list(run.spawn_key),
    }


def _outcome(future: Any, run_id: str) -> dict[str, Any]:
    """The record a worker returned; a lost worker (killed, out of memory) is a failure too."""
    try:
        return future.result()
    except Exception as exc:  # the worker died; _execute itself never raises
        return {
            "run_id": run_id,
            "status": "failed",
            "error": f"the worker running it was lost: {type(exc).__name__}: {exc}",
            "seconds": None,
            "finished": _now(),
        }


def _previous_runs(out: Path) -> dict[str, dict[str, Any]]:
    try:
        state = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
        return {e["run_id"]: e for e in state.get("runs", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _state_head(sweep: Sweep, *, scheduler: str | None) -> dict[str, Any]:
    return {
        "crowdsim": __version__,
        "name": sweep.spec.name,
        "description": sweep.spec.description,
        "sweep_file": str(sweep.source),
        "base": str(sweep.base),
        "seed": sweep.seed,
        "seeds": sweep.spec.seeds,
        "replications": sweep.spec.replications,
        "mode": sweep.spec.mode,
        "set": sweep.spec.overrides,
        "parameters": _jsonable(sweep.parameters),
        "points": [_jsonable(p) for p in sweep.points],
        "scheduler": scheduler,
        "executor": None,
        "started": _now(),
        "finished": None,
        "runs": [],
    }


def _write_state(state: dict[str, Any], out: Path) -> None:
    counts: dict[str, int] = {}
    for entry in state["runs"]:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    state["counts"] = counts
    state["updated"] = _now()
    write_json(state, out / "sweep.json")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- results


def sweep_table(
    sweep: Sweep, out_dir: str | os.PathLike[str], runs: list[dict[str, Any]]
) -> pd.DataFrame:
    """One row per run x method x zone system x metric, with the parameters as columns.

    Parameters
    ----------
    sweep
        The sweep (its parameters name the columns).
    out_dir
        The sweep folder; each ``ok`` run's ``runs/<run_id>/metrics.parquet`` is read.
    runs
        The run entries of ``sweep.json`` (run_id, point, replication, params, status,
        error).

    Returns
    -------
    DataFrame
        run_id, point, replication, one column per varied parameter (numbers stay
        numbers; tables and lists as JSON text), status, error, method, zone_system,
        metric, value, n. A run without metrics (failed, or no operator records) has one
        row with its status and error and no metric. Sorted by point and replication.
    """
    out = Path(out_dir)
    names = list(sweep.parameters)
    frames = []
    for entry in sorted(runs, key=lambda e: (e["point"], e["replication"])):
        metrics_file = out / "runs" / entry["run_id"] / "metrics.parquet"
        if entry["status"] == "ok" and metrics_file.is_file():
            frame = pd.read_parquet(metrics_file)
        else:
            frame = pd.DataFrame({"method": [None]})
        frame = frame.assign(
            run_id=entry["run_id"],
            point=entry["point"],
            replication=entry["replication"],
            status=entry["status"],
            error=entry.get("error"),
        )
        for name in names:
            frame[name] = [entry["params"].get(name)] * len(frame)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    for column in RESULT_COLUMNS:
        if column not in table:
            table[column] = None
    for name in names:
        table[name] = _parameter_column(table[name])
    table["point"] = table["point"].astype("int64")
    table["replication"] = table["replication"].astype("int64")
    table["value"] = table["value"].astype("float64")
    table["n"] = table["n"].astype("Int64")
    for column in ("run_id", "status", "error", "method", "zone_system", "metric"):
        table[column] = table[column].astype("string")
    return table[[*ID_COLUMNS, *names, *RESULT_COLUMNS]]


def _parameter_column(values: pd.Series) -> pd.Series:
    """Numbers as float or int, text as text, bools as bools, anything else as JSON text."""
    items = list(values)
    if all(isinstance(v, bool) for v in items):
        return pd.Series(items, index=values.index, dtype="boolean")
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        if all(isinstance(v, int) for v in items):
            return pd.Series(items, index=values.index, dtype="int64")
        return pd.Series(items, index=values.index, dtype="float64")
    return pd.Series([_short(v) for v in items], index=values.index, dtype="string")


def plot_sweep(
    table: pd.DataFrame, sweep: Sweep, dest: str | os.PathLike[str], *, dpi: int = 110
) -> Path:
    """Draw error vs parameter, with the spread over replications, into a PNG.

    One row of panels per ``summary.metrics`` entry; in grid mode with several varied
    parameters, one column per combination of the parameters other than ``summary.x``.
    Per method: each run a dot, the median over replications a line, the band from the
    lowest to the highest replication.

    Returns
    -------
    Path
        `dest`, written atomically.
    """
    from matplotlib.figure import Figure

    names = list(sweep.parameters)
    x_name = sweep.spec.summary.x or (names[0] if names else None)
    others = [n for n in names if n != x_name] if sweep.spec.mode == "grid" else []
    facets: list[tuple[Any, ...]] = (
        list(dict.fromkeys(table[others].itertuples(index=False, name=None))) if others else [()]
    )
    panels = sweep.spec.summary.metrics
    ok = table[table["status"] == "ok"]
    fig = Figure(figsize=(4.2 * len(facets) + 1.0, 3.2 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(facets), squeeze=False)
    x_values = list(dict.fromkeys(table[x_name])) if x_name else ["base"]
    numeric = x_name is not None and pd.api.types.is_numeric_dtype(table[x_name])
    numeric = numeric and not pd.api.types.is_bool_dtype(table[x_name])
    position = {v: (float(v) if numeric else float(i)) for i, v in enumerate(x_values)}
    methods = sorted(m for m in ok["method"].dropna().unique())
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for row, panel in enumerate(panels):
        system, _, metric = panel.partition("/")
        for col, facet in enumerate(facets):
            ax = axes[row][col]
            sub = ok[(ok["zone_system"] == system) & (ok["metric"] == metric)]
            for name, value in zip(others, facet, strict=True):
                sub = sub[sub[name] == value]
            drawn = False
            for method in methods:
                data = sub[(sub["method"] == method) & sub["value"].notna()]
                if data.empty:
                    continue
                xs = [position[v] for v in (data[x_name] if x_name else ["base"] * len(data))]
                ax.plot(xs, data["value"], "o", color=colours[method], alpha=0.35, ms=4)
                key = data[x_name] if x_name else pd.Series("base", index=data.index)
                stats = data["value"].groupby(key.map(position)).agg(["median", "min", "max"])
                ax.plot(stats.index, stats["median"], "-", color=colours[method], label=method)
                ax.fill_between(stats.index, stats["min"], stats["max"],
                                color=colours[method], alpha=0.15, lw=0)  # fmt: skip
                drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "no value", ha="center", va="center", transform=ax.transAxes)
            if not numeric:
                ax.set_xticks(list(position.values()), [_short(v) for v in x_values])
            ax.set_xlabel(x_name or "base scenario (no parameter varied)")
            ax.set_ylabel(f"{metric} ({system})")
            if facet:
                ax.set_title(_label(dict(zip(others, facet, strict=True))), fontsize=9)
            ax.grid(alpha=0.3)
            if drawn and row == 0 and col == 0:
                ax.legend(fontsize=8)
    n_failed = int(table.drop_duplicates("run_id")["status"].ne("ok").sum())
    fig.suptitle(
        f"{sweep.spec.name}: {sweep.spec.replications} replication(s) per point"
        + (f", {n_failed} run(s) failed" if n_failed else "")
        + "\nline: median over replications; band: lowest to highest; dot: one run",
        fontsize=10,
    )
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return dest


# ----------------------------------------------------------------------------- reproducing


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
