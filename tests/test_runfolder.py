"""The run folder's lifecycle: lock, overwrite, statuses under kill, and refusing readers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from sim import runfolder
from sim.cli import app
from sim.errors import RunFolderError
from sim.runfolder import FolderLock, lock_owner, open_run, run_status
from sim.scenario import parse_scenario
from tests.conftest import MINIMAL, REPO
from validation.scoring import run_validated

runner = CliRunner()

#: The smallest run: the three-point sketch scenario, one hour, no report.
TINY: dict[str, Any] = {**MINIMAL, "output": {"report": False}}
BOUNDS = """
[[bound]]
scenario = "tiny"
method = "voronoi"
zone_system = "area"
metric = "mape"
max = 9
"""


def _scenario_file(folder: Path) -> Path:
    path = folder / "tiny.toml"
    path.write_text(tomli_w.dumps(TINY))
    return path


def _start(scenario: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sim.cli", "run", str(scenario), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [*cmd, *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait_for_stage(proc: subprocess.Popen[bytes], out: Path, stage: str) -> None:
    """Wait until the manifest of the run in `out` records `stage` as done."""
    deadline = time.monotonic() + 300  # a busy machine
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            manifest = json.loads((out / runfolder.MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        if (manifest.get("stages") or {}).get(stage, {}).get("status") == "done":
            return
        time.sleep(0.05)
    _, err = proc.communicate(timeout=30) if proc.poll() is not None else (b"", b"")
    pytest.fail(f"the run ended or stalled before its {stage} stage was done: {err.decode()}")


def _validate(run: Path, tmp_path: Path) -> Any:
    bounds = tmp_path / "bounds.toml"
    bounds.write_text(BOUNDS)
    return runner.invoke(app, ["validate", str(run), "--bounds", str(bounds)])


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder holding an earlier run with a report; a rerun into it refused, then started
    with --overwrite and killed with SIGKILL after its streets; then run again to the end."""
    root = tmp_path_factory.mktemp("killed")
    scenario, out = _scenario_file(root), root / "run"
    out.mkdir()
    earlier = {"status": "ok", "seed": 99, "scenario": {"name": "tiny"}, "outputs": []}
    (out / runfolder.MANIFEST).write_text(json.dumps(earlier))
    (out / "report.html").write_text("<html>the earlier run</html>")
    (out / "crowd_map.png").write_bytes(b"earlier figure")
    seen: dict[str, Any] = {}
    refused = runner.invoke(app, ["run", str(scenario), "--out", str(out), "--quiet"])
    seen["refused"] = (refused.exit_code, refused.output)
    proc = _start(scenario, out, "--overwrite")
    _wait_for_stage(proc, out, "streets")
    proc.kill()
    proc.communicate(timeout=30)
    seen["killed_manifest"] = json.loads((out / runfolder.MANIFEST).read_text())
    seen["killed_status"] = run_status(out)
    seen["killed_files"] = sorted(p.name for p in out.iterdir())
    seen["previous"] = sorted(p.name for p in (out / runfolder.PREVIOUS).iterdir())
    seen["validate_killed"] = _validate(out, root)
    seen["rerun_without_overwrite"] = runner.invoke(
        app, ["run", str(scenario), "--out", str(out), "--quiet"]
    )
    seen["result"] = run_validated(parse_scenario(TINY), out, progress=False, overwrite=True)
    seen["out"] = out
    return seen


def test_a_folder_holding_a_run_is_refused_without_overwrite(killed_and_rerun) -> None:
    code, output = killed_and_rerun["refused"]
    assert code == 2
    assert "already holds a run (ok, seed 99" in output and "--overwrite" in output


def test_overwrite_moves_the_earlier_run_aside_so_no_stale_report_remains(
    killed_and_rerun,
) -> None:
    # output.report = false: the earlier run's page and figure must not sit beside the tables
    assert "report.html" not in killed_and_rerun["killed_files"]
    assert "crowd_map.png" not in killed_and_rerun["killed_files"]
    assert {"report.html", "crowd_map.png", "manifest.json"} <= set(killed_and_rerun["previous"])
    out = killed_and_rerun["out"]
    assert not (out / "report.html").exists()
    manifest = killed_and_rerun["result"].manifest
    assert manifest["previous_moved"]  # the killed run's files went to .previous/
    assert json.loads((out / ".previous" / "manifest.json").read_text())["status"] == "running"


