"""City-scale benchmarks: every (case, method) in a fresh process, a table, and JSON lines.

    python benchmarks/bench.py                          # every case and method, a markdown table
    python benchmarks/bench.py --cases paper,city --methods snr,optimal --json out.jsonl

Each (case, method) runs in its own subprocess, which builds the problem
(``build_seconds``), times one *floor pass* (``floor_seconds``: every cell's
communication cost computed from the geometry at its best server and summed
with its mass - the least any method must do, since the evaluator does it
for the chosen partition), then the solve (``seconds``: ``solve(problem,
method)``, certificate included; the median of ``--repeat`` runs on small
cases, each on a freshly built problem, so that every timed solve starts with
the problem's caches empty as a user's first solve does) and reports its own
peak RSS (``ru_maxrss``).  Numba's compiled kernels
are cached on disk; a warm-up process compiles them first, and each worker
loads them (one solve of a tiny problem) before it builds the case, so neither
JIT nor cache-loading time is in the numbers.  With ``--json`` one JSON object per line is written with at
least ``case, cells, servers, twins, method, seconds, iterations, peak_rss_mb,
floor_seconds``.

Cases (synthetic cities: :func:`edgeverse.synthetic.city_scenario`):

* ``paper`` / ``paper-calibrated`` - the presets (100 x 100 cells, 4 servers, 60 twins);
* ``city`` - 1000 x 1000 cells of 10 m, 64 servers, 10,000 twins;
* ``metro`` - 2000 x 2000 cells of 10 m, 512 servers, 100,000 twins;
* ``scaling`` - cells x servers from 1e5 to 1e9 (floor pass, ``snr`` and ``paper``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ["snr", "voronoi", "paper", "paper-damped", "optimal"]

# name -> (kind, args); "preset": preset name; "city": (cells per side, servers, twins)
CASES: dict[str, tuple[str, tuple]] = {
    "paper": ("preset", ("paper",)),
    "paper-calibrated": ("preset", ("paper-calibrated",)),
    "city": ("city", (1000, 64, 10_000)),
    "metro": ("city", (2000, 512, 100_000)),
    "scale-1e5": ("city", (100, 10, 250)),
    "scale-1e6": ("city", (316, 10, 250)),
    "scale-1e7": ("city", (1000, 10, 250)),
    "scale-1e8": ("city", (1000, 100, 2_500)),
    "scale-1e9": ("city", (2000, 256, 6_400)),
}
GROUPS = {
    "scaling": ["scale-1e5", "scale-1e6", "scale-1e7", "scale-1e8", "scale-1e9"],
}
SCALING_METHODS = ["snr", "paper"]


def scenario_of(case: str):
    from edgeverse import get_preset
    from edgeverse.synthetic import city_scenario

    kind, args = CASES[case]
    if kind == "preset":
        return get_preset(args[0])
    cells, servers, twins = args
    return city_scenario(cells, servers, twins, name=case)


def floor_pass(problem) -> float:
    """Seconds of one pass computing every cell's comm cost at its best server (geometry) and the sum."""
    import numpy as np

    from edgeverse.links import CHUNK_ENTRIES, map_chunks

    best = problem.best_snr_server()
    links = problem.links
    n = problem.n_cells
    parts = np.zeros(max(1, -(-n // CHUNK_ENTRIES)))
    t0 = time.perf_counter()

    def work(a, b):
        c = links.comm_pairs(np.arange(a, b), best[a:b])
        parts[a // CHUNK_ENTRIES] = float(np.dot(problem.cell_mass[a:b], c))

    map_chunks(work, n, CHUNK_ENTRIES)
    total = float(parts.sum())
    dt = time.perf_counter() - t0
    assert np.isfinite(total)
    return dt


def worker(case: str, method: str, repeat: int) -> dict:
    from edgeverse.build import build_problem
    from edgeverse.kernels import numba_active
    from edgeverse.solution import solve, warm_up

    # load the compiled kernels (numba's on-disk cache) of this method's dense and sparse paths into this
    # process first: a constant 0.3-0.5 s that is not the method's cost and would bend the scaling table
    warm_up([method], sparse=True)
    scn = scenario_of(case)
    t0 = time.perf_counter()
    problem = build_problem(scn)
    build_s = time.perf_counter() - t0
    floor_s = min(floor_pass(problem) for _ in range(3 if problem.n_cells <= 2_000_000 else 1))
    times = []
    sol = None
    for k in range(max(1, repeat)):
        if k:  # every timed solve on a freshly built problem: its caches empty, as for a user's first solve
            del problem, sol
            gc.collect()
            problem = build_problem(scn)
        t0 = time.perf_counter()
        sol = solve(problem, method)
        times.append(time.perf_counter() - t0)
        if times[0] > 1.0:  # repeats only where they matter (small, fast solves)
            break
    cert = sol.extra.get("certificate") or {}
    return {
        "case": case, "cells": problem.n_cells, "servers": problem.n_servers, "twins": problem.twins.n,
        "candidates": problem.links.k, "sparse": bool(problem.sparse), "method": method,
        "seconds": statistics.median(times), "seconds_all": times, "iterations": int(sol.iterations),
        "status": sol.status, "objective_ms": sol.objective_ms, "n_hosted": sol.n_hosted,
        "certificate_rel": cert.get("max_single_move_decrease_rel"),
        "hosting_gain_available": cert.get("hosting_gain_available"),
        "build_seconds": build_s, "floor_seconds": floor_s,
        "ratio_to_floor": statistics.median(times) / floor_s if floor_s > 0 else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "numba": numba_active(), "threads": int(os.environ.get("EDGEVERSE_THREADS") or 0) or None,
    }


def run_one(case: str, method: str, repeat: int, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, method, "--repeat", str(repeat)]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return error_row(case, method, f"timeout after {timeout:g} s", time.perf_counter() - t0)
    if out.returncode != 0:
        last = (out.stderr or out.stdout).strip().splitlines()[-1:]
        return error_row(case, method, last[0] if last else f"worker exited with code {out.returncode}",
                         time.perf_counter() - t0)
    return json.loads(out.stdout.strip().splitlines()[-1])


#: The fields every JSON line has (null where a failed run does not know them).
ROW_FIELDS = ("case", "cells", "servers", "twins", "candidates", "sparse", "method", "seconds", "seconds_all",
              "iterations", "status", "objective_ms", "n_hosted", "certificate_rel", "hosting_gain_available",
              "build_seconds", "floor_seconds", "ratio_to_floor", "peak_rss_mb", "numba", "threads")


def error_row(case: str, method: str, error: str, wall: float) -> dict:
    """A failed (case, method): every documented field, null where unknown, the error as one string."""
    cells, servers, twins = (CASES[case][1] if CASES[case][0] == "city" else (None, None, None))
    row = dict.fromkeys(ROW_FIELDS)
    row.update(case=case, method=method, status="error", error=str(error), wall_seconds=wall,
               cells=None if cells is None else cells * cells, servers=servers, twins=twins)
    return row


def fmt(x, nd=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) < 1e4 else f"{x:.3g}"
    return str(x)


def table(rows: list[dict]) -> str:
    head = ["case", "cells", "servers", "twins", "k", "method", "seconds", "floor_s", "ratio", "build_s",
            "peak_rss_mb", "iter", "status", "objective_ms", "hosted", "cert_rel"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['case']} | | | | | {r['method']} | error: {r['error']} |" + " |" * (len(head) - 7))
            continue
        vals = [r["case"], r["cells"], r["servers"], r["twins"], r["candidates"], r["method"], fmt(r["seconds"]),
                fmt(r["floor_seconds"]), fmt(r["ratio_to_floor"], 1), fmt(r["build_seconds"], 2),
                fmt(r["peak_rss_mb"], 0), r["iterations"], r["status"], fmt(r["objective_ms"], 4),
                r["n_hosted"], fmt(r["certificate_rel"], 6) if r["certificate_rel"] is not None else "-"]
        lines.append("| " + " | ".join(str(v) for v in vals) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="paper,paper-calibrated,city,metro,scaling",
                    help="comma-separated cases or groups (" + ", ".join(list(CASES) + list(GROUPS)) + ")")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (scaling: snr,paper)")
    ap.add_argument("--json", metavar="FILE", help="write one JSON object per line to this file")
    ap.add_argument("--repeat", type=int, default=5, help="solves per small case (median reported)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per (case, method)")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat: got {args.repeat}; at least 1 solve per case")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        ap.error(f"--timeout: got {args.timeout}; must be a finite number of seconds > 0")
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.repeat)))
        return 0
    cases: list[str] = []
    for c in args.cases.split(","):
        c = c.strip()
        cases += GROUPS.get(c, [c])
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from edgeverse.methods import METHODS as REGISTERED

    for m in methods:
        if m not in REGISTERED:
            ap.error(f"--methods: unknown method {m!r}; available: {', '.join(REGISTERED)}")
    if not methods:
        ap.error("--methods: give at least one method")
    idle = [c for c in cases if c.startswith("scale-") and not any(m in SCALING_METHODS for m in methods)]
    if idle:
        ap.error(f"--methods {','.join(methods)}: the scaling cases ({', '.join(idle)}) run only "
                 f"{' and '.join(SCALING_METHODS)}; give one of them or leave those cases out")
    staging, out = None, None
    if args.json is not None:  # checked, and its staging file opened, before the warm-up's 10-20 s
        target = Path(args.json)
        if not args.json.strip():
            ap.error("--json: got ''; give a file name")
        if target.is_dir():
            ap.error(f"--json: {args.json!r} is a folder; give a file name")
        if not target.resolve().parent.is_dir():
            ap.error(f"--json: the folder of {args.json!r} does not exist")
        try:
            fd, staging = tempfile.mkstemp(dir=target.resolve().parent, prefix=f".{target.name}.", suffix=".partial")
        except OSError as exc:
            ap.error(f"--json: cannot write next to {args.json!r} ({exc.strerror})")
        out = os.fdopen(fd, "w")
    # warm-up: compile the numba kernels into their on-disk cache
    subprocess.run([sys.executable, "-c", "from edgeverse.synthetic import city_scenario; "
                    "from edgeverse.solution import solve; "
                    "from edgeverse.build import build_problem; p = build_problem(city_scenario(40, 24, 60)); "
                    "[solve(p, m) for m in ('snr', 'paper', 'paper-damped', 'optimal')]; "
                    "from edgeverse import get_preset; q = build_problem(get_preset('paper-calibrated')); "
                    "[solve(q, m) for m in ('snr', 'paper-damped')]"], check=False, capture_output=True)
    rows = []
    try:
        for c in cases:
            ms = [m for m in methods if m in SCALING_METHODS] if c.startswith("scale-") else methods
            for m in ms:
                r = run_one(c, m, args.repeat, args.timeout)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
                if out:
                    out.write(json.dumps(r) + "\n")
                    out.flush()
    finally:
        # the JSON lines are written to a staging file next to --json and moved onto it at the end (also
        # when interrupted, with the rows done so far); with no row at all an earlier file stays as it was
        if out:
            out.close()
            if rows:
                os.replace(staging, args.json)
            else:
                os.unlink(staging)
    print(table(rows))
    scale = [r for r in rows if not r.get("error") and r["case"].startswith("scale-")]
    if scale:
        print()
        print(scaling_table(scale))
    failed = [f"{r['case']}/{r['method']}" for r in rows if r.get("error")]
    if failed:
        print(f"bench: {len(failed)} of {len(rows)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def scaling_table(rows: list[dict]) -> str:
    """Time per (cell x candidate server) entry of the scaling cases: linear growth keeps it flat.

    The iterative methods' time is also given per entry and per iteration (their iteration counts
    differ from case to case: Algorithm 1 as written cycles after 4 or 5 iterations).
    """
    lines = ["| case | cells x servers | cells x candidates | method | iterations | seconds | ns per candidate entry "
             "| ns per entry and iteration | floor_s | floor ns per cell |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        full = r["cells"] * r["servers"]
        cand = r["cells"] * r["candidates"]
        it = max(1, int(r.get("iterations") or 1))
        lines.append(f"| {r['case']} | {full:.2g} | {cand:.2g} | {r['method']} | {it} | {r['seconds']:.3f} | "
                     f"{1e9 * r['seconds'] / cand:.1f} | {1e9 * r['seconds'] / cand / it:.1f} | "
                     f"{r['floor_seconds']:.3f} | {1e9 * r['floor_seconds'] / r['cells']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the running case's subprocess gets the same Ctrl-C and exits
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
