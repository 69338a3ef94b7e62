"""benchmarks/bench.py: its arguments, its JSON lines and its output file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("edgeverse_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("args, message", [
    (["--timeout", "nan"], "--timeout: got nan; must be a finite number of seconds > 0"),
    (["--timeout", "inf"], "--timeout: got inf; must be a finite number of seconds > 0"),
    (["--timeout", "0"], "--timeout: got 0.0; must be a finite number of seconds > 0"),
    (["--repeat", "0"], "--repeat: got 0; at least 1 solve per case"),
    (["--cases", "town"], "unknown case 'town'"),
    (["--methods", "best"], "--methods: unknown method 'best'"),
    (["--cases", "scaling", "--methods", "optimal"], "the scaling cases (scale-1e5, scale-1e6, scale-1e7, "
                                                      "scale-1e8, scale-1e9) run only snr and paper"),
    (["--json", ""], "--json: got ''; give a file name"),
    (["--json", "{tmp}"], "is a folder; give a file name"),
    (["--json", "{tmp}/no/such/x.jsonl"], "--json: the folder of"),
])
def test_bad_arguments_are_one_line_errors(bench, capsys, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as exc:
        bench.main(["--cases", "paper", "--methods", "snr"] + args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))


def test_error_rows_have_every_field(bench):
    row = bench.error_row("city", "optimal", "timeout after 2 s", 2.01)
    assert set(bench.ROW_FIELDS) <= set(row)
    assert (row["cells"], row["servers"], row["twins"]) == (1_000_000, 64, 10_000)
    assert row["error"] == "timeout after 2 s" and row["seconds"] is None and row["status"] == "error"
    assert set(bench.ROW_FIELDS) <= set(bench.error_row("paper", "snr", "x", 0.0))


def test_failed_runs_exit_1_and_replace_the_file_whole(bench, tmp_path, capsys, monkeypatch):
    """A run's JSON lines go to a staging file moved onto --json at the end; an earlier file stays as it
    was when no row was made (interrupted before the first), and failed runs make the exit code 1."""
    out = tmp_path / "b.jsonl"
    out.write_text('{"precious": 1}\n')
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: None)  # no warm-up here

    def interrupted(case, method, repeat, timeout):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--cases", "paper", "--methods", "snr", "--json", str(out)])
    assert out.read_text() == '{"precious": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["b.jsonl"]

    monkeypatch.setattr(bench, "run_one", lambda c, m, r, t: bench.error_row(c, m, f"timeout after {t:g} s", t))
    assert bench.main(["--cases", "paper,city", "--methods", "snr", "--json", str(out), "--timeout", "2"]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["case"], r["method"], r["error"]) for r in rows] == [("paper", "snr", "timeout after 2 s"),
                                                                   ("city", "snr", "timeout after 2 s")]
    assert all(set(bench.ROW_FIELDS) <= set(r) for r in rows)
    assert "bench: 2 of 2 run(s) failed: paper/snr, city/snr" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["b.jsonl"]
