"""Large-scale channel gains: free space and 3GPP TR 38.901 path-loss models.

The paper does not give its channel model (MODEL.md item 3); the scenario
chooses one by name.  All functions are pure, vectorised and broadcast over
their array arguments; distances in metres, carrier in Hz, heights in metres.
Shadowing and fast fading are not modelled: gains are deterministic.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from .units import SPEED_OF_LIGHT_M_PER_S, db_to_linear

PathLossModel = Literal["free_space", "3gpp_uma_los", "3gpp_uma_nlos", "3gpp_umi_los"]
PATH_LOSS_MODELS: tuple[str, ...] = ("free_space", "3gpp_uma_los", "3gpp_uma_nlos", "3gpp_umi_los")

#: Smallest 3D distance used by the free-space model [m] (avoids the far-field singularity).
MIN_DISTANCE_M = 1.0
#: Smallest 2D distance of the TR 38.901 models [m] (their validity range starts at 10 m).
MIN_DISTANCE_2D_38901_M = 10.0


def free_space_path_loss_db(distance_m: npt.ArrayLike, carrier_hz: float) -> np.ndarray:
    """Friis free-space path loss in dB.

    .. math:: PL = 20\\log_{10}(4\\pi d f_c / c)

    Examples
    --------
    >>> round(float(free_space_path_loss_db(1000.0, 3.5e9)), 2)
    103.33
    """
    d = np.maximum(np.asarray(distance_m, dtype=float), MIN_DISTANCE_M)
    return 20.0 * np.log10(4.0 * np.pi * d * carrier_hz / SPEED_OF_LIGHT_M_PER_S)


def _breakpoint_distance_m(bs_height_m, ut_height_m, carrier_hz, env_height_m=1.0):
    """TR 38.901 Table 7.4.1-1 note 1: d'_BP = 4 h'_BS h'_UT f_c / c with h' = h - h_E."""
    h_bs = np.maximum(np.asarray(bs_height_m, dtype=float) - env_height_m, 0.1)
    h_ut = np.maximum(np.asarray(ut_height_m, dtype=float) - env_height_m, 0.1)
    return 4.0 * h_bs * h_ut * carrier_hz / SPEED_OF_LIGHT_M_PER_S


def _distances(distance_2d_m, bs_height_m, ut_height_m):
    d2 = np.maximum(np.asarray(distance_2d_m, dtype=float), MIN_DISTANCE_2D_38901_M)
    dh = np.asarray(bs_height_m, dtype=float) - np.asarray(ut_height_m, dtype=float)
    return d2, np.sqrt(d2**2 + dh**2), dh


def uma_los_path_loss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz) -> np.ndarray:
    """3GPP TR 38.901 Table 7.4.1-1, UMa LOS (PL1 before, PL2 after the breakpoint), in dB.

    Examples
    --------
    >>> round(float(uma_los_path_loss_db(100.0, 25.0, 1.5, 3.5e9)), 2)
    83.14
    """
    d2, d3, dh = _distances(distance_2d_m, bs_height_m, ut_height_m)
    fc_ghz = carrier_hz / 1e9
    d_bp = _breakpoint_distance_m(bs_height_m, ut_height_m, carrier_hz)
    pl1 = 28.0 + 22.0 * np.log10(d3) + 20.0 * np.log10(fc_ghz)
    pl2 = 28.0 + 40.0 * np.log10(d3) + 20.0 * np.log10(fc_ghz) - 9.0 * np.log10(d_bp**2 + dh**2)
    return np.where(d2 <= d_bp, pl1, pl2)


def uma_nlos_path_loss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz) -> np.ndarray:
    """3GPP TR 38.901 Table 7.4.1-1, UMa NLOS: max(PL_UMa-LOS, PL'_UMa-NLOS), in dB."""
    _, d3, _ = _distances(distance_2d_m, bs_height_m, ut_height_m)
    fc_ghz = carrier_hz / 1e9
    h_ut = np.asarray(ut_height_m, dtype=float)
    pl_nlos = 13.54 + 39.08 * np.log10(d3) + 20.0 * np.log10(fc_ghz) - 0.6 * (h_ut - 1.5)
    return np.maximum(uma_los_path_loss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz), pl_nlos)


def umi_los_path_loss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz) -> np.ndarray:
    """3GPP TR 38.901 Table 7.4.1-1, UMi street canyon LOS, in dB."""
    d2, d3, dh = _distances(distance_2d_m, bs_height_m, ut_height_m)
    fc_ghz = carrier_hz / 1e9
    d_bp = _breakpoint_distance_m(bs_height_m, ut_height_m, carrier_hz)
    pl1 = 32.4 + 21.0 * np.log10(d3) + 20.0 * np.log10(fc_ghz)
    pl2 = 32.4 + 40.0 * np.log10(d3) + 20.0 * np.log10(fc_ghz) - 9.5 * np.log10(d_bp**2 + dh**2)
    return np.where(d2 <= d_bp, pl1, pl2)


def path_loss_db(
    model: str,
    *,
    distance_2d_m: npt.ArrayLike,
    bs_height_m: npt.ArrayLike,
    ut_height_m: npt.ArrayLike,
    carrier_hz: float,
) -> np.ndarray:
    """Path loss in dB of the model named ``model`` (one of :data:`PATH_LOSS_MODELS`)."""
    if model == "free_space":
        d2 = np.asarray(distance_2d_m, dtype=float)
        dh = np.asarray(bs_height_m, dtype=float) - np.asarray(ut_height_m, dtype=float)
        return free_space_path_loss_db(np.sqrt(d2**2 + dh**2), carrier_hz)
    if model == "3gpp_uma_los":
        return uma_los_path_loss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz)
    if model == "3gpp_uma_nlos":
        return uma_nlos_path_loss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz)
    if model == "3gpp_umi_los":
        return umi_los_path_loss_db(distance_2d_m, bs_height_m, ut_height_m, carrier_hz)
    raise ValueError(f"channel.model: got {model!r}; allowed: {', '.join(PATH_LOSS_MODELS)}")


def channel_gain(model: str, **kwargs) -> np.ndarray:
    """Linear channel power gain h = 10^(-PL/10) (the h of equation (1) and of r_kb)."""
    return db_to_linear(-path_loss_db(model, **kwargs))
