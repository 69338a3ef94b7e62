"""Tests of edgeverse.geo: projections, site/density/twin readers, merging, resampling."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pyproj = pytest.importorskip("pyproj")

from edgeverse import geo  # noqa: E402
from edgeverse.errors import ScenarioError  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
LYON_TOWERS = DATA / "towers" / "lyon_east_villeurbanne_opencellid.csv"
MELB_SITES = DATA / "towers" / "melbourne_cbd_acma_optus_sites.csv"
INSEE = DATA / "density" / "lyon_east_villeurbanne_insee_filosofi_pop200m.csv"

OCID_HEADER = ",".join(geo.OPENCELLID_COLUMNS)


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real data not present: {path}")
    return path


def write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def ocid_row(radio="GSM", net=1, cell=1, lon=4.9, lat=45.76) -> str:
    return f"{radio},208,{net},601,{cell},0,{lon},{lat},500,3,1,0,0,0"


# =========================================================================== projections
class TestProjection:
    def test_local_is_aeqd_centred(self):
        p = geo.LocalProjection(4.925, 45.7675)
        assert "+proj=aeqd" in p.crs
        x, y = p.to_xy_m(4.925, 45.7675)
        assert abs(float(x)) < 1e-9 and abs(float(y)) < 1e-9
        # north is +y, east is +x
        x, y = p.to_xy_m([4.935, 4.925], [45.7675, 45.7775])
        assert x[0] > 700 and abs(y[0]) < 1.0 and y[1] > 1000 and abs(x[1]) < 1e-6

    def test_round_trip(self):
        p = geo.LocalProjection(144.96, -37.815)
        lon = np.array([144.95, 144.97, 144.96])
        lat = np.array([-37.82, -37.81, -37.80])
        back = p.to_lonlat(*p.to_xy_m(lon, lat))
        np.testing.assert_allclose(back[0], lon, atol=1e-10)
        np.testing.assert_allclose(back[1], lat, atol=1e-10)

    def test_projected_distance_matches_geodesic(self):
        geod = pyproj.Geod(ellps="WGS84")
        p = geo.LocalProjection(4.925, 45.7675)
        # two points 5 km apart, neither at the centre
        lon1, lat1 = 4.905, 45.752
        lon2, lat2, _ = geod.fwd(lon1, lat1, 57.0, 5000.0)
        _, _, d_geod = geod.inv(lon1, lat1, lon2, lat2)
        x, y = p.to_xy_m([lon1, lon2], [lat1, lat2])
        d_proj = float(np.hypot(x[1] - x[0], y[1] - y[0]))
        assert abs(d_geod - 5000.0) < 1e-6
        assert abs(d_proj - d_geod) < 1.0
        assert abs(d_proj - d_geod) < 0.01  # aeqd: in fact millimetres

    def test_epsg3035_cell_centres_match_lonlat_columns(self):
        """INSEE cells: lower-left corner + 100 m in EPSG:3035 is the lon/lat of the row, within 1 m."""
        d = geo.read_density_grid_3035_csv(need(INSEE), value_col="ind_2017")
        pts = geo.read_density_points_csv(INSEE, value_col="ind_2017")
        p = geo.projection_for_points(pts.x, pts.y)
        xa, ya = p.from_crs(d.x_ll + 100.0, d.y_ll + 100.0, "EPSG:3035")
        xb, yb = p.to_xy_m(pts.x, pts.y)
        err = np.hypot(xa - xb, ya - yb)
        assert err.max() < 1.0
        # known first row: corner (3923200, 2528200) -> centre (4.891857, 45.744569)
        lon, lat = p.to_lonlat(xa[:1], ya[:1])
        assert abs(lon[0] - 4.891857) < 1e-5 and abs(lat[0] - 45.744569) < 1e-5

    def test_utm_zones(self):
        assert geo.utm_projection_for(4.925, 45.7675).crs == "EPSG:32631"
        assert geo.utm_projection_for(144.96, -37.815).crs == "EPSG:32755"
        assert geo.utm_projection_for(5.3, 60.4).zone == 32  # Bergen: Norway exception
        assert geo.utm_projection_for(15.6, 78.2).zone == 33  # Svalbard
        assert geo.utm_projection_for(180.0, 0.0).zone == 60
        with pytest.raises(ScenarioError, match="outside UTM"):
            geo.utm_projection_for(0.0, 85.0)

    def test_utm_distance_scale(self):
        p = geo.utm_projection_for(4.925, 45.7675)
        x, y = p.to_xy_m([4.90, 4.95], [45.76, 45.76])
        _, _, d = pyproj.Geod(ellps="WGS84").inv(4.90, 45.76, 4.95, 45.76)
        assert abs(np.hypot(x[1] - x[0], y[1] - y[0]) / d - 1.0) < 1e-3  # UTM scale k0 = 0.9996

    def test_projection_for_points(self):
        p = geo.projection_for_points([4.9, 4.95], [45.75, 45.79])
        assert isinstance(p, geo.LocalProjection)
        assert p.lon0_deg == pytest.approx(4.925) and p.lat0_deg == pytest.approx(45.77)
        assert isinstance(geo.projection_for_points([4.9], [45.7], kind="utm"), geo.UtmProjection)
        assert geo.projection_for_points([179.0, -179.0], [0.0, 0.0]).lon0_deg in (180.0, -180.0)
        with pytest.raises(ScenarioError, match="kind"):
            geo.projection_for_points([4.9], [45.7], kind="mercator")

    def test_bad_inputs(self):
        with pytest.raises(ScenarioError, match="lat0_deg"):
            geo.LocalProjection(4.9, 95.0)
        p = geo.LocalProjection(4.9, 45.7)
        with pytest.raises(ScenarioError, match=r"lat_deg\[1\].*\[-90, 90\]"):
            p.to_xy_m([4.9, 4.9], [45.0, 91.0])
        with pytest.raises(ScenarioError, match="finite"):
            p.to_xy_m([np.nan], [45.0])

    def test_projection_hashable_and_equal(self):
        assert geo.LocalProjection(4.9, 45.7) == geo.LocalProjection(4.9, 45.7)
        assert len({geo.LocalProjection(4.9, 45.7), geo.LocalProjection(4.9, 45.7)}) == 1


# =========================================================================== sites
class TestReadSites:
    def test_lyon_opencellid(self):
        s = geo.read_sites_csv(need(LYON_TOWERS))
        assert s.n == 181 and s.format == "opencellid"
        assert set(s.radio) == {"GSM"}
        ops, counts = np.unique(s.operator.astype(str), return_counts=True)
        assert dict(zip(ops, counts)) == {"1": 72, "10": 62, "20": 47}
        assert s.source_rows.tolist() == list(range(1, 182))
        assert s.names[0] == "GSM:208-10-601-56998"
        assert 4.893 <= s.lon_deg.min() and s.lon_deg.max() <= 4.957
        assert 45.745 <= s.lat_deg.min() and s.lat_deg.max() <= 45.790
        assert s.compute_hz is None and s.bandwidth_hz is None and s.x_m is None
        with pytest.raises(ValueError):
            s.lon_deg[0] = 0.0  # read-only arrays

    def test_lyon_operator_filter(self):
        s = geo.read_sites_csv(need(LYON_TOWERS), operators=["01", 20])
        assert s.n == 72 + 47
        assert set(s.operator) == {"1", "20"}
        with open(LYON_TOWERS) as fh:
            nets = [line.split(",")[2] for line in fh.read().splitlines()[1:]]
        assert s.source_rows.tolist() == [k + 1 for k, n in enumerate(nets) if n in ("1", "20")]

    def test_melbourne_lonlat(self):
        s = geo.read_sites_csv(need(MELB_SITES), format="lonlat", name_col="SITE_ID")
        assert s.n == 125 and s.radio is None and s.operator is None
        assert s.names[0] == "10003026"
        assert s.lat_deg.max() < -37.8 and s.lon_deg.min() > 144.95

    def test_headerless_opencellid_export(self, tmp_path):
        f = write(tmp_path, ocid_row("LTE", cell=7) + "\n" + ocid_row("UMTS", cell=8) + "\n")
        s = geo.read_sites_csv(f)
        assert s.n == 2 and s.radio.tolist() == ["LTE", "UMTS"]
        assert s.names.tolist() == ["LTE:208-1-601-7", "UMTS:208-1-601-8"]

    def test_radio_filter_case_insensitive(self, tmp_path):
        f = write(tmp_path, "\n".join([OCID_HEADER, ocid_row("LTE"), ocid_row("GSM"), ocid_row("NR")]) + "\n")
        s = geo.read_sites_csv(f, radio=["lte", "nr"])
        assert s.radio.tolist() == ["LTE", "NR"] and s.source_rows.tolist() == [1, 3]
        assert geo.read_sites_csv(f, radio="GSM").n == 1

    def test_missing_column_lists_present(self, tmp_path):
        f = write(tmp_path, "lon,latitude\n4.9,45.7\n")
        with pytest.raises(ScenarioError) as e:
            geo.read_sites_csv(f, format="lonlat")
        msg = str(e.value)
        assert "f.csv" in msg and "missing column 'lat'" in msg and "lon, latitude" in msg

    def test_missing_opencellid_column(self, tmp_path):
        f = write(tmp_path, "radio,mcc,area,cell,lon,lat\nGSM,208,1,2,4.9,45.7\n")
        with pytest.raises(ScenarioError, match="missing column 'net'.*OpenCelliD"):
            geo.read_sites_csv(f)

    def test_non_numeric_names_row_and_column(self, tmp_path):
        f = write(tmp_path, "lon,lat\n4.9,45.7\n4.91,abc\n")
        with pytest.raises(ScenarioError) as e:
            geo.read_sites_csv(f, format="lonlat")
        msg = str(e.value)
        assert "f.csv: row 2 (line 3), column 'lat': got 'abc'" in msg and "finite number" in msg

    def test_empty_and_nonfinite_values(self, tmp_path):
        f = write(tmp_path, "lon,lat\n4.9,\n")
        with pytest.raises(ScenarioError, match="row 1 \\(line 2\\), column 'lat': got an empty value"):
            geo.read_sites_csv(f, format="lonlat")
        f = write(tmp_path, "lon,lat\ninf,45\n")
        with pytest.raises(ScenarioError, match="column 'lon': got 'inf'"):
            geo.read_sites_csv(f, format="lonlat")

    def test_blank_lines_keep_user_row_and_line(self, tmp_path):
        f = write(tmp_path, "lon,lat\n4.9,45.7\n\n4.9,95.5\n")
        with pytest.raises(ScenarioError) as e:
            geo.read_sites_csv(f, format="lonlat")
        msg = str(e.value)
        assert "row 2 (line 4), column 'lat': got '95.5'" in msg and "[-90, 90]" in msg

    def test_one_bad_latitude_is_not_a_swap(self, tmp_path):
        f = write(tmp_path, "lon,lat\n4.9,45.7\n4.9,45.8\n4.9,457.0\n")
        with pytest.raises(ScenarioError, match=r"row 3 \(line 4\), column 'lat': got '457.0'; latitudes"):
            geo.read_sites_csv(f, format="lonlat")

    def test_longitude_out_of_range(self, tmp_path):
        f = write(tmp_path, "lon,lat\n4.9,45.7\n190.0,45.7\n")
        with pytest.raises(ScenarioError, match=r"row 2 \(line 3\), column 'lon': got '190.0'; longitudes must be in \[-180, 180\]"):
            geo.read_sites_csv(f, format="lonlat")

    def test_swapped_columns(self, tmp_path):
        f = write(tmp_path, "lat,lon\n144.97,-37.81\n144.95,-37.82\n")
        with pytest.raises(ScenarioError) as e:
            geo.read_sites_csv(f, format="lonlat")
        msg = str(e.value)
        assert "look swapped" in msg and "lon_col='lat', lat_col='lon'" in msg
        s = geo.read_sites_csv(f, format="lonlat", lon_col="lat", lat_col="lon")
        assert s.lon_deg.tolist() == [144.97, 144.95]

    def test_projected_values_hint(self, tmp_path):
        f = write(tmp_path, "lon,lat\n3923200,2528200\n")
        with pytest.raises(ScenarioError, match="format='xy'"):
            geo.read_sites_csv(f, format="lonlat")

    def test_ragged_row(self, tmp_path):
        f = write(tmp_path, "lon,lat\n4.9,45.7,3\n")
        with pytest.raises(ScenarioError, match="row 1 \\(line 2\\): has 3 fields; the header has 2"):
            geo.read_sites_csv(f, format="lonlat")

    def test_missing_and_empty_files(self, tmp_path):
        with pytest.raises(ScenarioError, match="does not exist"):
            geo.read_sites_csv(tmp_path / "nope.csv")
        with pytest.raises(ScenarioError, match="no data rows"):
            geo.read_sites_csv(write(tmp_path, "lon,lat\n"), format="lonlat")
        with pytest.raises(ScenarioError, match="format"):
            geo.read_sites_csv(write(tmp_path, "lon,lat\n1,2\n"), format="kml")

    def test_filters_that_remove_everything(self, tmp_path):
        f = write(tmp_path, "\n".join([OCID_HEADER, ocid_row("GSM", net=1), ocid_row("LTE", net=10)]) + "\n")
        with pytest.raises(ScenarioError) as e:
            geo.read_sites_csv(f, radio=["NR"])
        assert "radio filter ['NR']" in str(e.value) and "GSM (1), LTE (1)" in str(e.value)
        with pytest.raises(ScenarioError) as e:
            geo.read_sites_csv(f, radio=["LTE"], operators=[1])
        msg = str(e.value)
        assert "operators filter [1]" in msg and "radio filter ['LTE']" in msg and "10 (1)" in msg
        with pytest.raises(ScenarioError, match="empty list"):
            geo.read_sites_csv(f, operators=[])

    def test_filter_needs_its_column(self, tmp_path):
        f = write(tmp_path, "lon,lat\n4.9,45.7\n")
        with pytest.raises(ScenarioError, match="missing column 'radio'"):
            geo.read_sites_csv(f, format="lonlat", radio=["LTE"])

    def test_xy_with_compute_and_bandwidth(self, tmp_path):
        f = write(tmp_path, "x,y,cpu,bw\n0,0,8e9,1e7\n30,0,4e9,2e7\n500,0,8e9,1e7\n")
        s = geo.read_sites_csv(f, format="xy", compute_col="cpu", bandwidth_col="bw")
        assert s.lon_deg is None and s.x_m.tolist() == [0, 30, 500]
        m = geo.merge_site_table(s, radius_m=50.0)
        assert m.n == 2 and m.projection is None and m.lon_deg is None
        assert m.positions_m.tolist() == [[15.0, 0.0], [500.0, 0.0]]
        assert m.compute_hz.tolist() == [12e9, 8e9] and m.bandwidth_hz.tolist() == [3e7, 1e7]
        assert m.member_counts.tolist() == [2, 1] and m.spread_m.tolist() == [15.0, 0.0]
        assert m.members(0).tolist() == [0, 1] and m.names.tolist() == ["row1", "row3"]

    def test_nonpositive_compute(self, tmp_path):
        f = write(tmp_path, "x,y,cpu\n0,0,8e9\n1,1,0\n")
        with pytest.raises(ScenarioError, match="row 2 \\(line 3\\), column 'cpu': got '0'; must be a finite number > 0"):
            geo.read_sites_csv(f, format="xy", compute_col="cpu")


# =========================================================================== merging
class TestMerge:
    def test_labels_by_first_appearance(self):
        x = [1000.0, 0.0, 1005.0, 2.0, 5000.0]
        y = [0.0, 0.0, 0.0, 0.0, 0.0]
        labels, c = geo.merge_sites(x, y, radius_m=10.0)
        assert labels.tolist() == [0, 1, 0, 1, 2]
        np.testing.assert_allclose(c, [[1002.5, 0.0], [1.0, 0.0], [5000.0, 0.0]])

    def test_single_linkage_chains(self):
        x = np.arange(5) * 90.0
        labels, c = geo.merge_sites(x, np.zeros(5), radius_m=100.0)
        assert labels.tolist() == [0] * 5 and c.tolist() == [[180.0, 0.0]]

    def test_radius_inclusive_and_zero(self):
        assert geo.merge_sites([0.0, 100.0], [0.0, 0.0], radius_m=100.0)[0].tolist() == [0, 0]
        labels, _ = geo.merge_sites([0.0, 0.0, 1.0], [0.0, 0.0, 0.0], radius_m=0.0)
        assert labels.tolist() == [0, 0, 1]

    def test_empty_and_bad(self):
        labels, c = geo.merge_sites([], [], radius_m=10.0)
        assert labels.shape == (0,) and c.shape == (0, 2)
        with pytest.raises(ScenarioError, match="radius_m"):
            geo.merge_sites([0.0], [0.0], radius_m=-1.0)
        with pytest.raises(ScenarioError, match="shapes"):
            geo.merge_sites([0.0, 1.0], [0.0], radius_m=1.0)
        with pytest.raises(ScenarioError, match=r"x_m\[1\]"):
            geo.merge_sites([0.0, np.nan], [0.0, 0.0], radius_m=1.0)

    def test_deterministic_under_repeat(self):
        rng = np.random.default_rng(3)
        x, y = rng.uniform(0, 1000, (2, 300))
        a = geo.merge_sites(x, y, radius_m=40.0)
        b = geo.merge_sites(x, y, radius_m=40.0)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        first = [int(np.flatnonzero(a[0] == k)[0]) for k in range(a[1].shape[0])]
        assert first == sorted(first)

    def test_real_counts(self):
        """Counts after merging (see the report): both cities keep >= 30 servers at 100 m."""
        ly = geo.read_sites_csv(need(LYON_TOWERS))
        mb = geo.read_sites_csv(need(MELB_SITES), format="lonlat")
        ly_counts = [geo.merge_site_table(ly, radius_m=r).n for r in (0.0, 100.0, 150.0, 200.0)]
        mb_counts = [geo.merge_site_table(mb, radius_m=r).n for r in (0.0, 50.0, 100.0)]
        assert ly_counts[0] == 180  # 181 rows at 180 distinct positions
        assert mb_counts[0] == 125
        assert ly_counts == sorted(ly_counts, reverse=True)
        assert ly_counts[1] >= 30 and mb_counts[2] >= 30
        assert ly_counts == [180, 140, 111, 86] and mb_counts == [125, 83, 43]
        m = geo.merge_site_table(ly, radius_m=100.0)
        assert m.member_counts.sum() == 181
        # merged centres stay in the data's box
        assert 4.893 <= m.lon_deg.min() and m.lon_deg.max() <= 4.957


# =========================================================================== density
class TestDensityReaders:
    def test_insee_totals(self):
        pts = geo.read_density_points_csv(need(INSEE), value_col="ind_2017")
        cells = geo.read_density_grid_3035_csv(INSEE, value_col="ind_2017")
        assert pts.crs == "EPSG:4326" and cells.crs == "EPSG:3035"
        assert pts.values.size == cells.values.size == 518
        assert pts.total == pytest.approx(114597.0) and cells.total == pytest.approx(114597.0)
        assert cells.cell_size == (200.0, 200.0)
        assert geo.read_density_grid_3035_csv(INSEE, value_col="ind_2015").total == pytest.approx(115484.5)

    def test_grid_centres_instead_of_corners(self, tmp_path):
        f = write(tmp_path, "x,y,v\n3923300,2528300,1\n3923500,2528300,2\n")
        with pytest.raises(ScenarioError, match="row 1 \\(line 2\\), column 'x'.*look like cell centres"):
            geo.read_density_grid_3035_csv(f, x_col="x", y_col="y", value_col="v")
        d = geo.read_density_grid_3035_csv(f, x_col="x", y_col="y", value_col="v", check_alignment=False)
        assert d.total == 3.0

    def test_grid_duplicate_cell(self, tmp_path):
        f = write(tmp_path, "x,y,v\n3923200,2528200,1\n3923400,2528200,1\n3923200,2528200,5\n")
        with pytest.raises(ScenarioError, match="row 3 \\(line 4\\).*listed again \\(first at row 1 \\(line 2\\)\\)"):
            geo.read_density_grid_3035_csv(f, x_col="x", y_col="y", value_col="v")

    def test_negative_value(self, tmp_path):
        f = write(tmp_path, "lon,lat,pop\n4.9,45.7,3\n4.9,45.7,-1\n")
        with pytest.raises(ScenarioError, match="row 2 \\(line 3\\), column 'pop': got '-1'; must be a finite number >= 0"):
            geo.read_density_points_csv(f, value_col="pop")

    def test_npy(self, tmp_path):
        arr = np.arange(6, dtype=float).reshape(3, 2)
        f = tmp_path / "d.npy"
        np.save(f, arr)
        d = geo.read_density_npy(f, bounds_m=(0.0, 0.0, 30.0, 40.0))
        assert d.crs is None and d.cell_size == (10.0, 20.0)
        # element [i, j] is the cell i-th from the west, j-th from the south
        k = int(np.flatnonzero(d.values == arr[2, 1])[0])
        assert (d.x_ll[k], d.y_ll[k]) == (20.0, 20.0)
        grid, kept = geo.resample_to_grid(d, origin_m=(0, 0), size_m=(30, 40), cells=(3, 2))
        np.testing.assert_array_equal(grid, arr)
        assert kept == 1.0
        per_m2 = geo.read_density_npy(f, bounds_m=(0.0, 0.0, 30.0, 40.0), value_kind="per_m2")
        assert per_m2.total == pytest.approx(arr.sum() * 200.0)

    def test_npy_errors(self, tmp_path):
        f = tmp_path / "d.npy"
        np.save(f, np.array([[1.0, np.nan]]))
        with pytest.raises(ScenarioError, match=r"element \[0, 1\]: got nan"):
            geo.read_density_npy(f, bounds_m=(0, 0, 1, 1))
        np.save(f, np.ones(3))
        with pytest.raises(ScenarioError, match="2-D"):
            geo.read_density_npy(f, bounds_m=(0, 0, 1, 1))
        np.save(f, np.ones((2, 2)))
        with pytest.raises(ScenarioError, match="bounds_m"):
            geo.read_density_npy(f, bounds_m=(0, 0, -1, 1))
        with pytest.raises(ScenarioError, match="value_kind"):
            geo.read_density_npy(f, bounds_m=(0, 0, 1, 1), value_kind="people")
        # every value finite, their sum not: an error, not a silent all-zero density
        np.save(f, np.full((10, 10), 1e308))
        with pytest.raises(ScenarioError, match=r"the values sum to inf \(the largest is 1e\+308\)"):
            geo.read_density_npy(f, bounds_m=(0, 0, 1, 1))
        # a text file named .npy is not an .npy file (numpy itself speaks of pickled data)
        f.write_text("hello\n")
        with pytest.raises(ScenarioError, match=r"is not an \.npy file \(it does not start with the \.npy header\)"):
            geo.read_density_npy(f, bounds_m=(0, 0, 1, 1))

    def test_geotiff_needs_extra(self, monkeypatch, tmp_path):
        monkeypatch.setitem(sys.modules, "rasterio", None)
        with pytest.raises(ImportError, match=r"edgeverse\[geotiff\]"):
            geo.read_density_geotiff(tmp_path / "x.tif")

    def test_geotiff_matches_csv_grid(self, tmp_path):
        rasterio = pytest.importorskip("rasterio")
        # 3 x 2 pixels of 200 m in EPSG:3035, north-up; one nodata pixel
        img = np.array([[1.0, 2.0, -9.0], [4.0, 5.0, 6.0]])  # row 0 is the north row
        west, north = 3923200.0, 2528600.0
        f = tmp_path / "pop.tif"
        with rasterio.open(
            f, "w", driver="GTiff", height=2, width=3, count=1, dtype="float64", crs="EPSG:3035",
            transform=rasterio.Affine(200.0, 0.0, west, 0.0, -200.0, north), nodata=-9.0,
        ) as dst:  # fmt: skip
            dst.write(img, 1)
        d = geo.read_density_geotiff(f)
        assert d.crs == "EPSG:3035" and d.cell_size == (200.0, 200.0)
        assert d.total == 18.0
        k = int(np.flatnonzero(d.values == 4.0)[0])  # south-west pixel
        assert (d.x_ll[k], d.y_ll[k]) == (west, north - 400.0)
        k = int(np.flatnonzero(d.values == 2.0)[0])
        assert (d.x_ll[k], d.y_ll[k]) == (west + 200.0, north - 200.0)
        csv = write(
            tmp_path,
            "x_ll_3035,y_ll_3035,v\n3923200,2528200,4\n3923400,2528200,5\n3923600,2528200,6\n"
            "3923200,2528400,1\n3923400,2528400,2\n",
        )
        ref = geo.read_density_grid_3035_csv(csv, value_col="v")
        p = geo.LocalProjection(4.89, 45.745)
        zone = dict(origin_m=(-1000, -1000), size_m=(2000, 2000), cells=(10, 10), projection=p)
        g1, k1 = geo.resample_to_grid(d, **zone)
        g2, k2 = geo.resample_to_grid(ref, **zone)
        np.testing.assert_allclose(g1, g2, atol=1e-12)
        assert k1 == k2 == pytest.approx(1.0)
        with pytest.raises(ScenarioError, match="band"):
            geo.read_density_geotiff(f, band=2)


class TestResample:
    def test_hand_example_aligned(self):
        """2 x 2 source cells of 2 m onto a 4 x 4 grid of 1 m: each splits into 4 equal quarters."""
        src = geo.DensityCells(
            np.array([0.0, 0.0, 2.0, 2.0]), np.array([0.0, 2.0, 0.0, 2.0]), (2.0, 2.0),
            np.array([4.0, 8.0, 12.0, 16.0]), None, "hand", None,
        )  # fmt: skip
        grid, kept = geo.resample_to_grid(src, origin_m=[0, 0], size_m=[4, 4], cells=(4, 4))
        expected = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], dtype=float)
        np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-12)
        assert kept == 1.0

    def test_hand_example_shifted_partly_outside(self):
        """Source shifted by (+0.5, +1): a share falls past the zone's far edges and is dropped."""
        src = geo.DensityCells(
            np.array([0.5, 0.5, 2.5, 2.5]), np.array([1.0, 3.0, 1.0, 3.0]), (2.0, 2.0),
            np.array([4.0, 4.0, 4.0, 4.0]), None, "hand", None,
        )  # fmt: skip
        grid, kept = geo.resample_to_grid(src, origin_m=[0, 0], size_m=[4, 4], cells=(4, 4))
        # x: [0.5, 2.5] gives 1/4, 1/2, 1/4 to columns 0-2; [2.5, 4.5] gives 1/4, 1/2 to columns 2-3 and
        # loses 1/4.  y: [1, 3] gives 1/2, 1/2 to rows 1-2; [3, 5] gives 1/2 to row 3 and loses 1/2.
        x_share = np.array([0.25, 0.5, 0.5, 0.5])
        y_share = np.array([0.0, 0.5, 0.5, 0.5])
        np.testing.assert_allclose(grid, 4.0 * np.outer(x_share, y_share), atol=1e-12)
        assert grid[0].tolist() == [0.0, 0.5, 0.5, 0.5] and grid[3].tolist() == [0.0, 1.0, 1.0, 1.0]
        # kept: (7/8 of x) * (3/4 of y) of the mass 16
        assert kept == pytest.approx(7 / 8 * 3 / 4) and grid.sum() == pytest.approx(10.5)

    def test_points_binning(self):
        pts = geo.DensityPoints(
            np.array([0.5, 0.5, 3.99, 4.0, -0.1]), np.array([0.5, 0.7, 3.99, 1.0, 1.0]),
            np.array([1.0, 2.0, 3.0, 4.0, 5.0]), None, "pts", None,
        )  # fmt: skip
        grid, kept = geo.resample_to_grid(pts, origin_m=(0, 0), size_m=(4, 4), cells=(2, 2))
        assert grid.tolist() == [[3.0, 0.0], [0.0, 3.0]]
        assert kept == pytest.approx(6.0 / 15.0)  # x = 4.0 is on the far edge: outside

    @pytest.mark.parametrize("reproject", ["subsample", "corners"])
    def test_mass_conserved_3035_inside_zone(self, reproject):
        cells = geo.read_density_grid_3035_csv(need(INSEE), value_col="ind_2017")
        p = geo.LocalProjection(4.925, 45.7675)
        x, y = p.from_crs(cells.x_ll, cells.y_ll, "EPSG:3035")
        origin, size = geo.bounding_zone(x, y, margin_m=1000.0)
        grid, kept = geo.resample_to_grid(
            cells, origin_m=origin, size_m=size, cells=(37, 41), projection=p, reproject=reproject
        )
        assert grid.shape == (37, 41)
        assert abs(grid.sum() - cells.total) <= 1e-9 * cells.total
        assert kept == pytest.approx(1.0, abs=1e-12)
        assert (grid >= 0).all()

    def test_mass_conserved_points_and_methods_agree(self):
        pts = geo.read_density_points_csv(need(INSEE), value_col="ind_2017")
        cells = geo.read_density_grid_3035_csv(INSEE, value_col="ind_2017")
        p = geo.projection_for_points(pts.x, pts.y)
        zone = dict(origin_m=(-4000, -4000), size_m=(8000, 8000), cells=(20, 20), projection=p)
        g_pts, k_pts = geo.resample_to_grid(pts, **zone)
        g_sub, _ = geo.resample_to_grid(cells, **zone)
        g_cor, _ = geo.resample_to_grid(cells, reproject="corners", **zone)
        for g in (g_pts, g_sub, g_cor):
            assert abs(g.sum() - 114597.0) <= 1e-9 * 114597.0
        # 400 m zone cells: the three schemes move mass only across cell borders
        assert np.abs(g_sub - g_cor).sum() / 114597.0 < 0.05
        assert np.abs(g_sub - g_pts).sum() / 114597.0 < 0.25

    def test_zone_of_towers_keeps_part(self):
        ly = geo.read_sites_csv(need(LYON_TOWERS))
        cells = geo.read_density_grid_3035_csv(need(INSEE), value_col="ind_2017")
        p = geo.projection_for_points(ly.lon_deg, ly.lat_deg)
        origin, size = geo.bounding_zone(*ly.positions_m(p).T, margin_m=0.0)
        grid, kept = geo.resample_to_grid(cells, origin_m=origin, size_m=size, cells=(25, 25), projection=p)
        assert 0.7 < kept < 0.9
        assert grid.sum() == pytest.approx(kept * cells.total)

    def test_errors(self):
        src = geo.DensityPoints(np.array([4.9]), np.array([45.7]), np.array([1.0]), "EPSG:4326", "p", None)
        with pytest.raises(ScenarioError, match="pass projection="):
            geo.resample_to_grid(src, origin_m=(0, 0), size_m=(1, 1), cells=(1, 1))
        with pytest.raises(ScenarioError, match="cells"):
            geo.resample_to_grid(src, origin_m=(0, 0), size_m=(1, 1), cells=(1, 0), projection=geo.LocalProjection(4.9, 45.7))
        with pytest.raises(ScenarioError, match="size_m"):
            geo.resample_to_grid(src, origin_m=(0, 0), size_m=(1, -1), cells=(1, 1))
        cells = geo.DensityCells(np.array([0.0]), np.array([0.0]), (1.0, 1.0), np.array([1.0]), "EPSG:3035", "c", None)
        with pytest.raises(ScenarioError, match="reproject"):
            geo.resample_to_grid(cells, origin_m=(0, 0), size_m=(1, 1), cells=(1, 1),
                                 projection=geo.LocalProjection(4.9, 45.7), reproject="nearest")  # fmt: skip

    def test_empty_raster(self, tmp_path):
        f = tmp_path / "z.npy"
        np.save(f, np.zeros((3, 3)))
        d = geo.read_density_npy(f, bounds_m=(0, 0, 3, 3))
        assert d.values.size == 0  # empty cells are skipped
        grid, kept = geo.resample_to_grid(d, origin_m=(0, 0), size_m=(3, 3), cells=(3, 3))
        assert grid.shape == (3, 3) and grid.sum() == 0.0 and kept == 1.0

    def test_all_zero_source(self):
        src = geo.DensityCells(np.array([0.0]), np.array([0.0]), (1.0, 1.0), np.array([0.0]), None, "z", None)
        grid, kept = geo.resample_to_grid(src, origin_m=(0, 0), size_m=(2, 2), cells=(2, 2))
        assert grid.sum() == 0.0 and kept == 1.0


