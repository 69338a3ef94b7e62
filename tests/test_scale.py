"""City-scale paths on small cases: candidates, bounds, fallbacks and kernels give the dense answers."""

from __future__ import annotations

import numpy as np
import pytest

from edgeverse import kernels
from edgeverse.build import build_problem
from edgeverse.evaluate import allocate, allocate_reference, evaluate_partition
from edgeverse.links import Envelope
from edgeverse.local_search import (_plain_deltas, _pt_best, _pt_cells, _pt_moves, _skip_mask, _state, certificate,
                                    polish, polish_reference)
from edgeverse.methods import METHODS, map_14, map_14_reference
from edgeverse.solution import solve
from edgeverse.synthetic import city_scenario


@pytest.fixture(scope="module")
def pair():
    """The same small city built dense (every server a candidate) and sparse (6 of 20 candidates)."""
    scn = city_scenario(36, 20, 90, side_m=6000.0, seed=2)
    return build_problem(scn, candidates=20), build_problem(scn, candidates=6)


@pytest.fixture(params=[True, False], ids=["numba", "numpy"])
def both_paths(request):
    if request.param and not kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    prev = kernels.use_numba(request.param)
    yield request.param
    kernels.use_numba(prev)


def test_default_build_is_dense_while_small(monkeypatch):
    """Default candidates: dense up to DENSE_MAX_ENTRIES cells x servers (and twins x servers), sparse above."""
    import edgeverse.build as build

    scn = city_scenario(36, 20, 90, side_m=6000.0, seed=2)
    p = build_problem(scn)
    assert not p.sparse and p.links.k == 20
    monkeypatch.setattr(build, "DENSE_MAX_ENTRIES", 36 * 36 * 20 - 1)
    q = build_problem(scn)
    assert q.sparse and q.links.k == 16
    monkeypatch.setattr(build, "DENSE_MAX_ENTRIES", 36 * 36 * 20)
    assert not build_problem(scn).sparse
    assert build_problem(scn.with_overrides({"twins.count": 36 * 36 + 1})).sparse  # twins x servers counts too
    # both forms give the same answers
    for m in ("snr", "paper", "paper-damped"):
        a, b = METHODS[m](p), METHODS[m](q)
        assert np.array_equal(a.cell_server, b.cell_server), m


def test_sparse_build_is_the_dense_one_restricted(pair):
    dense, sparse = pair
    assert not dense.sparse and sparse.sparse and sparse.links.k == 6
    C = np.asarray(dense.comm_cost_s_per_bit)
    S = sparse.links.server
    assert np.array_equal(np.sort(S, axis=1), S)
    assert np.array_equal(C[np.arange(dense.n_cells)[:, None], S], sparse.links.comm)
    # the stored lower bounds hold for every non-candidate server
    for i in range(0, dense.n_cells, 7):
        nc = np.setdiff1d(np.arange(20), S[i])
        assert np.all(C[i, nc] >= sparse.links.lb[i, sparse.links.cls[nc]])
    # tile bounds too
    tiles = sparse.links.tile_of
    for i in range(0, dense.n_cells, 11):
        row = sparse.links.tile_clb[tiles[i]]
        fin = np.isfinite(row)
        assert np.all(C[i, fin] >= row[fin])
        assert set(np.flatnonzero(~fin)) <= set(S[i].tolist())
    assert np.array_equal(dense.best_snr_server(), sparse.best_snr_server())
    assert np.array_equal(dense.nearest_server(), sparse.nearest_server())
    for name in ("sensor_gain", "sensor_snr", "comm_cost_s_per_bit"):
        assert np.array_equal(np.asarray(getattr(dense, name)), np.asarray(getattr(sparse, name)))
    for name in ("rate_bps", "upload_time_s", "min_compute_hz"):
        assert np.array_equal(np.asarray(getattr(dense.twins, name)), np.asarray(getattr(sparse.twins, name)))
    # DT needs beyond the candidates are bounded below
    N = dense.twins.min_compute_hz
    St = S[sparse.twins.cell]
    for t in range(sparse.twins.n):
        nc = np.setdiff1d(np.arange(20), St[t])
        assert np.all(N[t, nc] >= sparse.twins.need_lb_hz[t, sparse.links.cls[nc]])


@pytest.mark.parametrize("method", ["snr", "voronoi", "paper", "paper-damped"])
def test_methods_sparse_equal_dense(pair, both_paths, method):
    dense, sparse = pair
    a = solve(dense, method)
    b = solve(sparse, method)
    assert np.array_equal(a.cell_server, b.cell_server)
    assert b.objective_ms == pytest.approx(a.objective_ms, rel=1e-12)
    assert a.n_hosted == b.n_hosted
    assert a.extra["certificate"]["hosting_gain_available"] == b.extra["certificate"]["hosting_gain_available"]
    assert b.extra["certificate"]["max_single_move_decrease_ms"] == pytest.approx(
        a.extra["certificate"]["max_single_move_decrease_ms"], rel=1e-9, abs=1e-15)


