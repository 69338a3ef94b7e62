"""Synthetic cities for benchmarks and scale tests: many servers, many cells, many twins.

:func:`city_scenario` builds a :class:`~edgeverse.scenario.Scenario` (seeded,
deterministic) on the ``paper-calibrated`` preset's physics (free space at
3.5 GHz, the three DT types with D_k = 10 kb and Gamma_k = 10 cycles/bit, so
that hosting matters):

* **servers** on a jittered square lattice over the area (a ``g x g`` lattice,
  ``g = ceil(sqrt(B))``, each site moved by up to a quarter of the spacing,
  ``g^2 - B`` sites dropped at random); sensor bands alternate 10 / 20 MHz and
  base compute 8 / 16 GHz as in the paper's four servers;
* **compute** scaled with the twins per server: ``Psi_b = base_b x max(1,
  K / (25 B))``.  In the ``paper-calibrated`` preset a DT needs about 0.12 GHz
  on average (200 DTs take half of 48 GHz), so this gives each server about
  four times the compute its average share of DTs needs - but DTs crowd
  into the hotspots, so hotspot servers run out and hosting matters;
* **sensing density**: ``max(3, B // 8)`` Gaussian hotspots (std 1/20 of the
  side) at random positions plus a broad background (std the side, 30 % of
  the mass);
* **twins** from the same mixture; ``Q = 6250 B`` sensors (the paper's 6250
  per server).
"""

from __future__ import annotations

import math

import numpy as np

from .scenario import Scenario, get_preset


def lattice_sites(n_servers: int, side_m: float, rng: np.random.Generator) -> np.ndarray:
    """``n_servers`` sites on a jittered square lattice over ``[0, side]^2``."""
    g = max(1, math.ceil(math.sqrt(n_servers)))
    h = side_m / g
    ij = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), axis=-1).reshape(-1, 2)
    keep = np.sort(rng.choice(ij.shape[0], size=n_servers, replace=False))
    pts = (ij[keep] + 0.5) * h + rng.uniform(-0.25 * h, 0.25 * h, size=(n_servers, 2))
    return np.clip(pts, 0.0, side_m)


def city_scenario(cells: int = 1000, servers: int = 64, twins: int = 10_000, *, side_m: float | None = None,
                  cell_m: float = 10.0, seed: int = 0, name: str | None = None) -> Scenario:
    """A synthetic city: ``cells x cells`` grid of ``cell_m`` metres, ``servers`` sites, ``twins`` DTs.

    >>> city_scenario(0, 4, 10)
    Traceback (most recent call last):
    ...
    ValueError: city_scenario: cells must be a whole number >= 1; got 0
    """
    for field, value, low in (("cells", cells, 1), ("servers", servers, 1), ("twins", twins, 0), ("seed", seed, 0)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"city_scenario: {field} must be a whole number >= {low}; got {value!r}")
    for field, value in (("side_m", side_m), ("cell_m", cell_m)):
        if value is None and field == "side_m":
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"city_scenario: {field} must be a finite length > 0 in metres; got {value!r}")
    side = float(side_m) if side_m is not None else cells * cell_m
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC17]))
    pos = lattice_sites(servers, side, rng)
    base_psi = np.where(np.arange(servers) % 2 == 0, 8e9, 16e9)
    base_w = np.where(np.arange(servers) % 2 == 0, 1e7, 2e7)
    scale = max(1.0, twins / (25.0 * servers))
    n_hot = max(3, servers // 8)
    hot = rng.uniform(0.1 * side, 0.9 * side, size=(n_hot, 2))
    w_hot = rng.uniform(0.5, 1.5, size=n_hot)
    w_hot = 0.7 * w_hot / w_hot.sum()
    comps = [{"mean_m": [float(x), float(y)], "std_m": side / 20.0, "weight": float(w)} for (x, y), w in zip(hot, w_hot)]
    comps.append({"mean_m": [side / 2, side / 2], "std_m": side, "weight": 0.3})
    base = get_preset("paper-calibrated").to_dict()
    base["name"] = name or f"city-{cells}x{cells}-B{servers}-K{twins}"
    base["seed"] = int(seed)
    base["zone"] = {"origin_m": [0.0, 0.0], "size_m": [side, side], "cells": [int(cells), int(cells)]}
    base["servers"] = dict(base["servers"])
    base["servers"].update({
        "positions_m": pos.tolist(), "compute_hz": (base_psi * scale).tolist(),
        "sensor_bandwidth_hz": base_w.tolist(),
    })
    base["servers"].pop("names", None)
    base["sensing"] = dict(base["sensing"])
    base["sensing"]["n_sensors"] = 6250 * servers
    base["sensing"]["density"] = {"kind": "gaussian_mixture", "components": comps}
    base["twins"] = dict(base["twins"])
    base["twins"]["count"] = int(twins)
    base["twins"]["positions"] = {"kind": "gaussian_mixture", "components": comps}
    return Scenario.from_dict(base)
