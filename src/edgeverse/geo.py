"""Readers for real deployments: base-station sites, density layers, twin positions.

Pure functions that turn files of real data into numpy arrays in a local metre
frame.  Nothing here knows about :mod:`edgeverse.scenario`; building a scenario
from these arrays is the caller's job.

Conventions
-----------
* Geographic coordinates are WGS84 degrees, longitude first (``lon_deg``,
  ``lat_deg``), as in every CSV this module reads.
* The local frame is metres, ``x`` east and ``y`` north, given by a
  :class:`Projection`.  :class:`LocalProjection` is an **azimuthal
  equidistant** projection (``+proj=aeqd`` on the WGS84 ellipsoid) centred on
  the area: distances from its centre are exact, and the scale error is about
  ``(d / R)^2 / 6``, i.e. below 1e-6 within 10 km of the centre (less than a
  millimetre over 5 km).  :func:`utm_projection_for` gives the UTM zone instead.
* A zone grid is ``origin_m (2,)``, ``size_m (2,)`` and ``cells (nx, ny)``; its
  cell ``(i, j)`` covers ``x`` in ``[x0 + i dx, x0 + (i + 1) dx)`` and ``y`` in
  ``[y0 + j dy, y0 + (j + 1) dy)``; arrays over it have shape ``(nx, ny)``
  (axis 0 is x), like ``zone.cells``.
* Every problem in an input file raises :class:`~edgeverse.errors.ScenarioError`
  naming the file, the row and the column, the value found and what is
  allowed.  Rows are counted like a user reads the file: ``row 1`` is the first
  data row after the header; the physical line number is given as well, e.g.
  ``row 3 (line 4)``.

pyproj is needed for the projections (``pip install 'edgeverse[geo]'``) and is
imported on first use; rasterio is needed only by :func:`read_density_geotiff`
(``pip install 'edgeverse[geotiff]'``).

Examples
--------
>>> proj = LocalProjection(4.925, 45.7675)
>>> x_m, y_m = proj.to_xy_m([4.925, 4.935], [45.7675, 45.7675])
>>> [round(float(v), 1) for v in x_m]
[0.0, 777.9]
>>> labels, centres_m = merge_sites([0.0, 50.0, 1000.0], [0.0, 0.0, 0.0], radius_m=100.0)
>>> labels.tolist(), centres_m.tolist()
([0, 0, 1], [[25.0, 0.0], [1000.0, 0.0]])
"""

from __future__ import annotations

import csv
import functools
import math
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .errors import ScenarioError

ArrayLike = npt.ArrayLike
PathLike = str | Path

__all__ = [
    "OPENCELLID_COLUMNS",
    "Projection",
    "LocalProjection",
    "UtmProjection",
    "utm_projection_for",
    "projection_for_points",
    "Sites",
    "read_sites_csv",
    "merge_sites",
    "MergedSites",
    "merge_site_table",
    "DensityPoints",
    "DensityCells",
    "read_density_points_csv",
    "read_density_grid_3035_csv",
    "read_density_npy",
    "read_density_geotiff",
    "ResampledDensity",
    "resample_to_grid",
    "TwinTable",
    "read_twins_csv",
    "bounding_zone",
]

#: Columns of an OpenCelliD cell export, in file order (the raw export has no header row).
OPENCELLID_COLUMNS = (
    "radio", "mcc", "net", "area", "cell", "unit", "lon", "lat",
    "range", "samples", "changeable", "created", "updated", "averageSignal",
)  # fmt: skip
_OPENCELLID_REQUIRED = ("radio", "mcc", "net", "area", "cell", "lon", "lat")
_OPENCELLID_RADIOS = {"GSM", "UMTS", "LTE", "NR", "CDMA"}
WGS84 = "EPSG:4326"


# =========================================================================== projections
def _pyproj():
    try:
        import pyproj
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "edgeverse.geo needs pyproj for map projections; install the extra: pip install 'edgeverse[geo]'"
        ) from exc
    return pyproj


@functools.lru_cache(maxsize=128)
def _transformer_cached(src: str, dst: str, thread_id: int):
    return _pyproj().Transformer.from_crs(src, dst, always_xy=True)


def _transformer(src: str, dst: str):
    # pyproj transformers are not meant to be shared between threads: one per thread.
    return _transformer_cached(src, dst, threading.get_ident())


def _as_float_array(value: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ScenarioError(f"{name}: got {value!r}; must be numbers") from None
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(k) for k in np.argwhere(bad)[0])
        where = f"[{', '.join(map(str, idx))}]" if idx else ""
        raise ScenarioError(f"{name}{where}: got {arr[bad][0]!r}; must be a finite number")


def _check_lonlat_arrays(lon: np.ndarray, lat: np.ndarray, lon_name: str, lat_name: str) -> None:
    _check_finite(lon, lon_name)
    _check_finite(lat, lat_name)
    for arr, name, lim in ((lat, lat_name, 90.0), (lon, lon_name, 180.0)):
        bad = np.abs(arr) > lim
        if bad.any():
            idx = tuple(int(k) for k in np.argwhere(bad)[0])
            where = f"[{', '.join(map(str, idx))}]" if idx else ""
            raise ScenarioError(f"{name}{where}: got {float(arr[bad][0])!r}; must be in [-{lim:g}, {lim:g}] degrees")


class Projection:
    """A map projection from WGS84 lon/lat (degrees) to a metre frame and back.

    Subclasses define :attr:`crs` (a string pyproj understands).  Transforms
    are vectorised, take and return numpy arrays (broadcast shapes), and use
    the ``x = east, y = north`` axis order whatever the CRS's official order.
    """

    crs: str

    def to_xy_m(self, lon_deg: ArrayLike, lat_deg: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Project WGS84 longitudes and latitudes [deg] to ``(x_m, y_m)`` [m].

        Raises
        ------
        ScenarioError
            If a coordinate is not finite or out of range (the message gives its index).
        """
        lon, lat = np.broadcast_arrays(_as_float_array(lon_deg, "lon_deg"), _as_float_array(lat_deg, "lat_deg"))
        _check_lonlat_arrays(lon, lat, "lon_deg", "lat_deg")
        x, y = _transformer(WGS84, self.crs).transform(lon, lat)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def to_lonlat(self, x_m: ArrayLike, y_m: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`to_xy_m`: ``(lon_deg, lat_deg)`` from metres."""
        x, y = np.broadcast_arrays(_as_float_array(x_m, "x_m"), _as_float_array(y_m, "y_m"))
        _check_finite(x, "x_m")
        _check_finite(y, "y_m")
        lon, lat = _transformer(self.crs, WGS84).transform(x, y)
        return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)

    def from_crs(self, x: ArrayLike, y: ArrayLike, crs: str) -> tuple[np.ndarray, np.ndarray]:
        """Transform coordinates given in another CRS (e.g. ``"EPSG:3035"``) to this frame [m].

        ``x, y`` follow the easting/northing (or lon/lat) order, whatever the
        CRS's official axis order.
        """
        xs, ys = np.broadcast_arrays(_as_float_array(x, "x"), _as_float_array(y, "y"))
        _check_finite(xs, "x")
        _check_finite(ys, "y")
        xo, yo = _transformer(str(crs), self.crs).transform(xs, ys)
        xo, yo = np.asarray(xo, dtype=float), np.asarray(yo, dtype=float)
        if not (np.isfinite(xo).all() and np.isfinite(yo).all()):
            raise ScenarioError(f"coordinates in {crs}: some cannot be transformed to {self.crs} (outside the CRS's domain)")
        return xo, yo