def test_map14_fallback_triggers_and_stays_exact(pair, both_paths):
    """Very unequal masses: far servers win map (14), the candidate bound fails and the full scan decides."""
    dense, sparse = pair
    rng = np.random.default_rng(0)
    alpha = rng.dirichlet(np.ones(20) * 0.3)
    alpha[3] = 1e-6  # one nearly empty server beats everything far away
    psi = dense.compute_hz * rng.uniform(0.5, 1.0, 20)
    ref = map_14_reference(dense, alpha, psi)
    assert np.array_equal(map_14(dense, alpha, psi), ref)
    got = map_14(sparse, alpha, psi)
    assert kernels.argmin_affine.last_fallback > 0
    assert np.array_equal(got, ref)
    # the winners really are outside the candidates for some cells
    assert np.any(sparse.links.position(np.arange(sparse.n_cells), ref) < 0)
    # alpha_b = 0: the paper's collapse onto the lowest empty server
    a0 = alpha.copy()
    a0[[5, 9]] = 0.0
    assert np.array_equal(map_14(sparse, a0, psi), map_14_reference(dense, a0, psi))


def test_single_moves_sparse_equal_dense(pair, both_paths):
    dense, sparse = pair
    rng = np.random.default_rng(1)
    fallbacks = 0
    for cs in (METHODS["snr"](dense).cell_server, rng.integers(0, 20, dense.n_cells), np.zeros(dense.n_cells, int)):
        std, sts = _state(dense, cs), _state(sparse, cs)
        assert std.objective == sts.objective
        ptc = _pt_cells(dense)
        skip = _skip_mask(dense, ptc)
        d = _plain_deltas(dense, std)
        d[np.arange(dense.n_cells), cs] = np.inf
        d[skip] = np.inf
        for prob, st in ((dense, std), (sparse, sts)):
            bj, bd, _ = kernels.best_moves(prob.links, st.cs, st.c_own, prob.cell_mass, st.alpha, st.comm,
                                           st.render, st.t, float(prob.time_scale), skip, np.inf)
            ok = ~skip
            assert np.array_equal(bd[ok], d.min(axis=1)[ok])
            assert np.array_equal(bj[ok], d.argmin(axis=1)[ok])
        # PT cells: admission-exact, bit for bit the dense loops
        dh, dj = _pt_moves(dense, std, ptc.cells, ptc.groups())
        r = np.arange(ptc.size)
        dh[r, cs[ptc.cells]] = -1
        dj[r, cs[ptc.cells]] = np.inf
        zero = np.where(dh == 0, dj, np.inf).min(axis=1)
        best = np.where(dh == dh.max(axis=1)[:, None], dj, np.inf).min(axis=1)
        for prob, st in ((dense, std), (sparse, sts)):
            pt = _pt_best(prob, st, _pt_cells(prob), 0.0)
            fallbacks += pt.fallback
            assert np.array_equal(pt.dh, dh.max(axis=1))
            if prob is dense:
                assert np.array_equal(pt.zero_dj, zero) and np.array_equal(pt.dj, best)
            else:  # exact wherever a move improves (the cutoff, 0 here); never below 0 elsewhere
                neg = zero < 0
                assert np.array_equal(pt.zero_dj[neg], zero[neg]) and np.all(pt.zero_dj[~neg] >= 0)
                sel = (dh.max(axis=1) > 0) | ((dh.max(axis=1) == 0) & (best < 0))  # moves losing DTs are never used
                assert np.array_equal(pt.dj[sel], best[sel])
        assert certificate(dense, cs) == certificate(sparse, cs)
    assert fallbacks > 0  # the pruned full scans of the PT cells were exercised


def test_polish_sparse_equal_dense_and_reference(pair, both_paths):
    dense, sparse = pair
    cs0 = METHODS["voronoi"](dense).cell_server
    ref = polish_reference(dense, cs0)
    a = polish(dense, cs0, mode="batch")
    b = polish(sparse, cs0, mode="batch")
    assert np.array_equal(ref[0], a[0]) and np.array_equal(a[0], b[0])
    assert ref[1] == a[1] == b[1]
    assert [h["objective_ms"] for h in ref[2]] == [h["objective_ms"] for h in a[2]]


def test_sweep_polish_reaches_a_certified_local_optimum(pair, both_paths):
    dense, sparse = pair
    cs0 = METHODS["snr"](sparse).cell_server
    start = evaluate_partition(sparse, cs0)[1]
    cs, moves, hist = polish(sparse, cs0, mode="sweep", pt_batch=True)
    ev = evaluate_partition(sparse, cs)[1]
    assert moves > 0
    assert (ev.total_hosted, -ev.objective_ms) >= (start.total_hosted, -start.objective_ms)
    cert = certificate(sparse, cs)
    assert cert.max_decrease_rel <= 1e-9 and cert.hosting_gain_available == 0
    assert certificate(dense, cs) == cert
    keys = [(-h["n_hosted"], h["objective_ms"]) for h in hist]
    assert all(b <= a for a, b in zip(keys, keys[1:]))


