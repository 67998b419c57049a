"""The agents of the crowd: spectator groups and the background population.

Agents make the discrete decisions, in Python, at the moments they happen (a group
arrives, a group has no room left): where to watch and when to leave. Their members'
positions live in the model's arrays (``CrowdModel.people``), which one vectorised update
moves every tick; an agent only holds the slice of rows that are its members.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

if TYPE_CHECKING:
    from sim.crowd.model import CrowdModel

__all__ = ["BackgroundPopulation", "SpectatorGroup"]


class SpectatorGroup(mesa.Agent):
    """Friends or a family who come together from one origin and watch together.

    Parameters
    ----------
    model
        The crowd model.
    members
        Rows of the group's people in the model's arrays (consecutive).
    origin
        Index of the origin they come from and return to.
    arrive_s
        When they appear at the origin (seconds after the start).
    """

    model: CrowdModel

    def __init__(self, model: CrowdModel, members: slice, origin: int, arrive_s: float) -> None:
        super().__init__(model)
        self.members = members
        self.origin = origin
        self.arrive_s = arrive_s
        self.viewing_spot: int = -1  # the stretch chosen, -1 before arrival or if none
        self.leave_s: float = np.inf

    @property
    def size(self) -> int:
        """Number of people in the group."""
        return self.members.stop - self.members.start

    def choose_viewing_spot(self, log_weight: np.ndarray) -> int:
        """Pick a stretch with probability proportional to ``exp(log_weight)``.

        `log_weight` already holds the attractiveness, the walk from this group's origin
        and the room left (``-inf`` where full or unreachable). Returns the stretch, or -1
        when every stretch is full or out of reach.
        """
        if not np.isfinite(log_weight).any():
            self.viewing_spot = -1
            return -1
        noise = self.model.rng.gumbel(size=len(log_weight))
        self.viewing_spot = int(np.argmax(log_weight + noise))  # Gumbel-max: a weighted draw
        return self.viewing_spot

    def decide_when_to_leave(self, now_s: float, last_team_s: float) -> float:
        """Stay until the last team has passed the spot plus a random tail, or leave early.

        Without a race timetable (`last_team_s` NaN) the group stays a fixed time with
        the same random tail.
        """
        spec = self.model.scenario.people.spectators
        rng = self.model.rng
        if not np.isfinite(last_team_s):
            last_team_s = now_s + spec.dwell_without_race_min * 60.0
        if rng.random() < spec.early_leaver_share and last_team_s > now_s + 600.0:
            self.leave_s = float(rng.uniform(now_s + 600.0, last_team_s))
        else:
            self.leave_s = float(
                max(last_team_s, now_s) + rng.exponential(spec.dwell_tail_min * 60.0)
            )
        return self.leave_s


class BackgroundPopulation(mesa.Agent):
    """Residents and visitors already in the area, as one agent over their rows.

    Hundreds of thousands of people who mostly stay indoors do not need one Python object
    each; their trip decisions are drawn for all of them at once.

    Parameters
    ----------
    model
        The crowd model.
    members
        Their rows in the model's arrays.
    """

    model: CrowdModel

    def __init__(self, model: CrowdModel, members: slice) -> None:
        super().__init__(model)
        self.members = members

    def next_trip_after(self, n: int) -> np.ndarray:
        """Seconds until each of `n` people indoors starts a walking trip (exponential)."""
        bg = self.model.scenario.people.background
        rate = bg.trips_per_day / (bg.active_hours * 3600.0)
        if rate <= 0:
            return np.full(n, np.inf)
        return self.model.rng.exponential(1.0 / rate, n)

    def stay_for(self, n: int) -> np.ndarray:
        """Seconds each of `n` people stays at the activity place they reached."""
        mean = self.model.scenario.people.background.stay_mean_min * 60.0
        return self.model.rng.exponential(mean, n)

    def choose_places(self, dist: np.ndarray, current: np.ndarray) -> np.ndarray:
        """Activity place for each trip: weighted by ``exp(-walk / trip_decay_m)``.

        Parameters
        ----------
        dist
            ``(n_trips, n_places)`` walking distance from each traveller to each place.
        current
            Place each traveller is at (-1 at home); never chosen again.

        Returns
        -------
        numpy.ndarray
            Place index, or -1 where no place can be reached.
        """
        decay = self.model.scenario.people.background.trip_decay_m
        logw = -dist / decay
        rows = np.flatnonzero(current >= 0)
        logw[rows, current[rows]] = -np.inf
        logw[~np.isfinite(dist)] = -np.inf
        score = logw + self.model.rng.gumbel(size=logw.shape)
        pick = np.argmax(score, axis=1)
        ok = np.isfinite(score[np.arange(len(pick)), pick])
        return np.where(ok, pick, -1)