@dataclass(frozen=True)
class LocalProjection(Projection):
    """Azimuthal equidistant projection (``+proj=aeqd``, WGS84) centred on ``(lon0_deg, lat0_deg)``.

    The centre maps to ``(0, 0)``; x points east and y north.  Distances from
    the centre are exact; elsewhere the scale error is about ``(d / R)^2 / 6``
    (below 1e-6 within 10 km), so a city-sized area is mapped without
    noticeable distortion.

    Parameters
    ----------
    lon0_deg, lat0_deg : float
        Centre of the projection, WGS84 degrees.

    Examples
    --------
    >>> p = LocalProjection(144.96, -37.815)
    >>> [round(float(v), 6) for v in p.to_xy_m(144.96, -37.815)]
    [0.0, 0.0]
    >>> lon, lat = p.to_lonlat(1000.0, 0.0)
    >>> round(float(lon), 5), round(float(lat), 5)
    (144.97136, -37.815)
    """

    lon0_deg: float
    lat0_deg: float

    def __post_init__(self) -> None:
        lon0 = float(self.lon0_deg)
        lat0 = float(self.lat0_deg)
        if not (math.isfinite(lon0) and -180.0 <= lon0 <= 180.0):
            raise ScenarioError(f"LocalProjection.lon0_deg: got {self.lon0_deg!r}; must be in [-180, 180] degrees")
        if not (math.isfinite(lat0) and -90.0 <= lat0 <= 90.0):
            raise ScenarioError(f"LocalProjection.lat0_deg: got {self.lat0_deg!r}; must be in [-90, 90] degrees")
        object.__setattr__(self, "lon0_deg", lon0)
        object.__setattr__(self, "lat0_deg", lat0)

    @property
    def crs(self) -> str:  # type: ignore[override]
        return (
            f"+proj=aeqd +lat_0={self.lat0_deg!r} +lon_0={self.lon0_deg!r} +x_0=0 +y_0=0 "
            "+datum=WGS84 +units=m +no_defs +type=crs"
        )

    @property
    def kind(self) -> str:
        return "local"


@dataclass(frozen=True)
class UtmProjection(Projection):
    """A WGS84 / UTM zone (EPSG:326zz north, EPSG:327zz south).

    Parameters
    ----------
    zone : int
        UTM zone number, 1 to 60.
    south : bool
        Southern-hemisphere variant (false northing 10,000 km).
    """

    zone: int
    south: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.zone, bool) or not isinstance(self.zone, (int, np.integer)) or not 1 <= int(self.zone) <= 60:
            raise ScenarioError(f"UtmProjection.zone: got {self.zone!r}; must be an integer in [1, 60]")
        object.__setattr__(self, "zone", int(self.zone))
        object.__setattr__(self, "south", bool(self.south))

    @property
    def crs(self) -> str:  # type: ignore[override]
        return f"EPSG:{(32700 if self.south else 32600) + self.zone}"

    @property
    def kind(self) -> str:
        return "utm"


def _centre_lonlat(lon_deg: ArrayLike, lat_deg: ArrayLike) -> tuple[float, float]:
    """Centre of the lon/lat bounding box; handles boxes crossing the antimeridian."""
    lon, lat = np.broadcast_arrays(_as_float_array(lon_deg, "lon_deg"), _as_float_array(lat_deg, "lat_deg"))
    lon, lat = lon.ravel(), lat.ravel()
    if lon.size == 0:
        raise ScenarioError("lon_deg, lat_deg: got no points; need at least one")
    _check_lonlat_arrays(lon, lat, "lon_deg", "lat_deg")
    lat_c = float((lat.min() + lat.max()) / 2.0)
    s = np.sort(lon)
    gaps = np.diff(np.concatenate([s, [s[0] + 360.0]]))
    k = int(np.argmax(gaps))  # the box is the circle minus its largest empty gap
    if k == s.size - 1:  # the usual case: the gap is across the antimeridian
        return float((s[0] + s[-1]) / 2.0), lat_c
    start, end = s[k + 1], s[k] + 360.0
    return float((start + (end - start) / 2.0 + 180.0) % 360.0 - 180.0), lat_c


def utm_projection_for(lon_deg: ArrayLike, lat_deg: ArrayLike) -> UtmProjection:
    """The UTM zone holding a point (or the centre of the points' bounding box).

    Uses the standard 6-degree zones with the Norway (32V) and Svalbard
    (31X-37X) exceptions.  UTM's scale factor is 0.9996 on the central
    meridian (up to about 1.001 at a zone's edge), so projected distances are
    off by up to 4e-4 (2 m over 5 km); :class:`LocalProjection` is the
    accurate choice for distances.

    Raises
    ------
    ScenarioError
        Outside UTM's latitude range [-80, 84]: use ``LocalProjection`` there.

    Examples
    --------
    >>> utm_projection_for(4.925, 45.7675).crs
    'EPSG:32631'
    >>> utm_projection_for(144.96, -37.815).crs
    'EPSG:32755'
    """
    lon, lat = _centre_lonlat(lon_deg, lat_deg)
    if not -80.0 <= lat <= 84.0:
        raise ScenarioError(f"lat_deg: centre latitude {lat!r} is outside UTM's range [-80, 84]; use kind='local'")
    zone = min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32
    elif 72.0 <= lat <= 84.0 and 0.0 <= lon < 42.0:
        zone = 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return UtmProjection(zone, south=lat < 0.0)


def projection_for_points(
    lon_deg: ArrayLike, lat_deg: ArrayLike, *, kind: Literal["local", "utm"] = "local"
) -> Projection:
    """A projection suited to a set of points: centred on their lon/lat bounding box.

    Parameters
    ----------
    lon_deg, lat_deg : array_like
        WGS84 coordinates [deg].
    kind : {"local", "utm"}
        ``"local"``: :class:`LocalProjection` (azimuthal equidistant) at the
        box centre; ``"utm"``: the UTM zone of the box centre.

    Examples
    --------
    >>> p = projection_for_points([4.9, 4.95], [45.75, 45.79])
    >>> p.kind, round(p.lon0_deg, 6), round(p.lat0_deg, 6)
    ('local', 4.925, 45.77)
    >>> projection_for_points([179.0, -179.5], [0.0, 1.0]).lon0_deg  # across the antimeridian
    179.75
    """
    if kind == "local":
        return LocalProjection(*_centre_lonlat(lon_deg, lat_deg))
    if kind == "utm":
        return utm_projection_for(lon_deg, lat_deg)
    raise ScenarioError(f"kind: got {kind!r}; allowed: 'local', 'utm'")


# =========================================================================== CSV plumbing
@dataclass
class _Table:
    """A CSV file as strings, with the position of each data row for messages."""

    path: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]  # physical line (1-based) where each data row starts

    def where(self, k: int) -> str:
        return f"row {k + 1} (line {self.lines[k]})"

    def column_index(self, name: str, role: str) -> int:
        hits = [i for i, h in enumerate(self.header) if h == name]
        if not hits:
            near = [h for h in self.header if h.lower() == str(name).lower()]
            hint = f" (did you mean {near[0]!r}? names are case-sensitive)" if near else ""
            raise ScenarioError(
                f"{self.path}: missing column {name!r} ({role}){hint}; the file has columns: {', '.join(self.header)}"
            )
        if len(hits) > 1:
            raise ScenarioError(f"{self.path}: column {name!r} ({role}) appears {len(hits)} times in the header")
        return hits[0]

    def strings(self, name: str, role: str) -> list[str]:
        i = self.column_index(name, role)
        return [r[i].strip() for r in self.rows]

    def numbers(self, name: str, role: str, *, allowed: str = "a finite number", check=None) -> np.ndarray:
        """Column as floats; ``check(value) -> bool`` rejects values with message ``allowed``."""
        i = self.column_index(name, role)
        out = np.empty(len(self.rows))
        for k, r in enumerate(self.rows):
            s = r[i].strip()
            try:
                if "_" in s:
                    raise ValueError
                v = float(s)
            except ValueError:
                got = "an empty value" if not s else repr(s)
                raise ScenarioError(
                    f"{self.path}: {self.where(k)}, column {name!r}: got {got}; must be {allowed}"
                ) from None
            if not math.isfinite(v) or (check is not None and not check(v)):
                raise ScenarioError(f"{self.path}: {self.where(k)}, column {name!r}: got {s!r}; must be {allowed}")
            out[k] = v
        return out


