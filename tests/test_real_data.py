"""Real deployments: scenarios that read site lists, density layers and twin files.

The two examples (``examples/lyon.yaml``, ``examples/melbourne.yaml``) read the real data
sets in ``../shared/data/`` next to the repository; their tests skip when the files are
absent.  The other tests write small files of their own.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.integrate import quad

pytest.importorskip("pyproj")

from edgeverse import ScenarioError, load_scenario  # noqa: E402
from edgeverse.build import build_problem  # noqa: E402
from edgeverse.scenario import Scenario  # noqa: E402
from edgeverse.solution import load_solution, solve  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LYON_FILES = [DATA / "towers" / "lyon_east_villeurbanne_opencellid.csv",
              DATA / "density" / "lyon_east_villeurbanne_insee_filosofi_pop200m.csv"]
MELB_FILES = [DATA / "towers" / "melbourne_cbd_acma_optus_sites.csv"]
EXAMPLES = {"lyon": (REPO / "examples" / "lyon.yaml", LYON_FILES),
            "melbourne": (REPO / "examples" / "melbourne.yaml", MELB_FILES)}
FAST_METHODS = ["snr", "voronoi", "paper", "paper-damped"]

# WGS84
A_M = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)


def meridian_arc_m(lat_deg: float) -> float:
    """Length of the WGS84 meridian from the equator to ``lat_deg``, by quadrature (independent of pyproj)."""
    def rho(phi):
        return A_M * (1 - E2) / (1 - E2 * math.sin(phi) ** 2) ** 1.5
    return quad(rho, 0.0, math.radians(lat_deg), epsabs=0.0, epsrel=1e-12)[0]


def need(name: str) -> Path:
    path, files = EXAMPLES[name]
    missing = [f for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"real data not present: {missing[0]}")
    return path


_PROBLEMS: dict = {}


def problem_of(name: str):
    if name not in _PROBLEMS:
        _PROBLEMS[name] = build_problem(load_scenario(need(name)))
    return _PROBLEMS[name]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def small_scenario(**sections) -> dict:
    """A minimal scenario dict (paper sensing, feasible twins) for the file tests."""
    data = {
        "name": "t",
        "zone": {"auto": {"margin_m": 100.0, "cell_size_m": 50.0}},
        "servers": {"compute_hz": 8e9, "sensor_bandwidth_hz": 1e7},
        "sensing": {"n_sensors": 1000, "slot_s": 1e-3, "volume_unit_m3": 0.01, "tx_power_w": 1e-3,
                    "data_density_bps_per_m3": 50.0, "render_complexity_cycles_per_bit": 5000.0,
                    "density": {"kind": "uniform"}},
        "twins": {"count": 10, "positions": {"kind": "from_density"},
                  "types": [{"name": "a", "intensity_hz": 10.0, "tx_power_w": 0.1, "data_size_bits": 1e4,
                             "bandwidth_hz": 1e6, "complexity_cycles_per_bit": 10.0},
                            {"name": "b", "intensity_hz": 100.0, "tx_power_w": 0.2, "data_size_bits": 1e4,
                             "bandwidth_hz": 1e6, "complexity_cycles_per_bit": 10.0}]},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


LONLAT_SITES = "name,lon,lat,cpu\nA,4.9000,45.7600,4e9\nB,4.9003,45.7601,6e9\nC,4.9200,45.7700,8e9\nD,4.9100,45.7500,8e9\n"


# =========================================================================== the two examples
@pytest.mark.data
@pytest.mark.parametrize("name, n_servers", [("lyon", 140), ("melbourne", 83)])
def test_example_loads_resolved(name, n_servers):
    scn = load_scenario(need(name))
    assert scn.servers.n == n_servers >= 30
    assert scn.servers.sites is None and scn.zone.auto is None  # resolved into concrete values
    assert scn.geo.projection == "local" and len(scn.geo.center_lonlat_deg) == 2
    prov = scn.provenance["servers"]
    assert prov["n_servers"] == n_servers and len(prov["member_rows"]) == n_servers
    assert sorted(r for rows in prov["member_rows"] for r in rows) == list(range(1, prov["cells_kept"] + 1))
    assert prov["max_spread_m"] < 130.0
    lo = np.array(scn.zone.origin_m)
    pos = np.array(scn.servers.positions_m)
    assert np.all(pos >= lo) and np.all(pos <= lo + np.array(scn.zone.size_m))
    # what the scenario writes is a full configuration that reads no file
    d = scn.to_dict()
    assert "sites" not in d["servers"] and d["sensing"]["density"]["kind"] in ("array", "gaussian_mixture")
    assert Scenario.from_dict(json.loads(json.dumps(d))) == scn


@pytest.mark.data
@pytest.mark.parametrize("name", ["lyon", "melbourne"])
@pytest.mark.parametrize("method", FAST_METHODS)
def test_example_solves(name, method):
    p = problem_of(name)
    sol = solve(p, method)
    assert p.n_servers >= 30
    assert sol.cell_server.shape == (p.n_cells,) and sol.cell_server.max() < p.n_servers
    assert math.isfinite(sol.objective_ms) and sol.objective_ms > 0
    assert not sol.evaluation.violations
    assert sol.n_hosted > 0  # the calibrated twin types can be hosted
    assert p.server_lonlat_deg.shape == (p.n_servers, 2)


@pytest.mark.data
@pytest.mark.parametrize("name", ["lyon", "melbourne"])
def test_example_optimal_beats_every_method(name):
    """optimal on the real examples: a single-move local optimum, never behind any other method."""
    p = problem_of(name)
    best = solve(p, "optimal")
    cert = best.extra["certificate"]
    assert cert["max_single_move_decrease_rel"] <= 1e-9 and cert["hosting_gain_available"] == 0
    assert best.status == "converged"
    for method in FAST_METHODS:
        other = solve(p, method, certify=False)
        assert (-best.n_hosted, best.objective_ms) <= (-other.n_hosted, other.objective_ms * (1 + 1e-12)), method


@pytest.mark.data
def test_lyon_density_mass_conserved():
    scn = load_scenario(need("lyon"))
    src = scn.provenance["sensing.density"]
    grid = np.asarray(scn.sensing.density.values)
    assert grid.shape == tuple(scn.zone.cells)
    assert src["total"] == pytest.approx(114597.0)  # ind_2017 over the 518 cells (data README: ~114.6 k)
    assert grid.sum() == pytest.approx(src["total_in_zone"], rel=1e-12)
    assert grid.sum() == pytest.approx(src["total"] * src["fraction_kept"], rel=1e-12)
    assert 0.98 < src["fraction_kept"] < 1.0
    assert (grid == 0).any()  # cells without data count as 0
    # a zone large enough for the whole file keeps all of its mass
    wide = scn.with_overrides({"zone.auto.margin_m": 800.0})
    wgrid = np.asarray(wide.sensing.density.values)
    assert wide.provenance["sensing.density"]["fraction_kept"] == pytest.approx(1.0, abs=1e-12)
    assert wgrid.sum() == pytest.approx(src["total"], rel=1e-12)
    # the problem's cell masses are the normalised grid
    p = problem_of("lyon")
    np.testing.assert_allclose(p.cell_mass, grid.ravel() / grid.sum())
    assert p.density_fraction_kept == src["fraction_kept"]


@pytest.mark.data
def test_overrides_read_the_files_again():
    scn = load_scenario(need("lyon"))
    wider = scn.with_overrides({"servers.sites.merge_radius_m": 150.0, "seed": 3})
    assert (wider.servers.n, wider.seed) == (111, 3)
    assert wider.provenance["servers"]["merge_radius_m"] == 150.0


@pytest.mark.data
def test_cli_and_reload_without_data(tmp_path, monkeypatch):
    from edgeverse import cli, geo, scenario

    out = tmp_path / "out"
    assert cli.main(["solve", str(need("melbourne")), "--method", "snr", "--out", str(out)]) == 0
    header = (out / "servers.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["server", "name", "x_m", "y_m"] and header[-2:] == ["lon_deg", "lat_deg"]
    assert (out / "partition.png").stat().st_size > 10_000
    saved = json.loads((out / "solution.json").read_text())
    moved = tmp_path / "elsewhere" / "sol"
    shutil.copytree(out, moved)

    # the data are gone: any attempt to read a file fails loudly
    def no_data(*args, **kwargs):
        raise AssertionError("load_solution read a data file")

    monkeypatch.setattr(scenario, "data_path", lambda *a, **k: tmp_path / "absent" / "nothing.csv")
    for name in ("read_sites_csv", "read_density_grid_3035_csv", "read_density_points_csv", "read_twins_csv",
                 "read_density_npy", "read_density_geotiff"):
        monkeypatch.setattr(geo, name, no_data)
    back = load_solution(moved)
    assert back.objective_ms == pytest.approx(saved["objective_ms"], rel=1e-12)
    assert back.problem.n_servers == 83 and back.n_hosted == saved["n_hosted"]
    np.testing.assert_allclose(back.problem.server_lonlat_deg[:, 0], [s["lon_deg"] for s in saved["servers"]])
    back.save(tmp_path / "again", figure=False)
    assert (tmp_path / "again" / "servers.csv").read_text() == (out / "servers.csv").read_text()


@pytest.mark.data
def test_real_site_position_round_trip():
    """A single-cell server of the Lyon file sits at that cell's lon/lat (projection and inverse, < 1 mm)."""
    p = problem_of("lyon")
    prov = p.scenario.provenance["servers"]
    k = next(i for i, rows in enumerate(prov["member_rows"]) if len(rows) == 1)
    row = prov["member_rows"][k][0]
    line = LYON_FILES[0].read_text().splitlines()[row]  # row 1 is the line after the header
    lon, lat = (float(v) for v in line.split(",")[6:8])
    d_lon = (p.server_lonlat_deg[k, 0] - lon) * 111_320 * math.cos(math.radians(lat))
    d_lat = (p.server_lonlat_deg[k, 1] - lat) * 110_574
    assert math.hypot(d_lon, d_lat) < 1e-3


