"""`edgeverse sweep`: sweep files, the result store, executors, restarts after SIGKILL, summary."""

from __future__ import annotations

import csv
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edgeverse import get_preset
from edgeverse.cli import main
from edgeverse.errors import EdgeverseError, ScenarioError
from edgeverse.store import DB_NAME
from edgeverse.sweep import Range, expand, load_results, load_sweep, run_sweep, summarize

SMALL = {"zone.cells": [20, 20]}


def write_sweep(tmp_path: Path, name: str = "sweep.yaml", **fields) -> Path:
    spec = {"name": "t", "base": "paper", "overrides": dict(SMALL), "axes": {"twins.count": [30, 60]},
            "seeds": 2, "methods": ["snr", "paper-damped"]}
    spec.update(fields)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def table(out: Path):
    """The final table without the (machine-dependent) wall time."""
    return load_results(out).drop(columns=["wall_time_s"])


def row_counts(out: Path) -> tuple[int, int]:
    con = sqlite3.connect(f"file:{out / DB_NAME}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM points").fetchone()
    finally:
        con.close()


# --------------------------------------------------------------------------- the sweep file
def test_expand_product_ranges_and_int_axes(tmp_path):
    sw = expand({"base": "paper", "overrides": SMALL,
                 "axes": {"twins.count": {"start": 50, "stop": 200, "step": 50},
                          "sensing.density.components.0.std_m": {"start": 0.1e3, "stop": 0.5e3, "num": 3}},
                 "seeds": [3, 7], "methods": ["snr", "paper"]})
    assert sw.axes["twins.count"] == [50, 100, 150, 200]
    assert all(type(v) is int for v in sw.axes["twins.count"])
    assert sw.axes["sensing.density.components.0.std_m"] == [100.0, 300.0, 500.0]
    assert len(sw.points) == 4 * 3 * 2 * 2
    assert len({p.key for p in sw.points}) == len(sw.points)
    p = sw.points[-1]
    assert (p.config["twins"]["count"], p.config["seed"], p.method) == (200, 7, "paper")
    assert p.config["sensing"]["density"]["components"][0]["std_m"] == 500.0
    assert Range(start=0.1, stop=0.5, num=5).values() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert Range(start=10, stop=0, step=-3).values() == [10, 7, 4, 1]


@pytest.mark.parametrize("fields, expected", [
    ({"axes": {"twins.cuont": [1, 2]}}, "axes.twins.cuont: value 1 is rejected"),
    ({"axes": {"twins.count": [10, -1]}}, "axes.twins.count: value -1"),
    ({"axes": {"twins.count": {"start": 1, "stop": 5}}}, "axes.twins.count: bad range"),
    ({"axes": {"twins.count": 5}}, "axes.twins.count: got 5; give a list"),
    ({"axes": {"seed": [1, 2]}}, "'seed' cannot be an axis"),
    ({"methods": ["snr", "simplex"]}, "unknown method 'simplex'; available: snr"),
    ({"seeds": 0}, "seeds: got 0"),
    ({"base": "nope"}, "base: preset: got 'nope'; available presets"),
    ({"base_file": "x.yaml"}, "exactly one of 'base'"),
    ({"overrides": {"zone.cells": [20]}}, "overrides"),
    ({"colour": "red"}, "colour: unknown field"),
    ({"method_options": {"paper": {"max_iter": 3}}}, "names method 'paper', which is not in methods"),
    ({"method_options": {"paper-damped": {"stepp": 0.1}}},
     "paper-damped: unknown option 'stepp'; paper-damped takes max_iter, min_step, step (and polish, certify: solve"),
    ({"seeds": 10**9}, "seeds: got 1000000000; at most 100,000 seeds"),
    ({"axes": {"twins.count": {"start": 1, "stop": 10**9, "step": 1}}}, "gives 1e+09 values; at most 100,000 per axis"),
    ({"axes": {"twins.count": {"start": 1, "stop": 1000, "step": 1}}, "seeds": 1000},
     "2,000,000 points (axes x seeds x methods); at most 1,000,000"),
])
def test_bad_sweep_files_fail_before_running(tmp_path, capsys, fields, expected):
    path = write_sweep(tmp_path, **fields)
    with pytest.raises(ScenarioError, match=None) as info:
        run_sweep(path, tmp_path / "out", executor="serial", progress=False)
    assert expected in str(info.value)
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert expected in capsys.readouterr().err