def test_allocate_vectorised_equals_loop(pair):
    dense, _ = pair
    rng = np.random.default_rng(3)
    for trial in range(5):
        cs = rng.integers(0, dense.n_servers, dense.n_cells)
        if trial == 0:
            cs[:] = 0  # one server holds every DT: the budget binds
        a, b = allocate(dense, cs), allocate_reference(dense, cs)
        for f in ("twin_server", "hosted", "phi_hz", "psi_hz", "reason"):
            assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_envelope_is_a_lower_bound():
    rng = np.random.default_rng(4)
    for _ in range(50):
        B = int(rng.integers(1, 30))
        a = rng.uniform(0, 3, B) * (rng.random(B) > 0.2)
        d = rng.normal(0, 5, B)
        if rng.random() < 0.3:
            d[rng.integers(0, B)] = np.inf
        x = np.concatenate([rng.uniform(0, 20, 200), [0.0, np.inf]])
        with np.errstate(invalid="ignore"):
            true = np.where(np.isinf(x)[:, None], np.where(a[None, :] > 0, np.inf, d[None, :]),
                            a[None, :] * x[:, None] + d[None, :]).min(axis=1)
        lo = Envelope(a, d).lower(x)
        assert np.all(lo <= true)
        fin = np.isfinite(true)
        assert np.allclose(lo[fin], true[fin], rtol=1e-7, atol=1e-6)


def test_optimal_multilevel_small(pair, monkeypatch):
    dense, sparse = pair
    sol = solve(sparse, "optimal", strategy="multilevel")
    assert sol.extra["strategy"] == "multilevel"
    for m in ("snr", "voronoi"):
        other = solve(sparse, m, certify=False)
        assert (sol.n_hosted, -sol.objective_ms) >= (other.n_hosted, -other.objective_ms * (1 + 1e-12))
    cert = sol.extra["certificate"]
    assert cert == certificate(dense, sol.cell_server).to_dict()
    # wall-clock times go to timing.json only: two solves write the same solution.json
    again = solve(sparse, "optimal", strategy="multilevel")
    assert sol.to_dict() == again.to_dict()
    assert "level_seconds" not in sol.to_dict()["extra"]
    assert not any("seconds" in h for h in sol.to_dict()["history"])
    # the starts on the coarsest level: SNR, Voronoi (and damped Algorithm 1 when that level is dense)
    assert sol.extra["n_starts"] == sum(h["phase"].startswith("start (") for h in sol.history) in (2, 3)
    # the multi-start options are refused, not ignored; polish_result reaches the multilevel search
    from edgeverse.errors import EdgeverseError

    for opt_kw in ({"n_starts": 3}, {"polish_mode": "batch"}, {"pt_batch": False}, {"direct": False}):
        with pytest.raises(EdgeverseError, match=r"apply to the multi-start strategy only.*strategy='multistart'"):
            solve(sparse, "optimal", strategy="multilevel", **opt_kw)
    raw = solve(sparse, "optimal", strategy="multilevel", polish_result=False)
    assert raw.extra["polish_moves"] < sol.extra["polish_moves"]
    levels = sol.timing()["level_seconds"]
    assert [lv["cells"] for lv in levels] == sorted(lv["cells"] for lv in levels) and levels[-1]["level"] == 0
    assert all(lv["seconds"] >= 0 for lv in levels)
    # a coarse level has the same DTs and reads the full problem's DT lookups (the same values)
    import edgeverse.optimal as opt

    monkeypatch.setattr(opt, "COARSE_OT_ENTRIES", 0)  # the coarse level stays sparse
    coarse = opt._coarsen(sparse, 2)
    assert coarse.n_cells == 18 * 18 and coarse.sparse and coarse.twins.min_compute_hz is sparse.twins.min_compute_hz
    assert np.isclose(coarse.cell_mass.sum(), 1.0) and np.array_equal(coarse.twins.positions_m, sparse.twins.positions_m)
    # its static answers are kept from the build (no dense fallback scan of cells x servers)
    assert {"best_snr", "nearest"} <= set(coarse.cache)
    ref = build_problem(coarse.scenario, candidates=20)
    assert np.array_equal(coarse.best_snr_server(), ref.best_snr_server())
    assert np.array_equal(coarse.nearest_server(), ref.nearest_server())


def test_pt_moves_prefix_sum_mode_matches_walks(pair, monkeypatch):
    """Servers with many DTs use prefix sums instead of walks: the same hosting changes, objective to rounding."""
    import edgeverse.local_search as ls

    dense, sparse = pair
    cs = METHODS["voronoi"](dense).cell_server
    for prob in (dense, sparse):
        st = _state(prob, cs)
        exact = _pt_best(prob, st, _pt_cells(prob), 0.0)
        monkeypatch.setattr(ls, "EXACT_MEMBERS", 0)
        fast = _pt_best(prob, st, _pt_cells(prob), 0.0)
        monkeypatch.setattr(ls, "EXACT_MEMBERS", 128)
        assert np.array_equal(exact.dh, fast.dh)
        fin = np.isfinite(exact.zero_dj)
        assert np.array_equal(fin, np.isfinite(fast.zero_dj))
        assert np.allclose(exact.zero_dj[fin], fast.zero_dj[fin], rtol=1e-9, atol=1e-18)