# =========================================================================== projection: known points
def test_local_projection_known_point_within_1m():
    """Due north of the centre, the azimuthal equidistant y is the meridian arc (computed independently)."""
    scn = Scenario.from_dict(small_scenario(
        geo={"projection": "local", "center_lonlat_deg": [4.925, 45.7675]},
        zone={"origin_m": [-3000.0, -3000.0], "size_m": [6000.0, 6000.0], "cells": [10, 10], "auto": None},
        servers={"positions_m": [[0.0, 0.0], [1000.0, 0.0]]}))
    proj = scn.projection()
    x, y = proj.to_xy_m([4.925, 4.925], [45.7675, 45.7875])
    assert abs(float(x[0])) < 1e-6 and abs(float(y[0])) < 1e-6
    expected = meridian_arc_m(45.7875) - meridian_arc_m(45.7675)  # ~2223.8 m
    assert abs(float(x[1])) < 1e-6
    assert abs(float(y[1]) - expected) < 1.0
    assert abs(float(y[1]) - expected) < 1e-3  # in fact to the millimetre


def test_utm_projection_known_point_within_1m():
    """On UTM zone 31's central meridian (3 deg E): easting 500 000 m, northing 0.9996 x meridian arc."""
    scn = Scenario.from_dict(small_scenario(
        geo={"projection": "utm", "center_lonlat_deg": [3.0, 45.0]},
        zone={"origin_m": [490000.0, 4970000.0], "size_m": [20000.0, 20000.0], "cells": [10, 10], "auto": None},
        servers={"positions_m": [[500000.0, 4982950.0], [501000.0, 4982950.0]]}))
    proj = scn.projection()
    assert proj.crs == "EPSG:32631"
    x, y = proj.to_xy_m(3.0, 45.0)
    assert abs(float(x) - 500000.0) < 1.0
    assert abs(float(y) - 0.9996 * meridian_arc_m(45.0)) < 1.0  # 4 982 950.4 m
    assert abs(meridian_arc_m(45.0) - 4984944.378) < 0.01  # the textbook value for WGS84