# =========================================================================== twins and zone
class TestTwinsAndZone:
    def test_xy_with_types(self, tmp_path):
        f = write(tmp_path, "x,y,kind\n1,2,car\n3,4,drone\n5,6,car\n")
        t = geo.read_twins_csv(f, type_col="kind")
        assert t.n == 3 and t.lon_deg is None
        assert t.positions_m().tolist() == [[1, 2], [3, 4], [5, 6]]
        assert t.type_names == ("car", "drone") and t.type_ids.tolist() == [0, 1, 0]

    def test_lonlat(self, tmp_path):
        f = write(tmp_path, "longitude,latitude\n4.9,45.76\n4.91,45.77\n")
        t = geo.read_twins_csv(f, lon_col="longitude", lat_col="latitude")
        p = geo.LocalProjection(4.9, 45.76)
        pos = t.positions_m(p)
        assert pos[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-9) and pos[1, 0] > 700
        with pytest.raises(ScenarioError, match="projection"):
            t.positions_m()

    def test_auto_detect_and_errors(self, tmp_path):
        assert geo.read_twins_csv(write(tmp_path, "lon,lat\n4.9,45.7\n")).lon_deg.tolist() == [4.9]
        with pytest.raises(ScenarioError, match="both x, y and lon, lat"):
            geo.read_twins_csv(write(tmp_path, "x,y,lon,lat\n1,2,4.9,45.7\n"))
        with pytest.raises(ScenarioError, match="neither"):
            geo.read_twins_csv(write(tmp_path, "a,b\n1,2\n"))
        with pytest.raises(ScenarioError, match="give both"):
            geo.read_twins_csv(write(tmp_path, "x,y\n1,2\n"), x_col="x")
        with pytest.raises(ScenarioError, match="not both"):
            geo.read_twins_csv(write(tmp_path, "x,y\n1,2\n"), x_col="x", y_col="y", lon_col="x", lat_col="y")
        with pytest.raises(ScenarioError, match="row 2 \\(line 3\\), column 'y': got 'q'"):
            geo.read_twins_csv(write(tmp_path, "x,y\n1,2\n3,q\n"))
        with pytest.raises(ScenarioError, match="row 1 \\(line 2\\), column 'k': got an empty value"):
            geo.read_twins_csv(write(tmp_path, "x,y,k\n1,2,\n"), type_col="k")

    def test_bounding_zone(self):
        o, s = geo.bounding_zone([0.0, 100.0], [10.0, 50.0], margin_m=5.0)
        assert o.tolist() == [-5.0, 5.0] and s.tolist() == [110.0, 50.0]
        o, s = geo.bounding_zone([10.0, 130.0], [-5.0, 40.0], margin_m=10.0, round_to_m=50.0)
        assert o.tolist() == [0.0, -50.0] and s.tolist() == [150.0, 100.0]
        with pytest.raises(ScenarioError, match="margin_m > 0"):
            geo.bounding_zone([1.0], [1.0], margin_m=0.0)
        with pytest.raises(ScenarioError, match="margin_m"):
            geo.bounding_zone([1.0], [1.0], margin_m=-1.0)
        with pytest.raises(ScenarioError, match="no points"):
            geo.bounding_zone([], [], margin_m=1.0)
