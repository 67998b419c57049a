"""The streaming run: one clock, the same tables as the batch path, a frame per minute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.errors import CrowdsimError
from sim.estimate import ESTIMATE_COLUMNS
from sim.network.records import COUNTER_COLUMNS
from sim.run import BATCH_STAGES, STAGES, run_scenario
from sim.scenario import Scenario, load_scenario
from sim.stream import MinuteFrame, ProgressDisplay, StreamProgress
from tests.conftest import SCENARIOS

TABLES = (
    "truth_zones",
    "truth_edges",
    "records",
    "cell_load",
    "estimates",
    "estimates_internal",
)


def smoke(**estimators: object) -> Scenario:
    """The smoke scenario without its report (the tables are what is compared)."""
    scenario = load_scenario(SCENARIOS / "smoke.toml")
    return scenario.model_copy(
        update={
            "output": scenario.output.model_copy(update={"report": False}),
            "estimators": scenario.estimators.model_copy(update=estimators),
        }
    )


def frames_equal_files(frames: list[MinuteFrame], run: Path) -> None:
    """The frames, put together, are the published table, the truth and the counters."""
    published = pd.read_parquet(run / "estimates.parquet")
    shown = pd.concat([f.estimates for f in frames], ignore_index=True)
    assert list(shown.columns) == list(ESTIMATE_COLUMNS)
    key = ["method", "zone_system", "zone", "bin"]
    a = shown.astype({k: str for k in key[:3]}).sort_values(key).reset_index(drop=True)
    b = published.astype({k: str for k in key[:3]}).sort_values(key).reset_index(drop=True)
    b = b.astype(a.dtypes.to_dict())
    # a frame is the real-time minute update: EM's bound there skips the density's
    # bootstrap (interval_facts()["realtime"]), so it lies inside the file's; the rest
    # is the file's, value for value
    em = (a["method"] == "em").to_numpy()
    bounds = ["lower", "upper"]
    pd.testing.assert_frame_equal(a.drop(columns=bounds), b.drop(columns=bounds))
    pd.testing.assert_frame_equal(a.loc[~em, bounds], b.loc[~em, bounds])
    shown_em, file_em = a.loc[em, bounds].to_numpy(), b.loc[em, bounds].to_numpy()
    assert np.array_equal(np.isnan(shown_em), np.isnan(file_em))
    ok = ~np.isnan(file_em[:, 0])
    assert (shown_em[ok, 0] >= file_em[ok, 0] - 1e-3).all()
    assert (shown_em[ok, 1] <= file_em[ok, 1] + 1e-3).all()
    assert (shown["mode"] == "realtime").all()

    load = pd.concat([f.cell_load for f in frames], ignore_index=True)
    pd.testing.assert_frame_equal(load, pd.read_parquet(run / "cell_load.parquet"))
    assert list(load.columns) == list(COUNTER_COLUMNS)

    truth = pd.read_parquet(run / "truth_zones.parquet")
    truth = pd.DataFrame(
        {
            "bin": pd.to_datetime(truth["time"], utc=True).dt.as_unit("ns")
            - pd.Timedelta(minutes=1),
            "zone_system": truth["system"].astype(str),
            "zone": truth["zone"].astype(str),
            "people": truth["people"].astype(np.int64),
            "spectators": truth["spectators"].astype(np.int64),
        }
    )
    seen = pd.concat([f.truth.assign(bin=f.bin) for f in frames], ignore_index=True)
    seen = seen.astype({"zone_system": str, "zone": str})[list(truth.columns)]
    order = ["bin", "zone_system", "zone"]
    pd.testing.assert_frame_equal(
        seen.sort_values(order).reset_index(drop=True),
        truth.sort_values(order).reset_index(drop=True),
    )


def test_streaming_and_batch_runs_write_the_same_tables(tmp_path: Path) -> None:
    scenario = smoke()
    frames: list[MinuteFrame] = []
    live = run_scenario(scenario, tmp_path / "stream", progress=False, on_minute=frames.append)
    batch = run_scenario(scenario, tmp_path / "batch", progress=False, stream=False)
    for table in TABLES:
        a = pd.read_parquet(tmp_path / "stream" / f"{table}.parquet")
        b = pd.read_parquet(tmp_path / "batch" / f"{table}.parquet")
        pd.testing.assert_frame_equal(a, b, obj=table)
    assert live.manifest["facts"]["crowd"] == batch.manifest["facts"]["crowd"]
    assert live.manifest["facts"]["network"] == batch.manifest["facts"]["network"]
    # the stages say which path ran; the simulation's time is split by part
    assert list(live.manifest["stages"]) == [name for name, _ in STAGES]
    assert list(batch.manifest["stages"]) == [name for name, _ in BATCH_STAGES]
    parts = live.manifest["part_timings_s"]["simulate"]
    assert {"crowd_s", "network_s", "presence_s", "frames_s", "write_network_s"} <= set(parts)
    assert "live counts" in live.manifest["stages"]["estimators"]["note"]
    assert "from records" in batch.manifest["stages"]["estimators"]["note"]

    # one frame per minute, in order, each what the files hold for it
    assert [f.bin for f in frames] == list(
        pd.date_range("2019-07-07T12:00:00Z", periods=60, freq="1min").as_unit("ns")
    )
    frames_equal_files(frames, tmp_path / "stream")
    last = frames[-1].progress
    assert last.elapsed_s == 3600.0 and last.fraction == 1.0 and last.eta_s == 0.0
    assert last.records == len(pd.read_parquet(tmp_path / "stream" / "records.parquet"))
    assert 0 < max(f.progress.people_moving for f in frames) <= 3500
    assert all(f.progress.people_moving <= f.progress.people_present for f in frames)


def test_frames_carry_the_releases_noise_under_differential_privacy(tmp_path: Path) -> None:
    frames: list[MinuteFrame] = []
    result = run_scenario(
        smoke(laplace_epsilon=0.5, methods=["presence", "voronoi"]),
        tmp_path / "dp",
        progress=False,
        on_minute=frames.append,
    )
    assert result.manifest["facts"]["estimators"]["privacy"]["budget"]["epsilon_per_bin"] == 0.5
    frames_equal_files(frames, tmp_path / "dp")
    internal = pd.read_parquet(tmp_path / "dp" / "estimates_internal.parquet")
    published = pd.read_parquet(tmp_path / "dp" / "estimates.parquet")
    noisy = published[~published["suppressed"]]
    exact = internal.merge(noisy, on=["method", "zone_system", "zone", "bin"])
    assert not np.allclose(exact["estimate_x"], exact["estimate_y"])  # noise, not exact counts


def test_batch_estimators_mode_reads_the_records(tmp_path: Path) -> None:
    frames: list[MinuteFrame] = []
    result = run_scenario(
        smoke(mode="batch", methods=["presence", "voronoi"]),
        tmp_path / "run",
        progress=False,
        on_minute=frames.append,
    )
    assert "from records" in result.manifest["stages"]["estimators"]["note"]
    table = pd.read_parquet(tmp_path / "run" / "estimates.parquet")
    assert set(table["mode"]) == {"batch"}
    # the screen still shows what could be known at the time
    assert len(frames) == 60 and {str(m) for f in frames for m in f.estimates["mode"]} == {
        "realtime"
    }


def test_a_failing_callback_fails_the_run_and_the_manifest_says_why(tmp_path: Path) -> None:
    seen: list[pd.Timestamp] = []

    def screen(frame: MinuteFrame) -> None:
        seen.append(frame.bin)
        if len(seen) == 3:
            raise RuntimeError("the screen went dark")

    with pytest.raises(RuntimeError, match="went dark"):
        run_scenario(smoke(), tmp_path / "run", progress=False, on_minute=screen)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "went dark" in manifest["stages"]["simulate"]["note"]
    assert len(seen) == 3
    assert not [p for p in (tmp_path / "run").iterdir() if ".part" in p.name]


def test_frames_need_the_streaming_run(tmp_path: Path) -> None:
    with pytest.raises(CrowdsimError, match="on_minute"):
        run_scenario(smoke(), tmp_path / "run", stream=False, on_minute=print)
    assert not (tmp_path / "run").exists()


def progress(**changes: object) -> StreamProgress:
    base: dict[str, object] = {
        "clock": pd.Timestamp("2019-07-07 14:35", tz="Europe/Brussels"),
        "elapsed_s": 20100.0,
        "duration_s": 32400.0,
        "people_present": 150_000,
        "people_moving": 12_345,
        "records": 5_000_000,
        "records_per_s": 1234.4,
        "wall_s": 100.5,
        "eta_s": 61.5,
    }
    return StreamProgress(**(base | changes))  # type: ignore[arg-type]


def test_progress_says_clock_people_moving_records_per_second_and_time_left() -> None:
    p = progress()
    assert p.describe() == (
        "14:35 | 12,345 moving of 150,000 | 1,234 records/s simulated | 200x real time | 1:02 left"
    )
    assert p.fraction == pytest.approx(20100 / 32400)
    assert progress(eta_s=None).describe().endswith("? left")
    assert progress(eta_s=4000.0).describe().endswith("1h06 left")


def test_progress_without_a_terminal_is_a_line_on_stderr_now_and_then(
    capsys: pytest.CaptureFixture[str],
) -> None:
    display = ProgressDisplay(32400.0, every_s=3600.0)
    display(progress())
    display(progress(elapsed_s=20105.0))  # within the interval: not shown
    display(progress(elapsed_s=32400.0, eta_s=0.0))  # the end is always shown
    display.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("crowdsim:  62% 14:35 | 12,345 moving")
    assert "records/s" in lines[0] and "left" in lines[0]
    assert lines[1].startswith("crowdsim: 100%")
