"""Event-aware priors: where the operator expects people, from the event's public data.

Simple Bayes and EM need a prior over tiles (:mod:`sim.estimate.bayes`,
:mod:`sim.estimate.em`). The flat prior assumes nothing; mobloc (Tennekes & Gootzen
2022, the ESSnet location package) builds a land-use prior instead, a weighted sum of
OpenStreetMap land-use layers per tile normalised to 1, and a composite prior as a
weighted sum of such priors (``create_prior(layers, weights)``). An operator counting a
mass event knows more than land use: the organiser publishes the course, the police the
closures, the programme the fan areas. This module builds mobloc's composite from those
public layers, read from the run's ``event_public.gpkg`` (written by the street stage,
:func:`sim.report.geopackage.write_event_public`) and never from the simulated crowd.

The prior of tile j while the set of active closures is S (one *state*; states change
only at the closures' published start and end times):

``Q_j(S) = (1 - s) A_j(S) / sum_k A_k(S) + s E_j(S) / sum_k E_k(S)``

- ``A_j(S)``, the land-use layer: walkable street area in the tile, m² (each street
  edge's length inside the tile times its usable width, from the OSM ``highway``,
  ``width`` and ``sidewalk`` tags). People are where streets and the buildings along
  them are; the street network is the part of OSM land use that the street data carries
  (mobloc's "roads" layer). A street closed to traffic adds its carriageway, one closed
  to pedestrians loses its width, while the closure holds.
- ``E_j(S)``, the event layer: area of the tile within ``strip_m`` (25 m) of a course
  piece that a closure in S closes, or inside a fan area (while any course closure
  holds). 25 m reaches across the carriageway to the sidewalks where spectators stand
  on the widest avenues of the course (Tervueren, Lambermont). When the file has no
  course closure, the event layer holds all the time (a static prior).
- ``s``, ``event_share``: the share of the people the operator expects on the course
  strip and the fan areas while the course is closed. Default 0.5: the police figure of
  about 200,000 spectators against a comparable number of residents and visitors in
  the area the operator's cells cover (an assumption the operator makes from public
  figures, not one fitted to the simulation).

Without any active course closure (before and after the event) ``Q = A / sum A``.
The estimators mix Q with the flat prior by ``prior_weight`` (mobloc's composite again;
:meth:`TilePrior.mixed`). A bin takes the state at its start.

What is left out: OSM land-use polygons (residential, commercial, parks) and buildings,
which the walk extracts of the street stage do not carry; mobloc's network prior (the
assumption that the operator puts cells where people are), which would reuse the
coverage model and add nothing public.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from sim.estimate.base import EstimateInputError

__all__ = [
    "DEFAULT_EVENT_SHARE",
    "EVENT_PUBLIC_FILE",
    "STRIP_M",
    "EventPrior",
    "EventPublic",
    "TilePrior",
    "read_event_public",
]

#: The run folder's file of public event data (the street stage writes it).
EVENT_PUBLIC_FILE = "event_public.gpkg"
#: How far either side of the course the event layer reaches (m; module docstring).
STRIP_M = 25.0
#: Share of the expected people on the course strip and fan areas (module docstring).
DEFAULT_EVENT_SHARE = 0.5
CRS = "EPSG:31370"
#: Layers of the public file and the columns the prior reads from each.
LAYERS: dict[str, tuple[str, ...]] = {
    "course": ("piece",),
    "closures": ("closure", "closed_to", "course", "piece", "start", "end", "width_m",
                 "carriageway_m"),
    "fan_areas": ("name",),
    "streets": ("width_m", "carriageway_m"),
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class EventPublic:
    """The event's public layers (GeoDataFrames in EPSG:31370; see :data:`LAYERS`)."""

    course: gpd.GeoDataFrame
    closures: gpd.GeoDataFrame
    fan_areas: gpd.GeoDataFrame
    streets: gpd.GeoDataFrame
    source: str = "<event public data>"


