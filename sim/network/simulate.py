"""The network stage: build the estimating operator's network and let the crowd use it.

Puts together what :mod:`plan`, :mod:`radio`, :mod:`devices` and :mod:`signalling`
provide: the plan (from a cell file or generated over the study area), the true
coverage, every person's phones, and the signalling engine, which is then fed the
crowd's positions tick by tick. Writes ``records.parquet``, ``cell_load.parquet``,
``network_plan.json``, ``cells.gpkg`` and the coverage figures.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sim.network.devices import Devices, assign_devices
from sim.network.owners import device_truth, write_device_truth
from sim.network.plan import NetworkPlan, add_event_cells, generate_cells, read_cells_csv
from sim.network.pseudonyms import draw_secret
from sim.network.radio import RadioEnvironment, build_radio
from sim.network.signalling import Signalling, SignallingConfig
from sim.scenario import EventConfig, NetworkConfig
from sim.streets import to_metres

__all__ = ["NetworkRun", "Snapshot", "build_network", "race_burst"]


class Snapshot(Protocol):
    """Where everybody is at one tick (the crowd's ``PositionSnapshot``)."""

    t_s: float
    x: np.ndarray
    y: np.ndarray
    present: np.ndarray
    spectator: np.ndarray


@dataclass(eq=False)
class NetworkRun:
    """The built network and its signalling engine."""

    plan: NetworkPlan
    radio: RadioEnvironment
    devices: Devices
    signalling: Signalling
    seconds: dict[str, float]

    def observe(self, snapshots: Iterable[Snapshot]) -> int:
        """Feed the crowd's positions, tick by tick; return the number of ticks.

        A snapshot's ``t_s`` is the end of the tick it describes (the crowd's convention:
        after its first step, ``t_s`` is one step); the tick's procedures happen during it.
        """
        n = 0
        dt = self.signalling.dt
        for snap in snapshots:
            self.signalling.step(snap.t_s - dt, snap.x, snap.y, snap.present)
            n += 1
        self.signalling.finish()
        return n

    def summary(self) -> dict[str, Any]:
        """Figures for the manifest."""
        raw = self.signalling.raw_records()
        return {
            "operator": self.plan.operator,
            "cells": self.plan.n_cells,
            "sites": int(self.plan.cells["site_id"].nunique()),
            "tracking_areas": int(self.plan.cells["tracking_area"].nunique()),
            "devices_all_operators": len(self.devices),
            "devices_simulated": len(self.signalling.owner),
            "covered_share": round(self.radio.covered_share, 4),
            "procedures": len(raw["t_s"]),
            "messages": int(self.signalling.msgs[raw["procedure"]].sum()),
            "rejected": int((raw["outcome"] == 1).sum()),
            "dropped": int((raw["outcome"] == 2).sum()),
            "unreachable_device_ticks": self.signalling.unreachable_device_ticks,
        }


def race_burst(event: EventConfig, *, ramp_min: float = 30.0) -> Callable[[float], float]:
    """Weight in [0, 1] of the spectators' burst of phone use, by seconds since start.

    1 from the caravan (or the first start) until the last team finishes, with linear
    ramps of `ramp_min` on both sides; 0 without a race timetable.
    """
    if event.race is None:
        return lambda t: 0.0
    origin = dt.datetime.combine(event.date, event.start)
    first = dt.datetime.combine(event.date, event.race.caravan or event.race.first_start)
    last = event.race.end_time(event.date)  # last team finished (ttt), race over (road)
    a = (first - origin).total_seconds()
    b = (last - origin).total_seconds()
    ramp = ramp_min * 60.0

    def weight(t_s: float) -> float:
        return float(np.clip(min((t_s - a + ramp) / ramp, (b + ramp - t_s) / ramp), 0.0, 1.0))

    return weight


def build_network(
    config: NetworkConfig,
    extent: tuple[float, float, float, float],
    *,
    event: EventConfig,
    n_people: int,
    spectator: np.ndarray,
    rng: np.random.Generator,
    centre: tuple[float, float] | None = None,
    dt_s: float,
    signalling: SignallingConfig | None = None,
    tracking_area_m: float = 5000.0,
    pixel_m: float = 25.0,
    shadowing_db: float = 7.0,
    decorrelation_m: float = 50.0,
) -> NetworkRun:
    """Build the plan, the true coverage, the phones and the signalling engine.

    Parameters
    ----------
    config
        The scenario's ``[network]`` section.
    extent
        Study area (xmin, ymin, xmax, ymax), EPSG:31370 metres.
    event
        The event (start time, race timetable for the burst of use).
    n_people, spectator
        Number of people in the crowd, and which of them are spectators.
    rng
        The network subsystem's generator (every draw of this stage comes from it).
    centre
        Where the network is densest (default: the middle of the extent).
    dt_s
        Seconds per tick of the crowd.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if config.sites_file is not None:
        cells = read_cells_csv(config.sites_file, operator=config.estimating_operator,
                               extent=extent, tracking_area_m=tracking_area_m)  # fmt: skip
    else:
        cells = generate_cells(extent, rng=rng, centre=centre,
                               isd_centre_m=config.inter_site_distance_m,
                               tracking_area_m=tracking_area_m)  # fmt: skip
    if config.event_cells:
        ex, ey = to_metres([c.lon for c in config.event_cells], [c.lat for c in config.event_cells])
        for cell_cfg, x, y in zip(config.event_cells, ex, ey, strict=True):
            cells = add_event_cells(cells, [x], [y], power_dbm=cell_cfg.power_dbm,
                                    height_m=cell_cfg.height_m)  # fmt: skip
    start = pd.Timestamp(event.start_datetime).tz_convert("UTC")
    end = pd.Timestamp(event.end_datetime).tz_convert("UTC")
    plan = NetworkPlan(
        operator=config.estimating_operator,
        cells=cells,
        market_share=config.market_shares[config.estimating_operator],
        phones_per_person=config.phone_ownership * (1.0 + config.second_device),
        period=(start.isoformat(), end.isoformat()),
    )
    seconds["plan_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    radio = build_radio(plan, extent, rng=rng, pixel_m=pixel_m, shadowing_db=shadowing_db,
                        decorrelation_m=decorrelation_m)  # fmt: skip
    seconds["coverage_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    devices = assign_devices(n_people, rng=rng, market_shares=config.market_shares,
                             ownership=config.phone_ownership,
                             second_device=config.second_device)  # fmt: skip
    mine = devices.of(config.estimating_operator)
    engine = Signalling(
        devices.owner[mine], devices.activity[mine], np.asarray(spectator)[devices.owner[mine]],
        plan=plan, radio=radio, rng=rng, start=start, dt_s=dt_s, burst=race_burst(event),
        config=signalling, timezone=event.timezone,
    )  # fmt: skip
    seconds["devices_s"] = time.perf_counter() - t0
    return NetworkRun(plan=plan, radio=radio, devices=devices, signalling=engine, seconds=seconds)


def write_network_outputs(
    run: NetworkRun, out_dir: Path, *, salt: np.random.Generator, dpi: int = 110
) -> list[Path]:
    """Write records, cell load, the plan and the coverage figures; return the paths.

    Also the owners of the records' devices (``truth_devices.parquet``, ground truth for
    scoring deduplication; :mod:`sim.network.owners`), with the records' pseudonyms.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sim.io import atomic_path

    secret = draw_secret(salt)
    written = []
    dest = out_dir / "records.parquet"
    with atomic_path(dest) as tmp:  # chunk by chunk: the records never exist whole as a table
        writer = None
        try:
            for frame in run.signalling.iter_records(secret=secret):
                table = pa.Table.from_pandas(frame, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    written.append(dest)
    dest = out_dir / "cell_load.parquet"
    with atomic_path(dest) as tmp:
        run.signalling.cell_load().to_parquet(tmp, index=False)
    written.append(dest)
    written.append(write_owners(run, out_dir, secret=secret))
    written.append(run.plan.to_json(out_dir / "network_plan.json"))
    written.append(_cells_geopackage(run.plan, out_dir / "cells.gpkg"))
    written.extend(plot_coverage(run, out_dir, dpi=dpi))
    return written


def write_owners(run: NetworkRun, out_dir: Path, *, secret: bytes) -> Path:
    """Write who carries each device of the records (:mod:`sim.network.owners`)."""
    from sim.runfolder import TRUTH_DEVICES

    eng = run.signalling
    phones = np.bincount(run.devices.owner, minlength=int(eng.owner.max(initial=-1)) + 1)
    truth = device_truth(eng.raw_records()["device"], eng.record_times(), eng.owner, phones,
                         secret=secret, timezone=eng.timezone)  # fmt: skip
    return write_device_truth(truth, out_dir / TRUTH_DEVICES)


def _cells_geopackage(plan: NetworkPlan, dest: Path) -> Path:
    import geopandas as gpd

    from sim.io import atomic_path

    frame = gpd.GeoDataFrame(
        plan.cells, geometry=gpd.points_from_xy(plan.cells["x"], plan.cells["y"]), crs="EPSG:31370"
    )
    with atomic_path(dest) as tmp:
        tmp.unlink()
        frame.to_file(tmp, layer="cells", driver="GPKG")
    return dest


def plot_coverage(run: NetworkRun, out_dir: Path, *, dpi: int = 110) -> list[Path]:
    """Best-server power and best-server areas, and coverage of the strongest cells."""
    import matplotlib.pyplot as plt

    from sim.plotting import save  # sets the Agg backend before the first figure

    radio, cells = run.radio, run.plan.cells
    rows, cols = radio.shape
    ext = (radio.x0, radio.x0 + cols * radio.pixel_m, radio.y0, radio.y0 + rows * radio.pixel_m)
    best = radio.power_dbm[:, 0].reshape(rows, cols)
    srv = radio.cell[:, 0]
    shuffled = np.random.default_rng(0).permutation(len(cells))  # neighbours get other colours
    colour = np.where(srv >= 0, shuffled[np.maximum(srv, 0)] % 20, np.nan).reshape(rows, cols)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    im = axes[0].imshow(best, origin="lower", extent=ext, cmap="viridis")
    fig.colorbar(im, ax=axes[0], label="received power of the best server (dBm)")
    axes[0].set_title("True coverage: best server power (with shadowing)")
    axes[1].imshow(colour, origin="lower", extent=ext, cmap="tab20", interpolation="nearest")
    axes[1].set_title(f"Best-server areas ({len(cells)} cells)")
    for ax in axes:
        ax.plot(cells["x"], cells["y"], "k.", markersize=1.5)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m, EPSG:31370)")
    paths = [save(fig, out_dir / "coverage_best_server.png", dpi=dpi)]

    # per-cell coverage: the footprints of the cells that handled the most procedures,
    # each shown 1.5 km around its site
    raw = run.signalling.raw_records()
    busiest = np.bincount(raw["cell"], minlength=len(cells)) if len(raw["cell"]) else None
    top = np.argsort(-busiest)[:12] if busiest is not None else np.arange(min(12, len(cells)))
    fig, axes = plt.subplots(3, 4, figsize=(14, 10.5))
    half = 1500.0
    for ax, c in zip(axes.ravel(), top, strict=False):
        power = np.where(radio.cell == c, radio.power_dbm, -np.inf).max(axis=1).reshape(rows, cols)
        sx, sy = cells["x"].iloc[c], cells["y"].iloc[c]
        im = ax.imshow(np.where(np.isfinite(power), power, np.nan), origin="lower", extent=ext,
                       cmap="magma", vmin=-100, vmax=-20)  # fmt: skip
        ax.plot(cells["x"], cells["y"], "k.", markersize=2)
        ax.plot(sx, sy, "c^", markersize=7)
        ax.set_xlim(sx - half, sx + half)
        ax.set_ylim(sy - half, sy + half)
        n = 0 if busiest is None else busiest[c]
        az = cells["azimuth_deg"].iloc[c]
        ax.set_title(f"cell {cells['cell_id'].iloc[c]}, azimuth {az:.0f}°\n{n} procedures",
                     fontsize=8)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label="received power where among the strongest (dBm)")
    fig.suptitle("True coverage of the 12 busiest cells (3 km squares around each site)")
    paths.append(save(fig, out_dir / "coverage_cells.png", dpi=dpi))
    return paths
