"""Every method through the one evaluator: invariants, files, reproducibility, 3D, Algorithm 1's record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeverse.build import build_problem
from edgeverse.evaluate import allocate, evaluate, objective_from_costs, region_masses
from edgeverse.methods import METHODS, map_14
from edgeverse.solution import load_solution, solve

ALL = list(METHODS)


@pytest.mark.parametrize("method", ALL)
def test_invariants_every_method(feasible_small, method):
    sol = solve(feasible_small, method)
    p = sol.problem
    cs = sol.cell_server
    # each cell in exactly one region
    assert cs.shape == (p.n_cells,) and cs.min() >= 0 and cs.max() < p.n_servers
    assert np.bincount(cs, minlength=p.n_servers).sum() == p.n_cells
    # masses sum to 1
    assert abs(sol.evaluation.alpha.sum() - 1.0) < 1e-12
    assert abs(p.cell_mass.sum() - 1.0) < 1e-12
    # the F form of the objective equals the literal equations (1)-(5)
    f_obj, t_b = objective_from_costs(p, cs, sol.allocation.psi_hz)
    assert f_obj * 1e3 == pytest.approx(sol.objective_ms, rel=1e-12)
    # compute never negative, capacity respected, hosted DTs meet deadlines
    assert np.all(sol.allocation.phi_hz >= 0) and np.all(np.isfinite(sol.allocation.phi_hz))
    assert np.all(sol.allocation.psi_hz > 0)
    assert np.all(sol.allocation.psi_hz + sol.evaluation.phi_sum_hz <= p.compute_hz * (1 + 1e-12))
    assert sol.evaluation.violations == ()
    assert np.all(sol.evaluation.twin_sync_s[sol.allocation.hosted] <= p.twins.deadline_s[sol.allocation.hosted] * (1 + 1e-9))
    assert sol.n_hosted > 0


@pytest.mark.parametrize("method", ALL)
def test_saved_objective_equals_recomputation(feasible_small, method, tmp_path):
    sol = solve(feasible_small, method)
    sol.save(tmp_path, figure=False)
    data = json.loads((tmp_path / "solution.json").read_text())
    for key in ("method", "objective_ms", "status", "iterations", "servers", "twins"):
        assert key in data
    back = load_solution(tmp_path)
    assert back.objective_ms == pytest.approx(data["objective_ms"], rel=1e-12)
    assert back.objective_ms == pytest.approx(sol.objective_ms, rel=1e-12)
    np.testing.assert_array_equal(back.cell_server, sol.cell_server)
    # and the allocation rule reproduces the saved split
    alloc = allocate(back.problem, back.cell_server)
    np.testing.assert_array_equal(alloc.hosted, back.allocation.hosted)
    np.testing.assert_allclose(alloc.psi_hz, back.allocation.psi_hz, rtol=1e-12)


def test_strict_json_no_nan(paper, tmp_path):
    sol = solve(paper.with_overrides({"zone.cells": [20, 20]}), "snr")
    sol.save(tmp_path, figure=False)
    text = (tmp_path / "solution.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    # unhosted DTs: infinite compute time stored as null
    assert data["twins"][0]["tau_cmp_ms"] is None and data["twins"][0]["reason"] == "deadline_infeasible"


@pytest.mark.parametrize("method", ["snr", "paper", "paper-damped"])
def test_same_seed_byte_identical_files(feasible_small, method, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    solve(feasible_small, method).save(a)
    solve(feasible_small, method).save(b)
    for name in ("solution.json", "servers.csv", "twins.csv", "partition.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = tmp_path / "c"
    solve(feasible_small.with_overrides({"seed": 1}), method).save(c, figure=False)
    assert (a / "twins.csv").read_bytes() != (c / "twins.csv").read_bytes()


@pytest.mark.parametrize("method", ALL)
def test_3d_zone_every_method(paper, method, tmp_path):
    scn = paper.with_overrides({
        "zone.size_m": [2000, 2000, 100], "zone.origin_m": [0, 0, 0], "zone.cells": [20, 20, 3],
        "twins.count": 30,
    })
    sol = solve(scn, method)
    assert sol.problem.grid.dim == 3 and sol.problem.n_cells == 1200
    assert abs(sol.evaluation.alpha.sum() - 1) < 1e-12
    assert np.isfinite(sol.objective_ms) and sol.objective_ms > 0
    assert sol.problem.twins.positions_m.shape == (30, 3)
    sol.save(tmp_path)
    assert (tmp_path / "partition.png").stat().st_size > 10_000


def test_paper_preset_every_dt_infeasible(paper):
    sol = solve(paper, "snr")
    assert sol.n_hosted == 0
    assert sol.reason_counts() == {"deadline_infeasible": 60}
    # the upload alone exceeds the longest deadline (100 ms) at every server
    assert np.all(sol.problem.twins.upload_time_s > 0.1)
    assert sol.objective_ms == pytest.approx(23.2818, abs=1e-3)


def test_algorithm1_history_and_truthful_status(paper):
    sol = solve(paper, "paper")
    h = sol.history
    assert len(h) == sol.iterations + 1 and h[0]["iteration"] == 0
    assert sol.status in {"converged", "cycled", "max_iter"}
    # as written it cycles on the paper scenario: verify the repetition from the record
    assert sol.status == "cycled"
    alphas = [tuple(r["alpha"]) for r in h]
    assert alphas[-1] in alphas[:-2]
    # the cycle comes from alpha_b = 0 servers attracting every cell through (14)
    assert max(h[-1]["alpha"]) == pytest.approx(1.0)
    p = sol.problem
    again = map_14(p, np.array(h[-2]["alpha"]), allocate(p, sol.cell_server).psi_hz)
    assert region_masses(p, again).max() == pytest.approx(1.0)


def test_algorithm1_cap_reported(feasible_small):
    sol = solve(feasible_small, "paper", max_iter=1)
    assert sol.iterations == 1
    assert sol.status in {"max_iter", "converged"}
    if sol.status == "max_iter":
        assert "no convergence within 1 iterations" in sol.message


def test_damped_variant_converges_below_snr(paper):
    d = solve(paper, "paper-damped")
    s = solve(paper, "snr")
    assert d.status == "converged"
    assert d.objective_ms < s.objective_ms
    assert d.extra["fixed_point_residual"] <= 2 * d.problem.cell_mass.max()


def test_snr_partition_is_quadrants(paper):
    p = build_problem(paper)
    cs = p.best_snr_server().reshape(p.grid.shape)
    assert np.all(cs[:50, :50] == 0) and np.all(cs[50:, :50] == 1)
    assert np.all(cs[:50, 50:] == 2) and np.all(cs[50:, 50:] == 3)


def test_admission_rule_by_hand(feasible_small):
    p = build_problem(feasible_small.with_overrides({"servers.compute_hz": [2e9, 2e9, 2e9, 2e9]}))
    cs = p.nearest_server()
    alloc = allocate(p, cs)
    budget = 0.95 * p.compute_hz
    for b in range(p.n_servers):
        here = np.flatnonzero(alloc.twin_server == b)
        need = p.twins.min_compute_hz[here, b]
        hosted = alloc.hosted[here]
        # everything hosted fits; the cheapest are hosted first
        assert need[hosted].sum() <= budget[b]
        finite = np.isfinite(need)
        if hosted.any() and (finite & ~hosted).any():
            assert need[hosted].max() <= need[finite & ~hosted].min()
            # the cheapest rejected one would not fit
            assert need[hosted].sum() + need[finite & ~hosted].min() > budget[b]
        assert set(alloc.reason[here][~finite]) <= {"deadline_infeasible"}
        assert set(alloc.reason[here][finite & ~hosted]) <= {"compute_exhausted"}
    assert (alloc.reason == "compute_exhausted").any()
    assert np.all(alloc.psi_hz >= 0.05 * p.compute_hz - 1e-3)


def test_evaluator_reports_server_without_render_compute(feasible_small):
    p = build_problem(feasible_small)
    cs = p.nearest_server()
    alloc = allocate(p, cs)
    psi = alloc.psi_hz.copy()
    psi[0] = 0.0
    ev = evaluate(p, cs, alloc.twin_server, alloc.hosted, alloc.phi_hz, psi)
    assert ev.no_render_compute[0] and not ev.no_render_compute[1:].any()
    assert np.isinf(ev.objective_ms) and np.isinf(ev.server_time_ms[0])
    assert np.isfinite(ev.server_time_ms[1:]).all()


def test_literal_density_reading_gives_microseconds(paper):
    ms = solve(paper, "snr").objective_ms
    us = solve(paper.with_overrides({"model.time_aggregation": "density"}), "snr").objective_ms
    assert us == pytest.approx(ms / 25000, rel=1e-12)


def test_3d_map_draws_every_dt_once(paper, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from edgeverse.plot import save_partition_map

    scn = paper.with_overrides({
        "zone.size_m": [2000, 2000, 100], "zone.origin_m": [0, 0, 0], "zone.cells": [10, 10, 9], "twins.count": 40,
    })
    sol = solve(scn, "snr")
    z = np.unravel_index(sol.problem.twins.cell, sol.problem.grid.shape)[2]
    assert len(set(z.tolist())) > 4  # DTs on more levels than the 4 panels
    drawn = []
    orig = plt.Figure.savefig

    def spy(fig, *a, **k):  # count the DT markers (size 22) of every panel before the figure is written
        for ax in fig.axes:
            drawn.append(sum(len(c.get_offsets()) for c in ax.collections
                             if hasattr(c, "get_sizes") and c.get_sizes().size and c.get_sizes()[0] == 22))
        return orig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", spy)
    save_partition_map(sol, tmp_path / "m.png")
    assert len(drawn) == 4 and sum(drawn) == 40 and all(n > 0 for n in drawn)


@pytest.mark.parametrize("candidates", [None, 6])
def test_zero_twins_sub_metaverses_only(tmp_path, candidates):
    """twins.count = 0: the sub-metaverse problem alone, every method, dense and sparse; files and reload work."""
    from edgeverse.build import build_problem
    from edgeverse.methods import METHODS
    from edgeverse.solution import load_solution, solve
    from edgeverse.synthetic import city_scenario

    scn = city_scenario(24, 10, 10, side_m=4000.0, seed=1).with_overrides({"twins.count": 0})
    p = build_problem(scn, candidates=candidates)
    assert p.twins.n == 0 and p.sparse == (candidates is not None)
    objs = {}
    for m in METHODS:
        sol = solve(p, m)
        assert np.isfinite(sol.objective_ms) and sol.n_hosted == 0 and not sol.evaluation.violations
        objs[m] = sol.objective_ms
    assert objs["optimal"] <= min(objs.values()) * (1 + 1e-12)
    sol.save(tmp_path)
    assert (tmp_path / "twins.csv").read_text().count("\n") == 1  # the header only
    assert load_solution(tmp_path).objective_ms == pytest.approx(sol.objective_ms, rel=1e-12)


def test_damaged_solution_files_are_clear_errors(tmp_path):
    from edgeverse import EdgeverseError, get_preset

    sol = solve(get_preset("paper").with_overrides({"zone.cells": [8, 8], "twins.count": 5}), "snr")
    sol.save(tmp_path, figure=False)
    good = json.loads((tmp_path / "solution.json").read_text())
    for edit, msg in ((lambda d: d["cell_server"].__setitem__(3, 99), r"cell_server\[3\] = 99; must be a server index in 0..3"),
                      (lambda d: d["cell_server"].__setitem__(0, -1), r"cell_server\[0\] = -1;"),
                      (lambda d: d["twins"][2].__setitem__("server", 7), r"twins\[2\]\.server = 7;"),
                      (lambda d: d["twins"][0].pop("hosted"), r"a damaged edgeverse solution \(KeyError"),
                      (lambda d: d.pop("status"), r"missing key 'status'"),
                      (lambda d: d["twins"][0].__setitem__("hosted", "no"), r"twins\[0\]\.hosted: got 'no'; must be true"),
                      (lambda d: d["twins"][1].__setitem__("hosted", not d["twins"][1]["hosted"]), r"twins\[1\]: hosted"),
                      (lambda d: d["servers"][0].__setitem__("psi_hz", 1e9), r"servers\[0\]\.psi_hz = 1000000000\.0, but "
                                                                               r"the partition gives"),
                      (lambda d: d["twins"][0].__setitem__("reason", "whatever"), r"'whatever' is not one of"),
                      (lambda d: d.__setitem__("iterations", "many"), r"iterations: got 'many'")):
        d = json.loads(json.dumps(good))
        edit(d)
        (tmp_path / "solution.json").write_text(json.dumps(d))
        with pytest.raises(EdgeverseError, match=msg):
            load_solution(tmp_path)
    with pytest.raises(EdgeverseError, match="not an edgeverse solution \\(not JSON"):
        load_solution(tmp_path / "twins.csv")
    (tmp_path / "solution.json").write_text(json.dumps(good))
    (tmp_path / "timing.json").write_text("{not json")
    with pytest.warns(UserWarning, match=r"timing\.json: damaged"):
        back = load_solution(tmp_path)
    assert np.isnan(back.wall_time_s) and back.objective_ms == pytest.approx(sol.objective_ms, rel=1e-12)


def test_out_of_memory_while_building_is_a_clear_error(monkeypatch):
    import edgeverse.build as build
    from edgeverse import EdgeverseError, get_preset

    def huge(*_, **__):
        raise MemoryError("Unable to allocate 2.9 GiB for an array")  # what numpy raises (a subclass)

    monkeypatch.setattr(build, "_build_problem", huge)
    with pytest.raises(EdgeverseError, match=r"zone\.cells: \[100, 100\] = 10,000 cells x 4 servers with twins\.count 60 "
                                             r"do not fit.*use coarser cells or fewer DTs"):
        build.build_problem(get_preset("paper"))


def test_edited_solution_is_refused(feasible_small, tmp_path):
    """A saved partition or objective edited by hand: the file's score is not its partition's, an error."""
    from edgeverse.errors import EdgeverseError

    sol = solve(feasible_small, "optimal")
    sol.save(tmp_path, figure=False)
    path = tmp_path / "solution.json"
    data = json.loads(path.read_text())
    edited = dict(data, objective_ms=1.0)
    path.write_text(json.dumps(edited))
    with pytest.raises(EdgeverseError, match=r"objective_ms = 1.0, but its partition scores .*edited or foreign"):
        load_solution(tmp_path)
    moved = dict(data, cell_server=list(data["cell_server"]))
    i = next(i for i, b in enumerate(moved["cell_server"]) if b == moved["cell_server"][-1]
             and i not in set(sol.problem.twins.cell.tolist()))  # a plain cell: the hosting stays the same
    moved["cell_server"][i] = (moved["cell_server"][i] + 1) % sol.problem.n_servers
    path.write_text(json.dumps(moved))
    with pytest.raises(EdgeverseError, match="edited or foreign"):
        load_solution(tmp_path)
    path.write_text(json.dumps(dict(data, objective_ms="fast")))
    with pytest.raises(EdgeverseError, match="objective_ms: got 'fast'"):
        load_solution(tmp_path)
    # the values derived from the partition: per-server alpha and T_b, DTs hosted, the certificate
    cert = dict(data["extra"]["certificate"], hosting_gain_available=7)
    servers = [dict(r) for r in data["servers"]]
    servers[1]["alpha"] = servers[1]["alpha"] * 1.01
    for edited, name in ((dict(data, n_hosted=data["n_hosted"] + 1), "n_hosted"),
                         (dict(data, servers=servers), r"servers\[1\].alpha"),
                         (dict(data, extra=dict(data["extra"], certificate=cert)),
                          "extra.certificate.hosting_gain_available")):
        path.write_text(json.dumps(edited))
        with pytest.raises(EdgeverseError, match=name + " = .* but the partition gives"):
            load_solution(tmp_path)
    path.write_text(json.dumps(data))
    assert load_solution(tmp_path).objective_ms == pytest.approx(sol.objective_ms, rel=1e-12)


def test_tiny_spectral_efficiency_is_kept():
    """log2(1 + (2^se - 1)) through expm1 below 1e-6 bit/s/Hz: an SNR of 1e-20 gives a finite rate."""
    from edgeverse.evaluate import _se_round_trip
    from edgeverse.physics import spectral_efficiency_bps_per_hz

    se = spectral_efficiency_bps_per_hz(np.array([1e-20, 1e-12, 3.0]))
    out = _se_round_trip(se)
    assert np.all(out > 0)
    np.testing.assert_allclose(out, se, rtol=1e-9)
    assert out[2] == spectral_efficiency_bps_per_hz(2.0 ** se[2] - 1.0)  # unchanged above the threshold
