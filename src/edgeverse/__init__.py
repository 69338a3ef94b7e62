"""edgeverse: plan a decentralized, edge-hosted metaverse.

Partition a sensed zone into sub-metaverses rendered at MEC servers, host each
machine's cyber twin at its region's server and split the servers' compute so
that the average sub-synchronization time is minimal while twins meet their
deadlines (Hashash et al., ICC 2023, and beyond).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeverse")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from .errors import ConvergenceWarning, EdgeverseError, ScenarioError  # noqa: E402
from .scenario import Scenario, get_preset, load_scenario, preset_names  # noqa: E402

__all__ = [
    "__version__",
    "Scenario",
    "ScenarioError",
    "EdgeverseError",
    "ConvergenceWarning",
    "get_preset",
    "load_scenario",
    "preset_names",
]
