"""The ``optimal`` method: single-move local optima from every method's partition, OT descent on the masses.

Algorithm 1's map (14) drops the load term of the objective (MODEL.md item 5).
Here the objective of (11) is written, for a partition with masses alpha and
rendering compute psi, as

.. math:: J = \\frac{s}{B} \\sum_b \\Big( \\alpha_b \\sum_{i \\in a_b} m_i c_{ib} + \\alpha_b^2 r_b \\Big),
   \\qquad r_b = \\Lambda \\rho / \\psi_b,

* **polish** - single-cell moves (:mod:`edgeverse.local_search`) until no move
  improves, which is the first-order condition of the discretised problem
  including the per-server load term; the certificate (largest decrease any
  single move still offers) is recorded.  Every start (SNR, Voronoi, damped
  Algorithm 1, Algorithm 1 as written) is polished and the best kept, so the
  method is never worse than any of them.
* **descent on the masses** (option ``descent``; on the coarse level of the
  multilevel version by default) - for fixed masses alpha the best partition
  minimises sum_b alpha_b sum_{i in a_b} m_i c_ib subject to each region
  holding alpha_b: a semi-discrete optimal transport problem solved on its
  dual weights w (:func:`edgeverse.partition.solve_semidiscrete`).  By the
  envelope theorem dJ/dalpha_b = C_b + w_b + 2 alpha_b r_b (C_b = sum_{i in a_b}
  m_i c_ib); projected-gradient steps on the simplex with a backtracking line
  search on the evaluator's objective (DT hosting and psi recomputed for every
  trial partition), so the objective decreases monotonically; then the polish.
"""

from __future__ import annotations

import inspect

import time
import warnings
from typing import Any

import numpy as np

from .build import Problem
from .errors import ConvergenceWarning
from .evaluate import evaluate_partition, region_masses
from .local_search import POLISH_SETTINGS, certificate, polish
from .methods import (CONVERGED, MAX_ITER, METHOD_OPTIONS, METHODS, STALLED, MethodResult, _opt_bool,
                      _opt_choice, _opt_float, _opt_int, register)
