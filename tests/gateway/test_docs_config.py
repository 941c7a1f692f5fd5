"""The example config shipped for operators parses (so the documentation cannot rot)."""

import os

from gateway.config import parse

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "gateway", "systemd", "gateway.toml.example")


def test_example_config_is_valid(tmp_path):
    text = open(EXAMPLE).read()
    pw = tmp_path / "mqtt.password"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    cfg = parse(text.replace("/etc/park-gateway/mqtt.password", str(pw)), "gateway.toml.example", env={})
    assert [lk.type for lk in cfg.links] == ["serial", "tcp", "ble"]
    assert cfg.sites["stadtpark"].lighting.curfew[0].max_level == 30
    assert cfg.uplink.tls.enabled and cfg.uplink.password == "secret"
    assert cfg.api_group == "park-ops"