def test_a_run_killed_with_sigkill_reads_interrupted(killed_and_rerun) -> None:
    manifest = killed_and_rerun["killed_manifest"]
    assert manifest["status"] == "running"  # it never had a chance to say otherwise ...
    assert manifest["stages"]["streets"]["status"] == "done"  # ... but says how far it got
    assert runfolder.COURSE in manifest["files"]
    assert killed_and_rerun["killed_status"] == "interrupted"  # nobody holds its lock


def test_validating_a_killed_run_exits_2_saying_why(killed_and_rerun) -> None:
    result = killed_and_rerun["validate_killed"]
    assert result.exit_code == 2, result.output
    assert "interrupted" in result.output and "its process died" in result.output


def test_a_killed_run_is_rerun_with_overwrite(killed_and_rerun) -> None:
    again = killed_and_rerun["rerun_without_overwrite"]
    assert again.exit_code == 2 and "already holds a run (interrupted" in again.output
    result = killed_and_rerun["result"]
    assert result.manifest["status"] == "ok"
    folder = open_run(killed_and_rerun["out"])  # every file as the run wrote it
    assert folder.status == "ok" and not list(folder.path.glob(".*.part*"))
    assert lock_owner(folder.path) is None and not (folder.path / runfolder.LOCK).exists()


def test_a_finished_run_reloads_its_streets_and_checks_their_digest(killed_and_rerun) -> None:
    folder = open_run(killed_and_rerun["out"])
    streets = folder.streets()
    assert streets.source.digest == folder.street_source["sha256"]
    assert folder.course(streets).length_m > 0


