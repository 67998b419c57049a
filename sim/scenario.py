"""The scenario file: what one crowdsim run simulates, validated before anything runs.

A scenario is a TOML file (see ``scenarios/``). This module is the one place that says
what a scenario can hold: every section is a pydantic model that forbids unknown keys,
and every error names the file, the key and what is allowed. A scenario may start with
``extends = "other.toml"`` and override only what changes (tables merge key by key,
lists and values replace).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from sim.errors import ScenarioError

__all__ = [
    "AreaConfig",
    "BackgroundConfig",
    "BboxConfig",
    "ClosureConfig",
    "CrossingConfig",
    "EstimatorsConfig",
    "EventCellConfig",
    "EventConfig",
    "FanAreaConfig",
    "NetworkConfig",
    "OriginConfig",
    "OutputConfig",
    "PeopleConfig",
    "RaceConfig",
    "RouteConfig",
    "Scenario",
    "SpectatorsConfig",
    "StreetsConfig",
    "WaypointConfig",
    "ZonesConfig",
    "describe_error",
    "dump_scenario",
    "load_scenario",
    "merge_tables",
    "parse_scenario",
]

Lat = Annotated[float, Field(ge=-90.0, le=90.0, description="latitude, WGS84 degrees")]
Lon = Annotated[float, Field(ge=-180.0, le=180.0, description="longitude, WGS84 degrees")]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
ESTIMATOR_METHODS = ("presence", "voronoi", "bayes", "em")
#: Keys holding file paths; a relative path is relative to the file that names it.
PATH_KEYS = (("streets", "file"), ("network", "sites_file"))


#: Most people one count may hold: ten times the residents of the Brussels region, and
#: far beyond what one machine runs (see :mod:`sim.budget` for what fits).
MAX_PEOPLE = 10_000_000
#: Largest length a scenario may give (m): a day's walk, and ten times Brussels' width.
MAX_LENGTH_M = 200_000.0
#: Longest duration a scenario may give (minutes): one day.
MAX_MINUTES = 24 * 60.0
#: Largest relative weight: beyond it the sums of weights lose their smaller terms.
MAX_WEIGHT = 1e6
#: Smallest zone length (m): a grid tile or course segment smaller than a place (the
#: resolution people are counted at, ``sim.zones.PIECE_M``) counts nothing more.
MIN_ZONE_M = 10.0
#: Where the offline sketch can be drawn (Belgian Lambert 72 covers Belgium), its margin
#: around the waypoints and its largest grid: as in :mod:`sim.sketch` (a test checks).
SKETCH_LAT = (49.0, 52.0)
SKETCH_LON = (2.0, 7.0)
SKETCH_MARGIN_M = 1500.0
SKETCH_MAX_NODES = 400_000


def _local_time(value: Any) -> Any:
    # pydantic would read a number as seconds after midnight UTC: an aware time that
    # cannot be compared with the others. A scenario's times are local times of day.
    if isinstance(value, bool | int | float):
        raise ValueError(f"needs a local time of day such as 14:30:00, got the number {value!r}")
    return value


def _naive(value: dt.time) -> dt.time:
    if value.tzinfo is not None:
        raise ValueError(
            f"{value.isoformat()}: give a local time without an offset; event.timezone says "
            "where it is"
        )
    return value


#: A local time of day (TOML 14:30:00 or "14:30"), never a number or a time with an offset.
LocalTime = Annotated[dt.time, BeforeValidator(_local_time), AfterValidator(_naive)]
Metres = Annotated[float, Field(le=MAX_LENGTH_M)]
Minutes = Annotated[float, Field(ge=-MAX_MINUTES, le=MAX_MINUTES)]
Weight = Annotated[float, Field(le=MAX_WEIGHT)]


class _Section(BaseModel):
    """A table of the scenario file: unknown keys refused, frozen once read.

    Naming rule: the class of a table is its key in CamelCase, singular for the items
    of a list, followed by ``Config`` (``[people.spectators]`` -> ``SpectatorsConfig``,
    ``[[route.crossings]]`` -> ``CrossingConfig``); only the root is ``Scenario``. The
    simulation's own objects (the crowd's ``People``, ``Closure``...) keep the bare names.
    """

    # allow_inf_nan=False: every float of every section must be finite (inf, nan refused)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RaceConfig(_Section):
    """The race timetable.

    ``kind = "ttt"`` (team time trial): teams start one after another from the first
    waypoint and each rides the whole course in ``ride_min``. ``kind = "road"`` (a mass
    start): the bunch passes every point once; its head leaves the first waypoint at
    ``first_start``, passes the waypoints that carry a ``time`` at that time, reaches the
    finish at ``finish``, and rides at constant speed over the course distance between
    these marks (see :meth:`sim.course.Course.passes_s`); its end passes ``tail_min``
    later.
    """

    kind: Literal["ttt", "road"] = Field(
        "ttt", description="ttt: teams start one by one; road: one mass start"
    )
    caravan: LocalTime | None = Field(None, description="publicity caravan passes the start")
    first_start: LocalTime = Field(description="first team starts (ttt); the race leaves (road)")
    teams: int = Field(22, ge=1, le=200, description="ttt only")
    interval_min: Minutes = Field(5.0, gt=0, description="minutes between team starts (ttt)")
    ride_min: Minutes = Field(29.0, gt=0, description="minutes a team takes for the course (ttt)")
    finish: LocalTime | None = Field(
        None, description="road: the head of the race reaches the finish (required for road)"
    )
    tail_min: Minutes = Field(
        5.0,
        ge=0,
        description="road: minutes from the head of the race to its last riders and cars "
        "(assumption)",
    )

    @model_validator(mode="after")
    def _road_needs_finish(self) -> RaceConfig:
        if self.kind == "road":
            if self.finish is None:
                raise ValueError("kind = 'road' needs finish = HH:MM:SS (head of the race)")
            if self.finish <= self.first_start:
                raise ValueError(
                    f"finish {self.finish} is not after first_start {self.first_start}"
                )
        elif self.finish is not None:
            raise ValueError("finish is for kind = 'road'; a ttt ends after ride_min")
        return self

    def start_times(self, date: dt.date) -> list[dt.datetime]:
        """Start time of every team on `date` (naive local times); road: the one start."""
        first = dt.datetime.combine(date, self.first_start)
        if self.kind == "road":
            return [first]
        return [first + dt.timedelta(minutes=i * self.interval_min) for i in range(self.teams)]

    def end_time(self, date: dt.date) -> dt.datetime:
        """When the race is over at the finish: the last team (ttt) or the race's end (road)."""
        if self.kind == "road":
            assert self.finish is not None  # validated
            return dt.datetime.combine(date, self.finish) + dt.timedelta(minutes=self.tail_min)
        return self.start_times(date)[-1] + dt.timedelta(minutes=self.ride_min)


