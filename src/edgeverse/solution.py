"""Solutions: running a method, the result tables, and their files.

:func:`solve` runs any method and scores its partition with the one evaluator.
A :class:`Solution` writes ``solution.json`` (strict JSON: infinities become
``null``, never NaN), ``servers.csv``, ``twins.csv`` and ``timing.json`` (the
wall time, kept apart so that the other files are byte-identical for a seed),
and :func:`load_solution` reads them back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .build import Problem, build_problem
from .errors import EdgeverseError, ScenarioError
from .evaluate import Allocation, Evaluation, allocate, evaluate, evaluate_partition
from .methods import CONVERGED, METHODS, MethodResult
from .scenario import Scenario

SERVER_COLUMNS = [
    "server", "name", "x_m", "y_m", "compute_hz", "sensor_bandwidth_hz", "alpha", "n_sensors", "n_cells",
    "n_dt_in_region", "n_dt_hosted", "phi_sum_hz", "psi_hz", "T_ms", "no_render_compute",
]
TWIN_COLUMNS = [
    "twin", "type", "x_m", "y_m", "z_m", "cell", "server", "hosted", "reason", "rate_bps", "tau_com_ms",
    "tau_cmp_ms", "tau_sync_ms", "deadline_ms", "min_compute_hz", "phi_hz",
]


@dataclass
class Solution:
    """A method's partition, DT hosting, compute split, score and run record."""

    method: str
    problem: Problem
    cell_server: np.ndarray
    allocation: Allocation
    evaluation: Evaluation
    status: str
    iterations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0

    @property
    def scenario(self) -> Scenario:
        return self.problem.scenario

    @property
    def objective_ms(self) -> float:
        return self.evaluation.objective_ms

    @property
    def n_hosted(self) -> int:
        return self.evaluation.total_hosted

    # ------------------------------------------------------------------ tables
    def server_rows(self) -> list[dict[str, Any]]:
        p, ev = self.problem, self.evaluation
        rows = []
        for b in range(p.n_servers):
            rows.append({
                "server": b, "name": p.server_names[b],
                "x_m": float(p.server_positions_m[b, 0]), "y_m": float(p.server_positions_m[b, 1]),
                "compute_hz": float(p.compute_hz[b]), "sensor_bandwidth_hz": float(p.sensor_bandwidth_hz[b]),
                "alpha": float(ev.alpha[b]), "n_sensors": float(ev.n_sensors[b]), "n_cells": int(ev.n_cells[b]),
                "n_dt_in_region": int(ev.n_candidates[b]), "n_dt_hosted": int(ev.n_hosted[b]),
                "phi_sum_hz": float(ev.phi_sum_hz[b]), "psi_hz": float(ev.psi_hz[b]),
                "T_ms": float(ev.server_time_ms[b]), "no_render_compute": bool(ev.no_render_compute[b]),
            })
            if p.server_lonlat_deg is not None:  # scenarios placed on Earth (geo): WGS84 position
                rows[-1]["lon_deg"] = float(p.server_lonlat_deg[b, 0])
                rows[-1]["lat_deg"] = float(p.server_lonlat_deg[b, 1])
        return rows

    def twin_rows(self) -> list[dict[str, Any]]:
        p, ev, al = self.problem, self.evaluation, self.allocation
        tw = p.twins
        names = [t.name for t in p.scenario.twins.types]
        rows = []
        # per-DT columns once (a property or a lookup per row made this quadratic in K)
        deadline_s = tw.deadline_s
        need_hz = tw.min_compute_hz[np.arange(tw.n), np.asarray(al.twin_server, dtype=int)] if tw.n else np.zeros(0)
        for k in range(tw.n):
            s = int(al.twin_server[k])
            pos = tw.positions_m[k]
            rows.append({
                "twin": k, "type": names[int(tw.type_index[k])],
                "x_m": float(pos[0]), "y_m": float(pos[1]),
                "z_m": float(pos[2]) if pos.shape[0] > 2 else float(p.scenario.twins.height_m),
                "cell": int(tw.cell[k]), "server": s, "hosted": bool(al.hosted[k]), "reason": str(al.reason[k]),
                "rate_bps": float(ev.twin_rate_bps[k]), "tau_com_ms": float(ev.twin_upload_s[k] * 1e3),
                "tau_cmp_ms": float(ev.twin_compute_s[k] * 1e3), "tau_sync_ms": float(ev.twin_sync_s[k] * 1e3),
                "deadline_ms": float(deadline_s[k] * 1e3), "min_compute_hz": float(need_hz[k]),
                "phi_hz": float(al.phi_hz[k]),
            })
        return rows

    def reason_counts(self) -> dict[str, int]:
        vals, counts = np.unique(self.allocation.reason, return_counts=True)
        return {str(v): int(c) for v, c in zip(vals, counts)}

    def to_dict(self) -> dict[str, Any]:
        """Everything in ``solution.json`` (no wall time: files are reproducible byte for byte)."""
        return {
            "method": self.method,
            "scenario_name": self.scenario.name,
            "edgeverse_version": __version__,
            "objective_ms": self.objective_ms,
            "status": self.status,
            "iterations": self.iterations,
            "message": self.message,
            "n_twins": self.problem.twins.n,
            "n_hosted": self.n_hosted,
            "reasons": self.reason_counts(),
            "violations": list(self.evaluation.violations),
            "extra": {k: v for k, v in self.extra.items() if k not in TIMING_EXTRA},
            "servers": self.server_rows(),
            "twins": self.twin_rows(),
            "history": self.history,
            "grid_shape": list(self.problem.grid.shape),
            "cell_server": [int(v) for v in self.cell_server],
            "scenario": self.scenario.to_dict(),
        }

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path, *, figure: bool = True) -> Path:
        """Write the solution files as one set: the folder then holds this solution's whole set, or what it
        held before, never a mix (and never a half-written file).

        The files are written into a hidden folder inside ``out_dir`` and then moved in, with Ctrl-C held
        back while they are moved (see :func:`sigint_deferred`); an interrupted or failed save leaves the
        folder as it was.  ``figure=False`` removes an earlier run's ``partition.png`` (it would not match).
        """
        import shutil

        existed = Path(out_dir).exists()
        out = prepare_out_dir(out_dir, "out_dir")
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".saving-"))
        done = False
        try:
            atomic_write_text(staging / "solution.json", dumps_strict(self.to_dict()))
            atomic_write_text(staging / "servers.csv", rows_to_csv(self.server_rows(), SERVER_COLUMNS + (
                ["lon_deg", "lat_deg"] if self.problem.server_lonlat_deg is not None else [])))
            atomic_write_text(staging / "twins.csv", rows_to_csv(self.twin_rows(), TWIN_COLUMNS))
            atomic_write_text(staging / "timing.json", dumps_strict(self.timing()))
            if figure:
                from .plot import save_partition_map  # matplotlib only when asked

                save_partition_map(self, staging / "partition.png")
            with sigint_deferred():
                for name in SOLUTION_FILES:
                    if (staging / name).exists():
                        os.replace(staging / name, out / name)
                    else:
                        (out / name).unlink(missing_ok=True)
                done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if not done and not existed:  # a folder this save created stays only with the whole set in it
                try:
                    out.rmdir()
                except OSError:
                    pass
        return out

    def timing(self) -> dict:
        """What ``timing.json`` holds: the wall-clock times (the only values that differ between two runs of
        the same solve), apart from the other files so that those are byte-identical."""
        levels = self.extra.get("level_seconds")
        out = {"method": self.method, "wall_time_s": self.wall_time_s}
        if levels:
            out["level_seconds"] = levels
        return out

    def summary(self) -> str:
        """A readable per-server table and the headline numbers."""
        lines = [
            f"method {self.method} on scenario {self.scenario.name!r} (seed {self.scenario.seed}): status {self.status}"
            + (f" (polished; {self.method.removesuffix('+polish')} itself: {self.extra['polish']['method_status']})"
               if "polish" in self.extra and "method_status" in self.extra["polish"] else "") + ", "
            f"{self.iterations} iteration(s), {self.wall_time_s * 1e3:.1f} ms wall",
            f"  {self.message}" if self.message else "",
            f"average sub-synchronization time (9a): {fmt_ms(self.objective_ms)} ms, "
            f"DTs hosted {self.n_hosted}/{self.problem.twins.n}",
        ]
        hdr = f"{'server':>8} {'alpha':>7} {'sensors':>9} {'DTs in':>7} {'hosted':>7} {'sum phi GHz':>12} {'psi GHz':>8} {'T_b ms':>10}"
        lines += ["", hdr, "-" * len(hdr)]
        for r in self.server_rows():
            flag = "  NO RENDER COMPUTE" if r["no_render_compute"] else ""
            lines.append(
                f"{r['name']:>8} {r['alpha']:7.4f} {r['n_sensors']:9.1f} {r['n_dt_in_region']:7d} {r['n_dt_hosted']:7d} "
                f"{r['phi_sum_hz'] / 1e9:12.3f} {r['psi_hz'] / 1e9:8.3f} {fmt_ms(r['T_ms']):>10}{flag}"
            )
        rc = self.reason_counts()
        if rc:
            lines += ["", "DTs by outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(rc.items()))]
        if self.evaluation.violations:
            lines += ["CONSTRAINT VIOLATIONS:"] + [f"  {v}" for v in self.evaluation.violations]
        return "\n".join(line for line in lines if line is not None)


def fmt_ms(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.4f}"


#: Wall-clock entries of a method's ``extra``: written to ``timing.json``, not ``solution.json``.
TIMING_EXTRA = ("level_seconds",)

#: The files :meth:`Solution.save` writes into its folder.
SOLUTION_FILES = ("solution.json", "servers.csv", "twins.csv", "timing.json", "partition.png")


def prepare_out_dir(out_dir: str | Path, option: str = "--out", *, create: bool = True) -> Path:
    """Create a solution folder (``create``; else only check it), or a clear error, before anything is
    written, when it cannot hold the solution files: the folder is a file, or one of
    :data:`SOLUTION_FILES` is taken by a folder."""
    from .errors import ensure_out_dir

    out = ensure_out_dir(out_dir, option, create=create)
    for name in SOLUTION_FILES:
        if (out / name).is_dir():
            raise EdgeverseError(f"{option}: {str(out / name)!r} is a folder; the solution writes a file of that "
                                 "name there: give another folder or remove it")
    return out


def solve(scenario: Scenario | Problem, method: str, *, polish: bool = False, certify: bool = True,
          **options: Any) -> Solution:
    """Run ``method`` on a scenario (or a built problem) and score it with the evaluator.

    ``polish=True`` passes the method's partition through the single-cell-move
    local search (:func:`edgeverse.local_search.polish`), so that methods can be
    compared at a common local optimality; ``certify`` records the single-move
    certificate (largest decrease one cell move still offers) in ``extra``.

    Examples
    --------
    >>> from edgeverse import get_preset
    >>> sol = solve(get_preset("paper"), "snr")
    >>> sol.status, round(sol.objective_ms, 3), sol.n_hosted
    ('closed_form', 23.282, 0)
    """
    if method not in METHODS:
        raise EdgeverseError(f"method: got {method!r}; available methods: {', '.join(METHODS)}")
    if not isinstance(scenario, (Scenario, Problem)):
        raise EdgeverseError(f"solve: got {scenario!r} ({type(scenario).__name__}); pass a Scenario "
                             "(get_preset('paper'), load_scenario('my.yaml')) or a Problem (build_problem(scenario))")
    from .methods import check_method_options

    options = check_method_options(method, options, solve_options=False)
    check_method_options(method, {"polish": polish, "certify": certify})
    problem = scenario if isinstance(scenario, Problem) else build_problem(scenario)
    t0 = time.perf_counter()
    res: MethodResult = METHODS[method](problem, **options)
    cs = np.asarray(res.cell_server, dtype=int)
    extra = dict(res.extra)
    message = res.message
    name = method
    if polish:
        from .local_search import standard_polish

        before = evaluate_partition(problem, cs)[1].objective_ms
        cs, n_moves, _ = standard_polish(problem, cs)
        # the polish runs until no single move improves: the polished partition is a converged result (the
        # method's own status is kept beside it); a certificate the method made describes its partition, not this
        extra["polish"] = {"objective_before_ms": before, "moves": int(n_moves), "method_status": res.status}
        extra.pop("certificate", None)
        message += f"; polished with {n_moves} single-cell moves"
        name = f"{method}+polish"
    alloc, ev = evaluate_partition(problem, cs)
    wall = time.perf_counter() - t0
    if certify and "certificate" not in extra:
        from .local_search import certificate

        extra["certificate"] = certificate(problem, cs).to_dict()
    status = CONVERGED if polish else res.status
    return Solution(name, problem, cs, alloc, ev, status, res.iterations, res.history, message, extra, wall)


def warm_up(methods, *, sparse: bool = False, polish: bool = False, threads: bool | None = None) -> float:
    """Load the compiled kernels ``methods`` use (numba's on-disk cache) with one solve of a tiny problem each.

    The first call of a numba kernel in a process loads it (0.1-0.5 s), which is not the method's cost: the
    CLI and the benchmarks call this before timing a solve.  ``sparse``: warm the candidate-server paths
    (problems with many servers) too; ``polish``: the polish's kernels too (``solve(..., polish=True)``);
    ``threads``: the kernels' threaded builds (large loops: True), their one-thread builds (False) or both
    (None; see :data:`edgeverse.kernels.SERIAL_MAX_ENTRIES`).
    Returns the seconds spent (0 without numba).
    """
    from . import kernels

    if not kernels.numba_active():
        return 0.0
    from .synthetic import city_scenario

    t0 = time.perf_counter()
    tiny = city_scenario(40, 24, 60)  # large enough for every path (tiles of 16 x 16 cells, bounds, fallbacks)
    serial_max = kernels.SERIAL_MAX_ENTRIES
    try:
        for threaded in ((True, False) if threads is None else (bool(threads),)):
            kernels.SERIAL_MAX_ENTRIES = 0 if threaded else 2 ** 62
            for cand in ((None, 6) if sparse else (None,)):
                p = build_problem(tiny, candidates=cand)
                for m in methods:
                    solve(p, m, polish=polish)
    finally:
        kernels.SERIAL_MAX_ENTRIES = serial_max
    return time.perf_counter() - t0


# ---------------------------------------------------------------------- I/O helpers
def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def dumps_strict(obj: Any) -> str:
    """Strict JSON (non-finite floats written as null)."""
    return json.dumps(_finite(obj), indent=1, allow_nan=False) + "\n"


def rows_to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: (repr(v) if isinstance(v, float) else v) for c, v in r.items()})
    return buf.getvalue()