def read_event_public(path: str | os.PathLike[str]) -> EventPublic:
    """Read ``event_public.gpkg`` and check its layers.

    Raises
    ------
    EstimateInputError
        The file is missing or unreadable, a layer or column is missing, a CRS is not
        EPSG:31370, or a closure's times do not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise EstimateInputError(
            f"{path}: missing. The event-aware prior (estimators.prior = 'event') reads the "
            f"event's public data from {EVENT_PUBLIC_FILE}, which the street stage of a run "
            "writes; rerun the scenario, or set estimators.prior = 'flat'"
        )
    try:
        present = {str(name) for name in gpd.list_layers(path)["name"]}
    except Exception as exc:  # GDAL errors come in several types
        raise EstimateInputError(f"{path}: unreadable GeoPackage ({exc})") from None
    frames: dict[str, gpd.GeoDataFrame] = {}
    for layer in LAYERS:
        if layer not in present:
            raise EstimateInputError(
                f"{path}: no layer {layer!r}; the event's public data has layers "
                f"{', '.join(LAYERS)} (found {', '.join(sorted(present)) or 'none'})"
            )
        try:
            frames[layer] = gpd.read_file(path, layer=layer)
        except Exception as exc:
            raise EstimateInputError(f"{path}: layer {layer!r} unreadable ({exc})") from None
    return check_event_public(EventPublic(**frames, source=str(path)))


def check_event_public(public: EventPublic) -> EventPublic:
    """Check the columns, CRS and closure times of the layers; return `public`."""
    for layer, columns in LAYERS.items():
        frame = getattr(public, layer)
        if not isinstance(frame, gpd.GeoDataFrame):
            raise EstimateInputError(
                f"{public.source}: layer {layer!r} is a {type(frame).__name__}, not a GeoDataFrame"
            )
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise EstimateInputError(
                f"{public.source}: layer {layer!r} lacks column(s) {', '.join(missing)}"
            )
        if len(frame) and (frame.crs is None or not frame.crs.equals(CRS)):
            raise EstimateInputError(
                f"{public.source}: layer {layer!r} is in {frame.crs}; the prior needs {CRS}"
            )
    c = public.closures
    for column in ("start", "end"):
        try:
            times = pd.to_datetime(c[column], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise EstimateInputError(
                f"{public.source}: layer 'closures', column {column!r}: not ISO 8601 times ({exc})"
            ) from None
        if times.isna().any():
            row = int(np.flatnonzero(times.isna())[0])
            raise EstimateInputError(
                f"{public.source}: layer 'closures', row {row}: no {column} time"
            )
    bad = ~c["closed_to"].isin(["traffic", "pedestrians"])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise EstimateInputError(
            f"{public.source}: layer 'closures', row {row}: closed_to = "
            f"{c['closed_to'].iloc[row]!r}; use 'traffic' or 'pedestrians'"
        )
    return public


@dataclass(frozen=True, eq=False)
class TilePrior:
    """A prior over tiles that changes at given instants.

    Attributes
    ----------
    weights
        States x tiles; each row sums to 1.
    changes
        Instants (ns since the epoch, UTC, increasing) where the state may change.
    state
        The state (row of `weights`) before ``changes[0]``, between consecutive changes,
        and after the last: ``len(changes) + 1`` entries.
    """

    weights: np.ndarray
    changes: np.ndarray
    state: np.ndarray

    @classmethod
    def static(cls, weights: np.ndarray) -> TilePrior:
        """One prior for all time (normalised to sum 1)."""
        w = np.asarray(weights, dtype=float).ravel()
        return cls(w[None, :] / w.sum(), np.zeros(0, np.int64), np.zeros(1, np.int64))

    @property
    def n_states(self) -> int:
        """Number of distinct priors."""
        return len(self.weights)

    def states(self, bins: Any) -> np.ndarray:
        """The state of each bin (by its start); every bin is state 0 for a static prior."""
        if self.n_states == 1 or bins is None:
            return np.zeros(0 if bins is None else len(bins), dtype=np.int64)
        t = pd.DatetimeIndex(bins).tz_convert("UTC").as_unit("ns").asi8
        return self.state[np.searchsorted(self.changes, t, side="right")]

    def mixed(self, weight: float) -> TilePrior:
        """``(1 - weight) flat + weight self``: mobloc's composite with the uniform prior."""
        n = self.weights.shape[1]
        return TilePrior((1.0 - weight) / n + weight * self.weights, self.changes, self.state)


