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
    AfterValidator,
    BeforeValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from scipy.special import ndtr

from .channel import PATH_LOSS_MODELS
from .errors import ScenarioError
from .units import number_from_text


def _no_bool(v):
    """Integers only: YAML's true / false are not counts or seeds (pydantic would read them as 1 / 0); a
    number written as a string (YAML reads ``1e3`` as one) is read as that number when it is a whole one."""
    if isinstance(v, (bool, np.bool_)):
        raise ValueError("must be an integer, not true/false")
    if isinstance(v, str):
        f = number_from_text(v)
        if f is not None and float(f).is_integer():
            return int(f)
    return v


_NoBool = BeforeValidator(_no_bool)


def _no_bool_number(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):  # YAML true/false would otherwise be read as 1.0 / 0.0
        raise ValueError("must be a number, not true/false")
    return v


_NoBoolNumber = BeforeValidator(_no_bool_number)

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False), _NoBoolNumber]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False), _NoBoolNumber]
Finite = Annotated[float, Field(allow_inf_nan=False), _NoBoolNumber]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)


# --------------------------------------------------------------------------- zone
class ZoneAuto(_Model):
    """The zone as the bounding box of the servers (and of twins read from a file) plus a margin."""

    margin_m: NonNegFloat = Field(default=200.0, description="added on every side of the box [m]")
    cell_size_m: PosFloat = Field(description="edge of the square cells [m]; the box is snapped outwards to multiples of it")


class Zone(_Model):
    """A 2D or 3D box cut into a regular grid of cells (x fastest last: C order).

    Either ``size_m`` and ``cells`` (and ``origin_m``), or ``auto``: the box
    around the servers plus a margin, resolved when the scenario is loaded.
    """

    origin_m: list[Finite] = Field(default=[0.0, 0.0], description="lower corner (x, y[, z]) [m]")
    size_m: list[PosFloat] | None = Field(default=None, description="box edge lengths (x, y[, z]) [m]")
    cells: list[Annotated[int, Field(ge=1), _NoBool]] | None = Field(default=None, description="number of cells along each axis")
    auto: ZoneAuto | None = Field(default=None, description="instead of origin/size/cells: the servers' box plus a margin")

    @property
    def dim(self) -> int:
        return len(self.size_m)


# --------------------------------------------------------------------------- servers
class SiteSource(_Model):
    """Base-station sites read from a CSV file (see :func:`edgeverse.geo.read_sites_csv`).

    The cells of one physical site (within ``merge_radius_m`` of each other,
    single linkage) become one server at their mean position.
    """

    file: str = Field(description="CSV file, relative to the scenario file")
    format: Literal["opencellid", "lonlat", "xy"] = Field(
        default="opencellid", description="opencellid: the OpenCelliD export schema; lonlat: WGS84 columns lon_col, "
        "lat_col; xy: metre columns x_col, y_col in the zone's frame")
    lon_col: str = "lon"
    lat_col: str = "lat"
    x_col: str = "x"
    y_col: str = "y"
    radio: list[str] | None = Field(default=None, description="keep only these radio technologies (e.g. [LTE, NR])")
    operators: list[int | str] | None = Field(default=None, description="keep only these operator codes (OpenCelliD net/MNC)")
    radio_col: str = "radio"
    operator_col: str = "net"
    bbox_lonlat_deg: list[Finite] | None = Field(
        default=None, description="keep only sites with lon in [b0, b2] and lat in [b1, b3] (lon/lat formats)")
    merge_radius_m: NonNegFloat = Field(default=0.0, description="cells closer than this are one site [m] (0: exact duplicates)")
    name_col: str | None = Field(default=None, description="column naming each site (default names S1, S2, ...)")
    compute_col: str | None = Field(default=None, description="column of per-cell compute [cycles/s], summed per site")
    bandwidth_col: str | None = Field(default=None, description="column of per-cell sensor bandwidth [Hz], summed per site")
    delimiter: str = ","


class Servers(_Model):
    """MEC servers at base stations, one entry per server in every list.

    ``positions_m`` lists the servers; or ``sites`` reads them from a file
    (resolved when the scenario is loaded).  ``compute_hz`` and
    ``sensor_bandwidth_hz`` are one value per server or one value for all.
    """

    positions_m: list[list[Finite]] | None = Field(default=None, description="(x, y) of each server [m]")
    compute_hz: PosFloat | list[PosFloat] | None = Field(
        default=None, description="Psi_b, compute capacity [cycles/s]; scalar (every server) or one per server")
    sensor_bandwidth_hz: PosFloat | list[PosFloat] | None = Field(
        default=None, description="W^s_b, bandwidth for sensor uploads [Hz]; scalar or one per server")
    noise_psd_dbm_per_hz: Finite | list[Finite] = Field(
        default=-170.0, description="sigma^2_b as a spectral density [dBm/Hz]; scalar or one per server"
    )
    antenna_height_m: NonNegFloat | list[NonNegFloat] = Field(default=25.0, description="antenna height [m]")
    names: list[str] | None = Field(default=None, description="optional server names")
    sites: SiteSource | None = Field(default=None, description="read the servers from a site file instead of positions_m")

    @property
    def n(self) -> int:
        return len(self.positions_m or [])


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


_Reproject = Literal["subsample", "corners"]




def _check_crs(v):
    """A CRS string pyproj understands (checked when pyproj is installed; the readers need it anyway)."""
    if v is None or v == "file":
        return v
    try:
        import pyproj
    except ImportError:  # pragma: no cover - the readers then report the missing extra
        return v
    try:
        pyproj.CRS.from_user_input(v)
    except Exception as e:  # pyproj.exceptions.CRSError and friends
        raise ValueError(f"not a CRS pyproj knows (e.g. 'EPSG:3035'): {str(e).splitlines()[0]}") from None
    return v


_Crs = Annotated[str | None, AfterValidator(_check_crs)]


class GridCsvDensity(_Model):
    """Square cells given by their lower-left corners in a projected CRS, one row per cell (missing cells: 0).

    The default columns and CRS are those of the INSEE / INSPIRE 200 m grids (EPSG:3035).
    """

    kind: Literal["grid_csv"] = "grid_csv"
    file: str = Field(description="CSV file, relative to the scenario file")
    value_col: str = Field(description="mass of each cell (e.g. people)")
    x_col: str = "x_ll_3035"
    y_col: str = "y_ll_3035"
    cell_size_m: PosFloat = 200.0
    crs: _Crs = Field(default="EPSG:3035", description="CRS of the corners; null: the zone's own metre frame")
    check_alignment: bool = True
    reproject: _Reproject = "subsample"
    subsample: Annotated[int, Field(ge=1)] = 8


