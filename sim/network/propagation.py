"""Textbook propagation: 3GPP TR 38.901 UMa path loss and a sectored antenna pattern.

These are the published formulas, which both the simulated world and an operator's
estimator may use: the world adds spatially correlated shadowing on top (``radio``),
the operator usually assumes none. All functions are vectorised over NumPy arrays.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "SPEED_OF_LIGHT",
    "los_probability_uma",
    "path_loss_uma",
    "received_power_dbm",
    "sector_gain_db",
]

SPEED_OF_LIGHT = 299_792_458.0


def los_probability_uma(d2d_m: ArrayLike, *, h_ut_m: float = 1.5) -> np.ndarray:
    """Probability of line of sight in UMa (TR 38.901 Table 7.4.2-1), for h_UT <= 13 m."""
    d = np.maximum(np.asarray(d2d_m, dtype=float), 1.0)
    if h_ut_m > 13.0:
        raise ValueError(f"h_ut_m = {h_ut_m}: this LOS model is for handsets up to 13 m")
    p = 18.0 / d + np.exp(-d / 63.0) * (1.0 - 18.0 / d)
    return np.where(d <= 18.0, 1.0, p)


def path_loss_uma(
    d2d_m: ArrayLike,
    *,
    fc_ghz: ArrayLike,
    h_bs_m: ArrayLike = 25.0,
    h_ut_m: float = 1.5,
    los: str = "expected",
) -> np.ndarray:
    """Path loss in dB of TR 38.901 UMa (Table 7.4.1-1).

    Parameters
    ----------
    d2d_m
        Horizontal distances between site and handset, metres (clipped to >= 10 m, the
        model's validity floor).
    fc_ghz
        Carrier frequency in GHz.
    h_bs_m, h_ut_m
        Antenna heights of the site and the handset, metres.
    los
        ``"los"``, ``"nlos"`` or ``"expected"``: the LOS and NLOS losses weighted by the
        LOS probability (in dB), a deterministic stand-in for the random LOS state.

    Returns
    -------
    numpy.ndarray
        Path loss in dB, shaped like the broadcast inputs.
    """
    d2d = np.maximum(np.asarray(d2d_m, dtype=float), 10.0)
    fc = np.asarray(fc_ghz, dtype=float)
    h_bs = np.asarray(h_bs_m, dtype=float)
    d3d = np.sqrt(d2d**2 + (h_bs - h_ut_m) ** 2)
    # breakpoint distance with an effective environment height of 1 m
    d_bp = 4.0 * (h_bs - 1.0) * (h_ut_m - 1.0) * fc * 1e9 / SPEED_OF_LIGHT
    pl1 = 28.0 + 22.0 * np.log10(d3d) + 20.0 * np.log10(fc)
    pl2 = (
        28.0
        + 40.0 * np.log10(d3d)
        + 20.0 * np.log10(fc)
        - 9.0 * np.log10(d_bp**2 + (h_bs - h_ut_m) ** 2)
    )
    pl_los = np.where(d2d <= d_bp, pl1, pl2)
    if los == "los":
        return pl_los
    pl_nlos = np.maximum(
        pl_los, 13.54 + 39.08 * np.log10(d3d) + 20.0 * np.log10(fc) - 0.6 * (h_ut_m - 1.5)
    )
    if los == "nlos":
        return pl_nlos
    if los != "expected":
        raise ValueError(f"los = {los!r}; allowed: 'los', 'nlos', 'expected'")
    p = los_probability_uma(d2d, h_ut_m=h_ut_m)
    return p * pl_los + (1.0 - p) * pl_nlos


def sector_gain_db(
    bearing_deg: ArrayLike,
    azimuth_deg: ArrayLike,
    *,
    beamwidth_deg: float = 65.0,
    front_to_back_db: float = 30.0,
    max_gain_dbi: float = 15.0,
) -> np.ndarray:
    """Horizontal antenna gain, dBi, of a sector (TR 38.901 Table 7.3-1 pattern).

    ``A(phi) = G_max - min(12 (phi / phi_3dB)^2, A_m)``, with phi the angle between the
    bearing to the handset and the sector azimuth. A NaN azimuth means an omni antenna.
    """
    az = np.asarray(azimuth_deg, dtype=float)
    phi = (np.asarray(bearing_deg, dtype=float) - az + 180.0) % 360.0 - 180.0
    loss = np.minimum(12.0 * (phi / beamwidth_deg) ** 2, front_to_back_db)
    return max_gain_dbi - np.where(np.isnan(az), 0.0, loss)


def received_power_dbm(
    dx_m: ArrayLike,
    dy_m: ArrayLike,
    *,
    power_dbm: ArrayLike,
    azimuth_deg: ArrayLike,
    fc_ghz: ArrayLike,
    h_bs_m: ArrayLike = 25.0,
    h_ut_m: float = 1.5,
    beamwidth_deg: float = 65.0,
) -> np.ndarray:
    """Received power from a cell at offset (dx, dy) from its site, without shadowing.

    Bearings are compass degrees (0 = north, 90 = east), as sector azimuths are given.
    """
    dx = np.asarray(dx_m, dtype=float)
    dy = np.asarray(dy_m, dtype=float)
    bearing = np.degrees(np.arctan2(dx, dy)) % 360.0
    gain = sector_gain_db(bearing, azimuth_deg, beamwidth_deg=beamwidth_deg)
    loss = path_loss_uma(np.hypot(dx, dy), fc_ghz=fc_ghz, h_bs_m=h_bs_m, h_ut_m=h_ut_m)
    return np.asarray(power_dbm, dtype=float) + gain - loss
