"""Demand: who comes when, from where, and where they would like to stand.

Spectators come in groups from origins (stations, car parks, neighbourhoods) along an
arrival curve around the first team's start, and choose a viewing stretch of the course
by its attractiveness (start, finish, check points, landmarks), the walk from their
origin and the room left on it. They stay until the last team has passed their stretch
plus a random tail; a share leaves early. The background population is already in the
area, indoors at home or at activity places, and makes walking trips at a daily rate.
Every number comes from ``scenario.people`` (defaults and sources are documented there).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import numpy as np

from sim.course import Course
from sim.crowd.walkgraph import WalkGraph
from sim.scenario import Event, People, Spectators

__all__ = [
    "SpectatorPlan",
    "ViewingStretches",
    "build_stretches",
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
        Distance from the start to the middle of each stretch.
    """

    edge_start: np.ndarray
    edges: np.ndarray
    edge_capacity: np.ndarray
    nodes: list[np.ndarray]
    capacity: np.ndarray
    attractiveness: np.ndarray
    course_m: np.ndarray

    @property
    def n(self) -> int:
        """Number of stretches."""
        return len(self.capacity)


def build_stretches(graph: WalkGraph, course: Course, people: People) -> ViewingStretches:
    """Cut the course sidewalks into stretches and rate each one.

    Viewing room of an edge is ``viewing_density * length * usable width`` (never more
    than jam density allows), so a wide boulevard holds more spectators than a lane.
    """
    spec = people.spectators
    on = np.flatnonzero(graph.course_side >= 0)
    n_stretch = max(1, int(np.ceil(course.length_m / spec.stretch_m)))
    which = np.minimum((graph.course_m[on] // spec.stretch_m).astype(np.int64), n_stretch - 1)
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
    mid = (np.arange(n_stretch) + 0.5) * spec.stretch_m
    mid = np.minimum(mid, course.length_m)
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
    return ViewingStretches(
        edge_start=edge_start,
        edges=edges,
        edge_capacity=edge_capacity,
        nodes=nodes,
        capacity=capacity,
        attractiveness=attract,
        course_m=mid,
    )


def last_team_passes_s(event: Event, course_m: np.ndarray, length_m: float) -> np.ndarray:
    """Seconds after the simulation start when the last team passes each course position.

    Teams ride at constant speed: the last one starts at ``first_start + (teams - 1) *
    interval`` and needs ``ride_min`` for the whole course. Without a race timetable the
    answer is NaN (callers fall back to a fixed stay).
    """
    race = event.race
    if race is None:
        return np.full(np.shape(course_m), np.nan)
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


def plan_spectators(spec: Spectators, event: Event, *, rng: np.random.Generator) -> SpectatorPlan:
    """Draw group sizes, origins and arrival times for ``spec.count`` spectators.

    Arrival times follow a normal curve peaking ``arrival_peak_min`` after the first
    team's start (before it when negative), truncated to the part of the event before
    the last team starts; groups whose draw falls before the simulation start arrive in
    its first minutes instead (they were on their way).
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
