"""Ground truth: how many people are in each zone per time bin, and how each street flows.

Every estimate is scored against these tables. Zone counts are headcounts at the last
tick of each bin (everybody, and spectators separately). Street figures are per street
segment (both directions of a street share its sidewalks) per bin: mean density
(persons/m2) over the bin's ticks, flow (persons entering per metre of usable width per
minute) and Fruin's walkway level of service: the worse of the level read from that flow
and the level read from that density (a standing jam is F, not A).

Tables (Parquet): ``truth_zones`` has one row per zone and bin for course segments and
named areas, and per *occupied* grid tile and bin (a missing grid row means 0);
``truth_edges`` has one row per street segment and bin with people on it or flowing
through it (a missing row means empty).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse

from sim.crowd.movement import fruin_los_code
from sim.crowd.walkgraph import MIN_EDGE_LENGTH_M, WalkGraph
from sim.io import atomic_path
from sim.zones import Zones

__all__ = ["TruthRecorder"]


class TruthRecorder:
    """Collects zone counts and street figures bin by bin, then writes them.

    Parameters
    ----------
    zones
        The zone systems.
    graph
        The walking graph (maps internal segments to street segments).
    street_node_id
        OSM ids of the street nodes (``Streets.node_id``), for the edges table.
    street_u, street_v
        Street edge ends (``Streets.edge_u``, ``edge_v``).
    start
        Time-zone-aware start of the simulation.
    bin_s
        Width of a bin (seconds).
    """

    def __init__(
        self,
        zones: Zones,
        graph: WalkGraph,
        *,
        street_node_id: np.ndarray,
        street_u: np.ndarray,
        street_v: np.ndarray,
        start: dt.datetime,
        bin_s: float,
    ) -> None:
        self.zones = zones
        mats = [system.membership for system in zones.systems.values()]
        self._membership = sparse.vstack(mats, format="csr")  # every system's zones
        cuts = np.cumsum([0, *(m.shape[0] for m in mats)]).tolist()
        self._zone_cuts = list(itertools.pairwise(cuts))
        self.graph = graph
        self.start = start
        self.bin_s = bin_s
        self._seg_of = graph.street_seg  # internal segment -> street segment
        self._real = self._seg_of >= 0
        n_street = graph.n_street_segs
        self._n_street = n_street
        first_edge = np.full(n_street, -1, dtype=np.int64)
        seg_of_street_edge = np.full(len(street_u), -1, dtype=np.int64)
        real_edges = graph.street_edge >= 0
        seg_of_street_edge[graph.street_edge[real_edges]] = graph.street_seg[graph.seg[real_edges]]
        order = np.arange(len(street_u))[::-1]
        first_edge[seg_of_street_edge[order]] = order
        self._first_edge = first_edge
        self._u_osm = street_node_id[street_u[first_edge]]
        self._v_osm = street_node_id[street_v[first_edge]]
        seg_len = graph.seg_length()
        self._street_len = np.zeros(n_street)
        np.maximum.at(self._street_len, self._seg_of[self._real], seg_len[self._real])
        self._occ_sum = np.zeros(graph.n_segs)
        self._entries = np.zeros(graph.n_segs)
        self._ticks = 0
        self._bin_end_s: list[float] = []
        self._zone_rows: dict[str, list[tuple[np.ndarray, ...]]] = {}
        self._edge_rows: list[tuple[np.ndarray, ...]] = []
        self.peak_density = 0.0

    def add_tick(self, occupancy: np.ndarray, entered_seg: np.ndarray) -> None:
        """Add one tick: persons per internal segment, and the segments walkers entered."""
        self._occ_sum += occupancy
        if len(entered_seg):
            self._entries += np.bincount(entered_seg, minlength=len(self._entries))
        self._ticks += 1

    def close_bin(
        self,
        t_s: float,
        place_all: np.ndarray,
        place_spectators: np.ndarray,
        seg_area: np.ndarray,
    ) -> None:
        """Close the bin ending `t_s` seconds after the start.

        Parameters
        ----------
        t_s
            End of the bin (seconds after the start).
        place_all, place_spectators
            Place of every present person, and of every present spectator.
        seg_area
            Current area (m2) of every internal segment (widths change with closures).
        """
        self._bin_end_s.append(t_s)
        n_places = self.zones.systems["grid"].membership.shape[1]
        counts = np.empty((n_places, 2))
        counts[:, 0] = np.bincount(place_all, minlength=n_places)
        counts[:, 1] = np.bincount(place_spectators, minlength=n_places)
        # one sparse product for every system and both columns instead of six; the sums
        # are of whole numbers, so they are exact and equal to the per-system products
        per_zone = np.rint(self._membership @ counts).astype(np.int64)
        for system, (a, b) in zip(self.zones.systems.values(), self._zone_cuts, strict=True):
            people, spectators = per_zone[a:b, 0], per_zone[a:b, 1]
            idx = np.flatnonzero(people > 0) if system.name == "grid" else np.arange(len(people))
            rows = self._zone_rows.setdefault(system.name, [])
            rows.append((idx, people[idx], spectators[idx]))
        ticks = max(self._ticks, 1)
        real = self._real
        occ = np.bincount(
            self._seg_of[real], weights=self._occ_sum[real] / ticks, minlength=self._n_street
        )
        area = np.bincount(self._seg_of[real], weights=seg_area[real], minlength=self._n_street)
        entries = np.bincount(
            self._seg_of[real], weights=self._entries[real], minlength=self._n_street
        )
        width = area / np.maximum(self._street_len, MIN_EDGE_LENGTH_M)
        density = occ / np.maximum(area, 1e-9)
        flow = entries / np.maximum(width, 1e-9) / (self.bin_s / 60.0)
        self.peak_density = max(self.peak_density, float(density.max(initial=0.0)))
        idx = np.flatnonzero((occ > 0) | (entries > 0))
        self._edge_rows.append((idx, occ[idx], density[idx], flow[idx]))
        self._occ_sum[:] = 0.0
        self._entries[:] = 0.0
        self._ticks = 0

    def _times(self, per_bin: list[int]) -> pd.Series:
        start = pd.Timestamp(self.start)
        ends = start + pd.to_timedelta(np.asarray(self._bin_end_s, dtype=float), unit="s")
        return pd.Series(ends.repeat(per_bin), name="time")

    def zones_table(self) -> pd.DataFrame:
        """All zone counts so far (time, system, zone, people, spectators)."""
        frames = []
        for name, rows in self._zone_rows.items():
            ids = np.asarray(self.zones.systems[name].zone_ids, dtype=object)
            idx = np.concatenate([r[0] for r in rows])
            frames.append(
                pd.DataFrame(
                    {
                        "time": self._times([len(r[0]) for r in rows]),
                        "system": pd.Categorical.from_codes(  # codes: no strings to parse
                            np.full(len(idx), list(self.zones.systems).index(name), np.int8),
                            categories=list(self.zones.systems),
                        ),
                        "zone": pd.Categorical.from_codes(idx, categories=ids),
                        "people": np.concatenate([r[1] for r in rows]),
                        "spectators": np.concatenate([r[2] for r in rows]),
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=["time", "system", "zone", "people", "spectators"])
        return pd.concat(frames, ignore_index=True)  # by system, then time, then zone

    @property
    def n_bins(self) -> int:
        """Number of bins closed so far."""
        return len(self._bin_end_s)

    def bin_zones(self, index: int) -> pd.DataFrame:
        """Zone counts of one closed bin (a streaming run's truth of that minute).

        Columns ``zone_system``, ``zone`` (the zone ids of :meth:`zones_table`),
        ``people``, ``spectators``; the grid lists its occupied tiles only, as the table.
        """
        names = list(self.zones.systems)
        frames = []
        for k, name in enumerate(names):
            idx, people, spectators = self._zone_rows[name][index]
            ids = np.asarray(self.zones.systems[name].zone_ids, dtype=object)
            frames.append((k, ids[idx], people, spectators))
        n = [len(f[1]) for f in frames]
        return pd.DataFrame(
            {
                "zone_system": pd.Categorical.from_codes(
                    np.repeat(np.arange(len(names), dtype=np.int8), n), categories=names
                ),
                "zone": np.concatenate([f[1] for f in frames]) if frames else [],
                "people": np.concatenate([f[2] for f in frames]).astype(np.int64)
                if frames
                else np.zeros(0, np.int64),
                "spectators": np.concatenate([f[3] for f in frames]).astype(np.int64)
                if frames
                else np.zeros(0, np.int64),
            }
        )

    def edges_table(self) -> pd.DataFrame:
        """All street figures so far (time, edge, u, v, persons, density, flow_pmm, los)."""
        rows = self._edge_rows
        idx = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
        cat = (lambda k: np.concatenate([r[k] for r in rows])) if rows else (lambda k: np.zeros(0))
        flow = cat(3)
        return pd.DataFrame(
            {
                "time": self._times([len(r[0]) for r in rows])
                if rows
                else pd.Series([], dtype=f"datetime64[ns, {self.start.tzinfo}]"),
                "edge": self._first_edge[idx],
                "u": self._u_osm[idx],
                "v": self._v_osm[idx],
                "persons": cat(1).astype(np.float32),
                "density": cat(2),
                "flow_pmm": flow.astype(np.float32),
                "los": pd.Categorical.from_codes(  # the level's index is its code
                    fruin_los_code(flow, cat(2)), categories=list("ABCDEF")
                ),
            }
        )

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``truth_zones.parquet`` and ``truth_edges.parquet`` atomically."""
        out = Path(out_dir)
        written = []
        for name, frame in (
            ("truth_zones", self.zones_table()),
            ("truth_edges", self.edges_table()),
        ):
            dest = out / f"{name}.parquet"
            with atomic_path(dest) as tmp:
                pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
            written.append(dest)
        return written