# Results of the dense code before the city-scale work (commit 4bbf005), bit for bit: the fast paths
# (vectorised allocation, kernels, cached link terms, admission-exact PT moves) must not change them.
GOLDEN = {
    "snr": (25.52613699491349, {"max_single_move_decrease_ms": 0.7204329429469556,
                                "max_single_move_decrease_rel": 0.02822334390395667,
                                "hosting_gain_available": 0, "best_move": [1024, 2]}, 11.402582610791981, 10037),
    "paper": (541.7302339603426, {"max_single_move_decrease_ms": 298.73210007054485,
                                  "max_single_move_decrease_rel": 0.5514407011893175,
                                  "hosting_gain_available": 1, "best_move": [1388, 2]}, 11.402591022507563, 19064),
    "paper-damped": (11.519907223186669, {"max_single_move_decrease_ms": 0.025319469506503763,
                                          "max_single_move_decrease_rel": 0.0021978883176716987,
                                          "hosting_gain_available": 0, "best_move": [4152, 2]},
                     11.402586484151694, 560),
}


@pytest.mark.parametrize("method", sorted(GOLDEN))
def test_small_results_unchanged(method, both_paths):
    from edgeverse import get_preset

    p = build_problem(get_preset("paper-calibrated"))
    obj, cert, polished, moves = GOLDEN[method]
    sol = solve(p, method)
    assert sol.objective_ms == obj
    got = sol.extra["certificate"]
    # the certificate is a derived number whose summation order depends on which cells are scanned
    assert got["best_move"] == cert["best_move"]
    assert got["hosting_gain_available"] == cert["hosting_gain_available"]
    for key in ("max_single_move_decrease_ms", "max_single_move_decrease_rel"):
        assert got[key] == pytest.approx(cert[key], rel=1e-12, abs=1e-15)
    cs, n_moves, hist = polish(p, sol.cell_server)
    assert hist[-1]["objective_ms"] == polished and n_moves == moves


def test_candidate_lookup_kernels_equal_numpy(pair):
    """comm_at / position through the numba lookup kernels equal the numpy indexing (large index arrays)."""
    _, sparse = pair
    rng = np.random.default_rng(5)
    cells = rng.integers(0, sparse.n_cells, 20_000)
    servers = rng.integers(0, sparse.n_servers, 20_000)
    prev = kernels.use_numba(False)
    try:
        ref_pos = sparse.links.position(cells, servers)
        ref_val = sparse.links.comm_at(cells, servers)
    finally:
        kernels.use_numba(prev)
    assert np.array_equal(sparse.links.position(cells, servers), ref_pos)
    assert np.array_equal(sparse.links.comm_at(cells, servers), ref_val)
    assert (ref_pos >= 0).any() and (ref_pos < 0).any()


def test_certificate_global_min_equals_full_scan(pair, both_paths):
    """The certificate scans only cells whose bound reaches the smallest candidate change: same minimum, same cell."""
    dense, sparse = pair
    rng = np.random.default_rng(3)
    ptc = _pt_cells(sparse)
    skip = _skip_mask(sparse, ptc)
    for cs in (METHODS["snr"](sparse).cell_server, rng.integers(0, 20, sparse.n_cells),
               np.zeros(sparse.n_cells, dtype=int)):
        st = _state(sparse, cs)
        full = kernels.best_moves(sparse.links, st.cs, st.c_own, sparse.cell_mass, st.alpha, st.comm, st.render,
                                  st.t, float(sparse.time_scale), skip, np.inf)
        fast = kernels.best_moves(sparse.links, st.cs, st.c_own, sparse.cell_mass, st.alpha, st.comm, st.render,
                                  st.t, float(sparse.time_scale), skip, 0.0, global_min=True)
        i, j = int(np.argmin(full[1])), int(np.argmin(fast[1]))
        assert i == j and full[1][i] == fast[1][j] and full[0][i] == fast[0][j]
        assert np.all(fast[1][~skip] >= full[1][~skip])
        assert certificate(dense, cs) == certificate(sparse, cs)


@pytest.mark.parametrize("passes", [0, 3, 10])
def test_sweep_passes_and_hosting_first_certified(pair, both_paths, passes):
    """Boundary passes and hosting-first PT moves: a certified single-move local optimum, never worse than the start."""
    dense, sparse = pair
    for prob in (dense, sparse):
        cs0 = METHODS["snr"](prob).cell_server
        start = evaluate_partition(prob, cs0)[1]
        cs, moves, hist = polish(prob, cs0, mode="sweep", pt_batch=True, passes=passes, hosting_first=True)
        ev = evaluate_partition(prob, cs)[1]
        assert (ev.total_hosted, -ev.objective_ms) >= (start.total_hosted, -start.objective_ms)
        cert = certificate(prob, cs)
        assert cert.max_decrease_rel <= 1e-9 and cert.hosting_gain_available == 0
        keys = [(-h["n_hosted"], h["objective_ms"]) for h in hist]
        assert all(b <= a for a, b in zip(keys, keys[1:]))
    # from their own SNR partitions (equal here), both forms end with no hosting gain left
    a = polish(dense, METHODS["snr"](dense).cell_server, mode="sweep", pt_batch=True, passes=passes, hosting_first=True)
    b = polish(sparse, METHODS["snr"](sparse).cell_server, mode="sweep", pt_batch=True, passes=passes,
               hosting_first=True)
    assert certificate(dense, a[0]).hosting_gain_available == certificate(dense, b[0]).hosting_gain_available == 0