# =========================================================================== sites through a scenario file
def test_lonlat_sites_merge_compute_col_and_names(tmp_path):
    (tmp_path / "sites.csv").write_text(LONLAT_SITES)
    f = write_yaml(tmp_path / "s.yaml", small_scenario(servers={
        "sites": {"file": "sites.csv", "format": "lonlat", "merge_radius_m": 60.0, "name_col": "name",
                  "compute_col": "cpu"}, "compute_hz": None}))
    scn = load_scenario(f)
    assert scn.servers.n == 3 and scn.servers.names == ["A", "C", "D"]
    assert scn.servers.compute_hz == [1e10, 8e9, 8e9]  # A and B (about 25 m apart) are one site: summed
    assert scn.servers.sensor_bandwidth_hz == 1e7  # a scalar for every server
    assert scn.geo.center_lonlat_deg == pytest.approx([4.91, 45.76])
    p = build_problem(scn)
    np.testing.assert_allclose(p.compute_hz, [1e10, 8e9, 8e9])
    np.testing.assert_allclose(p.sensor_bandwidth_hz, [1e7] * 3)
    np.testing.assert_allclose(p.server_lonlat_deg[1], [4.92, 45.77], atol=1e-9)
    assert scn.zone.cells[0] * 50.0 == pytest.approx(scn.zone.size_m[0])


