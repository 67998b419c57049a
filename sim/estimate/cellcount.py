"""The presence method on its own: people per cell and bin, before any spatial mapping."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.estimate.base import Estimator
from sim.estimate.tiles import ZoneSet

__all__ = ["PresenceEstimator"]


class PresenceEstimator(Estimator):
    """People per cell.

    Devices present in each cell (see :mod:`sim.estimate.presence`), scaled to people,
    with the shared intervals and privacy marks.

    Its zone system is ``"cell"`` and its zones are the cell ids: this is the input every
    spatial method starts from, published so validation can see what mapping adds.
    Parameters are those of :class:`~sim.estimate.base.Estimator`.
    """

    method = "presence"

    def _zone_sets(self, zones: Any) -> list[ZoneSet]:
        ids = np.asarray(self.cell_ids_, dtype=object)
        return [ZoneSet(system="cell", zone=ids, geometry=np.empty(0, dtype=object))]

    def _devices_per_zone(self, counts: np.ndarray, zs: ZoneSet) -> np.ndarray:
        return counts