def _read_table(path: PathLike, *, delimiter: str = ",", headerless_names: Sequence[str] | None = None,
                headerless_if=None) -> _Table:  # fmt: skip
    """Read a delimited text file; ``headerless_if(first_row)`` says the header is missing."""
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"{p}: file does not exist" if not p.exists() else f"{p}: not a regular file")
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            start = 1
            for row in reader:
                if row and any(f.strip() for f in row):
                    rows.append(row)
                    lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ScenarioError(f"{p}: line {start}: malformed CSV ({exc})") from None
    if not rows:
        raise ScenarioError(f"{p}: the file is empty; expected a header line and data rows")
    if headerless_names is not None and headerless_if is not None and headerless_if(rows[0]):
        header = list(headerless_names)
    else:
        header = [h.strip() for h in rows.pop(0)]
        lines.pop(0)
    for k, row in enumerate(rows):
        if len(row) != len(header):
            raise ScenarioError(
                f"{p}: row {k + 1} (line {lines[k]}): has {len(row)} fields; the header has {len(header)} "
                f"({', '.join(header)})"
            )
    if not rows:
        raise ScenarioError(f"{p}: the file has a header but no data rows")
    return _Table(str(p), header, rows, lines)


def _lonlat_columns(table: _Table, lon_col: str, lat_col: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate a lon/lat column pair (see :func:`read_sites_csv` for the swap heuristic)."""
    lon = table.numbers(lon_col, "longitude [deg]")
    lat = table.numbers(lat_col, "latitude [deg]")
    lat_bad = np.abs(lat) > 90.0
    lon_bad = np.abs(lon) > 180.0
    if not (lat_bad.any() or lon_bad.any()):
        return lon, lat
    if 2 * lat_bad.sum() > lat.size and np.all(np.abs(lat) <= 180.0) and np.all(np.abs(lon) <= 90.0):
        k = int(np.argmax(lat_bad))
        raise ScenarioError(
            f"{table.path}: columns {lon_col!r} and {lat_col!r} look swapped: column {lat_col!r} has values outside "
            f"[-90, 90] (first at {table.where(k)}: {table.rows[k][table.column_index(lat_col, '')].strip()!r}) that "
            f"are all valid longitudes, and every value of column {lon_col!r} is a valid latitude; "
            f"pass lon_col={lat_col!r}, lat_col={lon_col!r} or fix the header"
        )
    if np.all(np.abs(lon) > 1000.0) and np.all(np.abs(lat) > 1000.0):
        hint = "; the values look like projected metres: use format='xy' (x_col, y_col) for them"
    else:
        hint = ""
    k_lat = int(np.argmax(lat_bad)) if lat_bad.any() else len(lat)
    k_lon = int(np.argmax(lon_bad)) if lon_bad.any() else len(lon)
    if k_lat <= k_lon:
        name, k, lim = lat_col, k_lat, 90
    else:
        name, k, lim = lon_col, k_lon, 180
    value = table.rows[k][table.column_index(name, "")].strip()
    what = "latitudes" if lim == 90 else "longitudes"
    raise ScenarioError(
        f"{table.path}: {table.where(k)}, column {name!r}: got {value!r}; {what} must be in [-{lim}, {lim}] degrees{hint}"
    )


def _as_list_filter(values, name: str) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, (str, int, np.integer)):
        values = [values]
    out = list(values)
    if not out:
        raise ScenarioError(f"{name}: got an empty list; give at least one value or None for no filter")
    return out


def _norm_code(value) -> str:
    """Operator code as text without leading zeros or '.0' ('01', 1, '1.0' -> '1')."""
    s = str(value).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if math.isfinite(f) and f.is_integer() else s


def _value_counts(values: Sequence[str], limit: int = 12) -> str:
    items = Counter(values).most_common()
    text = ", ".join(f"{v or '(empty)'} ({n})" for v, n in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _readonly(arr: np.ndarray | None) -> np.ndarray | None:
    if arr is not None:
        arr.setflags(write=False)
    return arr


def _str_array(values: Sequence[str]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


# =========================================================================== sites
class _PositionTable:
    """Rows of a CSV with positions either in metres (``x_m, y_m``) or in WGS84 (``lon_deg, lat_deg``)."""

    _what = "rows"

    @property
    def n(self) -> int:
        """Number of rows (sites or twins)."""
        return int(self.source_rows.size)

    def __len__(self) -> int:
        return self.n

    def positions_m(self, projection: Projection | None = None) -> np.ndarray:
        """Positions ``(n, 2)`` [m] in the frame of ``projection`` (ignored, may be None, for metre tables)."""
        if self.x_m is not None:
            return np.column_stack([self.x_m, self.y_m])
        if projection is None:
            raise ScenarioError(f"{self.path}: the {self._what} are in lon/lat; pass a projection to get metres")
        x, y = projection.to_xy_m(self.lon_deg, self.lat_deg)
        return np.column_stack([x, y])


@dataclass(frozen=True, eq=False)
class Sites(_PositionTable):
    """Base-station cells (or sites) read from a file, one entry per kept row.

    Attributes
    ----------
    path : str
        The file read.
    format : {"opencellid", "lonlat", "xy"}
        How the file was read.
    lon_deg, lat_deg : ndarray or None
        WGS84 position [deg]; None for ``format="xy"``.
    x_m, y_m : ndarray or None
        Only for ``format="xy"``: the file's own metre coordinates (already in
        the zone's frame).  For lon/lat files, project with :meth:`positions_m`.
    radio : ndarray of str or None
        Radio technology (``GSM``, ``UMTS``, ``LTE``, ``NR``...) when the file has the column.
    operator : ndarray of str or None
        Operator code (OpenCelliD ``net``, the MNC) normalised as text without
        leading zeros, when the file has the column.
    compute_hz, bandwidth_hz : ndarray or None
        Per-site compute capacity [cycles/s] and bandwidth [Hz] when a column was named.
    names : ndarray of str
        ``name_col`` values; for OpenCelliD the cell identity
        ``RADIO:mcc-net-area-cell``; otherwise ``row<N>``.
    source_rows : ndarray of int
        1-based data row of each entry in the file (row 1 is the first row after the header).
    """

    path: str
    format: str
    lon_deg: np.ndarray | None
    lat_deg: np.ndarray | None
    x_m: np.ndarray | None
    y_m: np.ndarray | None
    radio: np.ndarray | None
    operator: np.ndarray | None
    compute_hz: np.ndarray | None
    bandwidth_hz: np.ndarray | None
    names: np.ndarray
    source_rows: np.ndarray

    _what = "sites"


def read_sites_csv(
    path: PathLike,
    *,
    format: Literal["opencellid", "lonlat", "xy"] = "opencellid",
    lon_col: str = "lon",
    lat_col: str = "lat",
    x_col: str = "x",
    y_col: str = "y",
    radio: Sequence[str] | None = None,
    operators: Sequence[str | int] | None = None,
    radio_col: str = "radio",
    operator_col: str = "net",
    name_col: str | None = None,
    compute_col: str | None = None,
    bandwidth_col: str | None = None,
    delimiter: str = ",",
) -> Sites:
    """Read base-station cells or sites from a CSV file.

    Parameters
    ----------
    path : str or Path
        The CSV file (UTF-8, a header line unless it is a raw OpenCelliD export).
    format : {"opencellid", "lonlat", "xy"}
        ``"opencellid"``: the OpenCelliD schema (:data:`OPENCELLID_COLUMNS`);
        columns ``radio, mcc, net, area, cell, lon, lat`` are required, and a
        raw export without header row (first field a radio such as ``GSM``) is
        read with the standard column names.  ``"lonlat"``: any table with
        WGS84 columns ``lon_col``, ``lat_col``.  ``"xy"``: metre coordinates
        ``x_col``, ``y_col`` already in the zone's frame.
    lon_col, lat_col, x_col, y_col : str
        Coordinate column names.
    radio : list of str, optional
        Keep only these radio technologies (case-insensitive), e.g. ``["LTE", "NR"]``.
    operators : list of str or int, optional
        Keep only these operator codes (OpenCelliD ``net``/MNC; ``1`` and ``"01"`` match).
    radio_col, operator_col : str
        Columns holding the radio and operator; read when present (required by the filters).
    name_col : str, optional
        Column with a site name or id.
    compute_col, bandwidth_col : str, optional
        Columns with a per-site compute capacity [cycles/s] and bandwidth [Hz] (> 0).
    delimiter : str
        Field separator.

    Returns
    -------
    Sites
        The kept rows, in file order.

    Raises
    ------
    ScenarioError
        On a missing file or column (the message lists the columns present), a
        non-numeric or non-finite coordinate, a latitude outside [-90, 90] or
        longitude outside [-180, 180], swapped lon/lat columns, a non-positive
        compute or bandwidth, or when the filters leave no row (naming the
        filter and the values present).  Every message names the file, the row
        (``row N (line L)``: N-th data row, L-th line) and the column.

    Notes
    -----
    Swapped-column heuristic: the columns are reported as swapped when more
    than half of the values of the declared latitude column are outside
    [-90, 90], all of them are valid longitudes (within [-180, 180]), and all
    values of the declared longitude column are valid latitudes.  Otherwise an
    out-of-range value is reported as such, at its row (a typo in one row is
    not a swap).  Swapped columns whose values all fit both ranges (everywhere
    with ``|lon| <= 90``) cannot be detected from the numbers.  The whole file is validated, including the rows the
    filters then drop.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "cells.csv"
    >>> _ = f.write_text("radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal\\n"
    ...                  "LTE,208,1,601,17,0,4.90,45.76,500,3,1,0,0,0\\n"
    ...                  "GSM,208,10,601,18,0,4.91,45.77,500,3,1,0,0,0\\n")
    >>> s = read_sites_csv(f, radio=["lte"])
    >>> s.n, s.names.tolist(), s.operator.tolist(), s.source_rows.tolist()
    (1, ['LTE:208-1-601-17'], ['1'], [1])
    """
    if format not in ("opencellid", "lonlat", "xy"):
        raise ScenarioError(f"format: got {format!r}; allowed: 'opencellid', 'lonlat', 'xy'")
    radio_f = _as_list_filter(radio, "radio")
    oper_f = _as_list_filter(operators, "operators")
    if format == "opencellid":
        table = _read_table(
            path,
            delimiter=delimiter,
            headerless_names=OPENCELLID_COLUMNS,
            headerless_if=lambda r: len(r) == len(OPENCELLID_COLUMNS) and r[0].strip().upper() in _OPENCELLID_RADIOS,
        )
        for c in _OPENCELLID_REQUIRED:
            table.column_index(c, "OpenCelliD schema: " + ",".join(OPENCELLID_COLUMNS))
    else:
        table = _read_table(path, delimiter=delimiter)

    lon = lat = x = y = None
    if format == "xy":
        x = table.numbers(x_col, "x [m]")
        y = table.numbers(y_col, "y [m]")
    else:
        lon, lat = _lonlat_columns(table, lon_col, lat_col)

    has = set(table.header)
    radio_v = table.strings(radio_col, "radio") if (radio_col in has or radio_f is not None) else None
    oper_v = (
        [_norm_code(v) for v in table.strings(operator_col, "operator code")]
        if (operator_col in has or oper_f is not None)
        else None
    )
    compute = (
        table.numbers(compute_col, "compute [cycles/s]", allowed="a finite number > 0", check=lambda v: v > 0)
        if compute_col is not None
        else None
    )
    bandwidth = (
        table.numbers(bandwidth_col, "bandwidth [Hz]", allowed="a finite number > 0", check=lambda v: v > 0)
        if bandwidth_col is not None
        else None
    )
    if name_col is not None:
        names = table.strings(name_col, "site name")
    elif format == "opencellid":
        cols = [table.strings(c, "cell identity") for c in ("mcc", "net", "area", "cell")]
        rv = table.strings("radio", "radio")
        names = [f"{rv[k]}:{'-'.join(_norm_code(c[k]) for c in cols)}" for k in range(len(table.rows))]
    else:
        names = [f"row{k + 1}" for k in range(len(table.rows))]

    keep = np.ones(len(table.rows), dtype=bool)
    if radio_f is not None:
        wanted = {str(r).strip().upper() for r in radio_f}
        keep &= np.array([v.upper() in wanted for v in radio_v], dtype=bool)
        if not keep.any():
            raise ScenarioError(
                f"{table.path}: no row left after the radio filter {radio_f!r}; "
                f"column {radio_col!r} holds: {_value_counts(radio_v)}"
            )
    if oper_f is not None:
        wanted = {_norm_code(o) for o in oper_f}
        before = keep.copy()
        keep &= np.array([v in wanted for v in oper_v], dtype=bool)
        if not keep.any():
            after = f" among the rows kept by the radio filter {radio_f!r}" if radio_f is not None else ""
            raise ScenarioError(
                f"{table.path}: no row left after the operators filter {oper_f!r}; column {operator_col!r}{after} "
                f"holds: {_value_counts([v for v, b in zip(oper_v, before) if b])}"
            )

    idx = np.flatnonzero(keep)

    def pick(a):
        if a is None:
            return None
        return _readonly(a[idx] if isinstance(a, np.ndarray) else _str_array([a[k] for k in idx]))

    return Sites(
        path=table.path,
        format=format,
        lon_deg=pick(lon),
        lat_deg=pick(lat),
        x_m=pick(x),
        y_m=pick(y),
        radio=pick(radio_v),
        operator=pick(oper_v),
        compute_hz=pick(compute),
        bandwidth_hz=pick(bandwidth),
        names=pick(names),
        source_rows=_readonly(idx + 1),
    )


# =========================================================================== merging
def _xy_pair(x_m: ArrayLike, y_m: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = _as_float_array(x_m, "x_m")
    y = _as_float_array(y_m, "y_m")
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ScenarioError(f"x_m, y_m: got shapes {x.shape} and {y.shape}; must be two 1-D arrays of one length")
    _check_finite(x, "x_m")
    _check_finite(y, "y_m")
    return x, y


def merge_sites(x_m: ArrayLike, y_m: ArrayLike, *, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Group cells of one physical site: single-linkage clustering at ``radius_m``.

    Two positions closer than or at ``radius_m`` are linked; each connected
    component (via :class:`scipy.spatial.cKDTree` pairs and
    :func:`scipy.sparse.csgraph.connected_components`) becomes one server at
    the mean of its members.  Single linkage chains: a line of cells each within
    ``radius_m`` of the next becomes one group however long it is.

    Parameters
    ----------
    x_m, y_m : array_like, shape (n,)
        Positions [m] in a metric frame.
    radius_m : float
        Link distance [m], >= 0 (0 merges exact duplicates only).

    Returns
    -------
    labels : ndarray of int, shape (n,)
        Group of each position, numbered 0, 1, ... in order of first appearance.
    centres_m : ndarray, shape (m, 2)
        Mean position of each group [m].

    Examples
    --------
    >>> labels, c = merge_sites([5.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 1.0], radius_m=1.0)
    >>> labels.tolist(), c.tolist()
    ([0, 1, 0, 1], [[5.0, 0.0], [0.0, 0.5]])
    """
    x, y = _xy_pair(x_m, y_m)
    r = float(radius_m)
    if not (math.isfinite(r) and r >= 0.0):
        raise ScenarioError(f"radius_m: got {radius_m!r}; must be a finite number >= 0")
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=np.intp), np.zeros((0, 2))
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(r=r, output_type="ndarray")
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    m, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)
    remap = np.empty(m, dtype=np.intp)
    remap[np.argsort(first, kind="stable")] = np.arange(m)
    labels = remap[comp]
    counts = np.bincount(labels, minlength=m)
    centres = np.column_stack([np.bincount(labels, x, m) / counts, np.bincount(labels, y, m) / counts])
    return labels, centres