def test_need_table_equals_on_demand(monkeypatch):
    """Sparse twins keep every line-9 compute when twins x servers is small: the same values as on demand."""
    import edgeverse.build as build

    scn = city_scenario(36, 20, 90, side_m=6000.0, seed=2)
    with_table = build_problem(scn, candidates=6)
    monkeypatch.setattr(build, "NEED_TABLE_ENTRIES", 0)
    on_demand = build_problem(scn, candidates=6)
    k, b = with_table.twins.n, with_table.n_servers
    r, c = np.repeat(np.arange(k), b), np.tile(np.arange(b), k)
    a = with_table.twins.min_compute_hz[r, c]
    assert np.array_equal(a, on_demand.twins.min_compute_hz[r, c], equal_nan=True)
    assert np.isfinite(a).any() and np.isinf(a).any()
    # the table built on demand (many non-candidate lookups) holds the same values
    monkeypatch.setattr(build, "NEED_TABLE_LAZY_ENTRIES", 0)
    never = build_problem(scn, candidates=6)
    monkeypatch.setattr(build, "NEED_TABLE_LAZY_ENTRIES", 10**9)
    lazy = build_problem(scn, candidates=6)
    few = np.array([0]), np.array([int(np.setdiff1d(np.arange(b), lazy.links.server[lazy.twins.cell[0]])[0])])
    assert np.array_equal(lazy.twins.min_compute_hz[few], never.twins.min_compute_hz[few], equal_nan=True)
    assert np.array_equal(lazy.twins.min_compute_hz[r, c], a, equal_nan=True)   # builds the table
    assert np.array_equal(lazy.twins.min_compute_hz[r[::7], c[::7]], a[::7], equal_nan=True)  # reads it
    assert np.array_equal(never.twins.min_compute_hz[r, c], a, equal_nan=True)


def test_pt_moves_in_chunks_equal_one_pass(pair, monkeypatch, both_paths):
    """PT moves evaluated in row chunks (bounded memory) equal one pass, bit for bit, on every path:
    dense, sparse with servers out of spare compute, and the full-scan fallback (a collapsed partition
    with every DT at one server sends every PT cell to it)."""
    import edgeverse.local_search as ls
    from edgeverse.local_search import _rows_twins, _unsafe_servers

    dense, sparse = pair
    rng = np.random.default_rng(5)
    cases = [METHODS["voronoi"](dense).cell_server, rng.integers(0, 20, dense.n_cells), np.zeros(dense.n_cells, int)]
    seen_unsafe = seen_fallback = False
    for cs in cases:
        for prob in (dense, sparse):
            st = _state(prob, cs)
            ptc = _pt_cells(prob)
            one = _pt_best(prob, st, ptc, 0.0)
            monkeypatch.setattr(ls, "CHUNK_ENTRIES", 64)  # 3 rows of 20 servers per chunk
            many = _pt_best(prob, st, ptc, 0.0)
            monkeypatch.setattr(ls, "CHUNK_ENTRIES", 1 << 20)
            # the PT cells' comm table: never kept, or kept only once the scans have asked for R rows
            variants = []
            for entries, eager in ((0, 0), (10**9, 0)):
                prob.cache.pop("pt_comm", None), prob.cache.pop("pt_comm_asked", None)
                monkeypatch.setattr(ls, "PT_COMM_TABLE_ENTRIES", entries)
                monkeypatch.setattr(ls, "PT_COMM_TABLE_EAGER_ENTRIES", eager)
                variants += [_pt_best(prob, st, ptc, 0.0) for _ in range(3)]
            monkeypatch.undo()
            prob.cache.pop("pt_comm", None), prob.cache.pop("pt_comm_asked", None)
            for other in [many] + variants:
                for f in ("dh", "dj", "j", "first_j", "zero_dj", "zero_j"):
                    assert np.array_equal(getattr(one, f), getattr(other, f)), f
                assert one.fallback == other.fallback
            if prob.sparse:
                seen_unsafe |= _unsafe_servers(prob, st, ptc).size > 0
                seen_fallback |= one.fallback > 0
    assert seen_unsafe and seen_fallback
    assert _rows_twins(np.array([0, 2, 3, 6]), np.array([2, 0])).tolist() == [3, 4, 5, 0, 1]


