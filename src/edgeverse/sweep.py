"""Parameter sweeps: many (configuration, seed, method) points on local processes or Dask.

A sweep file (YAML) names a base scenario, parameter axes, seeds and methods::

    name: sweep-k                      # optional
    base: paper                        # a preset, or base_file: relative/to/this/file.yaml
    overrides: {zone.cells: [50, 50]}  # optional, applied to the base first
    axes:                              # any scenario field by dotted path
      twins.count: [50, 100, 150, 200]                                  # a list
      sensing.density.components.0.std_m: {start: 100, stop: 600, num: 6}  # linspace (ends included)
      # or {start: 100, stop: 600, step: 100}: stop included when it falls on the grid
    seeds: 20                          # 0..19, or a list such as [0, 7, 42]
    methods: [snr, paper, paper-damped]
    method_options: {paper-damped: {step: 0.25}}   # optional keyword options per method

The points are the product axes x seeds x methods; each point is
:func:`edgeverse.points.run_point` - a pure function of (configuration, seed,
method, options) - so its numbers do not depend on the executor or the number
of workers.  A range whose start, stop (and step) are integers and whose
values are all whole gives integers; float range values are rounded to 12
significant digits (``0.3``, not ``0.30000000000000004``).

Results go to ``DIR/results.sqlite`` (see :mod:`edgeverse.store`) as each
point completes, keyed by a hash of (configuration, seed, method, options,
package version).  Starting a sweep again computes only the missing points; a
finished sweep computes nothing.  A point that raises is stored with its error
(``"ValueError: ..."``; numbers empty) and the sweep goes on; such points count
as done (they are pure: they would raise again) unless ``--retry-errors``.

Load the results into pandas in one call::

    from edgeverse.sweep import load_results
    df = load_results("out/sweep_k")     # one row per point, sorted by (axes..., method, seed)

``--summary`` computes any missing points first, then writes
``DIR/summary.csv`` (per axis point and method: ``n`` successful points,
``n_errors``, ``n_infinite``, mean, standard deviation and 95 % t-interval of
``objective_ms`` over the finite values, mean ``n_hosted``) and one line plot
per axis, ``DIR/summary_<axis>.png``: objective against that axis, one line
per method with its 95 % band, the OTHER axes held at their FIRST value.

Table columns: list-valued axis values (e.g. ``zone.cells``) and list
results (``alpha``, ``server_time_ms``, ...) are stored as JSON text
(non-finite entries as ``null``); :func:`load_results` decodes the result
lists, not the axis values.

Executors: ``local`` (default; a process pool, all cores or ``--workers N``),
``dask`` (``--scheduler tcp://HOST:PORT`` for an existing cluster, or
``--workers N`` for a local one; ``pip install edgeverse[dask]``) and
``serial`` (in-process, for debugging).  Workers only compute; the process
that runs the sweep writes every row.  The workers of an existing cluster need
the same edgeverse version (checked: keys include it).  Dask workers started
by their nanny get ``MALLOC_TRIM_THRESHOLD_=65536``, which halves the speed of
a point; the local cluster started here unsets it, and for your own cluster
set the Dask config ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null``.
Two sweeps writing to the same folder at once are safe (no duplicate rows)
but compute the same points twice.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import __version__
from .errors import EdgeverseError, ScenarioError
from .store import DB_NAME, ResultStore, encode_axis_value, load_results
from .units import number_from_text
from .scenario import _NoBool, Scenario, get_preset, load_scenario

EXECUTORS = ("local", "dask", "serial")


# --------------------------------------------------------------------------- the sweep file
#: Caps that turn a typo (``seeds: 1e9``, ``step: 1e-9``) into a clear error instead of a hang or a MemoryError.
MAX_SEEDS = 100_000
MAX_AXIS_VALUES = 100_000
MAX_POINTS = 1_000_000


class Range(BaseModel):
    """``{start, stop, num}`` (linspace, both ends included) or ``{start, stop, step}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: float | int
    stop: float | int
    num: int | None = Field(default=None, ge=1)
    step: float | int | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "Range":
        if (self.num is None) == (self.step is None):
            raise ValueError("give exactly one of 'num' (number of values) and 'step'")
        for name in ("start", "stop", "step"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v}")
        if self.step is not None:
            if self.step == 0:
                raise ValueError("step must not be 0")
            if (self.stop - self.start) * self.step < 0:
                raise ValueError(f"step {self.step} goes away from stop {self.stop} (start {self.start})")
        n = self.num if self.num is not None else (self.stop - self.start) / self.step + 1
        if n > MAX_AXIS_VALUES:
            raise ValueError(f"gives {n:.3g} values; at most {MAX_AXIS_VALUES:,} per axis")
        return self

    def values(self) -> list[int | float]:
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.start, self.stop, self.step or 0))
        if self.num is not None:
            n = self.num
            raw = [self.start] if n == 1 else [self.start + (self.stop - self.start) * i / (n - 1) for i in range(n)]
            if n > 1:
                raw[-1] = self.stop
        else:
            n = int(math.floor((self.stop - self.start) / self.step * (1 + 1e-12) + 1e-9)) + 1
            raw = [self.start + i * self.step for i in range(n)]
        if ints and all(float(v).is_integer() for v in raw):
            return [int(round(v)) for v in raw]
        return [float(f"{float(v):.12g}") for v in raw]




