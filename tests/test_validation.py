"""Validation: the truth/estimate join, the metrics, error-bound specs and their checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from sim.cli import app
from sim.run import RunContext, _validation_stage, seed_sequences
from sim.runfolder import file_records
from sim.scenario import dump_scenario, load_scenario, parse_scenario
from tests.conftest import MINIMAL, SCENARIOS
from validation import assert_bounds, check_bounds, compute_metrics, load_bounds, write_metrics
from validation.checks import BoundsInputError, BoundsSpecError
from validation.metrics import RunFolderError, join_run, kwd, kwd_blocked
from validation.scoring import score_run

runner = CliRunner()
BOUNDS = Path(__file__).resolve().parents[1] / "validation" / "bounds"

# ---------------------------------------------------------------- a tiny hand-made run
# Two 1-minute bins starting 12:00 and 12:01 UTC (14:00, 14:01 in Brussels).
# area   A: truth 40, 100   estimate 90 [85, 95], 80 [70, 90] (peaks a minute early)
#        B: truth  0 (absent), 50   estimate 10 [0, 20] (suppressed), 50 [40, 60]
# grid   g0_0 (centroid 50, 50), g1_0 (150, 50), g2_0 (250, 50, never anybody)
#        bin 0: truth 10 on g0_0, estimate 5 on g1_0 -> KWD 100 m
#        bin 1: truth 10 on g0_0, estimate 4 on g0_0 -> KWD 0 m


def _write_run(
    run: Path, *, scenario: str = "tiny", scale: float = 1.0, with_grid: bool = True
) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    manifest = {
        "scenario": {
            "name": scenario,
            "event": {"timezone": "Europe/Brussels"},
            "zones": {"bin_s": 60.0},
        },
        "seed": 1,
        "status": "ok",
    }
    start = pd.Timestamp("2019-07-07 12:00", tz="UTC")
    bins = [start, start + pd.Timedelta(minutes=1)]
    ends = [(b + pd.Timedelta(minutes=1)).tz_convert("Europe/Brussels") for b in bins]
    truth = pd.DataFrame(
        {
            "time": [ends[0], ends[1], ends[1], ends[0], ends[1]],
            "system": pd.Categorical(["area", "area", "area", "grid", "grid"]),
            "zone": ["A", "A", "B", "g0_0", "g0_0"],
            "people": [40, 100, 50, 10, 10],
            "spectators": [0, 0, 0, 0, 0],
        }
    )
    truth.to_parquet(run / "truth_zones.parquet", index=False)
    rows: list[tuple[Any, ...]] = [
        ("voronoi", "area", "A", bins[0], 90, 85, 95),
        ("voronoi", "area", "A", bins[1], 80, 70, 90),
        ("voronoi", "area", "B", bins[0], 10, 0, 20),
        ("voronoi", "area", "B", bins[1], 50, 40, 60),
        ("presence", "cell", "1", bins[0], 3, 1, 5),
    ]
    if with_grid:
        rows += [
            ("voronoi", "grid", "g1_0", bins[0], 5, 0, 9),
            ("voronoi", "grid", "g0_0", bins[1], 4, 0, 9),
        ]  # g0_0 at bin 0 and g2_0 are absent: estimate 0
    est = pd.DataFrame(rows, columns=["method", "zone_system", "zone", "bin", "estimate",
                                      "lower", "upper"])  # fmt: skip
    for col in ("estimate", "lower", "upper"):
        est[col] = (est[col] * scale).astype("float32")
    est["suppressed"] = est["estimate"] < 30
    est["mode"] = "realtime"
    est.to_parquet(run / "estimates.parquet", index=False)
    path = run / "zones.gpkg"
    layers = {
        "grid": (["g0_0", "g1_0", "g2_0"], [box(i * 100, 0, (i + 1) * 100, 100) for i in range(3)]),
        "segment": (["km0-0.5"], [box(0, 0, 10, 10)]),
        "area": (["A", "B"], [box(0, 0, 50, 50), box(50, 0, 100, 50)]),
    }
    for layer, (ids, geoms) in layers.items():
        gpd.GeoDataFrame({"zone": ids}, geometry=geoms, crs="EPSG:31370").to_file(
            path, layer=layer, driver="GPKG"
        )
    # a finished run folder as sim.runfolder.open_run accepts it: resolved scenario,
    # status ok, and the size and checksum of every file
    (run / "scenario.toml").write_text(dump_scenario(parse_scenario({**MINIMAL, "name": scenario})))
    manifest["files"] = file_records(run, [p.name for p in run.iterdir()])
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _write_run(tmp_path / "tiny")


def _metric(table: pd.DataFrame, method: str, system: str, name: str) -> float:
    row = table[(table.method == method) & (table.zone_system == system) & (table.metric == name)]
    assert len(row) == 1, (method, system, name)
    return float(row["value"].iloc[0])


def test_join_fills_absent_truth_and_estimates_with_zero(tiny: Path) -> None:
    joins = {(j.method, j.system): j for j in join_run(tiny)}
    assert set(joins) == {("voronoi", "area"), ("voronoi", "grid")}  # presence/cell unscored
    area = joins["voronoi", "area"]
    assert list(area.zones) == ["A", "B"]
    np.testing.assert_array_equal(area.truth, [[40, 0], [100, 50]])
    np.testing.assert_array_equal(area.estimate, [[90, 10], [80, 50]])
    grid = joins["voronoi", "grid"]
    assert list(grid.zones) == ["g0_0", "g1_0", "g2_0"]  # every tile of zones.gpkg
    np.testing.assert_array_equal(grid.truth, [[10, 0, 0], [10, 0, 0]])
    np.testing.assert_array_equal(grid.estimate, [[0, 5, 0], [4, 0, 0]])
    assert grid.filled_estimates == 4


def test_metrics_match_hand_computed_values(tiny: Path) -> None:
    table, summary = compute_metrics(tiny, floor=30, kwd_stride=1)
    expected = {
        "mae": 20.0,  # errors +50, +10 / -20, 0
        "rmse": math.sqrt(750.0),
        "bias": 10.0,
        "mae_floor": 70 / 3,
        "mape": (50 / 40 + 0.2 + 0.0) / 3,
        "total_error_median_abs": (1.5 + 20 / 150) / 2,  # totals 100 vs 40, 130 vs 150
        "total_error_mean": (1.5 - 20 / 150) / 2,
        "peak_error_median_abs": 0.05,  # A: 90 vs 100, B: 50 vs 50
        "peak_error_mean_abs": 0.05,
        "peak_time_error_median_abs_min": 0.5,  # A's estimated peak one minute early
        "peak_time_error_mean_abs_min": 0.5,
        "coverage": 0.5,
        "coverage_floor": 1 / 3,
        "suppressed_share": 0.25,
        "mae_published": 17.5,  # B at bin 0 published as 0, which is the truth
        "mape_published": (50 / 40 + 0.2 + 0.0) / 3,
        "suppression_cost_mae": -2.5,
    }
    for name, value in expected.items():
        assert _metric(table, "voronoi", "area", name) == pytest.approx(value), name
    assert _metric(table, "voronoi", "grid", "kwd_mean_m") == pytest.approx(50.0)
    assert _metric(table, "voronoi", "grid", "kwd_median_m") == pytest.approx(50.0)
    assert not ((table.zone_system == "area") & table.metric.str.startswith("kwd")).any()
    assert summary["unscored"] == ["presence/cell"]
    assert summary["metrics"]["voronoi"]["area"]["mae"] == pytest.approx(20.0)
    json.dumps(summary, allow_nan=False)  # valid JSON: NaN becomes null


def test_window_and_floor_restrict_what_is_scored(tiny: Path) -> None:
    late, _ = compute_metrics(tiny, window=("14:01", "14:02"), kwd=False)  # bin 1 only
    assert _metric(late, "voronoi", "area", "mape") == pytest.approx(0.1)
    assert _metric(late, "voronoi", "area", "mae") == pytest.approx(10.0)  # -20 and 0
    high, _ = compute_metrics(tiny, floor=200, kwd=False)
    assert math.isnan(_metric(high, "voronoi", "area", "mape"))
    sub, _ = compute_metrics(tiny, kwd_stride=2)  # bin 0 only: 100 m
    assert _metric(sub, "voronoi", "grid", "kwd_mean_m") == pytest.approx(100.0)


def test_kwd_is_zero_for_identical_distributions_and_grows_with_displacement() -> None:
    rng = np.random.default_rng(3)
    xy = np.column_stack([np.arange(20) * 100.0 + 50, np.full(20, 50.0)])
    mass = rng.random(20)
    assert kwd(mass, mass, xy) == pytest.approx(0.0, abs=1e-9)
    assert kwd(mass, 3 * mass, xy) == pytest.approx(0.0, abs=1e-9)  # normalised
    one = np.zeros(20)
    one[0] = 1.0
    distances = []
    for shift in (1, 2, 5, 10):
        moved = np.zeros(20)
        moved[shift] = 7.0
        distances.append(kwd(one, moved, xy))
    assert distances == pytest.approx([100.0, 200.0, 500.0, 1000.0])
    assert math.isnan(kwd(np.zeros(20), mass, xy))


def test_pooled_kwd_stays_within_its_error_bound() -> None:
    rng = np.random.default_rng(5)
    xy = np.array([(x * 100.0 + 50, y * 100.0 + 50) for x in range(30) for y in range(30)])
    truth = rng.random(len(xy)) * (rng.random(len(xy)) < 0.3)
    estimate = rng.random(len(xy))
    exact, block0 = kwd_blocked(truth, estimate, xy)
    pooled, block = kwd_blocked(truth, estimate, xy, max_pairs=5_000, block_m=200.0)
    assert block0 == 0.0 and block >= 200.0
    assert abs(pooled - exact) <= math.sqrt(2) * block
    assert kwd(truth, estimate, xy, max_pairs=5_000, block_m=200.0) == pytest.approx(pooled)


def test_write_metrics_writes_tables_and_summary(tiny: Path) -> None:
    written, summary = write_metrics(tiny, kwd_stride=1)
    names = {p.name for p in written}
    assert names == {"metrics.parquet", "metrics_zones.parquet", "metrics_bins.parquet",
                     "metrics.json"}  # fmt: skip
    table = pd.read_parquet(tiny / "metrics.parquet")
    assert list(table.columns) == ["method", "zone_system", "metric", "value", "n"]
    zones = pd.read_parquet(tiny / "metrics_zones.parquet")
    a = zones[(zones.zone_system == "area") & (zones.zone == "A")].iloc[0]
    assert (a.peak_truth, a.peak_estimate, a.peak_time_error_min) == (100, 90, -1)
    bins = pd.read_parquet(tiny / "metrics_bins.parquet")
    assert bins[bins.zone_system == "grid"]["kwd_m"].tolist() == pytest.approx([100.0, 0.0])
    assert json.loads((tiny / "metrics.json").read_text())["floor"] == summary["floor"]
    assert not [p for p in tiny.iterdir() if p.name.startswith(".")]


def test_missing_files_name_what_is_missing(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(RunFolderError, match="no such run folder"):
        compute_metrics(tmp_path / "nowhere")
    (tiny / "estimates.parquet").unlink()
    with pytest.raises(RunFolderError, match=r"estimates\.parquet: missing"):
        compute_metrics(tiny)


# ---------------------------------------------------------------- bounds


def _bounds(tmp_path: Path, body: str, name: str = "b.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


PASSING = """
[[bound]]
scenario = "tiny"
method = "voronoi"
zone_system = "area"
metric = "mape"
max = 0.5