@dataclass(frozen=True, eq=False)
class MergedSites:
    """Servers obtained by merging the cells of each physical site.

    Attributes
    ----------
    positions_m : ndarray, shape (m, 2)
        Server positions [m] (mean of the members) in the projection's frame.
    lon_deg, lat_deg : ndarray or None
        The same positions in WGS84 [deg] (None for metre input).
    member_counts : ndarray of int, shape (m,)
        Cells merged into each server.
    labels : ndarray of int, shape (n,)
        Server of each input site.
    spread_m : ndarray, shape (m,)
        Largest distance of a member from its server [m]; large values reveal chaining.
    compute_hz, bandwidth_hz : ndarray or None
        Sum over the members of the per-site values, when the sites have them.
    names : ndarray of str
        Name of each server's first member.
    radius_m : float
        The merge radius used.
    projection : Projection or None
        The frame of ``positions_m`` (None for ``format="xy"`` sites).
    """

    positions_m: np.ndarray
    lon_deg: np.ndarray | None
    lat_deg: np.ndarray | None
    member_counts: np.ndarray
    labels: np.ndarray
    spread_m: np.ndarray
    compute_hz: np.ndarray | None
    bandwidth_hz: np.ndarray | None
    names: np.ndarray
    radius_m: float
    projection: Projection | None

    @property
    def n(self) -> int:
        """Number of servers."""
        return int(self.member_counts.size)

    def members(self, k: int) -> np.ndarray:
        """Indices (into the input sites) of the members of server ``k``."""
        return np.flatnonzero(self.labels == k)