class PointsCsvDensity(_Model):
    """Point samples (lon/lat, e.g. cell centres) each carrying a mass, binned onto the zone grid."""

    kind: Literal["points_csv"] = "points_csv"
    file: str
    value_col: str
    lon_col: str = "lon"
    lat_col: str = "lat"


class NpyDensity(_Model):
    """A 2-D ``.npy`` raster (axis 0 = x, from the west; axis 1 = y, from the south) with its outer bounds."""

    kind: Literal["npy"] = "npy"
    file: str
    bounds_m: list[Finite] = Field(description="(x0, y0, x1, y1) in the units of crs")
    crs: _Crs = Field(default=None, description="CRS of bounds_m; null: the zone's own metre frame")
    value_kind: Literal["count", "per_m2"] = "count"
    reproject: _Reproject = "subsample"
    subsample: Annotated[int, Field(ge=1)] = 8


class GeotiffDensity(_Model):
    """A north-up GeoTIFF raster (needs rasterio: ``pip install 'edgeverse[geotiff]'``)."""

    kind: Literal["geotiff"] = "geotiff"
    file: str
    band: Annotated[int, Field(ge=1)] = 1
    crs: _Crs = Field(default="file", description="'file': the raster's CRS; a CRS to override; null: zone frame")
    value_kind: Literal["count", "per_m2"] = "count"
    reproject: _Reproject = "subsample"
    subsample: Annotated[int, Field(ge=1)] = 8


class SitesDensity(_Model):
    """A Gaussian kernel around every site read by ``servers.sites`` (before merging): a proxy for demand
    where no density layer exists (operators build where the traffic is)."""

    kind: Literal["from_sites"] = "from_sites"
    std_m: PosFloat = Field(default=150.0, description="kernel standard deviation [m]")


class TwinCsv(_Model):
    """PT positions (and types) from a CSV file, in metres of the zone frame or in lon/lat."""

    kind: Literal["csv"] = "csv"
    file: str
    x_col: str | None = None
    y_col: str | None = None
    lon_col: str | None = None
    lat_col: str | None = None
    type_col: str | None = Field(default=None, description="column naming each twin's type (a twins.types name)")
    delimiter: str = ","


class FromDensity(_Model):
    """PT positions drawn from the sensing density (sensing.density)."""

    kind: Literal["from_density"] = "from_density"


FILE_DENSITIES = (GridCsvDensity, PointsCsvDensity, NpyDensity, GeotiffDensity)
Density = Annotated[
    Union[GaussianMixture, Uniform, ArrayDensity, GridCsvDensity, PointsCsvDensity, NpyDensity, GeotiffDensity,
          SitesDensity],
    Field(discriminator="kind"),
]
PositionModel = Annotated[Union[GaussianMixture, Uniform, PointList, TwinCsv, FromDensity], Field(discriminator="kind")]


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
    count: Annotated[int, Field(ge=0, le=10_000_000, strict=False), _NoBool] | None = Field(
        default=None, description="K, number of digital twins (from a twin file: its number of rows)")
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
    min_render_fraction: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False), _NoBoolNumber] = Field(
        default=0.05, description="share of Psi_b always kept for rendering; DTs are admitted only within the rest"
    )


class Solver(_Model):
    max_iter: Annotated[int, Field(ge=1)] = Field(
        default=100, description="iteration cap of Algorithm 1 (method paper); paper-damped uses max(max_iter, 200) "
        "and optimal max(max_iter, 100) unless the method option max_iter is given (e.g. paper-damped.max_iter=50)")
    rel_tol: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False), _NoBoolNumber] = Field(
        default=1e-9, description="relative tolerance of Algorithm 1's stopping test on the objective")


class Geo(_Model):
    """Where the zone is on Earth: the projection from WGS84 lon/lat to the zone's metre frame."""

    projection: Literal["local", "utm"] = Field(
        default="local", description="local: azimuthal equidistant centred on center_lonlat_deg (x east, y north, "
        "exact distances from the centre); utm: the UTM zone of the centre")
    center_lonlat_deg: list[Finite] | None = Field(
        default=None, description="[lon, lat] of the projection centre; default: the centre of the sites' box")


