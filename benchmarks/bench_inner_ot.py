"""Benchmark the inner optimal-transport solver against POT's network simplex.

Times :func:`edgeverse.partition.solve_semidiscrete` and ``ot.emd`` (exact,
network simplex) on the same discretised semi-discrete problems and checks
that the costs agree.

Two problem families (seeded):

``grid``
    the use case: cells of a square grid in raster order with a smooth,
    lumpy mass density, servers at random sites, cost = distance;
``points``
    cells at uniformly random points with random masses, cost = distance.

Usage::

    python benchmarks/bench_inner_ot.py                    # markdown table
    python benchmarks/bench_inner_ot.py --json             # one JSON object per line
    python benchmarks/bench_inner_ot.py --sizes 10000x16 --problems grid --repeat 7

``ot.emd`` is skipped (``emd_s`` empty, ``emd_skipped`` true) when ``n * B``
exceeds ``--emd-max`` (default ``1e6``): on 100000 x 16 it runs for tens of
seconds to minutes.  Timings are wall-clock; ours is the median of
``--repeat`` runs after one warm-up run, ``ot.emd`` the median of
``min(repeat, 3)`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from edgeverse.partition import solve_semidiscrete

DEFAULT_SIZES = "1000x4,10000x16,100000x16,10000x64"


def grid_problem(n: int, B: int, seed: int = 0):
    """``ny x nx = n`` grid of the unit square (raster order), lumpy density, random sites."""
    rng = np.random.default_rng(seed)
    ny = max(d for d in range(1, int(np.sqrt(n)) + 1) if n % d == 0)
    nx = n // ny
    X, Y = np.meshgrid((np.arange(nx) + 0.5) / nx, (np.arange(ny) + 0.5) / ny)
    xy = np.c_[X.ravel(), Y.ravel()]
    dens = 0.2 + sum(np.exp(-((xy - p) ** 2).sum(1) / 0.02) for p in rng.random((5, 2)))
    sites = rng.random((B, 2))
    cost = np.sqrt(((xy[:, None, :] - sites[None, :, :]) ** 2).sum(-1))
    t = rng.random(B) + 0.5
    return dens / dens.sum(), cost, t / t.sum()


def points_problem(n: int, B: int, seed: int = 0):
    """Uniformly random cells with random masses, random sites."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2))
    sites = rng.random((B, 2))
    cost = np.sqrt(((xy[:, None, :] - sites[None, :, :]) ** 2).sum(-1))
    m = rng.random(n) + 0.1
    t = rng.random(B) + 0.5
    return m / m.sum(), cost, t / t.sum()


PROBLEMS = {"grid": grid_problem, "points": points_problem}


def _median_time(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def run_case(problem: str, n: int, B: int, *, repeat: int, emd_max: float, seed: int = 0):
    m, cost, t = PROBLEMS[problem](n, B, seed)
    n = m.size
    solve_semidiscrete(m, cost, t)  # warm-up (imports, caches)
    ours_s, res = _median_time(lambda: solve_semidiscrete(m, cost, t), repeat)
    row = {
        "size": f"{n}x{B}",
        "problem": problem,
        "n": n,
        "B": B,
        "ours_s": ours_s,
        "emd_s": None,
        "speedup": None,
        "rel_cost_diff": None,
        "emd_skipped": True,
        "cost": res.cost,
        "n_iter": res.n_iter,
        "mass_residual": res.mass_residual,
        "n_split": int(res.plan_rows.size),
    }
    try:
        import ot
    except ImportError:  # pragma: no cover - POT is a test dependency
        return row
    if n * B <= emd_max:
        emd_s, plan = _median_time(lambda: ot.emd(m, t, cost, numItermax=10**9), min(repeat, 3))
        ref = float(np.sum(plan * cost))
        row.update(
            emd_s=emd_s,
            speedup=emd_s / ours_s,
            rel_cost_diff=(res.cost - ref) / ref,
            emd_skipped=False,
        )
    return row


def markdown(rows):
    lines = [
        "| size | ours_s | emd_s | speedup | rel_cost_diff |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        emd = "skipped" if r["emd_skipped"] else f"{r['emd_s']:.4f}"
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        rel = "-" if r["rel_cost_diff"] is None else f"{r['rel_cost_diff']:.1e}"
        size = f"{r['size']} ({r['problem']})"
        lines.append(f"| {size} | {r['ours_s']:.4f} | {emd} | {sp} | {rel} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help=f"comma-separated NxB list (default {DEFAULT_SIZES})")
    p.add_argument("--problems", default="grid,points",
                   help="comma-separated subset of: " + ", ".join(PROBLEMS))
    p.add_argument("--repeat", type=int, default=5, help="timed runs of our solver")
    p.add_argument("--emd-max", type=float, default=1e6,
                   help="skip ot.emd when n * B exceeds this (default 1e6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args(argv)

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]
    problems = [s for s in args.problems.split(",") if s]
    rows = []
    for problem in problems:
        for n, B in sizes:
            row = run_case(problem, n, B, repeat=args.repeat, emd_max=args.emd_max,
                           seed=args.seed)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if not args.json:
        print(markdown(rows))
        if any(r["emd_skipped"] for r in rows):
            print(f"\not.emd skipped where n * B > {args.emd_max:g} (too slow).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