def merge_site_table(sites: Sites, projection: Projection | None = None, *, radius_m: float) -> MergedSites:
    """Merge the cells of each physical site of ``sites`` (see :func:`merge_sites`).

    Parameters
    ----------
    sites : Sites
        As read by :func:`read_sites_csv`.
    projection : Projection, optional
        Frame for lon/lat sites; default: :func:`projection_for_points` of the
        sites (local azimuthal equidistant).  Ignored for ``format="xy"``.
    radius_m : float
        Merge radius [m].

    Returns
    -------
    MergedSites
        Positions, member counts and summed per-site compute and bandwidth.
    """
    if sites.x_m is None and projection is None:
        projection = projection_for_points(sites.lon_deg, sites.lat_deg)
    if sites.x_m is not None:
        projection = None
    pos = sites.positions_m(projection)
    labels, centres = merge_sites(pos[:, 0], pos[:, 1], radius_m=radius_m)
    m = centres.shape[0]
    counts = np.bincount(labels, minlength=m)
    dist = np.hypot(pos[:, 0] - centres[labels, 0], pos[:, 1] - centres[labels, 1])
    spread = np.zeros(m)
    np.maximum.at(spread, labels, dist)
    _, first = np.unique(labels, return_index=True)
    lon = lat = None
    if projection is not None and m:
        lon, lat = projection.to_lonlat(centres[:, 0], centres[:, 1])

    def summed(a):
        return None if a is None else _readonly(np.bincount(labels, a, m))

    return MergedSites(
        positions_m=_readonly(centres),
        lon_deg=_readonly(lon),
        lat_deg=_readonly(lat),
        member_counts=_readonly(counts),
        labels=_readonly(labels),
        spread_m=_readonly(spread),
        compute_hz=summed(sites.compute_hz),
        bandwidth_hz=summed(sites.bandwidth_hz),
        names=_readonly(_str_array([sites.names[k] for k in first])),
        radius_m=float(radius_m),
        projection=projection,
    )


# =========================================================================== density
def _check_total_mass(values, path) -> None:
    """The mass of a density must sum to a finite number (each value may be finite and the sum still overflow)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.asarray(values, dtype=float).sum()
    if not np.isfinite(total):
        big = float(np.max(np.abs(values))) if np.size(values) else float("nan")
        raise ScenarioError(
            f"{path}: the values sum to {total} (the largest is {big:g}): the total mass overflows a float; "
            "rescale the file's values (only their relative sizes matter) so that they sum to less than 1e300"
        )


@dataclass(frozen=True, eq=False)
class DensityPoints:
    """Point samples of a mass (people, sensors...): ``values[k]`` sits at ``(x[k], y[k])``.

    ``x, y`` are in the units of ``crs`` (lon/lat degrees for ``EPSG:4326``);
    ``crs=None`` means the zone's local metre frame.
    """

    x: np.ndarray
    y: np.ndarray
    values: np.ndarray
    crs: str | None
    path: str
    source_rows: np.ndarray | None

    def __post_init__(self):
        _check_total_mass(self.values, self.path)

    @property
    def total(self) -> float:
        """Total mass."""
        return float(self.values.sum())


@dataclass(frozen=True, eq=False)
class DensityCells:
    """Axis-aligned rectangular cells of a CRS carrying a mass each (people per cell, not per m^2).

    Cell ``k`` covers ``[x_ll[k], x_ll[k] + cell_size[0]] x [y_ll[k], y_ll[k] + cell_size[1]]``
    in the units of ``crs``; ``crs=None`` means the zone's local metre frame.
    """

    x_ll: np.ndarray
    y_ll: np.ndarray
    cell_size: tuple[float, float]
    values: np.ndarray
    crs: str | None
    path: str
    source_rows: np.ndarray | None

    def __post_init__(self):
        _check_total_mass(self.values, self.path)

    @property
    def total(self) -> float:
        """Total mass."""
        return float(self.values.sum())


def read_density_points_csv(
    path: PathLike, *, lon_col: str = "lon", lat_col: str = "lat", value_col: str, delimiter: str = ","
) -> DensityPoints:
    """Read point samples of a density (e.g. cell centres with a head count) from a CSV file.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    lon_col, lat_col : str
        WGS84 columns [deg] (validated like :func:`read_sites_csv`, swapped columns included).
    value_col : str
        The mass at each point (a count, finite and >= 0).

    Returns
    -------
    DensityPoints
        With ``crs="EPSG:4326"`` (``x`` = lon, ``y`` = lat).
    """
    table = _read_table(path, delimiter=delimiter)
    lon, lat = _lonlat_columns(table, lon_col, lat_col)
    values = table.numbers(value_col, "mass per point", allowed="a finite number >= 0", check=lambda v: v >= 0)
    rows = np.arange(1, len(table.rows) + 1)
    return DensityPoints(_readonly(lon), _readonly(lat), _readonly(values), WGS84, table.path, _readonly(rows))


def read_density_grid_3035_csv(
    path: PathLike,
    *,
    x_col: str = "x_ll_3035",
    y_col: str = "y_ll_3035",
    value_col: str,
    cell_size_m: float = 200.0,
    check_alignment: bool = True,
    delimiter: str = ",",
) -> DensityCells:
    """Read square cells of the European INSPIRE grid (EPSG:3035, ETRS89-LAEA) from a CSV file.

    Parameters
    ----------
    path : str or Path
        The CSV file, one row per (populated) cell; missing cells count 0.
    x_col, y_col : str
        Lower-left corner of each cell in EPSG:3035 [m] (easting, northing).
    value_col : str
        Mass of each cell (a count, finite and >= 0), e.g. ``ind_2017``.
    cell_size_m : float
        Cell edge [m].
    check_alignment : bool
        Require corners on multiples of ``cell_size_m`` (true for INSPIRE
        grids); catches cell centres given instead of corners.

    Returns
    -------
    DensityCells
        With ``crs="EPSG:3035"``.

    Raises
    ------
    ScenarioError
        On a bad value (file, row, column), a misaligned corner, or a cell listed twice.
    """
    size = float(cell_size_m)
    if not (math.isfinite(size) and size > 0):
        raise ScenarioError(f"cell_size_m: got {cell_size_m!r}; must be a finite number > 0")
    table = _read_table(path, delimiter=delimiter)
    x = table.numbers(x_col, "EPSG:3035 easting of the lower-left corner [m]")
    y = table.numbers(y_col, "EPSG:3035 northing of the lower-left corner [m]")
    values = table.numbers(value_col, "mass per cell", allowed="a finite number >= 0", check=lambda v: v >= 0)
    if check_alignment:
        for arr, name in ((x, x_col), (y, y_col)):
            rem = np.mod(arr, size)
            bad = np.minimum(rem, size - rem) > 1e-6 * size
            if bad.any():
                k = int(np.argmax(bad))
                half = np.abs(rem - size / 2) <= 1e-6 * size
                hint = (
                    "; all values sit half a cell off the grid: they look like cell centres, give lower-left corners"
                    if half.all()
                    else ""
                )
                raise ScenarioError(
                    f"{table.path}: {table.where(k)}, column {name!r}: got {table.rows[k][table.column_index(name, '')].strip()!r}; "
                    f"must be a multiple of cell_size_m={size:g} (a lower-left corner of the grid){hint}; "
                    "pass check_alignment=False for a grid with another origin"
                )
    key = np.round(np.column_stack([x, y]) / (size * 1e-3)).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first[inverse.ravel()] != np.arange(len(x)))
    if dup.size:
        k = int(dup[0])
        j = int(first[inverse.ravel()[k]])
        raise ScenarioError(
            f"{table.path}: {table.where(k)}, columns {x_col!r}, {y_col!r}: cell ({x[k]:g}, {y[k]:g}) is listed "
            f"again (first at {table.where(j)}); each cell must appear once"
        )
    rows = np.arange(1, len(table.rows) + 1)
    return DensityCells(
        _readonly(x), _readonly(y), (size, size), _readonly(values), "EPSG:3035", table.path, _readonly(rows)
    )


def _crs_is_metric(crs: str | None) -> bool:
    if crs is None:
        return True
    info = _pyproj().CRS.from_user_input(crs).axis_info
    return bool(info) and all(a.unit_name in ("metre", "meter") for a in info[:2])


def _cells_from_raster(arr, x0, y0, dx, dy, *, crs, path, value_kind, index_name) -> DensityCells:
    """Cells from a 2-D array ``arr[i, j]`` whose cell (i, j) has lower-left ``(x0 + i dx, y0 + j dy)``."""
    if value_kind not in ("count", "per_m2"):
        raise ScenarioError(f"value_kind: got {value_kind!r}; allowed: 'count' (mass per cell), 'per_m2'")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        idx = tuple(int(k) for k in np.argwhere(bad)[0])
        raise ScenarioError(f"{path}: {index_name(idx)}: got {float(arr[idx])!r}; must be a finite number >= 0")
    if value_kind == "per_m2":
        if not _crs_is_metric(crs):
            raise ScenarioError(f"{path}: value_kind='per_m2' needs a CRS in metres; {crs} is not")
        arr = arr * (dx * dy)
    ii, jj = np.nonzero(arr)  # empty cells carry no mass: skip them
    return DensityCells(
        _readonly(x0 + ii * dx),
        _readonly(y0 + jj * dy),
        (float(dx), float(dy)),
        _readonly(np.asarray(arr[ii, jj], dtype=float)),
        crs,
        path,
        None,
    )


def npy_load_problem(path: PathLike, exc: BaseException) -> str:
    """Why ``np.load`` refused a file, in a user's words: a file without the .npy header is not an .npy
    file at all (numpy itself then speaks of pickled data)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as err:
        return f"cannot be read ({err})"
    if head != b"\x93NUMPY":
        return ("is not an .npy file (it does not start with the .npy header); write the array with "
                "numpy.save(path, array)")
    return f"is not a readable .npy array ({exc})"


