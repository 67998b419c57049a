"""Replications and sweeps: seeds, local processes vs Dask, resuming, failures, bad files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sim.cli import app
from sim.dashboard.data import SCREEN_CACHE
from sim.errors import RunFolderError
from sim.run import seed_sequences
from tests.conftest import REPO, SCENARIOS
from validation.sweep import SweepError, load_sweep, reproduce_run, run_sweep

runner = CliRunner()

#: The smoke scenario cut to about 1.5 s a run: 500 people, 15 minutes, coarse raster.
FAST = """
[set]
output.report = false
event.start = "14:10:00"
event.end = "14:25:00"
people.spectators.count = 300
people.background.count = 200
network.raster_m = 50.0
"""


def write_sweep(folder: Path, body: str, *, fast: bool = True, name: str = "s") -> Path:
    """A sweep file over the smoke scenario; `body` holds the keys and tables after `base`."""
    path = folder / f"{name}.toml"
    base = (SCENARIOS / "smoke.toml").as_posix()
    path.write_text(f'name = "{name}"\nbase = "{base}"\n{body}\n' + (FAST if fast else ""))
    return path


TWO_BY_TWO = """
seed = 11
replications = 2
[vary]
"estimators.privacy_threshold" = [0, 30]
"""


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory):
    """A 2 points x 2 replications sweep run once in local processes."""
    folder = tmp_path_factory.mktemp("sweep")
    path = write_sweep(folder, TWO_BY_TWO)
    return path, run_sweep(path, folder / "local", workers=2, progress=False)


def test_a_sweep_writes_runs_table_state_and_figure(local_sweep) -> None:
    _, result = local_sweep
    out = result.out_dir
    ids = ["p000-r000", "p000-r001", "p001-r000", "p001-r001"]
    assert result.ran == ids and result.reused == [] and result.failed == []
    state = json.loads((out / "sweep.json").read_text())
    assert state["counts"] == {"ok": 4}
    assert [(e["run_id"], e["params"], e["spawn_key"], e["attempts"]) for e in state["runs"]] == [
        (i, {"estimators.privacy_threshold": t}, [r], 1)
        for i, t, r in zip(ids, (0, 0, 30, 30), (0, 1, 0, 1), strict=True)
    ]
    table = pd.read_parquet(out / "sweep_metrics.parquet")
    assert list(table.columns[:4]) == [
        "run_id",
        "point",
        "replication",
        "estimators.privacy_threshold",
    ]
    assert set(table["run_id"]) == set(ids) and (table["status"] == "ok").all()
    per_run = table.groupby("run_id").size()
    assert (per_run == per_run.iloc[0]).all() and per_run.iloc[0] > 50
    # every row of a run carries its run's metrics as written in its run folder
    own = pd.read_parquet(out / "runs" / "p001-r000" / "metrics.parquet")
    mine = table[table["run_id"] == "p001-r000"].reset_index(drop=True)
    assert (mine["estimators.privacy_threshold"] == 30).all()
    np.testing.assert_array_equal(mine["value"].to_numpy(), own["value"].to_numpy())
    # the privacy threshold acts: suppression only at the point with threshold 30
    sup = table[(table["metric"] == "suppressed_share") & (table["zone_system"] == "area")]
    by_point = sup.groupby("estimators.privacy_threshold")["value"].max()
    assert by_point[0] == 0.0 and by_point[30] > 0.0
    png = (out / "sweep_summary.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not [p for p in out.rglob(".*") if p.name != SCREEN_CACHE]  # no temporaries left


def test_seeds_are_spawned_per_replication_and_recorded(local_sweep) -> None:
    _, result = local_sweep
    runs = result.out_dir / "runs"
    manifest = json.loads((runs / "p001-r001" / "manifest.json").read_text())
    assert manifest["seed"] == 11 and manifest["seed_spawn_key"] == [1]
    assert manifest["seed_streams"] == {"crowd": [1, 0], "network": [1, 1], "estimators": [1, 2]}
    assert manifest["scenario"]["estimators"]["privacy_threshold"] == 30

    def truth(run_id: str) -> pd.DataFrame:
        return pd.read_parquet(runs / run_id / "truth_zones.parquet")

    # common random numbers: one replication has one crowd at every point; replications differ
    pd.testing.assert_frame_equal(truth("p000-r000"), truth("p001-r000"))
    assert not truth("p000-r000").equals(truth("p000-r001"))


def test_a_run_of_a_sweep_is_reproduced_from_its_folder(local_sweep, tmp_path: Path) -> None:
    _, result = local_sweep
    original = result.out_dir / "runs" / "p000-r001"
    again = reproduce_run(original, tmp_path / "again")
    assert again.manifest["seed_spawn_key"] == [1]
    for table in ("truth_zones", "records", "estimates", "metrics"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(original / f"{table}.parquet"),
            pd.read_parquet(tmp_path / "again" / f"{table}.parquet"),
            obj=table,
        )


def test_crowdsim_run_reproduces_a_run_of_a_sweep_with_its_spawn_key(
    local_sweep, tmp_path: Path
) -> None:
    _, result = local_sweep
    original = result.out_dir / "runs" / "p001-r001"
    manifest = json.loads((original / "manifest.json").read_text())
    key = ",".join(str(k) for k in manifest["seed_spawn_key"])
    command = ["run", str(original / "scenario.toml"), "--out", str(tmp_path / "again")]
    command += ["--seed", str(manifest["seed"]), "--spawn-key", key, "--quiet"]
    out = runner.invoke(app, command)
    assert out.exit_code == 0, out.output
    pd.testing.assert_frame_equal(
        pd.read_parquet(original / "estimates.parquet"),
        pd.read_parquet(tmp_path / "again" / "estimates.parquet"),
    )
    for bad, words in (("x", "not a spawn key"), ("-1", "not a spawn key")):
        refused = runner.invoke(app, [*command[:4], "--seed", "11", "--spawn-key", bad])
        assert refused.exit_code == 2 and words in refused.output
    unseeded = runner.invoke(app, [*command[:4], "--spawn-key", "1"])
    assert unseeded.exit_code == 2 and "--spawn-key needs --seed" in unseeded.output


def test_the_same_sweep_on_a_dask_cluster_gives_identical_results(
    local_sweep, tmp_path: Path
) -> None:
    from distributed import LocalCluster

    path, local = local_sweep
    # threads in this process: starts in a fraction of a second, and runs the same task
    # function through the same Client.submit / as_completed path as a remote cluster
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        dask = run_sweep(
            path, tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False
        )
    assert dask.failed == [] and dask.ran == local.ran
    assert dask.state["executor"].startswith("Dask scheduler")
    pd.testing.assert_frame_equal(dask.table, local.table)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "dask" / "sweep_metrics.parquet"),
        pd.read_parquet(local.out_dir / "sweep_metrics.parquet"),
    )


def test_replications_of_a_sweep_validate_against_bounds(local_sweep, tmp_path: Path) -> None:
    _, result = local_sweep
    bounds = tmp_path / "bounds.toml"
    bounds.write_text(
        '[[bound]]\nscenario = "smoke"\nmethod = "voronoi"\nzone_system = "grid"\n'
        'metric = "coverage"\nmin = 0.0\nquantile = 0.9\n'
    )
    runs = sorted(str(p) for p in (result.out_dir / "runs").iterdir())
    out = runner.invoke(app, ["validate", *runs, "--bounds", str(bounds)])
    assert out.exit_code == 0, out.output
    assert "1 of 1 bounds hold" in out.output


def test_a_finished_sweep_called_again_runs_nothing(local_sweep, tmp_path: Path) -> None:
    path, result = local_sweep
    stamps = {p: p.stat().st_mtime_ns for p in result.out_dir.glob("runs/*/manifest.json")}
    again = run_sweep(path, result.out_dir, workers=1, progress=False)
    assert again.ran == [] and sorted(again.reused) == result.ran
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert [e["attempts"] for e in again.state["runs"]] == [1, 1, 1, 1]
    pd.testing.assert_frame_equal(again.table, result.table)


def test_a_finished_run_counts_only_for_the_same_scenario_and_seeds(local_sweep) -> None:
    from validation.sweep.running import _is_done

    path, result = local_sweep
    runs = result.out_dir / "runs"
    same = load_sweep(path)
    assert all(_is_done(run, runs / run.run_id) for run in same.runs)
    reseeded = load_sweep(write_sweep(path.parent, TWO_BY_TWO.replace("11", "12"), name="t"))
    assert not any(_is_done(run, runs / run.run_id) for run in reseeded.runs)
    changed = load_sweep(write_sweep(path.parent, TWO_BY_TWO.replace("30", "31"), name="u"))
    assert [_is_done(run, runs / run.run_id) for run in changed.runs] == [True, True, False, False]


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")
def test_a_killed_sweep_takes_its_workers_with_it_and_resumes(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, TWO_BY_TWO)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "sim.cli",
        "sweep",
        str(path),
        "--out",
        str(out),
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300  # the first run, on a busy machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                counts = json.loads((out / "sweep.json").read_text())["counts"]
            except (OSError, ValueError, KeyError):
                counts = {}
            if counts.get("ok", 0) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        workers = _children(proc.pid)
        assert workers, "a sweep with --workers 1 runs a worker process"
        # meanwhile a second sweep into the same folder is refused
        with pytest.raises(RunFolderError, match=rf"another crowdsim sweep \(process {proc.pid}"):
            run_sweep(path, out, workers=1, progress=False)
        os.kill(proc.pid, signal.SIGKILL)  # only the sweep: its workers must follow
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "a worker outlived its killed sweep"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    state = json.loads((out / "sweep.json").read_text())
    finished = [e["run_id"] for e in state["runs"] if e["status"] == "ok"]
    assert 1 <= len(finished) < 4
    stamps = {r: (out / "runs" / r / "manifest.json").stat().st_mtime_ns for r in finished}

    result = run_sweep(path, out, workers=1, progress=False)
    assert sorted(result.reused) == sorted(finished)
    everything = {e["run_id"] for e in state["runs"]}
    assert sorted(result.ran) == sorted(everything - set(finished))
    assert result.failed == [] and result.state["counts"] == {"ok": 4}
    assert {r: (out / "runs" / r / "manifest.json").stat().st_mtime_ns for r in finished} == stamps
    assert all(e["attempts"] == 1 for e in result.state["runs"])
    assert set(result.table["run_id"]) == everything


def test_a_damaged_finished_run_is_redone_on_resume(local_sweep, tmp_path: Path) -> None:
    path, result = local_sweep
    out = tmp_path / "copy"
    shutil.copytree(result.out_dir, out)
    damaged = out / "runs" / "p001-r000" / "metrics.parquet"
    damaged.write_bytes(damaged.read_bytes()[:50])  # a truncated table
    again = run_sweep(path, out, workers=1, progress=False)
    assert again.ran == ["p001-r000"] and again.failed == []
    assert sorted(again.reused) == ["p000-r000", "p000-r001", "p001-r001"]
    attempts = {e["run_id"]: e["attempts"] for e in again.state["runs"]}
    assert attempts == {"p000-r000": 1, "p000-r001": 1, "p001-r000": 2, "p001-r001": 1}
    pd.testing.assert_frame_equal(again.table, result.table)


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path, '[vary]\n"closures.0.streets" = [[], ["Rue Imaginaire"]]\n', name="fails"
    )
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["sweep", str(path), "--out", str(out), "--workers", "2", "--quiet"]
    )
    assert result.exit_code == 1, result.output
    assert "2 runs: 1 ok (0 reused from an earlier call), 1 failed" in result.output
    assert "p001-r000: ScenarioError:" in result.output and "Rue Imaginaire" in result.output
    state = json.loads((out / "sweep.json").read_text())
    failed = state["runs"][1]
    assert failed["status"] == "failed" and "no street named 'Rue Imaginaire'" in failed["error"]
    manifest = json.loads((out / "runs" / "p001-r000" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["stages"]["streets"]["status"] == "failed"
    table = pd.read_parquet(out / "sweep_metrics.parquet")
    bad = table[table["run_id"] == "p001-r000"]
    assert len(bad) == 1 and bad["metric"].isna().all() and "Rue Imaginaire" in bad["error"].iloc[0]
    assert bad["closures.0.streets"].iloc[0] == '["Rue Imaginaire"]'
    assert (table.loc[table["run_id"] == "p000-r000", "status"] == "ok").all()
    assert (out / "sweep_summary.png").is_file()
    # called again: the failed run is tried again in a clean folder, the good one kept
    (out / "runs" / "p001-r000" / "stale.txt").write_text("from an earlier attempt")
    again = run_sweep(path, out, workers=1, progress=False)
    assert not (out / "runs" / "p001-r000" / "stale.txt").exists()
    assert again.reused == ["p000-r000"] and again.ran == again.failed == ["p001-r000"]
    assert [e["attempts"] for e in again.state["runs"]] == [1, 2]


def test_seed_sequences_of_a_spawned_root_do_not_depend_on_earlier_spawns() -> None:
    child = np.random.SeedSequence(11, spawn_key=(1,))
    first = seed_sequences(child)
    child.spawn(5)  # a used sequence still gives the same subsystem streams
    again = seed_sequences(child)
    assert {k: v.spawn_key for k, v in first.items()} == {
        "crowd": (1, 0),
        "network": (1, 1),
        "estimators": (1, 2),
    }
    for name in first:
        assert (first[name].generate_state(4) == again[name].generate_state(4)).all()
    assert not (
        first["crowd"].generate_state(4) == seed_sequences(11)["crowd"].generate_state(4)
    ).all()


def test_list_mode_pairs_values_and_the_example_sweep_loads() -> None:
    sweep = load_sweep(SCENARIOS / "sweeps" / "smoke_market_share.toml")
    assert len(sweep.points) == 3 and len(sweep.runs) == 9
    for run in sweep.runs:
        shares = run.scenario.network.market_shares
        assert abs(sum(shares.values()) - 1.0) < 1e-9
        assert shares["proximus"] == run.params["network.market_shares.proximus"]
        assert run.scenario.seed == 2019 and run.spawn_key == (run.replication,)
        assert run.scenario.output.report is False


def test_grid_mode_and_independent_seeds(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        'seeds = "independent"\nreplications = 2\n[vary]\nestimators.privacy_threshold = [0, 30]'
        '\n"estimators.window_min" = [30.0, 45.0, 60.0]',
    )
    sweep = load_sweep(path)
    assert len(sweep.points) == 6 and len(sweep.runs) == 12
    assert sweep.points[1] == {"estimators.privacy_threshold": 0, "estimators.window_min": 45.0}
    assert [r.spawn_key for r in sweep.runs[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert sweep.seed == 7  # the base scenario's seed when the sweep names none


BAD = [
    ('[vary]\n"network.market_share.proximus" = [0.2]',
     ["vary.network.market_share.proximus", "network has no key 'market_share'",
      "market_shares"]),
    ('[vary]\n"network.market_shares.vodafone" = [0.2]', ["has no key 'vodafone'", "proximus"]),
    ('[vary]\n"closures.3.start" = ["14:00:00"]',
     ["closures is a list of 1", "index it with 0..0"]),
    ('[vary]\n"estimators.privacy_threshold.x" = [1]', ["is a single value (30), not a table"]),
    ('[vary]\n"estimators.privacy_threshold" = []', ["vary.estimators.privacy_threshold",
                                                     "empty list of values"]),
    ('[vary]\n"estimators.privacy_threshold" = 30', ["needs a list of values"]),
    ('[vary]\n"network.market_shares.proximus" = [0.4, 0.9]',
     ["point 1 (proximus=0.9) is not a valid scenario", "sum to"]),
    ('[vary]\nseed = [1, 2]', ["a sweep sets the seed of its runs itself"]),
    ('mode = "list"\n[vary]\n"zones.grid_m" = [100.0, 200.0]\n"zones.bin_s" = [60.0]',
     ["every list needs the same length", "zones.grid_m: 2", "zones.bin_s: 1"]),
    ('replications = 0', ["replications", "greater than or equal to 1"]),
    ('mode = "zip"', ["mode", "'grid' or 'list'"]),
    ('replicas = 2', ["replicas: unknown key", "replications"]),
    ('[summary]\nx = "zones.grid_m"', ["summary.x: 'zones.grid_m' is not a varied parameter"]),
    ('[summary]\nmetrics = ["area/kwd_mean_m"]', ["exists for 'grid' only"]),
    ('[summary]\nmetrics = ["mape"]', ["needs 'zone_system/metric'"]),
    ('[set]\npeople.spectators.cout = 5', ["set: the base with these changes is not valid",
                                          "people.spectators.cout: unknown key"]),
]  # fmt: skip


@pytest.mark.parametrize(("body", "expected"), BAD, ids=[b[:32] for b, _ in BAD])
def test_a_bad_sweep_file_is_refused_before_anything_runs(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    path = write_sweep(tmp_path, body, fast=False)
    with pytest.raises(SweepError) as info:
        run_sweep(path, tmp_path / "out", progress=False)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message
    assert not (tmp_path / "out").exists()


def test_bad_base_and_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    missing.write_text('name = "m"\nbase = "nowhere/smoke.toml"\n')
    with pytest.raises(SweepError, match=r"base: no scenario file 'nowhere/smoke.toml'.*relative"):
        load_sweep(missing)
    broken = tmp_path / "broken_base.toml"
    broken.write_text('name = "b"\nevent = 3\n')
    bad_base = tmp_path / "bad_base.toml"
    bad_base.write_text('name = "m"\nbase = "broken_base.toml"\n')
    with pytest.raises(SweepError, match=r"bad_base.toml: base: the base scenario is not valid"):
        load_sweep(bad_base)
    no_base = tmp_path / "no_base.toml"
    no_base.write_text('name = "m"\n')
    with pytest.raises(SweepError, match=r"no_base.toml: base: required key is missing"):
        load_sweep(no_base)
    not_toml = tmp_path / "not.toml"
    not_toml.write_text("name = \n")
    with pytest.raises(SweepError, match="not valid TOML"):
        load_sweep(not_toml)
    with pytest.raises(SweepError, match="no such sweep file"):
        load_sweep(tmp_path / "absent.toml")


def test_the_command_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, TWO_BY_TWO)
    both = runner.invoke(
        app,
        [
            "sweep",
            str(path),
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "2",
            "--scheduler",
            "tcp://127.0.0.1:8786",
        ],
    )
    assert both.exit_code == 2 and "Give one of the two" in both.output
    zero = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "o"), "--workers", "0"])
    assert zero.exit_code == 2 and "--workers 0: needs at least 1" in zero.output
    nowhere = runner.invoke(
        app, ["sweep", str(path), "--out", str(tmp_path / "o"), "--scheduler", "bogus://host:1"]
    )
    assert nowhere.exit_code == 2 and "cannot reach a Dask scheduler" in nowhere.output
    missing = runner.invoke(app, ["sweep", str(tmp_path / "nope.toml"), "--out", "x"])
    assert missing.exit_code == 2 and "no such sweep file" in missing.output


def test_a_run_refuses_a_seed_sequence_without_a_whole_number_entropy(tmp_path: Path) -> None:
    from sim.errors import CrowdsimError
    from sim.run import run_scenario
    from sim.scenario import load_scenario

    scenario = load_scenario(SCENARIOS / "smoke.toml")
    with pytest.raises(CrowdsimError, match=r"entropy \[1, 2\].*whole number >= 0"):
        run_scenario(scenario, tmp_path / "run", seed=np.random.SeedSequence([1, 2]))
    assert not (tmp_path / "run").exists()
