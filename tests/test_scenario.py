"""Validation: every bad input gets one clear error naming field, value and what is allowed."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from edgeverse import ScenarioError, get_preset, load_scenario, preset_names
from edgeverse.scenario import Scenario, preset_text

BAD = [
    ({"servers.sensor_bandwidth_hz": [0, 1e7, 2e7, 2e7]}, r"servers\.sensor_bandwidth_hz\[0\]: got 0; input should be greater than 0"),
    ({"twins.types.1.bandwidth_hz": -1e6}, r"twins\.types\[1\]\.bandwidth_hz: got -1000000\.0; input should be greater than 0"),
    ({"sensing.tx_power_w": 0}, r"sensing\.tx_power_w: got 0; input should be greater than 0"),
    ({"twins.types.2.tx_power_w": -0.3}, r"twins\.types\[2\]\.tx_power_w: got -0\.3; input should be greater than 0"),
    ({"servers.compute_hz": [8e9, -8e9, 16e9, 16e9]}, r"servers\.compute_hz\[1\]: got -8000000000\.0; input should be greater than 0"),
    ({"servers.compute_hz": [8e9, 0, 16e9, 16e9]}, r"servers\.compute_hz\[1\]: got 0; input should be greater than 0"),
    ({"sensing.data_density_bps_per_m3": float("nan")}, r"sensing\.data_density_bps_per_m3: got nan; input should be a finite number"),
    ({"twins.types.0.bandwidth_hz": float("inf")}, r"twins\.types\[0\]\.bandwidth_hz: got inf; input should be a finite number"),
    ({"servers.positions_m.0": [float("nan"), 3.0]}, r"servers\.positions_m\[0\]\[0\]: got nan; input should be a finite number"),
    ({"sensing.n_sensors": "nan"}, r"sensing\.n_sensors: got 'nan'; input should be a finite number"),
    ({"servers.positions_m.2": [2500, 100]}, r"servers\.positions_m\[2\]: got \[2500\.0, 100\.0\], outside the zone x in \[0, 2000\] m"),
    ({"servers.positions_m.3": [500, 500]}, r"servers\.positions_m\[3\]: got \[500\.0, 500\.0\], the same position as servers\.positions_m\[0\]"),
    ({"servers.positions_m": [[1, 1], [2, 2], [2, 2], [1, 1]]},
     r"servers\.positions_m\[3\]: got \[1\.0, 1\.0\], the same position as servers\.positions_m\[0\]"),
    ({"servers.compute_hz": [8e9, 8e9, 16e9]}, r"servers\.compute_hz: got 3 entries; must have one per server \(4"),
    ({"servers.sensor_bandwidth_hz": [1e7] * 5}, r"servers\.sensor_bandwidth_hz: got 5 entries; must have one per server \(4"),
    ({"servers.antenna_height_m": [25, 25]}, r"servers\.antenna_height_m: got 2 entries; must have one per server"),
    ({"sensing.density.components.0.mean_m": [1e6, 1e6], "sensing.density.components.0.std_m": 10.0},
     r"sensing\.density\.components\[0\]: mean \[1000000\.0, 1000000\.0\] m, std 10\.0 m integrates to 0 over the zone"),
    ({"sensing.density.components.0.std_m": 0}, r"sensing\.density\.components\[0\]\.std_m: got 0; input should be greater than 0"),
    ({"zone.cells": [0, 100]}, r"zone\.cells\[0\]: got 0; input should be greater than or equal to 1"),
    ({"zone.cells": []}, r"zone\.cells: got 0 entries; must match zone\.size_m \(2 axes\)"),
    ({"sensing.n_sensors": "lots"}, r"sensing\.n_sensors: got 'lots'; input should be a valid number"),
    ({"sensing.slot": 1e-3}, r"sensing\.slot: unknown field"),
    ({"channel.model": "hata"}, r"channel\.model: got 'hata'; input should be 'free_space', '3gpp_uma_los'"),
    ({"twins.count": -1}, r"twins\.count: got -1; input should be greater than or equal to 0"),
    ({"twins.positions.components.0.mean_m": [9e6, 9e6]}, r"twins\.positions\.components\[0\]: .* integrates to 0 over the zone"),
    ({"model.min_render_fraction": 1.0}, r"model\.min_render_fraction: got 1\.0; input should be less than 1"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_input_names_field_value_and_rule(paper, overrides, message):
    with pytest.raises(ScenarioError, match=message) as info:
        paper.with_overrides(overrides)
    assert info.value.errors, "errors list is filled"
    assert "Traceback" not in str(info.value)


def test_numbers_as_strings_are_numbers(paper):
    s = paper.with_overrides({"servers.sensor_bandwidth_hz": ["10e6", "1e7", 2e7, "20e6"], "sensing.n_sensors": "25000"})
    assert s.servers.sensor_bandwidth_hz == [1e7, 1e7, 2e7, 2e7]
    assert s.sensing.n_sensors == 25000.0


def test_yaml_string_number_from_file(tmp_path):
    # YAML 1.1 reads 20e6 (no dot) as a string: it must still be accepted as a number
    text = preset_text("paper").replace("sensor_bandwidth_hz: [1.0e+7, 1.0e+7, 2.0e+7, 2.0e+7]",
                                        "sensor_bandwidth_hz: [10e6, 10e6, 20e6, 20e6]")
    assert "10e6" in text
    f = tmp_path / "s.yaml"
    f.write_text(text)
    assert load_scenario(f).servers.sensor_bandwidth_hz == [1e7, 1e7, 2e7, 2e7]


def test_array_density_errors(paper, tmp_path):
    with pytest.raises(ScenarioError, match=r"sensing\.density: sums to 0 over the zone"):
        paper.with_overrides({"zone.cells": [2, 2], "sensing.density": {"kind": "array", "values": [[0, 0], [0, 0]]}})
    with pytest.raises(ScenarioError, match=r"shape \(3,\); must have the grid's shape zone\.cells = \(2, 2\)"):
        paper.with_overrides({"zone.cells": [2, 2], "sensing.density": {"kind": "array", "values": [1, 2, 3]}})
    with pytest.raises(ScenarioError, match=r"contains negative values"):
        paper.with_overrides({"zone.cells": [2, 2], "sensing.density": {"kind": "array", "values": [[1, -1], [0, 1]]}})
    np.save(tmp_path / "g.npy", np.ones((2, 2)))
    f = tmp_path / "s.yaml"
    data = yaml.safe_load(preset_text("paper"))
    data["zone"]["cells"] = [2, 2]
    data["sensing"]["density"] = {"kind": "array", "file": "g.npy"}
    f.write_text(yaml.safe_dump(data))
    assert load_scenario(f).sensing.density.file == "g.npy"
    data["sensing"]["density"]["file"] = "missing.npy"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=r"sensing\.density\.file: 'missing\.npy' does not exist"):
        load_scenario(f)


def test_file_errors(tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("zone: [1, 2\n")
    with pytest.raises(ScenarioError, match="is not valid YAML"):
        load_scenario(bad)
    other = tmp_path / "s.json"
    other.write_text("{}")
    with pytest.raises(ScenarioError, match="unknown extension '.json'"):
        load_scenario(other)


def test_toml_and_base(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('base = "paper"\nseed = 7\n[twins]\ncount = 12\n')
    s = load_scenario(f)
    assert (s.seed, s.twins.count, s.servers.n) == (7, 12, 4)


def test_preset_is_section_iv_exactly(paper):
    assert preset_names()[0] == "paper"
    assert paper.servers.compute_hz == [8e9, 8e9, 16e9, 16e9]
    assert paper.servers.sensor_bandwidth_hz == [1e7, 1e7, 2e7, 2e7]
    assert paper.servers.noise_psd_dbm_per_hz == -170.0
    s = paper.sensing
    assert (s.n_sensors, s.slot_s, s.volume_unit_m3, s.tx_power_w, s.data_density_bps_per_m3,
            s.render_complexity_cycles_per_bit) == (25000, 1e-3, 0.01, 1e-3, 50.0, 5000.0)
    assert s.density.components[0].mean_m == [750.0, 750.0]
    t = paper.twins
    assert [x.intensity_hz for x in t.types] == [10.0, 100.0, 1000.0]
    assert [x.tx_power_w for x in t.types] == [0.1, 0.2, 0.3]
    assert {(x.data_size_bits, x.bandwidth_hz, x.complexity_cycles_per_bit) for x in t.types} == {(1e7, 1e6, 1e4)}
    assert paper.zone.size_m == [2000.0, 2000.0] and t.count == 60


def test_show_config_round_trip(paper):
    assert Scenario.from_dict(yaml.safe_load(paper.to_yaml())) == paper


def test_override_errors(paper):
    with pytest.raises(ScenarioError, match=r"twins\.typo: unknown field"):
        paper.with_overrides({"twins.typo": 3})
    with pytest.raises(ScenarioError, match=r"index 9 out of range; the list has 3 entries"):
        paper.with_overrides({"twins.types.9.share": 1})


def test_geo_and_optional_fields(paper):
    with pytest.raises(ScenarioError, match=r"geo\.center_lonlat_deg\[0\]: got 200\.0; a longitude must be in \[-180, 180\]"):
        paper.with_overrides({"geo": {"center_lonlat_deg": [200.0, 45.0]}})
    with pytest.raises(ScenarioError, match=r"geo\.center_lonlat_deg\[1\]: got -91\.0; a latitude must be in \[-90, 90\]"):
        paper.with_overrides({"geo": {"center_lonlat_deg": [4.9, -91.0]}})
    with pytest.raises(ScenarioError, match=r"geo\.projection: got 'mercator'; input should be 'local' or 'utm'"):
        paper.with_overrides({"geo": {"projection": "mercator", "center_lonlat_deg": [4.9, 45.0]}})
    with pytest.raises(ScenarioError, match=r"geo\.center_lonlat_deg: required for geo: no site or twin file in lon/lat"):
        paper.with_overrides({"geo": {"projection": "local"}})
    placed = paper.with_overrides({"geo": {"center_lonlat_deg": [4.9, 45.0]}})
    assert placed.projection().lon0_deg == 4.9 and "geo" in placed.to_dict()
    with pytest.raises(ScenarioError, match=r"zone\.size_m: required field is missing; give zone\.size_m and zone\.cells, or zone\.auto"):
        paper.with_overrides({"zone.size_m": None})
    assert paper.with_overrides({"zone": {"cells": [10, 10]}}).zone.size_m == paper.zone.size_m  # merged
    with pytest.raises(ScenarioError, match=r"servers\.positions_m: required field is missing; give the positions or servers\.sites"):
        paper.with_overrides({"servers.positions_m": None})
    with pytest.raises(ScenarioError, match=r"twins\.count: required field is missing"):
        paper.with_overrides({"twins.count": None})


def test_scalar_server_values_broadcast(paper):
    s = paper.with_overrides({"servers.compute_hz": 1.2e10, "servers.sensor_bandwidth_hz": "20e6"})
    assert s.servers.compute_hz == 1.2e10 and s.servers.sensor_bandwidth_hz == 2e7
    from edgeverse.build import build_problem

    p = build_problem(s.with_overrides({"zone.cells": [10, 10]}))
    assert p.compute_hz.tolist() == [1.2e10] * 4 and p.sensor_bandwidth_hz.tolist() == [2e7] * 4
    assert p.projection is None and p.server_lonlat_deg is None


def test_to_dict_unchanged_without_data_sections(paper):
    d = paper.to_dict()
    assert "geo" not in d and "provenance" not in d and "sites" not in d["servers"] and "auto" not in d["zone"]


def test_repeated_yaml_keys_are_errors(tmp_path):
    """Plain YAML keeps the last of two equal keys (silently dropping a whole section); ours says so."""
    from edgeverse.sweep import read_sweep_file

    f = tmp_path / "s.yaml"
    f.write_text("base: paper\ntwins: {count: 5}\nzone: {cells: [10, 10]}\ntwins: {count: 9}\n")
    with pytest.raises(ScenarioError, match=r"key 'twins' appears twice in one mapping \(first on line 2\)"):
        load_scenario(f)
    m = tmp_path / "m.yaml"  # a merge key brings keys the mapping may override: not a repetition
    m.write_text("base: paper\nzone: &z {cells: [10, 10]}\ntwins: {count: 5, <<: {count: 7}}\n")
    assert load_scenario(m).twins.count == 5
    g = tmp_path / "w.yaml"
    g.write_text("name: t\nbase: paper\nseeds: 1\nseeds: 2\nmethods: [snr]\naxes: {twins.count: [5]}\n")
    with pytest.raises(ScenarioError, match=r"key 'seeds' appears twice"):
        read_sweep_file(g)


def test_noise_psd_checks(paper):
    """A noise PSD that is 0 or infinite in W/Hz is an error; one far from thermal noise is warned about."""
    from edgeverse.errors import PlausibilityWarning

    with pytest.raises(ScenarioError, match=r"servers.noise_psd_dbm_per_hz: got -170000 dBm/Hz, which is 0 W/Hz"):
        paper.with_overrides({"servers.noise_psd_dbm_per_hz": -170e3})
    with pytest.raises(ScenarioError, match=r"noise_psd_dbm_per_hz\[1\]: got 1e\+06 dBm/Hz, which is inf W/Hz"):
        paper.with_overrides({"servers.noise_psd_dbm_per_hz": [-174.0, 1e6, -174.0, -174.0]})
    for v in (4e-21, 170.0, -250.0):  # W/Hz written as dBm/Hz, a sign slip, far below thermal noise
        with pytest.warns(PlausibilityWarning, match="noise_psd_dbm_per_hz: got .* outside -220..-120"):
            paper.with_overrides({"servers.noise_psd_dbm_per_hz": v})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paper.with_overrides({"servers.noise_psd_dbm_per_hz": -174.0})


def test_true_false_is_not_a_number(paper):
    for path, value in (("servers.compute_hz", True), ("servers.compute_hz", [True, 8e9, 8e9, 8e9]),
                        ("model.min_render_fraction", False), ("sensing.tx_power_w", True),
                        ("servers.compute_hz", [np.True_] * 4)):
        with pytest.raises(ScenarioError, match="must be a number, not true/false"):
            paper.with_overrides({path: value})
    with pytest.raises(ScenarioError, match="must be an integer, not true/false"):
        paper.with_overrides({"twins.count": np.bool_(True)})


def test_transmit_power_in_dbm_is_warned_about(paper):
    from edgeverse.errors import PlausibilityWarning

    with pytest.warns(PlausibilityWarning, match=r"sensing.tx_power_w: got 30 W, implausibly high"):
        paper.with_overrides({"sensing.tx_power_w": 30})
    with pytest.warns(PlausibilityWarning, match=r"twins.types\[0\].tx_power_w: got 23 W"):
        paper.with_overrides({"twins.types.0.tx_power_w": 23})


def test_twin_list_on_a_base_preset_needs_no_count(tmp_path):
    """`base:` plus a twin CSV: the preset's twins.count does not apply (the file gives the count)."""
    (tmp_path / "pts.csv").write_text("x,y,kind\n100,200,type1\n300,400,type2\n")
    f = tmp_path / "s.yaml"
    f.write_text("base: paper-calibrated\ntwins:\n  positions: {kind: csv, file: pts.csv, x_col: x, y_col: y, "
                 "type_col: kind}\n")
    assert load_scenario(f).twins.count == 2
    f.write_text("base: paper-calibrated\ntwins:\n  count: 60\n  positions: {kind: csv, file: pts.csv, x_col: x, "
                 "y_col: y, type_col: kind}\n")
    with pytest.raises(ScenarioError, match="twins.count: got 60"):  # a count written here must still match
        load_scenario(f)