# --------------------------------------------------------------------------- store, errors, reruns
def test_folder_of_another_base_is_refused_and_same_base_extends(tmp_path, capsys):
    out = tmp_path / "out"
    rep = run_sweep(write_sweep(tmp_path, methods=["snr"]), out, executor="serial", progress=False)
    assert (rep.total, rep.computed) == (4, 4)
    other = write_sweep(tmp_path, "other.yaml", methods=["snr"], base="paper-calibrated")
    with pytest.raises(EdgeverseError) as info:
        run_sweep(other, out, executor="serial", progress=False)
    msg = str(info.value)
    assert "holds results of a sweep on another base scenario (name: 'paper' there, 'paper-calibrated' here" in msg
    assert "twins.types.0.complexity_cycles_per_bit: 10000.0 there, 10.0 here" in msg
    assert main(["sweep", str(other), "--out", str(out), "--quiet"]) == 2
    assert "use another folder" in capsys.readouterr().err
    assert row_counts(out) == (4, 4)
    # the same base with more seeds and another method extends the folder
    rep = run_sweep(write_sweep(tmp_path, "more.yaml", seeds=3, methods=["snr", "voronoi"]), out,
                    executor="serial", progress=False)
    assert (rep.total, rep.skipped, rep.computed) == (12, 4, 8)
    assert row_counts(out) == (12, 12)



def test_bad_method_options_are_rejected_before_running(tmp_path):
    from edgeverse.reproduce import make_plan
    from edgeverse.solution import solve

    for opts, msg in (({"step": float("nan")}, "method_options.paper-damped.step: got nan; must be a finite number in (0, 1]"),
                      ({"step": 2}, "paper-damped.step: got 2"), ({"step": "oops"}, "paper-damped.step: got 'oops'"),
                      ({"max_iter": 0}, "paper-damped.max_iter: got 0; must be an integer >= 1"),
                      ({"bogus": 1}, "unknown option 'bogus'; paper-damped takes max_iter, min_step, step (and polish, certify"),
                      ({"polish": "maybe"}, "paper-damped.polish: got 'maybe'; must be true or false")):
        path = write_sweep(tmp_path, method_options={"paper-damped": opts})
        with pytest.raises(EdgeverseError, match=re.escape(msg)):
            run_sweep(path, tmp_path / "out", executor="serial", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(EdgeverseError, match=re.escape("--method-option optimal.n_starts: got 1.5; must be an integer >= 0")):
        make_plan(quick=True, method_options={"optimal": {"n_starts": 1.5}})
    with pytest.raises(EdgeverseError, match=re.escape("snr: unknown option 'foo'; snr takes no options of its own (and polish, certify")):
        solve(get_preset("paper"), "snr", foo=1)
    with pytest.raises(EdgeverseError, match=re.escape("optimal.strategy: got 'fast'; must be one of auto")):
        solve(get_preset("paper"), "optimal", strategy="fast")
    with pytest.raises(EdgeverseError, match=re.escape("optimal.descent: got 'some'; must be one of none, best, all")):
        solve(get_preset("paper"), "optimal", descent="some")


def test_failing_point_is_recorded_and_rerun_computes_nothing(tmp_path, capsys, monkeypatch):
    # paper-damped raises at run time (a stand-in for any failure inside a method); snr runs
    from edgeverse.methods import METHODS

    def failing(problem, **_):
        return float("oops")

    monkeypatch.setitem(METHODS, "paper-damped", failing)
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    rep = run_sweep(path, out, executor="serial", progress=False)
    assert (rep.total, rep.computed, rep.skipped, rep.errors, rep.lost) == (8, 8, 0, 4, 0)
    df = load_results(out)
    bad = df[df.method == "paper-damped"]
    assert len(bad) == 4 and bad.error.str.startswith("ValueError: could not convert string to float").all()
    assert bad.objective_ms.isna().all() and (bad.status == "error").all()
    assert df[df.method == "snr"].error.isna().all()

    before = table(out)
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--summary"]) == 0
    text = capsys.readouterr().out
    assert "8 already stored, 0 computed" in text and "points with an error: 4" in text
    assert row_counts(out) == (8, 8)
    assert table(out).equals(before)
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["twins.count"], r["method"], r["n"], r["n_errors"]) for r in rows] == [
        ("30", "snr", "2", "0"), ("30", "paper-damped", "0", "2"),
        ("60", "snr", "2", "0"), ("60", "paper-damped", "0", "2")]
    assert (out / "summary_twins.count.png").stat().st_size > 0

    # --retry-errors recomputes exactly the failed points (they fail again: a pure function)
    rep = run_sweep(path, out, executor="serial", progress=False, retry_errors=True)
    assert (rep.skipped, rep.computed, rep.errors) == (4, 4, 4)
    assert row_counts(out) == (8, 8)


