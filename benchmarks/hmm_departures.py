"""The device-level HMM against the presence-based methods: time of peak and departure lag.

Run by hand on a finished run folder (``crowdsim run`` or ``crowdsim demo``)::

    python benchmarks/hmm_departures.py RUN_DIR [--out DIR] [--systems segment area]

It re-estimates the run's records with Voronoi, Bayes and EM (presence-based: a device
counts at its last cell for up to W minutes) and with the HMM, each in real time and in
batch, with the run's estimator settings, scores them against the run's truth with
:func:`validation.metrics.score`, and prints per zone system the median and mean absolute
time-of-peak error (``peak_time_error_*_abs_min``, the validation metrics), the peak
error, MAPE, and the *departure lag*: per zone whose true peak reaches the floor, the
time at which the estimate falls to half its own peak after that peak, minus the same
time of the truth (minutes; positive = the estimate empties later than the zone does;
zones where either never falls to half within the run are left out, ``n`` says how many
are left). The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from sim.estimate import ESTIMATORS, period_bins
from sim.estimate.base import concat_estimates
from sim.estimate.presence import prepare_records
from sim.network.plan import NetworkPlan
from sim.runfolder import read_manifest
from validation.metrics import DEFAULT_FLOOR, join_run, score

METHODS = ("voronoi", "bayes", "em", "hmm")
SYSTEMS = ("segment", "area", "grid")


def half_fall(x: np.ndarray, bin_min: float) -> np.ndarray:
    """Per column, minutes from the first bin to the first bin after the peak at <= peak/2."""
    peak = x.argmax(axis=0)
    top = x.max(axis=0)
    after = np.arange(len(x))[:, None] > peak[None, :]
    low = after & (x <= top[None, :] / 2)
    first = np.where(low.any(axis=0), low.argmax(axis=0), -1)
    return np.where(first >= 0, first * bin_min, np.nan)


def departure_lag(truth: np.ndarray, estimate: np.ndarray, bin_min: float, floor: float):
    """Median and mean of (estimate's half-fall time - truth's), and the zones counted."""
    keep = truth.max(axis=0) >= floor
    lag = half_fall(estimate, bin_min) - half_fall(truth, bin_min)
    lag = lag[keep & np.isfinite(lag)]
    if lag.size == 0:
        return math.nan, math.nan, 0
    return float(np.median(lag)), float(lag.mean()), int(lag.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--out", type=Path, default=None, help="keep the scored folder here")
    parser.add_argument("--floor", type=float, default=DEFAULT_FLOOR)
    parser.add_argument(
        "--systems", nargs="+", default=list(SYSTEMS), help="zone systems (the grid is big)"
    )
    args = parser.parse_args()
    run = args.run
    manifest = read_manifest(run)
    cfg = manifest["scenario"]["estimators"]
    bin_s = float(manifest["scenario"]["zones"]["bin_s"])
    plan = NetworkPlan.from_json(run / "network_plan.json")
    records = pd.read_parquet(run / "records.parquet")
    zones = {s: gpd.read_file(run / "zones.gpkg", layer=s) for s in args.systems}
    zones = {s: z for s, z in zones.items() if len(z)}
    bins = period_bins(plan, bin_s=bin_s)
    prepared = prepare_records(records, plan)
    shared = {
        "window_min": cfg["window_min"],
        "latency_min": cfg["latency_min"],
        "privacy_threshold": cfg["privacy_threshold"],
        "share_error": cfg["share_error"],
        "phones_error": cfg["phones_error"],
        "random_state": 0,
    }
    frames, timings, fitted = [], {}, {}
    for mode in ("realtime", "batch"):
        for name in METHODS:
            t = time.perf_counter()
            est = ESTIMATORS[name](mode=mode, **shared).fit(prepared, plan)
            table = est.estimate(zones, bins)
            label = name if mode == "realtime" else f"{name}_batch"
            table["method"] = pd.Categorical([label] * len(table))
            frames.append(table)
            timings[label] = round(time.perf_counter() - t, 2)
            fitted[label] = est
            print(f"{label}: {timings[label]} s", flush=True)
    work = Path(tempfile.mkdtemp()) if args.out is None else args.out
    work.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "truth_zones.parquet", "zones.gpkg"):
        shutil.copy(run / name, work / name)
    concat_estimates(frames).to_parquet(work / "estimates.parquet")
    figures: dict[str, object] = {"run": str(run), "timings_s": timings}
    figures["hmm_move_probability"] = fitted["hmm"].move_probability_
    rows = []
    for joined in join_run(work, systems=tuple(zones)):
        m, _, _ = score(joined, floor=args.floor)
        lag_med, lag_mean, n_lag = departure_lag(
            joined.truth, joined.estimate, joined.bin_s / 60.0, args.floor
        )
        rows.append(
            {
                "system": joined.system,
                "method": joined.method,
                "peak_time_median_min": m["peak_time_error_median_abs_min"][0],
                "peak_time_mean_min": m["peak_time_error_mean_abs_min"][0],
                "zones": m["peak_time_error_median_abs_min"][1],
                "departure_lag_median_min": lag_med,
                "departure_lag_mean_min": lag_mean,
                "lag_zones": n_lag,
                "peak_error_median": m["peak_error_median_abs"][0],
                "mape": m["mape"][0],
                "mae": m["mae"][0],
            }
        )
    table = pd.DataFrame(rows).sort_values(["system", "method"])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    if args.out is None:
        shutil.rmtree(work)
    figures["scores"] = table.round(4).to_dict(orient="records")
    print(json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
