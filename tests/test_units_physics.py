"""Each equation against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeverse import physics, units
from edgeverse.channel import free_space_path_loss_db, path_loss_db, uma_los_path_loss_db, umi_los_path_loss_db


def test_conversions():
    assert units.dbm_to_watt(-170.0) == pytest.approx(1e-20)
    assert units.watt_to_dbm(0.3) == pytest.approx(24.771212547)
    assert units.db_to_linear(-3.0) == pytest.approx(0.501187234)
    assert units.linear_to_db(200.0) == pytest.approx(23.010299957)
    assert units.mhz(10) == 1e7 and units.ghz(16) == 1.6e10 and units.khz(2) == 2e3
    assert units.s_to_ms(0.019) == pytest.approx(19.0)


def test_free_space():
    # 20 log10(4 pi 500 * 3.5e9 / c) by hand
    expected = 20 * math.log10(4 * math.pi * 500 * 3.5e9 / 299792458.0)
    assert free_space_path_loss_db(500.0, 3.5e9) == pytest.approx(expected)
    assert expected == pytest.approx(97.30, abs=0.01)
    # 3D distance with heights: sqrt(400^2 + 23.5^2)
    d3 = math.hypot(400.0, 23.5)
    got = path_loss_db("free_space", distance_2d_m=400.0, bs_height_m=25.0, ut_height_m=1.5, carrier_hz=3.5e9)
    assert got == pytest.approx(20 * math.log10(4 * math.pi * d3 * 3.5e9 / 299792458.0))


def test_3gpp_uma_umi_los():
    d3 = math.hypot(100.0, 23.5)
    assert uma_los_path_loss_db(100.0, 25.0, 1.5, 3.5e9) == pytest.approx(28 + 22 * math.log10(d3) + 20 * math.log10(3.5))
    # beyond the breakpoint d'_BP = 4 * 24 * 0.5 * 3.5e9 / c = 560.4 m
    d_bp = 4 * 24 * 0.5 * 3.5e9 / 299792458.0
    d3 = math.hypot(1000.0, 23.5)
    pl2 = 28 + 40 * math.log10(d3) + 20 * math.log10(3.5) - 9 * math.log10(d_bp**2 + 23.5**2)
    assert uma_los_path_loss_db(1000.0, 25.0, 1.5, 3.5e9) == pytest.approx(pl2)
    d3 = math.hypot(50.0, 8.5)
    assert umi_los_path_loss_db(50.0, 10.0, 1.5, 3.5e9) == pytest.approx(32.4 + 21 * math.log10(d3) + 20 * math.log10(3.5))
    with pytest.raises(ValueError, match="channel.model: got 'bogus'"):
        path_loss_db("bogus", distance_2d_m=1.0, bs_height_m=1.0, ut_height_m=1.0, carrier_hz=1e9)


def test_sensor_equations_1_to_4():
    w, q_b, snr = 10e6, 5000.0, 1023.0  # log2(1 + 1023) = 10
    rate = physics.sensor_rate_bps(w, q_b, snr)
    assert rate == pytest.approx(10e6 / 5000 * 10)  # (1) = 20 kb/s
    t_com = physics.sensor_upload_time_s(1e-3, 0.01, 50.0, rate)
    assert t_com == pytest.approx(1e-3 * 0.01 * 50 / 20000.0)  # (2) = 2.5e-8 s
    t_cmp = physics.sensor_render_time_s(5000.0, 1e-3, 0.01, q_b, 50.0, 8e9)
    assert t_cmp == pytest.approx(5000 * 1e-3 * 0.01 * 5000 * 50 / 8e9)  # (3) = 1.5625e-6 s
    assert physics.sensor_sync_time_s(t_com, t_cmp) == pytest.approx(2.5e-8 + 1.5625e-6)  # (4)
    # the F form: t_sync = Q_b Delta eps F
    f = physics.sensing_cost_s_per_bit(50.0, w, 10.0, 5000.0, 8e9)
    assert q_b * 1e-3 * 0.01 * f == pytest.approx(2.5e-8 + 1.5625e-6)


def test_sub_sync_time_5_ignores_empty_cells():
    t = np.array([1e-3, np.inf, 2e-3])
    w = np.array([10.0, 0.0, 5.0])
    assert physics.sub_sync_time_s(t, w) == pytest.approx(10 * 1e-3 + 5 * 2e-3)


def test_twin_equations_6_to_8_and_line_9():
    r = physics.twin_rate_bps(1e6, 2**12 - 1)  # 12 bit/s/Hz -> 12 Mb/s
    assert r == pytest.approx(12e6)
    up = physics.twin_upload_time_s(1e4, r)  # (6)
    assert up == pytest.approx(1e4 / 12e6)
    cmp_ = physics.twin_compute_time_s(10.0, 1e4, 1e9)  # (7)
    assert cmp_ == pytest.approx(1e5 / 1e9)
    assert physics.twin_sync_time_s(up, cmp_) == pytest.approx(1e4 / 12e6 + 1e-4)  # (8)
    # line 9: Gamma / (1/(mu D) - 1/r); mu = 100 -> deadline 10 ms
    phi = physics.twin_min_compute_hz(10.0, 1e4, 100.0, r)
    assert phi == pytest.approx(10.0 / (1 / (100 * 1e4) - 1 / 12e6))
    # with that compute the deadline is met with equality
    assert physics.twin_sync_time_s(up, physics.twin_compute_time_s(10.0, 1e4, phi)) == pytest.approx(0.01)
    # infeasible: upload longer than the deadline -> inf, never negative
    bad = physics.twin_min_compute_hz(1e4, 1e7, [10.0, 1000.0], [1e7, 1e7])
    assert np.all(np.isinf(bad)) and np.all(bad > 0)


def test_zero_rate_and_compute_give_inf_not_nan():
    assert np.isinf(physics.twin_upload_time_s(1e4, 0.0))
    assert np.isinf(physics.sensor_render_time_s(5000, 1e-3, 0.01, 10, 50, 0.0))
    assert physics.sensor_render_time_s(5000, 1e-3, 0.01, 0, 50, 0.0) == 0.0
