"""CrowdModel: the Mesa model of the crowd, with all walkers moved as arrays.

The model is the tick and the decisions. What it reads is built elsewhere: the world
(walking graph, stretches, routes, zones) once in :mod:`sim.crowd.world`; the people's
state arrays and codes in :mod:`sim.crowd.people`; who leaves when in
:mod:`sim.crowd.calendar`; the movement kernels (pure array functions) in
:mod:`sim.crowd.movement`; the truth it records in :mod:`sim.crowd.truth`.

Mesa is the skeleton: the model owns the seeded ``rng``, its agents (one
:class:`SpectatorGroup` per group, one :class:`BackgroundPopulation`) sit in Mesa's
AgentSet, and a DataCollector records model-level series once per time bin. Agents decide
(where to watch, when to leave) at the moment something happens to them; every walker's
movement is one vectorised NumPy update per tick over flat arrays (``self.people``).

A person is in exactly one state every tick: ``pending`` (not yet come), ``waiting`` (at
a node, wanting to go on), ``walking`` (on an edge), ``staying`` (watching the race on a
course sidewalk, or indoors at home or an activity place) or ``gone`` (left the area).
Walkers sit at an offset along an edge and walk at ``v0 share(min(rho, rho_c))``, Weidmann's
relation at the density of the moving part of their segment (both directions share it;
people queued at its end or standing to watch are not moving). Walkers who reach the end
of an edge queue there. Nodes follow the cell-transmission rule (Daganzo 1994/95,
:mod:`sim.crowd.movement`): per tick a segment sends across its downstream node at most
its demand and receives at most its supply (never above jam density), first come first
served, with fractional capacity carried over between ticks; opposite queues at a node
trade places within both segments' demand. A walker held longer than
``people.reroute_patience_s`` takes the best other street with room (a local detour by
the same distance tables). A walker who reaches a node with time left in
the tick walks on (up to ``MAX_HOPS`` edges a tick).
Routes come from shortest-path trees (:mod:`sim.crowd.routing`) rebuilt whenever closures
change; people on an edge that closes step off it to its nearer end and are routed from
there. While the course is closed it can be crossed only at crossing points
(:mod:`sim.crowd.walkgraph`).

Who decides what: a :class:`SpectatorGroup` chooses its viewing stretch and its time to
leave in Python when it arrives (once per group). Decisions that come in bulk at a tick
(give up on a full stretch and move on, reroute when a destination is cut off, the
background's trips) are drawn for the whole batch at once with the same rules. The tick
itself touches only the people waiting or walking, and those due to leave (event lists).

Outcomes that are not a normal visit are counted in ``outcomes`` and reported: turned away
(every stretch full when they arrived), course unreachable from their origin, moved on
from a full stretch, went home without a spot, no route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import mesa
import numpy as np
from mesa.agent import AgentSet

from sim.course import Course
from sim.crowd.agents import BackgroundPopulation, SpectatorGroup
from sim.crowd.calendar import DepartureCalendar
from sim.crowd.closures import open_edges
from sim.crowd.demand import choice_log_weight, plan_spectators
from sim.crowd.movement import Credit, FundamentalDiagram, admit, swaps, weidmann_speed
from sim.crowd.people import (
    BACKGROUND,
    GONE,
    PENDING,
    SPECTATOR,
    STATES,
    STAYING,
    WAITING,
    WALKING,
    People,
    PositionSnapshot,
)
from sim.crowd.queues import held_at_nodes
from sim.crowd.truth import TruthRecorder
from sim.crowd.world import CrowdWorld, build_world
from sim.scenario import Scenario
from sim.streets import Streets

__all__ = ["STATES", "CrowdModel", "People", "PositionSnapshot"]  # the last three: people.py

#: Most edges a walker may enter in one tick (short edges are walked through).
MAX_HOPS = 4


class CrowdModel(mesa.Model):
    """Spectators and background population walking the streets during the event.

    Parameters
    ----------
    scenario
        The validated scenario.
    streets
        The street graph.
    course
        The course on it.
    seed
        Seed of the model's generator (an int or a ``numpy.random.SeedSequence``, e.g.
        ``ctx.seeds["crowd"]``); every random draw of the crowd comes from ``self.rng``.
    world
        The world built by :func:`~sim.crowd.world.build_world` for these inputs (built
        here by default; pass one to share it between runs: it is never modified).
    truth
        Makes the truth recorder from the world (by default a
        :class:`~sim.crowd.truth.TruthRecorder` of the scenario's zones and bins).

    Raises
    ------
    ScenarioError
        An origin lies outside the street data, or a named area does.
    """

    def __init__(
        self,
        scenario: Scenario,
        streets: Streets,
        course: Course,
        *,
        seed: int | np.random.SeedSequence,
        world: CrowdWorld | None = None,
        truth: Callable[[CrowdWorld], TruthRecorder] | None = None,
    ) -> None:
        super().__init__(rng=seed)
        self._seed = seed
        self.scenario = scenario
        self.streets = streets
        self.course = course
        people_cfg = scenario.people
        event = scenario.event
        self.dt = event.step_s
        self.n_ticks = round(event.duration_s / self.dt)
        self.bin_ticks = round(scenario.zones.bin_s / self.dt)
        self.tick = 0
        self.jam = people_cfg.jam_density
        self.fd = FundamentalDiagram(
            people_cfg.free_speed_mps, jam_density=self.jam, q_max=people_cfg.q_max
        )
        self._patience = people_cfg.reroute_patience_s

        # the world, built once (its only random draw, the activity places, comes first)
        w = build_world(scenario, streets, course, rng=self.rng) if world is None else world
        self.world = w
        g = self.graph = w.graph
        self.stretches = w.stretches
        self._last_pass = w.last_pass_s
        self._origin_node = w.origin_node
        self._place_node = w.place_node
        self._o0, self._p0 = w.o0, w.p0
        self._origin_exits = w.origin_exits
        self.routes = w.routes
        self._connector_piece = w.connector_piece
        self._closures = w.closures
        self._seg_len = w.seg_len
        self._edge_seg = w.edge_seg
        self._out, self._out_start = w.out, w.out_start
        self._view_cap = w.view_cap
        self._stretch_side = w.stretch_side
        self.places, self.zones = w.places, w.zones
        self.detours = 0
        self._open = np.ones(g.n_edges, dtype=bool)
        self._extra_width = np.zeros(g.n_edges)
        self._closures_on: tuple[bool, ...] | None = None
        # node rule accumulators (walkers' worth of capacity): what each directed edge may
        # still send across its head, what each segment may still receive
        self._send = np.ones(g.n_edges)
        self._recv = np.ones(g.n_segs)
        self._viewers = np.zeros(g.n_segs, dtype=np.int64)
        self._committed = np.zeros(self.stretches.n, dtype=np.int64)

        # people
        windows = None
        if event.race is not None and event.race.kind == "road":
            # a road race: each piece's crowd comes for the time the race passes it
            ends = course.piece_m
            head = [course.passes_s(event, ends[:, i]) for i in (0, 1)]
            windows = np.column_stack(head) - 60.0 * event.race.tail_min
        plan = plan_spectators(people_cfg.spectators, event, rng=self.rng, windows=windows)
        n_spec = len(plan.member_group)
        n_bg = people_cfg.background.count
        n = n_spec + n_bg
        v0 = self.rng.normal(people_cfg.free_speed_mps, people_cfg.free_speed_sd_mps, n)
        self.people = People(
            kind=np.concatenate([np.zeros(n_spec, np.int8), np.ones(n_bg, np.int8)]),
            state=np.full(n, PENDING, dtype=np.int8),
            edge=np.full(n, -1, dtype=np.int32),
            s=np.zeros(n),
            node=np.zeros(n, dtype=np.int32),
            dest=np.full(n, -1, dtype=np.int32),
            free_speed=np.clip(v0, 0.3, 2.5),
            since=np.zeros(n),
            leave_s=np.full(n, np.inf),
            origin=np.concatenate([plan.group_origin[plan.member_group], np.full(n_bg, -1)]).astype(
                np.int64
            ),
            place=np.full(n, -1, dtype=np.int64),
            want=np.full(n, -1, dtype=np.int32),
        )
        self.n_spectators = n_spec
        # a course in pieces with a crowd per piece: who watches which piece, and the
        # piece of each stretch (-1 for everybody: any stretch)
        self._stretch_piece = course.piece_at(self.stretches.course_m)
        self._row_piece = np.full(n, -1, dtype=np.int64)
        if plan.group_piece is not None and len(people_cfg.spectators.piece_shares) > 1:
            self._row_piece[:n_spec] = plan.group_piece[plan.member_group]
        starts = np.concatenate([[0], np.cumsum(plan.group_size)])
        self.groups: list[SpectatorGroup] = [
            SpectatorGroup(self, slice(int(a), int(b)), int(o), float(t))
            for a, b, o, t in zip(
                starts[:-1], starts[1:], plan.group_origin, plan.group_arrive_s, strict=True
            )
        ]
        self._arrival_order = np.argsort(plan.group_arrive_s, kind="stable")
        self._arrive_s = plan.group_arrive_s[self._arrival_order]
        self._next_group = 0
        self.background = BackgroundPopulation(self, slice(n_spec, n))
        if n_bg:
            home = self.rng.choice(np.arange(streets.n_nodes), size=n_bg)
            rows = np.arange(n_spec, n)
            self.people.state[rows] = STAYING
            self.people.node[rows] = home
            self.people.leave_s[rows] = self.background.next_trip_after(n_bg)

        # event lists, so the tick never scans everybody: who is due to move on at each
        # tick, and who is waiting or walking
        self.calendar = DepartureCalendar(self.dt)
        self._active = np.zeros(0, dtype=np.int64)
        self._tick_states: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._is_active = np.zeros(n, dtype=bool)
        self._spare = np.zeros(n)  # time left in the tick after reaching a node
        if n_bg:
            self._schedule(np.arange(n_spec, n))
        self.occ = np.zeros(g.n_segs, dtype=np.int64)
        self.outcomes = {
            "turned_away_no_room": 0,
            "unreachable_course": 0,
            "moved_on_full_stretch": 0,
            "went_home_without_spot": 0,
            "no_route": 0,
        }
        self._entered: list[np.ndarray] = []
        self._observers: list[Callable[[CrowdModel], None]] = []
        self._spectator_mask: np.ndarray | None = None  # kinds never change; built once

        # place of everybody staying (they do not move, so it is computed once)
        self._still_place = self.places.node_place + self.people.node.astype(np.int64)
        self.truth = (
            TruthRecorder(
                self.zones,
                g,
                street_node_id=streets.node_id,
                street_u=streets.edge_u,
                street_v=streets.edge_v,
                start=event.start_datetime,
                bin_s=scenario.zones.bin_s,
            )
            if truth is None
            else truth(w)
        )
        self._tally = np.zeros((len(STATES), 2), dtype=np.int64)  # state x kind, per bin
        self.datacollector = mesa.DataCollector(
            model_reporters={name: _state_count(code) for code, name in enumerate(STATES)}
            | {"spectators_present": _spectators_present, "watching": _watching}
        )
        self._apply_closures(0.0)
        self._check_reachability()

    # ------------------------------------------------------------------ setup helpers

    def _check_reachability(self) -> None:
        """Count origins from which no stretch can be reached (reported, not fatal)."""
        S = self.stretches.n
        reach = np.isfinite(self.routes.dist[:S][:, self._origin_node]).any(axis=0)
        self.unreachable_origins = [
            self.scenario.people.spectators.origins[i].name for i in np.flatnonzero(~reach)
        ]

    # ------------------------------------------------------------------ event lists

    def _schedule(self, rows: np.ndarray) -> None:
        """File `rows` in the departure calendar under the tick their ``leave_s`` falls
        in (stale entries are dropped when the tick comes)."""
        self.calendar.schedule(rows, self.people.leave_s[rows], self.tick)

    def _activate(self, rows: np.ndarray) -> None:
        """Add `rows` (now waiting or walking) to the list the tick works on."""
        new = np.unique(rows[~self._is_active[rows]])
        self._is_active[new] = True
        self._active = np.concatenate([self._active, new])

    def _prune_active(self) -> np.ndarray:
        """Drop rows no longer waiting or walking; returns the state of those kept."""
        p = self.people
        st = p.state[self._active]
        keep = (st == WAITING) | (st == WALKING)
        self._is_active[self._active[~keep]] = False
        self._active = self._active[keep]
        return st[keep]

    # ------------------------------------------------------------------ closures

    def _apply_closures(self, t: float) -> None:
        active = tuple(c.active(t) for c in self._closures)
        if active == self._closures_on:
            return
        g = self.graph
        open_, extra = open_edges(g, self._closures, active, self._connector_piece)
        self._closures_on = active
        self._open = open_
        self._extra_width = extra
        self._set_widths(g.seg_width(extra))
        # viewing room of each stretch on sidewalks open to pedestrians (a stretch in a
        # closed road tunnel offers none): spectators choose by this room
        st = self.stretches
        shut = ~open_[st.edges]
        which = np.repeat(np.arange(st.n), np.diff(st.edge_start))
        lost = np.bincount(which[shut], weights=st.edge_capacity[shut], minlength=st.n)
        self._open_cap = st.capacity - lost.astype(np.int64)
        self.routes.rebuild(open_)
        if hasattr(self, "people"):
            self.people.want[:] = -1  # routes changed: decide again
        if self.tick > 0 or t > 0:
            self._step_off_closed()

    def _set_widths(self, width: np.ndarray) -> None:
        """Usable width of every segment: its area, room and node capacities per tick."""
        self.seg_width = width
        self.seg_area = self._seg_len * width
        self.seg_cap = np.floor(self.jam * self.seg_area).astype(np.int64)
        # capacity per tick: sending across an edge's head, receiving below rho_c
        self._recv_cap = self.fd.q_max * width * self.dt
        self._send_cap = self._recv_cap[self._edge_seg]
        self._recv_top, self._send_top = self._recv_cap + 1.0, self._send_cap + 1.0
        self._dense_occ = self.fd.rho_c * self.seg_area  # above: supply below capacity

    def _step_off_closed(self) -> None:
        """People on an edge that just closed step off to its nearer end."""
        p, g = self.people, self.graph
        on = np.flatnonzero((p.edge >= 0) & ~self._open[np.maximum(p.edge, 0)])
        if len(on) == 0:
            return
        e = p.edge[on]
        _bump(self.occ, g.seg[e], -1)
        watching = (p.state[on] == STAYING) & (p.kind[on] == SPECTATOR)
        _bump(self._viewers, g.seg[e[watching]], -1)
        p.node[on] = np.where(p.s[on] > g.length[e] / 2, g.ev[e], g.eu[e])
        p.edge[on] = -1
        p.state[on] = WAITING
        p.want[on] = -1
        p.since[on] = self.tick * self.dt
        self._activate(on)

    # ------------------------------------------------------------------ the tick

    def step(self) -> None:
        """Advance one tick: closures, arrivals, departures, node decisions, movement."""
        t = self.tick * self.dt
        self._apply_closures(t)
        self._entered = []
        self._arrivals(t)
        self._departures(t)
        self._move(t)
        entered = np.concatenate(self._entered) if self._entered else np.zeros(0, np.int64)
        self.truth.add_tick(self.occ, entered)
        self.tick += 1
        if self.tick % self.bin_ticks == 0 or self.tick == self.n_ticks:
            self._close_bin()
        for observer in self._observers:
            observer(self)

    def _move(self, t: float) -> None:
        """The movement of one tick: node capacities, node decisions, walking."""
        self._refill()
        self._at_nodes(t)
        self._walk(t)

    def run(self) -> CrowdModel:
        """Run every tick of the event and return the model."""
        while self.tick < self.n_ticks:
            self.step()
        return self

    def add_observer(self, observer: Callable[[CrowdModel], None]) -> None:
        """Call `observer(model)` after every tick (e.g. to read :meth:`positions`)."""
        self._observers.append(observer)

    def iter_positions(self) -> Iterator[PositionSnapshot]:
        """Step through the remaining ticks, yielding everybody's position after each."""
        while self.tick < self.n_ticks:
            self.step()
            yield self.positions()

    def fresh(self) -> CrowdModel:
        """A new model with the same inputs and seed: replays exactly the same crowd."""
        return CrowdModel(self.scenario, self.streets, self.course, seed=self._seed)

    def _log_weight(self, origin_node: np.ndarray) -> np.ndarray:
        """``(len(origin_node), n_stretches)`` log-weights of a viewing-spot choice."""
        st = self.stretches
        spec = self.scenario.people.spectators
        dist = self.routes.dist[: st.n][:, origin_node].T.astype(float)
        return choice_log_weight(
            st.attractiveness,
            self._open_cap - self._committed,
            st.capacity,
            dist,
            st.fan,
            distance_decay_m=spec.distance_decay_m,
        )

    def _piece_only(self, lw: np.ndarray, piece: np.ndarray) -> np.ndarray:
        """Rule out, in place, the stretches outside each row's piece of the course
        (`piece` per row of `lw`; -1: any piece)."""
        bound = piece >= 0
        if bound.any():
            lw[bound] = np.where(
                self._stretch_piece[None, :] == piece[bound, None], lw[bound], -np.inf
            )
        return lw

    def _arrivals(self, t: float) -> None:
        end = int(np.searchsorted(self._arrive_s, t, side="right"))
        if end <= self._next_group:
            return
        due = [self.groups[i] for i in self._arrival_order[self._next_group : end]]
        self._next_group = end
        p = self.people
        weights: dict[tuple[int, int], np.ndarray] = {}
        arrived: list[np.ndarray] = []
        st = self.stretches
        decay = self.scenario.people.spectators.distance_decay_m
        for group in AgentSet(due, random=self.random):
            o = group.origin
            key = (o, int(self._row_piece[group.members.start]))
            if key not in weights:
                weights[key] = self._piece_only(
                    self._log_weight(self._origin_node[[o]]), self._row_piece[[group.members.start]]
                )[0]
            k = group.choose_viewing_spot(weights[key])
            while k >= 0 and st.fan[k] and self._open_cap[k] - self._committed[k] < group.size:
                # the whole group does not fit in the fan area: choose among the rest
                rest = weights[key].copy()
                rest[k] = -np.inf
                k = group.choose_viewing_spot(rest)
            rows = group.members
            if k < 0:
                reachable = np.isfinite(self.routes.dist[: st.n, self._origin_node[o]]).any()
                key = "turned_away_no_room" if reachable else "unreachable_course"
                self.outcomes[key] += group.size
                p.state[rows] = GONE
                continue
            self._committed[k] += group.size
            left = self._open_cap[k] - self._committed[k]
            weights[key][k] = choice_log_weight(  # the room left changed: update its weight
                st.attractiveness[k],
                left,
                st.capacity[k],
                float(self.routes.dist[k, self._origin_node[o]]),
                st.fan[k],
                distance_decay_m=decay,
            )
            group.decide_when_to_leave(t, float(self._last_pass[k]))
            p.state[rows] = WAITING
            exits = self._origin_exits[o]
            p.node[rows] = exits[self.rng.integers(len(exits))]
            p.dest[rows] = k
            p.want[rows] = -1
            p.since[rows] = t
            p.leave_s[rows] = group.leave_s
            arrived.append(np.arange(rows.start, rows.stop))
        if arrived:
            self._activate(np.concatenate(arrived))

    def _departures(self, t: float) -> None:
        p = self.people
        due = self.calendar.pop(self.tick)
        if due is None:
            return
        rows = np.unique(due)
        rows = rows[(p.state[rows] == STAYING) & (p.leave_s[rows] <= t)]
        if len(rows) == 0:
            return
        spec = rows[p.kind[rows] == SPECTATOR]
        bg = rows[p.kind[rows] == BACKGROUND]
        if len(spec):
            watching = spec[p.edge[spec] >= 0]
            _bump(self._viewers, self.graph.seg[p.edge[watching]], -1)
            stretch = p.dest[spec]
            self._committed -= np.bincount(
                stretch[stretch < self.stretches.n], minlength=self.stretches.n
            )
            p.dest[spec] = self._o0 + p.origin[spec]
        if len(bg):
            cur = np.where(p.edge[bg] >= 0, self.graph.ev[np.maximum(p.edge[bg], 0)], p.node[bg])
            dist = self.routes.dist[self._p0 :][:, cur].T.astype(float)
            place = self.background.choose_places(dist, p.place[bg])
            stay = place < 0
            p.leave_s[bg[stay]] = t + self.background.next_trip_after(int(stay.sum()))
            self._schedule(bg[stay])
            go = bg[~stay]
            p.place[go] = place[~stay]
            p.dest[go] = self._p0 + place[~stay]
            rows = np.concatenate([spec, go])
        p.leave_s[rows] = np.inf
        p.want[rows] = -1
        p.state[rows] = np.where(p.edge[rows] >= 0, WALKING, WAITING)
        p.since[rows] = t
        self._activate(rows)

    def _at_nodes(self, t: float, rows: np.ndarray | None = None) -> np.ndarray:
        """Walkers at a node: arrive, or queue for the next edge of their route.

        The route decision is taken once, when a walker reaches the node (``want``); the
        queue then only asks each tick whether the wanted segment has room, first come
        first served. `rows` limits this to some walkers (those who reached a node during
        this tick's walk); returns the rows that entered a new edge.
        """
        p, g, r = self.people, self.graph, self.routes
        if rows is None:
            st = self._prune_active()
            pos = np.flatnonzero(st == WAITING)
            rows = self._active[pos]
            # for _walk: only these rows can change state before it (to walking or off)
            self._tick_states = (st, pos, rows)
        none = np.zeros(0, dtype=np.int64)
        if len(rows) == 0:
            return none
        new = rows[p.want[rows] < 0]
        if len(new):
            on = p.edge[new]
            cur = np.where(on >= 0, g.ev[np.maximum(on, 0)], p.node[new])
            # one flat index into both (destination x node) tables, not two 2-D gathers
            at = p.dest[new].astype(np.intp) * g.n_nodes + cur
            arrived = r.dist.ravel()[at] == 0
            if arrived.any():
                self._arrive(new[arrived], cur[arrived], t)
                new, cur, at = new[~arrived], cur[~arrived], at[~arrived]
            nxt = r.next_edge.ravel()[at].astype(np.int64)
            lost = nxt < 0
            p.want[new[~lost]] = nxt[~lost]
            if lost.any():
                self._reroute(new[lost], cur[lost], t)
            rows = rows[p.state[rows] == WAITING]
        queue = rows[p.want[rows] >= 0]
        if len(queue) == 0:
            return none
        nxt = p.want[queue]
        want = self._edge_seg[nxt]
        since = p.since[queue]
        own_edge = p.edge[queue]
        on = own_edge >= 0
        # demand: the first walkers of each edge's queue, as many as it may still send
        sent = np.ones(len(queue), dtype=bool)  # walkers at a node (not on an edge) may go
        if on.any():
            sent[on] = admit(own_edge[on], since[on], Credit(self._send))
        cand = np.flatnonzero(sent)
        own = np.where(on, self._edge_seg[np.maximum(own_edge, 0)], -1)
        # counterflow: opposite queues within demand trade places (no room needed)
        swap = swaps(own[cand], want[cand], since[cand])
        rest = cand[~swap]
        ok = admit(want[rest], since[rest], self._room())  # supply, first come first served
        go = np.concatenate([cand[swap], rest[ok]])
        self._spend(self._recv, want[rest[ok]])
        moved = self._enter(queue[go], nxt[go], want[go])
        # who has waited out their patience and is still held by the street ahead (not
        # by their own edge's demand): a detour, if there is one
        held = sent.copy()
        held[go] = False
        held &= since <= t - self._patience
        if held.any():
            rows, nxt = self._detours(queue[held])
            if len(rows):
                want = self._edge_seg[nxt]
                ok = admit(want, p.since[rows], self._room())
                self.detours += int(ok.sum())
                self._spend(self._recv, want[ok])
                moved = np.concatenate([moved, self._enter(rows[ok], nxt[ok], want[ok])])
        return moved

    def _room(self) -> Credit:
        """Walkers each segment may receive now: its supply left, within its room (read
        only at the segments asked for)."""
        return Credit(self._recv, self.seg_cap, self.occ)

    def _spend(self, credit: np.ndarray, index: np.ndarray) -> None:
        """One walker's worth of capacity less in ``credit[index]`` for every entry."""
        if len(index) * 4 < len(credit):
            np.subtract.at(credit, index, 1.0)
        elif len(index):
            credit -= np.bincount(index, minlength=len(credit))

    def _refill(self) -> None:
        """Add this tick's capacity to the node rule's accumulators.

        Every edge may send ``q_max w dt`` across its head: the queue at the end of a
        segment discharges at capacity (``q(min(rho, rho_c))`` with the queue at
        ``rho >= rho_c``), while in free flow walkers reach the end at the flow of their
        own density by walking. A segment receives ``q(max(rho, rho_c)) w dt``: capacity
        below the critical density, less and less towards jam density.
        """
        # in place over the full arrays (refill's rule), then the few dense segments again
        self._send += self._send_cap
        np.minimum(self._send, self._send_top, out=self._send)
        dense = np.flatnonzero(self.occ > self._dense_occ)
        before = self._recv[dense]
        self._recv += self._recv_cap
        np.minimum(self._recv, self._recv_top, out=self._recv)
        if len(dense):
            rho = self.occ[dense] / self.seg_area[dense]
            supply = self.fd.supply(rho) * self.seg_width[dense] * self.dt
            self._recv[dense] = np.minimum(before + supply, supply + 1.0)

    def _enter(self, rows: np.ndarray, nxt: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Walkers `rows` leave their edge (if on one) and enter edges `nxt` (segments
        `seg`) at offset 0; returns `rows`."""
        p, g = self.people, self.graph
        old = p.edge[rows]
        had = old >= 0
        _bump(self.occ, g.seg[old[had]], -1)
        _bump(self.occ, seg, 1)
        self._spend(self._send, old[had])
        p.edge[rows] = nxt
        p.s[rows] = 0.0
        p.state[rows] = WALKING
        p.want[rows] = -1
        self._entered.append(seg)
        return rows

    def _detours(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The best other edge with room at the node of each held walker, if any.

        A walker who has waited out ``people.reroute_patience_s`` for the edge of its
        route looks at the node's other open out-edges ``e`` whose segment has room and
        takes the one minimising ``length(e) + dist[dest, head(e)]``, a local detour by the
        same distance tables. Ruled out: the wanted edge, the walker's own segment (the way
        it came: the route from there leads straight back) and any edge whose head's route
        leads straight back to this node; where nothing is left the walker keeps waiting.
        One pass over the out-edges of the walkers' nodes (CSR), no per-walker loop.

        Returns the rows that have a detour and the edge each takes.
        """
        p, g, r = self.people, self.graph, self.routes
        room = self._room()
        on = p.edge[rows]
        cur = np.where(on >= 0, g.ev[np.maximum(on, 0)], p.node[rows]).astype(np.intp)
        own = np.where(on >= 0, self._edge_seg[np.maximum(on, 0)], -1)
        # cheap filter first: a node needs an open out-edge with room besides the own one
        has_room = self._open & (room[self._edge_seg] > 0)
        n_room = np.bincount(g.eu[has_room], minlength=g.n_nodes)
        alt = n_room[cur] - ((own >= 0) & (room[np.maximum(own, 0)] > 0))
        keep = alt > 0
        rows, cur, own = rows[keep], cur[keep], own[keep]
        if len(rows) == 0:
            return rows, np.zeros(0, dtype=np.intp)
        start = self._out_start[cur]
        deg = self._out_start[cur + 1] - start
        owner = np.repeat(np.arange(len(rows)), deg)
        ends = np.cumsum(deg)
        pos = np.arange(len(owner)) - np.repeat(ends - deg, deg)
        e = self._out[np.repeat(start, deg) + pos]
        head = g.ev[e]
        at = p.dest[rows].astype(np.intp)[owner] * g.n_nodes + head
        cost = g.length[e] + r.dist.ravel()[at]
        then = r.next_edge.ravel()[at]
        back = (then >= 0) & (g.ev[np.maximum(then, 0)] == cur[owner])
        seg = self._edge_seg[e]
        bad = ~has_room[e] | back | (seg == own[owner]) | (e == p.want[rows][owner])
        cost[bad] = np.inf
        best = np.minimum.reduceat(cost, ends - deg)
        pick = np.flatnonzero(np.isfinite(cost) & (cost == best[owner]))
        who, first = np.unique(owner[pick], return_index=True)
        return rows[who], e[pick[first]].astype(np.intp)

    def _arrive(self, rows: np.ndarray, cur: np.ndarray, t: float) -> None:
        p, g = self.people, self.graph
        S = self.stretches.n
        dest = p.dest[rows]
        view = dest < S
        home = (p.kind[rows] == SPECTATOR) & ~view
        place = p.kind[rows] == BACKGROUND
        # leaving the area or going indoors: off the street
        off = rows[home | place]
        on_edge = off[p.edge[off] >= 0]
        _bump(self.occ, g.seg[p.edge[on_edge]], -1)
        p.node[off] = np.where(p.edge[off] >= 0, g.ev[np.maximum(p.edge[off], 0)], p.node[off])
        p.edge[off] = -1
        p.state[rows[home]] = GONE
        bg = rows[place]
        p.state[bg] = STAYING
        self._still_place[bg] = self.places.node_place + p.node[bg]
        p.leave_s[bg] = t + self.background.stay_for(len(bg))
        self._schedule(bg)
        if view.any():
            self._take_place(rows[view], cur[view], t)

    def _take_place(self, rows: np.ndarray, cur: np.ndarray, t: float) -> None:
        """Spectators at their stretch take a spot on the sidewalk if there is room.

        At a fan area they step off the street onto its open ground at the node they
        reached (its room was reserved when they chose it).
        """
        p, g = self.people, self.graph
        fan = self.stretches.fan[p.dest[rows]]
        if fan.any():
            self._enter_fan_area(rows[fan], cur[fan])
            rows, cur = rows[~fan], cur[~fan]
            if len(rows) == 0:
                return
        side = (cur >= self.streets.n_nodes).astype(np.int64)
        pick = np.empty(len(rows), dtype=np.int64)
        u = self.rng.random(len(rows))
        start, edges = self._stretch_side
        key = p.dest[rows] * 2 + side
        count = start[key + 1] - start[key]
        pick[:] = edges[start[key] + (u * count).astype(np.int64)]
        seg = g.seg[pick]
        room = np.minimum(self._view_cap - self._viewers, self.seg_cap - self.occ)
        room[seg[~self._open[pick]]] = 0  # a sidewalk closed to pedestrians holds nobody
        old = p.edge[rows]
        ok = admit(seg, p.since[rows], room)
        placed, seg_ok, old_ok = rows[ok], seg[ok], old[ok]
        had = old_ok >= 0
        _bump(self.occ, g.seg[old_ok[had]], -1)
        _bump(self.occ, seg_ok, 1)
        _bump(self._viewers, seg_ok, 1)
        p.edge[placed] = pick[ok]
        p.s[placed] = self.rng.random(len(placed)) * g.length[pick[ok]]
        p.state[placed] = STAYING
        self._still_place[placed] = self.places.of(
            p.edge[placed], p.s[placed], p.node[placed], g.length
        )
        self._schedule(placed)  # watchers stepped off a closed edge keep their time
        full = rows[~ok]
        if len(full):
            self.outcomes["moved_on_full_stretch"] += len(full)
            self._choose_again(full, cur[~ok], t)

    def _enter_fan_area(self, rows: np.ndarray, cur: np.ndarray) -> None:
        """Spectators at a fan area leave the street segments and stay at node `cur`."""
        p, g = self.people, self.graph
        on_edge = rows[p.edge[rows] >= 0]
        _bump(self.occ, g.seg[p.edge[on_edge]], -1)
        p.edge[rows] = -1
        p.node[rows] = cur
        p.state[rows] = STAYING
        self._still_place[rows] = self.places.node_place + p.node[rows]
        self._schedule(rows)

    def _choose_again(self, rows: np.ndarray, cur: np.ndarray, t: float) -> None:
        """Give up on a full (or unreachable) stretch and move on to another one."""
        p = self.people
        S = self.stretches.n
        old = p.dest[rows]
        self._committed -= np.bincount(old[old < S], minlength=S)
        lw = self._piece_only(self._log_weight(cur), self._row_piece[rows])
        lw[np.arange(len(rows)), np.minimum(old, S - 1)] = -np.inf
        score = lw + self.rng.gumbel(size=lw.shape)
        k = np.argmax(score, axis=1)
        ok = np.isfinite(score[np.arange(len(rows)), k])
        fans = np.flatnonzero(self.stretches.fan)
        for i, f in enumerate(fans):  # a fan area takes no more than its room
            mine = np.flatnonzero(ok & (k == f))
            over = mine[max(int(self._open_cap[f] - self._committed[f]), 0) :]
            if len(over):
                score[over[:, None], fans[None, : i + 1]] = -np.inf  # this one and those done
                k[over] = np.argmax(score[over], axis=1)
                ok[over] = np.isfinite(score[over, k[over]])
        p.dest[rows[ok]] = k[ok]
        self._committed += np.bincount(k[ok], minlength=S)
        home = rows[~ok]
        self.outcomes["went_home_without_spot"] += len(home)
        p.dest[home] = self._o0 + p.origin[home]
        p.want[rows] = -1
        p.leave_s[home] = np.inf
        p.since[rows] = t

    def _reroute(self, rows: np.ndarray, cur: np.ndarray, t: float) -> None:
        """Destination out of reach from here: choose another one, or wait."""
        p = self.people
        S = self.stretches.n
        view = (p.kind[rows] == SPECTATOR) & (p.dest[rows] < S)
        if view.any():
            self._choose_again(rows[view], cur[view], t)
        rest, rc = rows[~view], cur[~view]
        spec = p.kind[rest] == SPECTATOR
        if spec.any():  # going home: the nearest origin still in reach
            d = self.routes.dist[self._o0 : self._p0][:, rc[spec]]
            best = np.argmin(d, axis=0)
            ok = np.isfinite(d[best, np.arange(d.shape[1])])
            sr = rest[spec]
            p.dest[sr[ok]] = self._o0 + best[ok]
            p.want[sr] = -1
            self.outcomes["no_route"] += int((~ok).sum())
        bg = rest[~spec]
        if len(bg):
            dist = self.routes.dist[self._p0 :][:, rc[~spec]].T.astype(float)
            place = self.background.choose_places(dist, p.place[bg])
            ok = place >= 0
            p.place[bg[ok]] = place[ok]
            p.dest[bg[ok]] = self._p0 + place[ok]
            p.want[bg] = -1
            self.outcomes["no_route"] += int((~ok).sum())

    def _walk(self, t: float) -> None:
        """Move every walker along its edge for one tick (Weidmann speed).

        The speed is ``v0 share(min(rho, rho_c))`` with ``rho`` the density of the moving
        part of the segment; walkers who reach the end stop there and queue (the node
        rule in :meth:`_at_nodes` lets them through).

        A walker who reaches the end of its edge with time to spare decides at the node
        and, if admitted, walks on with the time left, up to ``MAX_HOPS`` edges per tick,
        so short edges do not slow walkers down.
        """
        p, g = self.people, self.graph
        known = self._tick_states
        self._tick_states = None
        if known is not None and len(known[0]) == len(self._active):
            # the states read in _at_nodes, refreshed only where they may have changed
            st, pos, waiting = known
            walking = st == WALKING
            walking[pos] = p.state[waiting] == WALKING
            rows = self._active[walking]
        else:
            rows = self._active[p.state[self._active] == WALKING]
        left = np.full(len(rows), self.dt)
        if len(rows) == 0:
            return
        # density of the moving part of each segment: the walkers on it, over its area
        # less the room of those standing (queued at its end or watching) at jam density
        seg_all = self._edge_seg[p.edge[rows]]
        few = len(rows) * 4 < len(self.occ)
        if few:
            segs, inverse, moving = np.unique(seg_all, return_inverse=True, return_counts=True)
            standing = self.occ[segs] - moving
            area = self.seg_area[segs]
        else:
            moving = np.bincount(seg_all, minlength=len(self.occ))
            standing = self.occ - moving
            area = self.seg_area
        free_area = np.maximum(area - standing / self.jam, 1e-3 * area)
        rho = np.minimum(moving / free_area, self.fd.rho_c)
        factor = weidmann_speed(rho, 1.0, jam_density=self.jam)
        for hop in range(MAX_HOPS):
            if len(rows) == 0:
                return
            e = p.edge[rows].astype(np.intp)  # one cast instead of one per gather
            if hop == 0:
                v = p.free_speed[rows] * factor[inverse if few else seg_all]
            else:  # walked on within the tick: the new segment's density, at most rho_c
                seg = self._edge_seg[e]
                rho_now = np.minimum(self.occ[seg] / self.seg_area[seg], self.fd.rho_c)
                v = weidmann_speed(rho_now, p.free_speed[rows], jam_density=self.jam)
            length = g.length[e]
            s = v * left
            s += p.s[rows]
            p.s[rows] = np.minimum(s, length)
            end = np.flatnonzero(s >= length)  # positions: a few gathers, not four masks
            done = rows[end]
            p.state[done] = WAITING
            p.want[done] = -1
            p.since[done] = t
            self._spare[done] = (s[end] - length[end]) / np.maximum(v[end], 1e-9)
            if hop == MAX_HOPS - 1 or len(done) == 0:
                return
            rows = self._at_nodes(t, done)
            left = self._spare[rows]

    # ------------------------------------------------------------------ outputs

    def present(self) -> np.ndarray:
        """Who is in the area now (waiting, walking or staying)."""
        st = self.people.state
        return (st == WAITING) | (st == WALKING) | (st == STAYING)

    def positions(self, rows: np.ndarray | None = None) -> PositionSnapshot:
        """Everybody's position now (EPSG:31370 metres; NaN for pending or gone).

        Called every tick by the network: people at nodes take their node's coordinates
        in one gather, and only those on an edge are interpolated. With `rows` (person
        indices, repeats allowed), the snapshot holds those people only, in that order:
        the network asks for the owners of the phones it simulates, not everybody.
        """
        p, g = self.people, self.graph
        if self._spectator_mask is None:
            self._spectator_mask = p.kind == SPECTATOR
        st = p.state if rows is None else p.state[rows]
        here = (st == WAITING) | (st == WALKING) | (st == STAYING)
        node = p.node if rows is None else p.node[rows]
        edge = p.edge if rows is None else p.edge[rows]
        x = g.x[node]
        y = g.y[node]
        on = np.flatnonzero(here & (edge >= 0))
        e = edge[on]
        u, v = g.eu[e], g.ev[e]
        f = (p.s[on] if rows is None else p.s[rows[on]]) / g.length[e]
        x[on] = g.x[u] + (g.x[v] - g.x[u]) * f
        y[on] = g.y[u] + (g.y[v] - g.y[u]) * f
        x[~here] = np.nan
        y[~here] = np.nan
        spectator = self._spectator_mask if rows is None else self._spectator_mask[rows]
        return PositionSnapshot(self.tick * self.dt, x, y, here, spectator)

    def state_counts(self) -> dict[str, int]:
        """Number of people in each state now."""
        counts = np.bincount(self.people.state, minlength=len(STATES))
        return dict(zip(STATES, counts.tolist(), strict=True))

    def _close_bin(self) -> None:
        p = self.people
        self._active.sort()  # gathers in row order are faster (the order stays deterministic)
        moving = self._active[np.isin(p.state[self._active], (WAITING, WALKING))]
        where = self._still_place.copy()
        where[moving] = self.places.of(
            p.edge[moving], p.s[moving], p.node[moving], self.graph.length
        )
        here = np.flatnonzero(self.present())
        place = where[here]
        spectators = place[p.kind[here] == SPECTATOR]
        self.truth.close_bin(self.tick * self.dt, place, spectators, self.seg_area)
        code = p.state * np.int8(2)  # state x kind fits int8 (at most 9): no int64 copies
        code += p.kind
        self._tally = np.bincount(code, minlength=2 * len(STATES)).reshape(len(STATES), 2)
        self.datacollector.collect(self)

    def held_at_nodes(self, *, top: int = 10) -> dict[str, Any]:
        """People held at nodes now, the longest wait and the `top` worst queues by place
        (:func:`sim.crowd.queues.held_at_nodes`)."""
        p = self.people
        return held_at_nodes(
            p.state == WAITING,
            p.edge,
            p.node,
            p.since,
            p.want,
            graph=self.graph,
            streets=self.streets,
            now_s=self.tick * self.dt,
            top=top,
        )

    def summary(self) -> dict[str, Any]:
        """Figures for the run's manifest and report."""
        counts = self.state_counts()
        series = self.datacollector.get_model_vars_dataframe()
        return {
            "people": int(self.people.n),
            "spectators": int(self.n_spectators),
            "background": int(self.people.n - self.n_spectators),
            "spectator_groups": len(self.groups),
            "viewing_stretches": int(self.stretches.n),
            "viewing_capacity": int(self.stretches.capacity[~self.stretches.fan].sum()),
            "fan_area_capacity": int(self.stretches.capacity[self.stretches.fan].sum()),
            "peak_watching": int(series["watching"].max()) if len(series) else 0,
            "peak_spectators_present": int(series["spectators_present"].max())
            if len(series)
            else 0,
            "state_at_end": counts,
            "outcomes": dict(self.outcomes),
            "unreachable_origins": list(self.unreachable_origins),
            "routing_rebuilds": int(self.routes.rebuilds),
            "detours": int(self.detours),
            "peak_density_p_m2": round(float(self.truth.peak_density), 3),
            "held_at_end": self.held_at_nodes(),
            "walk_graph": {"nodes": int(self.graph.n_nodes), "edges": int(self.graph.n_edges)},
        }


def _bump(counts: np.ndarray, index: np.ndarray, sign: int) -> None:
    """Add `sign` to ``counts[index]`` for every entry (repeats add up)."""
    if len(index) * 4 < len(counts):  # ufunc.at is fast (NumPy >= 1.25) for short lists
        np.add.at(counts, index, sign)
    else:
        counts += sign * np.bincount(index, minlength=len(counts))


def _state_count(code: int) -> Callable[[CrowdModel], int]:
    def report(model: CrowdModel) -> int:
        return int(model._tally[code].sum())

    return report


def _spectators_present(model: CrowdModel) -> int:
    return int(model._tally[[WAITING, WALKING, STAYING], SPECTATOR].sum())


def _watching(model: CrowdModel) -> int:
    return int(model._tally[STAYING, SPECTATOR])
