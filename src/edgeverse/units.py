"""Unit conversions: decibels, dBm, and SI prefixes, in one place.

Every other module computes in SI units (W, Hz, s, m, cycles/s) and converts
only at its edges with these functions.

Examples
--------
>>> float(db_to_linear(30.0))
1000.0
>>> float(dbm_to_watt(30.0))
1.0
>>> float(watt_to_dbm(1e-3))
0.0
>>> ghz(8)
8000000000.0
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike

#: Speed of light in vacuum [m/s].
SPEED_OF_LIGHT_M_PER_S = 299_792_458.0


def db_to_linear(value_db: ArrayLike) -> np.ndarray:
    """Power ratio from decibels: ``10 ** (value_db / 10)``."""
    return np.power(10.0, np.asarray(value_db, dtype=float) / 10.0)


def linear_to_db(value: ArrayLike) -> np.ndarray:
    """Decibels from a (positive) power ratio: ``10 log10(value)``."""
    return 10.0 * np.log10(np.asarray(value, dtype=float))


def dbm_to_watt(power_dbm: ArrayLike) -> np.ndarray:
    """Watts from dBm: ``10 ** ((power_dbm - 30) / 10)``."""
    return db_to_linear(np.asarray(power_dbm, dtype=float) - 30.0)


def watt_to_dbm(power_w: ArrayLike) -> np.ndarray:
    """dBm from watts: ``10 log10(power_w) + 30``."""
    return linear_to_db(power_w) + 30.0


def khz(value: float) -> float:
    """Hz from kHz."""
    return float(value) * 1e3


def mhz(value: float) -> float:
    """Hz from MHz."""
    return float(value) * 1e6


def ghz(value: float) -> float:
    """Hz (or cycles/s) from GHz."""
    return float(value) * 1e9


def hz_to_ghz(value_hz: ArrayLike) -> np.ndarray:
    """GHz from Hz (or cycles/s)."""
    return np.asarray(value_hz, dtype=float) / 1e9


def s_to_ms(value_s: ArrayLike) -> np.ndarray:
    """Milliseconds from seconds."""
    return np.asarray(value_s, dtype=float) * 1e3


_NUMBER_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def number_from_text(text: str) -> int | float | None:
    """A number written as text (PyYAML, a YAML 1.1 reader, gives ``5e6`` or ``1e2`` as strings): an int when
    it is whole and written without a dot, else a float; None when the text is not a plain number.

    >>> number_from_text("5e6"), number_from_text(" 2.5e-3 "), number_from_text("5.0"), number_from_text("S1")
    (5000000, 0.0025, 5.0, None)
    """
    t = text.strip()
    if not _NUMBER_TEXT.fullmatch(t):
        return None
    v = float(t)
    return int(v) if "." not in t and v.is_integer() and abs(v) < 2**53 else v