class Scenario(_Model):
    """A whole scenario: the root of the configuration tree."""

    name: str = "custom"
    seed: Annotated[int, Field(ge=0), _NoBool] = 0
    geo: Geo | None = Field(default=None, description="projection of lon/lat inputs to the zone's metres")
    zone: Zone
    servers: Servers
    sensing: Sensing
    twins: Twins
    channel: Channel = Channel()
    model: ModelChoices = ModelChoices()
    solver: Solver = Solver()
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="written when data files are resolved: where each section came from "
        "(file, checksum, filters, counts); informational, never read")

    @field_validator("name")
    @classmethod
    def _name_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty string")
        return v

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base_dir: str | Path | None = None) -> "Scenario":
        """Validate a plain dict; raise :class:`ScenarioError` naming every bad field.

        Data files (``servers.sites``, file densities, ``twins.positions: {kind: csv}``,
        ``zone.auto``) are read here, once, relative to ``base_dir`` (default: the
        working directory): the scenario returned holds the concrete values (server
        positions, the zone, the density on the zone grid, the twin points), so that
        nothing downstream reads a file, and :meth:`to_dict` writes a configuration
        that needs no data file to load again.
        """
        if not isinstance(data, dict):
            raise ScenarioError(f"scenario: expected a mapping of sections, got {type(data).__name__}")
        try:
            scn = cls.model_validate(data)
        except ValidationError as exc:
            raise _scenario_error(exc) from None
        bdir = Path(base_dir) if base_dir else None
        unresolved = None
        if needs_resolution(scn):
            unresolved = scn.model_dump(mode="json")
            if scn.zone.auto is not None and "origin_m" not in scn.zone.model_fields_set:
                unresolved["zone"].pop("origin_m")  # a default, not the user's: zone.auto sets it
            scn = _resolve(scn, bdir)
        _check_consistency(scn, base_dir=bdir)
        if base_dir is not None:
            object.__setattr__(scn, "_base_dir", str(base_dir))
        if unresolved is not None:
            object.__setattr__(scn, "_unresolved", unresolved)
        return scn

    @property
    def base_dir(self) -> Path | None:
        """Folder that relative file paths in the scenario are read from (the scenario file's)."""
        b = getattr(self, "_base_dir", None)
        return Path(b) if b else None

    def projection(self):
        """The :class:`edgeverse.geo.Projection` from lon/lat to the zone frame, or None without ``geo``."""
        if self.geo is None or self.geo.center_lonlat_deg is None:
            return None
        from . import geo

        lon, lat = self.geo.center_lonlat_deg
        if self.geo.projection == "utm":
            return geo.utm_projection_for(lon, lat)
        return geo.LocalProjection(lon, lat)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON/YAML-ready) that :meth:`from_dict` reads back (without any data file)."""
        d = self.model_dump(mode="json")
        # sections a scenario without data files does not use are left out, as before they existed
        for parent, key in ((d, "geo"), (d, "provenance"), (d["servers"], "sites"), (d["zone"], "auto")):
            if not parent.get(key):
                parent.pop(key, None)
        if d["twins"].get("count") is None:
            d["twins"].pop("count", None)
        for key in ("positions_m", "compute_hz", "sensor_bandwidth_hz", "size_m", "cells"):
            for sec in (d["servers"], d["zone"]):
                if key in sec and sec[key] is None:
                    sec.pop(key)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def with_overrides(self, overrides: dict[str, Any]) -> "Scenario":
        """A new validated scenario with fields replaced by dotted path.

        A scenario read from data files applies the overrides to its configuration
        as written (``servers.sites.merge_radius_m``, ``zone.auto.cell_size_m`` ...)
        and reads the files again; without the files (e.g. reloaded from a saved
        solution) they apply to the resolved values.

        >>> s = get_preset("paper").with_overrides({"twins.count": 120, "sensing.density.components.0.std_m": 400})
        >>> (s.twins.count, s.sensing.density.components[0].std_m)
        (120, 400.0)
        """
        src = getattr(self, "_unresolved", None)
        data = copy.deepcopy(src if src is not None else self.to_dict())
        for path, value in overrides.items():
            set_by_path(data, path, value)
        return Scenario.from_dict(data, base_dir=self.base_dir)


def set_by_path(data: dict, path: str, value: Any) -> None:
    """Set ``data[a][b][0][c] = value`` for ``path = "a.b.0.c"``; error naming the path if it does not exist.

    A mapping set on a mapping merges into it as a scenario file's sections merge into their ``base``
    preset (``{"twins": {"count": 7}}`` changes the count only); one with a new ``kind``, ``sites`` or
    ``auto`` replaces it.
    """
    if not path or any(not k.strip() for k in path.split(".")):
        raise ScenarioError(f"{path!r}: an empty field name; give a dotted path such as twins.count")
    keys = path.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        node = _child(node, key, ".".join(keys[: i + 1]), path)
    last = keys[-1]
    if isinstance(node, list):
        idx = _index(node, last, path)
        node[idx] = value
    elif isinstance(node, dict):
        old = node.get(last)
        if isinstance(value, dict) and isinstance(old, dict) and not (_REPLACING_KEYS & value.keys()):
            node[last] = _deep_merge(old, value)
        else:
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
_KIND_TAGS = ("gaussian_mixture", "uniform", "array", "points", "grid_csv", "points_csv", "npy", "geotiff",
              "from_sites", "csv", "from_density")
_TYPE_ONLY = {"list_type", "float_type", "int_type", "dict_type", "model_type", "string_type"}


def _loc_to_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _KIND_TAGS:
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
#: Largest grid accepted (cells): about 1.6 GB per float64 array of that length.
MAX_CELLS = 200_000_000
#: Largest grid ``zone.auto`` makes by itself (a cell size slip, e.g. 0.5 for 50 m, stops here): 4e6 cells
#: took 2.5 GB in the metro benchmark, so this is about 10 GB.
AUTO_MAX_CELLS = 16_000_000


def _check_consistency(scn: Scenario, base_dir: Path | None) -> None:
    z = scn.zone
    for name in ("size_m", "cells"):
        if getattr(z, name) is None:
            _fail(f"zone.{name}", "required field is missing; give zone.size_m and zone.cells, or zone.auto "
                  "(the servers' bounding box plus a margin)")
    n_cells = int(np.prod([int(c) for c in z.cells], dtype=object))
    if n_cells > MAX_CELLS:
        _fail("zone.cells", f"got {list(z.cells)} = {n_cells:,} cells; at most {MAX_CELLS:,} are supported "
              "(use coarser cells)")
    s = scn.servers
    if s.positions_m is None:
        _fail("servers.positions_m", "required field is missing; give the positions or servers.sites (a site file)")
    for name in ("compute_hz", "sensor_bandwidth_hz"):
        if getattr(s, name) is None:
            _fail(f"servers.{name}", "required field is missing; give one value for every server or one per server")
    if scn.twins.count is None:
        _fail("twins.count", "required field is missing (only a twin file, twins.positions.kind: csv, gives it)")
    if scn.geo is not None and scn.geo.center_lonlat_deg is not None:
        _check_center(scn.geo.center_lonlat_deg)
    dim = len(z.size_m)
    if dim not in (2, 3):
        _fail("zone.size_m", f"got {len(z.size_m)} axes; a zone is 2D (x, y) or 3D (x, y, z)")
    if len(z.origin_m) != dim:
        _fail("zone.origin_m", f"got {len(z.origin_m)} coordinates; must match zone.size_m ({dim} axes)")
    if len(z.cells) != dim:
        _fail("zone.cells", f"got {len(z.cells)} entries; must match zone.size_m ({dim} axes)")
    lo = np.array(z.origin_m[:2])
    hi = lo + np.array(z.size_m[:2])

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
    if n > 1:  # pairs closer than 1e-6 m from a k-d tree (a double loop took a minute at 1e5 servers)
        from scipy.spatial import cKDTree

        pairs = cKDTree(pos).query_pairs(1e-6, output_type="ndarray")
        if len(pairs):
            i, j = (int(v) for v in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))[0]])
            _fail(f"servers.positions_m[{j}]", f"got {s.positions_m[j]}, the same position as servers.positions_m[{i}]; "
                  "servers must be at distinct positions")
    for name in ("compute_hz", "sensor_bandwidth_hz", "noise_psd_dbm_per_hz", "antenna_height_m", "names"):
        val = getattr(s, name)
        if isinstance(val, list) and len(val) != n:
            _fail(f"servers.{name}", f"got {len(val)} entries; must have one per server ({n}, as servers.positions_m)")
    if s.names is not None:
        blank = [i for i, v in enumerate(s.names) if not str(v).strip()]
        if blank:
            _fail(f"servers.names[{blank[0]}]", f"got {s.names[blank[0]]!r}; every server needs a name")
        seen: dict[str, int] = {}
        for i, v in enumerate(s.names):
            if v in seen:
                _fail(f"servers.names[{i}]", f"got {v!r}, the name of servers.names[{seen[v]}]; names must differ "
                      "(the tables and maps identify servers by name)")
            seen[v] = i

    _check_units(scn)
    _check_spatial(scn.sensing.density, "sensing.density", scn, base_dir, is_density=True)
    _check_spatial(scn.twins.positions, "twins.positions", scn, base_dir, is_density=False)
    shares = np.array([t.share for t in scn.twins.types])
    if shares.sum() <= 0:
        _fail("twins.types", "every share is 0; at least one type needs a positive share")
    names = [t.name for t in scn.twins.types]
    if len(set(names)) != len(names):
        _fail("twins.types", f"type names {names} repeat; each type needs its own name")


def _warn(field: str, message: str) -> None:
    import warnings

    from .errors import PlausibilityWarning

    warnings.warn(f"{field}: {message}", PlausibilityWarning, stacklevel=3)


#: A PT or sensor transmit power above this [W] is allowed but warned about (a dBm value written as W).
TX_POWER_PLAUSIBLE_MAX_W = 10.0
#: A noise PSD outside this range [dBm/Hz] is allowed but warned about (thermal noise: -174 dBm/Hz).
NOISE_PLAUSIBLE_DBM_PER_HZ = (-220.0, -120.0)


#: Hard limits of magnitudes whose products would overflow or vanish in floating point (errors, not
#: warnings): (field, low, high, unit, what is typical).
MAGNITUDE_LIMITS = {
    "zone.size_m": (0.0, 1e7, "m", "a city is 1e4 m; 1e7 m is a quarter of the Earth's circumference"),
    "servers.compute_hz": (1.0, 1e18, "Hz", "a server is 1e9-1e11 Hz"),
    "sensing.data_density_bps_per_m3": (0.0, 1e12, "bit/s/m^3", "the paper's is 50"),
    "sensing.render_complexity_cycles_per_bit": (0.0, 1e12, "cycles/bit", "the paper's is 5000"),
    "sensing.n_sensors": (1.0, 1e12, "sensors", "the paper's Q is 25,000"),
    "sensing.slot_s": (1e-9, 1e3, "s", "the paper's is 1e-3 s"),
    "sensing.volume_unit_m3": (1e-12, 1e6, "m^3", "the paper's is 0.01 m^3"),
    "sensing.tx_power_w": (1e-15, 1e6, "W", "the paper's is 1e-3 W; -120 dBm is 1e-15 W"),
    "twins.types[].tx_power_w": (1e-15, 1e6, "W", "the paper's are 0.1-0.3 W; -120 dBm is 1e-15 W"),
}
#: A PT or sensor transmit power below this [W] is allowed but warned about (-40 dBm).
TX_POWER_PLAUSIBLE_MIN_W = 1e-7


def _check_magnitudes(scn: Scenario) -> None:
    sens = scn.sensing
    values = {"zone.size_m": scn.zone.size_m, "servers.compute_hz": scn.servers.compute_hz,
              "sensing.data_density_bps_per_m3": sens.data_density_bps_per_m3,
              "sensing.render_complexity_cycles_per_bit": sens.render_complexity_cycles_per_bit,
              "sensing.n_sensors": sens.n_sensors, "sensing.slot_s": sens.slot_s,
              "sensing.volume_unit_m3": sens.volume_unit_m3, "sensing.tx_power_w": sens.tx_power_w,
              "twins.types[].tx_power_w": [t.tx_power_w for t in scn.twins.types]}
    for field, val in values.items():
        low, high, unit, typical = MAGNITUDE_LIMITS[field]
        seq = val if isinstance(val, list) else [val]
        for i, v in enumerate(seq):
            if v is not None and not (low <= v <= high):
                name = (field.replace("[]", f"[{i}]") if "[]" in field
                        else field + (f"[{i}]" if isinstance(val, list) else ""))
                _fail(name, f"got {v:g} {unit}; must be between {low:g} and {high:g} {unit} (beyond, the times "
                      f"overflow or vanish in floating point; {typical})")
    if sens.n_sensors != round(sens.n_sensors):
        _fail("sensing.n_sensors", f"got {sens.n_sensors:g}; must be a whole number of sensors (Q)")


def _check_units(scn: Scenario) -> None:
    """Warnings for values that are allowed but look like a unit slip: a frequency [Hz] far too low."""
    _check_magnitudes(scn)
    s = scn.servers
    fields = [("servers.compute_hz", s.compute_hz, 1e6, "8 GHz is 8e9"),
              ("servers.sensor_bandwidth_hz", s.sensor_bandwidth_hz, 1e3, "10 MHz is 1e7"),
              ("channel.carrier_hz", scn.channel.carrier_hz, 1e6, "3.5 GHz is 3.5e9")]
    fields += [(f"twins.types[{i}].bandwidth_hz", t.bandwidth_hz, 1e3, "1 MHz is 1e6")
               for i, t in enumerate(scn.twins.types)]
    for field, val, low, example in fields:
        bad = [v for v in (val if isinstance(val, list) else [val]) if v is not None and 0 < v < low]
        if bad:
            _warn(field, f"got {bad[0]:g} Hz, implausibly low: written in another unit? (the unit is Hz; {example})")
    from .units import dbm_to_watt, watt_to_dbm

    powers = [("sensing.tx_power_w", scn.sensing.tx_power_w)]
    powers += [(f"twins.types[{i}].tx_power_w", t.tx_power_w) for i, t in enumerate(scn.twins.types)]
    for field, val in powers:
        if val > TX_POWER_PLAUSIBLE_MAX_W:
            _warn(field, f"got {val:g} W, implausibly high for a sensor or machine: written in dBm? (the unit is W; "
                  "20 dBm is 0.1 W)")
        elif val < TX_POWER_PLAUSIBLE_MIN_W:
            _warn(field, f"got {val:g} W ({float(watt_to_dbm(val)):.0f} dBm), implausibly low for a sensor or "
                  "machine: written in another unit? (the unit is W; 0 dBm is 1e-3 W)")

    noise = s.noise_psd_dbm_per_hz
    for i, v in enumerate(noise if isinstance(noise, list) else [noise]):
        field = "servers.noise_psd_dbm_per_hz" + (f"[{i}]" if isinstance(noise, list) else "")
        with np.errstate(over="ignore", under="ignore"):
            w = float(dbm_to_watt(v))
        if not (0.0 < w < np.inf):
            _fail(field, f"got {v:g} dBm/Hz, which is {w:g} W/Hz in floating point; thermal noise is about "
                  "-174 dBm/Hz")
        if not NOISE_PLAUSIBLE_DBM_PER_HZ[0] <= v <= NOISE_PLAUSIBLE_DBM_PER_HZ[1]:
            _warn(field, f"got {v:g} dBm/Hz, outside {NOISE_PLAUSIBLE_DBM_PER_HZ[0]:g}..{NOISE_PLAUSIBLE_DBM_PER_HZ[1]:g}:"
                  " written in another unit? (the unit is dBm/Hz; thermal noise is about -174 dBm/Hz, and 4e-21 W/Hz"
                  " is -174)")


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
    elif isinstance(spec, FromDensity):
        if is_density:  # pragma: no cover - not a density kind
            _fail(field, "from_density is for twins.positions")
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
        from .geo import npy_load_problem

        _fail(f"{field}.file", f"{str(spec.file)!r} {npy_load_problem(path, exc)}")


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


# --------------------------------------------------------------------------- data files
def needs_resolution(scn: Scenario) -> bool:
    """Whether a validated scenario still names data files (or derived values) to resolve."""
    return (
        scn.servers.sites is not None
        or scn.zone.auto is not None
        or isinstance(scn.sensing.density, FILE_DENSITIES + (SitesDensity,))
        or isinstance(scn.twins.positions, TwinCsv)
        or (scn.geo is not None and scn.geo.center_lonlat_deg is None)
    )


def _check_center(center) -> None:
    if len(center) != 2:
        _fail("geo.center_lonlat_deg", f"got {list(center)}; give [lon, lat] in degrees")
    lon, lat = center
    if not -180.0 <= lon <= 180.0:
        _fail("geo.center_lonlat_deg[0]", f"got {lon!r}; a longitude must be in [-180, 180] degrees")
    if not -90.0 <= lat <= 90.0:
        _fail("geo.center_lonlat_deg[1]", f"got {lat!r}; a latitude must be in [-90, 90] degrees")


def data_path(file: str, base_dir: Path | None) -> Path:
    """A scenario's file path: absolute, or relative to the scenario file's folder (``base_dir``)."""
    p = Path(file).expanduser()
    return base_dir / p if (not p.is_absolute() and base_dir is not None) else p


def _existing(file: str, base_dir: Path | None, field: str) -> Path:
    p = data_path(file, base_dir)
    if not p.is_file():
        where = f" (looked at {p})" if str(p) != file else ""
        _fail(field, f"{file!r} does not exist{where}; file paths are relative to the scenario file")
    return p


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _read(field: str, fn, *args, **kwargs):
    """Call a reader of :mod:`edgeverse.geo`; its errors (naming file, row, column) become the field's error."""
    try:
        return fn(*args, **kwargs)
    except ScenarioError as exc:
        _fail(field, str(exc))
    except ImportError as exc:
        _fail(field, str(exc))


