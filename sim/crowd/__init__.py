"""The crowd: spectators and background population walking the streets (issue #3).

:class:`CrowdModel` is the Mesa model (the tick and the decisions). It reads the world
built once (:mod:`sim.crowd.world`: the graph of :mod:`sim.crowd.walkgraph`, the
shortest-path trees of :mod:`sim.crowd.routing`, the stretches and plans of
:mod:`sim.crowd.demand`), keeps the people's state arrays (:mod:`sim.crowd.people`) and
departures (:mod:`sim.crowd.calendar`), moves them with the vectorised kernels of
:mod:`sim.crowd.movement`, lets the agents of :mod:`sim.crowd.agents` decide, and
records the truth (:mod:`sim.crowd.truth`). :mod:`sim.crowd.walkways` runs the same
movement on hand-made walkways (public API for checks); :mod:`sim.crowd.verify` checks it
against the literature.
"""

from sim.crowd.model import STATES, CrowdModel, People, PositionSnapshot
from sim.crowd.walkways import WalkwayModel, walkway_graph

__all__ = ["STATES", "CrowdModel", "People", "PositionSnapshot", "WalkwayModel", "walkway_graph"]