class EventConfig(_Section):
    """When the event happens and how finely the simulation steps through it."""

    name: str = Field(min_length=1)
    date: dt.date
    timezone: str = "Europe/Brussels"
    start: LocalTime = Field(description="local time the simulation starts")
    end: LocalTime = Field(description="local time the simulation ends (same day)")
    step_s: float = Field(5.0, ge=0.1, le=600, description="seconds per simulation tick")
    race: RaceConfig | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'Europe/Brussels'"
            ) from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> EventConfig:
        if self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        if self.step_s >= self.duration_s:
            raise ValueError(
                f"step_s = {self.step_s:g} s is not shorter than the event "
                f"({self.start}-{self.end}, {self.duration_s:g} s); a run needs several ticks"
            )
        if self.race is not None and self.race.kind == "road":
            assert self.race.finish is not None  # validated
            if self.race.finish < self.start or self.race.first_start > self.end:
                raise ValueError(
                    f"the race ({self.race.first_start}-{self.race.finish}) does not overlap "
                    f"the event {self.start}-{self.end}"
                )
        elif self.race is not None:
            starts = self.race.start_times(self.date)
            if not self.start <= starts[0].time() <= self.end:
                raise ValueError(
                    f"race.first_start {self.race.first_start} is outside the event "
                    f"{self.start}-{self.end}"
                )
        return self

    @property
    def duration_s(self) -> float:
        """Length of the simulated period in seconds."""
        return (self.end_datetime - self.start_datetime).total_seconds()

    @property
    def start_datetime(self) -> dt.datetime:
        """Start as a time-zone-aware datetime."""
        return dt.datetime.combine(self.date, self.start, tzinfo=ZoneInfo(self.timezone))

    @property
    def end_datetime(self) -> dt.datetime:
        """End as a time-zone-aware datetime."""
        return dt.datetime.combine(self.date, self.end, tzinfo=ZoneInfo(self.timezone))


class BboxConfig(_Section):
    """A box in WGS84 degrees."""

    south: Lat
    west: Lon
    north: Lat
    east: Lon

    @model_validator(mode="after")
    def _ordered(self) -> BboxConfig:
        if self.south >= self.north or self.west >= self.east:
            raise ValueError("needs south < north and west < east")
        return self


