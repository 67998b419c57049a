"""Scoring a run: join the truth and the estimates, and measure how far apart they are.

The join (per zone system: grid, segment, area). ``truth_zones.parquet`` stamps a count
with the END of its bin in local time; the estimates with the START of its bin in UTC.
The estimates scored are the operator's internal table (``estimates_internal.parquet``;
a run folder from before the release split has only ``estimates.parquet``, read instead).
A truth row is moved to its bin start (``time - bin width``, in UTC) and the two are
matched on (zone, bin start). The zone list is every zone of ``zones.gpkg`` plus any zone
the estimates name; the bins are the bins the method estimated. Each method is scored on
the full product zones x bins: a zone-bin absent from the truth had nobody in it (the
truth writes grid tiles only where somebody is), one absent from the estimates is an
estimate of 0 with interval [0, 0] (the estimators write every zone-bin, so this does not
happen in a normal run; ``filled_estimates`` counts it). The presence method's ``cell``
system has no truth counterpart and is not scored. Estimates are scored as estimated,
suppressed or not; what suppression costs is measured separately (``published`` metrics
put 0 in every suppressed zone-bin, as a publisher showing nothing would), and so is
what the whole release costs: the published table (``estimates.parquet``: one zone
system, suppressed zone-bins empty, Laplace noise on the counts if on) is scored too.

Metrics per method and zone system (``value``; ``n`` = how many items it is over), with
T = truth and E = estimate of a zone-bin:

- ``mae``, ``rmse``, ``bias``: mean |E - T|, sqrt mean (E - T)^2, mean (E - T), over all
  zone-bins (people);
- ``mae_floor``: mean |E - T| over zone-bins with T >= floor;
- ``mape``: mean |E - T| / T over zone-bins with T >= floor (a fraction, 0.2 = 20%);
- ``total_error_median_abs``, ``total_error_mean``: per bin the relative error of the
  total over all zones, (sum E - sum T) / sum T (bins with sum T > 0), then the median
  of its absolute value and its signed mean;
- ``peak_error_median_abs``, ``peak_error_mean_abs``: per zone whose truth peak is >=
  floor, (max_b E - max_b T) / max_b T, then the median and mean of its absolute value;
- ``peak_time_error_median_abs_min``, ``peak_time_error_mean_abs_min``: for the same
  zones, the time of the estimated peak minus the time of the true peak (minutes; the
  first bin reaching the maximum), summarised likewise;
- ``coverage``, ``coverage_floor``: share of zone-bins with lower <= T <= upper, over
  all zone-bins and over those with T >= floor;
- ``suppressed_share``: share of zone-bins marked suppressed;
- ``mae_published``, ``mape_published``: mae and mape with suppressed zone-bins as 0;
- ``suppression_cost_mae``: ``mae_published - mae`` (people per zone-bin);
- ``mae_released``, ``mape_released`` (the published system only): mae and mape of the
  published table, a withheld zone-bin counted as 0; ``release_cost_mae`` =
  ``mae_released - mae`` (everything the release costs) and ``noise_cost_mae`` =
  ``mae_released - mae_published`` (what the noise adds to suppression), so error can
  be plotted against the threshold k and epsilon;
- ``kwd_mean_m``, ``kwd_median_m`` (grid only): the Kantorovich-Wasserstein distance
  between the estimated and the true distribution of people over the tiles, in metres
  (the mean distance a person of the estimate must be moved to match the truth), per bin
  then summarised. Each distribution is normalised to mass 1 and sits on the centroids of
  its tiles with mass > 0 (a tile with no mass on either side adds nothing, so
  restricting to them is exact); ``ot.emd2`` solves it exactly on the Euclidean cost
  matrix between those centroids. Bins are taken every ``kwd_stride`` bins from the
  first one (stride 1 = all); bins where either side is empty are skipped. A bin whose
  problem exceeds ``kwd_max_pairs`` (tiles with true mass x tiles with estimated mass) is
  solved on both distributions pooled into square blocks (twice the tile side, doubled
  until it fits), which shifts the distance by at most sqrt(2) x block; per bin
  ``kwd_block_m`` says which (0 = exact) and ``kwd_pooled_share`` the share pooled.

Costs (smoke scenario, 1,710 tiles x 60 bins, 3 grid methods, one core): the join and
every metric but KWD take under a second; KWD takes about 75 ms a bin and method (the
estimates of Bayes and EM put a little mass on nearly every tile, so the cost matrix is
about 200 x 1,700), 13.5 s for all 180 bin-methods at stride 1, hence the default
stride of 5 (one bin in five minutes, about 2.7 s). ``metrics.json`` records
``kwd_seconds``. The cost grows with (occupied tiles) x (tiles with estimated mass) per
bin; above ``kwd_max_pairs`` pooling bounds it (the demo, 4 hours on a larger grid,
would otherwise take over 15 minutes).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import RunFolderError
from sim.estimate.output import INTERNAL_ESTIMATES_FILE, PUBLISHED_ESTIMATES_FILE
from sim.io import atomic_path, read_table, write_json
from sim.runfolder import read_manifest
from validation.persons import score_persons

__all__ = [
    "DEFAULT_FLOOR",
    "DEFAULT_KWD_MAX_PAIRS",
    "DEFAULT_KWD_STRIDE",
    "METRICS",
    "SYSTEMS",
    "Joined",
    "RunFolderError",
    "compute_metrics",
    "compute_tables",
    "join_run",
    "kwd",
    "kwd_blocked",
    "score",
    "write_metrics",
]

#: Zone systems that have a truth counterpart.
SYSTEMS = ("grid", "segment", "area")
#: Truth floor (people) below which a zone-bin is left out of relative errors: the
#: privacy threshold, under which relative errors mean little.
DEFAULT_FLOOR = 30.0
#: Every how many bins the KWD is computed (1 = every bin).
DEFAULT_KWD_STRIDE = 5
#: Largest KWD problem (tiles with true mass x tiles with estimated mass) solved exactly,
#: about 0.1 s; the smoke scenario stays below it (at most ~1.1 million).
DEFAULT_KWD_MAX_PAIRS = 1_500_000
#: Every metric name, with the direction in which it is better ("low", "high", "zero").
METRICS: dict[str, str] = {
    "mae": "low",
    "rmse": "low",
    "bias": "zero",
    "mae_floor": "low",
    "mape": "low",
    "total_error_median_abs": "low",
    "total_error_mean": "zero",
    "peak_error_median_abs": "low",
    "peak_error_mean_abs": "low",
    "peak_time_error_median_abs_min": "low",
    "peak_time_error_mean_abs_min": "low",
    "coverage": "high",
    "coverage_floor": "high",
    "suppressed_share": "low",
    "mae_published": "low",
    "mape_published": "low",
    "suppression_cost_mae": "low",
    "mae_released": "low",
    "mape_released": "low",
    "release_cost_mae": "low",
    "noise_cost_mae": "low",
    "kwd_mean_m": "low",
    "kwd_median_m": "low",
    "kwd_pooled_share": "low",
}
#: Metrics that exist for the grid system only.
GRID_ONLY = frozenset({"kwd_mean_m", "kwd_median_m", "kwd_pooled_share"})


@dataclass(frozen=True, eq=False)
class Joined:
    """Truth and one method's estimates on one zone system, as bins x zones arrays.

    Attributes
    ----------
    method, system
        Method and zone system.
    zones
        Zone ids (columns).
    bins
        Bin starts, UTC (rows).
    bin_s
        Bin width (seconds).
    truth, estimate, lower, upper
        People per bin and zone (float64).
    suppressed
        Suppression mark per bin and zone.
    filled_estimates
        Zone-bins the estimates did not name (scored as estimate 0).
    released
        The published estimate per bin and zone (0 where withheld), or None when the
        system is not published or the run has no separate internal table.
    """

    method: str
    system: str
    zones: np.ndarray
    bins: pd.DatetimeIndex
    bin_s: float
    truth: np.ndarray
    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    suppressed: np.ndarray
    filled_estimates: int = 0
    released: np.ndarray | None = None

    def select_bins(self, keep: np.ndarray) -> Joined:
        """The same join restricted to the bins where `keep` is true."""
        return Joined(
            method=self.method,
            system=self.system,
            zones=self.zones,
            bins=self.bins[keep],
            bin_s=self.bin_s,
            truth=self.truth[keep],
            estimate=self.estimate[keep],
            lower=self.lower[keep],
            upper=self.upper[keep],
            suppressed=self.suppressed[keep],
            filled_estimates=self.filled_estimates,
            released=None if self.released is None else self.released[keep],
        )


# --------------------------------------------------------------------------- reading


_ESTIMATE_COLUMNS = (
    "method", "zone_system", "zone", "bin", "estimate", "lower", "upper", "suppressed",
)  # fmt: skip
#: Columns validation reads from each table of a run folder.
_REQUIRED = {
    "truth_zones.parquet": ("time", "system", "zone", "people"),
    PUBLISHED_ESTIMATES_FILE: _ESTIMATE_COLUMNS,
    INTERNAL_ESTIMATES_FILE: _ESTIMATE_COLUMNS,
}


def _read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise RunFolderError(
            f"{path}: missing. Validation needs a run folder written by `crowdsim run` "
            "(truth_zones.parquet, estimates.parquet, zones.gpkg and its manifest)."
        )
    return read_table(
        path, required=_REQUIRED.get(path.name, ()), error=RunFolderError, columns=columns
    )


def _zone_lists(run: Path) -> dict[str, list[str]]:
    path = run / "zones.gpkg"
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; the crowd stage writes it with the truth.")
    import pyogrio

    out: dict[str, list[str]] = {}
    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(path)}
        for system in SYSTEMS:
            if system in layers:
                frame = pyogrio.read_dataframe(path, layer=system, read_geometry=False)
                out[system] = [str(z) for z in frame["zone"]]
    except Exception as exc:  # GDAL errors come in several types
        raise RunFolderError(f"{path}: unreadable GeoPackage ({exc})") from exc
    return out


def tile_centroids(run_dir: str | os.PathLike[str]) -> dict[str, tuple[float, float]]:
    """Centroid (EPSG:31370 metres) of every grid tile of the run, by zone id."""
    import geopandas as gpd

    path = Path(run_dir) / "zones.gpkg"
    try:
        grid = gpd.read_file(path, layer="grid")
    except Exception as exc:
        raise RunFolderError(f"{path}: no readable 'grid' layer ({exc})") from exc
    c = grid.geometry.centroid
    return {str(z): (float(x), float(y)) for z, x, y in zip(grid["zone"], c.x, c.y, strict=True)}


def _bin_seconds(manifest: dict[str, Any], estimates: pd.DataFrame) -> float:
    try:
        return float(manifest["scenario"]["zones"]["bin_s"])
    except (KeyError, TypeError, ValueError):
        bins = np.sort(estimates["bin"].unique())
        if len(bins) < 2:
            raise RunFolderError(
                "the run's manifest: no scenario.zones.bin_s and a single estimated bin; "
                "cannot tell the bin width"
            ) from None
        return float(np.diff(bins).min() / np.timedelta64(1, "s"))


def join_run(
    run_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    systems: Sequence[str] = SYSTEMS,
) -> list[Joined]:
    """Join a run's truth and estimates, one :class:`Joined` per method and zone system.

    Parameters
    ----------
    run_dir
        A run folder written by ``crowdsim run``.
    methods
        Methods to join; None = every method in the estimates.
    systems
        Zone systems to join.

    Returns
    -------
    list of Joined
        In the order of the estimates' methods, then of `systems`; a method without
        estimates on a system is left out.

    Raises
    ------
    RunFolderError
        A needed file is missing or unreadable.
    """
    return list(_open_joins(Path(run_dir), methods=methods, systems=systems)[1])


def _open_joins(
    run: Path, *, methods: Sequence[str] | None, systems: Sequence[str]
) -> tuple[list[tuple[str, str, int]], Iterator[Joined]]:
    """The (method, system, bins) pairs :func:`join_run` joins, and their joins one by one.

    A grid's join holds several bins x zones arrays: a full run's methods together
    held a gigabyte, so the scoring takes them one at a time.
    """
    manifest = read_manifest(run)
    truth = _read_parquet(run / "truth_zones.parquet")
    # only the columns scored: these tables have a row per zone, bin and method
    estimates = _read_parquet(_internal_file(run), columns=list(_ESTIMATE_COLUMNS))
    published = (
        _read_parquet(run / PUBLISHED_ESTIMATES_FILE, columns=list(_ESTIMATE_COLUMNS[:5]))
        if (run / INTERNAL_ESTIMATES_FILE).is_file()
        else None
    )
    bin_s = _bin_seconds(manifest, estimates)
    zone_lists = _zone_lists(run)
    truth = truth.assign(  # categorical: the grid's 10^6-row truth is matched by codes
        bin=pd.to_datetime(truth["time"], utc=True) - pd.Timedelta(seconds=bin_s),
        system=truth["system"].astype("category"),
        zone=truth["zone"].astype("category"),
    )
    # categorical columns keep the 10^7-row table cheap: compare and index by codes
    estimates = estimates.assign(
        method=estimates["method"].astype("category"),
        zone_system=estimates["zone_system"].astype("category"),
        zone=estimates["zone"].astype("category"),
        bin=pd.to_datetime(estimates["bin"], utc=True),
    )
    known = [str(m) for m in estimates["method"].unique()]
    wanted = known if methods is None else [m for m in known if m in set(methods)]
    bins = estimates.groupby(["method", "zone_system"], observed=True)["bin"].nunique()
    have = {(str(m), str(z)): int(n) for (m, z), n in bins.items()}
    pairs = [(m, z, have[m, z]) for m in wanted for z in systems if (m, z) in have]

    def joins() -> Iterator[Joined]:
        for method, system, _ in pairs:
            est = estimates[(estimates["method"] == method) & (estimates["zone_system"] == system)]
            joined = _join_one(method, system, est, truth, zone_lists.get(system, []), bin_s)
            del est
            if published is not None:
                joined = _with_release(joined, published)
            yield joined

    return pairs, joins()


def _internal_file(run: Path) -> Path:
    """The table validation scores: the internal one, or the only one of an older run."""
    internal = run / INTERNAL_ESTIMATES_FILE
    return internal if internal.is_file() else run / PUBLISHED_ESTIMATES_FILE


def _with_release(joined: Joined, published: pd.DataFrame) -> Joined:
    """`joined` with the published estimates of its method and system (0 if withheld)."""
    pub = published[
        _equals(published["method"], joined.method)
        & _equals(published["zone_system"], joined.system)
    ]
    if pub.empty:
        return joined
    released = np.zeros_like(joined.estimate)
    bi = joined.bins.get_indexer(pd.to_datetime(pub["bin"], utc=True))
    zj = _positions(pd.Index(joined.zones.astype(str)), pub["zone"])
    ok = (bi >= 0) & (zj >= 0)
    values = np.nan_to_num(pub["estimate"].to_numpy(np.float64), nan=0.0)
    released[bi[ok], zj[ok]] = values[ok]
    return replace(joined, released=released)


def _equals(column: pd.Series, value: str) -> np.ndarray:
    """Rows of `column` whose text is `value`, by category codes when it is categorical.

    Turning a categorical column of tens of millions of rows into strings to compare it
    cost a full run's validation most of its time and gigabytes of memory.
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        hit = np.flatnonzero(column.cat.categories.astype(str) == value)
        return np.isin(column.cat.codes.to_numpy(), hit)
    return (column.astype(str) == value).to_numpy()


