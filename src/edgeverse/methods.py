"""Association methods behind one interface.

A method maps a :class:`~edgeverse.build.Problem` to a partition (cell ->
server) plus its run record; :func:`edgeverse.solve.solve` then scores every
method's partition with the one evaluator.

* ``snr`` - the paper's baseline: each sensor to the best-SNR server.
* ``voronoi`` - each sensor to the nearest server (reference).
* ``paper`` - Algorithm 1 exactly as written: map (14) from the previous
  alpha and psi, DTs to their region's server, line-9 compute, psi update;
  stops on a fixed point or an unchanged objective, detects cycles, caps the
  iterations, and reports which of these happened.
* ``paper-damped`` - our stabilised variant of Algorithm 1 (not the paper's):
  the alpha and psi fed to (14) move only part of the way towards the new
  partition's values, the step halving whenever the fixed-point residual
  grows, so the iteration settles on a fixed point alpha = alpha(partition(alpha)).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .build import Problem
from .evaluate import host_twins, objective_from_costs, region_masses, sensing_cost
from .kernels import argmin_affine
from .units import number_from_text

CONVERGED = "converged"
CYCLED = "cycled"
MAX_ITER = "max_iter"
STALLED = "stalled"
CLOSED_FORM = "closed_form"


@dataclass
class MethodResult:
    """What a method returns: its partition and an honest record of the run."""

    cell_server: np.ndarray
    status: str
    iterations: int
    history: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


MethodFn = Callable[..., MethodResult]
METHODS: dict[str, MethodFn] = {}


def register(name: str) -> Callable[[MethodFn], MethodFn]:
    def deco(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        return fn

    return deco


def method_names() -> list[str]:
    return list(METHODS)


def _hash(cell_server: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(cell_server, dtype=np.int32).tobytes(), digest_size=16).hexdigest()


def map_14(problem: Problem, alpha: np.ndarray, psi_hz: np.ndarray) -> np.ndarray:
    """Proposition 1, map (14): cell -> argmin_b alpha_b F(omega, kappa_b) (ties to the lowest index).

    Evaluated over each cell's candidate servers with a bound on the others
    (:func:`edgeverse.kernels.argmin_affine`): the same partition as the dense
    :func:`map_14_reference`.
    """
    alpha = np.asarray(alpha, dtype=float)
    psi_hz = np.asarray(psi_hz, dtype=float)
    zero = np.flatnonzero(alpha == 0)
    if zero.size:
        # alpha_b = 0: that server's product is 0 (NaN -> 0 for F = inf) for every cell, and every other
        # product is positive, so the lowest such server wins every cell (the paper's collapse)
        return np.full(problem.n_cells, int(zero[0]), dtype=np.int64)
    render = np.full(problem.n_servers, np.inf)
    np.divide(problem.render_coeff, psi_hz, out=render, where=psi_hz > 0)
    best, _ = argmin_affine(problem.links, alpha, render, None, nan_zero=True)
    return best


def map_14_reference(problem: Problem, alpha: np.ndarray, psi_hz: np.ndarray) -> np.ndarray:
    """The dense form of :func:`map_14` (an (n, B) score matrix), kept for tests."""
    f = sensing_cost(problem, psi_hz)
    with np.errstate(invalid="ignore"):
        score = alpha[None, :] * f
    score = np.where(np.isnan(score), 0.0, score)  # alpha_b = 0 and F = inf: the paper's product is 0
    return np.argmin(score, axis=1)


@dataclass(frozen=True)
class QuickEvaluation:
    """Objective (F form), hosting and masses of a partition, without the per-DT tables (sparse problems)."""

    objective_ms: float
    total_hosted: int
    alpha: np.ndarray
    psi_hz: np.ndarray


def quick_evaluate(problem: Problem, cs: np.ndarray, alpha: np.ndarray | None = None):
    """(hosting, evaluation) of a partition for the methods' inner loops.

    The objective is the F form (:func:`edgeverse.evaluate.objective_from_costs`,
    the evaluator's value up to rounding) and the per-DT tables are skipped
    (a third of the evaluator's time on the presets); the final solution is
    always scored by the full evaluator.  ``alpha``: the partition's region masses, when the caller has them.
    """
    h = host_twins(problem, cs)
    alpha = region_masses(problem, cs) if alpha is None else alpha
    obj, _ = objective_from_costs(problem, cs, h.psi, alpha)
    return h, QuickEvaluation(obj * 1e3, int(h.hosted.sum()), alpha, h.psi)


@register("snr")
def snr_method(problem: Problem, **_: Any) -> MethodResult:
    """Baseline: every sensor to the server with the best SNR; DTs follow their region."""
    cs = problem.best_snr_server()
    return MethodResult(cs, CLOSED_FORM, 1, message="best-SNR association (closed form)")


@register("voronoi")
def voronoi_method(problem: Problem, **_: Any) -> MethodResult:
    """Reference: every sensor to the nearest server (Voronoi cells of the server sites)."""
    cs = problem.nearest_server()
    return MethodResult(cs, CLOSED_FORM, 1, message="nearest-server association (closed form)")


def _psi(alloc) -> np.ndarray:
    return alloc.psi_hz if hasattr(alloc, "psi_hz") else alloc.psi


def _record(problem: Problem, it: int, cs: np.ndarray, prev: np.ndarray | None, *, masses: np.ndarray | None = None,
            **more: Any) -> tuple[dict, Any]:
    alloc, ev = quick_evaluate(problem, cs, masses)
    row = {
        "iteration": it,
        "objective_ms": ev.objective_ms,
        "n_hosted": ev.total_hosted,
        "cells_changed": int(np.count_nonzero(cs != prev)) if prev is not None else 0,
        "alpha": [float(a) for a in ev.alpha],
    }
    row.update(more)
    return row, alloc


@register("paper")
def paper_algorithm1(problem: Problem, *, max_iter: int | None = None, rel_tol: float | None = None,
                     **_: Any) -> MethodResult:
    """Algorithm 1 as written (Hashash et al., ICC 2023).

    Initialise psi^(0) = Psi and a Voronoi partition a^(0) (line 1).  Repeat:
    a^(nu) from (14) with alpha^(nu-1), psi^(nu-1) (line 4); alpha^(nu) (line 5);
    DTs to their region's server with line-9 compute under the admission rule
    (lines 6-9); psi^(nu) = Psi - sum phi (line 10); until (12) converges
    (line 11).  Stops as ``converged`` when the partition is a fixed point or
    the objective changes by at most ``rel_tol`` (relative), ``cycled`` when a
    partition seen before (not the previous one) comes back, ``max_iter`` at the
    cap.  The last iterate is returned, as the paper's line 12 does.
    """
    sv = problem.scenario.solver
    max_iter = sv.max_iter if max_iter is None else int(max_iter)
    rel_tol = sv.rel_tol if rel_tol is None else float(rel_tol)
    cs = problem.nearest_server()
    alpha = region_masses(problem, cs)
    psi = problem.compute_hz.copy()  # psi^(0) = Psi_b
    row, _ = _record(problem, 0, cs, None, note="initial Voronoi partition")
    history = [row]
    seen = {_hash(cs): 0}
    prev_obj = row["objective_ms"]
    status, message = MAX_ITER, f"no convergence within {max_iter} iterations"
    it = 0
    for it in range(1, max_iter + 1):
        new = map_14(problem, alpha, psi)
        row, alloc = _record(problem, it, new, cs)
        history.append(row)
        alpha = np.asarray(row["alpha"])
        psi = _psi(alloc)
        obj = row["objective_ms"]
        h = _hash(new)
        fixed = bool(np.array_equal(new, cs))
        cs = new
        if fixed:
            status, message = CONVERGED, f"fixed point of (14) after {it} iterations"
            break
        if np.isfinite(obj) and np.isfinite(prev_obj) and abs(obj - prev_obj) <= rel_tol * abs(prev_obj):
            status, message = CONVERGED, f"objective changed by at most {rel_tol:g} (relative) at iteration {it}"
            break
        if h in seen:
            period = it - seen[h]
            status = CYCLED
            message = (f"cycle of period {period}: the partition of iteration {it} repeats iteration {seen[h]}; "
                       f"objective oscillates between {min(r['objective_ms'] for r in history[seen[h]:]):.4g} and "
                       f"{max(r['objective_ms'] for r in history[seen[h]:]):.4g} ms")
            break
        seen[h] = it
        prev_obj = obj
    return MethodResult(cs, status, it, history, message)


@register("paper-damped")
def paper_damped(problem: Problem, *, max_iter: int | None = None, step: float = 0.5, min_step: float = 1e-4,
                 **_: Any) -> MethodResult:
    """Stabilised Algorithm 1 (ours): damped fixed-point iteration on (alpha, psi).

    The alpha and psi used in (14) are moved a step ``lambda`` towards those of
    the partition they produce: alpha <- alpha + lambda (alpha(a) - alpha), the
    same for psi.  ``lambda`` halves whenever the residual ||alpha(a) - alpha||_1
    grows.  Converged when the residual is at most twice the largest cell mass
    (a fixed point of (14) up to one cell of the grid); ``stalled`` when
    ``lambda`` falls below ``min_step`` first; ``max_iter`` at the cap.
    """
    sv = problem.scenario.solver
    max_iter = max(sv.max_iter, 200) if max_iter is None else int(max_iter)
    cs = problem.nearest_server()
    alloc0, _ = quick_evaluate(problem, cs)
    alpha = region_masses(problem, cs)
    psi = _psi(alloc0).copy()
    tol = 2.0 * float(problem.cell_mass.max())
    row, _ = _record(problem, 0, cs, None, residual=None, step=step, note="initial Voronoi partition")
    history = [row]
    lam = float(step)
    prev_res = np.inf
    status, message = MAX_ITER, f"residual above {tol:.3g} after {max_iter} iterations"
    it = 0
    best = (np.inf, cs)
    for it in range(1, max_iter + 1):
        new = map_14(problem, alpha, psi)
        m = region_masses(problem, new)
        res = float(np.abs(m - alpha).sum())
        row, alloc = _record(problem, it, new, cs, masses=m, residual=res, step=lam)
        history.append(row)
        cs = new
        if res < best[0]:
            best = (res, new)
        if res <= tol:
            status, message = CONVERGED, f"fixed point of (14) within {res:.3g} mass (tolerance {tol:.3g}) at iteration {it}"
            break
        if res > prev_res:
            lam *= 0.5
            if lam < min_step:
                status = STALLED
                message = f"step fell below {min_step:g}; best fixed-point residual {best[0]:.3g} (tolerance {tol:.3g})"
                break
        prev_res = res
        alpha = alpha + lam * (m - alpha)
        psi = psi + lam * (_psi(alloc) - psi)
    return MethodResult(cs, status, it, history, message, extra={"fixed_point_residual": float(history[-1]["residual"])})

# --------------------------------------------------------------------------- method options
def _as_number(v):
    """A number written as a string (YAML reads ``1e2`` as one) is read as that number."""
    if isinstance(v, str):
        n = number_from_text(v)
        return v if n is None else n
    return v


def _opt_int(lo: int, none_ok: bool = False):
    def check(v):
        if v is None and none_ok:
            return None
        v = _as_number(v)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not np.isfinite(v) or float(v) != int(v) or int(v) < lo:
            raise ValueError(f"must be an integer >= {lo}" + (" or null" if none_ok else ""))
        return int(v)
    return check


def _opt_float(lo: float, hi: float = np.inf, lo_open: bool = False):
    def check(v):
        v = _as_number(v)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
                or not ((v > lo) if lo_open else (v >= lo)) or v > hi:
            raise ValueError(f"must be a finite number in {'(' if lo_open else '['}{lo:g}, "
                             + (f"{hi:g}]" if np.isfinite(hi) else "inf)"))
        return float(v)
    return check


def _opt_bool(v):
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError("must be true or false")
    return bool(v)


def _opt_choice(*choices):
    def check(v):
        if v not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return v
    return check


#: The options of each method (beside ``solve``'s ``polish`` and ``certify``) and their checks.
METHOD_OPTIONS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "snr": {},
    "voronoi": {},
    "paper": {"max_iter": _opt_int(1), "rel_tol": _opt_float(0.0)},
    "paper-damped": {"max_iter": _opt_int(1), "step": _opt_float(0.0, 1.0, lo_open=True),
                     "min_step": _opt_float(0.0, 1.0, lo_open=True)},
    # "optimal": registered by edgeverse.optimal, from its own choices
}
SOLVE_OPTIONS: dict[str, Callable[[Any], Any]] = {"polish": _opt_bool, "certify": _opt_bool}


def parse_method_options(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["optimal.n_starts=4", ...]`` (the CLI's ``--method-option``) -> ``{"optimal": {"n_starts": 4}}``.

    Values are read as YAML (``4``, ``true``, ``best``); names and values are checked later, by
    :func:`check_method_options`.

    >>> parse_method_options(["optimal.descent=best", "paper-damped.step=0.25"])
    {'optimal': {'descent': 'best'}, 'paper-damped': {'step': 0.25}}
    """
    import yaml

    from .errors import EdgeverseError

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        method, dot, opt = key.strip().rpartition(".")
        if not sep or not dot or not method or not opt:
            raise EdgeverseError(f"--method-option {item!r}: expected METHOD.OPTION=VALUE, "
                                 "e.g. --method-option optimal.n_starts=4")
        out.setdefault(method, {})[opt] = yaml.safe_load(value)
    return out


def check_run_options(options: dict[str, dict[str, Any]], run: Sequence[str], run_label: str,
                      where: str = "--method-option") -> dict[str, dict[str, Any]]:
    """``{method: options}`` given for a run of ``run`` methods, checked: every method known and run, every
    option by :func:`check_method_options`.  ``run_label`` says where the run's methods came from."""
    from .errors import EdgeverseError

    out = {}
    for m, o in options.items():
        if m not in METHODS:
            raise EdgeverseError(f"{where}: got method {m!r}; available methods: {', '.join(METHODS)}")
        out[m] = check_method_options(m, o, where=f"{where} {m}")
        if out[m] and m not in run:
            raise EdgeverseError(f"{where}: names method {m!r}, which is not run ({run_label})")
    return out


def check_method_options(method: str, options: dict[str, Any] | None, where: str | None = None,
                         solve_options: bool = True) -> dict[str, Any]:
    """Validate the keyword options of ``method`` (names and values); returns them normalised.

    ``where`` prefixes the error messages (e.g. ``method_options.paper-damped``).

    >>> check_method_options("paper-damped", {"step": 0.25})
    {'step': 0.25}
    >>> check_method_options("paper-damped", {"step": 2})
    Traceback (most recent call last):
    ...
    edgeverse.errors.EdgeverseError: paper-damped.step: got 2; must be a finite number in (0, 1]
    """
    from .errors import EdgeverseError

    where = where or method
    spec = dict(METHOD_OPTIONS.get(method, {}))
    if solve_options:
        spec.update(SOLVE_OPTIONS)
    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        if k not in spec:
            own = sorted(set(spec) - set(SOLVE_OPTIONS))
            raise EdgeverseError(f"{where}: unknown option {k!r}; {method} takes "
                                 + (", ".join(own) if own else "no options of its own")
                                 + " (and polish, certify: solve's, for every method)")
        try:
            out[k] = spec[k](v)
        except ValueError as e:
            hint = ""
            if v is None or isinstance(v, bool):  # the CLI's and the sweep file's values are read as YAML
                hint = (" (YAML reads yes/no/on/off/true/false as a boolean and null, ~ or nothing as None;"
                        " quote a word to pass it as text)")
            raise EdgeverseError(f"{where}.{k}: got {v!r}; {e}{hint}") from None
    if method == "paper-damped" and out.get("min_step", 1e-4) > out.get("step", 0.5):
        raise EdgeverseError(f"{where}.min_step: got {out.get('min_step', 1e-4)!r}; must be at most step "
                             f"({out.get('step', 0.5)!r})")
    return out


# the optimal method registers itself (imported last: it builds on the methods above)
from . import optimal as _optimal  # noqa: E402,F401