def test_summary_statistics_and_axis_mismatch(tmp_path):
    from scipy import stats

    from edgeverse.sweep import _stats

    x = [1.0, 2.0, 4.0, 7.0]
    mean, std, lo, hi = _stats(x)
    half = stats.t.ppf(0.975, 3) * stats.tstd(x) / 2.0
    assert mean == pytest.approx(3.5) and lo == pytest.approx(3.5 - half) and hi == pytest.approx(3.5 + half)
    assert math.isnan(_stats([1.0])[1])

    path = write_sweep(tmp_path, seeds=1, methods=["snr"])
    out = tmp_path / "out"
    run_sweep(path, out, executor="serial", progress=False)
    rows = summarize(path, out, plots=False)
    assert [(r["twins.count"], r["n"]) for r in rows] == [(30, 1), (60, 1)]
    other = write_sweep(tmp_path, "other.yaml", axes={"twins.count": [30], "sensing.density.components.0.std_m": [300]})
    with pytest.raises(Exception, match="holds a sweep over axes"):
        run_sweep(other, out, executor="serial", progress=False)


# --------------------------------------------------------------------------- SIGKILL and restart
def test_sigkill_part_way_then_restart_equals_uninterrupted_run(tmp_path):
    path = write_sweep(tmp_path, overrides={"zone.cells": [40, 40]}, seeds=10)  # 2 x 10 x 2 = 40 points
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, "-m", "edgeverse", "sweep", str(path), "--out", str(killed), "--quiet",
           "--executor", "local", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    db = killed / DB_NAME
    deadline = time.monotonic() + 60
    n_rows = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    n_rows = row_counts(killed)[0]
                except sqlite3.OperationalError:  # table not created yet
                    n_rows = 0
                if n_rows >= 4:
                    break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker processes, no clean-up
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    n_after_kill, distinct = row_counts(killed)
    assert 4 <= n_after_kill < 40 and distinct == n_after_kill

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"{n_after_kill} already stored, {40 - n_after_kill} computed" in res.stdout
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

    run_sweep(path, clean, executor="serial", progress=False)
    assert row_counts(killed) == row_counts(clean) == (40, 40)
    a, b = table(killed), table(clean)
    assert list(a.columns) == list(b.columns)
    assert a.equals(b)


# --------------------------------------------------------------------------- Dask
def test_dask_local_cluster_matches_local_executor(tmp_path):
    pytest.importorskip("distributed")
    path = write_sweep(tmp_path)
    rep_local = run_sweep(path, tmp_path / "local", executor="local", workers=2, progress=False)
    rep_dask = run_sweep(path, tmp_path / "dask", executor="dask", workers=2, progress=False)
    assert rep_local.computed == rep_dask.computed == 8 and rep_dask.lost == 0
    a, b = table(tmp_path / "local"), table(tmp_path / "dask")
    assert a.objective_ms.tolist() == b.objective_ms.tolist()  # bit for bit
    assert a.equals(b)


