"""A light pole over Wi-Fi: the unmodified firmware on a virtual board whose `network` and
`socket` modules are the emulated station, its TCP connection a real loopback socket to a
test peer playing the gateway's server (sim.testbed.TcpServerPort)."""
from __future__ import annotations

import contextlib

import pytest

from protocol import codes
from sim.testbed import T_2026, Peer, TcpServerPort, deploy_tree, vboard_available

from test_light_bench import DARK, PINS, duty_for

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not vboard_available(), reason="virtual boards not installed: run ./dev setup"),
]

KID = b"l001"
LAMP, MOTION, AMBIENT = PINS["lamp"], PINS["motion"], PINS["ambient"]
PSK = "stadtpark-psk-1"
WIFI = {"kind": "wifi", "uart": -1, "ssid": "park", "psk": PSK, "host": "10.0.0.1", "port": 4710, "backoff_max": 16}
APP = {"base": 20, "fade_up": 400, "fade_down": 1000, "hold": 5, "dn_dwell_s": 5}


@contextlib.contextmanager
def pole(tmp_path, link=None, ap=True, serial=False):
    from sim import vboard
    srv = TcpServerPort()
    img = deploy_tree(tmp_path / "img", "light_pole", KID.decode(), PINS, APP, None, dict(WIFI, **(link or {})))
    wifi = {"ssid": "park", "psk": PSK, "gateway": srv.address} if ap else None
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", console_pty=False, name="l001",
                             wifi=wifi, start_time=T_2026) as b:  # a winter night
        b.set_adc(AMBIENT, DARK)
        p = Peer(b, KID, port=None if serial else srv)
        try:
            yield b, p, srv
        finally:
            p.close()
            srv.close()


def test_pole_talks_over_wifi_to_a_real_tcp_server(tmp_path):
    with pole(tmp_path) as (b, p, srv):
        p.connect()
        assert srv.accepts == 1 and b.events("wifi_tcp")[0] == dict(b.events("wifi_tcp")[0], host="10.0.0.1",
                                                                     port=4710)
        p.run(3000)
        assert b.pwm_duty(LAMP) == duty_for(20)
        b.set_pin(MOTION, 1)
        p.run(1000)
        assert b.pwm_duty(LAMP) == 65535 and p.of("motion")
        assert p.command({"type": "prelight", "level": 50, "hold": 10, "hops": 1}) == {"type": "ack", "ref": p.seq - 1}
        assert not any(PSK in ln for ln in b.log()) and not b.events("fw_crash")


def test_wifi_down_pole_keeps_lighting_and_reconnects_with_backoff(tmp_path):
    with pole(tmp_path) as (b, p, srv):
        p.connect()
        p.run(3000)
        b.set_wifi(up=False)              # the access point is gone
        p.run(60_000, step=500)
        assert b.pwm_duty(LAMP) == duty_for(20)  # the path stays lit at its base level
        b.set_pin(MOTION, 1)               # and a walker still gets light at once
        p.run(500)
        assert b.pwm_duty(LAMP) == 65535
        b.set_pin(MOTION, 0)
        joins = [e["t_ms"] for e in b.events("wifi") if e["status"] == 201]  # no AP found
        gaps = [y - x for x, y in zip(joins, joins[1:])]
        assert len(joins) >= 4 and gaps == sorted(gaps) and gaps[-1] > gaps[0]  # exponential backoff
        assert max(gaps) <= 2000 + 16_000 + 100  # join time + the backoff cap (link.backoff_max)
        hellos = len(p.of("hello"))
        b.set_wifi(up=True)
        p.run(25_000, step=200)
        assert srv.accepts == 2 and len(p.of("hello")) > hellos  # a new connection: hello again
        p.clear()
        assert p.command({"type": "prelight", "level": 50, "hold": 10, "hops": 1})["type"] == "ack"
        assert not b.events("fw_crash")


@pytest.mark.parametrize("bad", [{"psk": ""}, {"ssid": ""}, {"host": ""}, {"psk": "short"}])
def test_missing_wifi_credentials_fault_and_serial_fallback(tmp_path, bad):
    with pole(tmp_path, dict(bad, uart=1), serial=True) as (b, p, srv):
        p.connect()
        p.run(2000)
        faults = [(f["code"], f["value"]) for f in p.of("fault")]
        assert faults == [(codes.F_RADIO, codes.RADIO_NO_CREDENTIALS)]
        assert srv.accepts == 0 and not b.events("wifi_tcp")
        assert not any(PSK in ln for ln in b.log())


def test_wrong_passphrase_never_connects_and_is_never_logged(tmp_path):
    with pole(tmp_path, {"psk": "not-the-park-psk"}) as (b, p, srv):
        p.run(20_000, step=500)
        assert [e["status"] for e in b.events("wifi")][:2] == [202, 202]  # wrong password, retried
        assert srv.accepts == 0 and b.pwm_duty(LAMP) == duty_for(20)
        assert not any("not-the-park-psk" in ln or PSK in ln for ln in b.log())


def test_radio_only_pole_without_credentials_still_lights_its_path(tmp_path):
    # no UART wired (link.uart -1) and no passphrase: nothing to talk through, the pole works on its own
    with pole(tmp_path, {"psk": ""}) as (b, p, srv):
        p.run(5000)
        assert b.pwm_duty(LAMP) == duty_for(20)
        b.set_pin(MOTION, 1)
        p.run(1000)
        assert b.pwm_duty(LAMP) == 65535
        assert "link: the wifi radio cannot be used (fault radio, 3); serial if wired" in b.log()
        assert srv.accepts == 0 and not b.events("fw_crash")