def test_opencellid_filters_and_bbox(tmp_path):
    rows = ["radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal",
            "LTE,208,1,1,1,0,4.90,45.76,500,3,1,0,0,0", "GSM,208,1,1,2,0,4.91,45.76,500,3,1,0,0,0",
            "LTE,208,10,1,3,0,4.92,45.76,500,3,1,0,0,0", "LTE,208,1,1,4,0,4.93,45.77,500,3,1,0,0,0",
            "LTE,208,01,1,5,0,5.50,45.77,500,3,1,0,0,0"]
    (tmp_path / "cells.csv").write_text("\n".join(rows) + "\n")
    base = small_scenario(servers={"sites": {"file": "cells.csv", "radio": ["lte"], "operators": [1]}})
    scn = load_scenario(write_yaml(tmp_path / "a.yaml", base))
    assert scn.servers.n == 3 and scn.provenance["servers"]["member_rows"] == [[1], [4], [5]]
    base["servers"]["sites"]["bbox_lonlat_deg"] = [4.8, 45.7, 5.0, 45.8]
    scn = load_scenario(write_yaml(tmp_path / "b.yaml", base))
    assert scn.servers.n == 2 and scn.provenance["servers"]["member_names"] == ["LTE:208-1-1-1", "LTE:208-1-1-4"]
    base["servers"]["sites"]["operators"] = [99]
    with pytest.raises(ScenarioError, match=r"servers\.sites: .*cells\.csv: no row left after the operators filter"):
        load_scenario(write_yaml(tmp_path / "c.yaml", base))


def test_bad_csv_names_file_row_and_column(tmp_path):
    text = LONLAT_SITES.replace("C,4.9200,45.7700", "C,4.9200,95.7700")
    (tmp_path / "bad.csv").write_text(text)
    f = write_yaml(tmp_path / "s.yaml", small_scenario(servers={"sites": {"file": "bad.csv", "format": "lonlat"}}))
    with pytest.raises(ScenarioError, match=r"servers\.sites: .*bad\.csv: row 3 \(line 4\), column 'lat': got "
                                            r"'95\.7700'; latitudes must be in \[-90, 90\] degrees"):
        load_scenario(f)
    (tmp_path / "bad.csv").write_text(LONLAT_SITES.replace("D,4.9100,45.7500", "D,4.9100,abc"))
    with pytest.raises(ScenarioError, match=r"bad\.csv: row 4 \(line 5\), column 'lat': got 'abc'"):
        load_scenario(f)
    (tmp_path / "bad.csv").write_text(LONLAT_SITES.replace("A,4.9000,45.7600", "A,190.0,45.7600"))
    with pytest.raises(ScenarioError, match=r"bad\.csv: row 1 \(line 2\), column 'lon': got '190\.0'; "
                                            r"longitudes must be in \[-180, 180\]"):
        load_scenario(f)