_UMASK = os.umask(0o022)
os.umask(_UMASK)


class sigint_deferred:
    """Context manager: a Ctrl-C (SIGINT) arriving inside the block is held back and raised as
    KeyboardInterrupt when the block ends, so that a few renames happen all or none.  Outside the main
    thread (where handlers cannot be set) it does nothing."""

    def __enter__(self):
        import signal
        import threading

        self._got = False
        self._prev = None
        if threading.current_thread() is threading.main_thread():
            def hold(signum, frame):
                self._got = True

            self._prev = signal.signal(signal.SIGINT, hold)
        return self

    def __exit__(self, *exc):
        import signal

        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)
        if self._got and exc[0] is None:
            raise KeyboardInterrupt
        return False


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_saved_derived(p: Path, data: dict, problem, cs: np.ndarray, ev) -> None:
    """The values a solution file derives from its partition (per-server alpha and T_b, the DTs hosted, the
    single-move certificate) must be those of the partition: an edited one is an error."""
    def same(a, b) -> bool:
        return a == b or (isinstance(a, (int, float)) and not isinstance(a, bool)
                          and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-300))

    checks = []
    if "n_hosted" in data:
        checks.append(("n_hosted", data["n_hosted"], int(ev.total_hosted)))
    for b, row in enumerate(data["servers"]):
        if isinstance(row, dict):
            for key, val in (("alpha", float(ev.alpha[b])), ("T_ms", float(ev.server_time_ms[b]))):
                if key in row:
                    saved = math.inf if row[key] is None and key == "T_ms" else row[key]
                    checks.append((f"servers[{b}].{key}", saved, val))
    cert = (data.get("extra") or {}).get("certificate") if isinstance(data.get("extra"), dict) else None
    if isinstance(cert, dict):
        from .local_search import certificate

        now = certificate(problem, cs).to_dict()
        for key in ("max_single_move_decrease_rel", "hosting_gain_available"):
            if key in cert:
                checks.append((f"extra.certificate.{key}", cert[key], now[key]))
    for name, saved, derived in checks:
        if not same(saved, derived):
            raise EdgeverseError(f"{p}: {name} = {saved!r}, but the partition gives {derived!r}: an edited or "
                                 "foreign solution")


