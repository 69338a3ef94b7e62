"""Exact semi-discrete OT (inner solver of the ``optimal`` method)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgeverse.errors import ConvergenceWarning
from edgeverse.partition import laguerre_assign, plan_dense, solve_semidiscrete


def points_problem(n, B, seed=0):
    """Random cells and servers in the unit square, cost = distance."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2))
    sites = rng.random((B, 2))
    cost = np.sqrt(((xy[:, None, :] - sites[None, :, :]) ** 2).sum(-1))
    m = rng.random(n) + 0.1
    t = rng.random(B) + 0.5
    return m / m.sum(), cost, t / t.sum()


def grid_problem(side, B, seed=0):
    """A raster-ordered grid with a smooth density, cost = distance."""
    rng = np.random.default_rng(seed)
    c = (np.arange(side) + 0.5) / side
    X, Y = np.meshgrid(c, c)
    xy = np.c_[X.ravel(), Y.ravel()]
    dens = 0.2 + sum(np.exp(-((xy - p) ** 2).sum(1) / 0.02) for p in rng.random((4, 2)))
    sites = rng.random((B, 2))
    cost = np.sqrt(((xy[:, None, :] - sites[None, :, :]) ** 2).sum(-1))
    t = rng.random(B) + 0.5
    return dens / dens.sum(), cost, t / t.sum()


