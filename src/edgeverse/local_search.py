"""Single-cell moves: the exact change of the objective, a certificate, and a polish any method can use.

Moving cell i (mass m) from region b to region j changes only T_b and T_j.
With C_b = sum_{i in b} m_i c_ib (communication part of F) and r_b = Lambda rho / psi_b,
T_b = s alpha_b (C_b + alpha_b r_b), so the move gives exactly

    T_b' = s (alpha_b - m) (C_b - m c_ib + (alpha_b - m) r_b)
    T_j' = s (alpha_j + m) (C_j + m c_ij + (alpha_j + m) r_j)

when no PT stands in the cell.  When PTs do, their hosting at b and j is
recomputed with the admission rule, which changes psi_b and psi_j.  Moves are
ranked lexicographically: more hosted DTs first (MODEL.md item 9), then a
lower objective; a move that would unhost a DT is never taken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .build import Problem
from .evaluate import admit, allocate, region_masses, render_budget_hz


@dataclass
class _State:
    cs: np.ndarray
    alpha: np.ndarray
    comm: np.ndarray       # C_b
    psi: np.ndarray
    render: np.ndarray     # r_b
    t: np.ndarray          # T_b [s]
    hosted: np.ndarray     # (B,) hosted count
    twin_server: np.ndarray

    @property
    def objective(self) -> float:
        return float(self.t.mean())


def _state(problem: Problem, cs: np.ndarray) -> _State:
    alloc = allocate(problem, cs)
    alpha = region_masses(problem, cs)
    c = problem.comm_cost_s_per_bit[np.arange(problem.n_cells), cs]
    comm = np.bincount(cs, weights=problem.cell_mass * c, minlength=problem.n_servers)
    render = problem.render_coeff / alloc.psi_hz
    t = problem.time_scale * alpha * (comm + alpha * render)
    hosted = np.bincount(alloc.twin_server[alloc.hosted], minlength=problem.n_servers)
    return _State(cs, alpha, comm, alloc.psi_hz, render, t, hosted, alloc.twin_server)


def _pt_cells(problem: Problem) -> tuple[np.ndarray, list[np.ndarray]]:
    tw = problem.twins
    if tw.n == 0:
        return np.zeros(0, dtype=int), []
    cells, inv = np.unique(tw.cell, return_inverse=True)
    return cells, [np.flatnonzero(inv == i) for i in range(cells.size)]


def _plain_deltas(problem: Problem, st: _State) -> np.ndarray:
    """(n, B) exact objective change [s, averaged over servers] of moving each cell to each server."""
    s, nb = problem.time_scale, problem.n_servers
    m = problem.cell_mass
    rows = np.arange(problem.n_cells)
    b = st.cs
    c_own = problem.comm_cost_s_per_bit[rows, b]
    a_b = st.alpha[b] - m
    t_rem = s * a_b * (st.comm[b] - m * c_own + a_b * st.render[b]) - st.t[b]
    a_j = st.alpha[None, :] + m[:, None]
    t_add = s * a_j * (st.comm[None, :] + m[:, None] * problem.comm_cost_s_per_bit + a_j * st.render[None, :]) - st.t[None, :]
    d = (t_rem[:, None] + t_add) / nb
    d[rows, b] = 0.0
    return d


def _pt_moves(problem: Problem, st: _State, cells: np.ndarray, groups: list[np.ndarray]):
    """Exact (hosting change, objective change) of moving each PT cell to each other server."""
    nb, s = problem.n_servers, problem.time_scale
    need = problem.twins.min_compute_hz
    budget = render_budget_hz(problem)
    m_all, cc = problem.cell_mass, problem.comm_cost_s_per_bit
    dh = np.zeros((cells.size, nb), dtype=int)
    dj = np.zeros((cells.size, nb))
    members = [np.flatnonzero(st.twin_server == b) for b in range(nb)]

    def server_after(b, idx):
        h = admit(need[idx, b], budget[b]) if idx.size else np.zeros(0, dtype=bool)
        return int(h.sum()), problem.compute_hz[b] - float(need[idx[h], b].sum()) if idx.size else problem.compute_hz[b]

    for r, (cell, grp) in enumerate(zip(cells, groups)):
        b = int(st.cs[cell])
        m = m_all[cell]
        rest = np.setdiff1d(members[b], grp, assume_unique=True)
        hb, psi_b = server_after(b, rest)
        a_b = st.alpha[b] - m
        tb = s * a_b * (st.comm[b] - m * cc[cell, b] + a_b * problem.render_coeff / psi_b)
        for j in range(nb):
            if j == b:
                continue
            hj, psi_j = server_after(j, np.concatenate([members[j], grp]))
            a_j = st.alpha[j] + m
            tj = s * a_j * (st.comm[j] + m * cc[cell, j] + a_j * problem.render_coeff / psi_j)
            dh[r, j] = hb + hj - st.hosted[b] - st.hosted[j]
            dj[r, j] = (tb - st.t[b] + tj - st.t[j]) / nb
    return dh, dj


@dataclass(frozen=True)
class Certificate:
    """How far a partition is from a single-move local optimum."""

    max_decrease_ms: float        # largest objective decrease of one cell move (0 at a local optimum)
    max_decrease_rel: float       # the same, relative to the objective
    hosting_gain_available: int   # DTs one move could host in addition (0 at a local optimum)
    best_move: tuple[int, int] | None  # (cell, server) of that move

    def to_dict(self) -> dict:
        return {"max_single_move_decrease_ms": self.max_decrease_ms, "max_single_move_decrease_rel": self.max_decrease_rel,
                "hosting_gain_available": self.hosting_gain_available,
                "best_move": list(self.best_move) if self.best_move else None}


def _moves(problem, st, cells, groups):
    d = _plain_deltas(problem, st)
    if cells.size:
        d[cells, :] = np.inf
        dh, dj = _pt_moves(problem, st, cells, groups)
        rows = np.arange(cells.size)
        dj[rows, st.cs[cells]] = np.inf
        dh[rows, st.cs[cells]] = -1
        dj_ok = np.where(dh == 0, dj, np.inf)
        d[cells, :] = dj_ok
    else:
        dh = np.zeros((0, problem.n_servers), dtype=int)
    d[np.arange(problem.n_cells), st.cs] = np.inf
    return d, dh


def certificate(problem: Problem, cell_server: np.ndarray) -> Certificate:
    """The largest single-cell-move improvement available (lexicographic: hosting, then objective)."""
    st = _state(problem, np.asarray(cell_server, dtype=int))
    cells, groups = _pt_cells(problem)
    d, dh = _moves(problem, st, cells, groups)
    gain = int(dh.max()) if dh.size else 0
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    dec = max(0.0, -float(d[i, j]))
    obj = st.objective
    best = (int(i), int(j)) if dec > 0 else None
    if gain > 0:
        r, j2 = np.unravel_index(int(np.argmax(dh)), dh.shape)
        best = (int(cells[r]), int(j2))
    return Certificate(dec * 1e3, dec / obj if obj > 0 else 0.0, max(gain, 0), best)


def polish(problem: Problem, cell_server: np.ndarray, *, rel_tol: float = 1e-12, max_rounds: int = 100_000):
    """Single-cell-move local search from any partition, until no move improves.

    Rounds on cells without PTs use the closed-form deltas for all cells at
    once and apply a batch of the best improving moves (the batch halves when
    the batch as a whole does not improve, doubles after a success), so the
    objective decreases monotonically.  When no such move is left, the moves of
    cells holding PTs are evaluated exactly (hosting recomputed): the best
    hosting-increasing move, else the best improving one, is applied.  Stops
    when no single move improves: the result is a single-move local optimum.
    Returns (cell_server, n_moves, history).
    """
    cs = np.asarray(cell_server, dtype=int).copy()
    st = _state(problem, cs)
    cells, groups = _pt_cells(problem)
    n, nb = problem.n_cells, problem.n_servers
    rows = np.arange(n)
    n_moves, frac = 0, 0.25
    history = [{"round": 0, "objective_ms": st.objective * 1e3, "n_hosted": int(st.hosted.sum()), "moves": 0}]
    for rnd in range(1, max_rounds + 1):
        thresh = -rel_tol * max(st.objective, 1e-300)
        d = _plain_deltas(problem, st)
        d[rows, st.cs] = np.inf
        if cells.size:
            d[cells, :] = np.inf
        best_j = np.argmin(d, axis=1)
        best_d = d[rows, best_j]
        cand = np.flatnonzero(best_d < thresh)
        if cand.size:
            cand = cand[np.argsort(best_d[cand], kind="stable")]
            while True:
                k = max(1, int(np.ceil(frac * cand.size)))
                trial = cs.copy()
                trial[cand[:k]] = best_j[cand[:k]]
                st_new = _state(problem, trial)
                ok = st_new.objective < st.objective + thresh
                if ok or k == 1:
                    break
                frac = max(frac / 2, 1e-6)
            if ok:
                cs, st = trial, st_new
                n_moves += k
                frac = min(1.0, frac * 2)
                history.append({"round": rnd, "objective_ms": st.objective * 1e3, "n_hosted": int(st.hosted.sum()),
                                "moves": k})
                continue
        if not cells.size:
            break
        dh, dj = _pt_moves(problem, st, cells, groups)
        r_idx = np.arange(cells.size)
        dh[r_idx, st.cs[cells]] = -1
        dj[r_idx, st.cs[cells]] = np.inf
        if dh.max() > 0:
            score = np.where(dh == dh.max(), dj, np.inf)
        else:
            score = np.where(dh == 0, dj, np.inf)
            if score.min() >= thresh:
                break
        r, j = np.unravel_index(int(np.argmin(score)), score.shape)
        cs = cs.copy()
        cs[cells[r]] = j
        st = _state(problem, cs)
        n_moves += 1
        history.append({"round": rnd, "objective_ms": st.objective * 1e3, "n_hosted": int(st.hosted.sum()), "moves": 1})
    return cs, n_moves, history