@pytest.mark.parametrize(
    ("how", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_sigterm_and_sigint_end_a_run_as_interrupted_without_temporaries(
    tmp_path: Path, how: signal.Signals, code: int
) -> None:
    out = tmp_path / "run"
    proc = _start(_scenario_file(tmp_path), out)
    _wait_for_stage(proc, out, "streets")
    # meanwhile, a second run into the same folder is refused, naming the first
    with pytest.raises(
        RunFolderError, match=rf"in use by another crowdsim run \(process {proc.pid}"
    ):
        run_validated(parse_scenario(TINY), out, progress=False, overwrite=True)
    assert lock_owner(out)["pid"] == proc.pid
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    assert f"{how.name}: the run stopped" in err.decode() and "Traceback" not in err.decode()
    manifest = json.loads((out / runfolder.MANIFEST).read_text())
    assert manifest["status"] == "interrupted" and manifest["interrupted_by"] == how.name
    assert "interrupted" in {s["status"] for s in manifest["stages"].values()}
    assert not [p.name for p in out.iterdir() if ".part" in p.name]
    assert not (out / runfolder.LOCK).exists()
    result = _validate(out, tmp_path)
    assert result.exit_code == 2 and f"stopped by {how.name}" in result.output


def test_a_held_lock_refuses_a_run_and_a_dead_holder_frees_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out, what="sweep"), pytest.raises(RunFolderError, match="crowdsim sweep"):
        run_validated(parse_scenario(TINY), out, progress=False)
    assert lock_owner(out) is None
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sim.runfolder import FolderLock;"
         f"FolderLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    assert lock_owner(out)["pid"] == holder.pid
    holder.kill()
    holder.communicate(timeout=30)
    assert (out / runfolder.LOCK).exists() and lock_owner(out) is None  # the kernel let go
    with FolderLock(out) as lock:  # and the next writer takes it
        assert lock_owner(out)["pid"] == os.getpid()
    del lock


def _finished_copy(killed_and_rerun: dict[str, Any], dest: Path) -> Path:
    shutil.copytree(killed_and_rerun["out"], dest, ignore=shutil.ignore_patterns(".previous"))
    return dest


def _set_manifest(folder: Path, **changes: Any) -> None:
    manifest = json.loads((folder / runfolder.MANIFEST).read_text())
    manifest.update(changes)
    (folder / runfolder.MANIFEST).write_text(json.dumps(manifest))


def test_a_failed_run_is_refused_by_validate_compare_and_the_report(
    killed_and_rerun, tmp_path: Path
) -> None:
    from sim.report import load_run_context

    run = _finished_copy(killed_and_rerun, tmp_path / "failed")
    stages = json.loads((run / runfolder.MANIFEST).read_text())["stages"]
    stages["network"] = {"status": "failed", "note": "MemoryError: too many people"}
    _set_manifest(run, status="failed", stages=stages)
    result = _validate(run, tmp_path)
    assert result.exit_code == 2
    assert "the run failed (network: MemoryError: too many people)" in result.output
    compared = runner.invoke(app, ["compare", str(run), str(run), "--out", str(tmp_path / "c")])
    assert compared.exit_code == 2 and "compare needs a finished run" in compared.output
    with pytest.raises(RunFolderError, match="the run failed"):
        load_run_context(run)


def test_a_damaged_or_mixed_folder_is_refused_naming_the_file(
    killed_and_rerun, tmp_path: Path
) -> None:
    damaged = _finished_copy(killed_and_rerun, tmp_path / "damaged")
    with (damaged / runfolder.TRUTH_ZONES).open("r+b") as handle:
        handle.truncate(100)
    with pytest.raises(RunFolderError, match=r"truth_zones\.parquet: changed since the run"):
        open_run(damaged)
    mixed = _finished_copy(killed_and_rerun, tmp_path / "mixed")
    (mixed / "report.html").write_text("<html>another run's page</html>")
    result = _validate(mixed, tmp_path)
    assert result.exit_code == 2
    assert "holds report.html, which the run of manifest.json did not write" in result.output
    missing = _finished_copy(killed_and_rerun, tmp_path / "missing")
    (missing / runfolder.RECORDS).unlink()
    with pytest.raises(
        RunFolderError, match=r"missing: missing records\.parquet, which the run wrote"
    ):
        open_run(missing)


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="no such run folder"):
        open_run(tmp_path / "nowhere")
    with pytest.raises(RunFolderError, match=r"manifest\.json: missing"):
        open_run(tmp_path)
    (tmp_path / runfolder.MANIFEST).write_text("{truncated")
    with pytest.raises(RunFolderError, match="not readable JSON"):
        open_run(tmp_path)
    (tmp_path / runfolder.MANIFEST).write_text('{"status": "maybe"}')
    with pytest.raises(RunFolderError, match="not a run manifest"):
        open_run(tmp_path)


def test_an_out_folder_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", str(_scenario_file(tmp_path)), "--out", "/proc/crowdsim-run", "--quiet"]
    )
    assert result.exit_code == 2 and "/proc/crowdsim-run" in result.output
    assert "Traceback" not in result.output


def test_overwrite_moves_only_run_files_and_keeps_one_earlier_run(tmp_path: Path) -> None:
    (tmp_path / runfolder.MANIFEST).write_text('{"status": "failed", "scenario": {}, "seed": 3}')
    (tmp_path / "report.html").write_text("old page")
    (tmp_path / ".estimates.abc.part.parquet").write_bytes(b"half a table")
    (tmp_path / "notes.txt").write_text("the user's own notes")
    with pytest.raises(RunFolderError, match=r"already holds a run \(failed, seed 3"):
        runfolder.move_previous_run(tmp_path, overwrite=False)
    assert (tmp_path / "report.html").exists()  # a refusal touches nothing
    moved = runfolder.move_previous_run(tmp_path, overwrite=True)
    assert moved == ["manifest.json", "report.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".previous", "notes.txt"]
    (tmp_path / "zones.gpkg").write_bytes(b"a newer run's file")
    assert runfolder.move_previous_run(tmp_path, overwrite=True) == ["zones.gpkg"]
    assert sorted(p.name for p in (tmp_path / ".previous").iterdir()) == ["zones.gpkg"]
    assert runfolder.move_previous_run(tmp_path, overwrite=False) == []  # nothing to move
