"""The one owner of a run folder: its file names, manifest, status, lock and reading.

A run folder is the interface between the stages of a run and everyone who reads it
(validation, compare, the report, sweeps). Only this module reads ``manifest.json``.

Lifecycle of a folder (the README shows it from the command line):

1. ``crowdsim run`` takes the folder's **lock** (``.lock``: an ``flock`` held for the
   whole run, with the owner's PID, host and start time inside). A second run or sweep
   into the same folder is refused while the lock is held. The kernel drops the lock
   when its process dies, whatever killed it, so a dead owner is recognisable.
2. A folder that already holds a run is refused unless the run is given ``overwrite``
   (``--overwrite``); then the earlier run's files are **moved aside** into
   ``.previous/`` (replacing what was there), so no earlier output can be read as part
   of the new run.
3. The **manifest** is written (atomically) when the run starts and after every stage,
   with every output's size and SHA-256; its ``status`` is ``running``, then ``ok``,
   ``failed`` or ``interrupted`` (SIGINT or SIGTERM; temporary ``.part`` files are
   removed). A manifest that says ``running`` while nobody holds the lock reads as
   ``interrupted``: its process died (e.g. ``kill -9``).
4. Readers :func:`open_run` the folder: it refuses a run that is still running,
   interrupted or failed, and a **mixed** folder (a file missing, changed since the run
   wrote it, or not written by the run the manifest describes), naming the folder, the
   file and what to do. Every refusal is a :class:`~sim.errors.RunFolderError`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.errors import RunFolderError
from sim.estimate.dedup import DUPLICITY_FILE
from sim.estimate.output import INTERNAL_ESTIMATES_FILE, PUBLISHED_ESTIMATES_FILE
from sim.estimate.priors import EVENT_PUBLIC_FILE
from sim.io import write_json

if TYPE_CHECKING:
    from sim.course import Course
    from sim.scenario import Scenario
    from sim.streets import Streets

__all__ = [
    "CELLS",
    "CELL_LOAD",
    "COURSE",
    "COURSE_STREETS",
    "DUPLICITY",
    "ESTIMATES",
    "ESTIMATES_INTERNAL",
    "EVENT_PUBLIC",
    "LOCK",
    "MANIFEST",
    "METRICS",
    "METRICS_BINS",
    "METRICS_JSON",
    "METRICS_ZONES",
    "NETWORK_PLAN",
    "PREVIOUS",
    "RECORDS",
    "REPORT",
    "RUN_FILE_PATTERNS",
    "SCENARIO",
    "STATUSES",
    "TRUTH_DEVICES",
    "TRUTH_EDGES",
    "TRUTH_ZONES",
    "ZONES",
    "FolderLock",
    "RunFolder",
    "RunFolderError",
    "RunInterrupted",
    "file_records",
    "lock_owner",
    "move_previous_run",
    "open_run",
    "read_manifest",
    "remove_temporaries",
    "run_status",
    "stop_on_signals",
    "write_manifest",
]

# ----------------------------------------------------------------------------- file names

#: The run's record: status, stages, facts, seeds, street source, outputs and checksums.
MANIFEST = "manifest.json"
#: The resolved scenario (``extends`` merged in): reruns and readers start from it.
SCENARIO = "scenario.toml"
#: The lock a run or sweep holds on its folder while it writes it.
LOCK = ".lock"
#: Where ``--overwrite`` moves the earlier run's files.
PREVIOUS = ".previous"
#: Streets stage: the course, its waypoints and the streets (layer :data:`COURSE_STREETS`).
COURSE = "course.gpkg"
COURSE_STREETS = "streets"
#: Streets stage: the event's public data (course, closures, fan areas, streets) that the
#: operator's event-aware prior reads (named where the estimators read it).
EVENT_PUBLIC = EVENT_PUBLIC_FILE
#: Crowd stage: the zone systems and the ground truth.
ZONES = "zones.gpkg"
TRUTH_ZONES = "truth_zones.parquet"
TRUTH_EDGES = "truth_edges.parquet"
#: Network stage: what the operator sees (records, counters, plan) and the cells.
RECORDS = "records.parquet"
CELL_LOAD = "cell_load.parquet"
NETWORK_PLAN = "network_plan.json"
CELLS = "cells.gpkg"
#: Network stage, ground truth: who carries each device of the records (never read by an
#: estimator; scores multi-SIM deduplication).
TRUTH_DEVICES = "truth_devices.parquet"
#: Estimators stage: the published table and the operator's internal one (named where the
#: estimators write them).
ESTIMATES = PUBLISHED_ESTIMATES_FILE
ESTIMATES_INTERNAL = INTERNAL_ESTIMATES_FILE
#: With deduplication on: each device's probability of being a person's second phone.
DUPLICITY = DUPLICITY_FILE
#: Validation stage.
METRICS = "metrics.parquet"
METRICS_ZONES = "metrics_zones.parquet"
METRICS_BINS = "metrics_bins.parquet"
METRICS_JSON = "metrics.json"
#: Report stage (figures are listed by the report and recorded in the manifest).
REPORT = "report.html"
#: What counts as a file of a run (moved aside by ``--overwrite``, and flagged when the
#: manifest does not list it): tables, maps, figures, the page, and the two records.
RUN_FILE_PATTERNS = (
    "*.parquet", "*.gpkg", "*.png", "*.gif", "*.html", "*.json", SCENARIO,
)  # fmt: skip
#: Temporary files of :func:`sim.io.atomic_path` (hidden, ``.part`` before the suffix).
TEMPORARY_PATTERN = ".*.part*"

#: Every status a manifest can say; ``running`` with no live owner reads as interrupted.
STATUSES = ("running", "ok", "failed", "interrupted")

_HINT_RERUN = "run the scenario again with --overwrite (or into a new --out)"


# ----------------------------------------------------------------------------- manifest


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``manifest.json`` of `folder`, whatever its status.

    Raises
    ------
    RunFolderError
        No such folder, no manifest, or a manifest that is not a run's JSON object.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(
            f"{folder}: no such run folder; give a folder `crowdsim run` wrote (--out)"
        )
    path = folder / MANIFEST
    if not path.is_file():
        raise RunFolderError(
            f"{path}: missing; {folder} is not a run folder (give a folder `crowdsim run` wrote)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunFolderError(f"{path}: not readable JSON ({exc}); {_HINT_RERUN}") from None
    if not isinstance(manifest, dict) or manifest.get("status") not in STATUSES:
        raise RunFolderError(
            f"{path}: not a run manifest (a JSON object with a 'status' of "
            f"{', '.join(STATUSES)}); {_HINT_RERUN}"
        )
    if not isinstance(manifest.get("scenario"), dict):
        raise RunFolderError(f"{path}: holds no 'scenario'; not a manifest of `crowdsim run`")
    return manifest


def write_manifest(manifest: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write `manifest` into `folder` atomically (readers see the old or the new one)."""
    return write_json(manifest, Path(folder) / MANIFEST)


