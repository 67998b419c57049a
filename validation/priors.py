"""What the event-aware prior does: Bayes and EM rerun on a finished run, flat vs event.

The prior (:mod:`sim.estimate.priors`) is meant to cut the undercount of the course
segments (spectators stand in a thin strip; the methods spread them over the cells'
footprints). A prior that helps the course can hurt elsewhere, so both are measured:

- **course**: the ``segment`` zone system: the median over segments of the signed
  error of the peak, ``(max_b E - max_b T) / max_b T`` (segments whose true peak is at
  least the floor; negative = undercount), the MAPE (also split into the bins while the
  course is closed and the others, when the public data has a course closure), and the
  signed error of the segments' total in the bin where that true total peaks;
- **named areas**: the ``area`` MAPE;
- **the whole grid**: MAPE and KWD (metres);
- **the background**: grid tiles whose centre lies farther than `background_m` from
  the course and the fan areas (public geometry): the MAPE over their zone-bins, the
  mean signed error of their total per bin, and the KWD between the estimated and true
  distributions over those tiles only.

Every variant is estimated from the same cell counts (the run's records, plan, bins,
window, latency and mode), exactly as the run's own estimators stage counts them, so
the crowd is not simulated again. The run folder needs ``event_public.gpkg`` (runs from
before it existed can get it from ``sim.report.geopackage.write_event_public``).

Run as ``python -m validation.priors RUN_DIR [--weights 0.25,0.5,1] [--share 0.5]``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from sim import runfolder
from sim.estimate import EventPrior, make_estimators, period_bins
from sim.estimate.presence import prepare_records
from sim.network.plan import NetworkPlan
from sim.scenario import EstimatorsConfig
from validation.metrics import (
    DEFAULT_FLOOR,
    SYSTEMS,
    _join_one,
    _zone_lists,
    kwd_blocked,
    score,
    tile_centroids,
)

__all__ = ["prior_study"]

#: Grid tiles whose centre is farther than this from the course and fan areas (m) are
#: the background.
BACKGROUND_M = 500.0
#: KWD on at most this many bins per variant (evenly spaced), as the run's own scoring
#: (:data:`validation.scoring.KWD_MAX_BINS`): it is the costly measure.
KWD_BINS = 12


def prior_study(
    run_dir: str | os.PathLike[str],
    *,
    weights: Sequence[float] = (0.25, 0.5, 1.0),
    event_share: float = 0.5,
    methods: Sequence[str] = ("bayes", "em"),
    background_m: float = BACKGROUND_M,
    floor: float = DEFAULT_FLOOR,
    kwd_bins: int = KWD_BINS,
) -> pd.DataFrame:
    """Score Bayes and EM with the flat prior and the event prior at each weight.

    Returns
    -------
    pandas.DataFrame
        One row per method and prior (``flat`` or ``event w=...``), with the measures of
        the module docstring.
    """
    run = Path(run_dir)
    manifest = runfolder.read_manifest(run)
    scenario = manifest["scenario"]
    base = EstimatorsConfig(**scenario["estimators"])
    plan = NetworkPlan.from_json(run / runfolder.NETWORK_PLAN)
    records = pd.read_parquet(run / runfolder.RECORDS)
    bin_s = float(scenario["zones"]["bin_s"])
    bins = period_bins(plan, bin_s=bin_s)
    zones = {
        s: gpd.read_file(run / runfolder.ZONES, layer=s) for s in SYSTEMS if s in _zone_lists(run)
    }
    prepared = prepare_records(records, plan)
    shared: dict[str, Any] = {"mode": base.mode, "share_error": base.share_error,
              "phones_error": base.phones_error}  # fmt: skip
    one = base.model_copy(update={"methods": [methods[0]], "laplace_epsilon": None})
    counter = make_estimators(one, **shared)[0].fit(prepared, plan)
    counts = counter.cell_counts(bins)
    truth = _truth(run, bin_s)
    zone_lists = _zone_lists(run)
    centroids = tile_centroids(run)
    public = EventPrior(run / runfolder.EVENT_PUBLIC, event_share=event_share)
    background = _background(zones["grid"], public, background_m)
    closed = _course_closed(public, bins)
    variants: list[tuple[str, dict[str, Any]]] = [("flat", {"prior": "flat"})]
    variants += [(f"event w={w:g}", {"prior": "event", "prior_weight": w}) for w in weights]
    rows = []
    for method in methods:
        for label, update in variants:
            cfg = base.model_copy(update={**update, "methods": [method], "laplace_epsilon": None})
            (est,) = make_estimators(cfg, public=public, **shared)
            est.fit(prepared, plan)
            table = est.estimate_from_counts(counts, zones, bins)
            joined = {}
            for s in zones:
                part = table[table["zone_system"] == s]
                joined[s] = _join_one(method, s, part, truth, zone_lists.get(s, []), bin_s)
            rows.append({"method": method, "prior": label,
                         **_measures(joined, background, centroids, floor=floor,
                                     kwd_bins=kwd_bins, closed=closed)})  # fmt: skip
    return pd.DataFrame(rows)


def _truth(run: Path, bin_s: float) -> pd.DataFrame:
    """The run's truth with bin starts (UTC), as :func:`validation.metrics.join_run`."""
    truth = pd.read_parquet(run / runfolder.TRUTH_ZONES)
    return truth.assign(
        bin=pd.to_datetime(truth["time"], utc=True) - pd.Timedelta(seconds=bin_s),
        system=truth["system"].astype("category"),
        zone=truth["zone"].astype("category"),
    )