def _positions(index: pd.Index, column: pd.Series) -> np.ndarray:
    """Position in `index` of each row's text of `column` (-1 where absent or missing)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        where = index.get_indexer(column.cat.categories.astype(str))
        return np.where(codes >= 0, where[np.maximum(codes, 0)], -1)
    return index.get_indexer(column.astype(str))


def _join_one(
    method: str,
    system: str,
    est: pd.DataFrame,
    truth: pd.DataFrame,
    zone_list: list[str],
    bin_s: float,
) -> Joined:
    zone_cat = est["zone"].cat.remove_unused_categories()
    names = [str(z) for z in zone_cat.cat.categories]
    zones = pd.Index(list(dict.fromkeys([*zone_list, *names])))
    ej = zones.get_indexer(names)[zone_cat.cat.codes.to_numpy()]
    ei, bins = pd.factorize(est["bin"], sort=True)
    bins = pd.DatetimeIndex(bins)
    shape = (len(bins), len(zones))
    estimate = np.zeros(shape)
    lower = np.zeros(shape)
    upper = np.zeros(shape)
    suppressed = np.zeros(shape, dtype=bool)
    seen = np.zeros(shape, dtype=bool)
    estimate[ei, ej] = est["estimate"].to_numpy(np.float64)
    lower[ei, ej] = est["lower"].to_numpy(np.float64)
    upper[ei, ej] = est["upper"].to_numpy(np.float64)
    suppressed[ei, ej] = est["suppressed"].to_numpy(bool)
    seen[ei, ej] = True
    t = truth[truth["system"] == system]
    ti = bins.get_indexer(t["bin"])
    codes = t["zone"].cat.codes.to_numpy()
    tj = zones.get_indexer(t["zone"].cat.categories.astype(str))[np.maximum(codes, 0)]
    tj[codes < 0] = -1
    ok = (ti >= 0) & (tj >= 0)  # truth bins the method did not estimate are not scored
    counts = np.zeros(shape)
    np.add.at(counts, (ti[ok], tj[ok]), t["people"].to_numpy(np.float64)[ok])
    return Joined(
        method=method,
        system=system,
        zones=zones.to_numpy(dtype=object),
        bins=bins,
        bin_s=bin_s,
        truth=counts,
        estimate=estimate,
        lower=lower,
        upper=upper,
        suppressed=suppressed,
        filled_estimates=int((~seen).sum()),
    )


# --------------------------------------------------------------------------- metrics


def kwd(
    truth: np.ndarray,
    estimate: np.ndarray,
    xy: np.ndarray,
    *,
    max_pairs: int | None = None,
    block_m: float = 100.0,
) -> float:
    """Kantorovich-Wasserstein distance between two mass distributions over points.

    Parameters
    ----------
    truth, estimate
        Non-negative mass per point (any totals; each is normalised to 1).
    xy
        Point coordinates (n x 2, metres).
    max_pairs
        Largest cost matrix (points with true mass x points with estimated mass) solved
        exactly; above it both distributions are pooled into square blocks (side
        `block_m`, doubled until the matrix fits), each block's mass at its centre. None
        = always exact. See :func:`kwd_blocked` for the error this costs.
    block_m
        First block side tried when pooling (the grid's tile size is the natural one).

    Returns
    -------
    float
        The optimal transport cost with Euclidean ground distance (metres): the mean
        distance a unit of estimated mass travels to become the true distribution. NaN
        when either side has no mass.
    """
    return kwd_blocked(truth, estimate, xy, max_pairs=max_pairs, block_m=block_m)[0]


def kwd_blocked(
    truth: np.ndarray,
    estimate: np.ndarray,
    xy: np.ndarray,
    *,
    max_pairs: int | None = None,
    block_m: float = 100.0,
) -> tuple[float, float]:
    """:func:`kwd` and the block side it pooled into (0.0 = exact).

    Pooling moves every unit of mass by at most half a block diagonal, on each side, so
    the pooled distance is within ``sqrt(2) * block`` metres of the exact one.
    """
    import ot

    a_idx = np.flatnonzero(truth > 0)
    b_idx = np.flatnonzero(estimate > 0)
    if len(a_idx) == 0 or len(b_idx) == 0:
        return math.nan, 0.0
    a_xy, a = xy[a_idx], truth[a_idx]
    b_xy, b = xy[b_idx], estimate[b_idx]
    block = 0.0
    if max_pairs is not None and len(a) * len(b) > max_pairs:
        block = block_m
        while True:
            pa_xy, pa = _pool(a_xy, a, block)
            pb_xy, pb = _pool(b_xy, b, block)
            if len(pa) * len(pb) <= max_pairs or (len(pa) == 1 and len(pb) == 1):
                break
            block *= 2.0
        a_xy, a, b_xy, b = pa_xy, pa, pb_xy, pb
    cost = ot.dist(a_xy, b_xy, metric="euclidean")
    value = ot.emd2(a / a.sum(), b / b.sum(), cost, numItermax=10_000_000)
    return float(value), block


def _pool(xy: np.ndarray, mass: np.ndarray, block: float) -> tuple[np.ndarray, np.ndarray]:
    """Mass pooled into square blocks of side `block`, placed at the block centres."""
    keys = np.floor(xy / block).astype(np.int64)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    pooled = np.bincount(inverse.ravel(), weights=mass, minlength=len(uniq))
    return (uniq + 0.5) * block, pooled


def _nan_stat(values: np.ndarray, how: str) -> float:
    if values.size == 0:
        return math.nan
    return float(np.median(values) if how == "median" else np.mean(values))


def score(
    joined: Joined,
    *,
    floor: float = DEFAULT_FLOOR,
    kwd_stride: int = DEFAULT_KWD_STRIDE,
    kwd_max_pairs: int | None = DEFAULT_KWD_MAX_PAIRS,
    centroids: dict[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, tuple[float, int]], pd.DataFrame, pd.DataFrame]:
    """Every metric of one method on one zone system (definitions: module docstring).

    Parameters
    ----------
    joined
        The joined truth and estimates.
    floor
        Truth (people) from which a zone-bin enters the relative errors.
    kwd_stride
        Every how many bins the KWD is computed (grid only).
    kwd_max_pairs
        Largest exact KWD problem; larger bins are pooled into blocks (:func:`kwd`).
    centroids
        Grid tile centroids by zone id; needed for the KWD (None skips it).

    Returns
    -------
    metrics
        ``{name: (value, n)}``; NaN where there is nothing to compute it over.
    per_zone
        One row per zone: truth and estimated peak, their times, their errors, MAE.
    per_bin
        One row per bin: truth and estimated totals, relative total error, KWD (m).
    """
    if kwd_stride < 1:
        raise ValueError(f"kwd_stride must be >= 1, got {kwd_stride}")
    t, e = joined.truth, joined.estimate
    err = e - t
    n = int(t.size)
    above = t >= floor
    published = np.where(joined.suppressed, 0.0, e)
    inside = (joined.lower <= t) & (t <= joined.upper)
    m: dict[str, tuple[float, int]] = {}

    def mean_over(x: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
        x = x if mask is None else x[mask]
        return (float(x.mean()) if x.size else math.nan, int(x.size))

    m["mae"] = mean_over(np.abs(err))
    m["rmse"] = (math.sqrt(float((err**2).mean())) if n else math.nan, n)
    m["bias"] = mean_over(err)
    m["mae_floor"] = mean_over(np.abs(err), above)
    with np.errstate(divide="ignore", invalid="ignore"):
        ape = np.abs(err) / t
        ape_pub = np.abs(published - t) / t
    m["mape"] = mean_over(ape, above)
    # totals per bin
    tt, et = t.sum(axis=1), e.sum(axis=1)
    has = tt > 0
    rel_total = np.full(len(tt), math.nan)
    rel_total[has] = (et[has] - tt[has]) / tt[has]
    m["total_error_median_abs"] = (_nan_stat(np.abs(rel_total[has]), "median"), int(has.sum()))
    m["total_error_mean"] = (_nan_stat(rel_total[has], "mean"), int(has.sum()))
    # peaks per zone
    peak_t, peak_e = t.max(axis=0, initial=0.0), e.max(axis=0, initial=0.0)
    when_t = t.argmax(axis=0) if len(t) else np.zeros(t.shape[1], np.int64)
    when_e = e.argmax(axis=0) if len(e) else np.zeros(t.shape[1], np.int64)
    peaked = peak_t >= floor
    with np.errstate(divide="ignore", invalid="ignore"):
        peak_rel = np.where(peaked, (peak_e - peak_t) / peak_t, math.nan)
    dt_min = (when_e - when_t) * joined.bin_s / 60.0
    k = int(peaked.sum())
    m["peak_error_median_abs"] = (_nan_stat(np.abs(peak_rel[peaked]), "median"), k)
    m["peak_error_mean_abs"] = (_nan_stat(np.abs(peak_rel[peaked]), "mean"), k)
    m["peak_time_error_median_abs_min"] = (_nan_stat(np.abs(dt_min[peaked]), "median"), k)
    m["peak_time_error_mean_abs_min"] = (_nan_stat(np.abs(dt_min[peaked]), "mean"), k)
    # intervals, suppression
    m["coverage"] = mean_over(inside.astype(float))
    m["coverage_floor"] = mean_over(inside.astype(float), above)
    m["suppressed_share"] = mean_over(joined.suppressed.astype(float))
    m["mae_published"] = mean_over(np.abs(published - t))
    m["mape_published"] = mean_over(ape_pub, above)
    m["suppression_cost_mae"] = (m["mae_published"][0] - m["mae"][0], n)
    if joined.released is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ape_rel = np.abs(joined.released - t) / t
        m["mae_released"] = mean_over(np.abs(joined.released - t))
        m["mape_released"] = mean_over(ape_rel, above)
        m["release_cost_mae"] = (m["mae_released"][0] - m["mae"][0], n)
        m["noise_cost_mae"] = (m["mae_released"][0] - m["mae_published"][0], n)
    # KWD on the grid
    kwd_bins = np.full(len(tt), math.nan)
    kwd_block = np.full(len(tt), math.nan)
    if joined.system == "grid" and centroids is not None:
        xy = np.array([centroids.get(str(z), (math.nan, math.nan)) for z in joined.zones])
        known = ~np.isnan(xy).any(axis=1)
        xs = np.unique(xy[known, 0])
        tile = float(np.diff(xs).min()) if len(xs) > 1 else 100.0
        for b in range(0, len(tt), kwd_stride):
            kwd_bins[b], kwd_block[b] = kwd_blocked(
                t[b, known], e[b, known], xy[known], max_pairs=kwd_max_pairs, block_m=2 * tile
            )
        done = kwd_bins[~np.isnan(kwd_bins)]
        m["kwd_mean_m"] = (_nan_stat(done, "mean"), int(done.size))
        m["kwd_median_m"] = (_nan_stat(done, "median"), int(done.size))
        pooled = kwd_block[~np.isnan(kwd_bins)]
        m["kwd_pooled_share"] = (_nan_stat((pooled > 0).astype(float), "mean"), int(done.size))
    per_zone = pd.DataFrame(
        {
            "zone": joined.zones.astype(str),
            "peak_truth": peak_t,
            "peak_estimate": peak_e,
            "peak_error": peak_rel,
            "peak_time_truth": joined.bins[when_t] if len(t) else pd.NaT,
            "peak_time_estimate": joined.bins[when_e] if len(e) else pd.NaT,
            "peak_time_error_min": dt_min,
            "mae": np.abs(err).mean(axis=0) if len(t) else math.nan,
        }
    )
    per_bin = pd.DataFrame(
        {
            "bin": joined.bins,
            "truth_total": tt,
            "estimate_total": et,
            "total_error": rel_total,
            "kwd_m": kwd_bins,
            "kwd_block_m": kwd_block,
        }
    )
    return m, per_zone, per_bin


def window_mask(
    bins: pd.DatetimeIndex, window: tuple[str, str], *, timezone: str, bin_s: float
) -> np.ndarray:
    """Bins lying entirely inside a local-time window ``(start, end)``, "HH:MM" each.

    A bin is kept when its start (local time of day) is >= start and its end <= end.
    """
    start, end = (pd.Timedelta(f"{w}:00" if w.count(":") == 1 else w) for w in window)
    if end <= start:
        raise ValueError(f"window {list(window)}: the end must be after the start")
    local = bins.tz_convert(timezone)
    of_day = local - local.normalize()
    width = pd.Timedelta(seconds=bin_s)
    return np.asarray((of_day >= start) & (of_day + width <= end))


def compute_tables(
    run_dir: str | os.PathLike[str],
    *,
    floor: float = DEFAULT_FLOOR,
    kwd_stride: int = DEFAULT_KWD_STRIDE,
    kwd_max_pairs: int | None = DEFAULT_KWD_MAX_PAIRS,
    kwd_max_bins: int | None = None,
    window: tuple[str, str] | None = None,
    methods: Sequence[str] | None = None,
    systems: Sequence[str] = SYSTEMS,
    kwd: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Score every method of a run on every zone system, with per-zone and per-bin tables.

    Writes nothing.

    Parameters
    ----------
    run_dir
        A run folder written by ``crowdsim run``.
    floor
        Truth (people) from which a zone-bin enters relative errors (MAPE, peaks).
    kwd_stride
        Every how many bins the KWD is computed (1 = every bin).
    kwd_max_pairs
        Largest exact KWD problem; larger bins are pooled into blocks (:func:`kwd`).
    kwd_max_bins
        If given, the stride is raised so that at most this many bins per method get a
        KWD (long runs); ``kwd_stride`` in the summary is the stride used.
    window
        ``("HH:MM", "HH:MM")`` in the event's local time: score only the bins inside it.
    methods, systems
        Restrict the scoring (None = every method).
    kwd
        Compute the KWD (the only costly metric).

    Returns
    -------
    metrics
        One row per method x zone system x metric: method, zone_system, metric, value, n.
    per_zone
        One row per method x zone system x zone (peaks, their times and errors, MAE).
    per_bin
        One row per method x zone system x bin (totals, total error, KWD in metres).
    summary
        ``metrics.json`` content: scenario, options, the join, ``{method: {system:
        {metric: value}}}``, and what was not scored.

    Raises
    ------
    RunFolderError
        The run folder lacks a file or holds an unreadable one.
    """
    run = Path(run_dir)
    manifest = read_manifest(run)
    scenario = manifest["scenario"]
    timezone = str(scenario.get("event", {}).get("timezone", "UTC"))
    pairs, joins = _open_joins(run, methods=methods, systems=systems)  # one at a time
    grid = kwd and any(system == "grid" for _, system, _ in pairs)
    centroids = tile_centroids(run) if grid else None
    rows: list[dict[str, Any]] = []
    zones_frames, bins_frames = [], []
    nested: dict[str, dict[str, dict[str, float | None]]] = {}
    kwd_seconds = 0.0
    filled = 0
    if kwd_max_bins is not None and pairs:
        n_bins = max(n for _, _, n in pairs)
        kwd_stride = max(kwd_stride, math.ceil(n_bins / max(kwd_max_bins, 1)))
    for j in joins:
        filled += j.filled_estimates
        if window is not None:
            j = j.select_bins(window_mask(j.bins, window, timezone=timezone, bin_s=j.bin_s))
        t0 = time.perf_counter()
        values, per_zone, per_bin = score(
            j, floor=floor, kwd_stride=kwd_stride, kwd_max_pairs=kwd_max_pairs, centroids=centroids
        )
        if j.system == "grid":
            kwd_seconds += time.perf_counter() - t0
        for name, (value, n) in values.items():
            rows.append(
                {"method": j.method, "zone_system": j.system, "metric": name,
                 "value": value, "n": n}
            )  # fmt: skip
        nested.setdefault(j.method, {})[j.system] = {
            name: _json_number(v) for name, (v, _) in values.items()
        }
        zones_frames.append(per_zone.assign(method=j.method, zone_system=j.system))
        bins_frames.append(per_bin.assign(method=j.method, zone_system=j.system))
    table = pd.DataFrame(rows, columns=["method", "zone_system", "metric", "value", "n"])
    estimated = _estimated_pairs(run)
    unscored = sorted(f"{m}/{s}" for m, s in estimated if s not in SYSTEMS)
    summary = {
        "scenario": scenario.get("name"),
        "seed": manifest.get("seed"),
        "floor": floor,
        "kwd_stride": kwd_stride,
        "kwd_max_pairs": kwd_max_pairs,
        "window": list(window) if window else None,
        "join": (
            "truth (bin end, local) moved to its bin start (UTC) and matched on zone and "
            "bin; zones = zones.gpkg + estimated zones, bins = estimated bins; zone-bins "
            "absent from the truth count 0"
        ),
        "filled_estimates": int(filled),
        "unscored": unscored,
        "kwd_seconds": round(kwd_seconds, 3),
        "metrics": nested,
    }
    return table, _front(zones_frames), _front(bins_frames), summary


def compute_metrics(
    run_dir: str | os.PathLike[str],
    *,
    floor: float = DEFAULT_FLOOR,
    kwd_stride: int = DEFAULT_KWD_STRIDE,
    kwd_max_pairs: int | None = DEFAULT_KWD_MAX_PAIRS,
    window: tuple[str, str] | None = None,
    methods: Sequence[str] | None = None,
    systems: Sequence[str] = SYSTEMS,
    kwd: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every method of a run on every zone system; write nothing.

    The metrics table and summary of :func:`compute_tables` (same parameters), without
    the per-zone and per-bin tables.

    Returns
    -------
    metrics
        One row per method x zone system x metric: method, zone_system, metric, value, n.
    summary
        ``metrics.json`` content.
    """
    table, _, _, summary = compute_tables(
        run_dir,
        floor=floor,
        kwd_stride=kwd_stride,
        kwd_max_pairs=kwd_max_pairs,
        window=window,
        methods=methods,
        systems=systems,
        kwd=kwd,
    )
    return table, summary


def _estimated_pairs(run: Path) -> list[tuple[str, str]]:
    est = read_table(
        _internal_file(run),
        required=(),
        columns=["method", "zone_system"],
        error=RunFolderError,
    )
    est = est.astype({"method": "category", "zone_system": "category"})
    pairs = est.groupby(["method", "zone_system"], observed=True, sort=False).size().index
    return [(str(m), str(z)) for m, z in pairs]


def _front(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    first = ["method", "zone_system"]
    return out[first + [c for c in out.columns if c not in first]]


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def write_metrics(
    run_dir: str | os.PathLike[str],
    *,
    floor: float = DEFAULT_FLOOR,
    kwd_stride: int = DEFAULT_KWD_STRIDE,
    kwd_max_bins: int | None = None,
) -> tuple[list[Path], dict[str, Any]]:
    """Score a run and write its metrics into the run folder, atomically.

    Writes ``metrics.parquet`` (method, zone_system, metric, value, n),
    ``metrics_zones.parquet`` (per zone: peaks, their times and errors, MAE),
    ``metrics_bins.parquet`` (per bin: totals, total error, KWD) and ``metrics.json``
    (the summary of :func:`compute_metrics`, with ``persons``: the people among the
    operator's devices, true, by the fixed factor and, when the run deduplicated (its
    ``duplicity.parquet``), by deduplication, :func:`validation.persons.score_persons`).
    A run without deduplication is not deduplicated here: computing it from the records
    took 337 s of the 374 s of a full team-time-trial run's validation;
    ``score_persons(run)`` does it on demand.

    Parameters
    ----------
    run_dir
        A run folder written by ``crowdsim run``.
    floor, kwd_stride, kwd_max_bins
        As in :func:`compute_tables`.

    Returns
    -------
    paths, summary
        The files written and the summary.
    """
    run = Path(run_dir)
    table, per_zone, per_bin, summary = compute_tables(
        run, floor=floor, kwd_stride=kwd_stride, kwd_max_bins=kwd_max_bins
    )
    # None for a run without truth_devices.parquet; dedup figures only if the run has them
    persons = score_persons(run, compute=False)
    if persons is not None:
        summary["persons"] = persons
    written = []
    for name, frame in (
        ("metrics", table),
        ("metrics_zones", per_zone),
        ("metrics_bins", per_bin),
    ):
        dest = run / f"{name}.parquet"
        with atomic_path(dest) as tmp:
            frame.to_parquet(tmp, index=False)
        written.append(dest)
    written.append(write_json(summary, run / "metrics.json"))
    return written, summary