def test_tile_lower_kernel_equals_numpy(pair):
    """The per-tile bound: the numba kernel gives numpy's values (NaN products, infinite entries, ties)."""
    if not kernels.HAVE_NUMBA:
        pytest.skip("numba not installed")
    _, sparse = pair
    links = sparse.links
    assert links.tile_clb is not None and np.isinf(links.tile_clb).any()
    rng = np.random.default_rng(3)
    B = sparse.n_servers
    for slope, icpt in ((rng.random(B), rng.random(B)), (np.where(rng.random(B) < 0.3, 0.0, rng.random(B)),
                                                          np.where(rng.random(B) < 0.3, np.inf, rng.random(B)))):
        for nan_zero in (False, True):
            prev = kernels.use_numba(True)
            a = links.tile_lower(slope, icpt, nan_zero)
            kernels.use_numba(False)
            b = links.tile_lower(slope, icpt, nan_zero)
            kernels.use_numba(prev)
            assert np.array_equal(a, b, equal_nan=True)
    # a zero slope times an infinite bound is NaN: 0 + icpt with nan_zero
    clb = links.tile_clb
    links.tile_clb = np.where(np.isfinite(clb), np.inf, clb)
    links.tile_clb[:, 0] = np.inf
    try:
        prev = kernels.use_numba(True)
        a = links.tile_lower(np.zeros(B), np.ones(B), True)
        kernels.use_numba(False)
        assert np.array_equal(a, links.tile_lower(np.zeros(B), np.ones(B), True))
        kernels.use_numba(prev)
    finally:
        links.tile_clb = clb


def test_pair_lookups_in_threaded_chunks_equal_one_call(pair, monkeypatch):
    """Large sensor lookups of a sparse problem run in chunks on threads: the same values as one call."""
    import edgeverse.links as lk

    dense, sparse = pair
    n, B = sparse.n_cells, sparse.n_servers
    r, c = np.repeat(np.arange(n), B), np.tile(np.arange(B), n)
    one = sparse.sensor_snr[r, c]
    monkeypatch.setattr(lk, "CHUNK_ENTRIES", 1000)
    many = sparse.sensor_snr[r, c]
    assert np.array_equal(one, many) and np.array_equal(sparse.sensor_gain[r, c], np.asarray(dense.sensor_gain).ravel())
    assert np.array_equal(many, np.asarray(dense.sensor_snr).ravel())


def test_far_comm_columns_equal_geometry_and_stay_bounded(pair, both_paths, monkeypatch):
    """A collapsed partition (every cell at one far server) reads whole kept columns: the same values as the
    geometry, at most COLUMN_CACHE_COLUMNS of them kept; small requests never build a column."""
    import edgeverse.links as links_mod

    dense, sparse = pair
    links = sparse.links
    monkeypatch.setattr(links_mod, "COLUMN_CACHE_COLUMNS", 2)
    links._columns.clear()
    n = links.n
    cells = np.arange(n)
    rng = np.random.default_rng(0)
    few = rng.choice(n, 10, replace=False)
    links.comm_at(few, np.full(10, 3))
    assert not links._columns  # 10 cells: geometry for those only
    for b in (0, 7, 19):
        got = links.comm_at(cells, np.full(n, b))
        np.testing.assert_array_equal(got, dense.links.comm[:, b])
        far = links.position(cells, np.full(n, b)) < 0
        np.testing.assert_array_equal(got[far], links.comm_pairs(cells[far], np.full(int(far.sum()), b)))
    assert list(links._columns) == [7, 19]  # the oldest (0) dropped
    # a mixed request: the kept columns serve their servers, the rest comes from the geometry
    srv = rng.integers(0, links.n_servers, n)
    np.testing.assert_array_equal(links.comm_at(cells, srv), dense.links.comm[cells, srv])
    links._columns.clear()


@pytest.fixture(scope="module")
def tight_pair():
    """``pair`` with 0.15 of its compute: several servers cannot host all their DTs (exact list walks)."""
    scn = city_scenario(36, 20, 90, side_m=6000.0, seed=2)
    scn = scn.with_overrides({"servers.compute_hz": (np.asarray(scn.servers.compute_hz) * 0.15).tolist()})
    return build_problem(scn, candidates=20), build_problem(scn, candidates=6)


