"""Validated scenario configuration: zone, servers, sensing, twins, channel, model choices.

A scenario is a tree of frozen pydantic models, loaded from YAML, TOML, a dict
or an embedded preset.  Every physical field carries its unit in its name.
Validation happens here, once, before any computation: a bad value raises
:class:`~edgeverse.errors.ScenarioError` whose message names the field (as a
dotted path such as ``servers.compute_hz[2]``), the value and what is allowed.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from scipy.special import ndtr

from .channel import PATH_LOSS_MODELS
from .errors import ScenarioError

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


# --------------------------------------------------------------------------- zone
class Zone(_Model):
    """A 2D or 3D box cut into a regular grid of cells (x fastest last: C order)."""

    origin_m: list[Finite] = Field(default=[0.0, 0.0], description="lower corner (x, y[, z]) [m]")
    size_m: list[PosFloat] = Field(description="box edge lengths (x, y[, z]) [m]")
    cells: list[Annotated[int, Field(ge=1)]] = Field(description="number of cells along each axis")

    @property
    def dim(self) -> int:
        return len(self.size_m)


# --------------------------------------------------------------------------- servers
class Servers(_Model):
    """MEC servers at base stations, one entry per server in every list."""

    positions_m: list[list[Finite]] = Field(description="(x, y) of each server [m]")
    compute_hz: list[PosFloat] = Field(description="Psi_b, compute capacity [cycles/s]")
    sensor_bandwidth_hz: list[PosFloat] = Field(description="W^s_b, bandwidth for sensor uploads [Hz]")
    noise_psd_dbm_per_hz: Finite | list[Finite] = Field(
        default=-170.0, description="sigma^2_b as a spectral density [dBm/Hz]; scalar or one per server"
    )
    antenna_height_m: NonNegFloat | list[NonNegFloat] = Field(default=25.0, description="antenna height [m]")
    names: list[str] | None = Field(default=None, description="optional server names")

    @property
    def n(self) -> int:
        return len(self.positions_m)


# --------------------------------------------------------------------------- spatial distributions
class GaussianComponent(_Model):
    """One Gaussian hotspot, truncated to the zone (axis-aligned covariance)."""

    mean_m: list[Finite] = Field(description="centre (x, y[, z]) [m]; in a 3D zone (x, y) means uniform in z")
    std_m: PosFloat | list[PosFloat] = Field(description="standard deviation [m], scalar or per axis")
    weight: PosFloat = Field(default=1.0, description="share of the mass (normalised over components)")


class GaussianMixture(_Model):
    kind: Literal["gaussian_mixture"] = "gaussian_mixture"
    components: list[GaussianComponent] = Field(min_length=1)


class Uniform(_Model):
    kind: Literal["uniform"] = "uniform"


class ArrayDensity(_Model):
    """A user array of non-negative weights with the grid's shape, inline or from a ``.npy`` file."""

    kind: Literal["array"] = "array"
    values: list | None = Field(default=None, description="nested list with shape zone.cells")
    file: str | None = Field(default=None, description="path of a .npy file with shape zone.cells")


class PointList(_Model):
    """Explicit PT positions (and optionally their type indices)."""

    kind: Literal["points"] = "points"
    points_m: list[list[Finite]]
    types: list[Annotated[int, Field(ge=0)]] | None = None


Density = Annotated[Union[GaussianMixture, Uniform, ArrayDensity], Field(discriminator="kind")]
PositionModel = Annotated[Union[GaussianMixture, Uniform, PointList], Field(discriminator="kind")]


# --------------------------------------------------------------------------- sensing
class Sensing(_Model):
    """Massive sensing of the zone (paper Sec. II-A)."""

    n_sensors: PosFloat = Field(description="Q, number of sensors")
    slot_s: PosFloat = Field(description="Delta, time slot [s]")
    volume_unit_m3: PosFloat = Field(description="epsilon, a sensor's volume unit [m^3]")
    tx_power_w: PosFloat = Field(description="xi_q, sensor transmit power [W]")
    data_density_bps_per_m3: PosFloat = Field(description="rho, sensing data density [bit/s/m^3]")
    render_complexity_cycles_per_bit: PosFloat = Field(description="Lambda, rendering complexity [cycles/bit]")
    height_m: NonNegFloat = Field(default=1.5, description="sensor height in a 2D zone [m]")
    density: Density = Field(description="g, the spatial distribution of the sensors")