def test_swapped_columns_through_a_scenario_file(tmp_path):
    # Melbourne-like sites written lat first under a lon, lat header
    text = "lon,lat\n-37.815,144.960\n-37.812,144.971\n-37.820,144.955\n"
    (tmp_path / "swapped.csv").write_text(text)
    f = write_yaml(tmp_path / "s.yaml", small_scenario(servers={"sites": {"file": "swapped.csv", "format": "lonlat"}}))
    with pytest.raises(ScenarioError, match=r"swapped\.csv: columns 'lon' and 'lat' look swapped: column 'lat' has "
                                            r"values outside \[-90, 90\] \(first at row 1 \(line 2\)"):
        load_scenario(f)


def test_missing_file_and_column(tmp_path):
    f = write_yaml(tmp_path / "s.yaml", small_scenario(servers={"sites": {"file": "nope.csv", "format": "lonlat"}}))
    with pytest.raises(ScenarioError, match=r"servers\.sites\.file: 'nope\.csv' does not exist \(looked at .*nope\.csv\)"):
        load_scenario(f)
    (tmp_path / "s.csv").write_text(LONLAT_SITES)
    f = write_yaml(tmp_path / "s.yaml", small_scenario(servers={"sites": {"file": "s.csv", "format": "lonlat",
                                                                         "lat_col": "latitude"}}))
    with pytest.raises(ScenarioError, match=r"s\.csv: missing column 'latitude' \(latitude \[deg\]\); the file has "
                                            r"columns: name, lon, lat, cpu"):
        load_scenario(f)


@pytest.mark.parametrize("servers, zone, message", [
    ({"positions_m": [[0, 0]]}, None, r"servers\.positions_m: give either servers\.positions_m or servers\.sites"),
    ({"compute_hz": [1e9, 2e9]}, None, r"servers\.compute_hz: got 2 entries; must be one value for every server or "
                                       r"one per server \(4 after merging"),
    ({"compute_hz": 8e9, "sites": {"compute_col": "cpu"}}, None, r"servers\.compute_hz: got 8000000000\.0 and "
                                                                 r"servers\.sites\.compute_col='cpu'; give one of them"),
    ({}, {"size_m": [100.0, 100.0]}, r"zone\.size_m: give either zone\.auto or zone\.origin_m / size_m / cells"),
    ({}, {"auto": {"cell_size_m": 0.01}}, r"zone\.auto\.cell_size_m: got 0\.01 m: .* more than 16,000,000 \(about 10 GB"),
    ({"sites": {"merge_radius_m": -1}}, None, r"servers\.sites\.merge_radius_m: got -1; input should be greater than "
                                              r"or equal to 0"),
    ({"sites": {"format": "kml"}}, None, r"servers\.sites\.format: got 'kml'; input should be 'opencellid', 'lonlat'"),
])
def test_site_scenario_errors(tmp_path, servers, zone, message):
    (tmp_path / "s.csv").write_text(LONLAT_SITES)
    data = small_scenario(servers={"sites": {"file": "s.csv", "format": "lonlat"}})
    sites = {**data["servers"]["sites"], **servers.pop("sites", {})}
    data["servers"].update(servers)
    data["servers"]["sites"] = sites
    if zone:
        data["zone"].update(zone)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))


