"""The command line as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import yaml

from edgeverse.cli import main
from edgeverse.scenario import Scenario


def test_solve_preset_prints_table_and_writes_files(tmp_path, capsys):
    assert main(["solve", "--preset", "paper", "--method", "snr", "--out", str(tmp_path), "--set", "zone.cells=[20,20]"]) == 0
    out = capsys.readouterr().out
    assert "average sub-synchronization time (9a)" in out and "T_b ms" in out
    assert "deadline_infeasible 60" in out
    for name in ("solution.json", "servers.csv", "twins.csv", "timing.json", "partition.png"):
        assert (tmp_path / name).exists(), name
    data = json.loads((tmp_path / "solution.json").read_text())
    assert data["method"] == "snr" and data["status"] == "closed_form"
    assert (tmp_path / "servers.csv").read_text().splitlines()[0].startswith("server,name,x_m,y_m")
    # a second run without the figure into the same folder does not leave the first run's map
    assert main(["solve", "--preset", "paper", "--method", "voronoi", "--out", str(tmp_path), "--no-figure",
                 "--set", "zone.cells=[20,20]"]) == 0
    assert not (tmp_path / "partition.png").exists()
    assert json.loads((tmp_path / "solution.json").read_text())["method"] == "voronoi"


def test_solve_paper_method_reports_cycle(tmp_path, capsys):
    assert main(["solve", "--preset", "paper", "--method", "paper", "--out", str(tmp_path), "--no-figure"]) == 0
    assert "status cycled" in capsys.readouterr().out


def test_presets_and_show_config(capsys, tmp_path):
    assert main(["presets"]) == 0
    assert "paper" in capsys.readouterr().out
    assert main(["show-config", "--preset", "paper"]) == 0
    text = capsys.readouterr().out
    assert "CHOICE" in text  # the choices where the paper is silent are written beside the values
    f = tmp_path / "mine.yaml"
    f.write_text(text.replace("count: 60", "count: 5"))
    assert main(["solve", str(f), "--method", "voronoi", "--out", str(tmp_path / "o"), "--no-figure"]) == 0
    assert json.loads((tmp_path / "o" / "solution.json").read_text())["n_twins"] == 5
    assert Scenario.from_dict(yaml.safe_load(text)).name == "paper"


def test_bad_input_is_one_line_error_not_traceback(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("base: paper\nservers:\n  compute_hz: [8e9, 8e9, 16e9]\n")
    r = subprocess.run([sys.executable, "-m", "edgeverse", "solve", str(f), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "servers.compute_hz: got 3 entries; must have one per server (4" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    r = subprocess.run([sys.executable, "-m", "edgeverse", "solve", "--method", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "--method: got 'nope'; available:" in r.stderr


def test_show_config_abbreviates_long_lists_and_full_round_trips(tmp_path, capsys):
    from edgeverse.cli import abbreviate

    data, n = abbreviate({"a": [[1.0, 2.0]] * 30, "names": [str(i) for i in range(30)], "short": [1, 2, 3]})
    assert n == 2
    assert data == {"a": "<30 x 2 values, min 1, max 2>", "names": "<30 entries>", "short": [1, 2, 3]}
    # a scenario with a long list: abbreviated by default, in full with --full (and that loads again)
    base = yaml.safe_load(main_out(["show-config", "--preset", "paper"], capsys))
    base["sensing"]["density"] = {"kind": "array", "values": [[1.0] * 20 for _ in range(20)]}
    base["zone"]["cells"] = [20, 20]
    f = tmp_path / "arr.yaml"
    f.write_text(yaml.safe_dump(base))
    short = main_out(["show-config", str(f)], capsys)
    assert short.startswith("# the configuration in use; 1 long list(s) abbreviated")
    assert "values: '<20 x 20 values, min 1, max 1>'" in short
    full = main_out(["show-config", "--full", str(f)], capsys)
    assert Scenario.from_dict(yaml.safe_load(full)).sensing.density.kind == "array"


def main_out(argv, capsys) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_out_that_is_a_file_is_a_clear_error_for_every_command(tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "t", "base": "paper", "overrides": {"zone.cells": [12, 12]},
                                     "axes": {"twins.count": [30]}, "seeds": 1, "methods": ["snr"]}))
    for argv in (["solve", "--preset", "paper", "--method", "snr", "--out", str(f)],
                 ["reproduce", "--quick", "--out", str(f), "--no-progress"],
                 ["sweep", str(sweep), "--out", str(f), "--quiet"]):
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert f"--out: '{f}' exists and is not a folder" in err, (argv, err)
    assert f.read_text() == "x"


def test_unknown_crs_names_the_field(tmp_path):
    import pytest

    pytest.importorskip("pyproj")
    from edgeverse.errors import ScenarioError

    base = {"name": "d", "zone": {"cells": [10, 10]},
            "sensing": {"density": {"kind": "npy", "file": "d.npy", "bounds_m": [0, 0, 100, 100], "crs": "EPSG:99999"}}}
    with pytest.raises(ScenarioError, match=r"sensing\.density\.crs: got 'EPSG:99999'.*not a CRS pyproj knows"):
        Scenario.from_dict(base)


def test_set_applies_to_the_file_before_validation(tmp_path, capsys):
    """--set completes or repairs a scenario file that is invalid on its own (it edits the file as written)."""
    f = tmp_path / "s.yaml"
    f.write_text("base: paper\ntwins: {count: -3}\nzone: {cells: [20, 20]}\n")
    assert main(["solve", str(f), "--method", "snr", "--out", str(tmp_path / "o"), "--no-figure"]) != 0
    assert "twins.count: got -3" in capsys.readouterr().err
    assert main(["solve", str(f), "--method", "snr", "--out", str(tmp_path / "o"), "--no-figure",
                 "--set", "twins.count=10"]) == 0
    assert "DTs hosted 0/10" in capsys.readouterr().out


def test_true_false_are_not_integers(capsys):
    for field in ("seed", "twins.count"):
        assert main(["solve", "--preset", "paper", "--method", "snr", "--set", f"{field}=true", "--no-figure"]) != 0
        assert f"{field}: got True; value error, must be an integer, not true/false" in capsys.readouterr().err


def test_whole_numbers_written_in_exponent_form_are_counts():
    # YAML reads 1e2 as the string "1e2": a count written so is read as 100; 150.5 is not a count
    import pytest

    from edgeverse import get_preset
    from edgeverse.errors import ScenarioError

    assert get_preset("paper").with_overrides({"twins.count": "1e2"}).twins.count == 100
    with pytest.raises(ScenarioError, match="twins.count: got 150.5"):
        get_preset("paper").with_overrides({"twins.count": 150.5})


def test_taken_names_inside_out_are_errors_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "o"
    (out / "twins.csv").mkdir(parents=True)
    assert main(["solve", "--preset", "paper", "--method", "snr", "--out", str(out), "--set", "zone.cells=[12,12]"]) != 0
    assert "twins.csv' is a folder; the solution writes a file of that name there" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["twins.csv"]
    out2 = tmp_path / "o2"
    out2.mkdir()
    (out2 / "paper").write_text("x")
    assert main(["solve", "--preset", "paper", "--method", "all", "--out", str(out2), "--set", "zone.cells=[12,12]"]) != 0
    assert "paper' exists and is not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in out2.iterdir()) == ["paper"]  # no method's folder was started


def test_more_inputs_refuse_true_and_read_exponent_strings(tmp_path):
    import pytest

    from edgeverse import get_preset
    from edgeverse.errors import EdgeverseError, ScenarioError
    from edgeverse.methods import check_method_options
    from edgeverse.reproduce import make_plan

    with pytest.raises(ScenarioError, match=r"zone\.cells\[0\]: got True"):
        get_preset("paper").with_overrides({"zone.cells": [True, 10]})
    assert check_method_options("optimal", {"n_starts": "1e1", "max_iter": "1e2"}) == {"n_starts": 10, "max_iter": 100}
    assert check_method_options("paper-damped", {"step": "0.5"}) == {"step": 0.5}
    with pytest.raises(EdgeverseError, match="names method 'optimal', which is not run"):
        make_plan(quick=True, methods=["snr"], method_options={"optimal": {"n_starts": 2}})
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "t", "base": "paper", "axes": {"twins.count": [30]}, "seeds": True,
                                     "methods": ["snr"]}))
    from edgeverse.sweep import run_sweep

    with pytest.raises(EdgeverseError, match="seeds"):
        run_sweep(sweep, tmp_path / "out", executor="serial", progress=False)


def test_solve_method_options_and_bad_out(tmp_path, capsys):
    import json

    from edgeverse.cli import main

    out = tmp_path / "o"
    argv = ["solve", "--preset", "paper", "--set", "zone.cells=[16,16]", "--method", "optimal", "--no-figure",
            "--out", str(out)]
    assert main(argv + ["--method-option", "optimal.descent=all"]) == 0
    hist = json.loads((out / "solution.json").read_text())["history"]
    assert any(h["phase"].startswith("outer") for h in hist)  # the descent on the masses ran
    capsys.readouterr()
    for extra, msg in ((["--method-option", "optimal.descent=fast"], "optimal.descent: got 'fast'; must be one of"),
                       (["--method-option", "paper.max_iter=3"], "names method 'paper', which is not run"),
                       (["--method-option", "optimal"], "expected METHOD.OPTION=VALUE"),
                       (["--method-option", "optimal.descent=yes"], "got True; must be one of none, best, all "
                        "(YAML reads yes/no/on/off/true/false as a boolean"),
                       (["--method-option", "optimal.descent="], "got None; must be one of none, best, all (YAML")):
        assert main(argv + extra) != 0
        assert msg in capsys.readouterr().err
    assert main(["solve", "--preset", "paper", "--method", "snr", "--out", ""]) != 0
    assert "--out: got ''; give a folder" in capsys.readouterr().err


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_interrupted_save_keeps_the_earlier_set(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the files are written: the folder keeps the earlier run's whole set, no staging left."""
    import edgeverse.solution as so

    out = tmp_path / "o"
    argv = ["solve", "--preset", "paper", "--set", "zone.cells=[12,12]", "--no-figure", "--out", str(out)]
    assert main(argv + ["--method", "snr"]) == 0
    before = _files(out)
    assert set(before) == {"solution.json", "servers.csv", "twins.csv", "timing.json"}

    def stop(*a, **k):  # after solution.json and servers.csv are written
        raise KeyboardInterrupt

    monkeypatch.setattr(so, "rows_to_csv", lambda rows, cols, _orig=so.rows_to_csv: (
        stop() if cols == so.TWIN_COLUMNS else _orig(rows, cols)))
    capsys.readouterr()
    assert main(argv + ["--method", "voronoi"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _files(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    assert main(argv + ["--method", "voronoi"]) == 0
    after = _files(out)
    assert json.loads(after["solution.json"])["method"] == "voronoi" and set(after) == set(before)


def test_sigint_held_back_until_the_block_ends():
    import os
    import signal

    import pytest

    from edgeverse.solution import sigint_deferred

    done = []
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append(1)  # still runs: the interrupt waits for the block's end
    assert done == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupted_or_out_of_memory_solve_leaves_no_new_folder(tmp_path, monkeypatch, capsys):
    import edgeverse.build as bu

    out = tmp_path / "new"
    argv = ["solve", "--preset", "paper", "--method", "snr", "--no-figure", "--out", str(out)]
    for exc, code, msg in ((KeyboardInterrupt, 130, "edgeverse: interrupted"),
                           (MemoryError, 2, "edgeverse: error: out of memory")):
        def boom(*a, _e=exc, **k):
            raise _e

        monkeypatch.setattr(bu, "build_problem", boom)
        assert main(argv) == code
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not out.exists()


def test_single_method_run_drops_an_earlier_all_run_s_folders(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["solve", "--preset", "paper", "--set", "zone.cells=[10,10]", "--no-figure", "--out", str(out)]
    assert main(argv + ["--method", "all"]) == 0
    (out / "notes").mkdir()
    (out / "notes" / "mine.txt").write_text("keep")
    assert (out / "snr" / "solution.json").is_file()
    assert main(argv + ["--method", "voronoi"]) == 0
    assert not (out / "snr").exists() and not (out / "optimal").exists()
    assert (out / "notes" / "mine.txt").read_text() == "keep" and (out / "solution.json").is_file()


def test_a_swallowed_interrupt_still_exits_130(monkeypatch, capsys):
    import os
    import signal

    import edgeverse.cli as cli

    def swallow(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:  # as Python does inside a weakref callback or __del__
            pass
        return 0

    monkeypatch.setattr(cli, "cmd_presets", swallow)
    assert main(["presets"]) == 130
    assert "could not stop the run" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupted_all_run_leaves_no_empty_method_folder(tmp_path, monkeypatch, capsys):
    """--method all interrupted while the second method's files are written: the first keeps its whole
    folder, the second leaves none (not an empty one)."""
    import edgeverse.solution as so

    out = tmp_path / "o"
    calls = []

    def stop_second(rows, cols, _orig=so.rows_to_csv):
        if cols == so.TWIN_COLUMNS:
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return _orig(rows, cols)

    monkeypatch.setattr(so, "rows_to_csv", stop_second)
    argv = ["solve", "--preset", "paper", "--set", "zone.cells=[10,10]", "--no-figure", "--out", str(out),
            "--method", "all"]
    assert main(argv) == 130
    assert sorted(p.name for p in out.iterdir()) == ["snr"]
    assert set(_files(out / "snr")) == {"solution.json", "servers.csv", "twins.csv", "timing.json"}


def test_set_conflicts_and_empty_names_are_errors(tmp_path, capsys):
    base = ["solve", "--preset", "paper", "--method", "snr", "--no-figure", "--out", str(tmp_path / "o")]
    assert main(base + ["--seed", "4", "--set", "seed=3"]) == 2
    assert "seed is given by --seed and by --set seed=; give it once" in capsys.readouterr().err
    assert main(base + ["--set", "twins.count=5", "--set", "twins.count=6"]) == 2
    assert "--set 'twins.count=6': twins.count is given by --set twice; give it once" in capsys.readouterr().err
    assert main(base + ["--set", "twins.count=5", "--set", " twins.count =6"]) == 2
    assert "twins.count is given by --set twice; give it once" in capsys.readouterr().err
    assert main(base + ["--set", "=5"]) == 2
    assert "--set '=5': the field name before '=' is empty" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_sites_across_the_antimeridian(tmp_path):
    from edgeverse.build import build_problem
    from edgeverse.scenario import load_scenario

    (tmp_path / "am.csv").write_text("lon,lat\n179.999,-37.81\n-179.999,-37.815\n")
    (tmp_path / "am.yaml").write_text(
        "base: paper\ngeo: {projection: local}\nzone: {auto: {cell_size_m: 20}}\n"
        "servers: {sites: {file: am.csv, format: lonlat}, compute_hz: 8e9, sensor_bandwidth_hz: 1e7,"
        " noise_psd_dbm_per_hz: -170}\n"
        "sensing: {density: {kind: uniform}}\ntwins: {positions: {kind: uniform}}\n")
    scn = load_scenario(tmp_path / "am.yaml")
    lon0 = scn.projection().lon0_deg
    assert abs(abs(lon0) - 180.0) < 1e-3  # centred on the meridian, not on longitude 0
    p = build_problem(scn)
    d = np.hypot(*(p.server_positions_m[0] - p.server_positions_m[1]))
    assert 500 < d < 700  # 0.002 deg of longitude and 0.005 deg of latitude apart: about 600 m, not 11,606 km
