"""Scenario -> arrays: the grid, sensing masses, channel gains, per-cell costs and the twins.

:func:`build_problem` turns a validated :class:`~edgeverse.scenario.Scenario` into a
:class:`Problem` holding everything the solvers and the evaluator need, computed
once.  All random draws come from generators seeded by ``scenario.seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import physics
from .channel import channel_gain
from .grid import Grid, density_masses, sample_positions
from .links import (DEFAULT_CANDIDATES, BOUND_SLACK, CellLinks, CellPoints, LinkModel, PairLookup, build_links,
                    dense_links, server_classes)
from .scenario import FromDensity, PointList, Scenario, per_server
from .errors import EdgeverseError
from .units import dbm_to_watt


@dataclass(frozen=True)
class Twins:
    """The K digital twins drawn for a scenario (arrays of length K, or (K, B))."""

    positions_m: np.ndarray          # (K, dim)
    type_index: np.ndarray           # (K,) int
    cell: np.ndarray                 # (K,) grid cell holding the PT
    intensity_hz: np.ndarray         # (K,) mu_k
    tx_power_w: np.ndarray           # (K,) zeta_k
    data_size_bits: np.ndarray       # (K,) D_k
    bandwidth_hz: np.ndarray         # (K,) W_k
    complexity_cycles_per_bit: np.ndarray  # (K,) Gamma_k
    rate_bps: np.ndarray             # (K, B) r_kb (a PairLookup on sparse problems)
    upload_time_s: np.ndarray        # (K, B) tau^com_kb, eq. (6)
    min_compute_hz: np.ndarray       # (K, B) Algorithm 1 line 9; inf where infeasible
    # sparse problems (many servers): the twin's cell's candidate servers only
    cand_need_hz: np.ndarray | None = None   # (K, k) line-9 compute at the cell's candidates
    need_lb_hz: np.ndarray | None = None     # (K, n_classes) lower bound at any non-candidate server

    @property
    def n(self) -> int:
        return int(self.type_index.shape[0])

    @property
    def deadline_s(self) -> np.ndarray:
        return 1.0 / self.intensity_hz


@dataclass(frozen=True)
class Problem:
    """Everything a solver needs, built once from a scenario.

    The sensing cost of cell i at server b is the paper's F (Sec. III):
    ``F_ib = comm_cost_s_per_bit[i, b] + render_coeff / psi_b`` and the
    sub-synchronization time is ``T_b = time_scale * alpha_b * sum_{i in b} m_i F_ib``.
    """

    scenario: Scenario
    grid: Grid
    cell_mass: np.ndarray             # (n,) share of g in each cell, sums to 1
    server_positions_m: np.ndarray    # (B, 2)
    server_height_m: np.ndarray       # (B,)
    compute_hz: np.ndarray            # (B,) Psi_b
    sensor_bandwidth_hz: np.ndarray   # (B,) W^s_b
    noise_psd_w_per_hz: np.ndarray    # (B,)
    sensor_noise_w: np.ndarray        # (B,) noise power of a sensor link
    sensor_gain: np.ndarray           # (n, B) h_qb
    sensor_snr: np.ndarray            # (n, B)
    comm_cost_s_per_bit: np.ndarray   # (n, B) rho / (W^s_b log2(1 + SNR)), first term of F
    twins: Twins
    server_names: tuple[str, ...] = field(default=())
    projection: Any = None            # edgeverse.geo.Projection of the zone frame, or None (no geo section)
    server_lonlat_deg: np.ndarray | None = None   # (B, 2) WGS84 [lon, lat] of each server when projection is known
    links: CellLinks | None = None    # candidate servers of each cell and their comm cost (edgeverse.links)
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # static per-scenario results

    @property
    def sparse(self) -> bool:
        """True when cells only know their candidate servers (many servers; see edgeverse.links)."""
        return self.links is not None and not self.links.dense

    @property
    def density_fraction_kept(self) -> float | None:
        """Share of a density file's mass that fell inside the zone (None when the density is not from a file)."""
        src = self.scenario.provenance.get("sensing.density") or {}
        return src.get("fraction_kept")

    @property
    def n_cells(self) -> int:
        return self.grid.n_cells

    @property
    def n_servers(self) -> int:
        return int(self.compute_hz.shape[0])

    @property
    def render_coeff(self) -> float:
        """Lambda * rho [cycles/s per m^3-equivalent]: F's second term is render_coeff / psi_b."""
        s = self.scenario.sensing
        return s.render_complexity_cycles_per_bit * s.data_density_bps_per_m3

    @property
    def n_sensors(self) -> float:
        return float(self.scenario.sensing.n_sensors)

    @property
    def cell_weight(self) -> np.ndarray:
        """Weight of each cell in the integral (5): the sensor count Q m_i, or the mass m_i (literal)."""
        if self.scenario.model.time_aggregation == "sensor_sum":
            return self.n_sensors * self.cell_mass
        return self.cell_mass

    @property
    def time_scale(self) -> float:
        """T_b = time_scale * alpha_b * sum_{i in b} m_i F_ib  (seconds)."""
        s = self.scenario.sensing
        base = s.n_sensors * s.slot_s * s.volume_unit_m3  # L(alpha) = Q Delta eps alpha
        return base * (s.n_sensors if self.scenario.model.time_aggregation == "sensor_sum" else 1.0)

    def best_snr_server(self) -> np.ndarray:
        """Server with the best channel to each cell: argmax_b h_ib xi / N0_b (bandwidth-free SNR).

        Static: computed once per problem (on sparse problems, while building the candidates).
        """
        if "best_snr" not in self.cache:
            self.cache["best_snr"] = np.argmax(self.sensor_gain / self.noise_psd_w_per_hz[None, :], axis=1)
        return self.cache["best_snr"].copy()

    def nearest_server(self) -> np.ndarray:
        """Server nearest (in the horizontal plane) to each cell centre (static, computed once)."""
        if "nearest" not in self.cache:
            c = self.grid.centers_m()[:, :2]
            x, y = np.ascontiguousarray(c[:, 0]), np.ascontiguousarray(c[:, 1])
            best = np.zeros(x.size, dtype=np.int64)
            best_d2 = np.full(x.size, np.inf)
            # server by server (no cells x servers x 2 temporary): the same squared distances, dx^2 + dy^2, and
            # argmin's ties (a strict improvement keeps the lowest index)
            for b, (sx, sy) in enumerate(np.asarray(self.server_positions_m, dtype=float)[:, :2]):
                d2 = (x - sx) ** 2 + (y - sy) ** 2
                closer = d2 < best_d2
                best[closer] = b
                best_d2[closer] = d2[closer]
            self.cache["nearest"] = best
        return self.cache["nearest"].copy()