def read_density_npy(
    path: PathLike,
    *,
    bounds_m: Sequence[float],
    crs: str | None = None,
    value_kind: Literal["count", "per_m2"] = "count",
) -> DensityCells:
    """Read a density raster saved with :func:`numpy.save`.

    Parameters
    ----------
    path : str or Path
        A ``.npy`` file holding a 2-D array of shape ``(nx, ny)``, axis 0 = x:
        element ``[i, j]`` is the cell ``i``-th from the west and ``j``-th from
        the south (the zone's convention; ``np.flipud(image.T)`` of a north-up image).
    bounds_m : (x0, y0, x1, y1)
        Outer edges of the raster in ``crs`` units (metres of the zone frame by default).
    crs : str, optional
        CRS of ``bounds_m``; None: the zone's local metre frame (no reprojection).
    value_kind : {"count", "per_m2"}
        Values are a mass per cell, or a density per m^2 (multiplied by the cell area).

    Returns
    -------
    DensityCells
        One cell per non-zero element (NaN or negative values are errors).
    """
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"{p}: file does not exist")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ScenarioError(f"{p} {npy_load_problem(p, exc)}") from None
    if arr.ndim != 2 or 0 in arr.shape or not np.issubdtype(arr.dtype, np.number):
        raise ScenarioError(f"{p}: got an array of shape {arr.shape} and dtype {arr.dtype}; must be a 2-D numeric (nx, ny) array")
    b = _as_float_array(bounds_m, "bounds_m")
    if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
        raise ScenarioError(f"bounds_m: got {bounds_m!r}; must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
    nx, ny = arr.shape
    dx, dy = (b[2] - b[0]) / nx, (b[3] - b[1]) / ny
    return _cells_from_raster(
        np.asarray(arr, dtype=float), b[0], b[1], dx, dy, crs=crs, path=str(p), value_kind=value_kind,
        index_name=lambda idx: f"element [{idx[0]}, {idx[1]}]",
    )  # fmt: skip


def read_density_geotiff(
    path: PathLike,
    *,
    band: int = 1,
    crs: str | None = "file",
    value_kind: Literal["count", "per_m2"] = "count",
) -> DensityCells:
    """Read a density raster from a GeoTIFF (needs ``rasterio``: ``pip install 'edgeverse[geotiff]'``).

    Parameters
    ----------
    path : str or Path
        A north-up (unrotated) raster, e.g. a population count per pixel.
    band : int
        1-based band number.
    crs : str or None
        ``"file"``: the file's CRS (an error if it has none); a CRS string to
        override it; None: the zone's local metre frame.
    value_kind : {"count", "per_m2"}
        Pixel values are a mass per pixel, or a density per m^2 (multiplied by
        the pixel area; needs a metric CRS).

    Returns
    -------
    DensityCells
        One cell per non-zero pixel; nodata pixels count 0.

    Raises
    ------
    ImportError
        When rasterio is missing.
    ScenarioError
        On a rotated raster, a missing CRS, a bad band or a negative or non-finite value.
    """
    try:
        import rasterio
    except ImportError as exc:
        raise ImportError(
            "read_density_geotiff needs rasterio; install the extra: pip install 'edgeverse[geotiff]'"
        ) from exc
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(f"{p}: file does not exist")
    try:
        src_ctx = rasterio.open(p)
    except Exception as exc:  # rasterio raises its own RasterioIOError
        raise ScenarioError(f"{p}: not a readable raster ({exc})") from None
    with src_ctx as src:
        if not 1 <= int(band) <= src.count:
            raise ScenarioError(f"band: got {band!r}; {p} has bands 1..{src.count}")
        t = src.transform
        if t.b != 0 or t.d != 0:
            raise ScenarioError(f"{p}: the raster is rotated or sheared (transform {tuple(t)[:6]}); only north-up rasters are read")
        data = src.read(int(band), masked=True)
        file_crs = src.crs.to_string() if src.crs else None
    if crs == "file":
        if file_crs is None:
            raise ScenarioError(f"{p}: the raster has no CRS; set crs to one (e.g. 'EPSG:2154'), or to null when "
                                  "the raster is already in the zone's local metre frame")
        crs = file_crs
    arr = np.ma.filled(data.astype(float), 0.0)  # nodata and masked pixels -> 0
    nrows, ncols = arr.shape
    # pixel (r, c) covers x in [c0 + c a, c0 + (c+1) a], y in [f + r e, f + (r+1) e]; reorder to [i=x, j=y from south]
    a, e = float(t.a), float(t.e)
    grid = arr.T  # (col, row)
    if a < 0:
        grid = grid[::-1, :]
    if e < 0:
        grid = grid[:, ::-1]
    x0 = min(t.c, t.c + ncols * a)
    y0 = min(t.f, t.f + nrows * e)
    return _cells_from_raster(
        np.ascontiguousarray(grid), x0, y0, abs(a), abs(e), crs=crs, path=str(p), value_kind=value_kind,
        index_name=lambda idx: f"band {band}, pixel (row {nrows - 1 - idx[1] if e < 0 else idx[1]}, "
        f"col {ncols - 1 - idx[0] if a < 0 else idx[0]})",
    )  # fmt: skip


class ResampledDensity(NamedTuple):
    """Result of :func:`resample_to_grid`: unpack as ``grid, fraction_kept = ...``."""

    grid: np.ndarray
    """Mass per zone cell, shape ``(nx, ny)``."""
    fraction_kept: float
    """Share of the source's total mass that fell inside the zone (1.0 for an all-zero source)."""


def _zone_args(origin_m, size_m, cells) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    o = _as_float_array(origin_m, "origin_m")
    s = _as_float_array(size_m, "size_m")
    if o.shape != (2,) or not np.isfinite(o).all():
        raise ScenarioError(f"origin_m: got {origin_m!r}; must be 2 finite numbers (x0, y0) [m]")
    if s.shape != (2,) or not np.isfinite(s).all() or (s <= 0).any():
        raise ScenarioError(f"size_m: got {size_m!r}; must be 2 finite numbers > 0 [m]")
    c = list(cells) if not isinstance(cells, (int, np.integer)) else [cells]
    if len(c) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in c):
        raise ScenarioError(f"cells: got {cells!r}; must be 2 integers >= 1 (nx, ny)")
    return o, s, (int(c[0]), int(c[1]))