def load_solution(path: str | Path) -> Solution:
    """Read a saved solution (folder or its ``solution.json``) and re-score it with the evaluator.

    The scenario is rebuilt from the saved configuration (same seed, so the same
    twins), and the saved assignment and compute split are evaluated again.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "solution.json"
    if not p.exists():
        raise EdgeverseError(f"solution file {str(p)!r} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeverseError(f"{p}: not an edgeverse solution (not JSON: {exc})") from None
    if not isinstance(data, dict):
        raise EdgeverseError(f"{p}: not an edgeverse solution (a JSON object expected)")
    for key in ("method", "scenario", "cell_server", "twins", "servers", "status", "iterations"):
        if key not in data:
            raise EdgeverseError(f"{p}: not an edgeverse solution (missing key {key!r})")
    scenario = Scenario.from_dict(data["scenario"])
    problem = build_problem(scenario)
    B, K = problem.n_servers, problem.twins.n
    try:
        cs = np.asarray(data["cell_server"], dtype=float)
        tw, srv = data["twins"], data["servers"]
        ts = np.array([t["server"] for t in tw], dtype=float)
        odd = next((k for k, t in enumerate(tw) if not isinstance(t["hosted"], bool)), None)
        if odd is not None:
            raise ValueError(f"twins[{odd}].hosted: got {tw[odd]['hosted']!r}; must be true or false")
        odd = next((i for i, v in enumerate(data["cell_server"]) if isinstance(v, bool)), None)
        if odd is not None:
            raise ValueError(f"cell_server[{odd}]: got {data['cell_server'][odd]!r}; must be a server index")
        hosted = np.array([t["hosted"] for t in tw], dtype=bool)
        phi = np.array([t["phi_hz"] if t["phi_hz"] is not None else np.nan for t in tw], dtype=float)
        reason = np.array([t["reason"] for t in tw], dtype=str)
        from .evaluate import REASONS

        odd = sorted(set(reason.tolist()) - set(REASONS))
        if odd:
            raise ValueError(f"twins[].reason {odd[0]!r} is not one of {', '.join(REASONS)}")
        from .evaluate import HOSTED

        odd = np.flatnonzero(hosted != (reason == HOSTED))
        if odd.size:
            raise ValueError(f"twins[{odd[0]}]: hosted {bool(hosted[odd[0]])} but reason {str(reason[odd[0]])!r}")
        psi = np.array([s["psi_hz"] if s["psi_hz"] is not None else np.nan for s in srv], dtype=float)
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgeverseError(f"{p}: a damaged edgeverse solution ({type(exc).__name__}: {exc})") from None
    if cs.shape != (problem.n_cells,):
        raise ScenarioError(f"{p}: cell_server has {cs.size} entries; the grid has {problem.n_cells} cells")
    if ts.shape != (K,):
        raise EdgeverseError(f"{p}: twins has {ts.size} entries; the scenario has {K}")
    for name, arr in (("cell_server[{}]", cs), ("twins[{}].server", ts)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)) | (arr < 0) | (arr >= B))
        if bad.size:
            raise EdgeverseError(f"{p}: {name.format(bad[0])} = {float(arr[bad[0]]):g}; must be a server index in "
                                 f"0..{B - 1}")
    if psi.shape != (B,) or not np.all(np.isfinite(psi)) or not np.all(np.isfinite(phi)):
        raise EdgeverseError(f"{p}: servers[].psi_hz and twins[].phi_hz must be finite, one per server / DT")
    cs, ts = cs.astype(int), ts.astype(int)
    # the hosting and compute split follow from the partition (the evaluator's allocate, the same for every
    # method): a saved one that differs was edited, or written by something else
    alloc = allocate(problem, cs)
    for name, saved, derived in (("twins[{}].server", ts, alloc.twin_server), ("twins[{}].hosted", hosted, alloc.hosted),
                                 ("twins[{}].reason", reason, alloc.reason), ("twins[{}].phi_hz", phi, alloc.phi_hz),
                                 ("servers[{}].psi_hz", psi, alloc.psi_hz)):
        same = np.isclose(saved, derived, rtol=1e-9, atol=0.0) if saved.dtype.kind == "f" else saved == derived
        if not np.all(same):
            k = int(np.flatnonzero(~same)[0])
            raise EdgeverseError(f"{p}: {name.format(k)} = {saved[k].item()!r}, but the partition gives "
                                 f"{derived[k].item()!r} "
                                 "(the evaluator's allocation): an edited or foreign solution")
    ev = evaluate(problem, cs, alloc.twin_server, alloc.hosted, alloc.phi_hz, alloc.psi_hz)
    if "objective_ms" in data:  # the score it was saved with (null: infinite) is the score of its partition
        saved_obj = data["objective_ms"]
        if isinstance(saved_obj, bool) or not (saved_obj is None or isinstance(saved_obj, (int, float))):
            raise EdgeverseError(f"{p}: objective_ms: got {saved_obj!r}; a number (or null) expected")
        saved_obj = math.inf if saved_obj is None else float(saved_obj)
        same = saved_obj == ev.objective_ms or math.isclose(saved_obj, ev.objective_ms, rel_tol=1e-9, abs_tol=0.0)
        if not same:
            raise EdgeverseError(f"{p}: objective_ms = {saved_obj!r}, but its partition scores {ev.objective_ms!r} "
                                 "(the evaluator): an edited or foreign solution (its status and certificate would "
                                 "not hold)")
    _check_saved_derived(p, data, problem, cs, ev)
    wall = math.nan  # unknown unless timing.json says (informational: a damaged one costs the wall time only)
    timing = p.parent / "timing.json"
    if timing.exists():
        try:
            wall = float(json.loads(timing.read_text())["wall_time_s"])
            if not wall >= 0:
                raise ValueError(wall)
        except (ValueError, TypeError, KeyError, OSError):
            import warnings

            wall = math.nan
            warnings.warn(f"{timing}: damaged (no wall_time_s >= 0 in it); the wall time is unknown", stacklevel=2)
    try:
        iterations = int(data["iterations"])
    except (TypeError, ValueError):
        raise EdgeverseError(f"{p}: iterations: got {data['iterations']!r}; not an edgeverse solution") from None
    return Solution(data["method"], problem, cs, alloc, ev, data["status"], iterations,
                    data.get("history", []), data.get("message", ""), data.get("extra", {}), wall)
