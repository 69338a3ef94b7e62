"""Hot loops over (cell, candidate server) pairs: numba when installed (``pip install edgeverse[fast]``), numpy otherwise.

Two kernels carry the methods:

* :func:`argmin_affine` - every cell's ``argmin_b u_b (c_ib + v_b) + w_b`` (map (14),
  the Laguerre cells of the OT inner problem), ties to the lowest server index;
* :func:`best_moves` - every cell's best single move and its exact objective
  change (:mod:`edgeverse.local_search`).

Both look only at each cell's candidate servers (:class:`edgeverse.links.CellLinks`)
and return, beside the answer, a flag for the cells where the lower bound on the
other servers does not prove it; those cells are then settled by a full scan
(:func:`edgeverse.links.CellLinks.full_rows`), so the answer is exact.  The numba
and numpy paths do the same floating-point operations in the same order (tested
equal); numba runs on all cores (``EDGEVERSE_THREADS``) and skips the
temporaries.  ``EDGEVERSE_NO_NUMBA=1`` forces the numpy path.
"""

from __future__ import annotations

import os

import numpy as np

from .links import BOUND_SLACK, CHUNK_ENTRIES, CellLinks, Envelope, map_chunks

try:  # pragma: no cover - depends on the environment
    if os.environ.get("EDGEVERSE_NO_NUMBA"):
        raise ImportError
    import numba as _nb

    if not os.environ.get("NUMBA_THREADING_LAYER"):
        # GNU OpenMP aborts a process that forks after using it (process pools do): use a fork-safe layer
        _nb.config.THREADING_LAYER = "forksafe"
    HAVE_NUMBA = True
except ImportError as _e:  # pragma: no cover
    _nb = None
    HAVE_NUMBA = False
    NUMBA_IMPORT_ERROR = repr(_e)

_USE = {"numba": HAVE_NUMBA}


def use_numba(flag: bool | None = None) -> bool:
    """Switch the numba kernels on or off (tests compare both paths); returns the previous setting."""
    prev = _USE["numba"]
    if flag is not None:
        _USE["numba"] = bool(flag) and HAVE_NUMBA
    return prev


def numba_active() -> bool:
    return _USE["numba"]


#: Compiled loops over fewer entries (cells x servers scored) than this run on one thread: waking the
#: worker threads costs about 0.2 ms on this 2-core machine, more than such a loop takes (map (14) on
#: 10,000 cells x 4 servers: 0.28 ms on two threads, 0.05 ms on one; the same results).  Measured on
#: `city`'s levels: the sparse single moves of 15,625 cells x 16 candidates take 2.4 ms on two threads
#: and 3.0 ms on one.  The PT moves' entries (a PT cell at a target) weigh about
#: :data:`PT_ENTRY_WEIGHT` plain ones: 2,705 PT cells x 64 servers, 13.9 ms on two threads, 19.5 ms on one.
SERIAL_MAX_ENTRIES = 100_000
PT_ENTRY_WEIGHT = 16


def serial_twin(kernel, name: str):
    """The one-thread build of a ``parallel=True`` numba kernel (``prange`` runs as ``range``), under its own
    name so that numba's on-disk cache keeps both builds apart."""
    import types

    f = kernel.py_func
    g = types.FunctionType(f.__code__, f.__globals__, name, f.__defaults__, f.__closure__)
    g.__qualname__ = name
    g.__doc__ = f"One-thread build of ``{f.__name__}``."
    return _nb.njit(cache=True, nogil=True)(g)


def pick(kernel, serial, entries: int):
    """``kernel`` (threads) for large loops, ``serial`` (one thread) below :data:`SERIAL_MAX_ENTRIES`."""
    return serial if entries < SERIAL_MAX_ENTRIES else kernel


# --------------------------------------------------------------------------- envelopes as flat arrays
def _pack(envs: list[Envelope]):
    """Envelopes of every class as flat arrays (for the numba kernels)."""
    a, d, x, off_l, off_x = [], [], [], [0], [0]
    neg = np.zeros(len(envs), dtype=np.bool_)
    for c, e in enumerate(envs):
        if e.neg_inf:
            neg[c] = True
            a.append(np.zeros(0)), d.append(np.zeros(0)), x.append(np.zeros(0))
        else:
            a.append(e.a), d.append(e.d), x.append(e.x)
        off_l.append(off_l[-1] + a[-1].size)
        off_x.append(off_x[-1] + x[-1].size)
    cat = lambda lst: np.concatenate(lst) if lst else np.zeros(0)  # noqa: E731
    return (cat(a).astype(float), cat(d).astype(float), cat(x).astype(float),
            np.asarray(off_l, dtype=np.int64), np.asarray(off_x, dtype=np.int64), neg)