def check_plan(res, m, cost, t, *, mass_tol=1e-9):
    """Feasibility, reported masses/cost, and strong duality with the weights."""
    n, B = cost.shape
    X = plan_dense(res, n)
    assert np.all(np.isfinite(X)) and np.all(np.isfinite(res.weights))
    assert X.min() >= 0.0
    np.testing.assert_allclose(X.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    masses = m @ X
    np.testing.assert_allclose(masses, t, rtol=0, atol=mass_tol)
    np.testing.assert_allclose(res.masses, masses, rtol=0, atol=1e-12)
    assert res.mass_residual <= mass_tol
    primal = float(np.sum(m[:, None] * X * cost))
    assert res.cost == pytest.approx(primal, rel=1e-12, abs=1e-15)
    # the weights certify optimality: dual objective == primal cost
    dual = float(m @ (cost - res.weights).min(axis=1) + t @ res.weights)
    assert dual == pytest.approx(primal, rel=1e-9, abs=1e-12)
    # every positive-mass cell sits on a cheapest server (complementary slackness)
    red = cost - res.weights
    slack = red - red.min(axis=1, keepdims=True)
    on = X > 0
    scale = np.abs(cost).max() + np.abs(res.weights).max()
    assert slack[on & (m[:, None] > 0)].max(initial=0.0) <= 1e-11 * scale
    return X


@pytest.mark.parametrize("n,B,seed", [(200, 3, 0), (2000, 8, 1), (10000, 16, 2)])
def test_matches_emd(n, B, seed):
    ot = pytest.importorskip("ot")
    m, cost, t = points_problem(n, B, seed)
    res = solve_semidiscrete(m, cost, t)
    ref = ot.emd2(m, t, cost, numItermax=10**8)
    assert res.converged
    assert res.cost == pytest.approx(ref, rel=1e-6)
    check_plan(res, m, cost, t)
    assert res.plan_rows.size <= 2 * B  # generically at most B - 1 split cells


def test_matches_emd_on_grid():
    ot = pytest.importorskip("ot")
    m, cost, t = grid_problem(60, 12, seed=3)
    res = solve_semidiscrete(m, cost, t)
    ref = ot.emd2(m, t, cost, numItermax=10**8)
    assert res.cost == pytest.approx(ref, rel=1e-6)
    check_plan(res, m, cost, t)


def test_line_two_servers_analytic():
    """Cells on [0, 1], servers at both ends, cost = distance: a threshold split."""
    N = 10
    x = (np.arange(N) + 0.5) / N
    cost = np.abs(x[:, None] - np.array([0.0, 1.0])[None, :])
    m = np.full(N, 1.0 / N)
    t = np.array([0.25, 0.75])  # 2.5 cells to the left server
    res = solve_semidiscrete(m, cost, t)
    # cells 0, 1 left, cell 2 split in halves, the rest right
    assert res.cell_server[:2].tolist() == [0, 0]
    assert res.cell_server[3:].tolist() == [1] * 7
    assert res.plan_rows.tolist() == [2]
    np.testing.assert_allclose(res.plan_split, [[0.5, 0.5]], atol=1e-12)
    expected = (0.05 + 0.15 + 0.5 * 0.25 + 0.5 * 0.75 + 0.65 + 0.55 + 0.45 + 0.35 + 0.25 + 0.15
                + 0.05) / N
    assert res.cost == pytest.approx(expected, rel=1e-12)
    # the boundary weight difference is the cost difference at the split cell
    assert res.weights[1] - res.weights[0] == pytest.approx(0.5, abs=1e-12)
    check_plan(res, m, cost, t)


def test_zero_target_server_gets_nothing():
    ot = pytest.importorskip("ot")
    m, cost, t = points_problem(1500, 6, seed=4)
    t[[1, 4]] = 0.0
    t /= t.sum()
    res = solve_semidiscrete(m, cost, t)
    assert res.masses[1] == 0.0 and res.masses[4] == 0.0
    assert not np.isin(res.cell_server, [1, 4]).any()
    assert res.cost == pytest.approx(ot.emd2(m, t, cost), rel=1e-6)
    check_plan(res, m, cost, t)
    # nobody prefers an empty server at the returned weights
    assert not np.isin(laguerre_assign(cost, res.weights), [1, 4]).any()


def test_zero_mass_cells():
    ot = pytest.importorskip("ot")
    m, cost, t = points_problem(1500, 6, seed=5)
    rng = np.random.default_rng(5)
    m[rng.random(m.size) < 0.4] = 0.0
    m /= m.sum()
    cost[m == 0] *= 50.0  # rows of empty cells are irrelevant
    res = solve_semidiscrete(m, cost, t)
    assert res.cost == pytest.approx(ot.emd2(m, t, cost), rel=1e-6)
    check_plan(res, m, cost, t)
    assert not np.isin(np.flatnonzero(m == 0), res.plan_rows).any()


def test_server_whose_cheapest_cells_are_empty():
    ot = pytest.importorskip("ot")
    m, cost, t = points_problem(1500, 6, seed=6)
    m[np.argsort(cost[:, 2])[:300]] = 0.0
    m /= m.sum()
    res = solve_semidiscrete(m, cost, t)
    assert res.cost == pytest.approx(ot.emd2(m, t, cost), rel=1e-6)
    check_plan(res, m, cost, t)


def test_identical_rows_degenerate():
    rng = np.random.default_rng(7)
    B = 5
    row = rng.random(B)
    m = rng.random(800)
    m /= m.sum()
    t = rng.random(B)
    t /= t.sum()
    res = solve_semidiscrete(m, np.tile(row, (800, 1)), t)
    assert res.converged
    assert res.cost == pytest.approx(float(t @ row), rel=1e-12)
    check_plan(res, m, np.tile(row, (800, 1)), t)
    # constant costs too: every plan is optimal
    res = solve_semidiscrete(m, np.ones((800, B)), t)
    assert res.cost == pytest.approx(1.0, rel=1e-12)
    check_plan(res, m, np.ones((800, B)), t)


def test_huge_cost_range():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(8)
    n, B = 1200, 7
    cost = np.exp(rng.uniform(np.log(1e-9), np.log(1e3), (n, B)))
    m = rng.random(n)
    m /= m.sum()
    t = rng.random(B)
    t /= t.sum()
    res = solve_semidiscrete(m, cost, t)
    assert res.cost == pytest.approx(ot.emd2(m, t, cost, numItermax=10**7), rel=1e-6)
    check_plan(res, m, cost, t)


def test_huge_cost_range_many_servers_converges_with_default_budget():
    rng = np.random.default_rng(17)
    n, B = 5000, 16
    cost = np.exp(rng.uniform(np.log(1e-9), np.log(1e3), (n, B)))
    m = rng.random(n)
    m /= m.sum()
    t = rng.random(B)
    t /= t.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = solve_semidiscrete(m, cost, t)
    assert res.converged and res.n_iter < 1000
    check_plan(res, m, cost, t)  # strong duality certifies the optimum


def test_few_cells_split_over_many_servers():
    """3 cells (one holding most of the mass) feed 40 servers: long relay paths."""
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(18)
    x = rng.random(3)
    sites = rng.random(40)
    cost = (x[:, None] - sites[None, :]) ** 2
    m = np.array([0.8, 0.05, 0.15])
    t = rng.random(40) ** 2
    t /= t.sum()
    res = solve_semidiscrete(m, cost, t)
    assert res.converged
    assert res.cost == pytest.approx(ot.emd2(m, t, cost), rel=1e-6)
    check_plan(res, m, cost, t)
    assert res.plan_rows.size == 3


@pytest.mark.parametrize("factor", [1e-30, 1e30])
def test_cost_scale_invariance(factor):
    m, cost, t = points_problem(800, 5, seed=9)
    base = solve_semidiscrete(m, cost, t)
    res = solve_semidiscrete(m, cost * factor, t)
    assert res.cost == pytest.approx(base.cost * factor, rel=1e-9)
    check_plan(res, m, cost * factor, t)


def test_integer_costs_with_many_ties():
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(10)
    n, B = 2000, 6
    cost = rng.integers(0, 4, (n, B)).astype(float)
    m = np.full(n, 1.0 / n)
    t = np.full(B, 1.0 / B)
    res = solve_semidiscrete(m, cost, t)
    assert res.cost == pytest.approx(ot.emd2(m, t, cost), rel=1e-6)
    check_plan(res, m, cost, t)


def test_warm_start_gives_the_same_cost():
    m, cost, t = points_problem(4000, 10, seed=11)
    cold = solve_semidiscrete(m, cost, t)
    warm = solve_semidiscrete(m, cost, t, weights0=cold.weights)
    assert warm.cost == pytest.approx(cold.cost, rel=1e-12)
    assert warm.n_iter <= cold.n_iter
    check_plan(warm, m, cost, t)
    # slowly changing costs, as in the outer loop
    rng = np.random.default_rng(11)
    cost2 = cost * (1.0 + 0.01 * rng.random(cost.shape))
    ref = solve_semidiscrete(m, cost2, t)
    warm2 = solve_semidiscrete(m, cost2, t, weights0=cold.weights)
    assert warm2.cost == pytest.approx(ref.cost, rel=1e-12)
    check_plan(warm2, m, cost2, t)
    # a poor warm start still ends at the optimum
    bad = solve_semidiscrete(m, cost, t, weights0=10.0 * rng.random(10))
    assert bad.cost == pytest.approx(cold.cost, rel=1e-12)


def test_single_server_and_single_cell():
    m, cost, t = points_problem(300, 4, seed=12)
    res = solve_semidiscrete(m, cost[:, :1], np.array([1.0]))
    assert res.cost == pytest.approx(float(m @ cost[:, 0]), rel=1e-12)
    assert res.plan_rows.size == 0 and res.n_iter == 0
    res = solve_semidiscrete(np.array([1.0]), cost[:1], t)
    np.testing.assert_allclose(plan_dense(res, 1)[0], t, atol=1e-12)
    assert res.cost == pytest.approx(float(cost[0] @ t), rel=1e-12)


def test_convergence_warning_and_best_plan():
    m, cost, t = points_problem(2000, 8, seed=13)
    with pytest.warns(ConvergenceWarning, match=r"after 2 iterations \(mass residual"):
        res = solve_semidiscrete(m, cost, t, max_iter=2)
    assert not res.converged
    assert res.n_iter == 2
    X = plan_dense(res, m.size)
    assert np.all(np.isfinite(X))
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(res.masses, m @ X, atol=1e-12)
    assert res.mass_residual == pytest.approx(np.abs(m @ X - t).max())
    assert res.mass_residual > 1e-12


def test_no_warning_when_converged():
    m, cost, t = points_problem(500, 4, seed=14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = solve_semidiscrete(m, cost, t)
    assert res.converged and res.mass_residual < 1e-12


def test_laguerre_assign_chunks_and_ties():
    rng = np.random.default_rng(15)
    cost = rng.random((1001, 7))
    w = rng.random(7) * 0.3
    ref = np.argmin(cost - w, axis=1)
    np.testing.assert_array_equal(laguerre_assign(cost, w, chunk=64), ref)
    np.testing.assert_array_equal(laguerre_assign(cost, w), ref)
    tied = np.array([[1.0, 0.5, 0.5], [0.2, 0.2, 0.2]])
    assert laguerre_assign(tied, np.zeros(3)).tolist() == [1, 0]


def test_result_shapes_and_types():
    m, cost, t = points_problem(700, 5, seed=16)
    res = solve_semidiscrete(m, cost, t)
    assert res.weights.shape == (5,)
    assert res.cell_server.shape == (700,) and res.cell_server.dtype.kind == "i"
    assert res.plan_rows.ndim == 1 and res.plan_split.shape == (res.plan_rows.size, 5)
    np.testing.assert_allclose(res.plan_split.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.diff(res.plan_rows) > 0)
    # the largest share decides cell_server
    np.testing.assert_array_equal(res.cell_server[res.plan_rows], res.plan_split.argmax(axis=1))
    with pytest.raises(Exception):
        res.cost = 0.0  # frozen dataclass


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cell_mass=[0.5, 0.5], cost=np.zeros((3, 2)), target=[0.5, 0.5]),
        dict(cell_mass=[0.5, -0.5, 1.0], cost=np.zeros((3, 2)), target=[0.5, 0.5]),
        dict(cell_mass=[0.5, 0.5], cost=np.zeros((2, 2)), target=[0.7, 0.7]),
        dict(cell_mass=[0.5, 0.5], cost=[[0.0, np.nan], [1.0, 0.0]], target=[0.5, 0.5]),
        dict(cell_mass=[0.5, 0.5], cost=np.zeros((2, 2)), target=[0.5, 0.5, 0.0]),
    ],
)
def test_invalid_input(kwargs):
    with pytest.raises(ValueError):
        solve_semidiscrete(**kwargs)


def test_gram_flushes_subnormal_products():
    """Soft-min probabilities of 1e-27 make subnormal float32 products: flushed, the Gram matrix is the
    float64 one to float32 rounding (and the tiny entries change it by far less than that)."""
    from edgeverse.partition._semidiscrete import GRAM_FLUSH, _gram

    rng = np.random.default_rng(4)
    P = rng.random((8, 500)).astype(np.float32)
    P[:, ::3] = 1e-27  # far from every boundary
    MP = (P * np.float32(2e-4)).astype(np.float32)
    G = _gram(P, MP)
    ref = P.astype(np.float64) @ MP.astype(np.float64).T
    assert G.dtype == np.float64 and G.shape == (8, 8)
    assert np.allclose(G, ref, rtol=1e-5, atol=0.0)
    kept = np.where(np.abs(P) < GRAM_FLUSH, 0.0, P.astype(np.float64))
    assert np.abs(ref - kept @ np.where(np.abs(MP) < GRAM_FLUSH, 0.0, MP.astype(np.float64)).T).max() < 1e-40
