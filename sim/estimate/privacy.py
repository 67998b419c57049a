"""Disclosure control as an operator would publish: what leaves the operator, and what it costs.

Two tables come out of a run (file names in :mod:`sim.estimate.output`):

- the *internal* table, the operator's own estimates before release (every zone system,
  exact counts, suppressed zone-bins marked but kept): validation scores it;
- the *published* table, what would leave the operator: one zone system, a suppressed
  zone-bin carries no value, bound or derived figure (estimate, lower and upper are
  NaN), and, if differential privacy is on, every figure comes from noisy cell counts.

**k-threshold.** A zone-bin with fewer than ``k`` people (Proximus: 30) is suppressed.

**Differencing.** Suppressing each zone on its own is not enough: publishing a 3 x 3
block of tiles and the same block minus its centre gives the centre by subtraction, and
overlapping zones of different systems (grid tiles, course segments, named areas, cells)
or of consecutive bins in alternating systems do the same. The two standard remedies are
secondary (complementary) suppression and publishing a single partition. Here the
published table holds **one non-overlapping zone system** (by default the grid), the same
one in every bin. Why this one:

- with a partition every published figure is the count of a group disjoint from every
  other figure of its bin, so no difference or sum of published zones isolates a group
  that was not itself published (and thresholded); the other systems stay internal;
- secondary suppression across overlapping systems whose zones cut tiles fractionally
  (areas are circles, segments are buffers) needs an audit of every linear combination
  per bin (the cell-suppression problem, NP-hard in general: Fischetti & Salazar-Gonzalez
  2001), and the audit must be redone for every bin and repeated across bins; the
  partition gives the guarantee by construction and is checked in O(zones);
- using the same system in every bin rules out differencing across consecutive bins in
  different systems; the difference of one zone between two bins is a net flow, not a
  group below k.

:func:`check_partition` refuses a published system whose zones overlap. What a
threshold does *not* stop: a model-based estimate is a function of the cell counts, so
an attacker who knows the method and the plan can fit the cell counts to the published
zones and recompute a suppressed one (for a linear method like Voronoi, exactly when the
published zones determine the counts). Only noise on the counts themselves protects
against that, which is why differential privacy, when on, works on the counts.

**Differential privacy.** With ``epsilon`` set, Laplace noise of scale ``1 / epsilon``
is added to each cell's device count in each bin (:func:`laplace_counts`): one device
is counted in at most one cell per bin, so the L1 sensitivity of a bin's count vector is
1 and each bin's release is epsilon-DP for a device. Every estimate, every method and
every zone system computed from those noisy counts (including the suppression decision)
is private by post-processing, whatever the method (EM is not linear; that no longer
matters). Over a local day a device appears in every bin, so under basic composition
the day costs ``epsilon x bins in the day`` (:func:`privacy_budget`, written in the
manifest). The internal table is not released and costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import shapely

from sim.estimate.tiles import ZoneSet

__all__ = [
    "DEFAULT_PUBLISHED_SYSTEM",
    "check_partition",
    "laplace_counts",
    "privacy_budget",
    "published_view",
]

#: The zone system published by default: the grid tiles, a partition of the map.
DEFAULT_PUBLISHED_SYSTEM = "grid"


def laplace_counts(counts: np.ndarray, *, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Devices per cell and bin with Laplace noise of scale ``1 / epsilon``, floored at 0.

    Sensitivity 1 per bin: a device is counted in at most one cell of a bin. Flooring at
    zero is post-processing and keeps the methods' inputs non-negative.
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon = {epsilon}; must be > 0")
    c = np.asarray(counts, dtype=np.float64)
    return np.maximum(c + rng.laplace(0.0, 1.0 / epsilon, size=c.shape), 0.0)


def privacy_budget(
    bins: pd.DatetimeIndex, *, epsilon: float | None, timezone: str
) -> dict[str, Any]:
    """The privacy accounting of a release of noisy counts for `bins`, per local day.

    Basic composition: a device may be counted in every bin, so a day's budget is the sum
    of its bins' epsilons. Methods and zone systems computed from the same noisy counts
    are post-processing and add nothing.

    Returns
    -------
    dict
        ``mechanism``, ``sensitivity``, ``epsilon_per_bin``, ``composition``,
        ``bins_per_day`` (local date -> bins) and ``epsilon_per_day`` (local date ->
        epsilon; the maximum under ``epsilon_per_day_max``). Without noise the epsilons
        are None (no differential privacy).
    """
    local = pd.DatetimeIndex(bins).tz_convert(timezone)
    days = pd.Series(local.date.astype(str)).value_counts().sort_index()
    per_day = {str(d): int(n) for d, n in days.items()}
    eps = None if epsilon is None else float(epsilon)
    spent = {d: (None if eps is None else round(eps * n, 10)) for d, n in per_day.items()}
    return {
        "mechanism": "Laplace on per-cell per-bin device counts" if eps else "none",
        "sensitivity": 1,
        "epsilon_per_bin": eps,
        "composition": "basic (sum over the bins of a local day)",
        "timezone": timezone,
        "bins_per_day": per_day,
        "epsilon_per_day": spent,
        "epsilon_per_day_max": (
            None
            if eps is None
            else max((round(eps * n, 10) for n in per_day.values()), default=0.0)
        ),
    }


def check_partition(zs: ZoneSet, *, error: type[Exception] = ValueError) -> None:
    """Refuse a zone system whose zones overlap (beyond touching edges).

    Raises
    ------
    error
        Naming two overlapping zones and the area they share.
    """
    geoms = np.asarray(zs.geometry, dtype=object)
    if len(geoms) < 2:
        return
    tree = shapely.STRtree(geoms)
    a, b = tree.query(geoms, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    if a.size == 0:
        return
    shared = shapely.area(shapely.intersection(geoms[a], geoms[b]))
    scale = np.minimum(shapely.area(geoms[a]), shapely.area(geoms[b]))
    bad = shared > 1e-6 * np.maximum(scale, 1e-9)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise error(
            f"published zone system {zs.system!r}: zones {zs.zone[a[k]]!r} and "
            f"{zs.zone[b[k]]!r} overlap ({shared[k]:.1f} m²); a published system must be a "
            "partition, or differencing the two reveals the people in the overlap"
        )


def published_view(table: pd.DataFrame, *, system: str) -> pd.DataFrame:
    """The rows of `system` with nothing left of a suppressed zone-bin.

    Estimate, lower and upper of a suppressed row become NaN (the row stays, marked, so
    a reader sees that the zone-bin exists and was withheld).
    """
    out = table[(table["zone_system"] == system).to_numpy()].reset_index(drop=True)
    hidden = out["suppressed"].to_numpy(bool)
    for column in ("estimate", "lower", "upper"):
        values = out[column].to_numpy(copy=True)
        values[hidden] = np.nan
        out[column] = values
    for column in ("method", "zone_system", "zone", "mode"):
        if isinstance(out[column].dtype, pd.CategoricalDtype):
            out[column] = _without_unused(out[column])
    return out


def _without_unused(column: pd.Series) -> pd.Categorical:
    """``column.cat.remove_unused_categories()`` in one pass over the codes, not a sort.

    A full run's published table has tens of millions of rows: sorting its codes to find
    the categories in use took longer than everything else here.
    """
    cats = column.cat.categories
    codes = column.cat.codes.to_numpy()
    used = np.bincount(codes[codes >= 0], minlength=len(cats)) > 0
    new = (np.cumsum(used) - 1)[np.maximum(codes, 0)]
    return pd.Categorical.from_codes(np.where(codes >= 0, new, -1), categories=cats[used])
