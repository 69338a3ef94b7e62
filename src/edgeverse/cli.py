"""Command line: ``edgeverse solve | presets | show-config | methods`` (also ``python -m edgeverse``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import __version__
from .errors import EdgeverseError, ensure_out_dir
from .methods import METHODS
from .scenario import get_preset, load_scenario, preset_names, preset_text


def _scenario_from_args(args):
    if args.scenario and args.preset:
        raise EdgeverseError("give either a SCENARIO_FILE or --preset NAME, not both")
    overrides = {}
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise EdgeverseError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set twins.count=120")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise EdgeverseError(f"--set {item!r}: the field name before '=' is empty; e.g. --set twins.count=120")
        if key in overrides:
            what = "--seed and by --set seed=" if key == "seed" and args.seed is not None else "--set twice"
            raise EdgeverseError(f"--set {item!r}: {key} is given by {what}; give it once")
        overrides[key] = yaml.safe_load(value)
    if args.scenario:  # the overrides apply to the file as written, before it is validated
        return load_scenario(args.scenario, overrides)
    scn = get_preset(args.preset or "paper")
    return scn.with_overrides(overrides) if overrides else scn


def cmd_solve(args) -> int:
    scn = _scenario_from_args(args)
    methods = list(METHODS) if args.method == "all" else [args.method]
    for m in methods:
        if m not in METHODS:
            raise EdgeverseError(f"--method: got {m!r}; available: {', '.join(METHODS)}, all")
    from .methods import check_run_options, parse_method_options

    options = check_run_options(parse_method_options(args.method_option), methods, f"--method {args.method}")
    existed = Path(args.out).exists() if args.out else True
    out = ensure_out_dir(args.out)
    try:
        return _solve_into(args, scn, methods, options, out)
    except BaseException:
        if not existed:  # a folder this run created and left empty (interrupted, out of memory) goes again
            try:
                out.rmdir()
            except OSError:
                pass
        raise


def _solve_into(args, scn, methods, options, out) -> int:
    from .solution import prepare_out_dir, solve

    targets = {m: (out / m if len(methods) > 1 else out) for m in methods}
    for target in targets.values():  # every folder checked before anything is solved or written
        prepare_out_dir(target, create=False)
    if len(methods) > 1:  # an earlier single-method run's files here would pass for one of these results
        from .solution import SOLUTION_FILES

        for name in SOLUTION_FILES:
            if (out / name).is_file():
                (out / name).unlink()
    from .build import build_problem

    problem = build_problem(scn)  # gains and per-cell costs once, shared by every method
    from .solution import warm_up

    # the compiled kernels' loading (or first compilation) is not in the reported wall time
    from .kernels import SERIAL_MAX_ENTRIES

    warm_up(methods, sparse=problem.sparse, polish=args.polish or any(o.get("polish") for o in options.values()),
            threads=None if problem.links.comm.size >= SERIAL_MAX_ENTRIES else False)
    for m in methods:
        opts = dict(options.get(m, {}))
        sol = solve(problem, m, polish=bool(opts.pop("polish", False) or args.polish), **opts)
        target = targets[m]
        sol.save(target, figure=not args.no_figure)
        if len(methods) == 1:  # an earlier --method all run's per-method folders would pass for results of this
            _drop_method_folders(out)
        _print(sol.summary())
        if not np.isfinite(sol.objective_ms):
            bad = [r["name"] for r in sol.server_rows() if not np.isfinite(r["T_ms"])]
            print(f"edgeverse: warning: the objective is infinite: servers {', '.join(bad)} have an infinite "
                  "sub-synchronization time (zero rate or no rendering compute for a loaded region); "
                  "check the powers, noise and capacities", file=sys.stderr)
        _print(f"\nwrote {target}/solution.json, servers.csv, twins.csv, timing.json"
               + ("" if args.no_figure else ", partition.png") + "\n")
    return 0


def _drop_method_folders(out: Path) -> None:
    """Remove the per-method folders an earlier ``--method all`` run wrote in ``out``: those named after a
    method that hold nothing but solution files."""
    import shutil

    from .solution import SOLUTION_FILES

    for name in METHODS:
        sub = out / name
        if sub.is_dir() and not sub.is_symlink():
            names = {q.name for q in sub.iterdir()}
            if names and names <= set(SOLUTION_FILES):
                shutil.rmtree(sub)


def _print(text: str) -> None:
    """Print, but keep going when stdout is a closed pipe (e.g. piped into head): results are still written."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def cmd_presets(args) -> int:
    for name in preset_names():
        first = preset_text(name).splitlines()[0].lstrip("# ")
        print(f"{name:20s} {first}")
    return 0


#: show-config abbreviates lists with more values than this unless --full is given.
SHOW_MAX_VALUES = 24


def _numeric(node: Any) -> bool:
    if isinstance(node, list):
        return all(_numeric(v) for v in node)
    return isinstance(node, (int, float)) and not isinstance(node, bool)