def _heights(points_m: np.ndarray, grid: Grid, default_height_m: float) -> np.ndarray:
    return points_m[:, 2] if grid.dim == 3 else np.full(points_m.shape[0], default_height_m)


def link_gain(scenario: Scenario, points_m, heights_m, server_xy_m, server_height_m) -> np.ndarray:
    """Channel gain (n, B) between points and servers under the scenario's path-loss model."""
    p = np.asarray(points_m, dtype=float)[:, :2]
    d2d = np.sqrt(((p[:, None, :] - server_xy_m[None, :, :]) ** 2).sum(axis=2))
    return channel_gain(
        scenario.channel.model,
        distance_2d_m=d2d,
        bs_height_m=server_height_m[None, :],
        ut_height_m=np.asarray(heights_m, dtype=float)[:, None],
        carrier_hz=scenario.channel.carrier_hz,
    )


def build_twins(scenario: Scenario, grid: Grid, servers_xy, servers_h, noise_psd_w_per_hz, rng,
                links: CellLinks | None = None) -> Twins:
    """Draw the PT positions and types (seeded) and compute their link budgets and line-9 compute."""
    tw = scenario.twins
    k = tw.count
    pos_rng, type_rng = [np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(2)]
    # from_density: the PTs follow the sensing density (people, sensors) of the zone
    spec = scenario.sensing.density if isinstance(tw.positions, FromDensity) else tw.positions
    positions = sample_positions(spec, grid, k, pos_rng, scenario.base_dir)
    if isinstance(tw.positions, PointList) and tw.positions.types is not None:
        types = np.asarray(tw.positions.types, dtype=int)
    else:
        shares = np.array([t.share for t in tw.types], dtype=float)
        types = type_rng.choice(len(shares), size=k, p=shares / shares.sum()) if k else np.zeros(0, dtype=int)

    def col(name):
        return np.array([getattr(tw.types[t], name) for t in types], dtype=float)

    mu, zeta, d_bits, w_hz, gamma = (col(n) for n in ("intensity_hz", "tx_power_w", "data_size_bits",
                                                      "bandwidth_hz", "complexity_cycles_per_bit"))
    if links is not None and not links.dense:
        return _sparse_twins(scenario, grid, links, positions, types, mu, zeta, d_bits, w_hz, gamma,
                             _heights(positions, grid, tw.height_m), noise_psd_w_per_hz)
    gain = link_gain(scenario, positions, _heights(positions, grid, tw.height_m), servers_xy, servers_h)
    if scenario.model.twin_noise_bandwidth == "twin_band":
        noise_w = noise_psd_w_per_hz[None, :] * w_hz[:, None]
    else:
        noise_w = np.broadcast_to(noise_psd_w_per_hz[None, :], gain.shape)
    rate = physics.twin_rate_bps(w_hz[:, None], physics.snr(gain, zeta[:, None], noise_w))
    upload = physics.twin_upload_time_s(d_bits[:, None], rate)
    phi_min = physics.twin_min_compute_hz(gamma[:, None], d_bits[:, None], mu[:, None], rate)
    return Twins(
        positions_m=positions, type_index=types, cell=grid.cell_of(positions) if k else np.zeros(0, dtype=int),
        intensity_hz=mu, tx_power_w=zeta, data_size_bits=d_bits, bandwidth_hz=w_hz,
        complexity_cycles_per_bit=gamma, rate_bps=rate.reshape(k, servers_xy.shape[0]),
        upload_time_s=upload.reshape(k, servers_xy.shape[0]), min_compute_hz=phi_min.reshape(k, servers_xy.shape[0]),
    )


