"""The crowd: spectators and background population walking the streets (issue #3).

:class:`CrowdModel` is the Mesa model; :mod:`sim.crowd.demand` says who comes when and
where to, :mod:`sim.crowd.walkgraph` the graph they walk (the course split into two
sidewalks), :mod:`sim.crowd.routing` the shortest-path trees, :mod:`sim.crowd.movement`
the vectorised walking rules, :mod:`sim.crowd.agents` the agents' decisions.
:mod:`sim.crowd.walkways` runs the same movement on hand-made walkways (public API for
checks), :mod:`sim.crowd.verify` checks it against the literature.
"""

from sim.crowd.model import STATES, CrowdModel, People, PositionSnapshot
from sim.crowd.walkways import WalkwayModel, walkway_graph

__all__ = ["STATES", "CrowdModel", "People", "PositionSnapshot", "WalkwayModel", "walkway_graph"]