class StreetsConfig(_Section):
    """Where the street graph comes from (DESIGN §3, Streets)."""

    source: Literal["auto", "file", "place", "sketch"] = Field(
        "auto",
        description="auto: file if given, else the place (cached, then online), else sketch",
    )
    file: Path | None = Field(None, description=".osm, .osm.bz2, .osm.gz, .osm.pbf, .graphml")
    place: str | None = Field(None, description="osmnx place query, e.g. 'Brussels, Belgium'")
    bbox: BboxConfig | None = Field(None, description="cut the loaded graph to this box")
    sketch_spacing_m: float = Field(200.0, ge=50.0, le=2000.0)
    sketch_seed: int = Field(0, ge=0, description="fixes the sketch's layout, not the run")

    @model_validator(mode="after")
    def _source_has_what_it_needs(self) -> StreetsConfig:
        if self.source == "file" and self.file is None:
            raise ValueError("source = 'file' needs file = 'path/to/extract.osm.bz2'")
        if self.source == "place" and not self.place:
            raise ValueError("source = 'place' needs place = 'Brussels, Belgium' (or similar)")
        return self


class WaypointConfig(_Section):
    """A point the course passes, in order."""

    name: str = Field(min_length=1)
    lat: Lat
    lon: Lon
    kind: Literal["start", "via", "checkpoint", "finish"] = "via"
    km: float | None = Field(
        None,
        ge=0,
        le=MAX_LENGTH_M / 1000,
        description="published km mark (check points; both ends of a gap)",
    )
    gap: bool = Field(
        False,
        description="the race leaves the simulated streets after this waypoint and comes "
        "back at the next one; nothing is walked between them and the km marks jump by "
        "the difference of their published km (both need km)",
    )
    time: LocalTime | None = Field(
        None, description="road stages: the head of the race passes here (published timetable)"
    )


class CrossingConfig(_Section):
    """A named point, e.g. a crossing point of the course."""

    name: str = ""
    lat: Lat
    lon: Lon


class RouteConfig(_Section):
    """The event course: ordered waypoints joined by shortest walking paths.

    A waypoint with ``gap = true`` ends a piece of the course: a road stage that rides out
    of the simulated streets there and comes back at the next waypoint. Both carry their
    published ``km``; the distance between them counts in the course km but is not walked.
    """

    name: str = Field(min_length=1)
    waypoints: list[WaypointConfig] = Field(min_length=2)
    crossings: list[CrossingConfig] = Field(default_factory=list)
    max_snap_m: Metres = Field(
        150.0, gt=0, description="how far a waypoint may lie from the nearest street node"
    )

    @model_validator(mode="after")
    def _start_to_finish(self) -> RouteConfig:  # noqa: C901 - one rule of the route each
        kinds = [w.kind for w in self.waypoints]
        if kinds[0] != "start" or kinds[-1] != "finish":
            raise ValueError("the first waypoint needs kind = 'start' and the last kind = 'finish'")
        inner = [i for i, k in enumerate(kinds[1:-1], start=1) if k in ("start", "finish")]
        if inner:
            raise ValueError(f"waypoints[{inner[0]}]: only the first is a start, the last a finish")
        if len({(w.lat, w.lon) for w in self.waypoints}) == 1:
            raise ValueError(
                "waypoints: all lie at the same place; a course needs a length (move the "
                "finish, or add a waypoint elsewhere)"
            )
        last = len(self.waypoints) - 1
        for i, w in enumerate(self.waypoints):
            if not w.gap:
                continue
            if i == last:
                raise ValueError(
                    f"waypoints[{i}].gap = true on the last waypoint: a gap needs a waypoint "
                    "after it where the race comes back"
                )
            if i == 0 or self.waypoints[i - 1].gap:
                raise ValueError(
                    f"waypoints[{i}].gap = true leaves a piece of the course with a single "
                    "waypoint; each piece needs at least two (no gap on the first waypoint, "
                    "no two gaps in a row)"
                )
            if w.km is None or self.waypoints[i + 1].km is None:
                raise ValueError(
                    f"waypoints[{i}].gap = true needs the published km on waypoints[{i}] and "
                    f"waypoints[{i + 1}] (the distance the race rides outside the streets)"
                )
        marks = [(i, w.km) for i, w in enumerate(self.waypoints) if w.km is not None]
        for (_, a), (j, b) in itertools.pairwise(marks):
            if b <= a:
                raise ValueError(f"waypoints[{j}].km = {b} is not after the previous mark {a}")
        return self


class ClosureConfig(_Section):
    """Streets closed for a period, to traffic (sidewalks widen) or to pedestrians."""

    name: str = Field(min_length=1)
    streets: list[str] = Field(default_factory=list, description="OSM street names")
    course: bool = Field(False, description="the race course itself")
    pieces: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        description="with course = true on a course in pieces (route gaps): which pieces "
        "close (0 = the first, in course order); default all",
    )
    start: LocalTime
    end: LocalTime
    closed_to: Literal["traffic", "pedestrians"] = "traffic"

    @model_validator(mode="after")
    def _something_when(self) -> ClosureConfig:
        if not self.streets and not self.course:
            raise ValueError("name at least one street in streets = [...] or set course = true")
        if self.end <= self.start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        if self.pieces is not None and not self.course:
            raise ValueError("pieces = [...] names pieces of the course; it needs course = true")
        return self


