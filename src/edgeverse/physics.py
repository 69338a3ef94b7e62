"""The paper's equations (1)-(8) and Algorithm 1 line 9, one pure function each.

All inputs are SI: Hz, W, s, bits, cycles, m^3.  Functions broadcast over numpy
arrays.  They assume valid (validated) input; a zero rate or zero compute gives
``inf`` (never a silent NaN), which callers report.

Symbols (paper, Sec. II): W^s_b sensor bandwidth, Q_b sensors at server b,
h channel gain, xi_q sensor power, sigma^2_b noise power, Delta slot, epsilon
volume unit, rho data density, Lambda rendering complexity, psi^s_b rendering
compute; for twins W_k, zeta_k, D_k, Gamma_k, phi^k_b, mu_k.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _safe_div(num, den) -> np.ndarray:
    """num / den with den == 0 giving +inf (num > 0) or 0 (num == 0), no warnings."""
    num, den = np.broadcast_arrays(_arr(num), _arr(den))
    ok = den > 0
    if ok.all():  # the usual case: one plain division (the same values)
        return num / den
    out = np.full(num.shape, np.inf)
    np.divide(num, den, out=out, where=ok)
    out[~ok & (num == 0)] = 0.0
    return out


def snr(rx_gain: ArrayLike, tx_power_w: ArrayLike, noise_power_w: ArrayLike) -> np.ndarray:
    """Signal-to-noise ratio h * P / sigma^2 (the argument of log2 in (1) and r_kb).

    >>> round(float(snr(1e-10, 0.1, 1e-14)), 6)
    1000.0
    """
    return _arr(rx_gain) * _arr(tx_power_w) / _arr(noise_power_w)


def spectral_efficiency_bps_per_hz(snr_linear: ArrayLike) -> np.ndarray:
    """Shannon spectral efficiency log2(1 + SNR) [bit/s/Hz].

    >>> float(spectral_efficiency_bps_per_hz(3.0))
    2.0
    """
    return np.log1p(_arr(snr_linear)) / np.log(2.0)  # log1p: exact for tiny SNR too


def sensor_rate_bps(bandwidth_hz: ArrayLike, n_sensors: ArrayLike, snr_linear: ArrayLike) -> np.ndarray:
    """Equation (1): R_qb = (W^s_b / Q_b) log2(1 + h_qb xi_q / sigma^2_b).

    >>> float(sensor_rate_bps(10e6, 1000, 3.0))
    20000.0
    """
    return _safe_div(bandwidth_hz, n_sensors) * spectral_efficiency_bps_per_hz(snr_linear)


def sensor_upload_time_s(
    slot_s: ArrayLike, volume_m3: ArrayLike, data_density_bps_per_m3: ArrayLike, rate_bps: ArrayLike
) -> np.ndarray:
    """Equation (2): t^com_qb = Delta epsilon rho / R_qb.

    >>> float(sensor_upload_time_s(1e-3, 0.01, 50.0, 20000.0))
    2.5e-08
    """
    return _safe_div(_arr(slot_s) * _arr(volume_m3) * _arr(data_density_bps_per_m3), rate_bps)


def sensor_render_time_s(
    complexity_cycles_per_bit: ArrayLike,
    slot_s: ArrayLike,
    volume_m3: ArrayLike,
    n_sensors: ArrayLike,
    data_density_bps_per_m3: ArrayLike,
    render_compute_hz: ArrayLike,
) -> np.ndarray:
    """Equation (3): t^cmp_qb = Lambda Delta epsilon Q_b rho / psi^s_b.

    >>> float(sensor_render_time_s(5000, 1e-3, 0.01, 1000, 50.0, 8e9))
    3.125e-07
    """
    work = (
        _arr(complexity_cycles_per_bit) * _arr(slot_s) * _arr(volume_m3) * _arr(n_sensors) * _arr(data_density_bps_per_m3)
    )
    return _safe_div(work, render_compute_hz)


def sensor_sync_time_s(upload_time_s: ArrayLike, render_time_s: ArrayLike) -> np.ndarray:
    """Equation (4): t^sync_qb = t^com_qb + t^cmp_qb."""
    return _arr(upload_time_s) + _arr(render_time_s)


def sub_sync_time_s(sync_time_s: ArrayLike, weight: ArrayLike, axis=None) -> np.ndarray:
    """Equation (5), discretised: T_b = sum over the region's cells of t^sync * weight.

    ``weight`` is the cell's share of g (a probability mass: the literal reading)
    or its sensor count Q * mass (the reading that gives milliseconds; MODEL.md
    item 1).  Cells with zero weight contribute 0 even when their time is inf.
    """
    t, w = np.broadcast_arrays(_arr(sync_time_s), _arr(weight))
    prod = np.zeros(t.shape)
    np.multiply(t, w, out=prod, where=w > 0)
    return np.sum(prod, axis=axis)


def twin_rate_bps(bandwidth_hz: ArrayLike, snr_linear: ArrayLike) -> np.ndarray:
    """Uplink rate of PT k to server b (Sec. II-B): r_kb = W_k log2(1 + h_kb zeta_k / sigma^2_b).

    >>> float(twin_rate_bps(1e6, 3.0))
    2000000.0
    """
    return _arr(bandwidth_hz) * spectral_efficiency_bps_per_hz(snr_linear)


def twin_upload_time_s(data_size_bits: ArrayLike, rate_bps: ArrayLike) -> np.ndarray:
    """Equation (6): tau^com_kb = D_k / r_kb.

    >>> float(twin_upload_time_s(1e7, 2e6))
    5.0
    """
    return _safe_div(data_size_bits, rate_bps)


def twin_compute_time_s(
    complexity_cycles_per_bit: ArrayLike, data_size_bits: ArrayLike, compute_hz: ArrayLike
) -> np.ndarray:
    """Equation (7): tau^cmp_kb = Gamma_k D_k / phi^k_b.

    >>> float(twin_compute_time_s(1e4, 1e7, 1e9))
    100.0
    """
    return _safe_div(_arr(complexity_cycles_per_bit) * _arr(data_size_bits), compute_hz)


def twin_sync_time_s(upload_time_s: ArrayLike, compute_time_s: ArrayLike) -> np.ndarray:
    """Equation (8): tau^sync_kb = tau^com_kb + tau^cmp_kb (must be <= 1/mu_k, (9b))."""
    return _arr(upload_time_s) + _arr(compute_time_s)


def twin_min_compute_hz(
    complexity_cycles_per_bit: ArrayLike,
    data_size_bits: ArrayLike,
    intensity_hz: ArrayLike,
    rate_bps: ArrayLike,
) -> np.ndarray:
    """Algorithm 1, line 9: the least phi meeting (9b) with equality.

    .. math:: \\phi^k_b = \\Gamma_k / (1/(\\mu_k D_k) - 1/r_{kb})

    which equals Gamma_k D_k / (1/mu_k - D_k/r_kb).  Where the upload alone
    takes the whole deadline or more (D_k / r_kb >= 1/mu_k) no finite compute
    meets it; the paper's formula would then give a negative or infinite value.
    Here those entries are ``+inf`` (never negative), for the caller to report.

    >>> float(twin_min_compute_hz(1e4, 1e4, 10.0, 1e6))
    1111111111.111111
    >>> float(twin_min_compute_hz(1e4, 1e7, 10.0, 1e7))
    inf
    """
    slack_s = 1.0 / _arr(intensity_hz) - _safe_div(data_size_bits, rate_bps)
    work = _arr(complexity_cycles_per_bit) * _arr(data_size_bits)
    work, slack_s = np.broadcast_arrays(work, slack_s)
    out = np.full(work.shape, np.inf)
    np.divide(work, slack_s, out=out, where=slack_s > 0)
    return out


def sensing_cost_s_per_bit(
    data_density_bps_per_m3: ArrayLike,
    bandwidth_hz: ArrayLike,
    spectral_efficiency: ArrayLike,
    complexity_cycles_per_bit: ArrayLike,
    render_compute_hz: ArrayLike,
) -> np.ndarray:
    """The paper's F(omega, kappa_b) (Sec. III, before (11)):

    .. math:: F = \\rho / (W^s_b \\log_2(1+\\beta/\\sigma^2_b)) + \\Lambda \\rho / \\psi^s_b

    so that t^sync_qb = Q_b Delta epsilon F (equations (1)-(4) combined).

    >>> float(sensing_cost_s_per_bit(50.0, 10e6, 2.0, 5000, 8e9))
    3.375e-05
    """
    rho = _arr(data_density_bps_per_m3)
    return _safe_div(rho, _arr(bandwidth_hz) * _arr(spectral_efficiency)) + _safe_div(
        _arr(complexity_cycles_per_bit) * rho, render_compute_hz
    )