@pytest.mark.parametrize("start", ["snr", "voronoi", "paper"])
def test_pt_sweep_bookkeeping_equals_the_state(tight_pair, both_paths, start):
    """The sweep's own per-server state after moving PT cells (hosting by admission walks, psi, masses, T_b)
    is the state recomputed from its partition, and the sweep never makes the (hosting, objective) key worse."""
    from edgeverse.local_search import _run_sweep, _SweepPT

    moved_pt = saturated = 0
    for prob in tight_pair:
        ptc = _pt_cells(prob)
        st = _state(prob, METHODS[start](prob).cell_server)
        fin = np.bincount(st.twin_server, weights=np.isfinite(st.need), minlength=prob.n_servers)
        saturated += int((st.hosted != fin).sum())
        sw = _SweepPT.build(prob, ptc)
        for targets in (sw.no_targets(), sw.targets(prob, _pt_best(prob, st, ptc, 0.0))):
            none = np.full(prob.n_cells, -1, dtype=np.int64)
            cs, c_own, k, out = _run_sweep(prob, st, sw, np.zeros(0, dtype=np.int64), none, np.zeros(prob.n_cells),
                                           targets, rel_tol=1e-12, passes=3, skip=_skip_mask(prob, ptc))
            new = _state(prob, cs)
            moved_pt += int((cs[ptc.cells] != st.cs[ptc.cells]).sum())
            assert k > 0
            assert np.array_equal(out["hosted"], new.hosted)
            np.testing.assert_allclose(out["psi"], new.psi, rtol=1e-12)
            np.testing.assert_allclose(out["alpha"], new.alpha, rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(c_own, new.c_own, rtol=0)
            np.testing.assert_allclose(out["t"], new.t, rtol=1e-9)
            assert out["objective"] == pytest.approx(new.objective, rel=1e-9)
            assert (-int(new.hosted.sum()), new.objective) < (-int(st.hosted.sum()), st.objective)
    assert moved_pt > 0 and saturated > 0  # the test exercises PT moves and the exact walks


@pytest.mark.parametrize("pt_sweep", [False, True])
def test_polish_with_pt_sweep_certified(tight_pair, both_paths, pt_sweep):
    """With or without PT cells in the sweeps, the polish ends at a certified single-move local optimum,
    never worse than its start, for the dense and the sparse forms."""
    for prob in tight_pair:
        cs0 = METHODS["snr"](prob).cell_server
        start = evaluate_partition(prob, cs0)[1]
        cs, moves, hist = polish(prob, cs0, mode="sweep", pt_batch=True, passes=10, hosting_first=True,
                                 pt_sweep=pt_sweep)
        ev = evaluate_partition(prob, cs)[1]
        assert (ev.total_hosted, -ev.objective_ms) > (start.total_hosted, -start.objective_ms)
        cert = certificate(prob, cs)
        assert cert.max_decrease_rel <= 1e-9 and cert.hosting_gain_available == 0
        keys = [(-h["n_hosted"], h["objective_ms"]) for h in hist]
        assert all(b <= a for a, b in zip(keys, keys[1:]))


def test_server_disjoint_moves_add_up_exactly(tight_pair):
    """Hosting-increasing PT moves on disjoint server pairs: the batch's changes are the sum of the moves'."""
    from edgeverse.local_search import _server_disjoint

    prob = tight_pair[1]
    ptc = _pt_cells(prob)
    st = _state(prob, METHODS["paper-damped"](prob).cell_server)
    pt = _pt_best(prob, st, ptc, 0.0)
    order = np.flatnonzero(pt.dh > 0)
    sel = _server_disjoint(order[np.lexsort((pt.dj[order], -pt.dh[order]))], st.cs[ptc.cells], pt.j)
    assert sel.size == 7 and order.size == 17
    pairs = np.concatenate([st.cs[ptc.cells[sel]], pt.j[sel]])
    assert np.unique(pairs).size == pairs.size
    cs = st.cs.copy()
    cs[ptc.cells[sel]] = pt.j[sel]
    new = _state(prob, cs)
    assert int(new.hosted.sum()) - int(st.hosted.sum()) == int(pt.dh[sel].sum())
    assert new.objective - st.objective == pytest.approx(float(pt.dj[sel].sum()), rel=1e-9, abs=1e-15)


def test_level_builder_gives_the_sequential_chain(monkeypatch):
    """The coarsest level built first and the others on a background thread: the same levels and masses as
    building them one after the other, and the fine-to-coarse cell map equals cell_of of the centres."""
    import edgeverse.optimal as opt

    monkeypatch.setattr(opt, "COARSE_OT_ENTRIES", 500)
    monkeypatch.setattr(opt, "COARSE_CELLS_PER_SERVER", 4)
    prob = build_problem(city_scenario(50, 6, 40, side_m=3000.0, seed=3), candidates=3)
    assert opt._level_factors(prob) == [2, 4, 8]
    seq = opt._level_chain(prob)
    lb = opt._LevelBuilder(prob)
    par = lb.chain()
    assert lb.depth == 3 and [p.grid.shape for p in par] == [p.grid.shape for p in seq] == [
        (50, 50), (25, 25), (12, 12), (6, 6)]
    for a, b in zip(par, seq):
        assert np.array_equal(a.cell_mass, b.cell_mass) and np.isclose(a.cell_mass.sum(), 1.0)
    for fine, coarse in zip(par[:-1], par[1:]):
        assert np.array_equal(fine.grid.cells_of_centers_in(coarse.grid), coarse.grid.cell_of(fine.grid.centers_m()))
    # a coarse level whose grid does not nest (50 -> 12 -> 6): each fine cell takes its centre's coarse cell
    cs = np.random.default_rng(0).integers(0, 6, par[-1].n_cells)
    fine_cs = opt._prolong(par[-1], par[1], cs)
    holder = par[-1].grid.cell_of(par[1].grid.centers_m())
    expected = cs[holder]
    expected[par[1].twins.cell] = cs[par[-1].twins.cell]  # a PT cell: the server of its DTs' coarse cell
    assert np.array_equal(fine_cs, expected)
    assert (fine_cs != cs[holder]).any()  # some PT cells straddle two coarse cells


@pytest.mark.parametrize("args, kwargs, field", [
    ((10, 0, 10), {}, "servers"), ((10.5, 4, 10), {}, "cells"), ((10, 4, -1), {}, "twins"),
    ((10, 4, 10), {"seed": -1}, "seed"), ((10, 4, 10), {"cell_m": float("nan")}, "cell_m"),
    ((10, 4, 10), {"side_m": 0.0}, "side_m"), ((True, 4, 10), {}, "cells"),
])
def test_city_scenario_checks_its_arguments(args, kwargs, field):
    with pytest.raises(ValueError, match=f"city_scenario: {field} must be"):
        city_scenario(*args, **kwargs)


def test_pt_comm_table_in_threaded_chunks_equals_the_dense_comm(pair, monkeypatch):
    """The PT cells' comm table of a sparse problem is built in row chunks on threads: every row equals the
    dense problem's comm row of that cell (the same geometry), whatever the chunking."""
    import edgeverse.local_search as ls

    dense, sparse = pair
    ptc = _pt_cells(sparse)
    assert ptc.size > 4
    want = np.asarray(dense.links.comm)[ptc.cells]
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("EDGEVERSE_THREADS", threads)
        sparse.cache.pop("pt_comm", None)
        tab = ls._pt_comm_table(sparse, ptc)
        assert tab.shape == (ptc.size, sparse.n_servers)
        np.testing.assert_array_equal(tab, want)
    sparse.cache.pop("pt_comm", None)


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")
def test_plain_move_full_scans_numba_equal_numpy_and_dense():
    """Few cells per server (near-empty servers attract cells from anywhere): most cells need the full scan
    of :func:`kernels.best_moves`.  Its numba pair bound gives the numpy path's moves and the dense ones."""
    scn = city_scenario(24, 40, 30, side_m=3000.0, seed=3)
    dense, sparse = build_problem(scn, candidates=40), build_problem(scn, candidates=4)
    rng = np.random.default_rng(0)
    for cs in (METHODS["snr"](dense).cell_server, rng.integers(0, 40, dense.n_cells)):
        std, sts = _state(dense, cs), _state(sparse, cs)
        skip = _skip_mask(dense, _pt_cells(dense))
        d = _plain_deltas(dense, std)
        d[np.arange(dense.n_cells), cs] = np.inf
        ok = ~skip
        for cutoff in (np.inf, 0.0):
            got = []
            for use in (True, False):
                prev = kernels.use_numba(use)
                try:
                    got.append(kernels.best_moves(sparse.links, sts.cs, sts.c_own, sparse.cell_mass, sts.alpha,
                                                  sts.comm, sts.render, sts.t, float(sparse.time_scale), skip, cutoff))
                    fallback = kernels.best_moves.last_fallback
                finally:
                    kernels.use_numba(prev)
                assert fallback > dense.n_cells // 4
            for a, b in zip(got[0], got[1]):
                np.testing.assert_array_equal(a, b)
            bj, bd, _ = got[0]
            sel = ok & (d.min(axis=1) < cutoff)
            assert sel.sum() > 10
            np.testing.assert_array_equal(bd[sel], d.min(axis=1)[sel])
            np.testing.assert_array_equal(bj[sel], d.argmin(axis=1)[sel])


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("method", ["paper-damped", "optimal"])
def test_one_thread_kernels_equal_threaded(pair, monkeypatch, method):
    """Small loops run on the kernels' one-thread builds: the same results as the threaded builds."""
    dense, sparse = pair
    for prob in (dense, sparse):
        monkeypatch.setattr(kernels, "SERIAL_MAX_ENTRIES", 0)
        threaded = solve(prob, method)
        monkeypatch.setattr(kernels, "SERIAL_MAX_ENTRIES", 2 ** 62)
        one = solve(prob, method)
        assert np.array_equal(threaded.cell_server, one.cell_server)
        assert threaded.to_dict() == one.to_dict()


def test_nearest_server_equals_the_dense_argmin_ties_included():
    """Server by server, the nearest server is the dense argmin's, ties to the lowest index (servers placed
    symmetrically about cell centres)."""
    scn = city_scenario(36, 4, 20, side_m=3600.0, seed=2).with_overrides(
        {"servers.positions_m": [[1050.0, 1050.0], [2050.0, 1050.0], [1050.0, 2050.0], [2050.0, 2050.0]]})
    p = build_problem(scn)
    c = p.grid.centers_m()[:, :2]
    d2 = ((c[:, None, :] - p.server_positions_m[None, :, :2]) ** 2).sum(axis=2)
    ties = (d2 == d2.min(axis=1, keepdims=True)).sum(axis=1) > 1
    assert ties.sum() > 10
    assert np.array_equal(p.nearest_server(), np.argmin(d2, axis=1))