# --------------------------------------------------------------------------- twins
class TwinType(_Model):
    name: str
    intensity_hz: PosFloat = Field(description="mu_k, synchronization intensity; deadline 1/mu_k [1/s]")
    tx_power_w: PosFloat = Field(description="zeta_k, PT transmit power [W]")
    data_size_bits: PosFloat = Field(description="D_k, data per step [bit]")
    bandwidth_hz: PosFloat = Field(description="W_k, PT uplink bandwidth [Hz]")
    complexity_cycles_per_bit: PosFloat = Field(description="Gamma_k, twin complexity [cycles/bit]")
    share: NonNegFloat = Field(default=1.0, description="share of the population (normalised)")


class Twins(_Model):
    count: Annotated[int, Field(ge=0)] = Field(description="K, number of digital twins")
    types: list[TwinType] = Field(min_length=1)
    positions: PositionModel = Field(description="f, the distribution of PT positions")
    height_m: NonNegFloat = Field(default=1.5, description="PT height in a 2D zone [m]")


# --------------------------------------------------------------------------- channel, model, solver
class Channel(_Model):
    model: Literal["free_space", "3gpp_uma_los", "3gpp_uma_nlos", "3gpp_umi_los"] = "free_space"
    carrier_hz: PosFloat = 3.5e9


class ModelChoices(_Model):
    """Choices the paper leaves open (MODEL.md items 1, 2, 4, 9)."""

    time_aggregation: Literal["sensor_sum", "density"] = Field(
        default="sensor_sum",
        description="sensor_sum: T_b sums t_sync over the region's Q*alpha_b sensors (g as a count density, ms); "
        "density: the literal integral with g a probability density (microseconds)",
    )
    sensor_noise_bandwidth: Literal["server_band", "per_hz"] = Field(
        default="server_band",
        description="noise of a sensor link integrated over W^s_b (server_band) or taken as the density times 1 Hz",
    )
    twin_noise_bandwidth: Literal["twin_band", "per_hz"] = Field(
        default="twin_band", description="noise of a PT link integrated over W_k (twin_band) or over 1 Hz"
    )
    min_render_fraction: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        default=0.05, description="share of Psi_b always kept for rendering; DTs are admitted only within the rest"
    )


class Solver(_Model):
    max_iter: Annotated[int, Field(ge=1)] = 100
    rel_tol: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 1e-9


class Scenario(_Model):
    """A whole scenario: the root of the configuration tree."""

    name: str = "custom"
    seed: Annotated[int, Field(ge=0)] = 0
    zone: Zone
    servers: Servers
    sensing: Sensing
    twins: Twins
    channel: Channel = Channel()
    model: ModelChoices = ModelChoices()
    solver: Solver = Solver()

    @field_validator("name")
    @classmethod
    def _name_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty string")
        return v

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: str | Path | None = None) -> "Scenario":
        """Validate a plain dict; raise :class:`ScenarioError` naming every bad field."""
        if not isinstance(data, dict):
            raise ScenarioError(f"scenario: expected a mapping of sections, got {type(data).__name__}")
        try:
            scn = cls.model_validate(data)
        except ValidationError as exc:
            raise _scenario_error(exc) from None
        _check_consistency(scn, base_dir=Path(base_dir) if base_dir else None)
        if base_dir is not None:
            object.__setattr__(scn, "_base_dir", str(base_dir))
        return scn

    @property
    def base_dir(self) -> Path | None:
        """Folder that relative file paths in the scenario are read from (the scenario file's)."""
        b = getattr(self, "_base_dir", None)
        return Path(b) if b else None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON/YAML-ready) that :meth:`from_dict` reads back."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def with_overrides(self, overrides: dict[str, Any]) -> "Scenario":
        """A new validated scenario with fields replaced by dotted path.

        >>> s = get_preset("paper").with_overrides({"twins.count": 120, "sensing.density.components.0.std_m": 400})
        >>> (s.twins.count, s.sensing.density.components[0].std_m)
        (120, 400.0)
        """
        data = copy.deepcopy(self.to_dict())
        for path, value in overrides.items():
            set_by_path(data, path, value)
        return Scenario.from_dict(data, base_dir=self.base_dir)