from .partition import solve_semidiscrete


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {x >= 0, sum x = 1} (sort-based, Held et al. / Duchi et al.).

    >>> project_simplex(np.array([0.6, 0.6, -0.2])).tolist()
    [0.5, 0.5, 0.0]
    """
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    rho = np.flatnonzero(u - css / k > 0)[-1]
    theta = css[rho] / (rho + 1)
    return np.maximum(v - theta, 0.0)


def _key(ev) -> tuple[int, float]:
    return (-ev.total_hosted, ev.objective_ms)


def inner_partition(problem: Problem, alpha: np.ndarray, weights0=None, tol: float = 1e-12):
    """Solve the inner OT problem for masses ``alpha``: cost alpha_b c_ib, targets alpha."""
    cost = problem.comm_cost_s_per_bit * alpha[None, :]
    scale = float(cost.max()) or 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = solve_semidiscrete(problem.cell_mass, cost / scale, alpha, tol=tol, weights0=weights0)
    return res, scale


def _descend(problem: Problem, cs: np.ndarray, ev, *, max_iter: int, rel_tol: float, history: list, label: str):
    """Projected-gradient descent on the masses from partition ``cs``; returns (cs, ev, status, message, iters).

    Trial partitions are scored by :func:`edgeverse.methods.quick_evaluate` (the evaluator's objective up to
    rounding, DT hosting and psi as the evaluator computes them); an accepted trial's inner solution and
    hosting give the next iteration's gradient (the same masses: it is not solved again).
    """
    from .methods import quick_evaluate

    alpha = region_masses(problem, cs)
    step = 0.1
    status, message = MAX_ITER, f"outer loop hit {max_iter} iterations"
    it = 0
    rows = np.arange(problem.n_cells)
    floor = LINE_SEARCH_FLOOR_CELLS * float(problem.cell_mass.max())
    res, scale = inner_partition(problem, alpha)
    alloc, ev_in = quick_evaluate(problem, res.cell_server)
    for it in range(1, max_iter + 1):
        if _key(ev_in) < _key(ev):
            cs, ev = res.cell_server, ev_in
        comm = np.bincount(res.cell_server, weights=problem.cell_mass * problem.comm_cost_s_per_bit[rows, res.cell_server],
                           minlength=problem.n_servers)
        r = problem.render_coeff / alloc.psi
        grad = comm + res.weights * scale + 2.0 * alpha * r
        active = (alpha > 0) | (grad < grad[alpha > 0].min())
        g = np.where(active, grad - grad[active].mean(), 0.0)
        gnorm = float(np.abs(g).max())
        if gnorm <= rel_tol * float(np.abs(grad).max()):
            status, message = CONVERGED, f"projected gradient vanished at outer iteration {it}"
            break
        t = step / gnorm
        accepted = False
        for _ in range(12):
            if t * gnorm < floor:  # a step below the grid's resolution: the polish's single moves do it better
                break
            trial_alpha = project_simplex(alpha - t * g)
            tres, tscale = inner_partition(problem, trial_alpha, res.weights)
            talloc, tev = quick_evaluate(problem, tres.cell_server)
            if _key(tev) < _key(ev):
                alpha, res, scale, alloc, ev_in = trial_alpha, tres, tscale, talloc, tev
                accepted = True
                break
            t *= 0.5
        if accepted:
            cs, ev = res.cell_server, ev_in
        history.append({"iteration": len(history), "phase": f"outer ({label})", "objective_ms": ev.objective_ms,
                        "n_hosted": ev.total_hosted, "alpha": [float(a) for a in ev.alpha],
                        "step": float(t * gnorm), "mass_residual": float(res.mass_residual)})
        if not accepted:
            status, message = CONVERGED, f"no descent step on the masses at outer iteration {it} (line search exhausted)"
            break
        step = min(0.5, 2.0 * t * gnorm)
    return cs, ev, status, message, it


#: ``n_starts=None`` (default): this many random starts on grids of at most
#: :data:`AUTO_RANDOM_STARTS_MAX_CELLS` cells and :data:`AUTO_RANDOM_STARTS_MAX_SERVERS` servers (each costs
#: milliseconds there; tiny problems have many local optima), none otherwise.  With more servers a random
#: start's OT solve is slow for little: 961 cells and 128 servers 4.4 s against 0.05 s without, 400 cells and
#: 100 / 200 servers 1.2 / 6.4 s against 0.04-0.05 s, the same objectives; 400 cells and 500 servers 86 s
#: against 0.05 s, 0.15 % lower with them; 961 cells and 64 servers (kept) 0.48 s against 0.05 s, 0.1 % lower.
AUTO_RANDOM_STARTS = 4
AUTO_RANDOM_STARTS_MAX_CELLS = 1000
AUTO_RANDOM_STARTS_MAX_SERVERS = 64
#: The line search on the masses stops below a step of this many times the largest cell mass.
LINE_SEARCH_FLOOR_CELLS = 2.0
#: Which starts of the multi-start method descend on the masses when ``descent`` is not given: ``"none"``.
#: Measured on 320 of the reproduction's (point, seed) runs (every second one, both presets, 50 x 50 cells),
#: against the descent from every start as first built: 17 ms against 159 ms a run; the objective 1.3e-4
#: higher on average, 1.1 % higher at worst and 0.29 % lower at best (the searches reach different local
#: optima), the same DTs hosted.  ``"all"`` with the present descent: 80 ms, 1e-5 higher on average.
DEFAULT_DESCENT = "none"
DESCENTS = ("none", "best", "all")
#: ``polish_mode``: ``"sweep"`` (default; :data:`edgeverse.local_search.POLISH_SETTINGS`) or ``"batch"``
#: (batches of the best moves, PT moves one at a time), the multi-start method only.  Measured on the 320
#: runs above, against the descent from every start as first built: ``"batch"`` 3.9e-4 lower on average (up
#: to 3.1 % lower, at worst 0.62 % higher) at 188 ms a run; the default 1.3e-4 higher at 17 ms.
POLISH_MODES = {"sweep": None, "batch": {"mode": "batch", "pt_batch": False, "passes": 0}}
STRATEGIES = ("auto", "multistart", "multilevel")
#: ``strategy="auto"`` runs the multi-start method up to this many cells x servers, multilevel above.
MULTISTART_MAX_ENTRIES = 400_000
#: Multilevel: the coarsest level has at least this many cells per server ...
COARSE_CELLS_PER_SERVER = 32
#: ... and is solved with the OT descent (one start, no random starts) when it has at most this many entries.
COARSE_OT_ENTRIES = 300_000
#: Multilevel: single-move rounds on the intermediate levels (the finest runs to a local optimum).
INTERMEDIATE_ROUNDS = 30
#: Multilevel: single-move rounds on the coarsest level (most of its cells hold PTs, whose moves are the
#: costly ones; the finer levels go on from where it stops).  Measured: sparse, 1000^2 cells, 256 servers,
#: 50k DTs: 200 -> 40 rounds 75 s -> 60 s for an objective 1e-5 (relative) higher; dense (the ``city``
#: bench case): 10.1 s -> 7.5 s, objective 8.461 -> 8.281 ms, 9,964 -> 9,963 DTs hosted.
COARSEST_ROUNDS = 40
#: Multilevel: single-move rounds on the full grid at most (the certificate then tells how close it is).
FINEST_ROUNDS = 60
#: Multilevel: the OT descent on the masses on the coarsest level (when it is small and dense).
COARSE_DESCENT = True
#: Multilevel: damped Algorithm 1 as a start on a sparse coarsest level (many servers).  Off: there its map
#: (14) sends cells to far, lightly loaded servers, whose full scans took 27 s of the metro case's 190 s.
COARSE_DAMPED_START_SPARSE = False
#: Multilevel: hosting-increasing PT moves before the plain moves on the full grid.
HOSTING_FIRST = True


@register("optimal")
def optimal_method(problem: Problem, *, max_iter: int | None = None, rel_tol: float = 1e-10,
                   n_starts: int | None = None, polish_result: bool = True, strategy: str = "auto", direct: bool = True,
                   pt_batch: bool = True, descent: str | None = None, polish_mode: str = "sweep",
                   **kw: Any) -> MethodResult:
    """Multi-start single-move polish, with the semi-discrete OT descent on the masses on request (ours).

    Starts: the distinct partitions of SNR, Voronoi, damped Algorithm 1 and
    Algorithm 1 as written, and ``n_starts`` random mass vectors (Dirichlet(1),
    drawn from a generator seeded by the scenario's seed) turned into
    partitions by the inner OT solve.  Every start is polished (single-cell
    moves until none improves).  ``descent`` chooses which starts also descend
    on the masses (projected gradient, inner OT solve, then the polish):
    ``"none"`` (default, :data:`DEFAULT_DESCENT`), ``"best"`` (the best start)
    or ``"all"`` (every start but Algorithm 1 as written: the method as first
    built, about five times slower; on the reproduction's points the default
    ends 1.3e-4 higher on average, 1.1 % at worst; see :data:`DEFAULT_DESCENT`).  With
    ``direct`` (default) a start that descends is also polished as it is (the
    descent keeps the DT hosting it finds first; the polish alone sometimes
    ends in a better local optimum).  The best result (most DTs hosted, then
    lowest objective) is returned, so the method is never worse than the
    methods it starts from, nor than any of them polished by
    ``solve(..., polish=True)``, which applies the same polish
    (:data:`edgeverse.local_search.POLISH_SETTINGS`: the sequential exact one,
    ``mode="sweep"``, 10 boundary passes, the moves of cells holding PTs
    batched; ``pt_batch=False`` moves them one at a time).
    Random starts (``n_starts``; default :data:`AUTO_RANDOM_STARTS` on grids of
    at most :data:`AUTO_RANDOM_STARTS_MAX_CELLS` cells and
    :data:`AUTO_RANDOM_STARTS_MAX_SERVERS` servers, else none) were
    measured to change the result by less than 2e-4 relative on the
    reproduction's points at twice the time.

    ``strategy``: ``"multistart"`` is the above; ``"multilevel"`` (city scale,
    see :func:`multilevel_optimal`) solves a coarsened grid first and refines
    it level by level with the single-move polish; ``"auto"`` (default) picks
    multistart up to :data:`MULTISTART_MAX_ENTRIES` cells x servers (the
    results on small problems are those of the multi-start method) and
    multilevel above.  There ``descent="none"`` skips the coarse level's
    descent, any other value runs it (the default: :data:`COARSE_DESCENT`).
    """
    for name, value, allowed in (("polish_mode", polish_mode, POLISH_MODES), ("strategy", strategy, STRATEGIES),
                                 ("descent", descent, DESCENTS + (None,))):
        if value not in allowed:  # solve() checks these first; this guards direct calls of the method
            raise ValueError(f"optimal: {name} must be one of {', '.join(str(a) for a in allowed)}; got {value!r}")
    settings = POLISH_MODES[polish_mode] or {**POLISH_SETTINGS, "pt_batch": pt_batch}
    if strategy == "multilevel" or (strategy == "auto"
                                    and problem.n_cells * problem.n_servers > MULTISTART_MAX_ENTRIES):
        passed = {"n_starts": n_starts, "polish_mode": polish_mode, "pt_batch": pt_batch, "direct": direct}
        defaults = inspect.signature(optimal_method).parameters
        given = [f"{k}={v!r}" for k, v in passed.items() if v != defaults[k].default]
        if given:
            from .errors import EdgeverseError

            why = ("strategy='multilevel'" if strategy == "multilevel" else
                   f"strategy='auto' above {MULTISTART_MAX_ENTRIES:.0e} cells x servers (this problem has "
                   f"{problem.n_cells * problem.n_servers:.3g})")
            raise EdgeverseError(f"optimal: {', '.join(given)} apply to the multi-start strategy only, and this "
                                 f"solve is multilevel ({why}); leave them out, or pass strategy='multistart'")
        return multilevel_optimal(problem, max_iter=max_iter, rel_tol=rel_tol, descent=descent,
                                  polish_result=polish_result, **kw)
    max_iter = max(problem.scenario.solver.max_iter, 100) if max_iter is None else int(max_iter)
    starts: list[tuple[str, np.ndarray]] = []
    for name in ("snr", "voronoi", "paper-damped", "paper"):
        cs0 = np.asarray(METHODS[name](problem).cell_server)
        if not any(np.array_equal(cs0, other) for _, other in starts):
            starts.append((name, cs0))
    if n_starts is None:
        n_starts = AUTO_RANDOM_STARTS if (problem.n_cells <= AUTO_RANDOM_STARTS_MAX_CELLS
                                          and problem.n_servers <= AUTO_RANDOM_STARTS_MAX_SERVERS) else 0
    rng = np.random.default_rng(np.random.SeedSequence([problem.scenario.seed, 0x0F7]))
    for k in range(int(n_starts)):
        alpha0 = rng.dirichlet(np.ones(problem.n_servers))
        res, _ = inner_partition(problem, alpha0)
        starts.append((f"random {k}", res.cell_server))
    history: list = []
    best = None
    total_it = 0

    def finish(cs, ev, label, status, message):
        nonlocal best, total_it
        n_moves = 0
        if polish_result:
            cs, n_moves, hist = polish(problem, cs, **settings)
            total_it += len(hist) - 1  # the polish's rounds count as iterations too
            ev = evaluate_partition(problem, cs)[1]
            history.append({"iteration": len(history), "phase": f"polish ({label})", "objective_ms": ev.objective_ms,
                            "n_hosted": ev.total_hosted, "alpha": [float(a) for a in ev.alpha], "moves": n_moves})
        if best is None or _key(ev) < _key(best[1]):
            best = (cs, ev, status, message, label, n_moves)

    evs = []
    for label, cs0 in starts:
        ev0 = evaluate_partition(problem, cs0)[1]
        evs.append(ev0)
        history.append({"iteration": len(history), "phase": f"start ({label})", "objective_ms": ev0.objective_ms,
                        "n_hosted": ev0.total_hosted, "alpha": [float(a) for a in ev0.alpha]})
    descent = DEFAULT_DESCENT if descent is None else descent
    todo = list(zip(starts, evs))
    descend = {label for (label, _), _ in todo if label != "paper"} if descent == "all" else (
        {min(todo, key=lambda se: _key(se[1]))[0][0]} if descent == "best" else set())
    for (label, cs0), ev0 in todo:
        if polish_result and (direct or label not in descend):
            finish(cs0, ev0, f"{label}, polished", CONVERGED, "single-cell polish of the start")
        if label not in descend:  # polished only; Algorithm 1 as written is never descended from (it ends far away)
            if not polish_result and (best is None or _key(ev0) < _key(best[1])):
                best = (cs0, ev0, CONVERGED, "a start as it is", label, 0)
            continue
        cs, ev, status, message, it = _descend(problem, cs0, ev0, max_iter=max_iter, rel_tol=rel_tol,
                                               history=history, label=label)
        total_it += it
        finish(cs, ev, label, status, message)
    cs, ev, status, message, label, n_moves = best
    cert = certificate(problem, cs)
    if cert.max_decrease_rel > 1e-9 or cert.hosting_gain_available > 0:  # e.g. polish_result=false
        status = STALLED
        message += "; not a single-move local optimum (see the certificate)"
    message = (f"best of {len(starts)} starts: {label}; {message}; polish made {n_moves} single-cell moves; "
               f"certificate {cert.max_decrease_rel:.3g} (relative)")
    extra = {"certificate": cert.to_dict(), "best_start": label, "polish_moves": n_moves, "n_starts": len(starts)}
    return MethodResult(cs, status, total_it, history, message, extra)


METHOD_OPTIONS["optimal"] = {
    "max_iter": _opt_int(1, none_ok=True), "rel_tol": _opt_float(0.0), "n_starts": _opt_int(0, none_ok=True),
    "polish_result": _opt_bool, "strategy": _opt_choice(*STRATEGIES), "direct": _opt_bool, "pt_batch": _opt_bool,
    "descent": _opt_choice(*DESCENTS), "polish_mode": _opt_choice(*POLISH_MODES),
}


# --------------------------------------------------------------------------- multilevel (city scale)
def _prolong(coarse: Problem, fine: Problem, cs_coarse: np.ndarray) -> np.ndarray:
    """Fine partition: each fine cell takes the server of the coarse cell holding its centre, and a cell
    holding PTs the server of its DTs' coarse cell (when the grids do not nest, a fine cell's centre may lie
    in another coarse cell than its DTs: they keep their server, and so their hosting)."""
    out = np.asarray(cs_coarse, dtype=np.int64)[fine.grid.cells_of_centers_in(coarse.grid)]
    if fine.twins.n and coarse.twins.n == fine.twins.n \
            and np.array_equal(coarse.twins.positions_m, fine.twins.positions_m):
        out[fine.twins.cell] = cs_coarse[coarse.twins.cell]
    return out


def _coarsen(problem: Problem, factor: int) -> Problem | None:
    """The problem on a grid ``factor`` times coarser in x and y, with the fine cell masses summed (or None)."""
    import dataclasses

    from .build import build_problem

    shape = list(problem.grid.shape)
    new = [max(1, shape[0] // factor), max(1, shape[1] // factor)] + shape[2:]
    if new == shape:
        return None
    try:
        scn = problem.scenario.with_overrides({"zone.cells": new})
        n_new = int(np.prod(new))
        if n_new * problem.n_servers <= COARSE_OT_ENTRIES:
            cp = build_problem(scn, candidates=problem.n_servers)  # small: dense, for the OT descent
        else:
            cp = (build_problem(scn, candidates=problem.links.k, twins_from=problem) if problem.sparse
                  else build_problem(scn))
    except Exception:  # e.g. a density file tied to the grid: no coarse level
        return None
    from .links import CHUNK_ENTRIES

    mass = np.zeros(cp.n_cells)
    idx_all = problem.grid.cells_of_centers_in(cp.grid)
    for a in range(0, problem.n_cells, CHUNK_ENTRIES):  # chunk by chunk: the sums' order is kept
        b = min(problem.n_cells, a + CHUNK_ENTRIES)
        mass += np.bincount(idx_all[a:b], weights=problem.cell_mass[a:b], minlength=cp.n_cells)
    # a sparse level has the full problem's DTs (twins_from): their lookups, and any line-9 table they keep,
    # are shared.  Keep the static per-cell answers found while building (best-SNR and nearest servers: geometry only);
    # the rest of the cache depends on the masses
    static = {k: v for k, v in cp.cache.items() if k in ("best_snr", "nearest")}
    return dataclasses.replace(cp, cell_mass=mass / mass.sum(), cache=static)


def _level_factors(problem: Problem) -> list[int]:
    """The coarsening factors of the levels below the full grid (2, 4, 8, ...): halve the grid while the
    level is large and keeps at least :data:`COARSE_CELLS_PER_SERVER` cells per server."""
    B = problem.n_servers
    floor_cells = COARSE_CELLS_PER_SERVER * B
    shape = list(problem.grid.shape)
    n, factors = problem.n_cells, []
    while n * B > COARSE_OT_ENTRIES and n // 4 >= floor_cells:
        f = 2 ** (len(factors) + 1)
        new = [max(1, shape[0] // f), max(1, shape[1] // f)] + shape[2:]
        n_new = int(np.prod(new))
        if n_new >= n:
            break
        factors.append(f)
        n = n_new
    return factors


def _level_chain(problem: Problem, factors: list[int] | None = None) -> list[Problem]:
    """[finest, ..., coarsest]: the levels of ``factors`` (default :func:`_level_factors`), one after the
    other, up to the first that cannot be built."""
    chain = [problem]
    for f in _level_factors(problem) if factors is None else factors:
        c = _coarsen(problem, f)
        if c is None:
            break
        chain.append(c)
    return chain


class _LevelBuilder:
    """The coarsest level at once and the intermediate ones on a background thread (``chain()`` waits).

    Building the intermediate levels (their candidate links and bounds: numpy work that releases the GIL)
    overlaps the coarsest level's solve.  The levels are the same as :func:`_level_chain`'s, with one
    difference where a level cannot be built (a density file tied to the grid): the chain then holds the
    levels that can.
    """

    def __init__(self, problem: Problem):
        import threading

        self.problem = problem
        factors = _level_factors(problem)
        self.coarsest = _coarsen(problem, factors[-1]) if factors else None
        self._mid: list[Problem | None] = []
        self._error: BaseException | None = None
        self._thread = None
        if self.coarsest is None:  # nothing coarser, or the coarsest level cannot be built: as before
            self._chain = _level_chain(problem, factors)
            self.coarsest = self._chain[-1]
            self.depth = len(self._chain) - 1
            return
        self.depth = len(factors)
        self._chain = None
        self._factors = factors[:-1]
        if self._factors:
            self._thread = threading.Thread(target=self._build, name="edgeverse-levels", daemon=True)
            self._thread.start()

    def _build(self):
        try:
            self._mid = [_coarsen(self.problem, f) for f in self._factors]
        except BaseException as e:  # pragma: no cover - re-raised by chain()
            self._error = e

    def chain(self) -> list[Problem]:
        if self._chain is None:
            if self._thread is not None:
                self._thread.join()
            if self._error is not None:  # pragma: no cover
                raise self._error
            self._chain = [self.problem] + [c for c in self._mid if c is not None] + [self.coarsest]
        return self._chain


def multilevel_optimal(problem: Problem, *, max_iter: int | None = None, rel_tol: float = 1e-10,
                       polish_result: bool = True, descent: str | None = None, **_: Any) -> MethodResult:
    """City-scale ``optimal``: coarse-to-fine single-move descent started from an OT solution.

    1. Coarsen the grid by 2, 4, 8, ... (cell masses summed; the same servers
       and DTs) while the level has more than :data:`COARSE_OT_ENTRIES` cells x
       servers and keeps at least :data:`COARSE_CELLS_PER_SERVER` cells per
       server.
    2. On the coarsest level: the best of SNR, Voronoi and damped Algorithm 1,
       then - when that level is small enough - the projected-gradient OT
       descent on the masses (one start, no random starts), then the polish.
    3. On each finer level: every cell takes its coarse cell's server and the
       single-move polish (batched, exact moves, PT moves batched too) repairs
       the boundaries, down to the full grid.

    The result is a single-move local optimum of the full problem (its
    certificate is recorded), never worse than the SNR, Voronoi and damped
    Algorithm 1 partitions of the full grid (compared at the end).  It is not
    the multi-start method's result: fewer starts, and the descent on the
    masses happens on the coarse grid only.
    """
    from .methods import quick_evaluate

    max_iter = max(problem.scenario.solver.max_iter, 100) if max_iter is None else int(max_iter)
    levels = _LevelBuilder(problem)
    coarse = levels.coarsest
    history: list = []
    # starts on the coarsest level
    best = None
    n_starts = 0
    for name in ("snr", "voronoi", "paper-damped"):
        if name == "paper-damped" and coarse.sparse and not COARSE_DAMPED_START_SPARSE:
            continue
        n_starts += 1
        cs0 = METHODS[name](coarse).cell_server
        ev0 = quick_evaluate(coarse, cs0)[1]
        history.append({"iteration": len(history), "phase": f"start ({name}, level {levels.depth})",
                        "objective_ms": ev0.objective_ms, "n_hosted": ev0.total_hosted,
                        "cells": coarse.n_cells})
        if best is None or _key(ev0) < _key(best[1]):
            best = (cs0, ev0, name)
    cs, ev, label = best
    status, message, total_it = CONVERGED, "", 0
    wants = COARSE_DESCENT if descent is None else descent != "none"
    if wants and coarse.n_cells * coarse.n_servers <= COARSE_OT_ENTRIES and not coarse.sparse:
        cs, ev, status, message, it = _descend(coarse, cs, evaluate_partition(coarse, cs)[1], max_iter=max_iter,
                                               rel_tol=rel_tol, history=history, label=f"{label}, level {levels.depth}")
        total_it += it
    n_moves_total = 0
    level_seconds: list[dict] = []  # wall-clock: kept apart from the history (timing.json, not solution.json)
    final_cap = (0, False)
    chain = levels.chain()
    for lvl in range(len(chain) - 1, -1, -1):
        p = chain[lvl]
        if lvl < len(chain) - 1:
            cs = _prolong(chain[lvl + 1], p, cs)
        if polish_result or lvl > 0:
            t0 = time.perf_counter()
            cap = max(FINEST_ROUNDS, max_iter) if lvl == 0 else (
                COARSEST_ROUNDS if lvl == len(chain) - 1 else INTERMEDIATE_ROUNDS)
            cs, n_moves, hist = polish(p, cs, **POLISH_SETTINGS, max_rounds=cap, hosting_first=HOSTING_FIRST)
            if lvl == 0:
                final_cap = (cap, len(hist) - 1 >= cap)
            n_moves_total += n_moves
            total_it += len(hist) - 1
            if lvl > 0:
                p.cache.pop("pt_comm", None)  # a coarse level's PT table is not needed again
            history.append({"iteration": len(history), "phase": f"polish (level {lvl})",
                            "objective_ms": hist[-1]["objective_ms"], "n_hosted": hist[-1]["n_hosted"],
                            "moves": n_moves, "rounds": len(hist) - 1, "cells": p.n_cells})
            level_seconds.append({"level": lvl, "cells": p.n_cells, "seconds": time.perf_counter() - t0})
    # never worse than the closed-form methods on the full grid
    ev = quick_evaluate(problem, cs)[1]
    for name in ("snr", "voronoi"):
        other = METHODS[name](problem).cell_server
        ev_o = quick_evaluate(problem, other)[1]
        if _key(ev_o) < _key(ev):
            cs, ev, label = other, ev_o, name
    cert = certificate(problem, cs)
    # the status is the full grid's: a certified single-move optimum is converged even when the coarse
    # level's descent stopped at its cap (its message says so)
    status = MAX_ITER if cert.max_decrease_rel > 1e-9 or cert.hosting_gain_available > 0 else CONVERGED
    capped = ""
    if status == MAX_ITER and final_cap[1]:
        capped = (f"; the full-grid polish stopped at its cap of {final_cap[0]} rounds "
                  "(max(60, max_iter): raise max_iter to go on)")
    message = (f"multilevel over {len(chain)} level(s) (coarsest {coarse.grid.shape}); start {label}"
               + (f"; {message}" if message else "") + f"; polish made {n_moves_total} single-cell moves; "
               f"certificate {cert.max_decrease_rel:.3g} (relative)" + capped)
    extra = {"certificate": cert.to_dict(), "best_start": label, "polish_moves": n_moves_total, "n_starts": n_starts,
             "strategy": "multilevel", "levels": [list(p.grid.shape) for p in chain], "level_seconds": level_seconds}
    return MethodResult(cs, status, max(total_it, 1), history, message, extra)
