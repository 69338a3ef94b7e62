"""Exception and warning classes of edgeverse."""

from __future__ import annotations


class EdgeverseError(Exception):
    """Base class of the package's errors."""


class ScenarioError(EdgeverseError, ValueError):
    """A scenario (configuration or input file) is invalid.

    The message names the field (dotted path), the value received and what is
    allowed.  ``errors`` holds one ``(field, message)`` pair per problem.
    """

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.errors = errors or []


class ConvergenceWarning(UserWarning):
    """An iterative method stopped before meeting its tolerance."""


class PlausibilityWarning(UserWarning):
    """A valid input that looks like a unit slip (GHz written where Hz is meant, degrees in metre columns)."""


def ensure_out_dir(path, option: str = "--out", *, create: bool = True):
    """Create the output folder ``path`` (and its parents; with ``create=False`` only check it); a clear
    error when it cannot be one.  Returns it as a :class:`pathlib.Path`.
    """
    from pathlib import Path

    if not str(path).strip():
        raise EdgeverseError(f"{option}: got {str(path)!r}; give a folder for the result files (e.g. out/run1)")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise EdgeverseError(f"{option}: {str(out)!r} exists and is not a folder; give a folder for the result files")
    if not create:
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeverseError(f"{option}: cannot create the folder {str(out)!r}: {exc.strerror or exc}") from None
    return out
