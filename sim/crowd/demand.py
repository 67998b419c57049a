"""Demand: who comes when, from where, and where they would like to stand.

Spectators come in groups from origins (stations, car parks, neighbourhoods) along an
arrival curve around the first team's start, and choose a viewing stretch of the course
by its attractiveness (start, finish, check points, landmarks), the walk from their
origin and the room left on it; fan areas off the course compete for them by
attractiveness and walk while they have room (:func:`choice_log_weight`). They stay
until the last team has passed their stretch plus a random tail; a share leaves early.
The background population is already in the area, indoors at home or at activity
places, and makes walking trips at a daily rate.
Every number comes from ``scenario.people`` (defaults and sources are documented there).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from sim.course import Course
from sim.crowd.walkgraph import WalkGraph
from sim.errors import ScenarioError
from sim.scenario import EventConfig, PeopleConfig, SpectatorsConfig
from sim.streets import to_metres

__all__ = [
    "SpectatorPlan",
    "ViewingStretches",
    "build_stretches",
    "choice_log_weight",
    "last_team_passes_s",
    "plan_spectators",
]


@dataclass(frozen=True, eq=False)
class ViewingStretches:
    """The course cut into viewing stretches of ``spectators.stretch_m``.

    Attributes
    ----------
    edge_start, edges
        CSR layout: the course sidewalk edges of stretch ``k`` are
        ``edges[edge_start[k]:edge_start[k + 1]]``.
    edge_capacity
        Persons each of those edges holds as viewing room (by its usable width).
    nodes
        Node set of each stretch (both sidewalks): the routing destination.
    capacity
        Viewing room of each stretch (persons).
    attractiveness
        Relative appeal before distance and room.
    course_m
        Distance from the start to the middle of each stretch (for a fan area: to the
        course node nearest to it, which times its stay).
    fan
        Which "stretches" are fan areas (``people.spectators.fan_areas``, after the course
        stretches, in their order): no sidewalk edges, their nodes are the street nodes
        within their radius, and their visitors stand off the street segments.
    """

    edge_start: np.ndarray
    edges: np.ndarray
    edge_capacity: np.ndarray
    nodes: list[np.ndarray]
    capacity: np.ndarray
    attractiveness: np.ndarray
    course_m: np.ndarray
    fan: np.ndarray

    @property
    def n(self) -> int:
        """Number of stretches."""
        return len(self.capacity)


def build_stretches(
    graph: WalkGraph, course: Course, people: PeopleConfig, *, source: str = "<scenario>"
) -> ViewingStretches:
    """Cut the course sidewalks into stretches and rate each one; add the fan areas.

    Viewing room of an edge is ``viewing_density * length * usable width`` (never more
    than jam density allows), so a wide boulevard holds more spectators than a lane. A fan
    area holds ``FanArea.holds`` people on open ground, whatever its paths' widths.

    Raises
    ------
    ScenarioError
        A fan area has no street node within ``people.origin_max_snap_m`` (`source` names
        the scenario file in the message).
    """
    spec = people.spectators
    on = np.flatnonzero(graph.course_side >= 0)
    # runs of stretch_m along each piece of the course (one piece: from the start)
    which, lo, hi = course.bins(graph.course_m[on], spec.stretch_m)
    n_stretch = len(lo)
    order = np.argsort(which, kind="stable")
    edges, which = on[order], which[order]
    edge_start = np.searchsorted(which, np.arange(n_stretch + 1))
    density = min(spec.viewing_density, people.jam_density)
    area = graph.length[edges] * graph.width[edges]
    edge_capacity = np.floor(density * area / 2.0).astype(np.int64)  # shared by both ways
    capacity = np.bincount(which, weights=edge_capacity, minlength=n_stretch).astype(np.int64)
    nodes = [
        np.unique(np.concatenate([graph.eu[edges[a:b]], graph.ev[edges[a:b]]]))
        for a, b in itertools.pairwise(edge_start)
    ]
    piece = course.piece_at(lo)
    first = np.searchsorted(piece, piece)  # first stretch of each stretch's piece
    start_m = course.piece_m[piece, 0]
    mid = start_m + (np.arange(n_stretch) - first + 0.5) * spec.stretch_m
    mid = np.minimum(mid, hi if course.n_pieces > 1 else course.length_m)
    attract = np.ones(n_stretch)
    radius = spec.landmark_radius_m
    for w, km in zip(course.route.waypoints, course.waypoint_km, strict=True):
        near = np.abs(mid - km * 1000.0) <= radius
        bonus = {
            "start": spec.start_weight,
            "finish": spec.finish_weight,
            "checkpoint": spec.checkpoint_weight,
        }.get(w.kind, spec.landmark_weight)
        attract[near] += bonus
    fan_nodes, fan_m = _fan_area_nodes(graph, course, people, source)
    n_fan = len(fan_nodes)
    return ViewingStretches(
        edge_start=np.concatenate([edge_start, np.full(n_fan, edge_start[-1])]),
        edges=edges,
        edge_capacity=edge_capacity,
        nodes=nodes + fan_nodes,
        capacity=np.concatenate(
            [capacity, np.array([f.holds for f in spec.fan_areas], dtype=np.int64)]
        ),
        attractiveness=np.concatenate([attract, [f.weight for f in spec.fan_areas]]),
        course_m=np.concatenate([mid, fan_m]),
        fan=np.concatenate([np.zeros(n_stretch, dtype=bool), np.ones(n_fan, dtype=bool)]),
    )


def _fan_area_nodes(
    graph: WalkGraph, course: Course, people: PeopleConfig, source: str
) -> tuple[list[np.ndarray], np.ndarray]:
    """Walk-graph nodes of each fan area and the course position nearest to it."""
    areas = people.spectators.fan_areas
    if not areas:
        return [], np.zeros(0)
    tree = cKDTree(np.column_stack([graph.x, graph.y]))
    ctree = cKDTree(np.column_stack([graph.x[course.nodes], graph.y[course.nodes]]))
    out, course_m = [], np.zeros(len(areas))
    for i, area in enumerate(areas):
        x, y = (float(v) for v in to_metres(area.lon, area.lat))
        near = np.asarray(tree.query_ball_point([x, y], area.radius_m), dtype=np.int64)
        if len(near) == 0:
            dist, nearest = tree.query([x, y])
            if dist > people.origin_max_snap_m:
                raise ScenarioError(
                    f"{source}: people.spectators.fan_areas[{i}] ({area.name!r} at {area.lat}, "
                    f"{area.lon}) has no street within {dist:.0f} m; allowed up to "
                    f"people.origin_max_snap_m = {people.origin_max_snap_m:g} m. Move it "
                    "inside the street data or widen its radius_m."
                )
            near = np.array([nearest], dtype=np.int64)
        out.append(np.unique(near))
        course_m[i] = course.cum_m[int(ctree.query([x, y])[1])]
    return out, course_m


def choice_log_weight(
    attractiveness: np.ndarray,
    room_left: np.ndarray,
    capacity: np.ndarray,
    dist_m: np.ndarray,
    fan: np.ndarray,
    *,
    distance_decay_m: float,
) -> np.ndarray:
    """Log-weight of choosing each stretch (or fan area) in a spectator's weighted draw.

    A course stretch weighs ``attractiveness * room_left / capacity * exp(-dist /
    decay)``: spectators see how crowded a sidewalk is and spread along the course. A fan
    area is a fenced ground with a gate: nobody sees how full it is from the station, so
    it weighs ``attractiveness * exp(-dist / decay)`` until it is full. Scaling its draw
    by the room left as well would fill it only to ``1 - exp(-draw / capacity)`` of its
    capacity (63 % when the draw equals it), never to what its capacity and draw say.
    Full or unreachable: ``-inf``. Arrays broadcast (e.g. rows of origins, columns of
    stretches).
    """
    room = np.maximum(room_left, 0)
    share = np.where(fan, (room > 0).astype(float), room / np.maximum(capacity, 1))
    with np.errstate(divide="ignore"):
        lw = np.log(attractiveness) + np.log(share) - dist_m / distance_decay_m
    return np.where(np.isfinite(dist_m), lw, -np.inf)


def last_team_passes_s(
    event: EventConfig, course_m: np.ndarray, length_m: float, *, course: Course | None = None
) -> np.ndarray:
    """Seconds after the simulation start when the last team passes each course position.

    Teams ride at constant speed: the last one starts at ``first_start + (teams - 1) *
    interval`` and needs ``ride_min`` for the whole course. A road race (``kind =
    "road"``, needs `course`) passes once, by its timetable (:meth:`Course.passes_s`).
    Without a race timetable the answer is NaN (callers fall back to a fixed stay).
    """
    race = event.race
    if race is None:
        return np.full(np.shape(course_m), np.nan)
    if race.kind == "road":
        if course is None:
            raise ValueError("a road race needs the course to time its passing")
        return course.passes_s(event, course_m)
    first = dt.datetime.combine(event.date, race.first_start)
    t0 = dt.datetime.combine(event.date, event.start)
    last_start = (first - t0).total_seconds() + (race.teams - 1) * race.interval_min * 60.0
    frac = np.asarray(course_m, dtype=float) / max(length_m, 1.0)
    return last_start + race.ride_min * 60.0 * frac


@dataclass(frozen=True, eq=False)
class SpectatorPlan:
    """The spectators of a run, drawn before it starts.

    Attributes
    ----------
    group_size, group_origin, group_arrive_s
        Per group: members, origin index, arrival time (seconds after the start).
    member_group
        Per spectator: its group; members of a group are consecutive.
    """

    group_size: np.ndarray
    group_origin: np.ndarray
    group_arrive_s: np.ndarray
    member_group: np.ndarray
    group_piece: np.ndarray | None = None


def plan_spectators(
    spec: SpectatorsConfig,
    event: EventConfig,
    *,
    rng: np.random.Generator,
    windows: np.ndarray | None = None,
) -> SpectatorPlan:
    """Draw group sizes, origins and arrival times for ``spec.count`` spectators.

    Arrival times follow a normal curve peaking ``arrival_peak_min`` after the first
    team's start (before it when negative), truncated to the part of the event before
    the last team starts; groups whose draw falls before the simulation start arrive in
    its first minutes instead (they were on their way).

    For a road race, `windows` (``(n_pieces, 2)``, seconds after the start) says when
    the race reaches each piece of the course and when it reaches the piece's last node:
    each group comes for one piece (drawn by ``spec.piece_shares``, else the first), its
    curve peaks ``arrival_peak_min`` from the race reaching that piece and is truncated
    at the race reaching the piece's end. Groups due after the simulated period, or whose
    piece the race had left before it began, never arrive in it (arrival time ``inf``).
    """
    count = spec.count
    if count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return SpectatorPlan(empty, empty, np.zeros(0), empty)
    weights = np.asarray(spec.group_size_weights[: spec.group_size_max], dtype=float)
    weights /= weights.sum()
    mean = float(np.arange(1, len(weights) + 1) @ weights)
    n_draw = int(count / mean * 1.2) + 10
    sizes = rng.choice(np.arange(1, len(weights) + 1), size=n_draw, p=weights)
    while sizes.sum() < count:
        sizes = np.concatenate(
            [sizes, rng.choice(np.arange(1, len(weights) + 1), n_draw, p=weights)]
        )
    cum = np.cumsum(sizes)
    n_groups = int(np.searchsorted(cum, count)) + 1
    sizes = sizes[:n_groups].copy()
    sizes[-1] -= int(cum[n_groups - 1] - count)
    ow = np.array([o.weight for o in spec.origins], dtype=float)
    origin = rng.choice(len(ow), size=n_groups, p=ow / ow.sum())
    duration = event.duration_s
    if windows is not None:
        return _plan_pieces(spec, sizes, origin, windows, duration, rng=rng)
    if event.race is not None:
        t0 = dt.datetime.combine(event.date, event.start)
        first = (dt.datetime.combine(event.date, event.race.first_start) - t0).total_seconds()
        race = event.race
        latest = first + (race.teams - 1) * race.interval_min * 60.0
    else:
        first, latest = duration / 3.0, duration / 2.0
    latest = min(max(latest, 60.0), duration)
    arrive = (
        first + spec.arrival_peak_min * 60.0 + rng.normal(0.0, spec.arrival_sd_min * 60.0, n_groups)
    )
    early = arrive < 0
    arrive[early] = rng.uniform(0.0, min(1800.0, latest), int(early.sum()))
    arrive = np.minimum(arrive, latest)
    return SpectatorPlan(
        group_size=sizes.astype(np.int64),
        group_origin=origin.astype(np.int64),
        group_arrive_s=arrive,
        member_group=np.repeat(np.arange(n_groups), sizes),
    )


def _plan_pieces(
    spec: SpectatorsConfig,
    sizes: np.ndarray,
    origin: np.ndarray,
    windows: np.ndarray,
    duration: float,
    *,
    rng: np.random.Generator,
) -> SpectatorPlan:
    """Arrival times of groups who each come for one piece of a road race's course."""
    n_groups = len(sizes)
    shares = np.asarray(spec.piece_shares, dtype=float)
    if len(shares) > 1:
        piece = rng.choice(len(shares), size=n_groups, p=shares / shares.sum())
    else:
        piece = np.zeros(n_groups, dtype=np.int64)
    first = windows[piece, 0]
    latest = np.maximum(windows[piece, 1], 60.0)
    arrive = (
        first + spec.arrival_peak_min * 60.0 + rng.normal(0.0, spec.arrival_sd_min * 60.0, n_groups)
    )
    arrive = np.minimum(arrive, latest)
    early = arrive < 0
    arrive[early] = rng.uniform(0.0, np.minimum(1800.0, latest[early]))
    # not in the simulated period: due after it, or their piece's race was over before it
    arrive[(arrive >= duration) | (windows[piece, 1] < 0)] = np.inf
    return SpectatorPlan(
        group_size=sizes.astype(np.int64),
        group_origin=origin.astype(np.int64),
        group_arrive_s=arrive,
        member_group=np.repeat(np.arange(n_groups), sizes),
        group_piece=piece.astype(np.int64),
    )