class SweepSpec(BaseModel):
    """A validated sweep file (see the module documentation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "sweep"
    base: str | None = Field(default=None, description="embedded preset name")
    base_file: str | None = Field(default=None, description="scenario file, relative to the sweep file")
    overrides: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, Any] = Field(default_factory=dict, description="dotted path -> list of values or Range")
    seeds: Annotated[int, _NoBool] | list[Annotated[int, _NoBool]] = 1
    methods: list[str] = Field(min_length=1)
    method_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"a number of seeds must be >= 1 (seeds: N means 0..N-1), got {v}")
            if v > MAX_SEEDS:
                raise ValueError(f"at most {MAX_SEEDS:,} seeds")
        else:
            if len(v) > MAX_SEEDS:
                raise ValueError(f"got {len(v)} seeds; at most {MAX_SEEDS:,}")
            if not v:
                raise ValueError("an empty list; give a number N (0..N-1) or a list of seeds >= 0")
            bad = [s for s in v if s < 0]
            if bad:
                raise ValueError(f"seeds must be >= 0, got {bad[0]}")
            dup = sorted({s for s in v if v.count(s) > 1})
            if dup:
                raise ValueError(f"seed {dup[0]} appears more than once")
        return v

    @field_validator("methods", mode="before")
    @classmethod
    def _one_method(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        from .methods import METHODS

        for m in v:
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}; available: {', '.join(METHODS)}")
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise ValueError(f"method {dup[0]!r} appears more than once")
        return v

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, spec in v.items():
            if path == "seed":
                raise ValueError("'seed' cannot be an axis; use the top-level 'seeds' list")
            if isinstance(spec, dict):
                try:
                    spec = Range.model_validate(spec)
                except ValidationError as exc:
                    err = exc.errors(include_url=False)[0]
                    where = ".".join(str(p) for p in err["loc"])
                    msg = err["msg"].removeprefix("Value error, ")
                    raise ValueError(f"axis {path!r}: bad range{f' ({where})' if where else ''}: {msg}; a range is "
                                     "{start, stop, num} or {start, stop, step}") from None
            elif not isinstance(spec, (list, Range)):
                raise ValueError(f"axis {path!r}: got {spec!r}; give a list of values or a range "
                                 "{start, stop, num} / {start, stop, step}")
            if isinstance(spec, list):
                spec = [_yaml12_number(x) for x in spec]
            out[path] = spec
            if isinstance(spec, list):
                if not spec:
                    raise ValueError(f"axis {path!r} has no values")
                if len(spec) > MAX_AXIS_VALUES:
                    raise ValueError(f"axis {path!r} has {len(spec)} values; at most {MAX_AXIS_VALUES:,}")
                enc = [json.dumps(x, sort_keys=True, default=str) for x in spec]
                dup = [x for x, e in zip(spec, enc) if enc.count(e) > 1]
                if dup:
                    raise ValueError(f"axis {path!r}: value {dup[0]!r} appears more than once")
        return out

    @model_validator(mode="after")
    def _base(self) -> "SweepSpec":
        if (self.base is None) == (self.base_file is None):
            raise ValueError("give exactly one of 'base' (a preset name, e.g. paper) and 'base_file' (a scenario file)")
        return self

    @field_validator("method_options")
    @classmethod
    def _options(cls, v: dict[str, dict[str, Any]], info) -> dict[str, dict[str, Any]]:
        methods = info.data.get("methods") or []
        extra = [m for m in v if m not in methods]
        if extra:
            raise ValueError(f"names method {extra[0]!r}, which is not in methods {methods}")
        from .methods import check_method_options

        out = {}
        for m, opts in v.items():
            try:
                out[m] = check_method_options(m, opts, where=f"method_options.{m}")
            except EdgeverseError as e:
                raise ValueError(str(e)) from None
        return out

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def axis_values(self) -> dict[str, list[Any]]:
        return {k: (v.values() if isinstance(v, Range) else list(v)) for k, v in self.axes.items()}


def _yaml12_number(x: Any) -> Any:
    """An axis value with numbers written as text (:func:`edgeverse.units.number_from_text`) turned into
    numbers, also inside lists, so that the results' axis columns are numeric.

    >>> _yaml12_number("5e6"), _yaml12_number(["16e9", 8]), _yaml12_number("2.5e-3"), _yaml12_number("S1")
    (5000000, [16000000000, 8], 0.0025, 'S1')
    """
    if isinstance(x, str):
        v = number_from_text(x)
        return x if v is None else v
    if isinstance(x, list):
        return [_yaml12_number(v) for v in x]
    return x


def _spec_error(exc: ValidationError, source: str) -> EdgeverseError:
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if p not in ("list[any]", "Range", "int", "list[int]")]
        path = ".".join(loc) or "(top level)"
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        value = repr(err.get("input"))
        value = value if len(value) <= 60 else value[:57] + "..."
        m = re.match(r"axis '(.*?)': (.*)", msg, re.S)
        if not loc:
            text = f"{msg}"
        elif path == "axes" and m:
            text = f"axes.{m.group(1)}: {m.group(2)}"
        elif err["type"] == "missing":
            text = f"{path}: required field is missing"
        elif err["type"] == "extra_forbidden":
            text = (f"{path}: unknown field (value {value}); allowed: name, base, base_file, overrides, axes, "
                    "seeds, methods, method_options (a range takes start, stop and num or step)")
        else:
            text = f"{path}: got {value}; {msg[0].lower() + msg[1:]}"
        if text not in lines:
            lines.append(text)
    return ScenarioError(f"invalid sweep file {source} ({len(lines)} problem{'s' * (len(lines) > 1)}):\n  "
                         + "\n  ".join(lines), [(ln.split(":")[0], ln) for ln in lines])


def read_sweep_file(path: str | Path) -> tuple[SweepSpec, Path]:
    """Read and validate a sweep YAML file; returns the spec and the file's folder."""
    p = Path(path)
    if not p.exists():
        raise ScenarioError(f"sweep file {str(path)!r} does not exist")
    try:
        from .scenario import load_yaml

        data = load_yaml(p.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"sweep file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"sweep file {str(path)!r}: expected a mapping (base, axes, seeds, methods) at the top level")
    return parse_spec(data, source=repr(str(path))), p.resolve().parent


def parse_spec(data: dict[str, Any] | SweepSpec, source: str = "(dict)") -> SweepSpec:
    if isinstance(data, SweepSpec):
        return data
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, source) from None


