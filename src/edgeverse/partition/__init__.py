"""Partition solvers: exact semi-discrete optimal transport of grid cells to servers."""

from ._semidiscrete import (
    SemiDiscreteResult,
    laguerre_assign,
    plan_dense,
    solve_semidiscrete,
)

__all__ = [
    "SemiDiscreteResult",
    "laguerre_assign",
    "plan_dense",
    "solve_semidiscrete",
]