class EventPrior:
    """The event-aware prior's recipe; :meth:`tile_prior` lays it on a tile space.

    Parameters
    ----------
    public
        The event's public data: an :class:`EventPublic` or the path of
        ``event_public.gpkg``.
    event_share
        ``s`` in [0, 1]: share of the expected people on the course strip and fan areas
        while the course is closed (module docstring).
    strip_m
        How far either side of the course the event layer reaches, metres (> 0).

    Raises
    ------
    EstimateInputError
        A missing or malformed file, or a parameter out of range.
    """

    def __init__(
        self,
        public: EventPublic | str | os.PathLike[str],
        *,
        event_share: float = DEFAULT_EVENT_SHARE,
        strip_m: float = STRIP_M,
    ) -> None:
        if not 0.0 <= event_share <= 1.0:
            raise EstimateInputError(f"event prior: event_share = {event_share}; must be in [0, 1]")
        if not strip_m > 0:
            raise EstimateInputError(f"event prior: strip_m = {strip_m}; must be > 0 metres")
        if isinstance(public, EventPublic):
            self.public = check_event_public(public)
        else:
            self.public = read_event_public(public)
        self.event_share = float(event_share)
        self.strip_m = float(strip_m)
        self._laid: tuple[Any, TilePrior] | None = None  # the last space and its prior

    def __repr__(self) -> str:
        """Where the data comes from and the recipe's numbers."""
        return (
            f"EventPrior({self.public.source!r}, event_share={self.event_share}, "
            f"strip_m={self.strip_m})"
        )

    def tile_prior(self, space: Any) -> TilePrior:
        """The prior on the tiles of `space` (a ``TileRaster`` or a user ``TileGrid``).

        Raises
        ------
        EstimateInputError
            No street and no event area inside the tiles at some time.
        """
        if self._laid is not None and self._laid[0] == space:  # Bayes and EM share one
            return self._laid[1]
        self._laid = (space, self._tile_prior(space))
        return self._laid[1]

    def _tile_prior(self, space: Any) -> TilePrior:
        polys = space.boxes() if hasattr(space, "boxes") else np.asarray(space.geometry)
        tree = shapely.STRtree(polys)
        pub = self.public
        base = _line_area(np.asarray(pub.streets.geometry), pub.streets["width_m"], polys, tree)
        closures = pub.closures
        start, end = (
            pd.DatetimeIndex(pd.to_datetime(closures[c], utc=True, format="ISO8601"))
            .as_unit("ns")
            .asi8
            for c in ("start", "end")
        )
        on_course = closures["course"].astype(bool).to_numpy()
        pedestrians = (closures["closed_to"] == "pedestrians").to_numpy()
        # what each street closure adds to (traffic) or takes from (pedestrians) the tiles
        width = np.where(pedestrians, -closures["width_m"].to_numpy(float),
                         closures["carriageway_m"].to_numpy(float))  # fmt: skip
        geoms = np.asarray(closures.geometry)
        delta = {
            int(i): _line_area(geoms[[i]], width[[i]], polys, tree)
            for i in np.flatnonzero(~on_course)
        }
        changes = np.unique(np.concatenate([start, end]))
        probe = np.concatenate([[np.iinfo(np.int64).min], changes])  # an instant of each span
        keys: dict[tuple[int, ...], int] = {}
        rows: list[np.ndarray] = []
        state = np.zeros(len(probe), dtype=np.int64)
        for k, t in enumerate(probe):
            active = tuple(np.flatnonzero((start <= t) & (t < end)).tolist())
            if active not in keys:
                keys[active] = len(rows)
                rows.append(self._weights(active, base, delta, on_course, polys, tree))
            state[k] = keys[active]
        return TilePrior(np.vstack(rows), changes, state)

    def _weights(
        self,
        active: tuple[int, ...],
        base: np.ndarray,
        delta: dict[int, np.ndarray],
        on_course: np.ndarray,
        polys: np.ndarray,
        tree: shapely.STRtree,
    ) -> np.ndarray:
        """``Q(S)`` for the active closure rows S."""
        area = base.copy()
        for i in active:
            if not on_course[i]:
                area += delta[i]
        area = np.maximum(area, 0.0)
        pub = self.public
        course_rows = np.flatnonzero(on_course)
        if course_rows.size == 0:  # no course closure published: the event layer always holds
            lines, fans = np.asarray(pub.course.geometry), True
        else:
            lines = np.asarray(pub.closures.geometry)[[i for i in active if on_course[i]]]
            fans = len(lines) > 0
        parts = list(shapely.buffer(lines, self.strip_m)) if len(lines) else []
        if fans:
            parts += list(np.asarray(pub.fan_areas.geometry))
        event = _polygon_area(shapely.union_all(parts), polys, tree) if parts else 0 * area
        total_a, total_e = area.sum(), event.sum()
        if not total_a > 0 and not total_e > 0:
            raise EstimateInputError(
                f"event prior: no street and no event area of {pub.source} lies inside the "
                "estimators' tiles; check that the public data and the network plan cover "
                "the same place (EPSG:31370)"
            )
        if not total_e > 0:
            return area / total_a
        if not total_a > 0:
            return event / total_e
        return (1.0 - self.event_share) * area / total_a + self.event_share * event / total_e


def _line_area(
    lines: np.ndarray, width: Any, polys: np.ndarray, tree: shapely.STRtree
) -> np.ndarray:
    """Per tile: sum over `lines` of (length inside the tile) x its width, m².

    A line along a tile border would count in both tiles; each line's pieces are scaled
    down to its length when they add up to more.
    """
    width = np.asarray(width, dtype=float)
    out = np.zeros(len(polys))
    if len(lines) == 0:
        return out
    li, ti = tree.query(lines, predicate="intersects")
    if li.size == 0:
        return out
    piece = shapely.length(shapely.intersection(lines[li], polys[ti]))
    inside = np.bincount(li, weights=piece, minlength=len(lines))
    full = shapely.length(lines)
    scale = np.where(inside > full, full / np.where(inside > 0, inside, 1.0), 1.0)
    np.add.at(out, ti, piece * scale[li] * width[li])
    return out


def _polygon_area(shape: Any, polys: np.ndarray, tree: shapely.STRtree) -> np.ndarray:
    """Per tile: area of `shape` inside it, m²."""
    out = np.zeros(len(polys))
    if shape is None or shapely.is_empty(shape):
        return out
    ti = tree.query(shape, predicate="intersects")
    out[ti] = shapely.area(shapely.intersection(polys[ti], shape))
    return out
