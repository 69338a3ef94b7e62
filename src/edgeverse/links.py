"""Candidate servers per cell: the sparse (city-scale) form of the per-cell costs.

With many servers, the dense ``(cells x servers)`` arrays of gains and costs do
not fit (10^6 cells x 512 servers is 4 GB per float64 array) and most of their
entries never matter: a cell is served by one of its nearest servers.  A
:class:`CellLinks` keeps, for every cell, its ``k`` nearest servers in the plane
(``server``, ascending server index in each row) and their communication cost
``comm`` (the first term of the paper's F, the same formula and the same
floating-point operations as the dense arrays), plus what is needed to *prove*
that no other server can win a decision:

* path loss is non-decreasing in distance for one server, so any server that
  is not a candidate of cell ``i`` is at least as far as the ``k``-th nearest
  one, and its cost is at least ``lb[i, cls(b)]``: the cost of a server of
  parameter class ``cls(b)`` (antenna height, band, noise) at that distance;
* every decision a method makes is ``argmin_b u_b (c_ib + v_b) + w_b`` with
  ``u_b >= 0`` (map (14), the Laguerre cells of the OT, the single-cell moves
  of the local search), so over the non-candidates it is at least the lower
  envelope of the lines ``u_b x + (u_b v_b + w_b)`` at ``x = lb[i, cls]``
  (:class:`Envelope`).  Cells where that bound does not prove the candidate
  decision get a full, chunked scan over every server (``comm_pairs``): the
  result is exact for any assignment, not an approximation.

When the servers are few (``B <= k``), ``server`` is every server and the
arrays are the dense ones, bit for bit.

Everything here is computed once per :class:`~edgeverse.build.Problem` (in
chunks, so no ``(n, B)`` array is ever held) and shared by all the methods.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import physics
from .channel import channel_gain

#: Default number of candidate servers per cell (dense below this many servers).
DEFAULT_CANDIDATES = 16
#: Entries (rows x columns) processed per chunk by full scans and builds.
CHUNK_ENTRIES = 1 << 20
#: Relative safety margin of every lower bound (rounding of the bound chain).
BOUND_SLACK = 1e-9
#: Non-candidate comm costs asked for at least this share of the cells at one server (a partition that
#: sends much of the zone to one far server, as Algorithm 1's collapse does) are computed for the whole
#: column once and kept, for at most COLUMN_CACHE_COLUMNS servers (n floats each; oldest dropped first).
COLUMN_MIN_SHARE = 0.25
COLUMN_CACHE_COLUMNS = 4


def n_threads() -> int:
    """Worker threads for chunked numpy work (numpy releases the GIL): the machine's cores."""
    env = os.environ.get("EDGEVERSE_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def map_chunks(fn, n: int, step: int, threads: int | None = None) -> None:
    """Call ``fn(start, stop)`` on row chunks of ``[0, n)``, on a few threads (results written in place)."""
    spans = [(a, min(n, a + step)) for a in range(0, n, step)]
    t = n_threads() if threads is None else threads
    if t <= 1 or len(spans) <= 1:
        for a, b in spans:
            fn(a, b)
        return
    with ThreadPoolExecutor(max_workers=t) as ex:
        list(ex.map(lambda ab: fn(*ab), spans))


# --------------------------------------------------------------------------- geometry -> costs
@dataclass(frozen=True)
class LinkModel:
    """Everything needed to compute a sensor or PT link's gain and cost for any (point, server) pair."""

    channel_model: str
    carrier_hz: float
    server_xy: np.ndarray          # (B, 2)
    server_height: np.ndarray      # (B,)
    sensor_bandwidth: np.ndarray   # (B,) W^s_b
    noise_psd: np.ndarray          # (B,) N0_b
    sensor_noise: np.ndarray       # (B,) noise power of a sensor link
    sensor_power: float            # xi
    data_density: float            # rho
    twin_band_noise: bool          # PT noise over W_k (True) or 1 Hz

    def gain(self, xy: np.ndarray, ut_height, servers: np.ndarray) -> np.ndarray:
        """Channel gain between points ``xy`` (m, 2) at ``ut_height`` and ``servers`` (m,) (elementwise)."""
        d2d = np.sqrt(((xy - self.server_xy[servers]) ** 2).sum(axis=-1))
        return channel_gain(self.channel_model, distance_2d_m=d2d, bs_height_m=self.server_height[servers],
                            ut_height_m=ut_height, carrier_hz=self.carrier_hz)

    def gain_at_distance(self, d2d, ut_height, servers) -> np.ndarray:
        return channel_gain(self.channel_model, distance_2d_m=d2d, bs_height_m=self.server_height[servers],
                            ut_height_m=ut_height, carrier_hz=self.carrier_hz)

    def sensor_snr(self, gain, servers) -> np.ndarray:
        return physics.snr(gain, self.sensor_power, self.sensor_noise[servers])

    def comm_from_snr(self, snr, servers) -> np.ndarray:
        se = physics.spectral_efficiency_bps_per_hz(snr)
        return physics.sensing_cost_s_per_bit(self.data_density, self.sensor_bandwidth[servers], se, 0.0, 1.0)


class CellPoints:
    """Cell centres and sensor heights of a grid, for any set of cells (no (n, dim) array kept)."""

    def __init__(self, grid, sensor_height_m: float):
        self.grid = grid
        self.axes = [grid.axis_centers_m(a) for a in range(grid.dim)]
        self.height = float(sensor_height_m)

    def xy(self, cells: np.ndarray) -> np.ndarray:
        sub = np.unravel_index(np.asarray(cells), self.grid.shape)
        return np.stack([self.axes[0][sub[0]], self.axes[1][sub[1]]], axis=-1)

    def ut_height(self, cells: np.ndarray):
        if self.grid.dim == 3:
            sub = np.unravel_index(np.asarray(cells), self.grid.shape)
            return self.axes[2][sub[2]]
        return np.full(np.shape(cells), self.height)

    def xy_range(self, a: int, b: int) -> np.ndarray:
        return self.xy(np.arange(a, b))


def server_classes(model: LinkModel) -> tuple[np.ndarray, np.ndarray]:
    """(class of each server, a representative server of each class): servers with equal link parameters."""
    keys = np.column_stack([model.server_height, model.sensor_bandwidth, model.sensor_noise, model.noise_psd])
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    rep = np.zeros(uniq.shape[0], dtype=np.int64)
    rep[inv[::-1]] = np.arange(inv.size)[::-1]  # first server of each class
    return inv.reshape(-1).astype(np.int32), rep


# --------------------------------------------------------------------------- lower envelopes
class Envelope:
    """Lower envelope ``E(x) = min_b (slope_b x + icpt_b)`` of lines with ``slope_b >= 0``, for ``x >= 0``.

    Evaluated in ``O(log B)`` per point; :meth:`lower` returns a value at most
    ``E(x)`` (a safety margin absorbs the rounding of the breakpoints), so it
    is a valid lower bound of every line at ``x``.

    >>> e = Envelope(np.array([1.0, 0.0, 2.0]), np.array([0.0, 3.0, -1.0]))
    >>> e.lower(np.array([0.0, 1.0, 5.0])).round(6).tolist()
    [-1.0, 1.0, 3.0]
    """

    def __init__(self, slope: np.ndarray, icpt: np.ndarray):
        slope = np.asarray(slope, dtype=float)
        icpt = np.asarray(icpt, dtype=float)
        ok = np.isfinite(icpt) & np.isfinite(slope)
        if np.any(np.isneginf(icpt)):
            self.neg_inf = True
            return
        self.neg_inf = False
        a, d = slope[ok], icpt[ok]
        if a.size == 0:
            self.a = self.d = self.x = np.zeros(0)
            return
        order = np.lexsort((d, -a))  # slope descending, then intercept ascending
        hull: list[int] = []
        brk: list[float] = []
        for j in order.tolist():
            if hull and a[hull[-1]] == a[j]:
                continue  # same slope, higher or equal intercept: never below
            while hull:
                i = hull[-1]
                # x where line j (smaller slope) gets below line i
                xi = (d[j] - d[i]) / (a[i] - a[j])
                if brk and xi <= brk[-1]:
                    hull.pop()
                    brk.pop()
                    continue
                break
            if hull:
                xi = (d[j] - d[hull[-1]]) / (a[hull[-1]] - a[j])
                if xi <= 0.0 and len(hull) == 1:
                    # j is below the first line already at x = 0: the first line never matters on x >= 0
                    hull.pop()
                    hull.append(j)
                    continue
                brk.append(max(xi, 0.0))
            hull.append(j)
        self.a = a[hull]
        self.d = d[hull]
        self.x = np.asarray(brk, dtype=float)
        self.mag = float(np.max(np.abs(d))) if d.size else 0.0

    def lower(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.neg_inf:
            return np.full(x.shape, -np.inf)
        if self.a.size == 0:
            return np.full(x.shape, np.inf)
        seg = np.searchsorted(self.x, x, side="right")
        with np.errstate(invalid="ignore", over="ignore"):
            ax = self.a[seg] * x
            val = ax + self.d[seg]
            # the breakpoints are rounded: the true minimum may be below by a few ulps of the terms
            margin = BOUND_SLACK * (np.abs(ax) + np.abs(self.d[seg])) + 1e-300
            out = val - margin
        return np.where(np.isinf(x), np.where(self.a[seg] > 0, np.inf, self.d[seg]), out)


# --------------------------------------------------------------------------- candidate links
@dataclass
class CellLinks:
    """Each cell's candidate servers and their communication cost (see the module docstring).

    ``server`` (n, k) int32, ascending in each row; ``comm`` (n, k) float64;
    ``lb`` (n, n_classes) lower bound of the comm cost of any non-candidate
    server of each class (None when every server is a candidate); ``cls`` (B,)
    the class of each server.
    """

    server: np.ndarray
    comm: np.ndarray
    lb: np.ndarray | None
    cls: np.ndarray
    n_servers: int
    model: LinkModel
    points: CellPoints
    tile_of: np.ndarray | None = None   # (n,) tile of each cell (2D grids), see build_tiles
    tile_clb: np.ndarray | None = None  # (n_tiles, B) comm lower bound over a tile; inf where every cell's candidate
    _tile_comm_lower: np.ndarray | None = field(default=None, init=False, repr=False)  # see tile_comm_lower
    _columns: dict = field(default_factory=dict, init=False, repr=False)  # server -> (n,) comm, see comm_at

    @property
    def dense(self) -> bool:
        """True when every server is a candidate of every cell (no bound needed)."""
        return self.lb is None

    @property
    def k(self) -> int:
        return int(self.server.shape[1])

    @property
    def n(self) -> int:
        return int(self.server.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.cls.max()) + 1 if self.cls.size else 0

    def nbytes(self) -> int:
        return int(self.server.nbytes + self.comm.nbytes + (0 if self.lb is None else self.lb.nbytes))

    # ---- exact costs for any pairs (geometry)
    def comm_pairs(self, cells: np.ndarray, servers: np.ndarray) -> np.ndarray:
        """Comm cost of cells ``cells`` at servers ``servers`` (same shapes), from the geometry: exact."""
        cells = np.asarray(cells)
        servers = np.asarray(servers)
        xy = self.points.xy(cells)
        g = self.model.gain(xy, self.points.ut_height(cells), servers)
        return self.model.comm_from_snr(self.model.sensor_snr(g, servers), servers)

    def snr_pairs(self, cells: np.ndarray, servers: np.ndarray) -> np.ndarray:
        cells = np.asarray(cells)
        servers = np.asarray(servers)
        g = self.model.gain(self.points.xy(cells), self.points.ut_height(cells), servers)
        return self.model.sensor_snr(g, servers)

    def gain_pairs(self, cells: np.ndarray, servers: np.ndarray) -> np.ndarray:
        cells = np.asarray(cells)
        servers = np.asarray(servers)
        return self.model.gain(self.points.xy(cells), self.points.ut_height(cells), servers)

    def full_rows(self, cells: np.ndarray) -> np.ndarray:
        """Comm cost rows (len(cells), B) over every server (for the few cells a bound does not settle)."""
        cells = np.asarray(cells)
        B = self.n_servers
        if self.dense:
            return self.comm[cells]
        c = np.repeat(cells, B).reshape(-1, B)
        s = np.broadcast_to(np.arange(B), c.shape)
        return self.comm_pairs(c, s)

    def position(self, cells: np.ndarray, servers: np.ndarray) -> np.ndarray:
        """Column of ``servers[j]`` among cell ``cells[j]``'s candidates, or -1."""
        cells = np.asarray(cells)
        servers = np.asarray(servers)
        if self.dense:
            return servers.astype(np.int64)
        from . import kernels

        if kernels.numba_active() and cells.size > 4096:
            flat_c = np.ascontiguousarray(cells.reshape(-1), dtype=np.int64)
            flat_s = np.ascontiguousarray(servers.reshape(-1), dtype=np.int64)
            out = np.empty(flat_c.size, dtype=np.int64)
            kernels.position_kernel(self.server, flat_c, flat_s, out)
            return out.reshape(cells.shape)
        S = self.server[cells]
        hit = S == servers[..., None]
        pos = np.argmax(hit, axis=-1)
        return np.where(hit.any(axis=-1), pos, -1)

    def comm_at(self, cells: np.ndarray, servers: np.ndarray) -> np.ndarray:
        """Comm cost at arbitrary (cell, server) pairs: the stored value when a candidate, else geometry."""
        cells = np.asarray(cells)
        servers = np.asarray(servers)
        if self.dense:
            return self.comm[cells, servers]
        from . import kernels

        if kernels.numba_active() and cells.size > 4096:
            flat_c = np.ascontiguousarray(cells.reshape(-1), dtype=np.int64)
            flat_s = np.ascontiguousarray(servers.reshape(-1), dtype=np.int64)
            pos = np.empty(flat_c.size, dtype=np.int64)
            out = np.empty(flat_c.size)
            kernels.candidate_values(self.server, self.comm, flat_c, flat_s, pos, out)
            pos = pos.reshape(cells.shape)
            out = out.reshape(cells.shape)
            ok = pos >= 0
        else:
            pos = self.position(cells, servers)
            out = np.empty(cells.shape)
            ok = pos >= 0
            out[ok] = self.comm[cells[ok], pos[ok]]
        if not ok.all():
            out[~ok] = self._far_comm(cells[~ok], servers[~ok])
        return out

    def comm_column(self, server: int) -> np.ndarray:
        """(n,) comm cost of every cell at ``server`` from the geometry (chunked), kept for reuse (see
        :data:`COLUMN_MIN_SHARE`); the values are those of :meth:`comm_pairs`."""
        b = int(server)
        col = self._columns.pop(b, None)
        if col is None:
            col = np.empty(self.n)
            for a in range(0, self.n, CHUNK_ENTRIES):
                e = min(self.n, a + CHUNK_ENTRIES)
                col[a:e] = self.comm_pairs(np.arange(a, e), np.full(e - a, b))
            while len(self._columns) >= COLUMN_CACHE_COLUMNS:
                self._columns.pop(next(iter(self._columns)))
        self._columns[b] = col  # the most recently used last
        return col

    def _far_comm(self, cells: np.ndarray, servers: np.ndarray) -> np.ndarray:
        """comm_pairs for non-candidate pairs, read from the kept columns where there are, or worth, some."""
        out = np.empty(cells.shape)
        todo = np.ones(cells.shape, dtype=bool)
        if self._columns or cells.size >= COLUMN_MIN_SHARE * self.n:
            counts = np.bincount(servers.reshape(-1), minlength=self.n_servers)
            for b in np.flatnonzero(counts):
                if b in self._columns or counts[b] >= COLUMN_MIN_SHARE * self.n:
                    sel = servers == b
                    out[sel] = self.comm_column(b)[cells[sel]]
                    todo &= ~sel
        if todo.any():
            out[todo] = self.comm_pairs(cells[todo], servers[todo])
        return out

    def assigned_comm(self, cs: np.ndarray) -> np.ndarray:
        """Comm cost of every cell at its server ``cs[i]``."""
        return self.comm_at(np.arange(self.n), np.asarray(cs))

    def lb_of(self, cells: np.ndarray) -> np.ndarray:
        return self.lb[cells]

    # ---- envelopes of per-server lines, one per class
    def envelopes(self, slope: np.ndarray, icpt: np.ndarray) -> list[Envelope]:
        return [Envelope(slope[self.cls == c], icpt[self.cls == c]) for c in range(self.n_classes)]

    def tile_lower(self, slope: np.ndarray, icpt: np.ndarray, nan_zero: bool = False) -> np.ndarray | None:
        """Per tile: a lower bound of ``min_b slope_b c_ib + icpt_b`` over every cell's non-candidates (or None)."""
        if self.tile_clb is None:
            return None
        from . import kernels

        if kernels.numba_active():
            lo = np.empty(self.tile_clb.shape[0])
            kernels.tile_lower_kernel(self.tile_clb, np.asarray(slope, dtype=float), np.asarray(icpt, dtype=float),
                                      bool(nan_zero), lo)
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                v = slope[None, :] * self.tile_clb + icpt[None, :]
                if nan_zero:
                    v = np.where(np.isnan(v), icpt[None, :], v)
                v = np.where(np.isinf(self.tile_clb), np.inf, v)
                lo = v.min(axis=1)
        with np.errstate(invalid="ignore"):
            # an infinite minimum stays infinite (inf - slack * inf would be NaN)
            return np.where(np.isinf(lo), lo, lo - BOUND_SLACK * np.abs(lo) - 1e-300)

    def pair_lower(self, cells: np.ndarray) -> np.ndarray:
        """(len(cells), B) lower bound of the comm cost of each cell at each server that is not one of its
        candidates: the larger of its class's cost at the k-th nearest distance and the tile bound (the
        entries of candidates are meaningless)."""
        low = self.lb[cells][:, self.cls]
        if self.tile_of is not None:
            low = np.maximum(low, self.tile_clb[self.tile_of[cells]])
        return low

    def tile_comm_lower(self) -> np.ndarray | None:
        """Per tile: a lower bound of the comm cost of any non-candidate server (static; computed once)."""
        if self.tile_clb is None:
            return None
        if self._tile_comm_lower is None:
            B = self.n_servers
            self._tile_comm_lower = self.tile_lower(np.ones(B), np.zeros(B))
        return self._tile_comm_lower

    def noncandidate_lower(self, cells: np.ndarray, envs: list[Envelope], lb_rows: np.ndarray | None = None) -> np.ndarray:
        """Lower bound of ``min over non-candidates of slope_b c_ib + icpt_b`` at ``cells``."""
        lbr = self.lb[cells] if lb_rows is None else lb_rows
        out = envs[0].lower(lbr[:, 0])
        for c in range(1, len(envs)):
            np.minimum(out, envs[c].lower(lbr[:, c]), out=out)
        return out


class PairLookup:
    """A read-only ``(rows, B)`` array computed on demand: ``x[rows_idx, cols_idx]`` works, nothing dense is kept.

    Used for the sparse problems' ``sensor_gain``, ``sensor_snr``,
    ``comm_cost_s_per_bit`` and the twins' ``rate_bps``, ``upload_time_s`` and
    ``min_compute_hz``; ``np.asarray`` materialises it (small problems only).
    """

    def __init__(self, shape, fn, name: str, rows_fn=None, threads: bool = False):
        self.shape = tuple(int(s) for s in shape)
        self._fn = fn
        self._rows_fn = rows_fn
        self._threads = threads  # fn is plain numpy (no numba, no state): large requests in chunks on threads
        self.name = name
        self.ndim = 2
        self.dtype = np.dtype(float)

    def __getitem__(self, key):
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"{self.name}: index with a pair of index arrays, [rows, cols]")
        r, c = key
        if isinstance(r, slice) or isinstance(c, slice):
            r = np.arange(self.shape[0])[r] if isinstance(r, slice) else np.asarray(r)
            c = np.arange(self.shape[1])[c] if isinstance(c, slice) else np.asarray(c)
            r, c = np.meshgrid(r, c, indexing="ij")
        r, c = np.broadcast_arrays(np.asarray(r), np.asarray(c))
        rf, cf = r.reshape(-1), c.reshape(-1)
        if self._threads and rf.size > CHUNK_ENTRIES:
            out = np.empty(rf.size)

            def work(a, b):
                out[a:b] = self._fn(rf[a:b], cf[a:b])

            map_chunks(work, rf.size, CHUNK_ENTRIES)
            return out.reshape(r.shape)
        return self._fn(rf, cf).reshape(r.shape)

    def rows(self, r: np.ndarray) -> np.ndarray:
        """Whole rows ``x[r, :]`` (len(r), B): from a kept table when there is one (``rows_fn``)."""
        r = np.asarray(r, dtype=np.int64)
        if self._rows_fn is not None:
            out = self._rows_fn(r)
            if out is not None:
                return out
        B = self.shape[1]
        return self._fn(np.repeat(r, B), np.tile(np.arange(B), r.size)).reshape(r.size, B)

    def __array__(self, dtype=None, copy=None):
        n = self.shape[0] * self.shape[1]
        if n > 50_000_000:
            raise MemoryError(f"{self.name}: refusing to materialise a {self.shape} array ({8 * n / 1e9:.1f} GB); "
                              "index it with [rows, cols] instead")
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"PairLookup({self.name}, shape={self.shape})"


#: Side (in cells) of the square tiles of the tile bounds.
TILE_CELLS = 16


def build_tiles(links: CellLinks, tile: int = TILE_CELLS) -> None:
    """Tile bounds (2D grids): for each ``tile x tile`` block of cells and each server that is not a
    candidate of every cell of the block, the comm cost at the server's distance to the block (a lower
    bound for every cell of the block, by monotonicity).  Far servers are then ruled out with their own
    distance, not only with the k-th nearest one.  Stored in ``links.tile_of`` / ``links.tile_clb``."""
    grid = links.points.grid
    if links.dense or grid.dim != 2:
        return
    nx, ny = grid.shape
    tx, ty = -(-nx // tile), -(-ny // tile)
    nt = tx * ty
    B = links.n_servers
    n = links.n
    ix, iy = np.divmod(np.arange(n, dtype=np.int64), ny)
    tile_of = ((ix // tile) * ty + (iy // tile)).astype(np.int32)
    # servers that are candidates of every cell of a tile
    counts = np.zeros(nt * B, dtype=np.int64)
    step = max(1, CHUNK_ENTRIES // links.k)
    for a in range(0, n, step):
        b = min(n, a + step)
        key = tile_of[a:b, None].astype(np.int64) * B + links.server[a:b]
        counts += np.bincount(key.ravel(), minlength=nt * B)
    cells_per_tile = np.bincount(tile_of, minlength=nt)
    common = counts.reshape(nt, B) == cells_per_tile[:, None]
    # distance from each server to each tile's box of cell centres
    xc, yc = links.points.axes[0], links.points.axes[1]
    t0x = np.arange(tx) * tile
    t0y = np.arange(ty) * tile
    xlo, xhi = xc[t0x], xc[np.minimum(t0x + tile, nx) - 1]
    ylo, yhi = yc[t0y], yc[np.minimum(t0y + tile, ny) - 1]
    sx, sy = links.model.server_xy[:, 0], links.model.server_xy[:, 1]
    dx = np.maximum(0.0, np.maximum(xlo[:, None] - sx[None, :], sx[None, :] - xhi[:, None]))  # (tx, B)
    dy = np.maximum(0.0, np.maximum(ylo[:, None] - sy[None, :], sy[None, :] - yhi[:, None]))  # (ty, B)
    clb = np.empty((nt, B))
    srv = np.arange(B)
    h = links.points.height
    for i in range(tx):
        d = np.sqrt(dx[i][None, :] ** 2 + dy ** 2) * (1.0 - BOUND_SLACK)  # (ty, B)
        s = np.broadcast_to(srv, d.shape)
        g = links.model.gain_at_distance(d, h, s) * (1.0 + BOUND_SLACK)
        clb[i * ty:(i + 1) * ty] = links.model.comm_from_snr(links.model.sensor_snr(g, s), s) * (1.0 - BOUND_SLACK)
    clb[common] = np.inf
    links.tile_of = tile_of
    links.tile_clb = clb


def dense_links(comm: np.ndarray, model: LinkModel, points: CellPoints) -> CellLinks:
    """Every server a candidate of every cell: the dense arrays themselves."""
    n, B = comm.shape
    server = np.broadcast_to(np.arange(B, dtype=np.int32), (n, B))
    cls, _ = server_classes(model)
    return CellLinks(server=server, comm=comm, lb=None, cls=cls, n_servers=B, model=model, points=points)


def build_links(model: LinkModel, points: CellPoints, n: int, k: int):
    """Candidate links of every cell (k nearest servers), chunked over the cells on a few threads.

    Returns ``(links, best_snr, nearest)``: the static best-SNR and nearest
    servers of every cell are found on the way (exact: decided among the
    candidates when a bound proves it, else by a full scan of the cell).
    """
    from scipy.spatial import cKDTree

    B = model.server_xy.shape[0]
    tree = cKDTree(model.server_xy)
    cls, rep = server_classes(model)
    ncls = rep.size
    server = np.empty((n, k), dtype=np.int32)
    comm = np.empty((n, k))
    lb = np.empty((n, ncls))
    best_snr = np.empty(n, dtype=np.int64)
    nearest = np.empty(n, dtype=np.int64)
    n0 = model.noise_psd

    def work(a, b):
        cells = np.arange(a, b)
        xy = points.xy(cells)
        h = points.ut_height(cells)
        _, idx = tree.query(xy, k=k)
        idx = np.sort(idx.astype(np.int32), axis=1)
        server[a:b] = idx
        # the same elementwise operations as the dense build (link_gain, snr, cost)
        d2 = ((xy[:, None, :] - model.server_xy[idx]) ** 2).sum(axis=2)
        d2d = np.sqrt(d2)
        hh = h[:, None] if np.ndim(h) else h
        g = model.gain_at_distance(d2d, hh, idx)
        snr = model.sensor_snr(g, idx)
        comm[a:b] = model.comm_from_snr(snr, idx)
        # distance below which no non-candidate lies (k-th nearest, less rounding)
        dk = d2d.max(axis=1) * (1.0 - BOUND_SLACK)
        hcol = h if np.ndim(h) else np.full(cells.size, h)
        gub = np.empty((cells.size, ncls))
        for c in range(ncls):
            s = np.full(cells.size, rep[c])
            gc = model.gain_at_distance(dk, hcol, s)
            gub[:, c] = gc * (1.0 + BOUND_SLACK)
            lb[a:b, c] = model.comm_from_snr(model.sensor_snr(gc, s), s) * (1.0 - BOUND_SLACK)
        # nearest server (dense: argmin of the squared distance, ties to the lowest index)
        j = np.argmin(d2, axis=1)
        rows = np.arange(cells.size)
        dmin = d2[rows, j]
        near = idx[rows, j].astype(np.int64)
        bad = ~(dmin < (dk * dk) * (1.0 - BOUND_SLACK))
        if bad.any():
            near[bad] = _full_nearest(model, xy[bad])
        nearest[a:b] = near
        # best SNR server: argmax gain / N0 (ties to the lowest index)
        score = g / n0[idx]
        j = np.argmax(score, axis=1)
        smax = score[rows, j]
        bsn = idx[rows, j].astype(np.int64)
        ub = (gub / n0[rep][None, :]).max(axis=1) * (1.0 + BOUND_SLACK)
        bad = ~(smax > ub)
        if bad.any():
            bsn[bad] = _full_best_snr(model, xy[bad], h[bad] if np.ndim(h) else h)
        best_snr[a:b] = bsn

    map_chunks(work, n, max(1, CHUNK_ENTRIES // (4 * k)))
    links = CellLinks(server=server, comm=comm, lb=lb, cls=cls, n_servers=B, model=model, points=points)
    build_tiles(links)
    return links, best_snr, nearest


def _full_nearest(model: LinkModel, xy: np.ndarray) -> np.ndarray:
    d2 = ((xy[:, None, :] - model.server_xy[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d2, axis=1)


def _full_best_snr(model: LinkModel, xy: np.ndarray, h) -> np.ndarray:
    B = model.server_xy.shape[0]
    s = np.broadcast_to(np.arange(B), (xy.shape[0], B))
    d2d = np.sqrt(((xy[:, None, :] - model.server_xy[None, :, :]) ** 2).sum(axis=2))
    hh = h[:, None] if np.ndim(h) else h
    g = model.gain_at_distance(d2d, hh, s)
    return np.argmax(g / model.noise_psd[None, :], axis=1)
