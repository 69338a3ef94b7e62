"""Command line: ``edgeverse solve | presets | show-config | methods`` (also ``python -m edgeverse``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import EdgeverseError
from .methods import METHODS
from .scenario import get_preset, load_scenario, preset_names, preset_text


def _scenario_from_args(args):
    if args.scenario and args.preset:
        raise EdgeverseError("give either a SCENARIO_FILE or --preset NAME, not both")
    scn = load_scenario(args.scenario) if args.scenario else get_preset(args.preset or "paper")
    overrides = {}
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise EdgeverseError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set twins.count=120")
        key, value = item.split("=", 1)
        import yaml

        overrides[key.strip()] = yaml.safe_load(value)
    return scn.with_overrides(overrides) if overrides else scn


def cmd_solve(args) -> int:
    from .solution import solve

    scn = _scenario_from_args(args)
    methods = list(METHODS) if args.method == "all" else [args.method]
    for m in methods:
        if m not in METHODS:
            raise EdgeverseError(f"--method: got {m!r}; available: {', '.join(METHODS)}, all")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EdgeverseError(f"--out: {str(out)!r} exists and is not a folder; give a folder for the result files")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeverseError(f"--out: cannot create the folder {str(out)!r}: {exc.strerror or exc}") from None
    from .build import build_problem

    problem = build_problem(scn)  # gains and per-cell costs once, shared by every method
    for m in methods:
        sol = solve(problem, m, polish=args.polish)
        target = out / m if len(methods) > 1 else out
        sol.save(target, figure=not args.no_figure)
        _print(sol.summary())
        if not np.isfinite(sol.objective_ms):
            bad = [r["name"] for r in sol.server_rows() if not np.isfinite(r["T_ms"])]
            print(f"edgeverse: warning: the objective is infinite: servers {', '.join(bad)} have an infinite "
                  "sub-synchronization time (zero rate or no rendering compute for a loaded region); "
                  "check the powers, noise and capacities", file=sys.stderr)
        _print(f"\nwrote {target}/solution.json, servers.csv, twins.csv, timing.json"
               + ("" if args.no_figure else ", partition.png") + "\n")
    return 0


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


def cmd_show_config(args) -> int:
    if args.scenario:
        print(load_scenario(args.scenario).to_yaml(), end="")
    else:
        print(preset_text(args.preset or "paper"), end="")
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
    s.add_argument("--no-figure", action="store_true", help="skip the partition map PNG")
    s.set_defaults(func=cmd_solve)

    s = sub.add_parser("presets", help="list the embedded presets")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("methods", help="list the methods")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("show-config", help="print a preset's (or file's) full configuration")
    s.add_argument("scenario", nargs="?")
    s.add_argument("--preset")
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
    try:
        return int(args.func(args) or 0)
    except EdgeverseError as exc:
        print(f"edgeverse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeverse: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a program that stopped reading
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
