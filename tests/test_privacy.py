"""Disclosure control: what is published, differencing attacks, differential privacy."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.estimate as estimate_pkg
from sim.estimate import EstimateInputError, release_estimates, write_release
from sim.estimate.output import INTERNAL_ESTIMATES_FILE, PUBLISHED_ESTIMATES_FILE
from sim.estimate.privacy import (
    check_partition,
    laplace_counts,
    privacy_budget,
    published_view,
)
from sim.estimate.tiles import ZoneSet
from sim.scenario import EstimatorsConfig
from tests.conftest import T0
from tests.test_estimate import voronoi_world

K = 60
#: Two consecutive bins; people do not move between them in the test world.
BINS = pd.DatetimeIndex([T0 + pd.Timedelta(minutes=30), T0 + pd.Timedelta(minutes=31)])
CONFIG = EstimatorsConfig(
    methods=["voronoi", "bayes"], privacy_threshold=K, latency_min=1.0, laplace_epsilon=None
)
TILE = 100.0


def frame(system: str, names: list[str], geoms: list[shapely.Geometry]) -> gpd.GeoDataFrame:
    out = gpd.GeoDataFrame({"zone": names}, geometry=geoms, crs="EPSG:31370")
    out.attrs["system"] = system
    return out


@pytest.fixture(scope="module")
def attack_world():
    """People uniform (about 34 per 100 m tile, so a tile is below k = 60 and a 3 x 3
    block above it), a 1 km grid of tiles, a 3 x 3 block, and the block minus its centre."""
    plan, recs, *_ = voronoi_world()
    x0, y0 = 1000.0, 1000.0
    gx, gy = np.meshgrid(np.arange(10) * TILE + x0, np.arange(10) * TILE + y0)
    gx, gy = gx.ravel(), gy.ravel()
    tiles = [shapely.box(x, y, x + TILE, y + TILE) for x, y in zip(gx, gy, strict=True)]
    names = [f"g{int(x)}_{int(y)}" for x, y in zip(gx, gy, strict=True)]
    cx, cy = x0 + 4 * TILE, y0 + 4 * TILE  # the centre tile of the block
    block = shapely.box(cx - TILE, cy - TILE, cx + 2 * TILE, cy + 2 * TILE)
    centre = shapely.box(cx, cy, cx + TILE, cy + TILE)
    zones = {
        "grid": frame("grid", names, tiles),
        "block": frame("block", ["block"], [block]),
        "ring": frame("ring", ["ring"], [block.difference(centre)]),
    }
    geometry = {("grid", n): g for n, g in zip(names, tiles, strict=True)}
    geometry[("block", "block")] = block
    geometry[("ring", "ring")] = block.difference(centre)
    return plan, recs, zones, geometry, f"g{int(cx)}_{int(cy)}"


def differencing_attack(
    table: pd.DataFrame, geometry: dict[tuple[str, str], shapely.Geometry]
) -> dict[tuple[str, pd.Timestamp, str], float]:
    """Recover withheld zone values as differences of published zones.

    For every pair of published values A, B of one method, in the same bin or in two
    consecutive bins, with B's zone inside A's zone, the difference A - B is the value
    of A minus B; if that region is a zone of any system, its value is recovered
    (people do not move between the bins of the test world). Returns {(method, bin, zone): value}.
    """
    width = pd.Timedelta(minutes=1)
    shown = table[table["estimate"].notna() & ~table["suppressed"].to_numpy(bool)]
    targets = geometry  # the attacker knows every zone system's geometry
    found: dict[tuple[str, pd.Timestamp, str], float] = {}
    for method, rows in shown.groupby(shown["method"].astype(str)):
        items = [
            (r.bin, geometry[(str(r.zone_system), str(r.zone))], float(r.estimate))
            for r in rows.itertuples()
        ]
        big = [i for i in items if i[1].area > TILE * TILE * 1.5]  # candidate outer zones
        for bin_a, geom_a, value_a in big:
            for bin_b, geom_b, value_b in items:
                if abs(bin_b - bin_a) > width or geom_b.equals(geom_a):
                    continue
                if not geom_a.buffer(1e-6).contains(geom_b):
                    continue
                rest = geom_a.difference(geom_b)
                for (_, zone), geom in targets.items():
                    if rest.symmetric_difference(geom).area < 1e-3:
                        found[(method, bin_a, zone)] = value_a - value_b
    return found


def naive_publication(internal: pd.DataFrame, *, systems_by_bin=None) -> pd.DataFrame:
    """How it was done before: every system, each suppressed on its own (value removed);
    or one system per bin, alternating (`systems_by_bin`: bin index -> system)."""
    out = internal.copy()
    hide = out["suppressed"].to_numpy(bool)
    for column in ("estimate", "lower", "upper"):
        out[column] = out[column].where(~hide)
    if systems_by_bin is not None:
        index = pd.DatetimeIndex(out["bin"]).map({b: i for i, b in enumerate(BINS)})
        wanted = np.array([systems_by_bin[i] for i in index])
        out = out[out["zone_system"].astype(str).to_numpy() == wanted]
    return out.reset_index(drop=True)


def test_the_differencing_attack_recovers_a_suppressed_centre_from_naive_tables(
    attack_world,
) -> None:
    """The attack is real: on the former publication it recovers the centre exactly."""
    plan, recs, zones, geometry, centre = attack_world
    release = release_estimates(recs, plan, zones, BINS, CONFIG, random_state=0)
    internal = release.internal
    row = internal[(internal["zone"].astype(str) == centre) & (internal["method"] == "voronoi")]
    assert row["suppressed"].all()  # the centre tile is below k
    truth_value = float(row["estimate"].iloc[0])
    block = internal[internal["zone_system"] == "block"]
    assert not block["suppressed"].any()  # the 3 x 3 block is published
    # overlapping zones of two systems, each suppressed on its own
    found = differencing_attack(naive_publication(internal), geometry)
    assert found[("voronoi", BINS[0], centre)] == pytest.approx(truth_value, rel=1e-4)
    # one system per bin, alternating: consecutive bins give it away too
    alternating = naive_publication(internal, systems_by_bin=["block", "ring"])
    found = differencing_attack(alternating, geometry)
    assert found[("voronoi", BINS[0], centre)] == pytest.approx(truth_value, rel=1e-4)


def test_the_published_table_defeats_the_differencing_attack(attack_world) -> None:
    plan, recs, zones, geometry, centre = attack_world
    release = release_estimates(recs, plan, zones, BINS, CONFIG, random_state=0)
    published = release.published
    assert set(published["zone_system"].astype(str)) == {"grid"}  # one partition
    per_bin = published.groupby("bin", observed=True)["zone"].apply(lambda z: sorted(map(str, z)))
    assert all(zs == per_bin.iloc[0] for zs in per_bin)  # the same zones in every bin
    assert differencing_attack(published, geometry) == {}
    # the centre is withheld, not merely marked
    centre_rows = published[published["zone"].astype(str) == centre]
    assert centre_rows["suppressed"].all()
    assert centre_rows[["estimate", "lower", "upper"]].isna().all().all()


def test_publishing_an_overlapping_system_is_refused(attack_world) -> None:
    plan, recs, zones, *_ = attack_world
    both = frame("blocks", ["block", "ring"], [*zones["block"].geometry, *zones["ring"].geometry])
    with pytest.raises(EstimateInputError, match="'block' and 'ring' overlap"):
        release_estimates(
            recs, plan, {**zones, "blocks": both}, BINS, CONFIG, published_system="blocks"
        )
    with pytest.raises(EstimateInputError, match="'areas' is not among the zone systems"):
        release_estimates(recs, plan, zones, BINS, CONFIG, published_system="areas")
    # touching tiles are a partition
    touching = ZoneSet("t", np.array(["a", "b"], dtype=object),
                       np.array([shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)]))  # fmt: skip
    check_partition(touching)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(0, 200, allow_nan=False), min_size=1, max_size=30),
    threshold=st.floats(0, 100, allow_nan=False),
)
def test_published_view_leaves_nothing_of_a_suppressed_zone_bin(values, threshold) -> None:
    est = np.asarray(values, dtype=np.float32)
    n = len(est)
    table = pd.DataFrame(
        {
            "method": pd.Categorical(["em"] * n),
            "zone_system": pd.Categorical(["grid"] * n),
            "zone": pd.Categorical([f"z{i}" for i in range(n)]),
            "bin": pd.DatetimeIndex([T0] * n),
            "estimate": est,
            "lower": est * 0.9,
            "upper": est * 1.1 + 3,
            "suppressed": est < threshold,
            "mode": pd.Categorical(["realtime"] * n),
        }
    )
    out = published_view(table, system="grid")
    hidden = out["suppressed"].to_numpy()
    assert out.loc[hidden, ["estimate", "lower", "upper"]].isna().all().all()
    np.testing.assert_array_equal(out.loc[~hidden, "estimate"], est[~hidden])
    np.testing.assert_array_equal(hidden, est < threshold)


def test_release_writes_both_tables_or_neither(attack_world, tmp_path) -> None:
    plan, recs, zones, *_ = attack_world
    release = release_estimates(recs, plan, zones, BINS, CONFIG, random_state=0)
    paths = write_release(release.internal, release.published, tmp_path)
    assert [p.name for p in paths] == [INTERNAL_ESTIMATES_FILE, PUBLISHED_ESTIMATES_FILE]
    back = pd.read_parquet(tmp_path / PUBLISHED_ESTIMATES_FILE)
    assert back.loc[back["suppressed"], "estimate"].isna().all()
    with pytest.raises(EstimateInputError, match="columns must be"):
        write_release(release.internal, release.published.drop(columns="upper"), tmp_path / "x")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


# -- differential privacy --------------------------------------------------------------------
def test_laplace_counts_have_the_scale_of_sensitivity_one() -> None:
    rng = np.random.default_rng(3)
    counts = np.full((200, 500), 1000.0)
    noisy = laplace_counts(counts, epsilon=0.5, rng=rng)
    # Laplace(b): mean |X| = b = 1 / epsilon
    assert np.abs(noisy - counts).mean() == pytest.approx(2.0, rel=0.02)
    assert (laplace_counts(np.zeros((5, 5)), epsilon=0.1, rng=rng) >= 0).all()
    with pytest.raises(ValueError, match="epsilon"):
        laplace_counts(counts, epsilon=0.0, rng=rng)


def test_one_noise_draw_feeds_every_method(attack_world, monkeypatch) -> None:
    plan, recs, zones, *_ = attack_world
    calls = []
    real = estimate_pkg.laplace_counts

    def counting(counts, **kw):
        calls.append(counts.shape)
        return real(counts, **kw)

    monkeypatch.setattr(estimate_pkg, "laplace_counts", counting)
    noisy = CONFIG.model_copy(update={"laplace_epsilon": 0.5, "privacy_threshold": 0})
    a = release_estimates(recs, plan, zones, BINS, noisy, random_state=4)
    assert calls == [(plan.n_cells, len(BINS))]  # one draw, whatever the methods
    b = release_estimates(recs, plan, zones, BINS, noisy, random_state=4)
    c = release_estimates(recs, plan, zones, BINS, noisy, random_state=5)
    pd.testing.assert_frame_equal(a.published, b.published)
    assert not a.published["estimate"].equals(c.published["estimate"])
    pd.testing.assert_frame_equal(a.internal, c.internal)  # the internal table is exact
    assert set(a.published["method"].astype(str)) == {"voronoi", "bayes"}
    budget = a.privacy["budget"]
    assert budget["epsilon_per_bin"] == 0.5
    assert budget["epsilon_per_day"] == {"2019-07-07": 1.0}  # 2 bins x 0.5


def test_the_budget_is_summed_per_local_day() -> None:
    bins = pd.date_range("2019-07-06 14:00", periods=4, freq="30min", tz="UTC")
    # 23:00, 23:30, 00:00, 00:30 in Tokyo (UTC+9)
    budget = privacy_budget(bins, epsilon=0.25, timezone="Asia/Tokyo")
    assert budget["bins_per_day"] == {"2019-07-06": 2, "2019-07-07": 2}
    assert budget["epsilon_per_day"] == {"2019-07-06": 0.5, "2019-07-07": 0.5}
    assert budget["epsilon_per_day_max"] == 0.5
    off = privacy_budget(bins, epsilon=None, timezone="UTC")
    assert off["epsilon_per_bin"] is None and off["mechanism"] == "none"