def _read_sites(spec: SiteSource, base_dir: Path | None):
    from dataclasses import replace

    from . import geo

    path = _existing(spec.file, base_dir, "servers.sites.file")
    sites = _read(
        "servers.sites", geo.read_sites_csv, path, format=spec.format, lon_col=spec.lon_col, lat_col=spec.lat_col,
        x_col=spec.x_col, y_col=spec.y_col, radio=spec.radio,
        operators=None if spec.operators is None else [str(o) for o in spec.operators],
        radio_col=spec.radio_col, operator_col=spec.operator_col, name_col=spec.name_col,
        compute_col=spec.compute_col, bandwidth_col=spec.bandwidth_col, delimiter=spec.delimiter,
    )  # fmt: skip
    if spec.bbox_lonlat_deg is not None:
        b = spec.bbox_lonlat_deg
        if len(b) != 4 or not (b[0] < b[2] and b[1] < b[3]):
            _fail("servers.sites.bbox_lonlat_deg", f"got {b}; give [lon_min, lat_min, lon_max, lat_max] with min < max")
        if sites.lon_deg is None:
            _fail("servers.sites.bbox_lonlat_deg", "only for sites in lon/lat (format opencellid or lonlat), not xy")
        keep = (sites.lon_deg >= b[0]) & (sites.lon_deg <= b[2]) & (sites.lat_deg >= b[1]) & (sites.lat_deg <= b[3])
        if not keep.any():
            _fail("servers.sites.bbox_lonlat_deg", f"got {b}; no site of {path} lies inside (the sites span lon "
                  f"{sites.lon_deg.min():.6f} to {sites.lon_deg.max():.6f}, lat {sites.lat_deg.min():.6f} to "
                  f"{sites.lat_deg.max():.6f})")
        fields = {}
        for name in ("lon_deg", "lat_deg", "x_m", "y_m", "radio", "operator", "compute_hz", "bandwidth_hz", "names",
                     "source_rows"):
            arr = getattr(sites, name)
            fields[name] = None if arr is None else arr[keep]
        sites = replace(sites, **fields)
    return path, sites


