"""Exact semi-discrete optimal transport on a grid, solved on its dual weights.

The problem is the transportation linear programme between ``n`` cells (with
masses ``m``) and ``B`` servers (with target masses ``t``)

.. math::

    \\min_{x \\ge 0} \\sum_{i, b} m_i x_{ib} c_{ib}
    \\quad\\text{s.t.}\\quad \\sum_b x_{ib} = 1, \\qquad \\sum_i m_i x_{ib} = t_b,

whose dual is the concave, piecewise-linear maximisation over the ``B`` server
weights

.. math::

    \\max_w \\; f(w) = \\sum_i m_i \\min_b (c_{ib} - w_b) + \\sum_b t_b w_b .

At an optimal ``w`` every cell goes to ``argmin_b (c_ib - w_b)`` (a
Laguerre-type cell on the grid); only cells tied at a boundary are split.

Algorithm
---------
1. *Smoothed phase.*  The dual is smoothed with a soft-min at temperature
   ``eps`` (entropic regularisation) and maximised by a damped Newton method:
   a ``B x B`` Laplacian solve per step (Levenberg-Marquardt inside a trust
   region), Armijo line search, ``eps`` divided by 10 per level.  Only a
   *band* of cells near the Laguerre boundaries, each with its few nearly
   best servers, is smoothed; every left-out (cell, server) pair has a
   certified excess over its cell's best, so the band is widened only when
   the weights move too far.  A Newton step therefore costs
   ``O(band x width)``, not ``O(n B)``.  Cold starts begin on nested
   systematic subsamples of the cells (about ``32 B`` cells first) and warm
   start each larger sample.
2. *Exact phase.*  From the smoothed weights, the hard assignment is repaired
   by successive shortest paths on the ``B``-node exchange graph (a
   primal-dual min-cost-flow method): cells move (or are split) between
   servers along zero reduced-cost paths while the weights are raised by the
   shortest-path distances.  Only cells within a gap ``theta`` of a boundary
   are candidates; certified lower bounds on the other cells' gaps tell when
   the candidate set must grow.  The result is the exact optimum of the full
   problem: every cell satisfies complementary slackness with the returned
   weights, and the masses match the targets to rounding.

Full passes over the ``(B, n)`` transposed cost are chunked; memory is
``O(n B)``.  Products of thin matrices are done in blocks below OpenBLAS's
threading threshold (multi-threaded BLAS calls on thin matrices stall on busy
machines).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from scipy.linalg.lapack import dposv as _dposv

from ..errors import ConvergenceWarning

__all__ = [
    "SemiDiscreteResult",
    "solve_semidiscrete",
    "plan_dense",
    "laguerre_assign",
]

# A (cell, server) pair whose reduced cost exceeds the cell's best by more than
# _T * eps (plus a trust radius) is left out of the smoothed model (exp(-12) ~ 6e-6).
_T = 12.0
# Number of matrix entries processed per chunk in the full passes.
_CHUNK_ENTRIES = 1 << 20
# Cold start: the smallest subsample (at least 32 cells per server) and the
# ratio between successive subsample sizes.
_COARSE_CELLS = 1024
_LADDER_FACTOR = 16
# Smoothed phase: decay of eps per level, Newton step (in units of eps) below
# which a level is done, initial trust radius (in units of eps) of a Newton
# step, caps on steps and band rebuilds per level, and the fraction of
# misassigned cells above which the band holds every cell.
_EPS_DECAY = 0.1
_LEVEL_TOL = 2.0
_RADIUS = 30.0
_LEVEL_ITERS = 20
_LEVEL_REBUILDS = 4
_DENSE = 0.05


# Diagnostics: set to a list to record (event, info) tuples (tests, tuning).
_TRACE: list | None = None


def _trace(event, **info):
    if _TRACE is not None:
        import time

        info["time"] = time.perf_counter()
        _TRACE.append((event, info))


# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SemiDiscreteResult:
    """Solution of :func:`solve_semidiscrete`.

    Attributes
    ----------
    weights : numpy.ndarray
        ``(B,)`` optimal dual weights ``w`` (defined up to an additive
        constant; normalised so that ``sum_b target_b w_b = 0``).  Servers
        with a zero target get a weight low enough that no cell of positive
        mass prefers them.
    cell_server : numpy.ndarray
        ``(n,)`` int, the server holding the largest share of each cell.
        Zero-mass cells are given ``argmin_b (c_ib - w_b)`` over the servers
        with a positive target.
    plan_rows : numpy.ndarray
        ``(m,)`` int, the indices of the cells split between several servers
        (usually at most ``B - 1``; may be empty).
    plan_split : numpy.ndarray
        ``(m, B)`` the fractions of those cells (rows sum to 1).
    masses : numpy.ndarray
        ``(B,)`` the achieved masses ``sum_i m_i x_ib``.
    cost : float
        The transport cost ``sum_ib m_i x_ib c_ib``.
    mass_residual : float
        ``max_b |masses_b - target_b|``.
    n_iter : int
        Newton iterations of the smoothed phase plus augmentations of the
        exact phase.
    converged : bool
        True when the exact phase matched every target within ``tol``.
    """

    weights: np.ndarray
    cell_server: np.ndarray
    plan_rows: np.ndarray
    plan_split: np.ndarray
    masses: np.ndarray
    cost: float
    mass_residual: float
    n_iter: int
    converged: bool


# --------------------------------------------------------------------------- #
# Laguerre assignment and full passes
# --------------------------------------------------------------------------- #
def _chunk_rows(n_cols: int) -> int:
    return max(1, _CHUNK_ENTRIES // max(1, n_cols))



def laguerre_assign(cost, weights, *, chunk: int | None = None) -> np.ndarray:
    """Assign every cell to its Laguerre cell, ``argmin_b (cost_ib - w_b)``.

    .. math::

        \\sigma(i) = \\operatorname*{argmin}_b \\; (c_{ib} - w_b)

    Ties go to the lowest server index.  The rows are processed in chunks so
    that no temporary larger than about ``chunk x B`` is allocated.

    Parameters
    ----------
    cost : array_like, shape (n, B)
        Cost of serving cell ``i`` from server ``b``.
    weights : array_like, shape (B,)
        Dual weights ``w``.
    chunk : int, optional
        Rows per chunk (default: about one million matrix entries).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 server index of each cell.

    Examples
    --------
    >>> import numpy as np
    >>> cost = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    >>> laguerre_assign(cost, np.array([0.0, 0.0])).tolist()
    [0, 1, 0]
    >>> laguerre_assign(cost, np.array([0.0, 0.1])).tolist()
    [0, 1, 1]
    """
    cost = np.asarray(cost, dtype=float)
    w = np.asarray(weights, dtype=float)
    if cost.ndim != 2 or w.shape != (cost.shape[1],):
        raise ValueError(f"cost must be (n, B) and weights (B,); got {cost.shape} and {w.shape}")
    n, B = cost.shape
    out = np.empty(n, dtype=np.int64)
    if B == 0:
        raise ValueError("cost must have at least one column")
    step = int(chunk) if chunk else _chunk_rows(B)
    for s in range(0, n, step):
        e = min(n, s + step)
        out[s:e] = np.argmin(cost[s:e] - w, axis=1)
    return out


def _chunk_cols(n_rows: int) -> int:
    return max(1, _CHUNK_ENTRIES // max(1, n_rows))


def _bincount(idx, weights, minlength):
    """Weighted bincount that always returns floats (also for empty input)."""
    return np.bincount(idx, weights=weights, minlength=minlength).astype(float, copy=False)


def _span(x) -> float:
    return float(x.max() - x.min()) if x.size else 0.0


def _kth(x, k):
    """The k-th smallest entry of ``x`` (0-based, clipped to the size)."""
    k = int(min(max(k, 0), x.size - 1))
    return float(np.partition(x, k)[k])


def _best_two(CT: np.ndarray, w: np.ndarray, cols: np.ndarray | None = None):
    """Best server and gap to the second best of every cell (column of ``CT``).

    ``CT`` is the ``(B, n)`` transposed cost.  Ties go to the lowest index
    (with a zero gap).  Processed in chunks of columns.
    """
    B = CT.shape[0]
    n = CT.shape[1] if cols is None else cols.size
    b1 = np.empty(n, dtype=np.intp)
    gap = np.empty(n)
    if B == 1:
        b1[:] = 0
        gap[:] = np.inf
        return b1, gap
    wc = w[:, None]
    ar = np.arange(B)
    step = _chunk_cols(B)
    for a in range(0, n, step):
        e = min(n, a + step)
        R = (CT[:, a:e] if cols is None else np.take(CT, cols[a:e], axis=1)) - wc
        v1 = R.min(axis=0)
        i = np.where(R == v1, ar[:, None], B).min(axis=0)
        R[i, np.arange(e - a)] = np.inf
        b1[a:e] = i
        np.subtract(R.min(axis=0), v1, out=gap[a:e])
    return b1, gap


# --------------------------------------------------------------------------- #
# Smoothed (entropic) phase on a sparse band of (cell, server) pairs
# --------------------------------------------------------------------------- #
class _Band:
    """Cells near the Laguerre boundaries, with their nearly-best servers.

    The smoothed objective (constants dropped) is

    ``F(w) = t.w - h.w + sum_{i in band} m_i softmin_eps_{b in S_i}(c_ib - w_b)``

    where ``h`` is the mass of the frozen cells per best server and ``S_i``
    the servers whose reduced cost was within ``theta`` of cell ``i``'s best
    at ``w_ref``.  Every left-out (cell, server) pair has an excess over its
    cell's best of at least ``glb`` at ``w_ref``; while
    ``span(w - w_ref) <= glb - _T eps`` the model is the entropic dual up to
    ``exp(-_T)`` per pair.

    Entries are stored column-wise, ``(s, k)`` for ``k`` band cells with at
    most ``s`` servers each: ``S`` (server index; None when ``s == B`` and
    row ``b`` is server ``b``), ``Cp`` (cost) and ``X`` (float32 excess over
    the cell's best at ``w_ref``, ``inf`` for padding).  Working on the
    excess keeps float32 accurate at every temperature.
    """

    def __init__(self, CT, m, t):
        self.CT, self.m, self.t = CT, m, t
        self.B = CT.shape[0]
        self.srv = np.zeros(CT.shape[1], dtype=np.intp)  # best server of frozen cells
        self.eps = 0.0

    # -- construction
    def build(self, w, b1, gap, theta):
        """Band of the cells with ``gap < theta`` at ``w`` (``b1``, ``gap`` from a full pass)."""
        CT, m, B = self.CT, self.m, self.B
        inb = gap < theta
        act = np.flatnonzero(inb)
        froz = ~inb
        self.srv[froz] = b1[froz]
        self.h = _bincount(b1[froz], m[froz], B)
        self.glb = float(gap[froz].min()) if act.size < gap.size else np.inf
        self.w_ref = w.copy()
        self._load(act, None, np.take(CT, act, axis=1), theta)

    def rebuild(self, w, theta):
        b1, gap = _best_two(self.CT, w)
        self.build(w, b1, gap, theta)

    def _load(self, act, S, Cp, theta):
        """Keep the entries within ``theta`` of each cell's best at ``w_ref``.

        ``S`` (or None for ``arange(B)``) and ``Cp`` are ``(r, k)``; cells left
        with a single entry are frozen.
        """
        w = self.w_ref
        X = Cp - (w[:, None] if S is None else w[S])
        X -= X.min(axis=0)
        if theta == np.inf:  # every entry stays (padding is inf already)
            near = None
            cnt = np.full(act.size, X.shape[0])
        else:
            near = X < theta
            cnt = np.count_nonzero(near, axis=0)
            if X.size:
                self.glb = min(self.glb, float(np.min(X, where=~near, initial=np.inf)))
            fz = cnt <= 1
            if fz.any():
                cols = np.flatnonzero(fz)
                rows = near[:, cols].argmax(axis=0)
                b = rows if S is None else S[rows, cols]
                self.srv[act[cols]] = b
                self.h = self.h + _bincount(b, self.m[act[cols]], self.B)
                keep = ~fz
                act, cnt = act[keep], cnt[keep]
                near, X, Cp = (np.compress(keep, a, axis=1) for a in (near, X, Cp))
                S = None if S is None else np.compress(keep, S, axis=1)
        k = act.size
        s = int(cnt.max()) if k else 0
        r = X.shape[0]
        if near is None or not k:
            X = X.astype(np.float32)
        elif 2 * s <= r or S is not None:
            # compress to the s nearly-best entries of every cell
            rows, cell = np.nonzero(near)
            pos = (np.cumsum(near, axis=0, dtype=np.int16) - 1)[rows, cell]
            S2 = np.zeros((s, k), dtype=np.intp)
            S2[pos, cell] = rows if S is None else S[rows, cell]
            C2 = np.full((s, k), np.inf)
            C2[pos, cell] = Cp[rows, cell]
            X2 = np.full((s, k), np.inf, dtype=np.float32)
            X2[pos, cell] = X[rows, cell]
            S, Cp, X = S2, C2, X2
        else:
            X = np.where(near, X, np.inf).astype(np.float32)
        self.act = act
        self.S = S
        self.Cp = Cp
        self.X = X
        isin = np.isinf(X)
        self.pad = np.flatnonzero(isin)
        self.pairs = None
        if S is not None:
            self.vr, self.vc = np.nonzero(~isin)
            self.vs = S[self.vr, self.vc]
            self.Sflat = S.ravel()
            if self.B * self.B > 60 * s * s and s > 1:
                r1, r2 = np.triu_indices(s, 1)
                self.pairs = (r1, r2, (S[r1] * self.B + S[r2]).ravel())
        self.mA = self.m[act]
        self.mA32 = self.mA.astype(np.float32)
        self.cols = np.arange(k)

    def shrink(self, w, theta):
        """Re-reference at ``w`` and drop the entries whose excess is at least ``theta``."""
        if self.act.size == 0:
            return
        self.glb -= _span(w - self.w_ref)
        self.w_ref = w.copy()
        self._load(self.act, self.S, self.Cp, theta)

    def room(self, w) -> float:
        """Span of weight change left before left-out pairs could matter."""
        return self.glb - _T * self.eps - _span(w - self.w_ref)

    # -- smoothed objective
    def _shift(self, w):
        dw = (w - self.w_ref).astype(np.float32)
        return dw[:, None] if self.S is None else dw[self.S]

    def evaluate(self, w):
        """Objective (up to a constant), gradient and soft assignments (float32)."""
        F = float((self.t - self.h) @ w)
        if self.act.size == 0:
            return F, self.t - self.h, None
        eps = self.eps
        dw = (w - self.w_ref).astype(np.float32)
        Z = (dw[:, None] if self.S is None else dw[self.S]) - self.X
        Z *= np.float32(1.0 / eps)
        zmax = Z.max(axis=0)
        Z -= zmax
        # exp(-60) ~ 1e-26 is negligible; clipping avoids subnormal numbers here (products of two such
        # probabilities would be subnormal too: _gram flushes them)
        np.maximum(Z, np.float32(-60.0), out=Z)
        np.exp(Z, out=Z)
        if self.pad.size:
            Z.ravel()[self.pad] = 0.0
        s = Z.sum(axis=0)
        Z /= s
        lse = np.log(s)
        lse += zmax
        F -= eps * float(np.sum(self.mA * lse))
        MP = Z * self.mA32
        if self.S is None:
            q = MP.sum(axis=1, dtype=np.float64)
        else:
            q = _bincount(self.Sflat, MP.ravel(), self.B)
        return F, self.t - self.h - q, (Z, MP)

    def hessian(self, PM):
        """Laplacian ``L = sum_i m_i (diag p_i - p_i p_i^T)``, ``-eps`` times the Hessian."""
        B = self.B
        if PM is None:
            return np.zeros((B, B))
        P, MP = PM
        if self.pairs is not None:  # few entries per cell: bincount over entry pairs
            r1, r2, idx = self.pairs
            W = _bincount(idx, (MP[r1] * P[r2]).ravel(), B * B).reshape(B, B)
            W += W.T
            L = -W
            L[np.diag_indices(B)] += W.sum(axis=1)
            return L
        if self.S is None:
            Pd, MPd = P, MP
        else:
            Pd = np.zeros((B, P.shape[1]), dtype=np.float32)
            Pd[self.vs, self.vc] = P[self.vr, self.vc]
            MPd = Pd * self.mA32
        L = -_gram(Pd, MPd)
        L[np.diag_indices(B)] += MPd.sum(axis=1, dtype=np.float64)
        return L

    def hard(self, w):
        """Best server of every band cell at ``w`` and its gap (within the band), exact."""
        if self.act.size == 0:
            return np.zeros(0, np.intp), np.zeros(0)
        R = self.Cp - (w[:, None] if self.S is None else w[self.S])
        i = R.argmin(axis=0)
        v1 = R[i, self.cols]
        R[i, self.cols] = np.inf
        return (i if self.S is None else self.S[i, self.cols]), R.min(axis=0) - v1

    def hard_masses(self, w):
        """Masses of the hard assignment at ``w`` (estimate: float32, ties count twice)."""
        hard = self.h.copy()
        if self.act.size:
            Z = self.X - self._shift(w)
            hit = Z == Z.min(axis=0)
            Mh = hit * self.mA32
            if self.S is None:
                hard += Mh.sum(axis=1, dtype=np.float64)
            else:
                hard += _bincount(self.S.ravel(), Mh.ravel(), self.B)
        return hard


#: :func:`_gram` flushes float32 entries below this to 0 (their products would be subnormal floats).
GRAM_FLUSH = 1e-18


def _gram(P, MP):
    """``P @ MP.T`` (float64) for ``(B, k)`` arrays, in blocks small enough for
    single-threaded BLAS.

    Multi-threaded BLAS calls on thin matrices stall badly on busy machines;
    a batched product of blocks below OpenBLAS's threading threshold avoids that.

    float32 entries below :data:`GRAM_FLUSH` in magnitude are taken as 0 first: the soft-min
    probabilities far from a boundary are tiny (1e-27 and less), and products of two of them are
    subnormal floats, which the CPU multiplies tens of times slower (a 64 x 3844 product took 18 ms
    instead of 1.3 ms).  What this drops is below 1e-36 per product, about 1e-8 of float32's own
    rounding of the sums.
    """
    if P.dtype == np.float32:
        lo = np.float32(GRAM_FLUSH)
        P = np.where(np.abs(P) < lo, np.float32(0.0), P)
        MP = np.where(np.abs(MP) < lo, np.float32(0.0), MP)
    B, k = P.shape
    step = max(1, 200_000 // (B * B))
    nb = k // step
    G = np.zeros((B, B))
    if nb:
        head = nb * step
        Pb = P[:, :head].reshape(B, nb, step).transpose(1, 0, 2)
        Mb = MP[:, :head].reshape(B, nb, step).transpose(1, 2, 0)
        G += np.matmul(Pb, Mb).sum(axis=0, dtype=np.float64)
    else:
        head = 0
    if head < k:
        G += P[:, head:] @ MP[:, head:].T
    return G


def _newton_direction(L, g, eps, radius=np.inf):
    """Solve ``L d = eps g`` orthogonally to constants, within a trust region.

    Returns ``(d, limited)``.  When the Newton step spans more than
    ``radius``, the Levenberg-Marquardt step ``(L + mu I) d = eps g`` with the
    smallest ``mu`` on a log grid such that ``span(d) <= radius`` is returned.
    """
    B = g.size
    rhs = eps * (g - g.mean())
    tr = float(np.trace(L))
    scale = tr / B if tr > 0 else 1.0
    A = L + (scale / B) * np.ones((B, B))
    A[np.diag_indices(B)] += 1e-10 * scale
    _, d, info = _dposv(A, rhs)
    if info != 0:  # pragma: no cover - the ridge makes A definite
        d = rhs / scale
    if np.all(np.isfinite(d)) and _span(d) <= radius:
        return d - d.mean(), False
    # Levenberg-Marquardt: bisection on log(mu); span(d(mu)) decreases with mu
    hi = 2.0 * float(np.abs(rhs).sum()) / max(radius, 1e-300) + scale
    lo = hi * 1e-9
    eye = np.eye(B)
    best = None
    for _ in range(14):
        mu = math.sqrt(lo * hi)
        _, dm, info = _dposv(A + mu * eye, rhs)
        if info == 0 and np.all(np.isfinite(dm)) and _span(dm) <= radius:
            best, hi = dm, mu
        else:
            lo = mu
    if best is None:
        best = rhs * (radius / max(_span(rhs), 1e-300))
    return best - best.mean(), True


def _newton_levels(band, w, eps, *, stop_moves, eps_min, cap, budget, it):
    """Damped Newton on the smoothed dual, lowering ``eps`` tenfold per level.

    Steps are Levenberg-Marquardt steps in a trust region (span of the step
    at most ``radius``, which starts at ``_RADIUS eps``, doubles after a
    full-length step and halves after a rejected one).  A level ends when the
    unconstrained Newton step spans less than ``_LEVEL_TOL eps`` (or after
    ``_LEVEL_ITERS`` steps or ``_LEVEL_REBUILDS`` band rebuilds).  The levels
    stop when the hard assignment is within ``stop_moves`` cells (in mass)
    of the targets, when that number stagnates, or at ``eps_min``; the
    exact phase does the rest.  Returns ``(w, n_iter)``.
    """
    t = band.t
    mbar = float(band.m.sum()) / band.m.size
    prev = np.inf
    while True:
        band.eps = eps
        F, g, PM = band.evaluate(w)
        level_it = rebuilds = 0
        rebuilt = False
        radius = _RADIUS * eps
        while it < budget and level_it < _LEVEL_ITERS:
            L = band.hessian(PM)
            room = band.room(w)
            if room < 2.0 * eps and not rebuilt:  # no room left: widen the band
                if rebuilds == _LEVEL_REBUILDS:
                    break
                d, _ = _newton_direction(L, g, eps, min(cap, radius))
                sd = _span(d)
                widen = max(_T * eps, min(2.0 * sd, 4.0 * (band.glb - _T * eps)))
                _trace("rebuild", eps=eps, step=sd, radius=widen)
                band.rebuild(w, _T * eps + widen)
                F, g, PM = band.evaluate(w)
                rebuilt = True
                rebuilds += 1
                continue
            if room <= 0.0:  # pragma: no cover - the rebuild leaves room
                band.rebuild(w, np.inf)
                F, g, PM = band.evaluate(w)
                room = np.inf
                L = band.hessian(PM)
            rebuilt = False
            d, limited = _newton_direction(L, g, eps, min(room, cap, radius))
            sd = _span(d)
            if not limited and sd <= _LEVEL_TOL * eps:  # within the temperature: level done
                break
            gd = float(g @ d)
            gnorm = float(np.abs(g).max())
            alpha = 1.0
            accepted = False
            for _ in range(40):
                wt = w + alpha * d
                Ft, gt, PMt = band.evaluate(wt)
                if Ft >= F + 1e-4 * alpha * gd or (
                    float(np.abs(gt).max()) < 0.5 * gnorm and Ft >= F - 1e-13 * (abs(F) + 1.0)
                ):
                    accepted = True
                    break
                alpha *= 0.5
            it += 1
            level_it += 1
            if not accepted:
                break
            if alpha < 1.0:
                radius = max(0.5 * radius, eps)
            elif limited:
                radius *= 2.0
            w, F, g, PM = wt, Ft, gt, PMt
        moves = 0.5 * float(np.abs(band.hard_masses(w) - t).sum()) / mbar
        _trace("level", n=band.m.size, eps=eps, band=band.act.size, width=band.X.shape[0],
               level_it=level_it, moves=moves)
        if moves <= stop_moves or eps <= eps_min or it >= budget or moves > 0.7 * prev:
            return w, it
        prev = moves
        eps = max(_EPS_DECAY * eps, eps_min)
        band.eps = eps
        band.shrink(w, 3.0 * _T * eps)


def _refine(CT, m, t, w, *, scale, stop_moves, eps_min, budget, it, handoff):
    """Warm-started smoothed phase on ``(CT, m, t)``; returns ``(w, it, band)``.

    The band and the first temperature are sized from the gap quantile that
    holds about twice the cells the hard assignment at ``w`` has to move.
    """
    n = CT.shape[1]
    b1, gap = _best_two(CT, w)
    mbar = float(m.sum()) / n
    moves = 0.5 * float(np.abs(_bincount(b1, m, CT.shape[0]) - t).sum()) / mbar
    band = _Band(CT, m, t)
    _trace("warm", n=n, moves=moves)
    if moves <= stop_moves or scale == 0.0:
        theta = _kth(gap, handoff)
        band.build(w, b1, gap, np.nextafter(theta, np.inf) if theta < np.inf else theta)
        return w, it, band
    q = _kth(gap, 2.0 * moves)
    eps0 = min(max(q, eps_min), 0.1 * scale)
    band.eps = eps0
    # far from the optimum (a few percent of the cells to move): no band at all
    band.build(w, b1, gap, np.inf if moves > _DENSE * n else _T * eps0 + max(2.0 * q, _T * eps0))
    w, it = _newton_levels(band, w, eps0, stop_moves=stop_moves, eps_min=eps_min,
                           cap=2.0 * scale, budget=budget, it=it)
    return w, it, band


def _cold_start(CT, m, t, *, scale, stop_moves, eps_min, budget, handoff):
    """Multiscale cold start on nested subsamples; returns ``(w, it, band)``.

    The coarsest problem (about ``32 B`` cells, at least ``_COARSE_CELLS``)
    starts from ``w = 0`` at a temperature of half the median gap between
    the best and second-best server; each larger sample (``_LADDER_FACTOR``
    times more cells) and finally the full problem are warm-started.
    """
    B, n = CT.shape
    sizes = []
    s = max(_COARSE_CELLS, 32 * B)
    while s * 2 < n:
        sizes.append(s)
        s *= _LADDER_FACTOR
    w = np.zeros(B)
    it = 0
    kw = dict(scale=scale, eps_min=eps_min, budget=budget)
    for k, size in enumerate(sizes + [n]):
        if size < n:
            # systematic sample: on grids stored in raster order it is spread evenly
            idx = (np.arange(size) * (n / size) + 0.5 * (n / size)).astype(np.intp)
            Cs, ms = np.take(CT, idx, axis=1), m[idx]
            ms = ms / ms.sum()
            stop = max(stop_moves, 0.25 * math.sqrt(B * size))
        else:
            Cs, ms, stop = CT, m, stop_moves
        if k > 0:
            w, it, band = _refine(Cs, ms, t, w, stop_moves=stop, it=it,
                                  handoff=handoff if size == n else 0, **kw)
            continue
        b1, gap = _best_two(Cs, w)
        pos = gap[gap > 0.0]
        eps0 = 0.5 * float(np.median(pos)) if pos.size else 0.0
        eps0 = min(max(eps0, eps_min), 0.1 * scale)
        band = _Band(Cs, ms, t)
        band.eps = eps0
        band.build(w, b1, gap, np.inf)
        w, it = _newton_levels(band, w, eps0, stop_moves=stop, cap=2.0 * scale, it=it,
                               eps_min=eps_min, budget=budget)
    return w, it, band


# --------------------------------------------------------------------------- #
# Exact phase: successive shortest paths on the server graph
# --------------------------------------------------------------------------- #
def _route(Y, arcs, sets, delta, mass):
    """Move ``delta`` along the arcs of a path, in place on the rows ``Y``.

    ``Y`` is a list of row lists (the few cells involved).  Arc ``(b, c)``
    moves mass from column ``b`` to column ``c`` through its tied rows
    ``sets[i]`` (in order).  Returns None on success, or the amount available
    at the first arc that cannot carry ``delta`` (``Y`` is then partly
    modified: pass a copy).
    """
    for (b, c), rows in zip(arcs, sets):
        avail = sum(Y[r][b] for r in rows)
        if avail < delta * (1.0 - 1e-15):
            return avail
        rest = delta
        for r in rows:
            y = Y[r][b]
            if y <= 0.0:
                continue
            row = Y[r]
            if y <= rest:
                row[c] += y
                row[b] = 0.0
                rest -= y
            else:
                row[b] = y - rest
                row[c] += rest
                rest = 0.0
                if row[b] <= 1e-13 * mass[r]:  # no dust left behind
                    row[c] += row[b]
                    row[b] = 0.0
            if rest <= 1e-15 * delta:
                break
    return None


class _Exact:
    """Primal-dual min-cost flow from the candidate cells to the servers.

    Cells fall in three tiers: candidates (their plan ``Y`` may change), the
    pool (band cells whose gap is at least ``pool_lb`` at ``pool_ref``) and
    the rest, whose left-out pairs have an excess of at least ``out_lb`` at
    ``out_ref``.  Frozen cells (pool and rest) stay on their best server
    ``srv``; this is optimal as long as the weights move by a span below
    those bounds, otherwise more cells become candidates (``expand``).
    """

    def __init__(self, CT, m, t, w, band, n_cand, tie):
        self.CT, self.m, self.t = CT, m, t
        B, n = CT.shape
        self.B = B
        self.w = w.copy()
        self.tie = tie
        self.srv = band.srv
        bA, gA = band.hard(w)
        self.srv[band.act] = bA
        self.out_lb = band.glb - _span(w - band.w_ref)
        self.out_ref = self.w.copy()
        self.has_outer = True
        self.cand_mask = np.zeros(n, dtype=bool)
        theta = max(_kth(gA, n_cand), 2.0 * band.eps) if gA.size else 0.0
        cm = gA <= theta
        self.theta = max(theta, 1e-300)
        cand = band.act[cm]
        self.cand_mask[cand] = True
        self.cand = cand
        self.Ck = np.ascontiguousarray(np.take(CT, cand, axis=1).T)
        self.cmag = float(np.abs(self.Ck).max()) if self.Ck.size else 0.0
        self.mk = band.mA[cm]
        self.Y = np.zeros((cand.size, B))
        self.Y[np.arange(cand.size), bA[cm]] = self.mk
        pm = ~cm
        self.pool = band.act[pm]
        self.pool_lb = float(gA[pm].min()) if pm.any() else np.inf
        self.pool_ref = self.w.copy()
        self.h = band.h + _bincount(bA[pm], band.mA[pm], B)
        self.e = self.h + self.Y.sum(axis=0) - t
        self.M = np.full((B, B), np.inf)
        self.rows = [None] * B
        for b in range(B):
            self._group(b)

    def _add(self, idx, b1):
        if idx.size == 0:
            return
        m = self.m[idx]
        self.cand_mask[idx] = True
        Yn = np.zeros((idx.size, self.B))
        Yn[np.arange(idx.size), b1] = m
        Cn = np.take(self.CT, idx, axis=1).T
        self.cmag = max(self.cmag, float(np.abs(Cn).max()))
        self.cand = np.concatenate([self.cand, idx])
        self.mk = np.concatenate([self.mk, m])
        self.Ck = np.concatenate([self.Ck, Cn])
        self.Y = np.concatenate([self.Y, Yn])
        self.h = self.h - _bincount(b1, m, self.B)

    def expand(self, w_new):
        """Make more cells candidates so that a step to ``w_new`` is certified."""
        w = self.w
        if w_new is None:
            need = 2.0 * self.theta
            full = self.pool.size == 0
        else:
            need = _span(w_new - w)
            full = _span(w_new - self.out_ref) > self.out_lb
        theta = max(2.0 * self.theta, 2.0 * need, 1e-300)
        full = full and self.has_outer
        _trace("expand", theta=theta, full=bool(full))
        if full:
            pool = np.flatnonzero(~self.cand_mask)
            b1, gap = _best_two(self.CT, w, pool)
            self.h = _bincount(b1, self.m[pool], self.B)
            self.has_outer = False
            self.out_lb = np.inf
        else:
            pool = self.pool
            b1, gap = _best_two(self.CT, w, pool)
            # the outer cells' pairs are still >= out_lb - span; pool cells now use exact gaps
        self.srv[pool] = b1
        new = gap < theta
        grew = bool(new.any()) or full
        self._add(pool[new], b1[new])
        keep = ~new
        self.pool = pool[keep]
        self.pool_lb = float(gap[keep].min()) if keep.any() else np.inf
        self.pool_ref = w.copy()
        self.theta = theta
        # a frozen cell may have switched between tied servers: recount
        froz = ~self.cand_mask
        self.h = _bincount(self.srv[froz], self.m[froz], self.B)
        self.e = self.h + self.Y.sum(axis=0) - self.t
        for b in range(self.B):
            self._group(b)
        return grew

    def _valid(self, w_new) -> bool:
        return (_span(w_new - self.pool_ref) <= self.pool_lb
                and _span(w_new - self.out_ref) <= self.out_lb)

    def _group(self, b):
        rows = np.flatnonzero(self.Y[:, b] > 0.0)
        self.rows[b] = rows
        if rows.size == 0:
            self.M[b] = np.inf
            return
        Ck = self.Ck[rows]
        Mb = (Ck - Ck[:, b][:, None]).min(axis=0)
        Mb[b] = np.inf
        self.M[b] = Mb

    def _paths(self, src):
        """Shortest paths from all sources on the dense server graph (costs >= 0)."""
        w = self.w
        K = self.M + w[:, None] - w[None, :]
        np.maximum(K, 0.0, out=K)
        B = self.B
        if B > 24:  # vectorised Bellman-Ford (costs >= 0, few rounds)
            dist = np.where(src, 0.0, np.inf)
            pred = np.full(B, -1, dtype=np.intp)
            cols = np.arange(B)
            for _ in range(B):
                cand = dist[:, None] + K
                u = np.argmin(cand, axis=0)
                nd = cand[u, cols]
                better = nd < dist
                if not better.any():
                    break
                dist = np.where(better, nd, dist)
                pred = np.where(better, u, pred)
            return dist, pred
        Kl = K.tolist()
        inf = math.inf
        dist = [0.0 if x else inf for x in src.tolist()]
        pred = [-1] * B
        todo = set(range(B))
        while todo:
            u = min(todo, key=dist.__getitem__)
            du = dist[u]
            if du == inf:
                break
            todo.discard(u)
            row = Kl[u]
            for v in todo:
                nd = du + row[v]
                if nd < dist[v]:
                    dist[v] = nd
                    pred[v] = u
        return np.array(dist), np.array(pred, dtype=np.intp)

    def run(self, budget, etol):
        """Augment until every target is met; returns ``(n_aug, converged)``."""
        it = 0
        B = self.B
        stuck = 0
        while it < budget and stuck < 64:
            e = self.e
            src = e > etol
            snk = np.flatnonzero(e < -etol)
            if not src.any() or snk.size == 0:
                return it, True
            dist, pred = self._paths(src)
            j = int(snk[np.argmin(dist[snk])])
            D = float(dist[j])
            if not math.isfinite(D):
                stuck += 0 if self.expand(None) else 1
                continue
            w_new = self.w + np.minimum(dist, D)
            if not self._valid(w_new):
                stuck += 0 if self.expand(w_new) else 1
                continue
            self.w = w = w_new
            path = [j]
            while not src[path[-1]] and len(path) <= B:
                path.append(int(pred[path[-1]]))
            path.reverse()
            arcs = list(zip(path[:-1], path[1:]))
            tie = self.tie * (self.cmag + float(np.abs(w).max()))
            # tied cells of every arc; a cell moved by one arc may continue on the next
            sets = []
            prev = np.zeros(0, dtype=np.intp)
            for b, c in arcs:
                rows = self.rows[b] if prev.size == 0 else np.union1d(self.rows[b], prev)
                rc = (self.Ck[rows, c] - self.Ck[rows, b]) + (w[b] - w[c])
                sel = np.flatnonzero(rc <= float(rc.min()) + tie)
                rows = rows[sel[np.argsort(rc[sel], kind="stable")]]
                sets.append(rows)
                prev = rows
            # largest amount the path carries (cells may relay it along the path)
            used = np.unique(np.concatenate(sets))
            local = [np.searchsorted(used, r).tolist() for r in sets]
            Yused = self.Y[used].tolist()
            mused = self.mk[used].tolist()
            delta = min(float(e[path[0]]), float(-e[j]))
            for _ in range(8):
                lim = _route([row[:] for row in Yused], arcs, local, delta, mused)
                if lim is None:
                    break
                delta = lim
            else:  # pragma: no cover - fall back to the capacities before any move
                delta = min(delta, *(float(self.Y[r, b].sum()) for (b, _), r in zip(arcs, sets)))
            it += 1
            if delta <= 0.0:  # pragma: no cover - numerical safety net
                stuck += 0 if self.expand(None) else 1
                continue
            _route(Yused, arcs, local, delta, mused)
            self.Y[used] = Yused
            touched = {x for arc in arcs for x in arc}
            self.e = self.h + self.Y.sum(axis=0) - self.t
            for b in touched:
                self._group(b)
        return it, bool(np.abs(self.e).max() <= etol)


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def _cost_scale(CT) -> float:
    """Largest spread ``max_b c_ib - min_b c_ib`` over the cells (sampled first)."""
    n = CT.shape[1]
    if n > 4 * _COARSE_CELLS:
        S = CT[:, :: max(1, n // _COARSE_CELLS)]
        s = float((S.max(axis=0) - S.min(axis=0)).max())
        if s > 0.0:
            return s
    s = 0.0
    step = _chunk_cols(CT.shape[0])
    for a in range(0, n, step):
        S = CT[:, a:a + step]
        s = max(s, float((S.max(axis=0) - S.min(axis=0)).max()))
    return s


def _as_vector(x, name, n=None):
    a = np.asarray(x, dtype=float)
    if a.ndim != 1 or (n is not None and a.size != n):
        raise ValueError(f"{name} must have shape ({n if n is not None else 'k'},); got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    if np.any(a < 0):
        raise ValueError(f"{name} must be non-negative (min {a.min()!r})")
    return a


def solve_semidiscrete(
    cell_mass,
    cost,
    target,
    *,
    tol: float = 1e-12,
    max_iter: int = 1000,
    weights0=None,
) -> SemiDiscreteResult:
    """Exact semi-discrete optimal transport of cells to servers with fixed masses.

    Solves the transportation problem

    .. math::

        \\min_{x \\ge 0} \\sum_{i=1}^n \\sum_{b=1}^B m_i x_{ib} c_{ib}
        \\quad\\text{s.t.}\\quad \\sum_b x_{ib} = 1, \\quad
        \\sum_i m_i x_{ib} = t_b,

    through its dual weights :math:`w`: cell :math:`i` goes to
    :math:`\\operatorname{argmin}_b (c_{ib} - w_b)` and only cells tied at a
    boundary are split.  A smoothed damped-Newton phase finds nearly optimal
    weights; successive shortest paths on the server graph then make the
    masses match exactly.  The cost equals ``ot.emd2(cell_mass, target,
    cost)``.

    Parameters
    ----------
    cell_mass : array_like, shape (n,)
        Cell masses, non-negative, summing to 1 (zeros allowed).
    cost : array_like, shape (n, B)
        Finite, non-negative costs.  Rows of zero-mass cells are ignored.
    target : array_like, shape (B,)
        Target masses, non-negative, summing to 1 (zeros allowed: such a
        server receives nothing).  The positive targets are rescaled
        internally to the exact total of ``cell_mass``.
    tol : float, optional
        Mass tolerance of the exact phase (absolute, per server).
    max_iter : int, optional
        Budget of iterations: Newton steps of the smoothed phase (at most a
        quarter of it) plus augmentations of the exact phase.
    weights0 : array_like, shape (B,), optional
        Warm start, e.g. the ``weights`` of a previous, similar problem.

    Returns
    -------
    SemiDiscreteResult
        Weights, plan (largest-share server of every cell plus the split
        cells), masses, cost and convergence information.

    Warns
    -----
    ConvergenceWarning
        If the targets are not matched within ``tol`` when the iteration
        budget runs out; the best plan found is returned.

    Notes
    -----
    Memory is ``O(n B)``: one scaled, transposed ``(B, n)`` copy of the
    cost, arrays the size of the band of cells near the boundaries, and
    chunked full passes.  Typical work: a few full passes over the cost plus
    Newton steps on the band; ``n_iter`` is a few tens for ``B = 16``.

    The plan is exact for the discretised problem: the returned weights and
    plan satisfy complementary slackness for every cell, so the dual value
    ``sum_i m_i min_b (c_ib - w_b) + sum_b t_b w_b`` equals ``cost`` up to
    rounding (a certificate that does not need a reference solver).

    Examples
    --------
    Four cells on a line, two servers at its ends, cost = distance:

    >>> import numpy as np
    >>> x = np.array([0.0, 1.0, 2.0, 3.0])
    >>> cost = np.abs(x[:, None] - np.array([0.0, 3.0])[None, :])
    >>> res = solve_semidiscrete(np.full(4, 0.25), cost, np.array([0.375, 0.625]))
    >>> res.cell_server.tolist()
    [0, 0, 1, 1]
    >>> res.plan_rows.tolist(), res.plan_split.round(3).tolist()
    ([1], [[0.5, 0.5]])
    >>> round(res.cost, 12), res.mass_residual < 1e-12
    (0.625, True)
    """
    m_in = _as_vector(cell_mass, "cell_mass")
    n = m_in.size
    cost_in = np.asarray(cost, dtype=float)
    if cost_in.ndim != 2 or cost_in.shape[0] != n:
        raise ValueError(f"cost must have shape ({n}, B); got {cost_in.shape}")
    B = cost_in.shape[1]
    if B == 0:
        raise ValueError("cost must have at least one server column")
    t_in = _as_vector(target, "target", B)
    tot_m, tot_t = float(m_in.sum()), float(t_in.sum())
    if tot_m <= 0 or tot_t <= 0:
        raise ValueError("cell_mass and target must have positive totals")
    if abs(tot_m - tot_t) > 1e-9 * max(tot_m, tot_t):
        raise ValueError(f"cell_mass and target totals differ: {tot_m!r} vs {tot_t!r}")
    if weights0 is not None:
        weights0 = np.asarray(weights0, dtype=float)
        if weights0.shape != (B,):
            raise ValueError(f"weights0 must have shape ({B},); got {weights0.shape}")
        if not np.all(np.isfinite(weights0)):
            weights0 = None
    if not tol > 0:
        raise ValueError("tol must be positive")
    max_iter = int(max_iter)

    cells = np.flatnonzero(m_in > 0)
    servers = np.flatnonzero(t_in > 0)
    nA, BA = cells.size, servers.size
    if nA == n and BA == B:
        CT = cost_in.T
        m = m_in
    else:
        CT = cost_in[np.ix_(cells, servers)].T
        m = m_in[cells]
    if not np.all(np.isfinite(CT)):
        raise ValueError("cost must be finite on cells with positive mass")
    # Work on the (B, n) transposed cost divided by its spread: all tolerances
    # below are relative, and float32 excesses stay in range for any cost scale.
    scale = _cost_scale(CT)
    unit = scale if scale > 0.0 else 1.0
    CT = np.multiply(CT, 1.0 / unit, order="C")
    t = t_in[servers] * (float(m.sum()) / float(t_in[servers].sum()))

    it = 0
    converged = True
    if BA == 1:
        w = np.zeros(1)
        srv = np.zeros(nA, dtype=np.intp)
        Y_rows = np.zeros(0, dtype=np.intp)
        Y_split = np.zeros((0, 1))
    else:
        scale = 1.0 if scale > 0.0 else 0.0
        stop_moves = float(max(4, BA // 2 + 4))
        n_cand = max(64, 8 * BA)
        kw = dict(scale=scale, stop_moves=stop_moves, eps_min=1e-13 * scale,
                  budget=max_iter // 4, handoff=n_cand)
        if weights0 is not None or scale == 0.0:
            w = np.zeros(BA) if weights0 is None else weights0[servers] / unit
            w -= w.mean()
            w, it, band = _refine(CT, m, t, w, it=0, **kw)
        else:
            w, it, band = _cold_start(CT, m, t, **kw)
        if band.glb - _span(w - band.w_ref) < 0.0:  # pragma: no cover - steps stay in the room
            band.rebuild(w, 0.0)
        ex = _Exact(CT, m, t, w, band, n_cand, tie=1e-14)
        n_aug, converged = ex.run(max(0, max_iter - it), 0.5 * tol)
        _trace("exact", candidates=ex.cand.size, augmentations=n_aug, theta=ex.theta)
        it += n_aug
        w = ex.w
        srv = ex.srv
        if ex.cand.size:
            Yf = ex.Y / ex.Y.sum(axis=1, keepdims=True)
            srv[ex.cand] = np.argmax(Yf, axis=1)
            split = np.count_nonzero(Yf > 0.0, axis=1) > 1
            Y_rows = ex.cand[split]
            Y_split = Yf[split]
            order = np.argsort(Y_rows)
            Y_rows, Y_split = Y_rows[order], Y_split[order]
        else:
            Y_rows = np.zeros(0, dtype=np.intp)
            Y_split = np.zeros((0, BA))

    # ---- back to the full problem
    w = w * unit
    w_act = w - float(t @ w) / float(t.sum())
    w_full = np.empty(B)
    w_full[servers] = w_act
    cell_server = np.empty(n, dtype=np.int64)
    cell_server[cells] = servers[srv]
    if BA < B:
        # a zero-target server gets a weight below min_i (c_ib - u_i): nobody prefers it
        u = _row_min(cost_in, w_full, cells, servers)
        spread = max(1.0, float(np.ptp(w_act)) if w_act.size else 0.0)
        for b in np.flatnonzero(t_in <= 0):
            w_full[b] = float(np.min(cost_in[cells, b] - u)) - spread
    zero = np.flatnonzero(m_in <= 0)
    if zero.size:
        cz = cost_in[zero][:, servers]
        cell_server[zero] = servers[laguerre_assign(cz, w_act)]
    plan_rows = cells[Y_rows].astype(np.int64)
    plan_split = np.zeros((plan_rows.size, B))
    if plan_rows.size:
        plan_split[:, servers] = Y_split

    masses = _bincount(cell_server, m_in, B)
    costv = float(np.sum(m_in * cost_in[np.arange(n), cell_server]))
    if plan_rows.size:
        mr = m_in[plan_rows]
        cs = cell_server[plan_rows]
        masses -= _bincount(cs, mr, B)
        masses += (mr[:, None] * plan_split).sum(axis=0)
        costv -= float(np.sum(mr * cost_in[plan_rows, cs]))
        costv += float(np.sum(mr[:, None] * plan_split * cost_in[plan_rows]))
    resid = float(np.abs(masses - t_in).max())
    if not converged:
        warnings.warn(
            f"solve_semidiscrete did not converge after {it} iterations "
            f"(mass residual {resid:.3g}, tol {tol:.3g}); returning the best plan found",
            ConvergenceWarning,
            stacklevel=2,
        )
    return SemiDiscreteResult(
        weights=w_full,
        cell_server=cell_server,
        plan_rows=plan_rows,
        plan_split=plan_split,
        masses=masses,
        cost=costv,
        mass_residual=resid,
        n_iter=int(it),
        converged=bool(converged),
    )


def _row_min(cost, w_full, cells, servers):
    out = np.empty(cells.size)
    step = _chunk_rows(servers.size)
    for s in range(0, cells.size, step):
        e = min(cells.size, s + step)
        out[s:e] = (cost[cells[s:e]][:, servers] - w_full[servers]).min(axis=1)
    return out


def plan_dense(result: SemiDiscreteResult, n_cells: int) -> np.ndarray:
    """Dense ``(n, B)`` plan fractions of a :class:`SemiDiscreteResult`.

    .. math::

        x_{ib} = [\\sigma(i) = b] \\text{ for unsplit cells, the split row otherwise.}

    Meant for tests and small problems (it allocates ``n x B``).

    Examples
    --------
    >>> import numpy as np
    >>> cost = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> res = solve_semidiscrete(np.array([0.5, 0.5]), cost, np.array([0.5, 0.5]))
    >>> plan_dense(res, 2).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    B = result.weights.size
    X = np.zeros((n_cells, B))
    X[np.arange(n_cells), result.cell_server] = 1.0
    if result.plan_rows.size:
        X[result.plan_rows] = result.plan_split
    return X
