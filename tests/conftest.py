"""Shared fixtures: small scenarios that solve in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeverse import get_preset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def paper():
    return get_preset("paper")


@pytest.fixture
def small(paper):
    """The paper scenario on a 25 x 25 grid (80 m cells)."""
    return paper.with_overrides({"zone.cells": [25, 25]})


@pytest.fixture
def feasible_small(small):
    """A small scenario where twins can be hosted (10 kb, 10 cycles/bit)."""
    over = {}
    for i in range(3):
        over[f"twins.types.{i}.data_size_bits"] = 1e4
        over[f"twins.types.{i}.complexity_cycles_per_bit"] = 10.0
    return small.with_overrides(over)