def abbreviate(node: Any, max_values: int = SHOW_MAX_VALUES) -> tuple[Any, int]:
    """``node`` with every list of more than ``max_values`` values replaced by a one-line description.

    Returns the new node and how many lists were abbreviated.

    >>> abbreviate({"a": list(range(30)), "b": [1, 2]}, 24)
    ({'a': '<30 values, min 0, max 29>', 'b': [1, 2]}, 1)
    """
    if isinstance(node, dict):
        out, n = {}, 0
        for k, v in node.items():
            out[k], m = abbreviate(v, max_values)
            n += m
        return out, n
    if isinstance(node, list):
        arr = None
        if _numeric(node):
            try:
                arr = np.asarray(node, dtype=float)
            except ValueError:  # ragged
                arr = None
        if arr is not None and arr.ndim >= 1 and arr.size > max_values:
            shape = " x ".join(str(s) for s in arr.shape)
            finite = arr[np.isfinite(arr)]
            rng = f", min {finite.min():.6g}, max {finite.max():.6g}" if finite.size else ""
            return f"<{shape} values{rng}>", 1
        if len(node) > max_values and arr is None:
            return f"<{len(node)} entries>", 1
        out, n = [], 0
        for v in node:
            w, m = abbreviate(v, max_values)
            out.append(w)
            n += m
        return out, n
    return node, 0


def cmd_show_config(args) -> int:
    if not args.scenario and not args.set:
        print(preset_text(args.preset or "paper"), end="")  # the preset as written, with its comments
        return 0
    scn = _scenario_from_args(args)
    if args.full:
        print(scn.to_yaml(), end="")
        return 0
    data, n = abbreviate(scn.to_dict())
    if n:
        print(f"# the configuration in use; {n} long list(s) abbreviated (values read from data files, positions, "
              "...):\n# `edgeverse show-config --full FILE` prints every value (a scenario that loads without the files)")
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), end="")
    return 0


def cmd_methods(args) -> int:
    for name, fn in METHODS.items():
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        print(f"{name:14s} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeverse", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"edgeverse {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("solve", help="solve one scenario with one method (or all)")
    s.add_argument("scenario", nargs="?", help="scenario file (.yaml/.toml); default: --preset paper")
    s.add_argument("--preset", help=f"embedded preset ({', '.join(preset_names())})")
    s.add_argument("--method", default="paper", help=f"one of {', '.join(METHODS)}, or all (default: paper)")
    s.add_argument("--out", default="out", help="output folder (default: out)")
    s.add_argument("--seed", type=int, help="override the scenario's seed")
    s.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a field by dotted path")
    s.add_argument("--polish", action="store_true",
                   help="pass the result through the single-cell-move local search (fair comparisons)")
    s.add_argument("--method-option", action="append", metavar="METHOD.OPTION=VALUE",
                   help="option passed to a method, e.g. optimal.descent=all (repeatable; see the README's table)")
    s.add_argument("--no-figure", action="store_true", help="skip the partition map PNG")
    s.set_defaults(func=cmd_solve)

    s = sub.add_parser("presets", help="list the embedded presets")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("methods", help="list the methods")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("show-config", help="print a preset's (or file's) configuration, as it is used")
    s.add_argument("scenario", nargs="?", help="scenario file (.yaml/.toml); default: --preset paper")
    s.add_argument("--preset", help=f"embedded preset ({', '.join(preset_names())})")
    s.add_argument("--full", action="store_true",
                   help=f"print lists of more than {SHOW_MAX_VALUES} values in full (default: abbreviated)")
    s.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a field by dotted path, as solve does (the resulting configuration is printed, "
                        "without the preset's comments)")
    s.set_defaults(func=cmd_show_config)

    # Subcommands that live in their own modules register themselves here.
    import importlib

    for mod in ("reproduce", "sweep"):
        try:
            module = importlib.import_module(f"edgeverse.{mod}")
        except ModuleNotFoundError as exc:  # pragma: no cover - module not part of this build
            if exc.name != f"edgeverse.{mod}":
                raise
            continue
        module.add_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    from .errors import ConvergenceWarning, PlausibilityWarning

    plain = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (PlausibilityWarning, ConvergenceWarning)):  # ours: one line, no source location
            print(f"edgeverse: warning: {message}", file=sys.stderr)
        else:
            plain(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    import signal
    import threading

    interrupted = []
    prev_sigint = None

    def on_sigint(signum, frame):
        # once: a second Ctrl-C (or timeout's signal to the whole process group) while the first unwinds
        # would print a traceback from the middle of the clean-up
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupted.append(True)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        prev_sigint = signal.signal(signal.SIGINT, on_sigint)
    try:
        code = int(args.func(args) or 0)
        if interrupted:  # Python dropped the KeyboardInterrupt (raised inside a callback): the run went on
            print("edgeverse: interrupted; the interrupt came where Python could not stop the run, which "
                  "finished and wrote its results", file=sys.stderr)
            return 130
        return code
    except EdgeverseError as exc:
        print(f"edgeverse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeverse: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("edgeverse: error: out of memory: the scenario is too large for this machine (use fewer cells, "
              "DTs or servers); no partial result was written", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a program that stopped reading
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        warnings.showwarning = plain
        if prev_sigint is not None:
            signal.signal(signal.SIGINT, prev_sigint)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