def run_status(folder: str | os.PathLike[str], manifest: dict[str, Any] | None = None) -> str:
    """The status of the run in `folder`, as the world sees it.

    ``running`` in the manifest while no process holds the folder's lock means the run
    died without a word (``kill -9``, a crash, a power cut): it reads ``interrupted``.
    """
    manifest = read_manifest(folder) if manifest is None else manifest
    status = str(manifest.get("status"))
    if status == "running" and lock_owner(folder) is None:
        return "interrupted"
    return status


def file_records(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of each named file of `folder` (for the manifest's ``files``)."""
    return {
        name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
        for name in sorted(set(names))
        if (folder / name).is_file()
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, eq=False)
class RunFolder:
    """A run folder checked by :func:`open_run`: its path, manifest and resolved scenario."""

    path: Path
    manifest: dict[str, Any]
    scenario: Scenario

    @property
    def label(self) -> str:
        """Short name for tables and figures: the scenario's name and the folder."""
        return f"{self.scenario.name} ({self.path.name})"

    @property
    def out_dir(self) -> Path:
        """The folder (the name a running run's context uses, so the report reads both)."""
        return self.path

    @property
    def status(self) -> str:
        """The manifest's status (``ok`` for a folder opened with the default checks)."""
        return str(self.manifest.get("status"))

    @property
    def seed(self) -> int | None:
        """The run's root seed."""
        return self.manifest.get("seed")

    @property
    def spawn_key(self) -> tuple[int, ...]:
        """Spawn key of the run's root SeedSequence (``()`` for a plain seed)."""
        return tuple(int(k) for k in self.manifest.get("seed_spawn_key") or ())

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """Each stage's status, note and seconds, in the order they ran."""
        return dict(self.manifest.get("stages") or {})

    @property
    def facts(self) -> dict[str, Any]:
        """Figures each stage recorded (crowd outcomes, network load, estimators, ...)."""
        return dict(self.manifest.get("facts") or {})

    @property
    def street_source(self) -> dict[str, Any]:
        """The street source the run used: kind, detail, sha256, description."""
        source = self.manifest.get("street_source")
        return dict(source) if isinstance(source, dict) else {}

    @property
    def has_estimates(self) -> bool:
        """Whether the estimators stage wrote estimates (someone had a phone)."""
        return bool((self.facts.get("estimators") or {}).get("rows"))

    def file(self, name: str) -> Path:
        """Path of the run's file `name`."""
        return self.path / name

    def streets(self, *, cache_dir: str | os.PathLike[str] | None = None) -> Streets:
        """The street graph the run used, reloaded through :func:`sim.streets.load_streets`.

        Raises
        ------
        RunFolderError
            The manifest names no street source, or the source's SHA-256 is not the one
            the run used (the street file changed since).
        """
        from sim.streets import load_streets

        src = self.street_source
        kind = src.get("kind")
        cfg = self.scenario.streets
        where = self.path / MANIFEST
        osm = None
        if kind == "file":
            osm = src.get("detail")
        elif kind in ("place", "sketch"):
            cfg = cfg.model_copy(update={"source": kind})
        else:
            raise RunFolderError(
                f"{where}: street_source.kind is {kind!r}; expected 'file', 'place' or "
                f"'sketch' (the run never loaded its streets?); {_HINT_RERUN}"
            )
        waypoints = [(w.name, w.lat, w.lon) for w in self.scenario.route.waypoints]
        streets = load_streets(cfg, osm=osm, waypoints=waypoints, cache_dir=cache_dir)
        if streets.source.digest != src.get("sha256"):
            raise RunFolderError(
                f"{self.path}: the streets changed since the run ({streets.source.describe()} "
                f"has SHA-256 {streets.source.digest[:12]}…, the run used "
                f"{str(src.get('sha256'))[:12]}…); run the scenario again"
            )
        return streets

    def course(self, streets: Streets) -> Course:
        """The run's course on `streets` (from :meth:`streets`)."""
        from sim.course import build_course

        return build_course(streets, self.scenario.route, scenario=self.scenario)


def open_run(
    path: str | os.PathLike[str],
    *,
    need: Sequence[str] = (),
    verify: bool | Collection[str] = True,
    purpose: str = "this",
) -> RunFolder:
    """Open a finished run folder: check its status and its files, read its scenario.

    Parameters
    ----------
    path
        A folder written by ``crowdsim run``.
    need
        Files the caller reads; each must be there.
    verify
        Check every file the manifest lists against its recorded size and SHA-256, and
        that no run file lies there that the manifest does not list (a mixed folder).
        A collection of file names checks those (and the strangers) only: a reader that
        opens the other files later checks them then (:func:`verify_files`).
    purpose
        What the caller is (``"validate"``, ``"compare"``...), for the messages.

    Returns
    -------
    RunFolder
        A run whose status is ``ok`` and whose files are the ones it wrote.

    Raises
    ------
    RunFolderError
        Not a run folder; a run still running, interrupted or failed; a file missing,
        damaged or from another run. The message names the folder and the file.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    status = run_status(folder, manifest)
    if status != "ok":
        raise RunFolderError(_status_message(folder, manifest, status, purpose))
    missing = [name for name in (SCENARIO, *need) if not (folder / name).is_file()]
    if missing:
        raise RunFolderError(
            f"{folder}: missing {', '.join(missing)}; {purpose} needs a complete run folder "
            f"({_HINT_RERUN})"
        )
    if verify:
        verify_files(folder, manifest, None if verify is True else verify)
    from sim.errors import ScenarioError
    from sim.scenario import load_scenario

    try:
        scenario = load_scenario(folder / SCENARIO)  # resolved: extends merged in
    except ScenarioError as exc:
        raise RunFolderError(
            f"{folder / SCENARIO}: not the run's scenario any more: {exc}"
        ) from None
    return RunFolder(path=folder, manifest=manifest, scenario=scenario)


def _status_message(folder: Path, manifest: dict[str, Any], status: str, purpose: str) -> str:
    stages = manifest.get("stages") or {}
    if status == "running":
        owner = lock_owner(folder) or {}
        return (
            f"{folder}: the run is still running (process {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')} since {owner.get('started', '?')}); {purpose} needs a "
            "finished run: wait for it to end"
        )
    if status == "interrupted":
        done = [name for name, rec in stages.items() if rec.get("status") == "done"]
        how = (
            f"stopped by {manifest['interrupted_by']}"
            if manifest.get("interrupted_by")
            else "its process died (killed, or the machine stopped)"
        )
        return (
            f"{folder}: the run was interrupted ({how}) after "
            f"{', '.join(done) if done else 'no stage'}; {purpose} needs a finished run: "
            f"{_HINT_RERUN}"
        )
    failed = [
        f"{name}: {rec.get('note', '')}"
        for name, rec in stages.items()
        if isinstance(rec, dict) and rec.get("status") == "failed"
    ]
    why = f" ({'; '.join(failed)})" if failed else ""
    return (
        f"{folder}: the run failed{why}; {purpose} needs a finished run: fix the cause and "
        f"{_HINT_RERUN}"
    )


def verify_files(
    folder: Path, manifest: dict[str, Any], names: Collection[str] | None = None
) -> None:
    """Check the run's files (`names`, or all the manifest lists) against the manifest.

    Each must have its recorded size and SHA-256, and no run file may lie in the folder
    that the manifest does not list.

    Raises
    ------
    RunFolderError
        A file missing, changed, or of another run; the message names it.
    """
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise RunFolderError(
            f"{folder / MANIFEST}: lists no 'files' (sizes and checksums), so the folder "
            f"cannot be told apart from a mix of runs; written by an older crowdsim? "
            f"{_HINT_RERUN}"
        )
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise RunFolderError(
            f"{folder}: missing {', '.join(missing)}, which the run wrote; {_HINT_RERUN}"
        )
    checked = files if names is None else {n: files[n] for n in names if n in files}
    for name, record in checked.items():
        path = folder / name
        if path.stat().st_size != record.get("bytes") or _sha256(path) != record.get("sha256"):
            raise RunFolderError(
                f"{path}: changed since the run wrote it (size or SHA-256 differ from "
                f"{MANIFEST}): damaged, or written by another run; {_HINT_RERUN}"
            )
    strangers = sorted(
        p.name for p in _run_files(folder) if p.name not in files and p.name != MANIFEST
    )
    if strangers:
        raise RunFolderError(
            f"{folder}: holds {', '.join(strangers)}, which the run of {MANIFEST} did not "
            f"write: a mixed folder (files of another run); {_HINT_RERUN}"
        )


# ----------------------------------------------------------------------------- lock


class FolderLock:
    """An exclusive lock on a run or sweep folder, held while the process writes it.

    The lock is an ``flock`` on ``FOLDER/.lock``; the file says who holds it (PID, host,
    start time, what). The kernel releases it when the process ends, however it ends, so
    :func:`lock_owner` tells a live writer from a dead one without trusting PIDs.

    Parameters
    ----------
    folder
        The folder to lock (created if needed).
    what
        ``"run"`` or ``"sweep"``, for the messages.
    """

    def __init__(self, folder: str | os.PathLike[str], *, what: str = "run") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise :class:`RunFolderError` naming who holds it."""
        path = self.folder / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = lock_owner(self.folder) or {}
                raise RunFolderError(
                    f"{self.folder}: in use by another crowdsim {owner.get('what', 'run')} "
                    f"(process {owner.get('pid', '?')} on {owner.get('host', '?')}, since "
                    f"{owner.get('started', '?')}); wait for it to end or choose another --out"
                ) from None
            try:  # the holder before us may have removed the file: lock the one that is there
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "what": self.what,
        }
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(owner) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            (self.folder / LOCK).unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        """Take the lock."""
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        """Release the lock."""
        self.release()


def lock_owner(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds `folder`'s lock (pid, host, started, what), or None when nobody does."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 4096).decode("utf-8", "replace")
            try:
                owner = json.loads(text)
            except ValueError:
                owner = None
            return owner if isinstance(owner, dict) else {"pid": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # a lock file nobody holds: its owner died
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- lifecycle


def _run_files(folder: Path) -> list[Path]:
    found: dict[str, Path] = {}
    for pattern in RUN_FILE_PATTERNS:
        for path in folder.glob(pattern):
            if path.is_file() and not path.name.startswith("."):
                found[path.name] = path
    return sorted(found.values())


def remove_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the ``.part`` files an interrupted writer left in `folder`; return them."""
    removed = []
    for path in Path(folder).glob(TEMPORARY_PATTERN):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def move_previous_run(folder: str | os.PathLike[str], *, overwrite: bool) -> list[str]:
    """Make `folder` ready for a new run: refuse, or move an earlier run's files aside.

    Call it holding the folder's :class:`FolderLock`. The earlier run's files (those its
    manifest lists and any file of :data:`RUN_FILE_PATTERNS`) go to ``.previous/``,
    which is emptied first; temporary files are deleted. Other files are left alone.

    Returns
    -------
    list of str
        The names moved aside.

    Raises
    ------
    RunFolderError
        The folder holds a run and `overwrite` is false.
    """
    folder = Path(folder)
    names = {p.name for p in _run_files(folder)}
    if (folder / MANIFEST).is_file():
        with contextlib.suppress(RunFolderError):
            listed = read_manifest(folder).get("outputs") or []
            names.update(n for n in listed if isinstance(n, str) and (folder / n).is_file())
    if not names:
        remove_temporaries(folder)
        return []
    if not overwrite:
        what = "files of a run"
        with contextlib.suppress(RunFolderError):
            manifest = read_manifest(folder)
            status = manifest["status"]  # we hold the lock: a 'running' run is dead
            what = (
                f"a run ({'interrupted' if status == 'running' else status}, seed "
                f"{manifest.get('seed')}, started {manifest.get('started')})"
            )
        raise RunFolderError(
            f"{folder}: already holds {what}. Give --overwrite (overwrite=True) to move its "
            f"files into {folder / PREVIOUS} (replacing what is there), or choose another --out"
        )
    previous = folder / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir()
    for name in sorted(names):
        os.replace(folder / name, previous / name)
    remove_temporaries(folder)
    return sorted(names)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM, SIGINT); ``signal`` names it."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal}")


@contextlib.contextmanager
def stop_on_signals(
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[Callable[[], None]]:
    """Turn SIGINT and SIGTERM into :class:`RunInterrupted` while the block runs.

    Yields a function that ends the window early: call it before writing the final
    manifest, so a signal arriving then cannot leave a half-finished record (the run is
    ending anyway; the signal is dropped). Outside the main thread (where Python cannot
    handle signals) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    holding = [False]

    def handler(signum: int, frame: object) -> None:
        if not holding[0]:
            raise RunInterrupted(signum)

    def hold() -> None:
        holding[0] = True

    before = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, handler)
    try:
        yield hold
    finally:
        for s, old in before.items():
            signal.signal(s, old)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