def _overlap_matrix(a0: np.ndarray, a1: np.ndarray, origin: float, step: float, n: int) -> sparse.csr_matrix:
    """Sparse (len(a0), n): share of each interval [a0, a1] inside each bin [origin + k step, origin + (k+1) step)."""
    k0 = np.clip(np.floor((a0 - origin) / step), 0, n - 1).astype(np.int64)
    k1 = np.clip(np.ceil((a1 - origin) / step) - 1, 0, n - 1).astype(np.int64)
    cnt = np.maximum(k1 - k0 + 1, 1)
    rows = np.repeat(np.arange(a0.size), cnt)
    offs = np.arange(rows.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    cols = k0[rows] + offs
    lo = np.maximum(a0[rows], origin + cols * step)
    hi = np.minimum(a1[rows], origin + (cols + 1) * step)
    share = np.clip(hi - lo, 0.0, None) / (a1 - a0)[rows]
    return sparse.csr_matrix((share, (rows, cols)), shape=(a0.size, n))


def _boxes_to_grid(x0, x1, y0, y1, mass, o, s, cells) -> np.ndarray:
    """Exact area-overlap distribution of axis-aligned boxes (uniform mass inside each) onto the grid."""
    nx, ny = cells
    if np.any(x1 <= x0) or np.any(y1 <= y0):
        raise ScenarioError("density cells: a source cell has zero width or height in the zone frame")
    ox = _overlap_matrix(x0, x1, o[0], s[0] / nx, nx)
    oy = _overlap_matrix(y0, y1, o[1], s[1] / ny, ny)
    return np.asarray((ox.T @ sparse.diags(mass) @ oy).toarray(), dtype=float)


def _points_to_grid(x, y, mass, o, s, cells) -> np.ndarray:
    nx, ny = cells
    fi = np.floor((x - o[0]) / (s[0] / nx))
    fj = np.floor((y - o[1]) / (s[1] / ny))
    inside = (fi >= 0) & (fi < nx) & (fj >= 0) & (fj < ny)
    flat = fi[inside].astype(np.int64) * ny + fj[inside].astype(np.int64)
    return np.bincount(flat, weights=mass[inside], minlength=nx * ny).reshape(nx, ny)


def resample_to_grid(
    density: DensityPoints | DensityCells,
    *,
    origin_m: ArrayLike,
    size_m: ArrayLike,
    cells: Sequence[int],
    projection: Projection | None = None,
    reproject: Literal["subsample", "corners"] = "subsample",
    subsample: int = 8,
) -> ResampledDensity:
    """Resample a density onto a zone grid, conserving mass.

    Parameters
    ----------
    density : DensityPoints or DensityCells
        From one of the ``read_density_*`` readers.
    origin_m, size_m : array_like, shape (2,)
        The zone's lower corner and edge lengths [m] in the projection's frame.
    cells : (nx, ny)
        Zone cells along x and y.
    projection : Projection, optional
        The zone's frame; required when ``density.crs`` is not None.
    reproject : {"subsample", "corners"}
        How a source cell given in another CRS is carried into the zone frame.
        ``"subsample"`` (default): split into ``subsample x subsample``
        sub-cells whose centres are transformed with pyproj, each carrying
        ``1 / subsample**2`` of the cell's mass, then binned (handles the
        rotation between grids; boundary error at most half a sub-cell).
        ``"corners"``: transform the 4 corners and spread the mass uniformly
        over the axis-aligned box of the transformed corners, by exact area
        overlap (slightly larger than the true cell when the grids are rotated).
    subsample : int
        Sub-cells per source-cell edge for ``reproject="subsample"``.

    Returns
    -------
    ResampledDensity
        ``(grid, fraction_kept)``: mass per zone cell, shape ``(nx, ny)``
        (axis 0 = x), and the share of the total that fell inside the zone.
        Mass outside the zone is dropped; zone cells without data are 0.

    Notes
    -----
    Point samples are binned: a point at ``(x, y)`` adds its value to the
    zone cell holding it (half-open cells, so a point on the zone's far edge
    is outside).  Cells with ``crs=None`` (already in the zone frame) are
    distributed by exact area overlap with the zone cells, whatever
    ``reproject`` says.  Total mass is conserved to rounding when the source
    lies inside the zone.

    Examples
    --------
    Two by two cells of 2 m on a 4 x 4 grid of 1 m cells, shifted by half a
    zone cell: each source cell spreads over 3 x 3 zone cells (weights 1/4 and
    1/2 along each axis) and mass falling past the far edges is dropped.

    >>> src = DensityCells(np.array([0.5, 0.5, 2.5, 2.5]), np.array([0.5, 2.5, 0.5, 2.5]), (2.0, 2.0),
    ...                    np.array([4.0, 0.0, 0.0, 0.0]), None, "example", None)
    >>> grid, kept = resample_to_grid(src, origin_m=[0, 0], size_m=[4, 4], cells=(4, 4))
    >>> grid.tolist()
    [[0.25, 0.5, 0.25, 0.0], [0.5, 1.0, 0.5, 0.0], [0.25, 0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]]
    >>> kept
    1.0
    """
    o, s, shape = _zone_args(origin_m, size_m, cells)
    if density.crs is not None and projection is None:
        raise ScenarioError(
            f"{density.path}: the density is in {density.crs}; pass projection= (the zone's frame) to resample it"
        )
    total = density.total
    mass = np.asarray(density.values, dtype=float)
    if isinstance(density, DensityPoints):
        if density.crs is None:
            x, y = np.asarray(density.x, float), np.asarray(density.y, float)
        else:
            x, y = projection.from_crs(density.x, density.y, density.crs)
        grid = _points_to_grid(x, y, mass, o, s, shape)
    elif isinstance(density, DensityCells):
        dx, dy = density.cell_size
        xl, yl = np.asarray(density.x_ll, float), np.asarray(density.y_ll, float)
        if density.crs is None:
            grid = _boxes_to_grid(xl, xl + dx, yl, yl + dy, mass, o, s, shape)
        elif reproject == "corners":
            cx = np.stack([xl, xl + dx, xl, xl + dx], axis=1)
            cy = np.stack([yl, yl, yl + dy, yl + dy], axis=1)
            px, py = projection.from_crs(cx, cy, density.crs)
            grid = _boxes_to_grid(px.min(1), px.max(1), py.min(1), py.max(1), mass, o, s, shape)
        elif reproject == "subsample":
            k = subsample
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ScenarioError(f"subsample: got {subsample!r}; must be an integer >= 1")
            frac = (np.arange(k) + 0.5) / k
            fx = np.repeat(frac, k)
            fy = np.tile(frac, k)
            grid = np.zeros(shape)
            chunk = max(1, 2_000_000 // (k * k))
            for a in range(0, xl.size, chunk):
                b = min(a + chunk, xl.size)
                sx = (xl[a:b, None] + fx[None, :] * dx).ravel()
                sy = (yl[a:b, None] + fy[None, :] * dy).ravel()
                px, py = projection.from_crs(sx, sy, density.crs)
                grid += _points_to_grid(px, py, np.repeat(mass[a:b] / (k * k), k * k), o, s, shape)
        else:
            raise ScenarioError(f"reproject: got {reproject!r}; allowed: 'subsample', 'corners'")
    else:
        raise ScenarioError(f"density: got {type(density).__name__}; must be DensityPoints or DensityCells")
    kept = float(grid.sum() / total) if total > 0 else 1.0
    return ResampledDensity(grid, min(kept, 1.0))


# =========================================================================== twins and zone
@dataclass(frozen=True, eq=False)
class TwinTable(_PositionTable):
    """Physical-twin positions (and types) read from a file.

    Attributes
    ----------
    path : str
        The file read.
    lon_deg, lat_deg : ndarray or None
        WGS84 positions [deg] (lon/lat files).
    x_m, y_m : ndarray or None
        Metre positions in the zone frame (x/y files).
    types : ndarray of str or None
        The ``type_col`` value of each twin.
    type_names : tuple of str
        Distinct types in order of first appearance (empty without ``type_col``).
    type_ids : ndarray of int or None
        Index of each twin's type in ``type_names``.
    source_rows : ndarray of int
        1-based data rows.
    """

    path: str
    lon_deg: np.ndarray | None
    lat_deg: np.ndarray | None
    x_m: np.ndarray | None
    y_m: np.ndarray | None
    types: np.ndarray | None
    type_names: tuple[str, ...]
    type_ids: np.ndarray | None
    source_rows: np.ndarray

    _what = "twins"


def read_twins_csv(
    path: PathLike,
    *,
    x_col: str | None = None,
    y_col: str | None = None,
    lon_col: str | None = None,
    lat_col: str | None = None,
    type_col: str | None = None,
    delimiter: str = ",",
) -> TwinTable:
    """Read physical-twin positions from a CSV file, in metres or in lon/lat.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    x_col, y_col : str, optional
        Metre columns in the zone frame.
    lon_col, lat_col : str, optional
        WGS84 columns [deg] (validated like :func:`read_sites_csv`).
    type_col : str, optional
        Column naming each twin's type.

    Give one pair.  With neither, the header decides: columns ``x, y`` or
    ``lon, lat`` (an error when it has both or neither).

    Returns
    -------
    TwinTable
    """
    table = _read_table(path, delimiter=delimiter)
    use_xy = x_col is not None or y_col is not None
    use_ll = lon_col is not None or lat_col is not None
    if use_xy and use_ll:
        raise ScenarioError("give x_col/y_col or lon_col/lat_col, not both")
    if use_xy and (x_col is None or y_col is None):
        raise ScenarioError(f"got x_col={x_col!r}, y_col={y_col!r}; give both")
    if use_ll and (lon_col is None or lat_col is None):
        raise ScenarioError(f"got lon_col={lon_col!r}, lat_col={lat_col!r}; give both")
    if not (use_xy or use_ll):
        has = set(table.header)
        auto_xy, auto_ll = {"x", "y"} <= has, {"lon", "lat"} <= has
        if auto_xy == auto_ll:
            what = "both x, y and lon, lat" if auto_xy else "neither x, y nor lon, lat"
            raise ScenarioError(
                f"{table.path}: the header has {what} ({', '.join(table.header)}); pass x_col/y_col or lon_col/lat_col"
            )
        use_xy = auto_xy
        x_col, y_col, lon_col, lat_col = ("x", "y", None, None) if auto_xy else (None, None, "lon", "lat")
    lon = lat = x = y = None
    if use_xy:
        x = table.numbers(x_col, "x [m]")
        y = table.numbers(y_col, "y [m]")
    else:
        lon, lat = _lonlat_columns(table, lon_col, lat_col)
    types = type_ids = None
    names: tuple[str, ...] = ()
    if type_col is not None:
        tv = table.strings(type_col, "twin type")
        for k, v in enumerate(tv):
            if not v:
                raise ScenarioError(f"{table.path}: {table.where(k)}, column {type_col!r}: got an empty value; must name a type")
        names = tuple(dict.fromkeys(tv))
        pos = {t: i for i, t in enumerate(names)}
        types = _readonly(_str_array(tv))
        type_ids = _readonly(np.array([pos[t] for t in tv], dtype=np.intp))
    return TwinTable(
        path=table.path,
        lon_deg=_readonly(lon),
        lat_deg=_readonly(lat),
        x_m=_readonly(x),
        y_m=_readonly(y),
        types=types,
        type_names=names,
        type_ids=type_ids,
        source_rows=_readonly(np.arange(1, len(table.rows) + 1)),
    )


def bounding_zone(
    x_m: ArrayLike, y_m: ArrayLike, *, margin_m: float, round_to_m: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned box around points, grown by a margin: a zone's ``(origin_m, size_m)``.

    Parameters
    ----------
    x_m, y_m : array_like, shape (n,)
        Positions [m] (e.g. servers and twins together).
    margin_m : float
        Added on every side [m], >= 0.
    round_to_m : float, optional
        Snap the lower corner down and the upper corner up to multiples of this [m].

    Returns
    -------
    origin_m, size_m : ndarray, shape (2,)

    Examples
    --------
    >>> o, s = bounding_zone([10.0, 130.0], [-5.0, 40.0], margin_m=10.0, round_to_m=50.0)
    >>> o.tolist(), s.tolist()
    ([0.0, -50.0], [150.0, 100.0])
    """
    x, y = _xy_pair(x_m, y_m)
    if x.size == 0:
        raise ScenarioError("x_m, y_m: got no points; need at least one")
    m = float(margin_m)
    if not (math.isfinite(m) and m >= 0):
        raise ScenarioError(f"margin_m: got {margin_m!r}; must be a finite number >= 0")
    lo = np.array([x.min(), y.min()]) - m
    hi = np.array([x.max(), y.max()]) + m
    if round_to_m is not None:
        r = float(round_to_m)
        if not (math.isfinite(r) and r > 0):
            raise ScenarioError(f"round_to_m: got {round_to_m!r}; must be a finite number > 0")
        lo = np.floor(lo / r) * r
        hi = np.ceil(hi / r) * r
    size = hi - lo
    if (size <= 0).any():
        raise ScenarioError(
            f"bounding_zone: the points span {size.tolist()} m with margin_m={m!r}; the zone needs a size > 0 "
            "along each axis: give margin_m > 0"
        )
    return lo, size