# --------------------------------------------------------------------------- expansion into points
@dataclass(frozen=True)
class Point:
    """One point of a sweep: its axis values, the scenario as a dict, seed, method and options."""

    axis_values: dict[str, Any]
    config: dict[str, Any]
    seed: int
    method: str
    options: dict[str, Any] | None
    key: str


@dataclass
class Sweep:
    """A sweep expanded into its points (validated: every configuration is a valid scenario)."""

    spec: SweepSpec
    base: Scenario
    axes: dict[str, list[Any]]
    points: list[Point]
    source: str = "(dict)"

    @property
    def axis_names(self) -> list[str]:
        return list(self.axes)

    def describe(self) -> str:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in self.axes.items())
        n_seeds, n_methods = len(self.spec.seed_list()), len(self.spec.methods)
        return (f"{len(self.points)} points = " + (f"{sizes} x " if sizes else "")
                + f"{n_seeds} seed{'s' * (n_seeds > 1)} x {n_methods} method{'s' * (n_methods > 1)}")


def _absolute_files(cfg: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """Make an array density's relative ``file`` absolute, so workers anywhere can read it."""
    dens = cfg.get("sensing", {}).get("density", {})
    if base_dir is not None and dens.get("kind") == "array" and dens.get("file"):
        f = Path(dens["file"])
        if not f.is_absolute():
            dens["file"] = str((base_dir / f).resolve())
    return cfg


def expand(spec: SweepSpec | dict[str, Any], base_dir: str | Path | None = None, source: str = "(dict)") -> Sweep:
    """Validate a sweep and expand it into points, before anything runs.

    Every axis value is first applied alone to the base (so that an unknown
    dotted path or a bad value is reported against its axis), then every
    combination is validated as a scenario.
    """
    from .points import point_key

    spec = parse_spec(spec, source)
    where = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        if spec.base is not None:
            base = get_preset(spec.base)
        else:
            f = Path(spec.base_file)
            base = load_scenario(f if f.is_absolute() else where / f)
    except ScenarioError as exc:
        field_name = "base" if spec.base is not None else "base_file"
        raise ScenarioError(f"sweep file {source}: {field_name}: {exc}", exc.errors) from None
    if spec.overrides:
        try:
            base = base.with_overrides(spec.overrides)
        except ScenarioError as exc:
            raise ScenarioError(f"sweep file {source}: overrides {spec.overrides} are rejected by the scenario: {exc}",
                                exc.errors) from None
    axes = spec.axis_values()
    for path, values in axes.items():
        for v in values:
            try:
                base.with_overrides({path: v})
            except ScenarioError as exc:
                raise ScenarioError(f"sweep file {source}: axes.{path}: value {v!r} is rejected by the scenario: {exc}",
                                    exc.errors) from None
    names = list(axes)
    seeds = spec.seed_list()
    n_points = math.prod(len(v) for v in axes.values()) * len(seeds) * len(spec.methods)
    if n_points > MAX_POINTS:
        raise ScenarioError(f"sweep file {source}: {n_points:,} points (axes x seeds x methods); at most "
                            f"{MAX_POINTS:,} in one sweep - split it")
    points: list[Point] = []
    seen: dict[str, Point] = {}
    for combo in itertools.product(*(axes[a] for a in names)):
        av = dict(zip(names, combo))
        try:
            scn = base.with_overrides(av) if av else base
        except ScenarioError as exc:
            raise ScenarioError(f"sweep file {source}: the axis point {av} is not a valid scenario: {exc}",
                                exc.errors) from None
        cfg_base = _absolute_files(scn.to_dict(), scn.base_dir)
        for seed in seeds:
            cfg = dict(cfg_base)
            cfg["seed"] = int(seed)
            for method in spec.methods:
                opts = spec.method_options.get(method) or None
                key = point_key(cfg, seed, method, opts)
                pt = Point(av, cfg, int(seed), method, opts, key)
                if key in seen:
                    raise ScenarioError(f"sweep file {source}: the axis points {seen[key].axis_values} and {av} give the "
                                        "same scenario (e.g. 100 and 100.0); give each axis distinct values")
                seen[key] = pt
                points.append(pt)
    return Sweep(spec, base, axes, points, source)


def load_sweep(sweep: str | Path | dict[str, Any] | SweepSpec | Sweep, base_dir: str | Path | None = None) -> Sweep:
    """A :class:`Sweep` from a sweep file path, a dict, a :class:`SweepSpec` or a :class:`Sweep`."""
    if isinstance(sweep, Sweep):
        return sweep
    if isinstance(sweep, (str, Path)):
        spec, folder = read_sweep_file(sweep)
        return expand(spec, folder, source=repr(str(sweep)))
    return expand(sweep, base_dir)


# --------------------------------------------------------------------------- the point function
def safe_run_point(config: dict[str, Any], seed: int, method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`edgeverse.points.run_point`, but an exception becomes a record with ``error`` set.

    The error record has the key, seed and method, ``status = "error"``,
    ``error = "ExceptionType: message"`` and every numeric field ``None``.
    """
    from . import points

    try:
        return points.run_point(config, seed, method, options)
    except Exception as exc:  # noqa: BLE001 - a failing point is data, not a reason to stop the sweep
        msg = str(exc).strip().splitlines()
        return {
            "key": points.point_key(config, seed, method, options),
            "method": method,
            "seed": int(seed),
            "status": "error",
            "error": f"{type(exc).__name__}: {msg[0] if msg else ''}"[:2000],
        }


def _worker_version() -> str:
    import edgeverse

    return edgeverse.__version__


# --------------------------------------------------------------------------- executors
def _run_serial(todo: list[Point], workers: int | None, scheduler: str | None) -> Iterator[tuple[Point, dict | None, str | None]]:
    for pt in todo:
        yield pt, safe_run_point(pt.config, pt.seed, pt.method, pt.options), None


def _run_local(todo: list[Point], workers: int | None, scheduler: str | None) -> Iterator[tuple[Point, dict | None, str | None]]:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    n = workers or os.cpu_count() or 1
    from .workers import exit_with_parent

    pool = ProcessPoolExecutor(max_workers=min(n, max(1, len(todo))), initializer=exit_with_parent,
                               initargs=(os.getpid(),))
    ok = False
    try:
        futures = {pool.submit(safe_run_point, pt.config, pt.seed, pt.method, pt.options): pt for pt in todo}
        for fut in as_completed(futures):
            pt = futures[fut]
            try:
                yield pt, fut.result(), None
            except BrokenProcessPool as exc:
                yield pt, None, f"worker process died ({exc})"
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                yield pt, None, f"{type(exc).__name__}: {exc}"
        ok = True
    finally:
        pool.shutdown(wait=ok, cancel_futures=True)


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise EdgeverseError("the dask executor needs dask.distributed: pip install edgeverse[dask]") from None
    return distributed


def _run_dask(todo: list[Point], workers: int | None, scheduler: str | None) -> Iterator[tuple[Point, dict | None, str | None]]:
    distributed = _import_distributed()
    cluster = None
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise EdgeverseError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler ({exc})") from None
    else:
        import dask

        n = workers or os.cpu_count() or 1
        # Dask's default MALLOC_TRIM_THRESHOLD_=65536 makes glibc return memory after every
        # numpy temporary, which halves the speed of a point; the points here are small.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=40)
        client = distributed.Client(cluster)
    try:
        versions = set(client.run(_worker_version).values())
        if versions and versions != {__version__}:
            raise EdgeverseError(f"the Dask workers run edgeverse {sorted(versions)}, this process {__version__}; "
                                 "install the same version everywhere (point keys include the version)")
        keys = [f"edgeverse-point-{pt.key}" for pt in todo]
        futures = client.map(safe_run_point, [pt.config for pt in todo], [pt.seed for pt in todo],
                             [pt.method for pt in todo], [pt.options for pt in todo], key=keys, pure=False)
        by_key = {f.key: pt for f, pt in zip(futures, todo)}
        for fut in distributed.as_completed(futures):
            pt = by_key[fut.key]
            try:
                yield pt, fut.result(), None
            except Exception as exc:  # noqa: BLE001 - a lost worker (KilledWorker) or similar
                yield pt, None, f"{type(exc).__name__}: {exc}"
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


_EXECUTORS = {"serial": _run_serial, "local": _run_local, "dask": _run_dask}


# --------------------------------------------------------------------------- running
@dataclass
class SweepReport:
    """What a run of a sweep did."""

    name: str
    out_dir: Path
    total: int
    skipped: int
    computed: int
    errors: int
    new_errors: int
    lost: int
    wall_time_s: float
    executor: str
    workers: int | None
    lost_messages: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """All the sweep's points are in the store (some possibly with an error)."""
        return self.lost == 0

    def __str__(self) -> str:
        lines = [
            f"sweep {self.name!r}: {self.total} points; {self.skipped} already stored, {self.computed} computed "
            f"({self.executor}{f', {self.workers} worker' + 's' * (self.workers != 1) if self.workers else ''}) in {self.wall_time_s:.1f} s",
            f"points with an error: {self.errors}" + (f" ({self.new_errors} new)" if self.new_errors else "")
            + (" - see the 'error' column" if self.errors else ""),
        ]
        if self.lost:
            lines.append(f"NOT COMPUTED: {self.lost} point(s) lost to the executor (first: {self.lost_messages[0]}); "
                         "run the sweep again to compute them")
        lines.append(f"results: {self.out_dir / DB_NAME}")
        return "\n".join(lines)


def _write_sweep_json(sweep: Sweep, out: Path) -> None:
    from .solution import atomic_write_text, dumps_strict

    info = {
        "name": sweep.spec.name,
        "source": sweep.source,
        "edgeverse_version": __version__,
        "spec": sweep.spec.model_dump(mode="json"),
        "axes": sweep.axes,
        "seeds": sweep.spec.seed_list(),
        "methods": sweep.spec.methods,
        "n_points": len(sweep.points),
        "base_scenario": sweep.base.to_dict(),
    }
    text = dumps_strict(info)
    path = out / "sweep.json"
    if path.exists() and path.read_text(encoding="utf-8") != text:
        # another sweep into this folder: the summary and plots of the earlier one no longer describe it
        # (--summary writes them anew at the end)
        (out / "summary.csv").unlink(missing_ok=True)
        for png in out.glob("summary_*.png"):
            png.unlink()
    atomic_write_text(path, text)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [{"c": 1}]}}`` -> ``{"a.b.0.c": 1}`` (dotted paths as in ``--set``)."""
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) and d and all(
        isinstance(x, (dict, list)) for x in d) else None
    if items is None:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _check_same_base(sw: Sweep, out: Path) -> None:
    """Refuse a folder whose results come from a sweep on another base scenario (rows would mix).

    The same base with other axis values, seeds or methods extends the folder's results (allowed)."""
    info_path = out / "sweep.json"
    if not info_path.is_file():
        return
    try:
        old = json.loads(info_path.read_text())["base_scenario"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgeverseError(f"--out {str(out)!r}: its sweep.json is unreadable; use another folder") from None
    new = json.loads(dumps_strict_base(sw))
    a, b = _flat(old), _flat(new)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        def short(v: Any) -> str:
            r = repr(v)
            return r if len(r) <= 60 else r[:57] + "..."

        shown = "; ".join(f"{k}: {short(a.get(k))} there, {short(b.get(k))} here" for k in diff[:3])
        raise EdgeverseError(
            f"--out {str(out)!r} holds results of a sweep on another base scenario ({shown}"
            f"{'; ...' if len(diff) > 3 else ''}); results of different bases would mix in one table - "
            "use another folder")


def dumps_strict_base(sw: Sweep) -> str:
    from .solution import dumps_strict

    return dumps_strict(sw.base.to_dict())


def run_sweep(
    sweep: str | Path | dict[str, Any] | SweepSpec | Sweep,
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    retry_errors: bool = False,
    base_dir: str | Path | None = None,
) -> SweepReport:
    """Compute the points of ``sweep`` that ``out_dir`` does not hold yet.

    ``sweep`` is a sweep file path, a dict in the sweep-file format (relative
    ``base_file`` paths from ``base_dir``, default the working folder), a
    :class:`SweepSpec` or an expanded :class:`Sweep`.  ``executor`` is
    ``"local"`` (process pool of ``workers``, default all cores), ``"dask"``
    (``scheduler`` address, or a local cluster of ``workers`` processes) or
    ``"serial"``.  Each completed point is written to ``out_dir/results.sqlite``
    at once.  ``retry_errors`` recomputes the points stored with an error.
    """
    if executor not in _EXECUTORS:
        raise EdgeverseError(f"executor: got {executor!r}; available: {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise EdgeverseError(f"--scheduler needs the dask executor, not {executor!r}")
    if workers is not None and workers < 1:
        raise EdgeverseError(f"workers: got {workers}; must be >= 1")
    if executor == "dask":
        _import_distributed()
    if scheduler and not _SCHEDULER.fullmatch(scheduler):
        raise EdgeverseError(f"--scheduler: got {scheduler!r}; give the address of a running Dask scheduler, "
                             "PROTOCOL://HOST:PORT (e.g. tcp://10.0.0.5:8786)")
    t0 = time.perf_counter()
    sw = load_sweep(sweep, base_dir)
    out = Path(out_dir)
    _check_same_base(sw, out)
    fresh = not out.exists()
    try:
        return _run_into(sw, out, executor, workers, scheduler, retry_errors, progress, t0)
    except EdgeverseError:
        # nothing was computed (e.g. no scheduler to connect to): leave no empty result folder behind
        if fresh and out.is_dir():
            with ResultStore(out, sw.axis_names) as store:
                empty = not store.keys()
            if empty:
                import shutil

                shutil.rmtree(out, ignore_errors=True)
        raise


_SCHEDULER = re.compile(r"[a-z][a-z0-9+.-]*://(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}/?")


def _run_into(sw: Sweep, out: Path, executor: str, workers: int | None, scheduler: str | None, retry_errors: bool,
              progress: bool, t0: float) -> SweepReport:
    wanted = {pt.key for pt in sw.points}
    with ResultStore(out, sw.axis_names) as store:
        _write_sweep_json(sw, out)
        if retry_errors:
            store.delete(store.error_keys() & wanted)
        have = store.keys()
        todo = [pt for pt in sw.points if pt.key not in have]
        n_workers = None if executor == "serial" else (
            None if scheduler else (workers or os.cpu_count() or 1))
        computed = new_errors = 0
        lost: list[str] = []
        if todo:
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc=f"sweep {sw.spec.name}", unit="pt", file=sys.stderr,
                           dynamic_ncols=True, smoothing=0.05)
            try:
                for pt, rec, problem in _EXECUTORS[executor](todo, workers, scheduler):
                    if rec is None:
                        lost.append(problem or "unknown executor failure")
                    else:
                        store.add(pt.axis_values, rec, pt.key)
                        computed += 1
                        new_errors += rec.get("error") is not None
                    if bar is not None:
                        bar.update(1)
                        if new_errors or lost:
                            bar.set_postfix(errors=new_errors, lost=len(lost), refresh=False)
            finally:
                if bar is not None:
                    bar.close()
        errors = len(store.error_keys() & wanted)
    return SweepReport(sw.spec.name, out, len(sw.points), len(sw.points) - len(todo), computed, errors, new_errors,
                       len(lost), time.perf_counter() - t0, executor, n_workers, lost[:5])


# --------------------------------------------------------------------------- summary
SUMMARY_STATS = ["n", "n_errors", "n_infinite", "objective_ms_mean", "objective_ms_std", "objective_ms_ci95_low",
                 "objective_ms_ci95_high", "n_hosted_mean"]


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the 95 % t-interval of the mean (NaN where undefined)."""
    import numpy as np
    from scipy import stats

    n = len(values)
    if n == 0:
        return (math.nan,) * 4
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def summarize(sweep: str | Path | dict[str, Any] | SweepSpec | Sweep, out_dir: str | Path, *,
              plots: bool = True, base_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Aggregate the stored points of ``sweep`` per axis point and method; write summary.csv and plots.

    Returns the summary rows (dicts, in sweep-file order: axes, then
    methods).  Statistics of ``objective_ms`` are over the points without an
    error and with a finite objective; ``n_infinite`` counts the others.
    Each plot ``summary_<axis>.png`` holds the other axes at their first value.
    """
    from .solution import atomic_write_text, rows_to_csv

    sw = load_sweep(sweep, base_dir)
    out = Path(out_dir)
    with ResultStore(out, create=False) as store:
        rows = {r["key"]: r for r in store.rows(decode=False)}
    groups: dict[tuple, list[dict]] = {}
    for pt in sw.points:
        gk = tuple(json.dumps(encode_axis_value(pt.axis_values[a])) for a in sw.axis_names) + (pt.method,)
        groups.setdefault(gk, []).append({"point": pt, "row": rows.get(pt.key)})
    summary = []
    missing = 0
    for items in groups.values():
        pt0 = items[0]["point"]
        done = [it["row"] for it in items if it["row"] is not None]
        missing += len(items) - len(done)
        ok = [r for r in done if r.get("error") is None]
        obj = [r["objective_ms"] for r in ok if r.get("objective_ms") is not None and math.isfinite(r["objective_ms"])]
        hosted = [r["n_hosted"] for r in ok if r.get("n_hosted") is not None]
        mean, std, lo, hi = _stats(obj)
        row = {a: encode_axis_value(pt0.axis_values[a]) for a in sw.axis_names}
        row.update({"method": pt0.method, "n": len(ok), "n_errors": len(done) - len(ok), "n_infinite": len(ok) - len(obj),
                    "objective_ms_mean": mean, "objective_ms_std": std, "objective_ms_ci95_low": lo,
                    "objective_ms_ci95_high": hi,
                    "n_hosted_mean": (sum(hosted) / len(hosted)) if hosted else math.nan})
        summary.append(row)
    if missing:
        raise EdgeverseError(f"{missing} of the sweep's {len(sw.points)} points are not in {out / DB_NAME} yet; "
                             "run the sweep (without --summary-only) first")
    cols = sw.axis_names + ["method"] + SUMMARY_STATS
    csv_rows = [{c: ("" if isinstance(r[c], float) and math.isnan(r[c]) else r[c]) for c in cols} for r in summary]
    atomic_write_text(out / "summary.csv", rows_to_csv(csv_rows, cols))
    if plots:
        for axis in sw.axis_names:
            _plot_axis(sw, summary, axis, out / f"summary_{_safe(axis)}.png")
    return summary


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _plot_axis(sw: Sweep, summary: list[dict[str, Any]], axis: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    others = {a: encode_axis_value(sw.axes[a][0]) for a in sw.axis_names if a != axis}
    values = sw.axes[axis]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = [float(v) for v in values] if numeric else list(range(len(values)))
    enc = [encode_axis_value(v) for v in values]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in sw.spec.methods:
        sel = {r[axis]: r for r in summary if r["method"] == method and all(r[a] == v for a, v in others.items())}
        rows = [sel[e] for e in enc]
        y = np.array([r["objective_ms_mean"] for r in rows], dtype=float)
        lo = np.array([r["objective_ms_ci95_low"] for r in rows], dtype=float)
        hi = np.array([r["objective_ms_ci95_high"] for r in rows], dtype=float)
        line, = ax.plot(xs, y, marker="o", label=method)
        band = np.isfinite(lo) & np.isfinite(hi)
        if band.any():
            ax.fill_between(np.asarray(xs)[band], lo[band], hi[band], color=line.get_color(), alpha=0.2, linewidth=0)
    if not numeric:
        ax.set_xticks(xs, [str(v) for v in values], rotation=30, ha="right")
    ax.set_xlabel(axis)
    ax.set_ylabel("objective_ms: mean and 95 % CI")
    title = f"{sw.spec.name}: objective vs {axis}"
    if others:
        title += "\n(" + ", ".join(f"{a} = {sw.axes[a][0]}" for a in others) + ")"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from .plot import save_figure

    save_figure(fig, path, dpi=120)


# --------------------------------------------------------------------------- command line
def cmd_sweep(args) -> int:
    executor = args.executor or ("dask" if args.scheduler else "local")
    sw = load_sweep(args.sweep_file)
    if not args.summary_only:
        if not args.quiet:
            print(f"sweep {sw.spec.name!r}: {sw.describe()} -> {args.out}", file=sys.stderr)
        report = run_sweep(sw, args.out, executor=executor, workers=args.workers, scheduler=args.scheduler,
                           progress=not args.quiet, retry_errors=args.retry_errors)
        print(report)
        if not report.complete:
            return 1
    if args.summary or args.summary_only:
        summarize(sw, args.out, plots=not args.no_plots)
        wrote = "summary.csv" + ("" if args.no_plots or not sw.axis_names else
                                 ", " + ", ".join(f"summary_{_safe(a)}.png" for a in sw.axis_names))
        print(f"wrote {Path(args.out) / 'summary.csv'}" + (f" and plots ({wrote})" if "png" in wrote else ""))
    return 0


def add_cli(subparsers) -> None:
    """Register ``edgeverse sweep`` (called by :func:`edgeverse.cli.build_parser`)."""
    s = subparsers.add_parser(
        "sweep", help="run a parameter sweep (axes x seeds x methods) locally or on Dask, resumable",
        description="Run every (configuration, seed, method) point of SWEEP_FILE not yet in DIR/results.sqlite. "
                    "Results: edgeverse.sweep.load_results(DIR) -> pandas.DataFrame.",
    )
    s.add_argument("sweep_file", help="sweep file (YAML: base or base_file, axes, seeds, methods)")
    s.add_argument("--out", required=True, metavar="DIR", help="result folder (results.sqlite, sweep.json, summary)")
    s.add_argument("--executor", choices=EXECUTORS, help="local processes (default), dask, or serial (debugging)")
    s.add_argument("--workers", type=int, metavar="N", help="worker processes (default: all cores); with dask and no "
                   "--scheduler, the size of the local Dask cluster")
    s.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler (tcp://HOST:PORT); "
                   "implies --executor dask")
    s.add_argument("--summary", action="store_true", help="after computing any missing points, write DIR/summary.csv "
                   "(mean and 95%% CI per axis point and method) and line plots per axis")
    s.add_argument("--summary-only", action="store_true", help="only summarise (fails if points are missing)")
    s.add_argument("--no-plots", action="store_true", help="with --summary: the CSV only")
    s.add_argument("--retry-errors", action="store_true", help="recompute the points stored with an error")
    s.add_argument("--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)


__all__ = [
    "SweepSpec", "Range", "Sweep", "Point", "SweepReport", "read_sweep_file", "parse_spec", "expand", "load_sweep",
    "run_sweep", "summarize", "load_results", "safe_run_point", "add_cli",
]