class OriginConfig(_Section):
    """Where spectators come from: a station, a car park or a neighbourhood."""

    name: str = Field(min_length=1)
    lat: Lat
    lon: Lon
    kind: Literal["station", "car_park", "neighbourhood"]
    weight: Weight = Field(1.0, gt=0, description="relative share of spectators (assumption)")
    radius_m: float = Field(
        150.0,
        ge=0,
        le=5000,
        description="street nodes this close are its exits (station exits, car-park gates): "
        "arrivals spread over them and leavers head for the nearest (assumption)",
    )


class FanAreaConfig(_Section):
    """An open area off the course (fan zone, team presentation) where spectators gather.

    It competes with the viewing stretches of the course for arriving spectators; those
    who choose it stand on the open ground around its street nodes (off the street
    segments, like people indoors) until the last team has passed the nearest point of
    the course, plus the same random tail.
    """

    name: str = Field(min_length=1)
    lat: Lat
    lon: Lon
    radius_m: float = Field(
        gt=0, le=2000, description="street nodes this close are its entrances and ground"
    )
    weight: Weight = Field(
        gt=0,
        description="attractiveness relative to a plain viewing stretch of the course "
        "(= 1; the start stretches have 1 + start_weight) (assumption)",
    )
    capacity: int | None = Field(
        None,
        ge=1,
        le=MAX_PEOPLE,
        description="persons it holds; default density_p_m2 * pi * radius_m^2",
    )
    density_p_m2: float = Field(
        1.0,
        gt=0,
        le=5.4,
        description="persons/m2 over the circle when capacity is unset (assumption)",
    )

    @property
    def holds(self) -> int:
        """Persons the area holds."""
        if self.capacity is not None:
            return self.capacity
        return int(self.density_p_m2 * math.pi * self.radius_m**2)


class SpectatorsConfig(_Section):
    """People who come for the race (DESIGN §3, People)."""

    count: int = Field(
        0, ge=0, le=MAX_PEOPLE, description="~200,000 around the 2019 TTT course (DESIGN §3)"
    )
    group_size_max: int = Field(5, ge=1, le=10, description="groups of 1-5 (DESIGN §3)")
    group_size_weights: list[Annotated[Weight, Field(ge=0)]] = Field(
        default_factory=lambda: [0.25, 0.35, 0.15, 0.17, 0.08],
        min_length=1,
        description="relative frequency of groups of 1, 2, ... people, cut at group_size_max "
        "(assumption: mean about 2.5)",
    )
    origins: list[OriginConfig] = Field(default_factory=list)
    fan_areas: list[FanAreaConfig] = Field(
        default_factory=list, description="fan zones off the course that attract spectators"
    )
    piece_shares: list[Annotated[Weight, Field(ge=0)]] = Field(
        default_factory=list,
        description="road stage whose course comes in pieces (route waypoints with gap = "
        "true): relative share of the spectators who come for each piece, in course order; "
        "each piece's crowd arrives around the time the race passes it and watches only "
        "there. Empty: one crowd for the whole course",
    )
    arrival_peak_min: Minutes = Field(
        -60.0,
        description="peak of the arrival curve, minutes relative to the first team's start "
        "(assumption: the crowd was in place around the caravan, DESIGN §3)",
    )
    arrival_sd_min: Minutes = Field(
        60.0, gt=0, description="spread (SD) of the normal arrival curve, minutes (assumption)"
    )
    dwell_tail_min: Minutes = Field(
        15.0, ge=0, description="mean of the exponential stay after the last team (assumption)"
    )
    dwell_without_race_min: Minutes = Field(
        120.0, gt=0, description="stay when the scenario has no race timetable (assumption)"
    )
    early_leaver_share: Share = Field(
        0.1, description="share of groups leaving before the last team passes (assumption)"
    )
    start_weight: Weight = Field(
        6.0, ge=0, description="extra attractiveness near the start (assumption)"
    )
    finish_weight: Weight = Field(
        6.0, ge=0, description="extra attractiveness near the finish (assumption)"
    )
    checkpoint_weight: Weight = Field(
        3.0, ge=0, description="extra attractiveness near a check point (assumption)"
    )
    landmark_weight: Weight = Field(
        1.0, ge=0, description="extra attractiveness near a named waypoint (assumption)"
    )
    landmark_radius_m: Metres = Field(
        500.0, gt=0, description="how far a start/finish/landmark bonus reaches (assumption)"
    )
    distance_decay_m: Metres = Field(
        2500.0, gt=0, description="attractiveness falls as exp(-walk/this) (assumption)"
    )
    viewing_density: float = Field(
        2.5,
        gt=0,
        le=5.4,
        description="persons/m2 a viewing stretch holds; Fruin standing LOS D (assumption)",
    )
    stretch_m: Metres = Field(
        200.0, ge=MIN_ZONE_M, description="length of a viewing stretch of the course (assumption)"
    )

    @model_validator(mode="after")
    def _fan_area_names_unique(self) -> SpectatorsConfig:
        names = [f.name for f in self.fan_areas]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"fan_areas[{i}].name {name!r} is used twice; give each its own")
        return self


