"""People: the state arrays of everybody in the crowd, and their codes.

One row per person (spectators first, then the background population), flat NumPy
arrays so the tick moves everybody in one update. A person is in exactly one state every
tick: ``pending`` (not yet come), ``waiting`` (at a node, or queued at the end of an
edge, wanting to go on), ``walking`` (on an edge), ``staying`` (watching the race on a
course sidewalk, or indoors at home or an activity place) or ``gone`` (left the area).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUND",
    "GONE",
    "PENDING",
    "SPECTATOR",
    "STATES",
    "STAYING",
    "WAITING",
    "WALKING",
    "People",
    "PositionSnapshot",
]

PENDING, WAITING, WALKING, STAYING, GONE = range(5)
#: Names of the states, indexed by their code.
STATES = ("pending", "waiting", "walking", "staying", "gone")
SPECTATOR, BACKGROUND = 0, 1


@dataclass(eq=False)
class People:
    """Everybody in the model, one row each (spectators first, then background).

    ``edge`` is the internal edge a person is on (-1 when at a node: ``node`` then says
    which); ``s`` the offset along it (m); ``dest`` the routing destination (a row of the
    routing tables); ``since`` when the person started waiting (queue priority);
    ``leave_s`` when a staying person moves on.
    """

    kind: np.ndarray
    state: np.ndarray
    edge: np.ndarray
    s: np.ndarray
    node: np.ndarray
    dest: np.ndarray
    free_speed: np.ndarray
    since: np.ndarray
    leave_s: np.ndarray
    origin: np.ndarray
    place: np.ndarray  # background: activity place they are at or going to (-1 home)
    want: np.ndarray  # next edge a waiting walker queues for (-1: not decided yet)

    @property
    def n(self) -> int:
        """Number of people."""
        return len(self.kind)


@dataclass(frozen=True)
class PositionSnapshot:
    """Where everybody is at one tick (for the network stage): NaN where absent."""

    t_s: float
    x: np.ndarray
    y: np.ndarray
    present: np.ndarray
    spectator: np.ndarray