def set_by_path(data: dict, path: str, value: Any) -> None:
    """Set ``data[a][b][0][c] = value`` for ``path = "a.b.0.c"``; error naming the path if it does not exist."""
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        node = _child(node, key, ".".join(keys[: i + 1]), path)
    last = keys[-1]
    if isinstance(node, list):
        idx = _index(node, last, path)
        node[idx] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(f"{path}: cannot set a field inside a {type(node).__name__}")


def _index(node: list, key: str, path: str) -> int:
    try:
        idx = int(key)
    except ValueError:
        raise ScenarioError(f"{path}: {key!r} must be a list index (0..{len(node) - 1})") from None
    if not -len(node) <= idx < len(node):
        raise ScenarioError(f"{path}: index {idx} out of range; the list has {len(node)} entries")
    return idx


def _child(node: Any, key: str, prefix: str, path: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, path)]
    if isinstance(node, dict):
        if key not in node or node[key] is None:
            raise ScenarioError(f"{path}: no field {prefix!r} in the scenario; known here: {', '.join(map(str, node))}")
        return node[key]
    raise ScenarioError(f"{path}: {prefix!r} is a value, not a section")


# --------------------------------------------------------------------------- errors
_TYPE_ONLY = {"list_type", "float_type", "int_type", "dict_type", "model_type", "string_type"}


def _loc_to_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("gaussian_mixture", "uniform", "array", "points"):
            continue  # discriminated-union tags are not part of the user's path
        elif any(ch in str(part) for ch in "[]-"):
            continue  # union member tags such as 'constrained-float', 'list[...]'
        else:
            out += ("." if out else "") + str(part)
    return out or "scenario"


def _scenario_error(exc: ValidationError) -> ScenarioError:
    by_path: dict[str, list[tuple[str, str]]] = {}
    for err in exc.errors(include_url=False):
        path = _loc_to_path(err["loc"])
        shown = _short(err.get("input"))
        msg = err["msg"]
        if err["type"] == "missing":
            text = f"{path}: required field is missing"
        elif err["type"] == "extra_forbidden":
            text = f"{path}: unknown field (value {shown}); check the spelling against `edgeverse show-config`"
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            text = f"{path}: {msg}"
        else:
            text = f"{path}: got {shown}; {msg[0].lower() + msg[1:]}"
        by_path.setdefault(path, []).append((err["type"], text))
    errors = []
    for path, items in by_path.items():
        if all(typ in _TYPE_ONLY for typ, _ in items) and any(o.startswith(path + "[") for o in by_path):
            continue  # the list branch already reports the element that is wrong
        # a scalar-or-list field reports one error per branch: keep the informative one
        best = [t for typ, t in items if typ not in _TYPE_ONLY] or [t for _, t in items]
        errors.append((path, best[0]))
    lines = "\n  ".join(t for _, t in errors)
    return ScenarioError(f"invalid scenario ({len(errors)} problem{'s' * (len(errors) > 1)}):\n  {lines}", errors)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(field: str, message: str) -> None:
    raise ScenarioError(f"invalid scenario:\n  {field}: {message}", [(field, message)])


