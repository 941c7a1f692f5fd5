"""provision's radio flags (park_device.linkcfg): link.kind, the Wi-Fi network, the passphrase
from a file, a variable or a prompt (never the command line, never shown), the gateway's address."""
from __future__ import annotations

import io
import json
import os

import pytest

from cli_harness import run_cli
from park_device import errors, provision
from park_device.linkcfg import link_section

PSK = "stadtpark-psk-1"


class Tty(io.StringIO):
    def isatty(self):
        return True


def _section(kind, base=None, **kw):
    kw.setdefault("environ", {})
    kw.setdefault("stdin", io.StringIO())
    return link_section(kind, dict({"uart": 1}, **(base or {})), **kw)


def test_wifi_from_flags_and_a_passphrase_file(tmp_path):
    f = tmp_path / "psk"
    f.write_text(PSK + "\n")
    f.chmod(0o600)
    out = _section("wifi", ssid="park", psk_file=str(f), gateway="192.168.4.1")
    assert out == {"kind": "wifi", "ssid": "park", "psk": PSK, "host": "192.168.4.1", "port": 7000}
    out = _section("wifi", ssid="park", gateway="10.0.0.1:4710", environ={"PARK_WIFI_PSK": PSK})
    assert out["psk"] == PSK and out["port"] == 4710
    out = _section("wifi", ssid="park", gateway="10.0.0.1", psk_env="MY_PSK", environ={"MY_PSK": PSK})
    assert out["psk"] == PSK
    asked = []
    out = _section("wifi", ssid="park", gateway="10.0.0.1", stdin=Tty(), prompt=lambda p: asked.append(p) or PSK)
    assert out["psk"] == PSK and asked and "not shown" in asked[0]


def test_ble_and_serial_take_no_wifi_settings():
    assert _section("ble") == {"kind": "ble"}
    assert _section(None) == {}  # no flag: the config's link stays as it is
    with pytest.raises(errors.BadConfig) as e:
        _section("ble", ssid="park")
    assert e.value.where == "--wifi-ssid" and "--link wifi only" in e.value.message


@pytest.mark.parametrize("kw, where, words", [
    ({"kind": "lora"}, "--link", "one of: serial, ble, wifi"),
    ({"gateway": "10.0.0.1"}, "--wifi-ssid", "network's name"),
    ({"ssid": "park"}, "--gateway", "gateway's address"),
    ({"ssid": "x" * 33, "gateway": "10.0.0.1"}, "--wifi-ssid", "1..32 bytes"),
    ({"ssid": "park", "gateway": "gateway.local:7000"}, "--gateway", "IPv4 address"),
    ({"ssid": "park", "gateway": "10.0.0.1:70000"}, "--gateway", "1..65535"),
    ({"ssid": "park", "gateway": "10.0.0.1"}, "--wifi-psk-file", "needs the network's passphrase"),
    ({"ssid": "park", "gateway": "10.0.0.1", "psk_env": "NOPE"}, "--wifi-psk-env", "NOPE is not set"),
    ({"ssid": "park", "gateway": "10.0.0.1", "environ": {"PARK_WIFI_PSK": "short"}}, "$PARK_WIFI_PSK", "8..63"),
])
def test_bad_radio_settings_are_named_with_the_valid_choices(kw, where, words):
    kind = kw.pop("kind", "wifi")
    with pytest.raises(errors.BadConfig) as e:
        _section(kind, **kw)
    assert e.value.where == where and words in str(e.value) and e.value.code == "bad_config"


def test_passphrase_file_must_be_private_and_is_never_shown(tmp_path):
    f = tmp_path / "psk"
    f.write_text("short\n")
    f.chmod(0o600)
    with pytest.raises(errors.BadConfig) as e:
        _section("wifi", ssid="park", gateway="10.0.0.1", psk_file=str(f))
    assert "short" not in str(e.value) and "5 bytes" in str(e.value)
    f.write_text(PSK)
    f.chmod(0o644)
    with pytest.raises(errors.BadConfig) as e:
        _section("wifi", ssid="park", gateway="10.0.0.1", psk_file=str(f))
    assert "readable by others" in e.value.message and "chmod 600" in e.value.hint


def test_passphrase_on_the_command_line_is_refused(capsys):
    rc, out, err = run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
                           "-p", "socket://127.0.0.1:1", "--link", "wifi", "--set", "link.psk=" + PSK, "--json")
    res = json.loads(out)
    assert rc == errors.BadConfig.exit_status and res["error"]["where"] == "--set"
    assert "never goes on the command line" in res["error"]["message"] and PSK not in out + err


def test_missing_wifi_settings_fail_before_the_board_is_touched(capsys, monkeypatch):
    monkeypatch.delenv("PARK_WIFI_PSK", raising=False)
    rc, out, err = run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
                           "-p", "socket://127.0.0.1:1", "--link", "wifi", "--wifi-ssid", "park", "--json")
    res = json.loads(out)
    assert rc == errors.BadConfig.exit_status and res["error"]["where"] == "--gateway"


def test_provisioned_wifi_config_passes_the_firmware_checks():
    cfg = provision.compose("l001", "light_pole", "stadtpark", None, {})
    cfg["link"].update(_section("wifi", ssid="park", gateway="10.0.0.1", environ={"PARK_WIFI_PSK": PSK}))
    provision.validate_host(cfg)  # the firmware's own LINK_SCHEMA
    assert cfg["link"]["kind"] == "wifi" and cfg["link"]["uart"] == 1  # the wired UART stays the fallback


def test_provision_over_wifi_writes_the_link_and_never_shows_the_passphrase(light_board, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.setenv("PARK_WIFI_PSK", PSK)
    rc, out, err = run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
                           "-p", light_board.console_pty, "--import-file", tmp_path / "l001.json",
                           "--link", "wifi", "--wifi-ssid", "park", "--gateway", "192.168.4.1:7000", "--json")
    res = json.loads(out)
    assert rc == 0, out + err
    assert res["link"] == {"kind": "wifi", "uart": 1, "ssid": "park", "host": "192.168.4.1", "port": 7000,
                           "psk": "(set)"}
    assert PSK not in out + err
    light_board.sync_flash()
    link = json.loads(light_board.read_flash("config.json"))["link"]
    assert link["kind"] == "wifi" and link["psk"] == PSK and link["host"] == "192.168.4.1"
    assert oct(os.stat(tmp_path / "l001.json").st_mode & 0o777) == "0o600"
    rc, out, err = run_cli(capsys, "provision", "--id", "l001", "--role", "light_pole", "--site", "stadtpark",
                           "-p", light_board.console_pty, "--import-file", tmp_path / "l001.json")
    assert rc == 0 and "nothing changed; link wifi (park, gateway 192.168.4.1:7000)" in out and PSK not in out + err