def _candidate_needs(scenario, links: CellLinks, cell, xy, h, w_hz, zeta, gamma, d_bits, mu, n0, need_fn):
    """The DTs' line-9 compute at their cell's candidate servers (``need_fn(rows, servers)``) and, per
    server class, its lower bound at any non-candidate server (the bound the PT moves use)."""
    model = links.model
    k = cell.shape[0]
    if not k:
        return np.zeros((0, links.k)), np.zeros((0, links.n_classes))
    twin_band = scenario.model.twin_noise_bandwidth == "twin_band"
    S = links.server[cell]
    rows = np.broadcast_to(np.arange(k)[:, None], S.shape)
    cand_need = need_fn(rows.reshape(-1), S.reshape(-1)).reshape(S.shape)
    # PTs are anywhere in their cell: a non-candidate server is at least (k-th nearest distance of the
    # cell centre) - (distance of the PT from the centre) away
    centre = links.points.xy(cell)
    dk = np.sqrt(((centre[:, None, :] - model.server_xy[S]) ** 2).sum(axis=2)).max(axis=1)
    off = np.sqrt(((xy - centre) ** 2).sum(axis=1))
    dlb = np.maximum(dk * (1.0 - BOUND_SLACK) - off * (1.0 + BOUND_SLACK), 0.0)
    _, rep = server_classes(model)
    need_lb = np.empty((k, rep.size))
    for c, b in enumerate(rep):
        s = np.full(k, b)
        g = model.gain_at_distance(dlb, h, s) * (1.0 + BOUND_SLACK)
        noise = n0[s] * w_hz if twin_band else n0[s]
        rate = physics.twin_rate_bps(w_hz, physics.snr(g, zeta, noise)) * (1.0 + BOUND_SLACK)
        need_lb[:, c] = physics.twin_min_compute_hz(gamma, d_bits, mu, rate) * (1.0 - BOUND_SLACK)
    return cand_need, need_lb


def regrid_twins(scenario: Scenario, twins: Twins, grid: Grid, links: CellLinks, noise_psd_w_per_hz) -> Twins:
    """The same DTs on another grid of the same zone (sparse links): their link lookups depend on the DT and
    the server only and are shared; their cells, candidate needs and bounds are those of ``grid``/``links``."""
    import dataclasses

    cell = grid.cell_of(twins.positions_m) if twins.n else np.zeros(0, dtype=int)
    h = _heights(twins.positions_m, grid, scenario.twins.height_m)
    xy = np.asarray(twins.positions_m, dtype=float)[:, :2]
    need = twins.min_compute_hz
    cand_need, need_lb = _candidate_needs(
        scenario, links, cell, xy, np.asarray(h, dtype=float), twins.bandwidth_hz, twins.tx_power_w,
        twins.complexity_cycles_per_bit, twins.data_size_bits, twins.intensity_hz, noise_psd_w_per_hz,
        lambda r, c: need[r, c])
    return dataclasses.replace(twins, cell=cell, cand_need_hz=cand_need, need_lb_hz=need_lb)