class BackgroundConfig(_Section):
    """People in the area anyway: residents and visitors, mostly at home or activity places."""

    count: int = Field(
        0, ge=0, le=MAX_PEOPLE, description="people present besides spectators (assumption)"
    )
    trips_per_day: float = Field(
        2.5, ge=0, le=100, description="walking trips per person per day (assumption)"
    )
    active_hours: float = Field(
        16.0, gt=0, le=24, description="waking hours over which trips spread (assumption)"
    )
    activity_places: int = Field(
        48, ge=1, le=1000, description="number of activity places (shops, parks) (assumption)"
    )
    activity_place_min_width_m: Metres = Field(
        8.0,
        ge=0,
        description=(
            "an activity place only at a street node whose ways out are together at least"
            " this wide: a 4 m street passing through, not the end of a narrow way (assumption)"
        ),
    )
    trip_decay_m: Metres = Field(
        800.0, gt=0, description="trip destinations weighted exp(-walk/this) (assumption)"
    )
    stay_mean_min: Minutes = Field(
        45.0, gt=0, description="mean stay at an activity place, exponential (assumption)"
    )


class PeopleConfig(_Section):
    """Who is in the simulation, and how they walk (DESIGN §3, People)."""

    spectators: SpectatorsConfig = Field(default_factory=SpectatorsConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    free_speed_mps: float = Field(
        1.34, gt=0, le=2.5, description="mean free walking speed (Weidmann 1993, DESIGN §3)"
    )
    free_speed_sd_mps: float = Field(
        0.26, ge=0, le=2.5, description="SD of individual free speeds (Weidmann 1993)"
    )
    jam_density: float = Field(
        5.4, gt=0, le=10, description="persons/m2 at which walking stops (Weidmann 1993, DESIGN §3)"
    )
    q_max: float | None = Field(
        None,
        gt=0,
        le=5,
        description="capacity of a walkway, persons per metre of width per second: the most "
        "a segment sends across a node or receives (cell-transmission node rule, Daganzo "
        "1994/95). Unset: Weidmann's maximum of q = rho v(rho), about 1.22 at 1.75 /m2 "
        "(Weidmann 1993). Short bottlenecks measure 1.6-1.9 (Seyfried et al. 2009; Kretz "
        "et al. 2006): set it in that range to test a more generous capacity",
    )
    reroute_patience_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="a walker kept this long at a node by a full street takes the best other "
        "street with room there (local detour by the same distance tables); jam-triggered "
        "rerouting as in Kemloh Wagoum et al. 2012, the 60 s is an assumption",
    )
    crossing_radius_m: Metres = Field(
        30.0,
        ge=0,
        description="course nodes this close to a route crossing point may be crossed while "
        "the course is closed (assumption)",
    )
    crossing_width_m: float = Field(
        4.0, gt=0, le=100, description="walkable width of a crossing of the course (assumption)"
    )
    origin_max_snap_m: Metres = Field(
        400.0, gt=0, description="how far an origin may lie from the nearest street node"
    )

    @model_validator(mode="after")
    def _spectators_come_from_somewhere(self) -> PeopleConfig:
        if self.spectators.count > 0 and not self.spectators.origins:
            raise ValueError(
                "spectators.count > 0 needs at least one [[people.spectators.origins]]"
            )
        if not any(self.spectators.group_size_weights[: self.spectators.group_size_max]):
            raise ValueError("spectators.group_size_weights: needs a weight > 0 for some size")
        return self


class EventCellConfig(_Section):
    """A temporary event site near the course (a cell on wheels)."""

    name: str = Field(min_length=1)
    lat: Lat
    lon: Lon
    power_dbm: float = Field(40.0, ge=0, le=70, description="per cell (assumption)")
    height_m: float = Field(15.0, ge=1, le=100, description="mast height (assumption)")


