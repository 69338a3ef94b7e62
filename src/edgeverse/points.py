"""One sweep point as a pure, picklable function of (configuration, seed, method).

The reproduction, the sweep executors (local processes or Dask) and the tests
all call :func:`run_point`, so a point's numbers never depend on where it ran.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from . import __version__
from .scenario import Scenario


def point_key(config: dict[str, Any], seed: int, method: str, options: dict[str, Any] | None = None) -> str:
    """Stable hash of (configuration, seed, method, options, package version)."""
    blob = json.dumps({"config": config, "seed": int(seed), "method": method, "options": options or {},
                       "version": __version__}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def run_point(config: dict[str, Any], seed: int, method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Solve one (configuration, seed, method) point and return a flat record.

    ``config`` is a scenario as a plain dict (``Scenario.to_dict()``); its seed
    is replaced by ``seed``.  The record holds only plain Python values,
    among them the single-move certificate of the solution
    (:func:`edgeverse.local_search.certificate`): ``certificate_rel``, the
    largest relative decrease of the objective one cell move would still give
    (0 at a single-move local optimum), and ``hosting_gain_available``, how
    many more DTs one move could host.

    Examples
    --------
    >>> from edgeverse import get_preset
    >>> rec = run_point(get_preset("paper").to_dict(), 0, "snr")
    >>> rec["method"], rec["seed"], round(rec["objective_ms"], 3), rec["n_hosted"]
    ('snr', 0, 23.282, 0)
    >>> rec["certificate_rel"] > 0, rec["hosting_gain_available"]
    (True, 0)
    """
    from .solution import solve

    cfg = dict(config)
    cfg["seed"] = int(seed)
    scn = Scenario.from_dict(cfg)
    sol = solve(scn, method, **(options or {}))
    ev = sol.evaluation
    # certify=false (an option of solve) skips the certificate: NaN and -1 in the table say so
    cert = sol.extra.get("certificate") or {"max_single_move_decrease_rel": float("nan"), "hosting_gain_available": -1}
    return {
        "key": point_key(config, seed, method, options),
        "method": method,
        "seed": int(seed),
        "objective_ms": float(ev.objective_ms),
        "n_twins": int(sol.problem.twins.n),
        "n_hosted": int(ev.total_hosted),
        "status": sol.status,
        "iterations": int(sol.iterations),
        "certificate_rel": float(cert["max_single_move_decrease_rel"]),
        "hosting_gain_available": int(cert["hosting_gain_available"]),
        "wall_time_s": float(sol.wall_time_s),
        "alpha": [float(a) for a in ev.alpha],
        "server_time_ms": [float(t) for t in ev.server_time_ms],
        "dt_in_region": [int(v) for v in ev.n_candidates],
        "dt_hosted": [int(v) for v in ev.n_hosted],
        "region_cells": [int(v) for v in ev.n_cells],
        "cell_volume_m3": float(sol.problem.grid.cell_volume_m3),
        "hotspot_server": int(sol.cell_server[int(np.argmax(sol.problem.cell_mass))]),
        "error": None,
    }