def _read_twin_table(spec: TwinCsv, base_dir: Path | None):
    from . import geo

    path = _existing(spec.file, base_dir, "twins.positions.file")
    table = _read("twins.positions", geo.read_twins_csv, path, x_col=spec.x_col, y_col=spec.y_col,
                  lon_col=spec.lon_col, lat_col=spec.lat_col, type_col=spec.type_col, delimiter=spec.delimiter)
    return path, table


def _density_needs_crs(spec) -> bool:
    return isinstance(spec, PointsCsvDensity) or (isinstance(spec, FILE_DENSITIES) and spec.crs is not None)


#: Sites and twins in lon/lat must lie within this distance of the projection centre (and of their median):
#: the local projection is meant for a city (accurate to about 1e-6 within 10 km), and a point farther away is
#: almost always a stray or swapped row.
MAX_PROJECTION_RADIUS_KM = 100.0


def _great_circle_km(lon0, lat0, lon, lat) -> np.ndarray:
    """Haversine distance [km] on the mean Earth sphere (a plausibility check, not geodesy)."""
    p0, p = np.radians(lat0), np.radians(np.asarray(lat, dtype=float))
    dl = np.radians(np.asarray(lon, dtype=float) - lon0)
    h = np.sin((p - p0) / 2) ** 2 + np.cos(p0) * np.cos(p) * np.sin(dl / 2) ** 2
    return 2 * 6371.0088 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _check_spread(center, tables, *, given: bool) -> None:
    """A clear error when a lon/lat row lies far from the others or from a given projection centre."""
    lim = MAX_PROJECTION_RADIUS_KM
    for field, t in tables:
        lon, lat = np.asarray(t.lon_deg, dtype=float), np.asarray(t.lat_deg, dtype=float)
        if lon.size == 0:
            continue
        def row(k: int) -> int:
            return int(t.source_rows[k]) if t.source_rows is not None else k + 1

        # the median longitude taken around the centre, so that rows on both sides of the 180th meridian
        # (179.99 and -179.99) have theirs between them, not near 0
        c_lon = float(center[0])
        med_lon = float((np.median((lon - c_lon + 180.0) % 360.0 - 180.0) + c_lon + 180.0) % 360.0 - 180.0)
        med_lat = float(np.median(lat))
        d_med = _great_circle_km(med_lon, med_lat, lon, lat)
        k = int(np.argmax(d_med))
        if d_med[k] > lim:
            _fail(field, f"{t.path}: row {row(k)} (lon {lon[k]:.6g}, lat {lat[k]:.6g}) is {d_med[k]:,.0f} km from the "
                  f"median of the rows (lon {med_lon:.6g}, lat {med_lat:.6g}); at most {lim:g} km are "
                  "allowed: a stray row, or lon and lat swapped in it?")
        d_c = _great_circle_km(float(center[0]), float(center[1]), lon, lat)
        k = int(np.argmax(d_c))
        if given and d_c[k] > lim:
            _fail("geo.center_lonlat_deg", f"got {[float(c) for c in center]}; the rows of {t.path} lie up to "
                  f"{d_c[k]:,.0f} km from it (row {row(k)}); "
                  f"the local projection is meant for points within {lim:g} km of its centre: give [lon, lat] "
                  "inside the area (check the order: longitude first), or null for the centre of the rows' box")