class NetworkConfig(_Section):
    """The mobile networks and the operator who estimates (DESIGN §3, Network)."""

    market_shares: dict[str, Share] = Field(
        default_factory=lambda: {"proximus": 0.40, "orange": 0.28, "base": 0.32}
    )
    estimating_operator: str = "proximus"
    phone_ownership: Share = 0.9
    second_device: Share = 0.1
    sites_file: Path | None = Field(
        None, description="CSV of cells (one row per cell); default: a generated lattice"
    )
    inter_site_distance_m: Metres = Field(
        300.0, ge=50, description="inter-site distance in the centre (DESIGN §3: about 300 m)"
    )
    isd_growth_per_km: float = Field(
        0.25,
        ge=0,
        le=100,
        description="relative growth of the inter-site distance per km (assumption)",
    )
    isd_max_m: Metres = Field(1500.0, ge=50, description="largest inter-site distance (assumption)")
    tracking_area_m: Metres = Field(
        5000.0,
        ge=500,
        description="side of the square tracking areas of a generated plan "
        "(assumption: a few dozen sites each)",
    )
    raster_m: float = Field(25.0, ge=5, le=500, description="coverage raster (issue 4: 25 m)")
    shadowing_db: float = Field(
        7.0, ge=0, le=30, description="log-normal shadowing SD (DESIGN: 6-8 dB)"
    )
    decorrelation_m: float = Field(
        50.0,
        ge=1,
        le=10_000,
        description="shadowing decorrelation distance (DESIGN §3: about 50 m)",
    )
    rrc_capacity: int = Field(
        400, ge=1, le=100_000, description="RRC-connected users per cell (DESIGN §3: 300-600)"
    )
    burst_factor: float = Field(
        3.0,
        ge=1,
        le=1000,
        description="spectators' phone use at the race peak vs normal (assumption)",
    )
    event_cells: list[EventCellConfig] = Field(
        default_factory=list, description="temporary sites added for the event"
    )
    mme_workers: int = Field(8, ge=1, le=1024, description="parallel MME processors (assumption)")
    mme_message_ms: float = Field(
        0.8, gt=0, le=60_000, description="MME processing time per message per worker (assumption)"
    )

    @model_validator(mode="after")
    def _shares(self) -> NetworkConfig:
        total = sum(self.market_shares.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"market_shares sum to {total:.3f}; they may sum to at most 1")
        if self.estimating_operator not in self.market_shares:
            raise ValueError(
                f"estimating_operator {self.estimating_operator!r} is not in market_shares "
                f"({', '.join(self.market_shares)})"
            )
        return self


class EstimatorsConfig(_Section):
    """Which estimators run, and their operator-side parameters."""

    methods: list[Literal["presence", "voronoi", "bayes", "em", "hmm"]] = Field(
        default_factory=lambda: list(ESTIMATOR_METHODS),
        min_length=1,
        description="at least one: a run exists to score estimates (an empty list is "
        "refused, not run as 'no estimators')",
    )
    window_min: Minutes = Field(
        60.0, gt=0, description="presence window W (periodic TAU 54 min + margin)"
    )
    latency_min: Minutes = Field(
        1.0,
        ge=0,
        description="records later than the bin start by up to this much are used; 1 = the "
        "bin's end, which the truth's time labels (like for like)",
    )
    privacy_threshold: int = Field(
        30, ge=0, le=MAX_PEOPLE, description="Proximus' published threshold"
    )
    laplace_epsilon: float | None = Field(
        None,
        ge=1e-3,
        le=1e6,
        description="Laplace noise of scale 1/epsilon; none if unset. Below 0.001 the noise "
        "(thousands of people per count) buries every estimate",
    )
    mode: Literal["realtime", "batch"] = Field(
        "realtime", description="realtime: only records up to t + latency; batch: the whole day"
    )
    share_error: float = Field(
        -0.05,
        gt=-1,
        le=10,
        description="relative error of the operator's belief in its market share (assumption: "
        "an operator knows its share only approximately)",
    )
    phones_error: float = Field(
        0.05,
        gt=-1,
        le=10,
        description="relative error of its belief in phones per person (assumption)",
    )
    prior: Literal["flat", "event"] = Field(
        "flat",
        description="prior over tiles of bayes and em: flat, or event (the event-aware "
        "prior from the run's public event data: streets, course strip and fan areas while "
        "the course is closed, closures; sim.estimate.priors)",
    )
    prior_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="with prior = 'event': bayes uses (1 - w) flat + w event; em's MAP "
        "update counts the prior as w times each minute's devices and starts from it",
    )
    prior_event_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="with prior = 'event': share of the people expected on the course strip "
        "and fan areas while the course is closed (assumption from public figures: ~200,000 "
        "spectators against a like number of residents and visitors)",
    )
    dedup: bool = Field(
        False,
        description="multi-SIM deduplication: each device counts 1 - p/2 persons, p its "
        "probability (from devices that move together) of being one of a person's two "
        "phones, instead of a fixed phones-per-person factor",
    )
    second_device: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="the operator's belief in the share of people with a second phone "
        "(DESIGN §3: about 0.1); the deduplication's prior",
    )


