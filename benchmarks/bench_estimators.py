"""Benchmark: every estimator on a day of records, 100 m tiles and course segments.

Run by hand: ``python benchmarks/bench_estimators.py [--devices N]``. Prints one JSON
object on its last line: ``wall_s`` (all methods, including the shared record
preparation), ``<method>_s`` per method (fit + estimate), ``prepare_s``, ``peak_mem_mb``
(peak resident memory of the process) and ``realtime_minute_s`` (one real-time minute
update of every method on both zone systems). Targets (issue #5): under 60 s and 4 GB on
2 cores; a real-time minute under 1 s.

The device-level HMM (issue #13) is timed apart, its target being 5 minutes for the whole
records: ``hmm_s`` (real time: fit, which includes the likelihood fit of its walk, and
the forward filter over every bin), ``hmm_fit_s``, ``hmm_move_probability``, and with
``--hmm-batch`` also ``hmm_batch_s`` (forward-backward). Its real-time update keeps the
filter's state: ``hmm_first_minute_s`` is the first call (a replay from the period's
start), ``hmm_minute_s`` the next minute (one step), which is what a screen refreshed
every minute pays; ``realtime_minute_s`` counts the latter. ``static_wall_s`` is the
wall time of the other methods (the issue #5 target).

So that a run on a busy machine can still be judged, it also gives the CPU time of the
process (all its threads) beside each wall time (``cpu_s``, ``<method>_cpu_s``), the
cores it may use (``cores``) and the load average before and after (``load_before``,
``load_after``): wall well above CPU time on one thread means the run waited for the
cores.

With ``--records DIR`` it uses the records, plan and course that
``bench_network.py --out DIR`` wrote (the issue's setting: the network benchmark's
records), or, given a run folder (``crowdsim run``), its records, plan, grid and segment
zones and every minute of its period. Without it, the records are SYNTHETIC: ~180,000 devices of the
estimating operator (500,000 people x 0.9 phones x 0.40 share), each with a periodic TAU
every 54 min (random phase) and ~10 data service requests per hour, 11:00-18:00
(Brussels time), on cells generated over the Brussels region; a third of the devices move
once during the day (to a point near the course), so cells change. Records are in time
order, as a network writes them (the estimators also accept them unordered, ~2 s more).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree

from sim.estimate import ESTIMATORS, period_bins
from sim.estimate.base import concat_estimates
from sim.estimate.presence import prepare_records
from sim.network.plan import NetworkPlan, generate_cells
from sim.network.records import RECORD_COLUMNS

EXTENT = (140447.0, 160997.0, 158682.0, 178724.0)
#: The zone systems read from a run folder's zones.gpkg.
ZONE_LAYERS = ("grid", "segment")
#: A polyline roughly along the 2019 course (EPSG:31370), for course segments.
COURSE = [
    (149600, 170100), (150600, 170000), (151800, 169700), (153000, 169100), (154600, 168200),
    (156200, 167400), (155500, 165800), (153200, 165200), (151300, 165600), (150400, 166600),
    (150800, 168300), (152500, 170200), (152900, 172000), (151600, 173300), (150000, 174300),
    (148700, 175300), (148300, 176600),
]  # fmt: skip


def synthetic_records(
    plan: NetworkPlan, *, n_devices: int, start: pd.Timestamp, end: pd.Timestamp, seed: int
) -> pd.DataFrame:
    """Periodic TAUs and data service requests of `n_devices` devices, mostly static."""
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = EXTENT
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    # people concentrate towards the centre
    x0 = np.clip(rng.normal(cx, 3500, n_devices), xmin, xmax)
    y0 = np.clip(rng.normal(cy, 3500, n_devices), ymin, ymax)
    course = np.asarray(COURSE, dtype=float)
    k = rng.integers(0, len(course), n_devices)
    x1 = course[k, 0] + rng.normal(0, 150, n_devices)
    y1 = course[k, 1] + rng.normal(0, 150, n_devices)
    span = (end - start).total_seconds()
    moves = rng.random(n_devices) < 1 / 3
    t_move = np.where(moves, rng.uniform(0, span, n_devices), np.inf)
    tau_phase = rng.uniform(0, 54 * 60, n_devices)
    n_tau = np.floor((span - tau_phase) / (54 * 60)).astype(np.int64) + 1
    tau_dev = np.repeat(np.arange(n_devices), n_tau)
    tau_t = tau_phase[tau_dev] + 54 * 60 * (
        np.arange(n_tau.sum()) - np.repeat(np.cumsum(n_tau) - n_tau, n_tau)
    )
    n_sr = rng.poisson(10 * span / 3600, n_devices)
    sr_dev = np.repeat(np.arange(n_devices), n_sr)
    sr_t = rng.uniform(0, span, len(sr_dev))
    dev = np.concatenate([tau_dev, sr_dev])
    t = np.concatenate([tau_t, sr_t])
    is_tau = np.arange(len(t)) < len(tau_t)
    in_time = np.argsort(t)  # a network writes its records in time order
    dev, t, is_tau = dev[in_time], t[in_time], is_tau[in_time]
    del in_time, tau_dev, sr_dev
    moved = t >= t_move[dev]
    px = np.where(moved, x1[dev], x0[dev])
    py = np.where(moved, y1[dev], y0[dev])
    # best server ~ nearest site, sector by bearing
    cells = plan.cells
    sites = cells.drop_duplicates("site_id")
    _, s = cKDTree(sites[["x", "y"]].to_numpy()).query(np.column_stack([px, py]))
    site_id = sites["site_id"].to_numpy()[s]
    bearing = np.degrees(np.arctan2(px - sites["x"].to_numpy()[s], py - sites["y"].to_numpy()[s]))
    sector = np.rint((bearing % 360.0) / 120.0).astype(np.int64) % 3
    cell_id = site_id * 10 + sector + 1
    del px, py, moved, bearing, s, site_id
    procedures = RECORD_COLUMNS["procedure"].categories
    code = np.where(
        is_tau, procedures.get_loc("periodic_tau"), procedures.get_loc("service_request")
    ).astype(np.int8)
    return pd.DataFrame(
        {
            "time": pd.DatetimeIndex(start.value + (t * 1e9).astype(np.int64)).tz_localize("UTC"),
            "device": (dev.astype(np.uint64) * np.uint64(2654435761)) ^ np.uint64(0xBEEF),
            "cell_id": cell_id,
            "procedure": pd.Categorical.from_codes(code, dtype=RECORD_COLUMNS["procedure"]),
            "outcome": pd.Categorical.from_codes(
                np.zeros(len(t), dtype=np.int8), dtype=RECORD_COLUMNS["outcome"]
            ),
        }
    )


def zone_systems(
    extent: tuple[float, float, float, float] = EXTENT, course: np.ndarray | None = None
) -> dict[str, gpd.GeoDataFrame]:
    """100 m tiles over the extent and 500 m course segments buffered 50 m."""
    xmin, ymin, xmax, ymax = extent
    g = 100.0
    xs = np.arange(np.floor(xmin / g) * g, xmax, g)
    ys = np.arange(np.floor(ymin / g) * g, ymax, g)
    gx, gy = np.meshgrid(xs, ys)
    gx, gy = gx.ravel(), gy.ravel()
    grid = gpd.GeoDataFrame(
        {"zone": [f"g{int(a // g)}_{int(b // g)}" for a, b in zip(gx, gy, strict=True)]},
        geometry=shapely.box(gx, gy, gx + g, gy + g),
        crs="EPSG:31370",
    )
    line = shapely.LineString(COURSE if course is None else course)
    cuts = np.arange(0.0, line.length, 500.0)
    pieces = [
        shapely.ops.substring(line, a, min(a + 500.0, line.length)).buffer(50.0) for a in cuts
    ]
    segments = gpd.GeoDataFrame(
        {"zone": [f"km{a / 1000:g}" for a in cuts]}, geometry=pieces, crs="EPSG:31370"
    )
    return {"grid": grid, "segment": segments}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=180_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--hmm-batch", action="store_true", help="also time the HMM's forward-backward"
    )
    parser.add_argument(
        "--records",
        type=Path,
        default=None,
        help="folder written by bench_network.py --out: use its real records, plan and course",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    tz = "Europe/Brussels"
    start = pd.Timestamp("2019-07-07 11:00", tz=tz).tz_convert("UTC")
    end = pd.Timestamp("2019-07-07 18:00", tz=tz).tz_convert("UTC")
    t = time.perf_counter()
    bins = pd.date_range(start, end - pd.Timedelta(minutes=1), freq="1min")
    if args.records is not None and not (args.records / "course_xy.npy").is_file():
        # a run folder (crowdsim run): its records, plan, zones and whole period
        plan = NetworkPlan.from_json(args.records / "network_plan.json")
        records = pd.read_parquet(args.records / "records.parquet")
        zones = {s: gpd.read_file(args.records / "zones.gpkg", layer=s) for s in ZONE_LAYERS}
        bins = period_bins(plan, bin_s=60.0)
        source = f"run folder ({args.records})"
    elif args.records is not None:
        plan = NetworkPlan.from_json(args.records / "network_plan.json")
        records = pd.read_parquet(args.records / "records.parquet")
        course = np.load(args.records / "course_xy.npy")
        cx, cy = plan.cells["x"], plan.cells["y"]
        zones = zone_systems((cx.min(), cy.min(), cx.max(), cy.max()), course)
        source = f"network benchmark ({args.records})"
    else:
        cells = generate_cells(EXTENT, rng=np.random.default_rng(args.seed))
        plan = NetworkPlan(
            operator="proximus",
            cells=cells,
            market_share=0.40,
            phones_per_person=0.9,
            period=(start.isoformat(), end.isoformat()),
        )
        records = synthetic_records(
            plan, n_devices=args.devices, start=start, end=end, seed=args.seed
        )
        zones = zone_systems()
        source = "synthetic"
    generate_s = time.perf_counter() - t
    print(
        f"{source} records: {len(records):,} records of {records['device'].nunique():,} "
        f"pseudonyms on {plan.n_cells} cells; {len(zones['grid']):,} tiles, "
        f"{len(zones['segment'])} segments, {len(bins)} bins"
    )
    figures: dict[str, float | int | str | None] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    prepared = prepare_records(records, plan)
    figures["prepare_s"] = round(time.perf_counter() - t0, 2)
    figures["prepare_cpu_s"] = round(time.process_time() - c0, 2)
    frames = []
    fitted = []
    for name, cls in ESTIMATORS.items():
        t, c = time.perf_counter(), time.process_time()
        est = cls(latency_min=1.0, random_state=0).fit(prepared, plan)
        if name == "hmm":
            figures["hmm_fit_s"] = round(time.perf_counter() - t, 2)
            figures["hmm_move_probability"] = est.move_probability_
        frames.append(est.estimate(zones, bins))
        figures[f"{name}_s"] = round(time.perf_counter() - t, 2)
        figures[f"{name}_cpu_s"] = round(time.process_time() - c, 2)
        fitted.append(est)
        print(f"{name}: {figures[f'{name}_s']} s (CPU {figures[f'{name}_cpu_s']} s)", flush=True)
    table = concat_estimates(frames, consume=True)
    figures["wall_s"] = round(time.perf_counter() - t0, 2)
    figures["cpu_s"] = round(time.process_time() - c0, 2)
    figures["static_wall_s"] = round(figures["wall_s"] - figures.get("hmm_s", 0.0), 2)
    minute = bins[len(bins) // 2]
    for est in fitted:  # the HMM's state is kept from the minute before, as on a screen
        if getattr(est, "needs_records", False):
            t = time.perf_counter()
            est.estimate_minute(zones, minute - pd.Timedelta(minutes=1))
            figures["hmm_first_minute_s"] = round(time.perf_counter() - t, 3)
    t, c = time.perf_counter(), time.process_time()
    for est in fitted:
        a = time.perf_counter()
        est.estimate_minute(zones, minute)
        if getattr(est, "needs_records", False):
            figures["hmm_minute_s"] = round(time.perf_counter() - a, 3)
    figures["realtime_minute_s"] = round(time.perf_counter() - t, 3)
    figures["realtime_minute_cpu_s"] = round(time.process_time() - c, 3)
    if args.hmm_batch and "hmm" in ESTIMATORS:
        t = time.perf_counter()
        hmm = ESTIMATORS["hmm"](latency_min=1.0, mode="batch", random_state=0)
        hmm.fit(prepared, plan).estimate(zones, bins)
        figures["hmm_batch_s"] = round(time.perf_counter() - t, 2)
        print(f"hmm batch: {figures['hmm_batch_s']} s", flush=True)
    figures["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    figures["load_before"] = round(load_before, 2)
    figures["load_after"] = round(os.getloadavg()[0], 2)
    figures["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["rows"] = len(table)
    figures["records"] = len(records)
    figures["generate_records_s"] = round(generate_s, 2)
    figures["records_source"] = source
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
