"""Simple Bayes: where in a cell's coverage are its devices, given a prior over tiles.

``P(tile | cell) ∝ P(cell | tile) · prior(tile)`` (Tennekes & Gootzen 2022, the "mobloc"
approach; Ricciato et al. 2020 §4): ``P(cell | tile)`` is the operator's coverage model
(:func:`sim.estimate.tiles.coverage_matrix`, textbook propagation with nominal
parameters, no shadowing) and the prior is uniform, a land-use weight per tile (e.g.
street length, which is public knowledge, not ground truth) or the event-aware prior of
:mod:`sim.estimate.priors` (public event data; it may change with the closures, so the
posterior is computed once per state and each bin uses its state's). Each cell's devices are
shared among tiles by that posterior, independently per cell (the "simple" in the name:
the cells' counts are not fitted jointly, unlike EM).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from sim.estimate.base import EstimateInputError
from sim.estimate.outside import TileGrid, emission_matrix
from sim.estimate.priors import EventPrior, TilePrior
from sim.estimate.spatial import SpatialEstimator
from sim.estimate.tiles import TileRaster, ZoneSet, coverage_matrix
from sim.network.plan import NetworkPlan

__all__ = ["BayesEstimator", "prior_over_time", "tile_prior"]


def tile_prior(prior: Any, raster: TileRaster | TileGrid) -> np.ndarray:
    """Prior weight of each tile.

    ``"uniform"``, an array with one weight per tile (tile order), or a table of points
    with ``x``, ``y`` and ``weight`` (EPSG:31370; e.g. street-piece midpoints weighted by
    length) summed per tile.

    Raises
    ------
    EstimateInputError
        An unknown prior name, missing columns, negative weights, or no weight inside the
        raster.
    """
    if isinstance(prior, str):
        if prior != "uniform":
            raise EstimateInputError(
                f"prior = {prior!r}: use 'uniform', one weight per tile, or a table with x, "
                "y, weight columns"
            )
        return np.ones(raster.n)
    if isinstance(prior, np.ndarray | list | pd.Series):
        w = np.asarray(prior, dtype=float).ravel()
        if len(w) != raster.n:
            raise EstimateInputError(f"prior: {len(w)} weights for {raster.n} tiles")
        if not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
            raise EstimateInputError("prior: weights must be finite, >= 0, not all 0")
        return w
    if not isinstance(prior, pd.DataFrame) or not {"x", "y", "weight"} <= set(prior.columns):
        raise EstimateInputError("prior: a land-use prior is a DataFrame with x, y, weight")
    w = prior["weight"].to_numpy(dtype=float)
    if not np.isfinite(w).all() or (w < 0).any():
        raise EstimateInputError("prior: weights must be finite and >= 0")
    tile = raster.tile_of(prior["x"].to_numpy(dtype=float), prior["y"].to_numpy(dtype=float))
    inside = tile >= 0
    out = np.bincount(tile[inside], weights=w[inside], minlength=raster.n)
    if not out.sum() > 0:
        raise EstimateInputError("prior: no positive weight inside the estimators' raster")
    return out


def prior_over_time(prior: Any, space: TileRaster | TileGrid, *, weight: float) -> TilePrior:
    """The prior on the tiles of `space`, mixed with the flat one: ``(1 - w) flat + w prior``.

    `prior` is anything :func:`tile_prior` takes (a static prior) or an
    :class:`~sim.estimate.priors.EventPrior` (one prior per state of the closures).
    """
    if isinstance(prior, EventPrior):
        return prior.tile_prior(space).mixed(weight)
    return TilePrior.static(tile_prior(prior, space)).mixed(weight)


def check_prior_weight(est: Any) -> float:
    """`est.prior_weight` as a float in [0, 1], or a clear error naming the estimator."""
    w = est.prior_weight
    if isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 <= w <= 1.0:
        raise EstimateInputError(
            f"{type(est).__name__}: prior_weight = {w!r}; must be a number in [0, 1] "
            "(0 = the flat prior, 1 = the prior alone)"
        )
    return float(w)


class BayesEstimator(SpatialEstimator):
    """Simple Bayes placement of each cell's devices on tiles.

    Parameters
    ----------
    prior
        ``"uniform"``, one weight per tile, a land-use table (see :func:`tile_prior`), or
        an :class:`~sim.estimate.priors.EventPrior`. A cell whose coverage holds no prior
        weight falls back to the uniform prior.
    prior_weight
        ``w`` in [0, 1]: the prior used is ``(1 - w) flat + w prior``, both normalised to
        sum 1 over the tiles (mobloc's composite prior, ``create_prior(..., weights)``).
        1 (default) uses `prior` alone; 0 is the flat prior whatever `prior` is.
    emission
        A user-supplied ``P(cell | tile)`` (:func:`~sim.estimate.outside.emission_matrix`:
        a sparse cells x tiles matrix or a table of cell, tile, probability), e.g. from a
        radio-planning tool; needs ``tiles``. None = the operator's textbook model.
    spread_db, max_cells, min_probability
        The operator's coverage model (:func:`~sim.estimate.tiles.coverage_matrix`).
    **kwargs
        The parameters of :class:`~sim.estimate.spatial.SpatialEstimator`.

    Attributes
    ----------
    coverage_
        ``P(cell | tile)``, cells x tiles.
    prior_
        The prior over tiles (:class:`~sim.estimate.priors.TilePrior`, mixed).
    posteriors_
        ``P(tile | cell)`` per state of the prior, cells x tiles, rows summing to 1.
    posterior_
        The first of them (the only one of a static prior).
    """

    method = "bayes"

    def __init__(
        self,
        *,
        prior: Any = "uniform",
        prior_weight: float = 1.0,
        emission: Any = None,
        spread_db: float = 4.0,
        max_cells: int = 24,
        min_probability: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prior = prior
        self.prior_weight = prior_weight
        self.emission = emission
        self.spread_db = spread_db
        self.max_cells = max_cells
        self.min_probability = min_probability

    def _outside_cells(self) -> np.ndarray | None:
        return outside_cells(self.emission)

    def _fit_footprints(self, plan: NetworkPlan | None) -> None:
        if not self.spread_db >= 0 or not self.max_cells >= 1:
            raise EstimateInputError("BayesEstimator: need spread_db >= 0 and max_cells >= 1")
        weight = check_prior_weight(self)
        self.coverage_ = coverage_for(self, plan)
        self.prior_ = prior_over_time(self.prior, self.space_, weight=weight)
        self.posteriors_ = [posterior(self.coverage_, p) for p in self.prior_.weights]
        self.posterior_ = self.posteriors_[0]

    location_model: ClassVar[str] = (
        "posterior P(tile | cell) with the prior; calibrated where devices follow the prior"
    )

    def tile_devices(self, counts: np.ndarray) -> np.ndarray:
        """Devices per tile: ``sum_i c_i P(tile | cell i)``, with each bin's posterior."""
        if len(self.posteriors_) == 1:
            return np.asarray(self.posterior_.T @ counts)
        states = self.prior_.states(self.bins_in_hand())
        out = np.empty((self.coverage_.shape[1], counts.shape[1]))
        for k in np.unique(states):
            cols = np.flatnonzero(states == k)
            out[:, cols] = self.posteriors_[k].T @ counts[:, cols]
        return out

    def zone_given_cell(self, zs: ZoneSet) -> csr_matrix:
        """``P(zone | cell) = sum_t w_zt P(t | cell)``, zones x cells (cached per system)."""
        return self._cached(
            "posterior", zs, lambda: csr_matrix(self.zone_matrix(zs) @ self.posterior_.T)
        )


def posterior(coverage: csr_matrix, prior: np.ndarray) -> csr_matrix:
    """``P(tile | cell)`` from ``P(cell | tile)`` (cells x tiles) and a prior over tiles."""
    a = csr_matrix(coverage, copy=True)
    a.data = a.data * prior[a.indices]
    row = np.asarray(a.sum(axis=1)).ravel()
    empty = row <= 0
    if empty.any():  # no prior weight under this cell: uniform prior for it
        a = a.tolil()
        for i in np.flatnonzero(empty):
            a[i] = coverage[i]
        a = a.tocsr()
        row = np.asarray(a.sum(axis=1)).ravel()
    inv = 1.0 / np.where(row > 0, row, 1.0)
    a.data = a.data * np.repeat(inv, np.diff(a.indptr))
    return a


def outside_cells(emission: Any) -> np.ndarray | None:
    """The cells a user emission table names (None for a matrix: the counts name them)."""
    if isinstance(emission, pd.DataFrame) and "cell" in emission.columns:
        return pd.unique(emission["cell"].astype(str)).astype(object)
    return None


def coverage_for(est: Any, plan: NetworkPlan | None) -> csr_matrix:
    """``P(cell | tile)`` of a Bayes or EM estimator.

    The user's emission model on the user's tiles, or the operator's textbook model on the
    plan's raster.
    """
    if est.emission is not None:
        if est.grid_ is None:
            raise EstimateInputError(
                f"{type(est).__name__}: a user emission model needs its tile grid (tiles=)"
            )
        return emission_matrix(
            est.emission, cells=est.cell_ids_, tiles=est.grid_.ids, error=EstimateInputError
        )
    if plan is None or est.grid_ is not None:
        raise EstimateInputError(
            f"{type(est).__name__}: user tiles need a user emission model (emission=); the "
            "textbook coverage model needs the plan and its raster"
        )
    return coverage_matrix(
        plan,
        est.raster_,
        spread_db=est.spread_db,
        max_cells=est.max_cells,
        min_probability=est.min_probability,
    )