class AreaConfig(_Section):
    """A named area (start area, finish area, ...) as a circle."""

    name: str = Field(min_length=1)
    lat: Lat
    lon: Lon
    radius_m: float = Field(gt=0, le=50_000)


class ZonesConfig(_Section):
    """Zone systems in which truth and estimates are counted."""

    grid_m: float = Field(
        100.0, ge=MIN_ZONE_M, le=10_000, description="side of a grid tile (issue #3)"
    )
    segment_m: Metres = Field(
        500.0, ge=MIN_ZONE_M, description="length of a course segment (issue #3)"
    )
    segment_buffer_m: float = Field(
        50.0,
        ge=0,
        le=5000,
        description="how far either side of the course a segment reaches (assumption)",
    )
    bin_s: float = Field(
        60.0, gt=0, le=MAX_MINUTES * 60, description="time bin of the counts (issue #3)"
    )
    areas: list[AreaConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _area_names_unique(self) -> ZonesConfig:
        names = [a.name for a in self.areas]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"areas[{i}].name {name!r} is used twice; names identify zones")
        return self


class OutputConfig(_Section):
    """What a run writes besides its tables."""

    report: bool = True
    dpi: int = Field(110, ge=50, le=400)


class Scenario(_Section):
    """A whole scenario. Load one with :func:`load_scenario`."""

    extends: str | None = Field(None, description="base scenario this one overrides")
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(0, ge=0, description="root seed of the run")
    event: EventConfig
    streets: StreetsConfig = Field(default_factory=StreetsConfig)
    route: RouteConfig
    closures: list[ClosureConfig] = Field(default_factory=list)
    people: PeopleConfig = Field(default_factory=PeopleConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    estimators: EstimatorsConfig = Field(default_factory=EstimatorsConfig)
    zones: ZonesConfig = Field(default_factory=ZonesConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _bins_whole_ticks(self) -> Scenario:
        if self.zones.bin_s > self.event.duration_s:
            raise ValueError(
                f"zones.bin_s = {self.zones.bin_s:g} s is longer than the event "
                f"({self.event.duration_s:g} s); a run needs at least one whole bin"
            )
        ratio = self.zones.bin_s / self.event.step_s
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"zones.bin_s = {self.zones.bin_s} is not a whole number of "
                f"event.step_s = {self.event.step_s} ticks"
            )
        return self

    @model_validator(mode="after")
    def _sketch_fits(self) -> Scenario:
        cfg = self.streets
        if not (
            cfg.source == "sketch" or (cfg.source == "auto" and not cfg.file and not cfg.place)
        ):
            return self
        # the sketch is a grid over the waypoints plus a margin (sim.sketch.build_sketch);
        # a waypoint far away (a typo in lat/lon) would ask for a grid of millions of nodes
        lat = [w.lat for w in self.route.waypoints]
        lon = [w.lon for w in self.route.waypoints]
        if (
            min(lat) < SKETCH_LAT[0]
            or max(lat) > SKETCH_LAT[1]
            or (min(lon) < SKETCH_LON[0] or max(lon) > SKETCH_LON[1])
        ):
            raise ValueError(
                f"route.waypoints: the offline sketch is drawn in Belgium (lat {SKETCH_LAT[0]} "
                f"to {SKETCH_LAT[1]}, lon {SKETCH_LON[0]} to {SKETCH_LON[1]}); a waypoint lies "
                f"outside (lat {min(lat)}..{max(lat)}, lon {min(lon)}..{max(lon)}). Check its "
                "lat and lon, or give a street file (streets.file) that covers it"
            )
        height = (max(lat) - min(lat)) * 111_320.0 + 2 * SKETCH_MARGIN_M
        width = (max(lon) - min(lon)) * 111_320.0 * math.cos(math.radians(50.5))
        width += 2 * SKETCH_MARGIN_M
        nodes = (height / cfg.sketch_spacing_m + 1) * (width / cfg.sketch_spacing_m + 1)
        if nodes > SKETCH_MAX_NODES:
            raise ValueError(
                f"route.waypoints span {width / 1000:.0f} x {height / 1000:.0f} km with the "
                "margin: an offline sketch of about "
                f"{nodes:,.0f} nodes at streets.sketch_spacing_m = {cfg.sketch_spacing_m:g} "
                f"(at most {SKETCH_MAX_NODES:,}). Check the waypoints' lat and lon, raise "
                "sketch_spacing_m, or give a street file (streets.file)"
            )
        return self

    @model_validator(mode="after")
    def _race_times_and_pieces(self) -> Scenario:
        waypoints = self.route.waypoints
        race = self.event.race
        timed = [(i, w.time) for i, w in enumerate(waypoints) if w.time is not None]
        if timed and (race is None or race.kind != "road"):
            raise ValueError(
                f"route.waypoints[{timed[0][0]}].time: passing times are for road stages; "
                "set event.race.kind = 'road' (with first_start and finish) or remove them"
            )
        if race is not None and race.kind == "road":
            marks = [(-1, race.first_start), *timed, (len(waypoints), race.finish)]
            for (_, a), (j, b) in itertools.pairwise(marks):
                assert a is not None and b is not None
                if b < a:
                    where = f"route.waypoints[{j}].time" if j < len(waypoints) else "finish"
                    raise ValueError(
                        f"{where} {b} is before the previous passing time {a}; times run "
                        "from event.race.first_start to event.race.finish in course order"
                    )
        shares = self.people.spectators.piece_shares
        pieces = 1 + sum(w.gap for w in waypoints)
        for i, c in enumerate(self.closures):
            wrong = [p for p in c.pieces or [] if p >= pieces]
            if wrong:
                raise ValueError(
                    f"closures[{i}].pieces: piece {wrong[0]} does not exist; the route has "
                    f"{pieces} piece(s), numbered 0 to {pieces - 1}"
                )
        if shares and (len(shares) != pieces or not any(shares)):
            raise ValueError(
                f"people.spectators.piece_shares has {len(shares)} value(s); the route has "
                f"{pieces} piece(s) (waypoints with gap = true + 1): give one share per "
                "piece, at least one > 0"
            )
        if shares and pieces > 1 and (race is None or race.kind != "road"):
            raise ValueError(
                "people.spectators.piece_shares needs event.race.kind = 'road': each piece's "
                "crowd comes for the time the race passes it"
            )
        return self

    @property
    def source(self) -> Path | None:
        """The file this scenario was read from, if any."""
        return self._source

    def where(self, key: str) -> str:
        """Prefix for an error message about `key`: ``'file.toml: key'``."""
        return f"{self._source or '<scenario>'}: {key}"


# ----------------------------------------------------------------------------- loading


def load_scenario(path: str | Path) -> Scenario:
    """Read, merge (``extends``) and validate a scenario file.

    Parameters
    ----------
    path
        The scenario TOML file.

    Returns
    -------
    Scenario
        The validated scenario; relative paths inside it are resolved against the file
        that names them.

    Raises
    ------
    ScenarioError
        If the file is missing or not TOML, or a key is unknown or holds a value that is
        not allowed. The message names the file and the key.
    """
    path = Path(path)
    data = _read_merged(path, seen=())
    return parse_scenario(data, source=path)


def parse_scenario(data: dict[str, Any], *, source: Path | None = None) -> Scenario:
    """Validate a scenario given as a dict (as read from TOML)."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        lines = [describe_error(err) for err in exc.errors()]
        raise ScenarioError(
            f"{source or '<scenario>'}: {len(lines)} problem(s):\n  " + "\n  ".join(lines)
        ) from None
    scenario._source = source
    return scenario


def dump_scenario(scenario: Scenario) -> str:
    """The scenario as resolved (defaults filled in, ``extends`` merged) in TOML."""
    data = scenario.model_dump(mode="json", exclude_none=True)
    # already merged in: keeping it would make the dump re-read a base relative to itself
    data.pop("extends", None)
    return tomli_w.dumps(data)


def _read_merged(path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ScenarioError(f"{path}: extends forms a cycle: {chain}")
    if not path.is_file():
        raise ScenarioError(f"{path}: scenario file not found (give the path to a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text: {exc}") from None
    _resolve_paths(data, path.parent)
    base_name = data.get("extends")
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ScenarioError(f"{path}: extends: needs a path string, got {base_name!r}")
    base = _read_merged(path.parent / base_name, seen=(*seen, resolved))
    base.pop("extends", None)
    return merge_tables(base, data)


def _resolve_paths(data: dict[str, Any], folder: Path) -> None:
    for section, key in PATH_KEYS:
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            value = Path(table[key]).expanduser()
            table[key] = str(value if value.is_absolute() else (folder / value).resolve())


def merge_tables(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` merged in: tables key by key, anything else (lists too)
    replaced whole; the rule of ``extends`` (and of a sweep's ``[set]``)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def _key(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe_error(err: Any, *, root: type[BaseModel] | None = None) -> str:
    """One pydantic validation error as ``key.path: what is wrong`` (with the allowed keys
    for an unknown one); `root` is the model validated (default :class:`Scenario`)."""
    loc = tuple(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], root or Scenario)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{_key(loc)}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{_key(loc)}: required key is missing"
    value = err.get("input")
    got = "" if isinstance(value, dict | list) else f" (got {value!r})"
    if not loc:  # a check across sections: its message names the keys itself
        return msg
    return f"{_key(loc)}: {msg}{got}"


def _allowed_keys(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[str]:
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _inner_model(field.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType) or origin is Annotated:
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None