def _sparse_twins(scenario, grid, links: CellLinks, positions, types, mu, zeta, d_bits, w_hz, gamma, heights,
                  n0) -> Twins:
    """Twins of a sparse problem: link budgets at their cell's candidate servers, the rest on demand."""
    k = types.shape[0]
    model = links.model
    cell = grid.cell_of(positions) if k else np.zeros(0, dtype=int)
    twin_band = scenario.model.twin_noise_bandwidth == "twin_band"
    xy = np.asarray(positions, dtype=float)[:, :2]
    h = np.asarray(heights, dtype=float)

    def link(tw_idx, servers):
        tw_idx = np.asarray(tw_idx)
        servers = np.asarray(servers)
        gain = model.gain(xy[tw_idx], h[tw_idx], servers)
        noise = n0[servers] * w_hz[tw_idx] if twin_band else n0[servers]
        rate = physics.twin_rate_bps(w_hz[tw_idx], physics.snr(gain, zeta[tw_idx], noise))
        return rate

    def rate_fn(r, c):
        return link(r, c)

    def upload_fn(r, c):
        return physics.twin_upload_time_s(d_bits[r], link(r, c))

    def need_fn(r, c):
        return physics.twin_min_compute_hz(gamma[r], d_bits[r], mu[r], link(r, c))

    B = links.n_servers
    cand_need, need_lb = _candidate_needs(scenario, links, cell, xy, h, w_hz, zeta, gamma, d_bits, mu, n0, need_fn)

    def full_table():
        # every line-9 compute once (the same elementwise operations, so the same values), in chunks
        tab = np.empty((k, B))
        step = max(1, (1 << 20) // B)
        for a in range(0, k, step):
            rows = np.repeat(np.arange(a, min(k, a + step)), B)
            tab[a:a + step] = need_fn(rows, np.tile(np.arange(B), rows.size // B)).reshape(-1, B)
        return tab

    store = {"table": full_table() if 0 < k * B <= NEED_TABLE_ENTRIES else None}

    def need_lookup(r, c):
        table = store["table"]
        if table is not None:
            return table[r, c]
        out = np.empty(r.shape)
        if r.size == 0:
            return out
        pos = links.position(cell[r], c)
        ok = pos >= 0
        out[ok] = cand_need[r[ok], pos[ok]]
        if not ok.all():
            store["asked"] = store.get("asked", 0) + int((~ok).sum())
            if 0 < k * B <= NEED_TABLE_LAZY_ENTRIES and store["asked"] >= NEED_TABLE_LAZY_TRIGGER * k * B:
                # the non-candidate lookups (the PT moves' full scans, every round of a polish) have asked
                # for as many entries as the table holds: keep every value from now on
                store["table"] = full_table()
                out[~ok] = store["table"][r[~ok], c[~ok]]
            else:
                out[~ok] = need_fn(r[~ok], c[~ok])
        return out

    return Twins(
        positions_m=positions, type_index=types, cell=cell, intensity_hz=mu, tx_power_w=zeta,
        data_size_bits=d_bits, bandwidth_hz=w_hz, complexity_cycles_per_bit=gamma,
        rate_bps=PairLookup((k, B), rate_fn, "twins.rate_bps"),
        upload_time_s=PairLookup((k, B), upload_fn, "twins.upload_time_s"),
        min_compute_hz=PairLookup((k, B), need_lookup, "twins.min_compute_hz",
                                  rows_fn=lambda r: store["table"][r] if store["table"] is not None else None),
        cand_need_hz=cand_need, need_lb_hz=need_lb,
    )


#: Sparse problems with at most this many twins x servers keep every twin's line-9 compute at every server
#: (8 bytes each) from the build; larger ones compute the non-candidate entries on demand ...
NEED_TABLE_ENTRIES = 4_000_000
#: ... until the lookups have asked for NEED_TABLE_LAZY_TRIGGER x K x B non-candidate entries in all (the
#: full scans of the PT moves, repeated every round of a polish; a single certificate asks for fewer): up
#: to this many twins x servers (512 MB), the whole table is then computed once and kept (the same values).
NEED_TABLE_LAZY_ENTRIES = 64_000_000
NEED_TABLE_LAZY_TRIGGER = 1.0


#: ``build_problem``'s default: dense (cells x servers) arrays up to this many entries.
DENSE_MAX_ENTRIES = 4_000_000


def build_problem(scenario: Scenario, *, candidates: int | None = None, twins_from: Problem | None = None) -> Problem:
    """Build all arrays of a scenario (deterministic for a given ``scenario.seed``).

    ``candidates``: with more servers than that, each cell keeps only its
    ``candidates`` nearest servers (exact: see :mod:`edgeverse.links`) and no
    ``(cells x servers)`` array is built; with at most that many, the dense
    arrays are built as always.  Default (None): dense while the problem has at
    most :data:`DENSE_MAX_ENTRIES` cells x servers (one such float64 array is then
    at most 32 MB, and a dense scan is faster than bounds and fallbacks: on the
    Lyon example 30 times for damped Algorithm 1), else
    :data:`edgeverse.links.DEFAULT_CANDIDATES` candidates.

    ``twins_from`` (sparse builds): a problem of the same scenario on another grid
    whose DTs are these (the multilevel solver's coarse levels); its DT link
    lookups are shared instead of being built again.

    Running out of memory is a clear error naming ``zone.cells``, not numpy's.
    """
    try:
        return _build_problem(scenario, candidates=candidates, twins_from=twins_from)
    except MemoryError:
        import math

        n = math.prod(int(c) for c in scenario.zone.cells)
        k = scenario.twins.count
        raise EdgeverseError(
            f"zone.cells: {list(scenario.zone.cells)} = {n:,} cells x {scenario.servers.n} servers with "
            f"{'twins.count ' + format(k, ',') if k is not None else 'the DTs of the twin file'} do not fit in this machine's memory (about 0.7 kB per cell with "
            "16 candidate servers: 2.5 GB for 4e6 cells; and about 3.3 kB per DT over a solve: 1.6 GB for 3e5, "
            "measured); use coarser cells or fewer DTs") from None


def _build_problem(scenario: Scenario, *, candidates: int | None = None, twins_from: Problem | None = None) -> Problem:
    """The body of :func:`build_problem`."""
    grid = Grid.from_zone(scenario.zone)
    srv = scenario.servers
    b = srv.n
    xy = np.asarray(srv.positions_m, dtype=float)
    h_bs = per_server(srv.antenna_height_m, b)
    n0 = dbm_to_watt(per_server(srv.noise_psd_dbm_per_hz, b))
    w_s = per_server(srv.sensor_bandwidth_hz, b)
    mass = density_masses(scenario.sensing.density, grid, scenario.base_dir)
    sens = scenario.sensing
    noise = n0 * w_s if scenario.model.sensor_noise_bandwidth == "server_band" else n0.copy()
    model = LinkModel(scenario.channel.model, scenario.channel.carrier_hz, xy, h_bs, w_s, n0, noise,
                      float(sens.tx_power_w), float(sens.data_density_bps_per_m3),
                      scenario.model.twin_noise_bandwidth == "twin_band")
    points = CellPoints(grid, sens.height_m)
    if candidates is None:
        small = max(grid.n_cells, scenario.twins.count or 0) * b <= DENSE_MAX_ENTRIES
        k = b if small else DEFAULT_CANDIDATES
    else:
        k = int(candidates)
    if k < 1:
        raise ValueError(f"candidates: got {k}; must be at least 1")
    cache: dict = {}
    if b <= k:
        centers = grid.centers_m()
        gain = link_gain(scenario, centers, _heights(centers, grid, sens.height_m), xy, h_bs)
        snr = physics.snr(gain, sens.tx_power_w, noise[None, :])
        se = physics.spectral_efficiency_bps_per_hz(snr)
        comm = physics.sensing_cost_s_per_bit(sens.data_density_bps_per_m3, w_s[None, :], se, 0.0, 1.0)
        links = dense_links(comm, model, points)
    else:
        links, best_snr, nearest = build_links(model, points, grid.n_cells, k)
        cache["best_snr"], cache["nearest"] = best_snr, nearest
        shape = (grid.n_cells, b)
        gain = PairLookup(shape, links.gain_pairs, "sensor_gain", threads=True)
        snr = PairLookup(shape, links.snr_pairs, "sensor_snr", threads=True)
        comm = PairLookup(shape, links.comm_at, "comm_cost_s_per_bit")
    if twins_from is not None and not links.dense and twins_from.sparse:
        twins = regrid_twins(scenario, twins_from.twins, grid, links, n0)
    else:
        twins = build_twins(scenario, grid, xy, h_bs, n0, np.random.default_rng(scenario.seed), links)
    names = tuple(srv.names) if srv.names else tuple(f"S{i + 1}" for i in range(b))
    proj = scenario.projection()
    lonlat = None
    if proj is not None:
        lon, lat = proj.to_lonlat(xy[:, 0], xy[:, 1])
        lonlat = np.column_stack([lon, lat])
    return Problem(
        scenario=scenario, grid=grid, cell_mass=mass, server_positions_m=xy, server_height_m=h_bs,
        compute_hz=per_server(srv.compute_hz, b), sensor_bandwidth_hz=w_s, noise_psd_w_per_hz=n0,
        sensor_noise_w=noise, sensor_gain=gain, sensor_snr=snr, comm_cost_s_per_bit=comm, twins=twins,
        server_names=names, projection=proj, server_lonlat_deg=lonlat, links=links, cache=cache,
    )