def test_xy_sites_without_geo_stay_in_metres(tmp_path):
    (tmp_path / "xy.csv").write_text("x,y\n0,0\n500,0\n0,500\n510,505\n")
    scn = load_scenario(write_yaml(tmp_path / "s.yaml", small_scenario(servers={
        "sites": {"file": "xy.csv", "format": "xy", "merge_radius_m": 20.0}})))
    assert scn.geo is None and scn.projection() is None and scn.servers.n == 4
    assert scn.zone.origin_m == [-100.0, -100.0] and scn.zone.size_m == [750.0, 750.0]
    sol = solve(scn, "snr")
    assert sol.problem.server_lonlat_deg is None
    assert "lon_deg" not in sol.server_rows()[0]


def test_base_preset_with_sites_replaces_the_servers(tmp_path):
    (tmp_path / "s.csv").write_text(LONLAT_SITES)
    f = tmp_path / "s.yaml"
    f.write_text("base: paper\nservers:\n  sites: {file: s.csv, format: lonlat}\n  compute_hz: 8.0e+9\n"
                 "  sensor_bandwidth_hz: 1.0e+7\nzone:\n  auto: {margin_m: 300, cell_size_m: 100}\n")
    scn = load_scenario(f)
    assert scn.servers.n == 4 and scn.zone.auto is None and scn.twins.count == 60


# =========================================================================== density through a scenario file
def test_density_npy_points_and_zero_outside(tmp_path):
    (tmp_path / "xy.csv").write_text("x,y\n0,0\n1000,1000\n")
    arr = np.zeros((4, 2))
    arr[0, 0] = 3.0  # covers x in [-200, 100), y in [-200, 300)
    arr[3, 1] = 1.0  # x in [700, 1000), y in [300, 800)
    np.save(tmp_path / "d.npy", arr)
    data = small_scenario(servers={"sites": {"file": "xy.csv", "format": "xy"}},
                          zone={"auto": {"margin_m": 100.0, "cell_size_m": 100.0}})
    data["sensing"]["density"] = {"kind": "npy", "file": "d.npy", "bounds_m": [-200.0, -200.0, 1000.0, 800.0]}
    scn = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    grid = np.asarray(scn.sensing.density.values)
    # 3 x (200/300) x (400/500) of the first cell is inside the zone (x, y >= -100 m), all of the second
    assert grid.shape == (12, 12) and grid.sum() == pytest.approx(3.0 * (2 / 3) * (4 / 5) + 1.0)
    src = scn.provenance["sensing.density"]
    assert src["fraction_kept"] == pytest.approx(grid.sum() / 4.0)
    # points in lon/lat need a projection centre: the xy sites give none
    (tmp_path / "pts.csv").write_text("lon,lat,people\n4.9,45.76,10\n")
    data["sensing"]["density"] = {"kind": "points_csv", "file": "pts.csv", "value_col": "people"}
    with pytest.raises(ScenarioError, match=r"geo\.center_lonlat_deg: required for sensing\.density \(points_csv"):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))
    data["geo"] = {"center_lonlat_deg": [4.9, 45.76]}
    scn = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    grid = np.asarray(scn.sensing.density.values)
    assert grid.sum() == 10.0 and grid[1, 1] == 10.0  # the centre (0, 0) is in cell (1, 1) of the zone at -100 m
    data["geo"] = {"center_lonlat_deg": [5.9, 45.76]}
    with pytest.raises(ScenarioError, match=r"sensing\.density: .*pts\.csv: none of its mass \(10\) falls inside"):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))


def test_density_bad_value_names_row_and_column(tmp_path):
    (tmp_path / "s.csv").write_text(LONLAT_SITES)
    (tmp_path / "pop.csv").write_text("x_ll_3035,y_ll_3035,pop\n3923200,2528200,10\n3923400,2528200,-4\n")
    data = small_scenario(servers={"sites": {"file": "s.csv", "format": "lonlat"}})
    data["sensing"]["density"] = {"kind": "grid_csv", "file": "pop.csv", "value_col": "pop"}
    with pytest.raises(ScenarioError, match=r"sensing\.density: .*pop\.csv: row 2 \(line 3\), column 'pop': got '-4'; "
                                            r"must be a finite number >= 0"):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))