# =========================================================================== argmin of affine scores
def argmin_affine(links: CellLinks, u: np.ndarray, v: np.ndarray, w: np.ndarray | None = None, *,
                  nan_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's ``argmin_b u_b (c_ib + v_b) + w_b`` over *all* servers (exact), and the minimum.

    ``u >= 0``.  With ``nan_zero`` a NaN score (``u_b = 0`` times an infinite
    ``c_ib + v_b``) counts as 0, as in map (14).  Ties go to the lowest index.
    """
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    w = np.zeros_like(u) if w is None else np.asarray(w, dtype=float)
    n = links.n
    best = np.empty(n, dtype=np.int64)
    val = np.empty(n)
    flag = np.zeros(n, dtype=np.bool_)
    sparse = not links.dense
    if sparse:
        with np.errstate(invalid="ignore"):
            icpt = u * v + w
        if nan_zero:
            icpt = np.where(np.isnan(icpt), w, icpt)
        envs = links.envelopes(u, icpt)
        tb = links.tile_lower(u, icpt, nan_zero)
        tile_of = links.tile_of if tb is not None else np.zeros(1, dtype=np.int32)
        if tb is None:
            tb = np.full(1, -np.inf)
    else:
        tile_of, tb = np.zeros(1, dtype=np.int32), np.full(1, -np.inf)
    if _USE["numba"]:
        if sparse:
            pa, pd, px, ol, ox, neg = _pack(envs)
            lb, cls_ = links.lb, True
        else:
            pa = pd = px = np.zeros(0)
            ol = ox = np.zeros(1, dtype=np.int64)
            neg = np.zeros(0, dtype=np.bool_)
            lb, cls_ = np.zeros((1, 1)), False
        pick(_nb_argmin_affine, _nb_argmin_affine_1, links.comm.size)(
            np.ascontiguousarray(links.server) if sparse else np.zeros((1, 1), np.int32),
            links.comm, u, v, w, nan_zero, cls_, lb, pa, pd, px, ol, ox, neg, tile_of, tb, best, val, flag, BOUND_SLACK)
    else:
        def work(a, b):
            C = links.comm[a:b]
            with np.errstate(invalid="ignore"):
                if sparse:
                    S = links.server[a:b]
                    sc = u[S] * (C + v[S]) + w[S]
                else:
                    sc = u[None, :] * (C + v[None, :]) + w[None, :]
            if nan_zero:
                sc = np.where(np.isnan(sc), 0.0 + (w[S] if sparse else w[None, :]), sc)
            j = np.argmin(sc, axis=1)
            r = np.arange(b - a)
            val[a:b] = sc[r, j]
            best[a:b] = S[r, j] if sparse else j
            if sparse:
                lo = links.noncandidate_lower(np.arange(a, b), envs, links.lb[a:b])
                if links.tile_of is not None:
                    lo = np.maximum(lo, tb[links.tile_of[a:b]])
                flag[a:b] = ~(val[a:b] < lo)

        map_chunks(work, n, max(1, CHUNK_ENTRIES // max(1, links.k)))
    if sparse and flag.any():
        rows = np.flatnonzero(flag)
        step = max(1, CHUNK_ENTRIES // links.n_servers)
        for a in range(0, rows.size, step):
            r = rows[a:a + step]
            if _USE["numba"]:  # the same pairs and merge, row by row (no (rows, B) temporaries, no sort)
                has_tile = links.tile_of is not None
                buf = np.empty((r.size, links.n_servers), dtype=np.int32)
                cnt = np.empty(r.size, dtype=np.int64)
                _nb_scan_pairs(r.astype(np.int64), links.server, links.lb, links.cls.astype(np.int64),
                               links.tile_clb if has_tile else np.zeros((1, 1)),
                               links.tile_of if has_tile else np.zeros(1, dtype=np.int32), has_tile, u, icpt,
                               bool(nan_zero), val, BOUND_SLACK, buf, cnt)
                off = np.zeros(r.size + 1, dtype=np.int64)
                np.cumsum(cnt, out=off[1:])
                if off[-1] == 0:
                    continue
                pj = np.empty(int(off[-1]), dtype=np.int64)
                _nb_gather_rows(buf, off, pj)
                pi = np.repeat(np.arange(r.size), cnt)
            else:
                pi, pj = _scan_pairs(links, r, u, icpt, val[r], nan_zero)
                if pi.size == 0:
                    continue
            c = links.comm_pairs(r[pi], pj)
            with np.errstate(invalid="ignore"):
                sc = u[pj] * (c + v[pj]) + w[pj]
            if nan_zero:
                sc = np.where(np.isnan(sc), w[pj] + 0.0, sc)
            if _USE["numba"]:
                _nb_merge_rows(best, val, val, r.astype(np.int64), off, pj, sc, sc, False)
            else:
                _merge_min(best, val, r, pi, pj, sc)
    argmin_affine.last_fallback = int(flag.sum()) if sparse else 0
    return best, val


def _scan_pairs(links: CellLinks, r: np.ndarray, u: np.ndarray, icpt: np.ndarray, val: np.ndarray,
                nan_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (row, server) pairs a cell's full scan must evaluate: non-candidates whose lower bound
    ``u_b max(tile bound, class bound) + icpt_b`` is not above the cell's best candidate score ``val``.

    Every other server scores strictly more than ``val`` (the bounds are lower bounds of the comm cost,
    with the safety margin), so the scan over these pairs finds the same minimum, ties included, as a
    scan over every server.  NaN bounds are kept.
    """
    nr = r.size
    low = links.pair_lower(r)
    with np.errstate(invalid="ignore", over="ignore"):
        bnd = u[None, :] * low + icpt[None, :]
        if nan_zero:
            bnd = np.where(np.isnan(bnd), icpt[None, :], bnd)
        bnd = bnd - (BOUND_SLACK * np.abs(bnd) + 1e-300)
        need = ~(bnd > val[:, None])
    need[np.arange(nr)[:, None], links.server[r]] = False  # candidates: already scored exactly
    return np.nonzero(need)


def _merge_min(best: np.ndarray, val: np.ndarray, r: np.ndarray, pi: np.ndarray, pj: np.ndarray,
               sc: np.ndarray):
    """Fold extra scores ``sc`` of pairs (row ``pi`` of ``r``, server ``pj``) into (best, val) in place:
    the minimum, ties to the lowest server index, a NaN counting as the minimum (np.argmin's rule).
    Returns the rows changed, their new server and score, and the position of the winning pair."""
    # order the extra pairs by row, then NaN first, then score, then server: the first pair of a row wins
    isn = np.isnan(sc)
    order = np.lexsort((pj, np.where(isn, -np.inf, sc), ~isn, pi))
    pi, pj, sc, isn = pi[order], pj[order], sc[order], isn[order]
    first = np.r_[True, pi[1:] != pi[:-1]]
    rows, j, s, n = pi[first], pj[first], sc[first], isn[first]
    cur_v, cur_j = val[r[rows]], best[r[rows]]
    cur_n = np.isnan(cur_v)
    # the extra pair wins if it is NaN and the current is not; or both non-NaN and (lower, or equal with a
    # lower index); or both NaN with a lower index
    win = np.where(n, ~cur_n | (j < cur_j), ~cur_n & ((s < cur_v) | ((s == cur_v) & (j < cur_j))))
    rr = r[rows[win]]
    best[rr] = j[win]
    val[rr] = s[win]
    return rr, j[win], s[win], order[np.flatnonzero(first)[win]]


argmin_affine.last_fallback = 0


# =========================================================================== best single moves
def abs_max_finite(x: np.ndarray) -> float:
    """The largest finite ``|x|`` (0 if none): the scale of the safety margins of the move bounds."""
    fin = np.isfinite(x)
    return float(np.max(np.abs(x[fin]))) if fin.any() else 0.0


def move_change_lower(low, m, t_rem, alpha, comm_b, render, t_b, s: float, nb: int, tmax: float) -> np.ndarray:
    """(rows, B) lower bound of the objective change of moving each row's cell (mass ``m``, own-side
    change ``t_rem``) to each server, given a lower bound ``low`` of its comm cost there.

    The change is increasing in the comm cost (``s a_j m >= 0``), so the closed form of a plain move at
    ``low``, less the safety margin, bounds it; for a PT cell at a server with spare compute psi_j can only
    fall, so it bounds that move too.
    """
    m = np.asarray(m, dtype=float)[:, None]
    t_rem = np.asarray(t_rem, dtype=float)[:, None]
    a_j = alpha[None, :] + m
    with np.errstate(invalid="ignore", over="ignore"):
        t_add = s * a_j * (comm_b[None, :] + m * low + a_j * render[None, :]) - t_b[None, :]
        dl = (t_rem + t_add) / nb
        return dl - BOUND_SLACK * (np.abs(t_rem) + np.abs(t_add) + tmax) / nb


def render_floor(render: np.ndarray) -> float:
    """The least finite rendering cost per unit of mass over the servers (0 if none): a floor of ``r_j``
    for any target, used in the bounds of single moves."""
    r = np.asarray(render, dtype=float)
    fin = r[np.isfinite(r)]
    return max(0.0, float(fin.min())) * (1.0 - BOUND_SLACK) if fin.size else 0.0


def best_moves(links: CellLinks, cs, c_own, mass, alpha, comm_b, render, t_b, s: float, skip: np.ndarray,
               cutoff: float, *, global_min: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cell's best single move ``(target, change, comm cost at target)`` over all servers.

    The change is the exact objective change (averaged over servers) of moving
    cell ``i`` from ``cs[i]`` to the target (the closed form of
    :mod:`edgeverse.local_search`).  Cells with ``skip`` get target -1 and
    change +inf.  A cell whose best candidate move is not proved best by the
    bound on the other servers, while that bound is below ``cutoff``, is
    settled by a full scan: the targets are exact wherever the change is below
    ``cutoff``.  With ``global_min`` only the smallest change over all cells
    (and the lowest cell reaching it) is needed: a cell is then scanned only
    when its bound is at or below the smallest candidate change, so the
    minimum and its argmin are exact, the other cells' entries may be the
    best candidate move only (never below the exact minimum).
    """
    n, nb = links.n, links.n_servers
    bj = np.empty(n, dtype=np.int64)
    bd = np.empty(n)
    bc = np.empty(n)
    flag = np.zeros(n, dtype=np.bool_)
    low_all = np.full(n, -np.inf)
    sparse = not links.dense
    if sparse:
        # t_add >= s m (alpha_j x + C_j + 2 alpha_j r_j) + s m^2 x for any non-candidate at comm cost >= x
        with np.errstate(invalid="ignore"):
            icpt = comm_b + 2.0 * alpha * render
        envs = links.envelopes(alpha, icpt)
        ta = links.tile_lower(alpha, icpt)
        if ta is not None:
            ta = s * ta
            tx = s * links.tile_comm_lower()
            tile_of = links.tile_of
        else:
            ta = tx = np.full(1, -np.inf)
            tile_of = np.zeros(1, dtype=np.int32)
    else:
        ta = tx = np.full(1, -np.inf)
        tile_of = np.zeros(1, dtype=np.int32)
    tmax = abs_max_finite(t_b)
    # the m^2 term of t_add is s m^2 (c_ij + r_j) >= s m^2 (x + rmin): the least rendering cost per unit of
    # mass over all servers tightens the bound for heavy cells (coarse grids)
    rmin = render_floor(render)
    if _USE["numba"]:
        if sparse:
            pa, pd, px, ol, ox, neg = _pack(envs)
            lb = links.lb
            S = links.server
        else:
            pa = pd = px = np.zeros(0)
            ol = ox = np.zeros(1, dtype=np.int64)
            neg = np.zeros(0, dtype=np.bool_)
            lb = np.zeros((1, 1))
            S = np.zeros((1, 1), np.int32)
        pick(_nb_best_moves, _nb_best_moves_1, links.comm.size)(
            S, sparse, links.comm, cs, c_own, mass, alpha, comm_b, render, t_b, s, nb, skip, cutoff,
            lb, pa, pd, px, ol, ox, neg, tile_of, ta, tx, tmax, bj, bd, bc, flag, low_all, BOUND_SLACK, rmin,
            bool(np.isfinite(t_b).all() and np.isfinite(render).all() and np.isfinite(comm_b).all()
                 and np.isfinite(c_own).all() and np.isfinite(alpha).all()))
    else:
        def work(a, b):
            C = links.comm[a:b]
            m = mass[a:b]
            own = cs[a:b]
            a_b = alpha[own] - m
            t_rem = s * a_b * (comm_b[own] - m * c_own[a:b] + a_b * render[own]) - t_b[own]
            S = links.server[a:b] if sparse else np.broadcast_to(np.arange(nb), C.shape)
            a_j = alpha[S] + m[:, None]
            with np.errstate(invalid="ignore"):
                t_add = s * a_j * (comm_b[S] + m[:, None] * C + a_j * render[S]) - t_b[S]
                d = (t_rem[:, None] + t_add) / nb
            d[S == own[:, None]] = np.inf
            d[skip[a:b]] = np.inf
            j = np.argmin(d, axis=1)
            r = np.arange(b - a)
            bd[a:b] = d[r, j]
            bj[a:b] = S[r, j]
            bc[a:b] = C[r, j]
            sk = skip[a:b]
            bj[a:b][sk] = -1
            bc[a:b][sk] = np.nan
            if sparse:
                lbr = links.lb[a:b]
                lo = np.full(b - a, np.inf)
                with np.errstate(invalid="ignore", over="ignore"):
                    for c, e in enumerate(envs):
                        x = lbr[:, c]
                        val = s * m * e.lower(x) + s * m * m * (x + rmin)
                        lo = np.minimum(lo, val)
                    if links.tile_of is not None:
                        tt = links.tile_of[a:b]
                        lo = np.maximum(lo, m * ta[tt] + m * m * (tx[tt] + s * rmin))
                    low = (t_rem + lo) / nb
                    margin = BOUND_SLACK * (np.abs(t_rem) + np.abs(lo) + tmax) / nb
                low = low - margin
                low_all[a:b] = low
                flag[a:b] = ~skip[a:b] & ~(low > bd[a:b]) & (low < cutoff)

        map_chunks(work, n, max(1, CHUNK_ENTRIES // max(1, links.k)))
    if sparse and global_min and flag.any():
        live = ~skip
        if live.any():
            gmin = float(bd[live].min())
            if np.isfinite(gmin):
                flag &= low_all < min(cutoff, float(np.nextafter(gmin, np.inf)))
    if sparse and flag.any():
        rows = np.flatnonzero(flag)
        step = max(1, CHUNK_ENTRIES // nb)
        for a in range(0, rows.size, step):
            r = rows[a:a + step]
            m = mass[r]
            own = cs[r]
            a_b = alpha[own] - m
            t_rem = s * a_b * (comm_b[own] - m * c_own[r] + a_b * render[own]) - t_b[own]
            # pairs to score exactly: non-candidates whose change at the comm-cost bound is not above the
            # cell's best candidate change (nor at or above the cutoff); every other server's change is larger
            if _USE["numba"]:  # the same bound and merge, row by row (no (rows, B) temporaries, no sort)
                has_tile = links.tile_of is not None
                buf = np.empty((r.size, nb), dtype=np.int32)
                cnt = np.empty(r.size, dtype=np.int64)
                _nb_fallback_pairs(r.astype(np.int64), links.server, links.lb, links.cls.astype(np.int64),
                                   links.tile_clb if has_tile else np.zeros((1, 1)),
                                   links.tile_of if has_tile else np.zeros(1, dtype=np.int32), has_tile, m, t_rem,
                                   alpha, comm_b, render, t_b, s, nb, tmax, bd, cutoff, BOUND_SLACK, buf, cnt)
                off = np.zeros(r.size + 1, dtype=np.int64)
                np.cumsum(cnt, out=off[1:])
                if off[-1] == 0:
                    continue
                pj = np.empty(int(off[-1]), dtype=np.int64)
                _nb_gather_rows(buf, off, pj)
                pi = np.repeat(np.arange(r.size), cnt)
            else:
                dl = move_change_lower(links.pair_lower(r), m, t_rem, alpha, comm_b, render, t_b, s, nb, tmax)
                with np.errstate(invalid="ignore"):
                    need = ~(dl > bd[r][:, None]) & ~(dl >= cutoff)
                need[np.arange(r.size)[:, None], links.server[r]] = False  # candidates: already scored exactly
                pi, pj = np.nonzero(need)
                if pi.size == 0:
                    continue
            c = links.comm_pairs(r[pi], pj)
            mp = m[pi]
            aj = alpha[pj] + mp
            with np.errstate(invalid="ignore"):
                d = (t_rem[pi] + (s * aj * (comm_b[pj] + mp * c + aj * render[pj]) - t_b[pj])) / nb
            d[pj == own[pi]] = np.inf
            if _USE["numba"]:
                _nb_merge_rows(bj, bd, bc, r.astype(np.int64), off, pj, d, c, True)
            else:
                win_r, win_j, win_v, win_k = _merge_min(bj, bd, r, pi, pj, d)
                bc[win_r] = c[win_k]
    best_moves.last_fallback = int(flag.sum()) if sparse else 0
    return bj, bd, bc


best_moves.last_fallback = 0


# =========================================================================== numba kernels
if HAVE_NUMBA:  # pragma: no branch
    _jit = _nb.njit(cache=True, nogil=True, parallel=True)
    _jit1 = _nb.njit(cache=True, nogil=True)

    @_jit1
    def _env_lower(c, x, pa, pd, px, ol, ox, neg, slack):
        if neg[c]:
            return -np.inf
        l0, l1 = ol[c], ol[c + 1]
        if l1 == l0:
            return np.inf
        x0, x1 = ox[c], ox[c + 1]
        # segment = number of breakpoints <= x
        lo, hi = x0, x1
        while lo < hi:
            mid = (lo + hi) // 2
            if px[mid] <= x:
                lo = mid + 1
            else:
                hi = mid
        seg = l0 + (lo - x0)
        a = pa[seg]
        d = pd[seg]
        if np.isinf(x):
            return np.inf if a > 0 else d
        ax = a * x
        return ax + d - (slack * (abs(ax) + abs(d)) + 1e-300)

    @_jit
    def _nb_argmin_affine(S, C, u, v, w, nan_zero, sparse, lb, pa, pd, px, ol, ox, neg, tile_of, tb,
                          best, val, flag, slack):
        n, k = C.shape
        ncls = lb.shape[1]
        for i in _nb.prange(n):
            bv = np.inf
            bj = -1
            first = True
            for q in range(k):
                j = S[i, q] if sparse else q
                sc = u[j] * (C[i, q] + v[j]) + w[j]
                if np.isnan(sc):
                    sc = (0.0 + w[j]) if nan_zero else sc
                # np.argmin semantics: the first minimum; a NaN is a minimum
                if first or sc < bv or (np.isnan(sc) and not np.isnan(bv)):
                    bv = sc
                    bj = j
                    first = False
            best[i] = bj
            val[i] = bv
            if sparse:
                lo = np.inf
                for c in range(ncls):
                    e = _env_lower(c, lb[i, c], pa, pd, px, ol, ox, neg, slack)
                    if e < lo:
                        lo = e
                if tb.shape[0] > 1 or tile_of.shape[0] > 1:
                    t = tb[tile_of[i]]
                    if t > lo:
                        lo = t
                flag[i] = not (bv < lo)

    @_jit
    def _nb_best_moves(S, sparse, C, cs, c_own, mass, alpha, comm_b, render, t_b, s, nb, skip, cutoff,
                       lb, pa, pd, px, ol, ox, neg, tile_of, ta, tx, tmax, bj, bd, bc, flag, low_out, slack, rmin, lean):
        n, k = C.shape
        ncls = lb.shape[1]
        for i in _nb.prange(n):
            if skip[i]:
                bj[i] = -1
                bd[i] = np.inf
                bc[i] = np.nan
                continue
            own = cs[i]
            m = mass[i]
            a_b = alpha[own] - m
            t_rem = s * a_b * (comm_b[own] - m * c_own[i] + a_b * render[own]) - t_b[own]
            best_d = np.inf
            best_j = -1
            best_c = np.nan
            if lean:  # every input finite: no NaN can appear, a plain strict comparison is np.argmin's rule
                best_j = S[i, 0] if sparse else 0
                best_c = C[i, 0]
                for q in range(k):
                    j = S[i, q] if sparse else q
                    if j != own:
                        a_j = alpha[j] + m
                        d = (t_rem + (s * a_j * (comm_b[j] + m * C[i, q] + a_j * render[j]) - t_b[j])) / nb
                        if d < best_d:
                            best_d = d
                            best_j = j
                            best_c = C[i, q]
            else:
                first = True
                for q in range(k):
                    j = S[i, q] if sparse else q
                    if j == own:
                        d = np.inf
                    else:
                        a_j = alpha[j] + m
                        t_add = s * a_j * (comm_b[j] + m * C[i, q] + a_j * render[j]) - t_b[j]
                        d = (t_rem + t_add) / nb
                    if first or d < best_d or (np.isnan(d) and not np.isnan(best_d)):
                        best_d = d
                        best_j = j
                        best_c = C[i, q]
                        first = False
            bj[i] = best_j
            bd[i] = best_d
            bc[i] = best_c
            if sparse:
                lo = np.inf
                for c in range(ncls):
                    x = lb[i, c]
                    e = _env_lower(c, x, pa, pd, px, ol, ox, neg, slack)
                    val = s * m * e + s * m * m * (x + rmin)
                    if val < lo:
                        lo = val
                if ta.shape[0] > 1 or tile_of.shape[0] > 1:
                    t = tile_of[i]
                    val = m * ta[t] + m * m * (tx[t] + s * rmin)
                    if val > lo:
                        lo = val
                low = (t_rem + lo) / nb
                low = low - slack * (abs(t_rem) + abs(lo) + tmax) / nb
                low_out[i] = low
                flag[i] = (not (low > best_d)) and (low < cutoff)

    _nb_argmin_affine_1 = serial_twin(_nb_argmin_affine, "_nb_argmin_affine_1")
    _nb_best_moves_1 = serial_twin(_nb_best_moves, "_nb_best_moves_1")

    @_jit
    def _nb_fallback_pairs(rows, S, lb, cls, tile_clb, tile_of, has_tile, m, t_rem, alpha, comm_b, render, t_b, s,
                           nb, tmax, bd, cutoff, slack, buf, cnt):
        """:func:`best_moves`' full-scan pairs of rows ``rows`` (mass ``m``, own-side change ``t_rem``): the
        non-candidates whose :func:`move_change_lower` at :meth:`~edgeverse.links.CellLinks.pair_lower` is
        not above the row's best candidate change nor at or above ``cutoff`` (the numpy form's expressions,
        in its order).  Row ``t``'s servers, ascending, go to ``buf[t, :cnt[t]]``."""
        B = buf.shape[1]
        k = S.shape[1]
        for t in _nb.prange(rows.shape[0]):
            i = rows[t]
            mt = m[t]
            tr = t_rem[t]
            best = bd[i]
            w = 0
            is_cand = np.zeros(B, dtype=np.bool_)
            for q in range(k):
                is_cand[S[i, q]] = True
            for j in range(B):
                if is_cand[j]:
                    continue
                low = lb[i, cls[j]]
                if has_tile:
                    tv = tile_clb[tile_of[i], j]
                    if np.isnan(low) or np.isnan(tv):
                        low = np.nan
                    elif tv > low:
                        low = tv
                a_j = alpha[j] + mt
                t_add = s * a_j * (comm_b[j] + mt * low + a_j * render[j]) - t_b[j]
                dl = (tr + t_add) / nb
                dl = dl - slack * (abs(tr) + abs(t_add) + tmax) / nb
                if not (dl > best) and not (dl >= cutoff):
                    buf[t, w] = j
                    w += 1
            cnt[t] = w

    @_jit
    def _nb_scan_pairs(rows, S, lb, cls, tile_clb, tile_of, has_tile, u, icpt, nan_zero, val, slack, buf, cnt):
        """:func:`_scan_pairs` of rows ``rows`` (the numpy form's expressions, in its order): row ``t``'s
        non-candidates whose bound is not above ``val[rows[t]]`` go, ascending, to ``buf[t, :cnt[t]]``."""
        B = buf.shape[1]
        k = S.shape[1]
        for t in _nb.prange(rows.shape[0]):
            i = rows[t]
            best = val[i]
            w = 0
            is_cand = np.zeros(B, dtype=np.bool_)
            for q in range(k):
                is_cand[S[i, q]] = True
            for j in range(B):
                if is_cand[j]:
                    continue
                low = lb[i, cls[j]]
                if has_tile:
                    tv = tile_clb[tile_of[i], j]
                    if np.isnan(low) or np.isnan(tv):
                        low = np.nan
                    elif tv > low:
                        low = tv
                bnd = u[j] * low + icpt[j]
                if nan_zero and np.isnan(bnd):
                    bnd = icpt[j]
                bnd = bnd - (slack * abs(bnd) + 1e-300)
                if not (bnd > best):
                    buf[t, w] = j
                    w += 1
            cnt[t] = w

    @_jit
    def _nb_gather_rows(buf, off, out):
        """``out[off[t]:off[t + 1]] = buf[t, :off[t + 1] - off[t]]`` for every row ``t``."""
        for t in _nb.prange(off.shape[0] - 1):
            a = off[t]
            for p in range(off[t + 1] - a):
                out[a + p] = buf[t, p]

    @_jit
    def _nb_merge_rows(best, val, cval, r, off, pj, sc, c, store_c):
        """:func:`_merge_min` on pairs grouped by row (row ``t``'s pairs ``off[t]:off[t + 1]``, cell ``r[t]``),
        and (``store_c``) the winner's ``c`` into ``cval``: the row's first pair by (NaN first, score, server) wins over the
        current entry if it is NaN and the current is not; if both are not NaN and it is lower, or equal with
        a lower server; if both are NaN with a lower server."""
        for t in _nb.prange(r.shape[0]):
            a, b = off[t], off[t + 1]
            if b == a:
                continue
            q = a
            for p in range(a + 1, b):
                np_, nq = np.isnan(sc[p]), np.isnan(sc[q])
                if np_ != nq:
                    if np_:
                        q = p
                elif np_:
                    if pj[p] < pj[q]:
                        q = p
                elif sc[p] < sc[q] or (sc[p] == sc[q] and pj[p] < pj[q]):
                    q = p
            i = r[t]
            cur_v = val[i]
            cur_j = best[i]
            cur_n = np.isnan(cur_v)
            if np.isnan(sc[q]):
                win = (not cur_n) or (pj[q] < cur_j)
            else:
                win = (not cur_n) and (sc[q] < cur_v or (sc[q] == cur_v and pj[q] < cur_j))
            if win:
                best[i] = pj[q]
                val[i] = sc[q]
                if store_c:
                    cval[i] = c[q]

    @_jit
    def tile_lower_kernel(clb, slope, icpt, nan_zero, out):
        """Per tile ``min_b slope_b clb[t, b] + icpt_b`` over the servers with a finite ``clb`` (the numpy
        form of :meth:`edgeverse.links.CellLinks.tile_lower`: a NaN product counts as ``icpt_b`` with
        ``nan_zero``, else it is the minimum, as ``np.min`` does)."""
        nt, B = clb.shape
        for t in _nb.prange(nt):
            lo = np.inf
            has_nan = False
            for b in range(B):
                c = clb[t, b]
                if np.isinf(c):
                    continue
                v = slope[b] * c + icpt[b]
                if np.isnan(v) and nan_zero:
                    v = icpt[b]
                if np.isnan(v):
                    has_nan = True
                    continue
                if v < lo:
                    lo = v
            out[t] = np.nan if has_nan else lo

    @_jit
    def position_kernel(S, cells, servers, out):
        """Column of ``servers[j]`` among cell ``cells[j]``'s candidates (``S`` rows), or -1."""
        k = S.shape[1]
        for t in _nb.prange(cells.shape[0]):
            i = cells[t]
            b = servers[t]
            pos = -1
            for q in range(k):
                if S[i, q] == b:
                    pos = q
                    break
            out[t] = pos

    @_jit
    def candidate_values(S, C, cells, servers, pos_out, val_out):
        """:func:`position_kernel` and the stored value ``C[cell, pos]`` (NaN where not a candidate)."""
        k = S.shape[1]
        for t in _nb.prange(cells.shape[0]):
            i = cells[t]
            b = servers[t]
            pos = -1
            for q in range(k):
                if S[i, q] == b:
                    pos = q
                    break
            pos_out[t] = pos
            val_out[t] = C[i, pos] if pos >= 0 else np.nan