def _course_closed(public: EventPrior, bins: pd.DatetimeIndex) -> np.ndarray | None:
    """Which bins start while some course closure holds (None: no course closure)."""
    c = public.public.closures
    c = c[c["course"].astype(bool)]
    if c.empty:
        return None
    start, end = (pd.DatetimeIndex(pd.to_datetime(c[k], utc=True, format="ISO8601"))
                  .as_unit("ns") for k in ("start", "end"))  # fmt: skip
    t = bins.as_unit("ns").asi8[:, None]
    return ((start.asi8[None, :] <= t) & (t < end.asi8[None, :])).any(axis=1)


def _background(grid: gpd.GeoDataFrame, public: EventPrior, distance_m: float) -> set[str]:
    """Grid tiles whose centre is farther than `distance_m` from course and fan areas."""
    event = list(np.asarray(public.public.course.geometry))
    event += list(np.asarray(public.public.fan_areas.geometry))
    near = shapely.union_all(event).buffer(distance_m)
    centres = shapely.centroid(np.asarray(grid.geometry))
    far = ~shapely.intersects(centres, near)
    return {str(z) for z in grid["zone"][far]}


def _measures(
    joined: dict[str, Any],
    background: set[str],
    centroids: dict[str, tuple[float, float]],
    *,
    floor: float,
    kwd_bins: int,
    closed: np.ndarray | None,
) -> dict[str, float]:
    out: dict[str, float] = {}
    seg = joined.get("segment")
    if seg is not None:
        m, per_zone, _ = score(seg, floor=floor, centroids=None)
        peaked = per_zone["peak_truth"] >= floor
        out["segment_peak_error_median"] = float(per_zone["peak_error"][peaked].median())
        out["segment_mape"] = m["mape"][0]
        if closed is not None:
            for name, keep in (("closed", closed), ("open", ~closed)):
                part = score(seg.select_bins(keep), floor=floor, centroids=None)[0]
                out[f"segment_mape_{name}"] = part["mape"][0]
        tt, et = seg.truth.sum(axis=1), seg.estimate.sum(axis=1)
        at = int(np.argmax(tt))
        out["segment_total_error_at_peak"] = float((et[at] - tt[at]) / tt[at])
    if "area" in joined:
        out["area_mape"] = score(joined["area"], floor=floor, centroids=None)[0]["mape"][0]
    grid = joined["grid"]
    stride = max(1, math.ceil(len(grid.bins) / max(kwd_bins, 1)))
    m, _, _ = score(grid, floor=floor, kwd_stride=stride, centroids=centroids)
    out["grid_mape"], out["grid_kwd_m"] = m["mape"][0], m["kwd_mean_m"][0]
    bg = np.array([str(z) in background for z in grid.zones])
    t, e = grid.truth[:, bg], grid.estimate[:, bg]
    above = t >= floor
    with np.errstate(divide="ignore", invalid="ignore"):
        out["background_mape"] = float((np.abs(e - t) / t)[above].mean())
        total = (e.sum(axis=1) - t.sum(axis=1)) / t.sum(axis=1)
    out["background_total_error_mean"] = float(np.nanmean(total))
    xy = np.array([centroids[str(z)] for z in grid.zones[bg]])
    values = [kwd_blocked(t[b], e[b], xy, max_pairs=1_500_000, block_m=200.0)[0]
              for b in range(0, len(t), stride)]  # fmt: skip
    out["background_kwd_m"] = float(np.nanmean(values))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Print the study's table for a run folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--weights", default="0.25,0.5,1")
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--methods", default="bayes,em")
    parser.add_argument("--kwd-bins", type=int, default=KWD_BINS)
    parser.add_argument("--csv", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    table = prior_study(
        args.run_dir,
        weights=[float(w) for w in args.weights.split(",")],
        event_share=args.share,
        methods=args.methods.split(","),
        kwd_bins=args.kwd_bins,
    )
    if args.csv:
        table.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