def _unique_names(names: list[str]) -> list[str]:
    """Site names made unique for the tables (real files repeat names across sites): the second ``A``
    becomes ``A (2)``, an empty one ``S<k>``.

    >>> _unique_names(["A", "A", "", "B", "A"])
    ['A', 'A (2)', 'S3', 'B', 'A (3)']
    """
    out, count = [], {}
    for k, v in enumerate(names):
        v = v.strip() or f"S{k + 1}"
        count[v] = count.get(v, 0) + 1
        out.append(v if count[v] == 1 else f"{v} ({count[v]})")
    return out


def _resolve_projection(scn: Scenario, sites, twin_table, out: dict):
    from . import geo

    lonlat_src = next((t for t in (sites, twin_table) if t is not None and t.lon_deg is not None), None)
    dens = scn.sensing.density
    if scn.geo is None and lonlat_src is None and not _density_needs_crs(dens):
        return None
    g = scn.geo or Geo()
    center = g.center_lonlat_deg
    if center is None:
        if lonlat_src is None:
            why = f"sensing.density ({dens.kind}, in {getattr(dens, 'crs', 'EPSG:4326')})" if _density_needs_crs(dens) else "geo"
            _fail("geo.center_lonlat_deg", f"required for {why}: no site or twin file in lon/lat to centre the "
                  "projection on; give [lon, lat] in degrees")
        c = _read("geo", geo.projection_for_points, lonlat_src.lon_deg, lonlat_src.lat_deg, kind="local")
        center = [c.lon0_deg, c.lat0_deg]
    _check_center(center)
    _check_spread(center, [(f, t) for f, t in (("servers.sites.file", sites), ("twins.positions.file", twin_table))
                           if t is not None and t.lon_deg is not None],
                  given=g.center_lonlat_deg is not None)
    out["geo"] = {"projection": g.projection, "center_lonlat_deg": [float(center[0]), float(center[1])]}
    if g.projection == "utm":
        return _read("geo.center_lonlat_deg", geo.utm_projection_for, center[0], center[1])
    return geo.LocalProjection(float(center[0]), float(center[1]))


def _per_site(value, n: int, field: str, col: str | None, merged_values):
    """A server field for sites: from the file's column (summed per site) or a scalar / list from the scenario."""
    if col is not None:
        if value is not None:
            _fail(f"servers.{field}", f"got {_short(value)} and servers.sites.{'compute_col' if field == 'compute_hz' else 'bandwidth_col'}"
                  f"={col!r}; give one of them")
        return [float(v) for v in merged_values]
    if isinstance(value, list) and len(value) != n:
        _fail(f"servers.{field}", f"got {len(value)} entries; must be one value for every server or one per server "
              f"({n} after merging the sites of servers.sites)")
    return value


