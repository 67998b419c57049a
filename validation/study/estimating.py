"""Each variant's estimates from a finished run's operator files, scored against its truth.

The expensive part of a run (crowd and network) is done once per seed by the sweep; here
the estimators run again from the run folder alone, as the run's estimators stage does
(:func:`sim.run._estimators_stage`): ``records.parquet``, ``cell_load.parquet`` and
``network_plan.json`` on the operator's side, the zone systems from ``zones.gpkg`` and
the run's own ``estimators`` seed stream. A variant whose method and options equal the
run's gives the run's own estimates, value for value (a test checks it).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim import runfolder
from sim.errors import RunFolderError
from sim.io import atomic_path, write_json
from sim.run import seed_sequences
from sim.runfolder import RunFolder
from validation.metrics import (
    DEFAULT_KWD_MAX_PAIRS,
    DEFAULT_KWD_STRIDE,
    SYSTEMS,
    compute_tables,
    join_run,
    score,
    tile_centroids,
)
from validation.study.spec import StudyError, Variant, variant_config

__all__ = ["FLAT", "OperatorData", "RunScores", "read_operator_data", "score_variants"]

#: Label of the reference a flat estimate gives (Ricciato & Coluccia's "flat" baseline):
#: the true total spread evenly over every grid tile, so only its KWD means anything.
FLAT = "flat (reference)"
#: Files of the run the variants are made from and scored against.
_LINKED = (runfolder.MANIFEST, runfolder.TRUTH_ZONES, runfolder.ZONES)
#: The run's files a score depends on (their SHA-256 from the manifest key the cache).
_INPUTS = (
    runfolder.RECORDS,
    runfolder.CELL_LOAD,
    runfolder.NETWORK_PLAN,
    runfolder.TRUTH_ZONES,
    runfolder.ZONES,
    runfolder.SCENARIO,
    runfolder.EVENT_PUBLIC,
)
#: A cached score: its tables, and the key file written last.
_PARTS = ("metrics", "zones", "bins")
_KEY_FILE = "key.json"
_FLAT_DIR = "_flat"
_SCRATCH = "_scratch"


@dataclass(eq=False)
class OperatorData:
    """What the estimators of one run read: the operator's files, zones, bins and seed."""

    folder: RunFolder
    records: pd.DataFrame
    counters: pd.DataFrame
    plan: Any  # sim.network.plan.NetworkPlan
    zones: dict[str, Any]  # zone system -> GeoDataFrame (zone, geometry)
    bins: pd.DatetimeIndex
    seed: np.random.SeedSequence


@dataclass(eq=False)
class RunScores:
    """Every variant of one run, scored: long tables and the seconds each part took."""

    metrics: pd.DataFrame  # variant, method, zone_system, metric, value, n
    per_zone: pd.DataFrame  # segment and area systems: peaks, their times and errors
    per_bin: pd.DataFrame  # totals per bin, their error, KWD
    #: per variant, estimate_s and score_s (as they were when computed, for kept scores)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


def read_operator_data(folder: RunFolder) -> OperatorData:
    """Read what the estimators of `folder` need, as its estimators stage read it.

    Raises
    ------
    RunFolderError
        A file is missing or unreadable.
    """
    import geopandas as gpd
    import pyogrio

    from sim.estimate import period_bins
    from sim.network.plan import NetworkPlan

    path = folder.path
    for name in (runfolder.RECORDS, runfolder.CELL_LOAD, runfolder.NETWORK_PLAN, *_LINKED):
        if not (path / name).is_file():
            raise RunFolderError(f"{path / name}: missing; the study needs a whole run folder")
    plan = NetworkPlan.from_json(path / runfolder.NETWORK_PLAN)
    zones_file = path / runfolder.ZONES
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(zones_file)]
        zones = {s: gpd.read_file(zones_file, layer=s) for s in SYSTEMS if s in layers}
    except Exception as exc:  # GDAL errors come in several types
        raise RunFolderError(f"{zones_file}: unreadable GeoPackage ({exc})") from exc
    seed = np.random.SeedSequence(int(folder.seed or 0), spawn_key=folder.spawn_key)
    return OperatorData(
        folder=folder,
        records=pd.read_parquet(path / runfolder.RECORDS),
        counters=pd.read_parquet(path / runfolder.CELL_LOAD),
        plan=plan,
        zones=zones,
        bins=period_bins(plan, bin_s=folder.scenario.zones.bin_s),
        seed=seed,
    )


