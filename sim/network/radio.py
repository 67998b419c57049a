"""The TRUE radio environment of the simulated world: coverage with shadowing on a raster.

Received power from every cell that can be heard is computed once on a raster over the
study area (default 25 m): TR 38.901 UMa path loss and the sector pattern
(:mod:`sim.network.propagation`) plus spatially correlated log-normal shadowing. Only the
strongest few cells per pixel are kept (a sparse coverage table). This is the world, not
the operator's belief: ``sim.estimate`` must never import this module.

Shadowing is one unit Gaussian field, smoothed so that its correlation falls to 1/e at
the decorrelation distance, read at a random offset per site: each site sees a spatially
correlated field, and two sites' fields are nearly independent. A common component gives
the inter-site correlation of 0.5 that 3GPP uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from sim.network.plan import NetworkPlan
from sim.network.propagation import received_power_dbm

__all__ = ["RadioEnvironment", "build_radio"]

#: Power below which a cell is not heard at all (dBm).
NOISE_FLOOR_DBM = -130.0


@dataclass(frozen=True, eq=False)
class RadioEnvironment:
    """Strongest cells per raster pixel, with their received power.

    Attributes
    ----------
    x0, y0
        Lower-left corner of the raster (EPSG:31370 metres).
    pixel_m
        Pixel size in metres.
    shape
        (rows, columns) of the raster.
    cell
        (pixels, k) row index into ``plan.cells`` of the k strongest cells, strongest
        first; -1 where fewer are heard.
    power_dbm
        (pixels, k) their received power; -inf where no cell.
    """

    x0: float
    y0: float
    pixel_m: float
    shape: tuple[int, int]
    cell: np.ndarray
    power_dbm: np.ndarray

    def pixel(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Raster pixel of each point (points outside are clipped to the border)."""
        col = np.clip(((np.asarray(x) - self.x0) / self.pixel_m).astype(np.int64), 0,
                      self.shape[1] - 1)  # fmt: skip
        row = np.clip(((np.asarray(y) - self.y0) / self.pixel_m).astype(np.int64), 0,
                      self.shape[0] - 1)  # fmt: skip
        return row * self.shape[1] + col

    def best(self, pixel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Strongest cell (-1 if none) and its power at each pixel."""
        return self._best_cell[pixel], self._best_power[pixel]

    @cached_property
    def _best_cell(self) -> np.ndarray:
        return np.ascontiguousarray(self.cell[:, 0])

    @cached_property
    def _best_power(self) -> np.ndarray:
        return np.ascontiguousarray(self.power_dbm[:, 0])

    def power_of(self, pixel: np.ndarray, cell: np.ndarray) -> np.ndarray:
        """Received power of `cell` at each pixel; -inf where it is not among the kept."""
        hit = self.cell[pixel] == np.asarray(cell)[:, None]
        j = hit.argmax(axis=1)
        rows = np.arange(len(j))
        return np.where(hit[rows, j], self.power_dbm[pixel, j], -np.inf)

    @property
    def covered_share(self) -> float:
        """Share of pixels where at least one cell is heard above the noise floor."""
        return float((self.cell[:, 0] >= 0).mean())


def build_radio(
    plan: NetworkPlan,
    extent: tuple[float, float, float, float],
    *,
    rng: np.random.Generator,
    pixel_m: float = 25.0,
    shadowing_db: float = 7.0,
    decorrelation_m: float = 50.0,
    site_correlation: float = 0.5,
    nearest_sites: int = 10,
    keep: int = 6,
    h_ut_m: float = 1.5,
    chunk: int = 65_536,
) -> RadioEnvironment:
    """Compute the true coverage of `plan` over `extent`.

    Parameters
    ----------
    plan
        The cells (their true positions, heights, powers, azimuths).
    extent
        (xmin, ymin, xmax, ymax) in metres.
    rng
        Draws the shadowing field and the per-site offsets.
    pixel_m
        Raster pixel size.
    shadowing_db
        Standard deviation of log-normal shadowing (DESIGN §3: 6-8 dB).
    decorrelation_m
        Distance at which the shadowing correlation falls to 1/e (DESIGN §3: about 50 m).
    site_correlation
        Correlation of two sites' shadowing at one place (3GPP: 0.5).
    nearest_sites
        How many nearest sites are evaluated at each pixel.
    keep
        How many strongest cells are kept per pixel.

    Returns
    -------
    RadioEnvironment
    """
    xmin, ymin, xmax, ymax = extent
    cols = int(np.ceil((xmax - xmin) / pixel_m))
    rows = int(np.ceil((ymax - ymin) / pixel_m))
    cells = plan.cells
    if cells.empty:
        raise ValueError("the plan has no cell")
    sites = cells.drop_duplicates("site_id")[["site_id", "x", "y"]].reset_index(drop=True)
    site_row = {int(s): i for i, s in enumerate(sites["site_id"])}
    cell_site = np.array([site_row[int(s)] for s in cells["site_id"]], dtype=np.int64)
    # cells of each site, padded: site -> up to max sectors cell rows
    per_site = np.bincount(cell_site, minlength=len(sites))
    width = int(per_site.max())
    site_cells = np.full((len(sites), width), -1, dtype=np.int64)
    fill = np.zeros(len(sites), dtype=np.int64)
    for row, s in enumerate(cell_site.tolist()):
        site_cells[s, fill[s]] = row
        fill[s] += 1

    field = _unit_field((rows, cols), decorrelation_m / pixel_m, rng)
    offsets = rng.integers(0, [rows, cols], size=(len(sites), 2))
    a, b = np.sqrt(site_correlation), np.sqrt(1.0 - site_correlation)

    tree = cKDTree(sites[["x", "y"]].to_numpy())
    k_sites = min(nearest_sites, len(sites))
    n_pix = rows * cols
    keep = min(keep, k_sites * width)
    out_cell = np.full((n_pix, keep), -1, dtype=np.int32)
    out_pow = np.full((n_pix, keep), -np.inf, dtype=np.float32)
    cx, cy = cells["x"].to_numpy(), cells["y"].to_numpy()
    power, azimuth = cells["power_dbm"].to_numpy(), cells["azimuth_deg"].to_numpy()
    height, fc = cells["height_m"].to_numpy(), cells["band_mhz"].to_numpy() / 1000.0
    for start in range(0, n_pix, chunk):
        pix = np.arange(start, min(start + chunk, n_pix))
        r, c = np.divmod(pix, cols)
        px, py = xmin + (c + 0.5) * pixel_m, ymin + (r + 0.5) * pixel_m
        _, near = tree.query(np.column_stack([px, py]), k=k_sites)
        near = near.reshape(len(pix), k_sites)
        cand = site_cells[near].reshape(len(pix), -1)  # cell rows, -1 padding
        valid = cand >= 0
        cr = np.where(valid, cand, 0)
        rx = received_power_dbm(
            px[:, None] - cx[cr], py[:, None] - cy[cr], power_dbm=power[cr],
            azimuth_deg=azimuth[cr], fc_ghz=fc[cr], h_bs_m=height[cr], h_ut_m=h_ut_m,
        )  # fmt: skip
        site_of = cell_site[cr]
        own = field[
            (r[:, None] + offsets[site_of, 0]) % rows, (c[:, None] + offsets[site_of, 1]) % cols
        ]
        shadow = shadowing_db * (a * field[r, c][:, None] + b * own)
        rx = np.where(valid, rx - shadow, -np.inf)
        rx = np.where(rx >= NOISE_FLOOR_DBM, rx, -np.inf)
        top = np.argsort(-rx, axis=1)[:, :keep]
        out_pow[pix] = np.take_along_axis(rx, top, axis=1)
        out_cell[pix] = np.where(
            np.isfinite(out_pow[pix]), np.take_along_axis(cand, top, axis=1), -1
        )
    return RadioEnvironment(
        x0=xmin, y0=ymin, pixel_m=pixel_m, shape=(rows, cols), cell=out_cell, power_dbm=out_pow
    )


def _unit_field(shape: tuple[int, int], corr_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field whose correlation is 1/e at `corr_px`."""
    noise = rng.standard_normal(shape)
    # Gaussian smoothing with kernel SD s gives correlation exp(-d^2 / (4 s^2)): 1/e at 2 s
    smooth = gaussian_filter(noise, sigma=max(corr_px / 2.0, 1e-6), mode="wrap")
    return (smooth - smooth.mean()) / smooth.std()