def test_density_geotiff(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    (tmp_path / "xy.csv").write_text("x,y\n0,0\n400,400\n")
    img = np.array([[0.0, 2.0], [1.0, 0.0]])  # north-up: row 0 is the north
    with rasterio.open(tmp_path / "d.tif", "w", driver="GTiff", height=2, width=2, count=1, dtype="float64",
                       transform=Affine(200.0, 0.0, 0.0, 0.0, -200.0, 400.0)) as dst:
        dst.write(img, 1)
    data = small_scenario(servers={"sites": {"file": "xy.csv", "format": "xy"}},
                          zone={"auto": {"margin_m": 0.0, "cell_size_m": 200.0}})
    data["sensing"]["density"] = {"kind": "geotiff", "file": "d.tif", "crs": None}
    grid = np.asarray(load_scenario(write_yaml(tmp_path / "s.yaml", data)).sensing.density.values)
    np.testing.assert_allclose(grid, [[1.0, 0.0], [0.0, 2.0]])  # [x, y]: south-west 1, north-east 2


def test_density_from_sites(tmp_path):
    (tmp_path / "s.csv").write_text(LONLAT_SITES)
    data = small_scenario(servers={"sites": {"file": "s.csv", "format": "lonlat", "merge_radius_m": 60.0}})
    data["sensing"]["density"] = {"kind": "from_sites", "std_m": 100.0}
    scn = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    assert scn.servers.n == 3 and len(scn.sensing.density.components) == 4  # one kernel per row, before merging
    assert scn.provenance["sensing.density"]["kernels"] == 4


# =========================================================================== twins through a scenario file
def test_twins_from_csv_with_types(tmp_path):
    (tmp_path / "s.csv").write_text(LONLAT_SITES)
    (tmp_path / "pts.csv").write_text("lon,lat,kind\n4.905,45.758,a\n4.915,45.765,b\n4.918,45.768,b\n")
    data = small_scenario(servers={"sites": {"file": "s.csv", "format": "lonlat"}})
    data["twins"] = {**data["twins"], "positions": {"kind": "csv", "file": "pts.csv", "lon_col": "lon",
                                                    "lat_col": "lat", "type_col": "kind"}}
    data["twins"].pop("count")
    scn = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    assert scn.twins.count == 3 and scn.twins.positions.types == [0, 1, 1]
    p = build_problem(scn)
    assert p.twins.type_index.tolist() == [0, 1, 1]
    lon, lat = p.projection.to_lonlat(p.twins.positions_m[:, 0], p.twins.positions_m[:, 1])
    np.testing.assert_allclose(lon, [4.905, 4.915, 4.918], atol=1e-9)
    data["twins"]["count"] = 5
    with pytest.raises(ScenarioError, match=r"twins\.count: got 5; the twin file .*pts\.csv has 3 rows"):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))
    data["twins"].pop("count")
    (tmp_path / "pts.csv").write_text("lon,lat,kind\n4.905,45.758,a\n4.915,45.765,zzz\n")
    with pytest.raises(ScenarioError, match=r"twins\.positions: .*pts\.csv: row 2, column 'kind': got 'zzz'; must be "
                                            r"one of the twins\.types names: a, b"):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))


def test_twins_outside_an_explicit_zone(tmp_path):
    (tmp_path / "pts.csv").write_text("x,y\n10,10\n5000,10\n")
    data = small_scenario(zone={"auto": None, "size_m": [1000.0, 1000.0], "cells": [10, 10]},
                          servers={"positions_m": [[500.0, 500.0]]})
    data["twins"] = {**data["twins"], "positions": {"kind": "csv", "file": "pts.csv"}}
    data["twins"].pop("count")
    with pytest.raises(ScenarioError, match=r"twins\.positions: .*pts\.csv: row 2: the twin at \(5000\.0, 10\.0\) m is "
                                            r"outside the zone"):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))