[[bound]]
scenario = "tiny"
method = "voronoi"
zone_system = "area"
metric = "coverage"
min = 0.5
"""
FAILING = (
    PASSING
    + """
[[bound]]
scenario = "tiny"
method = "voronoi"
zone_system = "grid"
metric = "kwd_mean_m"
max = 10
kwd_stride = 1
"""
)


def test_validate_exits_0_when_every_bound_holds(tmp_path: Path, tiny: Path) -> None:
    result = runner.invoke(
        app, ["validate", str(tiny), "--bounds", str(_bounds(tmp_path, PASSING))]
    )
    assert result.exit_code == 0, result.output
    assert "tiny voronoi/area mape <= 0.5" in result.output
    assert "2 of 2 bounds hold" in result.output


def test_validate_exits_1_and_names_the_failing_bound(tmp_path: Path, tiny: Path) -> None:
    result = runner.invoke(
        app, ["validate", str(tiny), "--bounds", str(_bounds(tmp_path, FAILING))]
    )
    assert result.exit_code == 1, result.output
    failing = [line for line in result.output.splitlines() if line.rstrip().endswith("FAIL")]
    assert len(failing) == 1
    assert "tiny voronoi/grid kwd_mean_m <= 10" in failing[0] and " 50 " in failing[0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[bound]]\nscenario="tiny"\nmethod="voronoi"\nzone_system="area"\nmetric="mape"\n'
         "max=1\ncolour=1\n", "bound[0].colour: Extra inputs"),
        ('[[bound]]\nscenario="tiny"\nmethod="voronoi"\nzone_system="area"\nmetric="mapee"\n'
         "max=1\n", "bound[0].metric: Value error, unknown metric 'mapee'"),
        ('[[bound]]\nscenario="tiny"\nmethod="voronoi"\nzone_system="area"\nmetric="mape"\n',
         "needs max, min or both"),
        ('[[bound]]\nscenario="tiny"\nmethod="voronoi"\nzone_system="area"\nmetric="kwd_mean_m"'
         "\nmax=1\n", "for zone_system 'grid' only"),
        ('[[bound]]\nscenario="tiny"\nmethod="voronoi"\nzone_system="area"\nmetric="mape"\n'
         'max=1\nwindow=["15:00", "14:00"]\n', "end must be after the start"),
        ('[[bound]]\nscenario="tiny"\nmethod="voronoi"\nzone_system="area"\nmetric="mape"\n'
         "max=1\nquantile=1.5\n", "bound[0].quantile"),
        ("[[bound]\n", "not valid TOML"),
        ("", "bound: Field required"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_file_and_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = _bounds(tmp_path, body)
    with pytest.raises(BoundsSpecError, match=r"b\.toml") as info:
        load_bounds(path)
    assert message in str(info.value)


def test_validate_exits_2_on_bad_input(tmp_path: Path, tiny: Path) -> None:
    def spec(old: str, new: str, name: str) -> str:
        return str(_bounds(tmp_path, PASSING.replace(old, new, 1), name))

    good = str(_bounds(tmp_path, PASSING))
    cases = [
        ("no such run folder", [str(tmp_path / "missing"), "--bounds", good]),
        ("no such bounds file", [str(tiny), "--bounds", str(tmp_path / "none.toml")]),
        ("unknown metric 'x'", [str(tiny), "--bounds", spec('"coverage"', '"x"', "m.toml")]),
        ("no estimates of method 'bayes'",
         [str(tiny), "--bounds", spec('"voronoi"', '"bayes"', "k.toml")]),
        (f"run {tiny} is of scenario 'tiny'",
         [str(tiny), "--bounds", spec('"tiny"', '"smoke"', "s.toml")]),
    ]  # fmt: skip
    for message, args in cases:
        result = runner.invoke(app, ["validate", *args])
        assert result.exit_code == 2, (message, result.output)
        assert message in result.output.replace("\n", " "), (message, result.output)


def test_assert_bounds_passes_and_names_failures(tmp_path: Path, tiny: Path) -> None:
    results = assert_bounds(tiny, _bounds(tmp_path, PASSING))
    assert [r.passed for r in results] == [True, True]
    with pytest.raises(AssertionError, match=r"1 of 3 error bounds fail:\n.*kwd_mean_m <= 10"):
        assert_bounds(tiny, _bounds(tmp_path, FAILING))
    with pytest.raises(BoundsInputError):
        assert_bounds(tiny, _bounds(tmp_path, PASSING.replace('"tiny"', '"other"'), "o.toml"))


def test_several_runs_hold_the_worst_or_a_quantile(tmp_path: Path, tiny: Path) -> None:
    runs = [tiny] + [
        _write_run(tmp_path / f"r{k}", scale=s) for k, s in enumerate((1.5, 2.0, 3.0))
    ]  # scaled estimates: area MAPE grows with the scale
    spec = _bounds(tmp_path, PASSING.replace("max = 0.5", "max = 9"))
    worst = check_bounds(runs, spec)[0]
    assert len(worst.values) == 4 and worst.high == max(worst.values)
    q = check_bounds(
        runs, _bounds(tmp_path, PASSING.replace("max = 0.5", "max = 9\nquantile = 0.5"), "q.toml")
    )[0]
    assert q.high == pytest.approx(float(np.quantile(q.values, 0.5)))
    assert q.high < worst.high


def test_validation_stage_without_estimates_writes_nothing(tmp_path: Path) -> None:
    ctx = RunContext(
        scenario=load_scenario(SCENARIOS / "smoke.toml"),
        out_dir=tmp_path,
        seeds=seed_sequences(1),
        scorer=score_run,
    )
    ctx.facts["estimators"] = {"methods": [], "rows": 0, "note": "no operator records"}
    note = _validation_stage(ctx)
    assert "no estimates" in note
    assert ctx.facts["validation"] == {"note": "no estimates to validate"}
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the shipped bounds (CI)


def test_smoke_run_meets_the_shipped_bounds(smoke_run: Path) -> None:
    """What CI asserts: the smoke scenario (its own seed) within validation/bounds/smoke.toml."""
    manifest = json.loads((smoke_run / "manifest.json").read_text(encoding="utf-8"))
    stage = manifest["stages"]["validation"]
    assert stage["status"] == "done", stage
    assert {"metrics.parquet", "metrics.json"} <= set(manifest["outputs"])
    facts = manifest["facts"]["validation"]
    assert set(facts["metrics"]) == {"voronoi", "bayes", "em"}
    spec = load_bounds(BOUNDS / "smoke.toml")
    assert len(spec.bound) >= 10
    assert_bounds(smoke_run, spec)
