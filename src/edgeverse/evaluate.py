"""The one evaluator: DT admission and compute split, objective (9a) and the result tables.

Every method only chooses the partition (cell -> server).  The rest is shared:

* :func:`allocate` hosts each DT at the server of the region its PT stands in
  (Algorithm 1, line 7), gives it the least compute meeting its deadline
  (line 9) and sets psi_b = Psi_b - sum phi (line 10), under one admission rule;
* :func:`evaluate` scores any assignment and compute split with equations
  (1)-(5) and (6)-(8), and checks constraints (9b)-(9c).

Admission rule (MODEL.md items 4 and 9).  A DT is *deadline_infeasible* at its
server when its upload alone takes the deadline or more (D_k / r_kb >= 1/mu_k):
no finite compute meets (9b).  The others are admitted at each server in
increasing order of their least compute (ties by index), while the hosted
compute stays within (1 - min_render_fraction) Psi_b; the rest are
*compute_exhausted*.  Admitting the cheapest first hosts the largest possible
number of DTs at each server, and psi_b never reaches 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import physics
from .build import Problem

HOSTED = "hosted"
DEADLINE_INFEASIBLE = "deadline_infeasible"
COMPUTE_EXHAUSTED = "compute_exhausted"
REASONS = (HOSTED, DEADLINE_INFEASIBLE, COMPUTE_EXHAUSTED)


@dataclass(frozen=True)
class Allocation:
    """DT hosting and the compute split for one partition."""

    twin_server: np.ndarray   # (K,) candidate server (the region's), always >= 0
    hosted: np.ndarray        # (K,) bool
    phi_hz: np.ndarray        # (K,) compute given to each DT (0 if unhosted)
    psi_hz: np.ndarray        # (B,) compute left for rendering
    reason: np.ndarray        # (K,) str, one of REASONS


def region_masses(problem: Problem, cell_server: np.ndarray) -> np.ndarray:
    """alpha_b: the share of g in each region (Lemma 1's alpha)."""
    return np.bincount(cell_server, weights=problem.cell_mass, minlength=problem.n_servers)


def admit(need_hz: np.ndarray, budget_hz: float) -> np.ndarray:
    """The admission rule at one server: which of these DTs (least compute ``need_hz``) are hosted.

    Infinite needs (deadline infeasible) are never admitted; the finite ones are
    admitted cheapest first (ties by position) while their sum stays within the budget.

    >>> admit(np.array([3.0, np.inf, 1.0, 2.0]), 3.5).tolist()
    [False, False, True, True]
    """
    need = np.asarray(need_hz, dtype=float)
    hosted = np.zeros(need.shape[0], dtype=bool)
    finite = np.flatnonzero(np.isfinite(need))
    if finite.size:
        order = finite[np.argsort(need[finite], kind="stable")]
        hosted[order[np.cumsum(need[order]) <= budget_hz]] = True
    return hosted


def render_budget_hz(problem: Problem) -> np.ndarray:
    """Compute each server may give to DTs: (1 - min_render_fraction) Psi_b."""
    return (1.0 - problem.scenario.model.min_render_fraction) * problem.compute_hz


def admit_grouped(server: np.ndarray, need_hz: np.ndarray, budget_hz: np.ndarray, *, return_order: bool = False):
    """:func:`admit` at every server at once: which DTs (server ``server[k]``, need ``need_hz[k]``) are hosted.

    One stable lexsort by (server, need) and a row-wise running sum of the needs
    (the same additions, in the same order, as :func:`admit` per server), so the
    decisions are identical to calling :func:`admit` server by server.

    >>> admit_grouped(np.array([0, 1, 0, 0]), np.array([3.0, 1.0, 1.0, 2.0]), np.array([3.5, 0.5])).tolist()
    [False, False, True, True]
    """
    need = np.asarray(need_hz, dtype=float)
    server = np.asarray(server)
    hosted = np.zeros(need.shape[0], dtype=bool)
    finite = np.flatnonzero(np.isfinite(need))
    if finite.size == 0:
        return (hosted, finite) if return_order else hosted
    order = finite[np.lexsort((need[finite], server[finite]))]
    srv = server[order]
    starts = np.flatnonzero(np.r_[True, srv[1:] != srv[:-1]])
    counts = np.diff(np.r_[starts, srv.size])
    # one padded row per server: a row-wise cumsum adds in exactly admit()'s order
    vals = need[order]
    if starts.size * int(counts.max()) <= 4 * srv.size + 65536:
        pos = np.arange(srv.size) - np.repeat(starts, counts)
        row = np.repeat(np.arange(starts.size), counts)
        grid = np.zeros((starts.size, int(counts.max())))
        grid[row, pos] = vals
        run = np.cumsum(grid, axis=1)[row, pos]
    else:  # very uneven loads: one running sum per server
        run = np.empty(srv.size)
        for a, c in zip(starts.tolist(), counts.tolist()):
            run[a:a + c] = np.cumsum(vals[a:a + c])
    hosted[order[run <= np.asarray(budget_hz, dtype=float)[srv]]] = True
    return (hosted, order) if return_order else hosted


@dataclass(frozen=True)
class Hosting:
    """DT hosting for a partition without the per-DT reason strings (the solvers' inner loops)."""

    server: np.ndarray   # (K,) the region's server of each DT
    need: np.ndarray     # (K,) line-9 compute there (inf: deadline infeasible)
    hosted: np.ndarray   # (K,) bool
    psi: np.ndarray      # (B,) rendering compute
    order: np.ndarray    # DTs with a finite need, sorted by (server, need, index)


def host_twins(problem: Problem, cell_server: np.ndarray) -> Hosting:
    """The admission rule at every server (as :func:`allocate`), without building the result tables."""
    tw = problem.twins
    k, b = tw.n, problem.n_servers
    server = np.asarray(cell_server)[tw.cell] if k else np.zeros(0, dtype=int)
    need = tw.min_compute_hz[np.arange(k), server] if k else np.zeros(0)
    if k:
        hosted, order = admit_grouped(server, need, render_budget_hz(problem), return_order=True)
    else:
        hosted, order = np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    phi = np.where(hosted, need, 0.0)
    psi = problem.compute_hz - np.bincount(server, weights=phi, minlength=b)
    return Hosting(server, need, hosted, psi, order)


def allocate(problem: Problem, cell_server: np.ndarray) -> Allocation:
    """Host DTs at their region's server under the admission rule; split compute (Alg. 1 lines 6-10)."""
    h = host_twins(problem, cell_server)
    reason = np.where(h.hosted, HOSTED, np.where(np.isfinite(h.need), COMPUTE_EXHAUSTED, DEADLINE_INFEASIBLE))
    phi = np.where(h.hosted, h.need, 0.0)
    return Allocation(twin_server=h.server, hosted=h.hosted, phi_hz=phi, psi_hz=h.psi, reason=reason.astype(str))


def allocate_reference(problem: Problem, cell_server: np.ndarray) -> Allocation:
    """The straightforward :func:`allocate` (one :func:`admit` per server), kept for tests."""
    tw = problem.twins
    k, b = tw.n, problem.n_servers
    server = np.asarray(cell_server)[tw.cell] if k else np.zeros(0, dtype=int)
    need = tw.min_compute_hz[np.arange(k), server] if k else np.zeros(0)
    hosted = np.zeros(k, dtype=bool)
    budget = render_budget_hz(problem)
    for s in range(b):
        idx = np.flatnonzero(server == s)
        if idx.size:
            hosted[idx] = admit(need[idx], budget[s])
    reason = np.where(hosted, HOSTED, np.where(np.isfinite(need), COMPUTE_EXHAUSTED, DEADLINE_INFEASIBLE))
    phi = np.where(hosted, need, 0.0)
    psi = problem.compute_hz - np.bincount(server, weights=phi, minlength=b)
    return Allocation(twin_server=server, hosted=hosted, phi_hz=phi, psi_hz=psi, reason=reason.astype(str))


def sensing_cost(problem: Problem, psi_hz: np.ndarray) -> np.ndarray:
    """F_ib (n, B) for a rendering-compute vector psi (inf where psi_b = 0)."""
    render = np.full(problem.n_servers, np.inf)
    np.divide(problem.render_coeff, psi_hz, out=render, where=psi_hz > 0)
    return problem.comm_cost_s_per_bit + render[None, :]


def objective_from_costs(problem: Problem, cell_server: np.ndarray, psi_hz: np.ndarray,
                         alpha: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """(9a) via the F form: mean_b time_scale * alpha_b * sum_{i in b} m_i F_ib, and T_b [s].

    ``alpha``: the partition's region masses when the caller has them (else computed here)."""
    cs = np.asarray(cell_server)
    alpha = region_masses(problem, cs) if alpha is None else alpha
    f = problem.links.assigned_comm(cs)
    integral_comm = np.bincount(cs, weights=problem.cell_mass * f, minlength=problem.n_servers)
    render = np.zeros(problem.n_servers)
    has = alpha > 0
    with np.errstate(divide="ignore"):
        render[has] = np.where(psi_hz[has] > 0, problem.render_coeff / np.where(psi_hz[has] > 0, psi_hz[has], 1.0), np.inf)
    t_b = problem.time_scale * alpha * (integral_comm + alpha * render)
    return float(t_b.mean()), t_b


@dataclass(frozen=True)
class Evaluation:
    """Objective and tables for one assignment and compute split."""

    objective_ms: float          # (9a) in ms; inf if a loaded region has no rendering compute
    server_time_ms: np.ndarray   # (B,) T_b
    alpha: np.ndarray            # (B,) region masses
    n_sensors: np.ndarray        # (B,) Q_b = Q alpha_b
    n_cells: np.ndarray          # (B,)
    psi_hz: np.ndarray           # (B,)
    phi_sum_hz: np.ndarray       # (B,)
    n_hosted: np.ndarray         # (B,)
    n_candidates: np.ndarray     # (B,) DTs standing in the region
    no_render_compute: np.ndarray  # (B,) bool: loaded region with psi_b <= 0 (T_b = inf, reported)
    twin_rate_bps: np.ndarray    # (K,)
    twin_upload_s: np.ndarray    # (K,) eq. (6)
    twin_compute_s: np.ndarray   # (K,) eq. (7) (inf if unhosted)
    twin_sync_s: np.ndarray      # (K,) eq. (8)
    twin_deadline_met: np.ndarray  # (K,) bool, (9b) for hosted DTs
    violations: tuple[str, ...]  # broken constraints (9b)/(9c), empty when feasible

    @property
    def total_hosted(self) -> int:
        return int(self.n_hosted.sum())


#: Dense problems with at most this many cells x servers and :data:`_SE_CACHE_SERVERS` servers keep every
#: link's spectral efficiency after the first evaluation (the reproduction's problems are evaluated many
#: times).  With more servers the table costs more than it saves: Lyon's 13,224 cells x 140 servers took
#: 75 ms to fill at the first evaluation, where one evaluation's own links take under 1 ms.
_SE_CACHE_ENTRIES = 4_000_000
_SE_CACHE_SERVERS = 16


def _se_round_trip(se: np.ndarray) -> np.ndarray:
    """log2(1 + (2^se - 1)): the SNR behind a spectral efficiency and back, as eq. (1) is computed; below
    1e-6 bit/s/Hz (SNR near 1e-16 and under, where 2^se rounds to 1) through expm1, which keeps it."""
    out = physics.spectral_efficiency_bps_per_hz(2.0**se - 1.0)
    tiny = np.asarray(se < 1e-6)
    if tiny.any():
        out = np.array(out, dtype=float)
        out[tiny] = physics.spectral_efficiency_bps_per_hz(np.expm1(np.asarray(se)[tiny] * np.log(2.0)))
    return out


def _link_se(problem: Problem, rows: np.ndarray, cs: np.ndarray) -> np.ndarray:
    """log2(1 + SNR) of each cell's link to its server, computed as eq. (1) does (from the stored SNR)."""
    if (not problem.sparse and problem.n_servers <= _SE_CACHE_SERVERS
            and problem.n_cells * problem.n_servers <= _SE_CACHE_ENTRIES):
        if "link_se" not in problem.cache:
            se = physics.spectral_efficiency_bps_per_hz(problem.sensor_snr)
            problem.cache["link_se"] = _se_round_trip(se)
        return problem.cache["link_se"][rows, cs]
    se = physics.spectral_efficiency_bps_per_hz(problem.sensor_snr[rows, cs])
    return _se_round_trip(se)


def evaluate(
    problem: Problem,
    cell_server: np.ndarray,
    twin_server: np.ndarray,
    hosted: np.ndarray,
    phi_hz: np.ndarray,
    psi_hz: np.ndarray,
) -> Evaluation:
    """Score an assignment and compute split with the paper's equations, literally.

    For every cell i in region b: Q_b = Q alpha_b sensors share W^s_b (1), upload
    (2), render with psi_b (3), t_sync (4); T_b sums t_sync weighted by the cell's
    sensor count (or mass, in the literal reading) (5).  Objective = mean_b T_b (9a).
    """
    cs = np.asarray(cell_server, dtype=int)
    sc = problem.scenario
    s = sc.sensing
    b = problem.n_servers
    alpha = region_masses(problem, cs)
    q_b = problem.n_sensors * alpha
    rows = np.arange(problem.n_cells)
    # (1): R = (W/Q_b) log2(1 + SNR); the log term is static per (cell, server): cached on small dense problems
    rate = physics._safe_div(problem.sensor_bandwidth_hz[cs], q_b[cs]) * _link_se(problem, rows, cs)  # (1)
    t_com = physics.sensor_upload_time_s(s.slot_s, s.volume_unit_m3, s.data_density_bps_per_m3, rate)  # (2)
    t_cmp = physics.sensor_render_time_s(
        s.render_complexity_cycles_per_bit, s.slot_s, s.volume_unit_m3, q_b[cs], s.data_density_bps_per_m3,
        np.asarray(psi_hz, dtype=float)[cs],
    )  # (3)
    t_sync = physics.sensor_sync_time_s(t_com, t_cmp)  # (4)
    weight = problem.cell_weight
    contrib = np.zeros(problem.n_cells)
    np.multiply(t_sync, weight, out=contrib, where=weight > 0)
    t_b = np.bincount(cs, weights=contrib, minlength=b)  # (5)
    no_render = (alpha > 0) & (np.asarray(psi_hz) <= 0)
    objective_ms = float(t_b.mean() * 1e3)

    tw = problem.twins
    k = tw.n
    ts = np.asarray(twin_server, dtype=int)
    hosted = np.asarray(hosted, dtype=bool)
    r = tw.rate_bps[np.arange(k), ts] if k else np.zeros(0)
    up = physics.twin_upload_time_s(tw.data_size_bits, r)  # (6)
    cmp_ = np.where(hosted, physics.twin_compute_time_s(tw.complexity_cycles_per_bit, tw.data_size_bits,
                                                        np.where(hosted, phi_hz, 1.0)), np.inf)  # (7)
    sync = physics.twin_sync_time_s(up, cmp_)  # (8)
    met = hosted & (sync <= tw.deadline_s * (1 + 1e-9))
    phi_sum = np.bincount(ts[hosted], weights=np.asarray(phi_hz)[hosted], minlength=b) if k else np.zeros(b)
    violations = []
    for i in np.flatnonzero(hosted & ~met):
        violations.append(f"(9b) DT {i}: tau_sync {sync[i]:.4g} s > deadline {tw.deadline_s[i]:.4g} s")
    for j in range(b):
        if psi_hz[j] + phi_sum[j] > problem.compute_hz[j] * (1 + 1e-9):
            violations.append(f"(9c) server {j}: psi + sum phi = {psi_hz[j] + phi_sum[j]:.4g} > Psi {problem.compute_hz[j]:.4g}")
        if psi_hz[j] < 0:
            violations.append(f"(9c) server {j}: negative rendering compute psi = {psi_hz[j]:.4g}")
    return Evaluation(
        objective_ms=objective_ms, server_time_ms=t_b * 1e3, alpha=alpha, n_sensors=q_b,
        n_cells=np.bincount(cs, minlength=b), psi_hz=np.asarray(psi_hz, dtype=float), phi_sum_hz=phi_sum,
        n_hosted=np.bincount(ts[hosted], minlength=b) if k else np.zeros(b, dtype=int),
        n_candidates=np.bincount(ts, minlength=b) if k else np.zeros(b, dtype=int),
        no_render_compute=no_render, twin_rate_bps=r, twin_upload_s=up, twin_compute_s=cmp_, twin_sync_s=sync,
        twin_deadline_met=met, violations=tuple(violations),
    )


def evaluate_partition(problem: Problem, cell_server: np.ndarray) -> tuple[Allocation, Evaluation]:
    """Allocate then evaluate: the score every method's partition gets."""
    alloc = allocate(problem, cell_server)
    ev = evaluate(problem, cell_server, alloc.twin_server, alloc.hosted, alloc.phi_hz, alloc.psi_hz)
    return alloc, ev