@pytest.mark.parametrize("key, value, field", [
    ("zone.size_m", [1e300, 1e300], "zone.size_m[0]: got 1e+300 m; must be between 0 and 1e+07 m"),
    ("servers.compute_hz", 1e-300, "servers.compute_hz: got 1e-300 Hz; must be between 1 and 1e+18 Hz"),
    ("sensing.data_density_bps_per_m3", 1e308, "sensing.data_density_bps_per_m3: got 1e+308 bit/s/m^3"),
    ("sensing.render_complexity_cycles_per_bit", 1e15, "sensing.render_complexity_cycles_per_bit: got 1e+15"),
    ("sensing.n_sensors", 1e300, "sensing.n_sensors: got 1e+300 sensors; must be between 1 and 1e+12 sensors"),
    ("sensing.n_sensors", 1e-200, "sensing.n_sensors: got 1e-200 sensors; must be between 1 and"),
    ("sensing.n_sensors", 2.5, "sensing.n_sensors: got 2.5; must be a whole number of sensors (Q)"),
    ("sensing.slot_s", 1e300, "sensing.slot_s: got 1e+300 s; must be between 1e-09 and 1000 s"),
    ("sensing.volume_unit_m3", 1e300, "sensing.volume_unit_m3: got 1e+300 m^3; must be between 1e-12 and 1e+06"),
    ("sensing.tx_power_w", 1e-300, "sensing.tx_power_w: got 1e-300 W; must be between 1e-15 and 1e+06 W"),
    ("twins.types.1.tx_power_w", 1e-30, "twins.types[1].tx_power_w: got 1e-30 W; must be between 1e-15"),
])
def test_magnitudes_that_overflow_are_errors(key, value, field):
    from edgeverse.errors import ScenarioError

    with pytest.raises(ScenarioError, match=re.escape(field)):
        get_preset("paper").with_overrides({key: value})


def test_low_transmit_power_is_warned_about():
    from edgeverse.errors import PlausibilityWarning

    with pytest.warns(PlausibilityWarning, match=r"sensing.tx_power_w: got 1e-09 W \(-60 dBm\), implausibly low"):
        get_preset("paper").with_overrides({"sensing.tx_power_w": 1e-9})
    assert get_preset("paper").with_overrides({"sensing.n_sensors": 2.5e4}).sensing.n_sensors == 25000


def test_a_mapping_override_merges_like_a_base_file():
    from edgeverse.errors import ScenarioError

    paper = get_preset("paper")
    s = paper.with_overrides({"twins": {"count": 7}})  # the section's other fields stay
    assert s.twins.count == 7 and s.twins.types == paper.twins.types
    assert s.twins.positions == paper.twins.positions
    # a new kind replaces the section (the Gaussian mixture's components would not fit a uniform density)
    assert paper.with_overrides({"sensing.density": {"kind": "uniform"}}).sensing.density.kind == "uniform"
    with pytest.raises(ScenarioError, match="an empty field name"):
        paper.with_overrides({"": 5})
    with pytest.raises(ScenarioError, match="an empty field name"):
        paper.with_overrides({"twins..count": 5})