def _estimate(data: OperatorData, variant: Variant) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The internal and published tables of `variant` on `data`, method named by label."""
    from sim.estimate import release_estimates

    scenario = data.folder.scenario
    cfg = variant_config(scenario.estimators, variant, where=f"variant {variant.label!r}")
    release = release_estimates(
        data.records,
        data.plan,
        data.zones,
        data.bins,
        cfg,
        counters=data.counters,
        random_state=np.random.default_rng(seed_sequences(data.seed)["estimators"]),
        mode=cfg.mode,
        timezone=scenario.event.timezone,
        share_error=cfg.share_error,
        phones_error=cfg.phones_error,
        public=data.folder.out_dir / runfolder.EVENT_PUBLIC,
    )
    return _relabel(release.internal, variant.label), _relabel(release.published, variant.label)


def _relabel(table: pd.DataFrame, label: str) -> pd.DataFrame:
    """`table` with its method column replaced by the variant's label."""
    return table.assign(method=pd.Categorical.from_codes(np.zeros(len(table), np.int8), [label]))


def nominal_confidence(folder: RunFolder, variant: Variant) -> float:
    """The level the variant's intervals state (coverage is judged against it)."""
    from sim.estimate import make_estimators

    cfg = variant_config(folder.scenario.estimators, variant)
    (estimator,) = make_estimators(cfg, mode=cfg.mode)
    return float(estimator.get_params().get("confidence", 0.95))


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not allowed: a copy does as well
        shutil.copy2(src, dest)


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 of the code a variant's scores depend on: estimators, plan, metrics, this.

    Part of every cached score's key, so changing an estimator (or the scoring) makes the
    next study compute its scores again.
    """
    root = Path(__file__).resolve().parents[2]
    files = [
        *sorted((root / "sim" / "estimate").rglob("*.py")),
        root / "sim" / "network" / "plan.py",
        root / "sim" / "network" / "propagation.py",
        root / "validation" / "metrics.py",
        Path(__file__).resolve(),
    ]
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _key(folder: RunFolder, what: dict[str, Any]) -> str:
    """The key of one cached score: the run's files, the code, and `what` is scored."""
    files = folder.manifest.get("files") or {}
    record = {
        "run": {name: (files.get(name) or {}).get("sha256") for name in _INPUTS},
        "seed": [folder.seed, list(folder.spawn_key)],
        "code": code_fingerprint(),
        **what,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _read_cached(entry: Path, key: str) -> tuple[list[pd.DataFrame], dict[str, float]] | None:
    """A kept score's tables and the seconds it took, if its key is `key`."""
    try:
        record = json.loads((entry / _KEY_FILE).read_text(encoding="utf-8"))
        if record.get("key") != key:
            return None
        frames = [pd.read_parquet(entry / f"{name}.parquet") for name in _PARTS]
        return frames, dict(record.get("seconds") or {})
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # absent, damaged, or of other code: scored again


def _write_cached(
    entry: Path, key: str, frames: Sequence[pd.DataFrame], seconds: dict[str, float]
) -> None:
    """Store one score: the tables first, the key last (a key means a whole entry)."""
    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    for name, frame in zip(_PARTS, frames, strict=True):
        with atomic_path(entry / f"{name}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    write_json({"key": key, "seconds": seconds}, entry / _KEY_FILE)


def score_variants(
    folder: RunFolder,
    variants: Sequence[Variant],
    work: Path,
    *,
    floor: float,
    kwd_max_bins: int,
    reuse: bool = True,
) -> RunScores:
    """Estimate and score every variant on one run; add the flat reference's KWD.

    Each variant's tables are written into a scratch folder of `work` beside links to the
    run's manifest, truth and zones, scored there with
    :func:`validation.metrics.compute_tables` (the scoring of every run), and removed.
    The scores are kept in ``work/<label>/`` under a key of the run's files, the
    variant's resolved ``[estimators]``, the scoring options and the code
    (:func:`code_fingerprint`); with `reuse`, a score whose key matches is read back
    instead of computed, so a variant added to a study costs only its own estimates.

    Raises
    ------
    StudyError
        A variant gives no estimate on any zone system the truth has (a method counting
        per cell only, like ``presence``).
    """
    scoring = {"floor": floor, "kwd_max_bins": kwd_max_bins}
    flat_key = _key(folder, {"flat": True, **scoring})
    kept_flat = _read_cached(work / _FLAT_DIR, flat_key) if reuse else None
    flat = None if kept_flat is None else kept_flat[0]
    data: OperatorData | None = None
    out = RunScores(metrics=pd.DataFrame(), per_zone=pd.DataFrame(), per_bin=pd.DataFrame())
    parts: list[list[pd.DataFrame]] = []
    for variant in variants:
        cfg = variant_config(folder.scenario.estimators, variant)
        key = _key(folder, {"method": variant.method, "config": cfg.model_dump(), **scoring})
        kept = _read_cached(work / variant.label, key) if reuse else None
        # without a kept flat reference, the first grid variant is scored again for it
        if kept is not None and (flat is not None or not _has_grid(kept[0][0])):
            parts.append(kept[0])
            out.seconds[variant.label] = kept[1]
            out.reused.append(variant.label)
            continue
        data = data or read_operator_data(folder)
        t0 = time.perf_counter()
        internal, published = _estimate(data, variant)
        t1 = time.perf_counter()
        frames, flat_rows = _score(
            data,
            variant,
            internal,
            published,
            work / _SCRATCH,
            floor,
            kwd_max_bins,
            want_flat=flat is None,
        )
        seconds = {
            "estimate_s": round(t1 - t0, 3),
            "score_s": round(time.perf_counter() - t1, 3),
        }
        out.seconds[variant.label] = seconds
        _write_cached(work / variant.label, key, frames, seconds)
        if flat_rows is not None:
            flat = [flat_rows, _no_rows(), _no_rows()]
            _write_cached(work / _FLAT_DIR, flat_key, flat, {})
        parts.append(frames)
    shutil.rmtree(work / _SCRATCH, ignore_errors=True)
    if flat is not None:
        parts.append(flat)
    out.metrics = pd.concat([p[0] for p in parts], ignore_index=True)
    out.per_zone = pd.concat([p[1] for p in parts if len(p[1])], ignore_index=True)
    out.per_bin = pd.concat([p[2] for p in parts if len(p[2])], ignore_index=True)
    return out


def _has_grid(metrics: pd.DataFrame) -> bool:
    return bool((metrics["zone_system"] == "grid").any())


def _no_rows() -> pd.DataFrame:
    return pd.DataFrame({"variant": pd.Series(dtype="string")})


def _score(
    data: OperatorData,
    variant: Variant,
    internal: pd.DataFrame,
    published: pd.DataFrame,
    scratch: Path,
    floor: float,
    kwd_max_bins: int,
    *,
    want_flat: bool,
) -> tuple[list[pd.DataFrame], pd.DataFrame | None]:
    """One variant's metrics, per-zone and per-bin tables; the flat rows if wanted."""
    from sim.estimate import write_release

    where = scratch / variant.label
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    flat_rows = None
    try:
        for name in _LINKED:
            _link(data.folder.path / name, where / name)
        write_release(internal, published, where)
        table, per_zone, per_bin, summary = compute_tables(
            where, floor=floor, kwd_max_bins=kwd_max_bins
        )
        if table.empty:
            raise StudyError(
                f"variant {variant.label!r} (method {variant.method!r}) estimates no zone "
                f"system the truth counts ({', '.join(SYSTEMS)}): nothing to score. A "
                "method counting per cell (presence) cannot be compared with the truth; "
                "remove it from the variants file."
            )
        if want_flat and _has_grid(table):
            flat_rows = _flat(where, variant.label, floor, summary).assign(
                variant=FLAT, method="flat"
            )
    finally:
        shutil.rmtree(where, ignore_errors=True)
    keep = per_zone["zone_system"].isin(["segment", "area"])
    frames = [
        table.assign(variant=variant.label, method=variant.method),
        per_zone[keep].assign(variant=variant.label, method=variant.method),
        per_bin.assign(variant=variant.label, method=variant.method),
    ]
    return frames, flat_rows


def _flat(where: Path, label: str, floor: float, summary: dict[str, Any]) -> pd.DataFrame:
    """KWD rows of the flat reference on the grid, on the bins the variants' KWD used."""
    (joined,) = join_run(where, methods=[label], systems=("grid",))
    flat = np.broadcast_to(
        joined.truth.sum(axis=1, keepdims=True) / max(joined.truth.shape[1], 1),
        joined.truth.shape,
    )
    joined = dataclasses.replace(joined, method=FLAT, estimate=flat, lower=flat, upper=flat)
    values, _, _ = score(
        joined,
        floor=floor,
        kwd_stride=int(summary.get("kwd_stride", DEFAULT_KWD_STRIDE)),
        kwd_max_pairs=DEFAULT_KWD_MAX_PAIRS,
        centroids=tile_centroids(where),
    )
    rows = [
        {"method": FLAT, "zone_system": "grid", "metric": name, "value": v, "n": n}
        for name, (v, n) in values.items()
        if name.startswith("kwd_")
    ]
    return pd.DataFrame(rows)