# --------------------------------------------------------------------------- cross-field checks
def _check_consistency(scn: Scenario, base_dir: Path | None) -> None:
    z = scn.zone
    dim = len(z.size_m)
    if dim not in (2, 3):
        _fail("zone.size_m", f"got {len(z.size_m)} axes; a zone is 2D (x, y) or 3D (x, y, z)")
    if len(z.origin_m) != dim:
        _fail("zone.origin_m", f"got {len(z.origin_m)} coordinates; must match zone.size_m ({dim} axes)")
    if len(z.cells) != dim:
        _fail("zone.cells", f"got {len(z.cells)} entries; must match zone.size_m ({dim} axes)")
    lo = np.array(z.origin_m[:2])
    hi = lo + np.array(z.size_m[:2])

    s = scn.servers
    n = s.n
    if n < 1:
        _fail("servers.positions_m", "got an empty list; at least one server is needed")
    for i, p in enumerate(s.positions_m):
        if len(p) != 2:
            _fail(f"servers.positions_m[{i}]", f"got {p}; a position is (x, y) in metres (height: servers.antenna_height_m)")
        if not (lo[0] <= p[0] <= hi[0] and lo[1] <= p[1] <= hi[1]):
            _fail(
                f"servers.positions_m[{i}]",
                f"got {p}, outside the zone x in [{lo[0]:g}, {hi[0]:g}] m, y in [{lo[1]:g}, {hi[1]:g}] m",
            )
    pos = np.array(s.positions_m, dtype=float)
    for i in range(n):
        d = np.hypot(*(pos[i + 1 :] - pos[i]).T) if i + 1 < n else np.array([])
        same = np.flatnonzero(d < 1e-6)
        if same.size:
            j = i + 1 + int(same[0])
            _fail(f"servers.positions_m[{j}]", f"got {s.positions_m[j]}, the same position as servers.positions_m[{i}]; "
                  "servers must be at distinct positions")
    for name in ("compute_hz", "sensor_bandwidth_hz", "noise_psd_dbm_per_hz", "antenna_height_m", "names"):
        val = getattr(s, name)
        if isinstance(val, list) and len(val) != n:
            _fail(f"servers.{name}", f"got {len(val)} entries; must have one per server ({n}, as servers.positions_m)")

    _check_spatial(scn.sensing.density, "sensing.density", scn, base_dir, is_density=True)
    _check_spatial(scn.twins.positions, "twins.positions", scn, base_dir, is_density=False)
    shares = np.array([t.share for t in scn.twins.types])
    if shares.sum() <= 0:
        _fail("twins.types", "every share is 0; at least one type needs a positive share")
    names = [t.name for t in scn.twins.types]
    if len(set(names)) != len(names):
        _fail("twins.types", f"type names {names} repeat; each type needs its own name")


def _check_spatial(spec, field: str, scn: Scenario, base_dir: Path | None, *, is_density: bool) -> None:
    z = scn.zone
    dim = len(z.size_m)
    if isinstance(spec, GaussianMixture):
        for c, comp in enumerate(spec.components):
            f = f"{field}.components[{c}]"
            if len(comp.mean_m) not in (2, dim):
                _fail(f"{f}.mean_m", f"got {len(comp.mean_m)} coordinates; give 2 (x, y){' or 3' if dim == 3 else ''}")
            if isinstance(comp.std_m, list) and len(comp.std_m) != len(comp.mean_m):
                _fail(f"{f}.std_m", f"got {len(comp.std_m)} entries; give one number or one per axis of mean_m ({len(comp.mean_m)})")
            mass = gaussian_box_mass(comp.mean_m, comp.std_m, z.origin_m, z.size_m)
            # a density only needs mass; PT positions are drawn by rejection, so need a usable share
            if not mass > (1e-12 if is_density else 1e-4):
                _fail(f, f"mean {comp.mean_m} m, std {comp.std_m} m integrates to {mass:.3g} over the zone "
                      f"(origin {z.origin_m} m, size {z.size_m} m); move the hotspot inside the zone or widen it")
    elif isinstance(spec, ArrayDensity):
        if (spec.values is None) == (spec.file is None):
            _fail(field, "exactly one of 'values' and 'file' must be given for kind: array")
        arr = load_array_density(spec, base_dir, field)
        if arr.shape != tuple(z.cells):
            _fail(field, f"got an array of shape {arr.shape}; must have the grid's shape zone.cells = {tuple(z.cells)}")
        if not np.all(np.isfinite(arr)):
            _fail(field, "contains NaN or infinite values; all weights must be finite")
        if np.any(arr < 0):
            _fail(field, f"contains negative values (min {arr.min():g}); weights must be >= 0")
        if not arr.sum() > 0:
            _fail(field, "sums to 0 over the zone; at least one cell needs a positive weight")
    elif isinstance(spec, PointList):
        pts = spec.points_m
        if not is_density and len(pts) != scn.twins.count:
            _fail(f"{field}.points_m", f"got {len(pts)} points; must equal twins.count ({scn.twins.count})")
        lo = np.array(z.origin_m)
        hi = lo + np.array(z.size_m)
        for i, p in enumerate(pts):
            if len(p) not in (2, dim):
                _fail(f"{field}.points_m[{i}]", f"got {p}; give (x, y){' or (x, y, z)' if dim == 3 else ''} in metres")
            if np.any(np.array(p) < lo[: len(p)]) or np.any(np.array(p) > hi[: len(p)]):
                _fail(f"{field}.points_m[{i}]", f"got {p}, outside the zone {list(lo)} to {list(hi)} m")
        if spec.types is not None:
            if len(spec.types) != len(pts):
                _fail(f"{field}.types", f"got {len(spec.types)} entries; one per point ({len(pts)})")
            bad = [t for t in spec.types if t >= len(scn.twins.types)]
            if bad:
                _fail(f"{field}.types", f"got type index {bad[0]}; allowed 0..{len(scn.twins.types) - 1} (twins.types)")


