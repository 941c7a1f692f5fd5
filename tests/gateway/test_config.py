"""Config: defaults, and errors that name the file, the line and the dotted key."""

import textwrap

import pytest

from gateway.config import ConfigError, key_lines, load, parse

MINIMAL = """\
[sites.stadtpark]
latitude = 52.52
longitude = 13.40
"""


def test_minimal_config_gets_documented_defaults():
    cfg = parse(MINIMAL, "gw.toml", env={})
    s = cfg.sites["stadtpark"]
    assert s.timezone == "Europe/Berlin"
    assert (s.lighting.hops, s.waste.near_full, s.waste.full) == (2, 80, 95)
    assert cfg.role("container_sensor").heartbeat == 6 * 3600
    assert cfg.role("light_pole").heartbeat == 60
    assert cfg.uplink.sites == ("stadtpark",)
    assert cfg.registry_path == "/var/lib/park-gateway/registry.sqlite"


def test_env_overrides_paths():
    cfg = parse(MINIMAL, "gw.toml", env={"PARK_GATEWAY_STATE_DIR": "/tmp/x", "PARK_GATEWAY_SOCKET": "/tmp/s"})
    assert cfg.state_dir == "/tmp/x" and cfg.api_socket == "/tmp/s"


def _err(text):
    with pytest.raises(ConfigError) as ei:
        parse(textwrap.dedent(text), "park.toml", env={})
    return ei.value


def test_wrong_type_names_key_and_line():
    e = _err("""\
        [sites.stadtpark]
        latitude = 52.5
        longitude = 13.4

        [sites.stadtpark.lighting]
        hops = "two"
        """)
    assert e.key == "sites.stadtpark.lighting.hops"
    assert e.line == 6
    assert str(e).startswith("park.toml:6: sites.stadtpark.lighting.hops: must be an integer")


def test_out_of_range_and_unknown_key():
    e = _err(MINIMAL + "[sites.stadtpark.waste]\nnear_full = 90\nfull = 85\n")
    assert e.key == "sites.stadtpark.waste.near_full" and e.line == 5 and "below full" in e.message
    e = _err(MINIMAL + "[sites.stadtpark.lighting]\nhopz = 3\n")
    assert e.key == "sites.stadtpark.lighting.hopz" and e.line == 5 and "unknown key" in e.message


def test_link_errors_point_into_array_of_tables():
    e = _err("""\
        [[links]]
        type = "tcp"
        url = "tcp://127.0.0.1:7000"

        [[links]]
        type = "serial"
        baudrate = 115200
        """ + MINIMAL)
    assert e.key == "links[1]" and e.line == 5 and "port" in e.message
    e = _err('[[links]]\ntype = "usb"\n' + MINIMAL)
    assert e.key == "links[0].type" and e.line == 2


def test_curfew_windows_and_bad_time():
    cfg = parse(MINIMAL + '[sites.stadtpark.lighting]\ncurfew = [{start = "23:00", end = "05:30", max = 30}]\n',
                "f", env={})
    (w,) = cfg.sites["stadtpark"].lighting.curfew
    assert (w.start_min, w.end_min, w.max_level) == (23 * 60, 5 * 60 + 30, 30)
    assert w.contains(0) and w.contains(23 * 60) and not w.contains(12 * 60)
    e = _err(MINIMAL + '[sites.stadtpark.lighting]\ncurfew = [{start = "25:00", end = "05:00"}]\n')
    assert e.line == 5 and "not a time of day" in e.message


def test_unknown_timezone_and_bad_toml():
    e = _err(MINIMAL + 'timezone = "Mars/Olympus"\n')
    assert e.line == 4 and "time zone" in e.message
    e = _err("[sites.stadtpark\nlatitude = 1\n")
    assert e.line == 1 and "not valid TOML" in e.message


def test_uplink_errors_get_the_line():
    e = _err(MINIMAL + '\n[uplink]\nbroker = "http://example.org"\n')
    assert e.key == "uplink.broker" and e.line == 6
    e = _err(MINIMAL + '\n[uplink]\nsites = ["elsewhere"]\n')
    assert e.key == "uplink.sites" and e.line == 6


def test_missing_site_and_missing_file(tmp_path):
    e = _err("[gateway]\n")
    assert "at least one site" in e.message
    with pytest.raises(ConfigError) as ei:
        load(str(tmp_path / "nope.toml"), env={})
    assert "cannot read config" in str(ei.value) and "nope.toml" in str(ei.value)


def test_key_lines_handles_subtables_of_arrays():
    lines = key_lines('[[links]]\ntype = "a"\n[[links]]\ntype = "b"\n[links.opts]\nx = 1\n')
    assert lines[("links", 0, "type")] == 2
    assert lines[("links", 1, "type")] == 4
    assert lines[("links", 1, "opts", "x")] == 6
