"""The event-aware prior: its tiles on a hand-made public layer, Bayes and MAP-EM with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from sim import runfolder
from sim.errors import ScenarioError
from sim.estimate import (
    BayesEstimator,
    EMEstimator,
    EstimateInputError,
    EventPrior,
    make_estimators,
    period_bins,
    read_event_public,
    release_estimates,
)
from sim.estimate.em import em_deconvolve
from sim.estimate.priors import EventPublic, TilePrior
from sim.estimate.tiles import TileRaster
from sim.network.plan import NetworkPlan
from sim.scenario import EstimatorsConfig, load_scenario
from tests.test_operator_wall import allowed, imported_modules
from tests.test_scenario import write

CRS = "EPSG:31370"
DAY = "2019-07-07T"


def utc(hhmm: str) -> pd.Timestamp:
    return pd.Timestamp(f"{DAY}{hhmm}:00", tz="UTC")


# --------------------------------------------------------------------------- the tiny world
# Three 100 m tiles in a row, x 0-300, y 0-100.
RASTER = TileRaster(0.0, 0.0, 100.0, 3, 1)
#: Street area per tile, m² (length inside x usable width):
#: s1 (10,50)-(90,50) 4 m -> tile 0: 320; s2 (110,50)-(190,50) 2 m -> tile 1: 160;
#: s3 (150,20)-(250,20) 3 m -> tiles 1 and 2: 150 each.
AREA = np.array([320.0, 310.0, 150.0])
#: s3 closed to pedestrians: it loses its 3 m.
AREA_S3_SHUT = np.array([320.0, 160.0, 0.0])
#: s1 closed to traffic: it gains its 6 m carriageway (80 m x 6 m in tile 0).
AREA_S1_OPEN = np.array([800.0, 310.0, 150.0])
#: Event area per tile: the fan area (0,0)-(50,40) in tile 0, 2000 m²; the course, the
#: vertical line x = 250 from y -100 to 200 (its round ends fall off the tiles), with a
#: 25 m strip on each side: 50 m x 100 m = 5000 m² in tile 2.
EVENT = np.array([2000.0, 0.0, 5000.0])
SHARE = 0.5


def public_layers() -> EventPublic:
    line = shapely.LineString
    streets = gpd.GeoDataFrame(
        {"name": ["s1", "s2", "s3"], "highway": ["residential"] * 3,
         "width_m": [4.0, 2.0, 3.0], "carriageway_m": [6.0, 0.0, 0.0]},
        geometry=[line([(10, 50), (90, 50)]), line([(110, 50), (190, 50)]),
                  line([(150, 20), (250, 20)])],
        crs=CRS,
    )  # fmt: skip
    course_line = line([(250, -100), (250, 200)])
    course = gpd.GeoDataFrame({"piece": [0], "name": ["tiny course"]}, geometry=[course_line],
                              crs=CRS)  # fmt: skip
    closures = gpd.GeoDataFrame(
        {
            "closure": ["race course", "s3 for the stands", "s1 market"],
            "closed_to": ["traffic", "pedestrians", "traffic"],
            "start": [f"{DAY}12:00:00+00:00", f"{DAY}12:30:00+00:00", f"{DAY}11:00:00+00:00"],
            "end": [f"{DAY}13:00:00+00:00", f"{DAY}13:00:00+00:00", f"{DAY}11:30:00+00:00"],
            "course": [True, False, False],
            "piece": [0, -1, -1],
            "width_m": [0.0, 3.0, 4.0],
            "carriageway_m": [0.0, 0.0, 6.0],
        },
        geometry=[course_line, streets.geometry[2], streets.geometry[0]],
        crs=CRS,
    )
    fans = gpd.GeoDataFrame({"name": ["fan"], "radius_m": [30.0]},
                            geometry=[shapely.box(0, 0, 50, 40)], crs=CRS)  # fmt: skip
    return EventPublic(course=course, closures=closures, fan_areas=fans, streets=streets)


def write_public(path: Path, public: EventPublic) -> Path:
    for i, layer in enumerate(("course", "closures", "fan_areas", "streets")):
        getattr(public, layer).to_file(
            path, layer=layer, driver="GPKG", mode="w" if i == 0 else "a"
        )
    return path


def expected_q() -> dict[str, np.ndarray]:
    """The documented Q(S) per state, by hand."""
    event = EVENT / EVENT.sum()
    return {
        "none": AREA / AREA.sum(),
        "market": AREA_S1_OPEN / AREA_S1_OPEN.sum(),
        "race": (1 - SHARE) * AREA / AREA.sum() + SHARE * event,
        "race, s3 shut": (1 - SHARE) * AREA_S3_SHUT / AREA_S3_SHUT.sum() + SHARE * event,
    }


def test_the_prior_of_a_hand_made_public_layer_is_as_documented(tmp_path: Path) -> None:
    path = write_public(tmp_path / runfolder.EVENT_PUBLIC, public_layers())
    prior = EventPrior(path, event_share=SHARE).tile_prior(RASTER)
    q = expected_q()
    when = {
        "10:59": "none", "11:00": "market", "11:29": "market", "11:30": "none",
        "12:00": "race", "12:29": "race", "12:30": "race, s3 shut", "13:00": "none",
    }  # fmt: skip
    bins = pd.DatetimeIndex([utc(t) for t in when])
    got = prior.weights[prior.states(bins)]
    want = np.array([q[state] for state in when.values()])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert prior.n_states == 4  # before and after the closures is one state
    np.testing.assert_allclose(prior.weights.sum(axis=1), 1.0)
    # mixing with the flat prior, as mobloc's composite
    mixed = prior.mixed(0.3)
    np.testing.assert_allclose(mixed.weights, 0.7 / 3 + 0.3 * prior.weights)


def test_without_a_course_closure_the_event_layer_always_holds() -> None:
    public = public_layers()
    public = EventPublic(public.course, public.closures.iloc[1:2], public.fan_areas,
                         public.streets)  # fmt: skip
    prior = EventPrior(public, event_share=SHARE).tile_prior(RASTER)
    q = expected_q()
    event = EVENT / EVENT.sum()
    bins = pd.DatetimeIndex([utc("08:00"), utc("12:40")])
    shut = (1 - SHARE) * AREA_S3_SHUT / AREA_S3_SHUT.sum() + SHARE * event
    np.testing.assert_allclose(prior.weights[prior.states(bins)], [q["race"], shut])


# --------------------------------------------------------------------------- Bayes
#: P(cell | tile): four cells over the three tiles (as the outside-data tests).
P = np.array([[0.7, 0.2, 0.0], [0.3, 0.5, 0.1], [0.0, 0.3, 0.3], [0.0, 0.0, 0.6]])
CELLS = ["A", "B", "C", "D"]


def tiles() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"tile": ["t0", "t1", "t2"]},
                            geometry=list(RASTER.boxes()), crs=CRS)  # fmt: skip


def zones() -> gpd.GeoDataFrame:
    z = tiles().rename(columns={"tile": "zone"})
    z.attrs["system"] = "tiles"
    return z


def emission(p: np.ndarray) -> pd.DataFrame:
    i, j = np.nonzero(p)
    return pd.DataFrame({"cell": np.array(CELLS)[i], "tile": [f"t{k}" for k in j],
                         "probability": p[i, j]})  # fmt: skip


def counts(values: np.ndarray, bins: list[pd.Timestamp], cells: list[str]) -> pd.DataFrame:
    """values: cells x bins."""
    return pd.DataFrame({"cell_id": np.repeat(cells, len(bins)), "bin": bins * len(cells),
                         "devices": np.asarray(values, float).ravel()})  # fmt: skip


def per_tile(table: pd.DataFrame) -> np.ndarray:
    """bins x tiles."""
    return table.pivot(index="bin", columns="zone", values="estimate")[
        ["t0", "t1", "t2"]
    ].to_numpy()


@pytest.mark.parametrize("w", [0.0, 0.4, 1.0])
def test_bayes_with_the_event_prior_is_the_hand_computed_posterior(w: float) -> None:
    bins = [utc("11:00"), utc("12:10")]
    c = counts(np.array([[100.0, 100.0], [0, 0], [0, 0], [0, 0]]), bins, CELLS)
    prior = EventPrior(public_layers(), event_share=SHARE)
    bayes = BayesEstimator(emission=emission(P), tiles=tiles(), prior=prior, prior_weight=w,
                           privacy_threshold=0).fit_counts(c)  # fmt: skip
    got = per_tile(bayes.estimate(zones()))
    q = expected_q()
    for b, state in enumerate(("market", "race")):
        pi = (1 - w) / 3 + w * q[state]
        post = P[0] * pi / (P[0] * pi).sum()  # cell A's devices over the tiles
        np.testing.assert_allclose(got[b], 100 * post, rtol=1e-5)
    if w == 0:  # the flat prior whatever the event says
        flat = BayesEstimator(emission=emission(P), tiles=tiles(), privacy_threshold=0)
        np.testing.assert_allclose(got, per_tile(flat.fit_counts(c).estimate(zones())))


# --------------------------------------------------------------------------- MAP-EM
def test_map_em_with_identity_coverage_is_the_prior_weighted_mix() -> None:
    """Each tile seen by its own cell: the MAP is (c_j + w N q_j) / (1 + w), at once."""
    c = np.array([[30.0], [50.0], [20.0]])
    q = np.array([0.5, 0.3, 0.2])
    w = 0.25
    result = em_deconvolve(c, np.eye(3), prior=q, prior_weight=w, tol=1e-12)
    np.testing.assert_allclose(result.u[:, 0], (c[:, 0] + w * 100 * q) / (1 + w))
    assert result.n_iter[0] == 2  # the first update reaches it, the second does not move


def test_map_em_converges_geometrically_where_the_data_cannot_tell() -> None:
    """One cell sees two tiles equally: ML keeps any split; MAP pulls to N q at 1/(1+w)."""
    coverage = np.array([[1.0, 1.0]])
    q, w, n = np.array([0.8, 0.2]), 0.5, 60.0
    for k in (1, 2, 5):
        u = em_deconvolve(np.array([[n]]), coverage, prior=q, prior_weight=w, tol=1e-300,
                          max_iter=k).u[:, 0]  # fmt: skip
        want = n * q + (n / 2 - n * q) * (1 + w) ** -k
        np.testing.assert_allclose(u, want, rtol=1e-12)
    ml = em_deconvolve(np.array([[n]]), coverage, tol=1e-300, max_iter=5).u[:, 0]
    np.testing.assert_allclose(ml, [n / 2, n / 2])  # no prior: the uniform start stays


def test_map_em_keeps_prior_mass_on_tiles_only_silent_cells_see() -> None:
    """A tile covered only by cells counting 0 settles at w N q_j / (s_j + w)."""
    coverage = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    c = np.array([[40.0], [60.0], [0.0]])
    q, w = np.array([0.2, 0.3, 0.5]), 0.1
    u = em_deconvolve(c, coverage, prior=q, prior_weight=w, tol=1e-12).u[:, 0]
    np.testing.assert_allclose(u, (c[:, 0] + w * 100 * q) / (1 + w))
    assert u.sum() == pytest.approx(100.0)


def test_em_estimator_with_the_event_prior_uses_each_bins_state() -> None:
    eye = np.eye(3)
    cells = ["A", "B", "C"]
    bins = [utc("11:00"), utc("12:10")]
    values = np.array([[30.0, 10.0], [50.0, 10.0], [20.0, 80.0]])
    w = 0.3
    i, j = np.nonzero(eye)
    table = pd.DataFrame({"cell": np.array(cells)[i], "tile": [f"t{k}" for k in j],
                          "probability": 1.0})  # fmt: skip
    prior = EventPrior(public_layers(), event_share=SHARE)
    em = EMEstimator(emission=table, tiles=tiles(), prior=prior, prior_weight=w,
                     privacy_threshold=0).fit_counts(counts(values, bins, cells))  # fmt: skip
    got = per_tile(em.estimate(zones()))
    q = expected_q()
    for b, state in enumerate(("market", "race")):
        n = values[:, b].sum()
        np.testing.assert_allclose(got[b], (values[:, b] + w * n * q[state]) / (1 + w), rtol=1e-5)


# --------------------------------------------------------------------------- the wall
def test_the_prior_module_imports_nothing_of_the_world() -> None:
    path = Path(__file__).resolve().parents[1] / "sim" / "estimate" / "priors.py"
    bad = [m for _, m in imported_modules(path) if not allowed(m)]
    assert not bad, bad
    code = (
        "import sys, sim.estimate.priors\n"
        "world = ('sim.crowd', 'sim.streets', 'sim.scenario', 'sim.course', 'sim.zones',"
        " 'sim.report', 'sim.run', 'sim.runfolder', 'validation')\n"
        "print(sorted(m for m in sys.modules if m.startswith(world)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout


# --------------------------------------------------------------------------- bad input
def test_a_missing_public_file_says_what_writes_it(tmp_path: Path) -> None:
    with pytest.raises(EstimateInputError, match=r"event_public.gpkg: missing.*street stage"):
        EventPrior(tmp_path / runfolder.EVENT_PUBLIC)
    config = EstimatorsConfig(methods=["bayes"], prior="event")
    with pytest.raises(EstimateInputError, match="prior = 'event' needs the event's public"):
        make_estimators(config)


def test_a_public_file_without_a_layer_or_in_degrees_is_refused(tmp_path: Path) -> None:
    public = public_layers()
    path = tmp_path / "partial.gpkg"
    public.course.to_file(path, layer="course", driver="GPKG")
    with pytest.raises(EstimateInputError, match=r"partial.gpkg: no layer 'closures'"):
        read_event_public(path)
    degrees = EventPublic(public.course, public.closures, public.fan_areas,
                          public.streets.to_crs("EPSG:4326"))  # fmt: skip
    with pytest.raises(EstimateInputError, match="layer 'streets' is in EPSG:4326"):
        EventPrior(degrees)
    bad_time = public.closures.assign(start=["noon", *public.closures["start"][1:]])
    with pytest.raises(EstimateInputError, match="column 'start': not ISO 8601"):
        EventPrior(EventPublic(public.course, bad_time, public.fan_areas, public.streets))
    away = EventPublic(*(
        frame.set_geometry(frame.translate(xoff=1e5))
        for frame in (public.course, public.closures, public.fan_areas, public.streets)
    ))  # fmt: skip
    with pytest.raises(EstimateInputError, match="inside the estimators' tiles"):
        EventPrior(away).tile_prior(RASTER)


@pytest.mark.parametrize("w", [-0.1, 1.5, float("nan"), "half"])
def test_a_prior_weight_out_of_range_is_refused(w: Any) -> None:
    c = counts(np.array([[1.0], [0], [0], [0]]), [utc("12:00")], CELLS)
    prior = EventPrior(public_layers())
    for cls in (BayesEstimator, EMEstimator):
        est = cls(emission=emission(P), tiles=tiles(), prior=prior, prior_weight=w)
        with pytest.raises(
            EstimateInputError, match=r"prior_weight = .*must be a number in \[0, 1\]"
        ):
            est.fit_counts(c)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [("prior_weight", 1.5, "less than or equal to 1"), ("prior", "streets", "'flat' or 'event'"),
     ("prior_event_share", -0.2, "greater than or equal to 0")],
)  # fmt: skip
def test_the_scenario_names_a_bad_prior_key(
    tmp_path: Path, minimal: dict[str, Any], key: str, value: Any, words: str
) -> None:
    minimal["estimators"] = {key: value}
    path = write(tmp_path / "bad.toml", minimal)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert f"estimators.{key}" in str(info.value)
    assert words in str(info.value)


def test_em_refuses_a_prior_with_no_weight_where_cells_see() -> None:
    with pytest.raises(EstimateInputError, match="no weight on the tiles the cells cover"):
        em_deconvolve(np.array([[5.0]]), np.array([[1.0, 0.0]]), prior=np.array([0.0, 1.0]),
                      prior_weight=0.5)  # fmt: skip


def test_a_static_prior_has_one_state() -> None:
    prior = TilePrior.static(np.array([1.0, 3.0]))
    np.testing.assert_allclose(prior.weights, [[0.25, 0.75]])
    assert list(prior.states(pd.DatetimeIndex([utc("12:00"), utc("13:00")]))) == [0, 0]


# --------------------------------------------------------------------------- the run
def test_the_run_writes_the_public_data_and_the_event_prior_lifts_the_course(
    smoke_run: Path,
) -> None:
    path = smoke_run / runfolder.EVENT_PUBLIC
    assert runfolder.EVENT_PUBLIC in runfolder.read_manifest(smoke_run)["files"]
    public = read_event_public(path)
    scenario = load_scenario(smoke_run / runfolder.SCENARIO)
    course = public.closures[public.closures["course"].astype(bool)]
    assert list(course["start"]) == ["2019-07-07T12:00:00+00:00"]  # 14:00 in Brussels
    assert len(public.course) == 1 and len(public.fan_areas) == 0
    assert len(public.streets) > 100
    plan = NetworkPlan.from_json(smoke_run / runfolder.NETWORK_PLAN)
    records = pd.read_parquet(smoke_run / runfolder.RECORDS)
    zone_systems = {s: gpd.read_file(smoke_run / runfolder.ZONES, layer=s)
                    for s in ("grid", "segment")}  # fmt: skip
    bins = period_bins(plan)
    segment_total = {}
    for kind in ("flat", "event"):
        config = scenario.estimators.model_copy(
            update={"methods": ["bayes", "em"], "prior": kind, "prior_weight": 0.5}
        )
        release = release_estimates(records, plan, zone_systems, bins, config, public=path)
        seg = release.internal[release.internal["zone_system"] == "segment"]
        segment_total[kind] = seg.groupby("method", observed=True)["estimate"].sum()
    # spectators stand on the course: the event prior puts more of them there
    assert (segment_total["event"] > 1.2 * segment_total["flat"]).all()
    # the real-time update uses the bin's state of the prior too
    prior = EventPrior(path)
    for cls in (BayesEstimator, EMEstimator):
        est = cls(prior=prior, prior_weight=0.5, latency_min=1.0).fit(records, plan)
        whole = est.estimate(zone_systems["segment"].assign(system="segment"), bins[20:23])
        minute = est.estimate_minute(zone_systems["segment"].assign(system="segment"), bins[21])
        # EM's real-time bounds skip the bootstrap of its density (its interval_facts say
        # so): the estimate is the same, the bounds are the cheaper real-time ones
        drop = ["lower", "upper"] if cls is EMEstimator else []
        pd.testing.assert_frame_equal(
            minute.drop(columns=drop).reset_index(drop=True),
            whole[whole["bin"] == bins[21]].drop(columns=drop).reset_index(drop=True),
            check_categorical=False,
        )
