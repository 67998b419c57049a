"""Running a sweep: the folder's lock, resuming, local workers (or Dask), sweep.json."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import json
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sim import __version__
from sim.errors import CrowdsimError
from sim.io import atomic_path, write_json
from sim.runfolder import FolderLock, open_run
from sim.scenario import (
    parse_scenario,
)
from validation.scoring import run_validated
from validation.sweep.results import plot_sweep, sweep_table
from validation.sweep.spec import Sweep, SweepError, SweepResult, SweepRun, load_sweep

__all__ = [
    "run_sweep",
]


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
    state = _state_head(sweep, scheduler=scheduler)
    entries, todo = _plan(sweep, out)
    state["runs"] = list(entries.values())
    _write_state(state, out)
    reused = [run_id for run_id, entry in entries.items() if entry.get("reused")]
    ran: list[str] = []
    if todo:
        ran = _run_todo(sweep, out, todo, entries, state, (workers, scheduler, progress), on_result)
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


def _plan(sweep: Sweep, out: Path) -> tuple[dict[str, dict[str, Any]], list[SweepRun]]:
    """Each run's entry of ``sweep.json``, and the runs to do.

    An entry is reused when its folder holds the run whole; an earlier attempt's folder of
    a run to do is removed.
    """
    previous = _previous_runs(out)
    entries: dict[str, dict[str, Any]] = {}
    todo: list[SweepRun] = []
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
        else:
            # an unfinished run starts afresh: no file of an earlier attempt may linger
            shutil.rmtree(out / "runs" / run.run_id, ignore_errors=True)
            todo.append(run)
        entries[run.run_id] = entry
    return entries, todo


def _run_todo(
    sweep: Sweep,
    out: Path,
    todo: list[SweepRun],
    entries: dict[str, dict[str, Any]],
    state: dict[str, Any],
    how: tuple[int | None, str | None, bool],
    on_result: Callable[[dict[str, Any]], None] | None,
) -> list[str]:
    """Run `todo` on the pool, recording each outcome in ``sweep.json`` as it comes."""
    workers, scheduler, progress = how
    pool = _Pool(workers, scheduler, len(todo))
    state["executor"] = pool.describe
    ran: list[str] = []
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
    return ran


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