def test_axis_numbers_written_with_exponents_are_numbers(tmp_path):
    """PyYAML reads 5e6 as a string; the axis values (and so the results' columns) are numbers all the same."""
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nbase: paper\noverrides: {zone.cells: [12, 12]}\nseeds: 1\nmethods: [snr]\n"
                    "axes:\n  servers.sensor_bandwidth_hz: [5e6, 1e7]\n"
                    "  servers.compute_hz: [[8e9, 8e9, 16e9, 16e9]]\n", encoding="utf-8")
    sw = load_sweep(path)
    assert sw.axes["servers.sensor_bandwidth_hz"] == [5e6, 1e7]
    assert sw.axes["servers.compute_hz"] == [[8e9, 8e9, 16e9, 16e9]]
    run_sweep(path, tmp_path / "out", executor="serial", progress=False)
    df = load_results(tmp_path / "out")
    assert df["servers.sensor_bandwidth_hz"].dtype.kind in "if"
    assert sorted(df["servers.sensor_bandwidth_hz"].unique()) == [5e6, 1e7]


def test_bad_or_unreachable_scheduler_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")

    def refused(address, **_):  # what Client raises after its timeout when nobody listens (30 s): at once here
        raise OSError(f"Timed out trying to connect to {address}")

    monkeypatch.setattr(distributed, "Client", refused)
    path = write_sweep(tmp_path, seeds=1, methods=["snr"])
    for addr in ("notaurl", "tcp://host:port"):
        with pytest.raises(EdgeverseError, match=re.escape(f"--scheduler: got {addr!r}; give the address")):
            run_sweep(path, tmp_path / "o", executor="dask", scheduler=addr, progress=False)
    with pytest.raises(EdgeverseError, match="cannot connect to a Dask scheduler"):
        run_sweep(path, tmp_path / "o", executor="dask", scheduler="tcp://127.0.0.1:1", progress=False)
    assert not (tmp_path / "o").exists()  # no empty results.sqlite / sweep.json left behind


def test_pool_workers_exit_when_the_parent_is_killed(tmp_path):
    """A worker started with exit_with_parent exits once its parent dies by SIGKILL (no orphans)."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from edgeverse.workers import exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    ex = ProcessPoolExecutor(1, initializer=exit_with_parent, initargs=(os.getpid(),))\n"
        "    print(ex.submit(os.getpid).result(), flush=True)\n"
        "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    os.kill(worker, 0)  # alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker outlived its killed parent")


def test_another_sweep_into_a_folder_drops_the_earlier_summary(tmp_path):
    """The summary and plots of an earlier sweep into a folder are removed when a different sweep starts
    there (they would pass for its results); the same sweep again keeps them."""
    path = write_sweep(tmp_path, seeds=1, methods=["snr"])
    out = tmp_path / "out"
    run_sweep(path, out, executor="serial", progress=False)
    summarize(path, out, plots=True)
    assert (out / "summary.csv").exists() and list(out.glob("summary_*.png"))
    run_sweep(path, out, executor="serial", progress=False)  # the same sweep: nothing to do, summary kept
    assert (out / "summary.csv").exists()
    more = write_sweep(tmp_path, "more.yaml", seeds=2, methods=["snr"])
    run_sweep(more, out, executor="serial", progress=False)
    assert not (out / "summary.csv").exists() and not list(out.glob("summary_*.png"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_an_axis_mixing_lists_and_numbers_loads_as_one_type(tmp_path):
    pytest.importorskip("pandas")
    from edgeverse.store import ResultStore

    out = tmp_path / "out"
    out.mkdir()
    rec = {"seed": 0, "method": "snr", "objective_ms": 1.0}
    with ResultStore(out, ["servers.compute_hz"]) as store:
        store.add({"servers.compute_hz": [8e9, 8e9, 16e9, 16e9]}, rec, "a")
        store.add({"servers.compute_hz": 12e9}, rec, "b")
    df = load_results(out)
    assert df["servers.compute_hz"].tolist() == ["12000000000.0", "[8000000000.0,8000000000.0,16000000000.0,16000000000.0]"]
    (out / "plain").mkdir()
    with ResultStore(out / "plain", ["twins.count"]) as store:
        store.add({"twins.count": 60}, rec, "c")
        store.add({"twins.count": 30}, rec, "d")
    assert load_results(out / "plain")["twins.count"].tolist() == [30, 60]  # numbers stay numbers