def _resolve(scn: Scenario, base_dir: Path | None) -> Scenario:
    """Read the scenario's data files and return the scenario with concrete values (see :meth:`Scenario.from_dict`)."""
    from . import geo

    d = scn.model_dump(mode="json")
    prov: dict[str, Any] = dict(d.get("provenance") or {})
    srv = scn.servers

    # ---- read the files
    sites = sites_path = None
    if srv.sites is not None:
        if srv.positions_m is not None:
            _fail("servers.positions_m", "give either servers.positions_m or servers.sites (a site file), not both")
        if srv.names is not None:
            _fail("servers.names", "with servers.sites the names come from servers.sites.name_col (default S1, S2, ...)")
        sites_path, sites = _read_sites(srv.sites, base_dir)
    twin_table = twin_path = None
    if isinstance(scn.twins.positions, TwinCsv):
        twin_path, twin_table = _read_twin_table(scn.twins.positions, base_dir)

    # ---- projection
    proj = _resolve_projection(scn, sites, twin_table, d)

    # ---- servers from the sites
    if sites is not None:
        spec = srv.sites
        merged = _read("servers.sites", geo.merge_site_table, sites, proj, radius_m=spec.merge_radius_m)
        n = merged.n
        if n == 1 and sites.n > 1:
            _warn("servers.sites", f"all {sites.n} rows of {spec.file} merge into one server (merge_radius_m "
                  f"{spec.merge_radius_m:g}, spread {float(merged.spread_m.max()):.3g} m): are the coordinates in "
                  "another unit (radians, or degrees in metre columns)?")
        ds = d["servers"]
        ds["positions_m"] = merged.positions_m.tolist()
        ds["names"] = _unique_names([str(v) for v in merged.names]) if spec.name_col else None
        ds["compute_hz"] = _per_site(srv.compute_hz, n, "compute_hz", spec.compute_col, merged.compute_hz)
        ds["sensor_bandwidth_hz"] = _per_site(srv.sensor_bandwidth_hz, n, "sensor_bandwidth_hz", spec.bandwidth_col,
                                              merged.bandwidth_hz)
        for name in ("noise_psd_dbm_per_hz", "antenna_height_m"):
            val = getattr(srv, name)
            if isinstance(val, list) and len(val) != n:
                _fail(f"servers.{name}", f"got {len(val)} entries; must be one value for every server or one per "
                      f"server ({n} after merging the sites of servers.sites)")
        ds["sites"] = None
        prov["servers"] = {
            "file": spec.file, "sha256": _sha256(sites_path), "format": spec.format,
            "filters": {"radio": spec.radio, "operators": spec.operators, "bbox_lonlat_deg": spec.bbox_lonlat_deg},
            "cells_kept": sites.n, "merge_radius_m": spec.merge_radius_m, "n_servers": n,
            "max_spread_m": float(merged.spread_m.max()) if n else 0.0,
            "member_rows": [sites.source_rows[merged.members(k)].tolist() for k in range(n)],
            "member_names": [str(sites.names[merged.members(k)[0]]) for k in range(n)],
        }  # fmt: skip

    # ---- zone
    dz = d["zone"]
    if scn.zone.auto is not None:
        auto = scn.zone.auto
        given = (["origin_m"] if "origin_m" in scn.zone.model_fields_set else []) + [
            f for f in ("size_m", "cells") if getattr(scn.zone, f) is not None]
        if given:
            _fail(f"zone.{given[0]}", "give either zone.auto or zone.origin_m / size_m / cells, not both")
        pos = d["servers"]["positions_m"]
        if pos is None:
            _fail("zone.auto", "needs the servers' positions: give servers.positions_m or servers.sites")
        pts = np.asarray(pos, dtype=float).reshape(-1, 2)
        if twin_table is not None:
            pts = np.vstack([pts, twin_table.positions_m(proj)])
        origin, size = _read("zone.auto", geo.bounding_zone, pts[:, 0], pts[:, 1], margin_m=auto.margin_m,
                             round_to_m=auto.cell_size_m)
        cells = np.rint(size / auto.cell_size_m).astype(int)
        if int(np.prod(cells)) > AUTO_MAX_CELLS:
            _fail("zone.auto.cell_size_m", f"got {auto.cell_size_m:g} m: {cells[0]} x {cells[1]} cells over "
                  f"{size[0]:g} m x {size[1]:g} m, more than {AUTO_MAX_CELLS:,} (about 10 GB of memory); use "
                  f"larger cells, or give zone.origin_m / size_m / cells (at most {MAX_CELLS:,} cells)")
        d["zone"] = dz = {"origin_m": origin.tolist(), "size_m": size.tolist(), "cells": cells.tolist(), "auto": None}
        prov["zone"] = {"auto": {"margin_m": auto.margin_m, "cell_size_m": auto.cell_size_m},
                        "box_of": "servers" + (" and twins" if twin_table is not None else "")}
    elif scn.zone.size_m is None or scn.zone.cells is None:
        missing = "size_m" if scn.zone.size_m is None else "cells"
        _fail(f"zone.{missing}", "required field is missing; give zone.size_m and zone.cells, or zone.auto "
              "(the servers' bounding box plus a margin)")

    # ---- sensing density
    dens = scn.sensing.density
    if isinstance(dens, FILE_DENSITIES):
        field = "sensing.density"
        if len(dz["size_m"]) != 2:
            _fail(field, f"a density read from a file ({dens.kind}) needs a 2D zone; zone.size_m has {len(dz['size_m'])} axes")
        path = _existing(dens.file, base_dir, f"{field}.file")
        if isinstance(dens, GridCsvDensity):
            cells_src = _read(field, geo.read_density_grid_3035_csv, path, x_col=dens.x_col, y_col=dens.y_col,
                              value_col=dens.value_col, cell_size_m=dens.cell_size_m,
                              check_alignment=dens.check_alignment)
            if dens.crs != "EPSG:3035":
                from dataclasses import replace

                cells_src = replace(cells_src, crs=dens.crs)
        elif isinstance(dens, PointsCsvDensity):
            cells_src = _read(field, geo.read_density_points_csv, path, lon_col=dens.lon_col, lat_col=dens.lat_col,
                              value_col=dens.value_col)
        elif isinstance(dens, NpyDensity):
            cells_src = _read(field, geo.read_density_npy, path, bounds_m=dens.bounds_m, crs=dens.crs,
                              value_kind=dens.value_kind)
        else:
            cells_src = _read(field, geo.read_density_geotiff, path, band=dens.band, crs=dens.crs,
                              value_kind=dens.value_kind)
        if cells_src.crs is not None and proj is None:
            _fail("geo.center_lonlat_deg", f"required: {field} ({path}) is in {cells_src.crs}; give [lon, lat] in degrees")
        kw = {} if isinstance(dens, PointsCsvDensity) else {"reproject": dens.reproject, "subsample": dens.subsample}
        grid, kept = _read(field, geo.resample_to_grid, cells_src, origin_m=dz["origin_m"], size_m=dz["size_m"],
                           cells=dz["cells"], projection=proj, **kw)
        total = cells_src.total
        if not grid.sum() > 0:
            _fail(field, f"{path}: none of its mass ({total:g}) falls inside the zone (origin {dz['origin_m']} m, "
                  f"size {dz['size_m']} m); check the file's area, its CRS, geo.center_lonlat_deg, and whether the site or twin file has its lon and lat columns swapped")
        d["sensing"]["density"] = {"kind": "array", "values": grid.tolist(), "file": None}
        prov["sensing.density"] = {
            "kind": dens.kind, "file": dens.file, "sha256": _sha256(path),
            **{k: getattr(dens, k) for k in ("value_col", "crs", "cell_size_m", "bounds_m", "band", "value_kind",
                                             "reproject", "subsample") if hasattr(dens, k)},
            "records": int(np.asarray(cells_src.values).size), "total": total, "total_in_zone": float(grid.sum()),
            "fraction_kept": float(kept),
        }  # fmt: skip
    elif isinstance(dens, SitesDensity):
        if sites is not None:
            pts = sites.positions_m(proj)
            what = f"the {sites.n} cells of servers.sites (before merging)"
        else:
            pts = np.asarray(d["servers"]["positions_m"], dtype=float).reshape(-1, 2)
            what = f"the {len(pts)} servers"
        lo = np.asarray(dz["origin_m"][:2], dtype=float)
        hi = lo + np.asarray(dz["size_m"][:2], dtype=float)
        inside = np.all((pts >= lo) & (pts <= hi), axis=1)
        if not inside.any():
            _fail("sensing.density", f"from_sites: none of {what} lies inside the zone")
        d["sensing"]["density"] = {"kind": "gaussian_mixture", "components": [
            {"mean_m": [float(x), float(y)], "std_m": dens.std_m, "weight": 1.0} for x, y in pts[inside]]}
        prov["sensing.density"] = {"kind": "from_sites", "std_m": dens.std_m, "kernels": int(inside.sum()), "of": what}

    # ---- twins from a file
    if twin_table is not None:
        spec = scn.twins.positions
        pos = twin_table.positions_m(proj)
        n = twin_table.n
        if n >= 2 and float(np.ptp(pos[:, 0]) + np.ptp(pos[:, 1])) < 1.0 and twin_table.lon_deg is None:
            _warn("twins.positions", f"all {n} PTs of {twin_path} lie within 1 m of each other: are the x/y columns "
                  "in degrees? (x_col / y_col are metres; give lon_col / lat_col for degrees)")
        if scn.twins.count is not None and scn.twins.count != n:
            _fail("twins.count", f"got {scn.twins.count}; the twin file {twin_path} has {n} rows: leave twins.count "
                  "out or make it match")
        lo = np.asarray(dz["origin_m"][:2], dtype=float)
        hi = lo + np.asarray(dz["size_m"][:2], dtype=float)
        out = np.flatnonzero(~np.all((pos >= lo) & (pos <= hi), axis=1))
        if out.size:
            k = int(out[0])
            _fail("twins.positions", f"{twin_path}: row {int(twin_table.source_rows[k])}: the twin at "
                  f"({pos[k, 0]:.1f}, {pos[k, 1]:.1f}) m is outside the zone x in [{lo[0]:g}, {hi[0]:g}] m, "
                  f"y in [{lo[1]:g}, {hi[1]:g}] m ({out.size} twin(s) outside)")
        ids = None
        if spec.type_col is not None:
            names = [t.name for t in scn.twins.types]
            for k, v in enumerate(twin_table.types):
                if v not in names:
                    _fail("twins.positions", f"{twin_path}: row {int(twin_table.source_rows[k])}, column "
                          f"{spec.type_col!r}: got {v!r}; must be one of the twins.types names: {', '.join(names)}")
            ids = [names.index(v) for v in twin_table.types]
        d["twins"]["positions"] = {"kind": "points", "points_m": pos.tolist(), "types": ids}
        d["twins"]["count"] = n
        prov["twins.positions"] = {"kind": "csv", "file": spec.file, "sha256": _sha256(twin_path), "rows": n,
                                   "type_col": spec.type_col}

    d["provenance"] = prov
    try:
        return Scenario.model_validate(d)
    except ValidationError as exc:
        raise _scenario_error(exc) from None


