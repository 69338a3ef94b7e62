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