def load_array_density(spec: ArrayDensity, base_dir: Path | None, field: str = "sensing.density") -> np.ndarray:
    """The weights of an ``array`` density as a float array (file paths relative to ``base_dir``)."""
    if spec.values is not None:
        try:
            return np.asarray(spec.values, dtype=float)
        except (ValueError, TypeError) as exc:
            _fail(f"{field}.values", f"is not a rectangular array of numbers ({exc})")
    path = Path(spec.file)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        _fail(f"{field}.file", f"{str(spec.file)!r} does not exist (looked at {path})")
    try:
        return np.asarray(np.load(path, allow_pickle=False), dtype=float)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        _fail(f"{field}.file", f"{str(spec.file)!r} is not a readable .npy array ({exc})")


def axis_std(comp: GaussianComponent, dim: int) -> list[float]:
    std = comp.std_m if isinstance(comp.std_m, list) else [comp.std_m] * len(comp.mean_m)
    return list(std)


def gaussian_box_mass(mean_m, std_m, origin_m, size_m) -> float:
    """Mass of an axis-aligned Gaussian inside the box, over the axes the mean gives."""
    k = len(mean_m)
    std = std_m if isinstance(std_m, list) else [std_m] * k
    mass = 1.0
    for a in range(k):
        lo, hi = origin_m[a], origin_m[a] + size_m[a]
        mass *= float(ndtr((hi - mean_m[a]) / std[a]) - ndtr((lo - mean_m[a]) / std[a]))
    return mass


# --------------------------------------------------------------------------- loading
PRESET_PACKAGE = "edgeverse.presets"


def preset_names() -> list[str]:
    """Names of the embedded presets."""
    files = resources.files(PRESET_PACKAGE).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of an embedded preset, comments included."""
    if name not in preset_names():
        raise ScenarioError(f"preset: got {name!r}; available presets: {', '.join(preset_names())}")
    return resources.files(PRESET_PACKAGE).joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def get_preset(name: str) -> Scenario:
    """The embedded preset ``name`` as a validated scenario."""
    return Scenario.from_dict(yaml.safe_load(preset_text(name)))


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a ``.yaml``/``.yml`` or ``.toml`` file.

    A file may start from a preset with ``base: NAME`` and override any section.
    """
    p = Path(path)
    if not p.exists():
        raise ScenarioError(f"scenario file {str(path)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise ScenarioError(f"scenario file {str(path)!r}: unknown extension {p.suffix!r}; use .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"scenario file {str(path)!r} is not valid {p.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario file {str(path)!r}: expected a mapping of sections at the top level")
    if "base" in data:
        base = data.pop("base")
        merged = yaml.safe_load(preset_text(str(base)))
        data = _deep_merge(merged, data)
    return Scenario.from_dict(data, base_dir=p.resolve().parent)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "kind" not in v:
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def per_server(value: float | list[float], n: int) -> np.ndarray:
    """A scalar-or-list server field as an array of length ``n``."""
    arr = np.asarray(value, dtype=float)
    return np.full(n, float(arr)) if arr.ndim == 0 else arr


__all__ = [
    "Scenario",
    "Zone",
    "Servers",
    "Sensing",
    "Twins",
    "TwinType",
    "Channel",
    "ModelChoices",
    "Solver",
    "GaussianMixture",
    "GaussianComponent",
    "Uniform",
    "ArrayDensity",
    "PointList",
    "get_preset",
    "preset_names",
    "preset_text",
    "load_scenario",
    "set_by_path",
    "PATH_LOSS_MODELS",
]