def test_twins_from_density_follow_it():
    data = small_scenario(zone={"auto": None, "size_m": [1000.0, 1000.0], "cells": [2, 2]},
                          servers={"positions_m": [[250.0, 250.0], [750.0, 750.0]]})
    data["sensing"]["density"] = {"kind": "array", "values": [[0.0, 0.0], [0.0, 1.0]]}
    data["twins"]["count"] = 50
    p = build_problem(Scenario.from_dict(data))
    assert np.all(p.twins.positions_m >= 500.0)  # all in the one populated cell


def test_stray_row_and_far_projection_centre_are_clear_errors(tmp_path):
    """A row far from the others (here lon and lat swapped in one row: both still valid coordinates) and a
    projection centre far from the rows are errors naming the file and row, or the field."""
    stray = LONLAT_SITES.replace("D,4.9100,45.7500", "D,45.7500,4.9100")
    (tmp_path / "sites.csv").write_text(stray)
    f = write_yaml(tmp_path / "s.yaml", small_scenario(servers={
        "sites": {"file": "sites.csv", "format": "lonlat", "name_col": "name"}}))
    with pytest.raises(ScenarioError, match=r"invalid scenario:\n  servers\.sites\.file: .*"
                                            r"sites\.csv: row 4 \(lon 45\.75, lat 4\.91\) is [0-9,]+ km from the "
                                            r"median.*lon and lat swapped"):
        load_scenario(f)
    (tmp_path / "sites.csv").write_text(LONLAT_SITES)
    g = write_yaml(tmp_path / "g.yaml", small_scenario(
        geo={"center_lonlat_deg": [144.96, -37.81]},
        servers={"sites": {"file": "sites.csv", "format": "lonlat", "name_col": "name"}}))
    with pytest.raises(ScenarioError, match=r"geo\.center_lonlat_deg: got \[144\.96, -37\.81\]; the rows of .*sites\.csv "
                                            r"lie up to [0-9,]+ km from it"):
        load_scenario(g)
    near = write_yaml(tmp_path / "n.yaml", small_scenario(
        geo={"center_lonlat_deg": [4.95, 45.8]},
        servers={"sites": {"file": "sites.csv", "format": "lonlat", "name_col": "name"}}))
    assert load_scenario(near).servers.n == 4  # a centre a few km off is fine


def test_unit_slips_give_plausibility_warnings(tmp_path):
    """Valid but implausible inputs warn (the run goes on): GHz written as Hz, degrees in metre columns,
    every site merged into one server."""
    from edgeverse import get_preset
    from edgeverse.errors import PlausibilityWarning

    with pytest.warns(PlausibilityWarning, match=r"servers\.compute_hz: got 8 Hz, implausibly low"):
        get_preset("paper").with_overrides({"servers.compute_hz": 8})
    (tmp_path / "s.csv").write_text(LONLAT_SITES)
    (tmp_path / "deg.csv").write_text("lon,lat\n4.905,45.758\n4.915,45.765\n4.918,45.768\n")
    data = small_scenario(servers={"sites": {"file": "s.csv", "format": "lonlat"}})
    data["twins"] = {**data["twins"], "positions": {"kind": "csv", "file": "deg.csv", "x_col": "lon", "y_col": "lat"}}
    data["twins"].pop("count")
    data["zone"] = {"origin_m": [-3000.0, -3000.0], "size_m": [6000.0, 6000.0], "cells": [20, 20]}
    data["geo"] = {"center_lonlat_deg": [4.91, 45.76]}
    with pytest.warns(PlausibilityWarning, match=r"twins\.positions: all 3 PTs of .*deg\.csv lie within 1 m"):
        load_scenario(write_yaml(tmp_path / "t.yaml", data))
    tight = "name,lon,lat\nA,0.08552,0.79756\nB,0.08553,0.79757\nC,0.08554,0.79756\n"  # radians
    (tmp_path / "rad.csv").write_text(tight)
    data = small_scenario(servers={"sites": {"file": "rad.csv", "format": "lonlat", "merge_radius_m": 100.0}})
    with pytest.warns(PlausibilityWarning, match=r"servers\.sites: all 3 rows of rad\.csv merge into one server"):
        load_scenario(write_yaml(tmp_path / "r.yaml", data))