# --------------------------------------------------------------------------- loading
PRESET_PACKAGE = "edgeverse.presets"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key repeated in one mapping is an error (plain YAML keeps the last one,
    silently dropping the first section)."""


def _unique_mapping(loader, node, deep=False):
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *anchor brings keys the mapping may override
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key].start_mark.line + 1})",
                key_node.start_mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str, name: str | None = None) -> Any:
    """``yaml.safe_load`` with repeated keys an error (:class:`yaml.YAMLError`, with the line; ``name``: the
    file named in its messages)."""
    import io

    stream = io.StringIO(text)
    stream.name = name or "<text>"
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


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


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read a scenario from a ``.yaml``/``.yml`` or ``.toml`` file.

    A file may start from a preset with ``base: NAME`` and override any section.
    ``overrides`` (dotted path -> value, as ``--set``) are applied to the configuration
    as written before it is validated, so they can also complete or repair a file.
    """
    p = Path(path)
    if not p.exists():
        raise ScenarioError(f"scenario file {str(path)!r} does not exist")
    if p.is_dir():
        raise ScenarioError(f"scenario file {str(path)!r} is a folder; give a .yaml, .yml or .toml file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"scenario file {str(path)!r} is not a UTF-8 text file (YAML or TOML expected)") from None
    except OSError as exc:
        raise ScenarioError(f"scenario file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml"):
            data = load_yaml(text, str(path))
        else:
            raise ScenarioError(f"scenario file {str(path)!r}: unknown extension {p.suffix!r}; use .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"scenario file {str(path)!r} is not valid {p.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario file {str(path)!r}: expected a mapping of sections at the top level")
    if "base" in data:
        base = data.pop("base")
        if str(base) not in preset_names():
            raise ScenarioError(f"scenario file {str(path)!r}: base: got {base!r}; available presets: "
                                f"{', '.join(preset_names())}")
        merged = yaml.safe_load(preset_text(str(base)))
        own_twins = data.get("twins") if isinstance(data.get("twins"), dict) else {}
        positions = own_twins.get("positions")
        if isinstance(positions, dict) and positions.get("kind") in ("csv", "points") and "count" not in own_twins \
                and isinstance(merged.get("twins"), dict):
            # the DTs come from this file's list: the preset's count does not apply (the list gives it)
            merged["twins"].pop("count", None)
        data = _deep_merge(merged, data)
    for key, value in (overrides or {}).items():
        set_by_path(data, key, value)
    return Scenario.from_dict(data, base_dir=p.resolve().parent)


#: Keys that make an overriding section replace the preset's section instead of merging into it:
#: a new ``kind``, servers from a site file, a zone from the servers' box.
_REPLACING_KEYS = frozenset({"kind", "sites", "auto"})


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not (_REPLACING_KEYS & v.keys()):
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
    "Geo",
    "ZoneAuto",
    "SiteSource",
    "GridCsvDensity",
    "PointsCsvDensity",
    "NpyDensity",
    "GeotiffDensity",
    "SitesDensity",
    "TwinCsv",
    "FromDensity",
    "data_path",
    "get_preset",
    "preset_names",
    "preset_text",
    "load_scenario",
    "set_by_path",
    "PATH_LOSS_MODELS",
]

