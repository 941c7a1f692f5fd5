"""Real firmware on virtual boards, over their radios, to the real gateway: a bin over BLE
through the fake radio (sim.fakeble.FakeBleRadio holding a sim.vboard_ble.VboardPeripheral)
to the gateway's scanner + connection pool, a pole over Wi-Fi (a real loopback socket) to
the gateway's TCP server. Boards run in real time."""
from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from sim.testbed import KEY, T_2026, deploy_tree, vboard_available

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not vboard_available(), reason="virtual boards not installed: run ./dev setup"),
]

CONFIG = """\
[gateway]
state_dir = "{state}"
api_socket = "{state}/api.sock"
trust_clock = true

[uplink]
broker = "mqtt://127.0.0.1:1"
gateway_id = "gw-test"
reconnect_min_s = 0.05
reconnect_max_s = 0.5

[[links]]
type = "ble"
name = "ble"
max_connections = 5
idle_s = 0.3

[[links]]
type = "tcp"
name = "wifi"
listen = "127.0.0.1:0"

[sites.stadtpark]
latitude = 0.0
longitude = {longitude}
timezone = "UTC"

[sites.stadtpark.lighting]
base = 20
"""


def _midnight_longitude() -> float:
    """Where it is local solar midnight now: the gateway's lighting loop (real clock, sun position)
    then always sends the profile of a dark site, base 20 and full 100, as the poles' own config
    says, whatever the hour the test runs (at lon 0 it sent day or night levels by the hour)."""
    import time
    h = time.gmtime().tm_hour + time.gmtime().tm_min / 60
    return round(((-h * 15 + 180) % 360) - 180, 1)


@contextlib.asynccontextmanager
async def gateway(tmp_path, devices, **kw):
    from gateway.config import parse
    from gateway.daemon import Daemon
    from gateway.registry import Registry
    state = tmp_path / "state"
    cfg = parse(CONFIG.format(state=state, longitude=_midnight_longitude()), "gateway.toml")
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    with Registry(cfg.registry_path) as reg:
        for did, role in devices:
            reg.add(did, role, "stadtpark", KEY)
    d = Daemon(cfg, **kw)
    task = asyncio.create_task(d.run())
    try:
        await asyncio.wait_for(d.ready.wait(), 10)
        yield d
    finally:
        d.stop()
        await asyncio.wait_for(task, 10)


async def until(pred, timeout=20.0, what="condition"):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out waiting for " + what
        await asyncio.sleep(0.02)


def test_bin_over_ble_to_the_gateway_pool_then_sleeps(tmp_path):
    from sim import vboard
    from sim.fakeble import FakeBleRadio
    from sim.vboard_ble import VboardPeripheral
    img = deploy_tree(tmp_path / "img", "container_sensor", "c001", {"trig": 5, "echo": 18, "temp": 34},
                      {"depth_mm": 1200, "top_mm": 250, "temp_kind": "none"}, None, {"kind": "ble", "uart": -1})
    radio = FakeBleRadio(max_connections=5, interval_ms=30, adv_interval_ms=50)

    async def scenario():
        async with gateway(tmp_path, [("c001", "container_sensor")], ble_factory=radio) as d:
            b = vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", realtime=True,
                                    ultrasonic={"trig": 5, "echo": 18}, distance_mm=725, console_pty=False,
                                    start_time=T_2026, name="c001")
            await asyncio.to_thread(b.start)
            try:
                periph = radio.add(VboardPeripheral(b))
                await until(lambda: (d.device("c001").get("state") or {}).get("fill") is not None, what="fill")
                await until(lambda: b.events("deepsleep"), what="deep sleep")
                assert radio.connects >= 1 and not radio.connections  # served, then the slot is free
                assert d.device("c001")["state"]["fill"]["fill"] == 50
                # asleep with the radio off: switched off before the deep sleep, nothing advertised since
                assert [e.get("on") for e in b.events(("ble_radio", "deepsleep"))] == [True, False, None]
                adverts = radio.adverts
                await asyncio.sleep(0.5)
                assert periph.advertisement is None and radio.adverts == adverts and not b.ble_state["on"]
                assert not b.events("fw_crash")
            finally:
                await asyncio.to_thread(b.stop)

    asyncio.run(scenario())


def test_pole_over_wifi_to_the_gateway_tcp_server(tmp_path):
    from sim import vboard
    pins = {"lamp": 25, "motion": 27, "ambient": 34}
    link = {"kind": "wifi", "uart": -1, "ssid": "park", "psk": "stadtpark-psk", "host": "10.0.0.1", "port": 4710}

    async def scenario():
        async with gateway(tmp_path, [("l001", "light_pole")]) as d:
            srv = d.links[1]
            await until(lambda: srv.port, what="listening")
            img = deploy_tree(tmp_path / "img", "light_pole", "l001", pins, {"base": 20}, None, link)
            b = vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", realtime=True, console_pty=False,
                                    start_time=T_2026, name="l001",
                                    wifi={"ssid": "park", "psk": "stadtpark-psk", "gateway": ("127.0.0.1", srv.port)})
            await asyncio.to_thread(b.start)
            try:
                await until(lambda: d.device("l001").get("online"), what="online")
                r = await d.command("l001", {"type": "light_set", "level": 80, "hold": 10})
                assert r["result"] == "ok"
                assert not b.events("fw_crash")
            finally:
                await asyncio.to_thread(b.stop)

    asyncio.run(scenario())


def test_pole_out_of_range_keeps_its_base_level_and_rejoins_the_gateway(tmp_path):
    """The access point goes away (the pole is out of range): the pole keeps lighting its path at its
    base level and answers motion itself; back in range it reconnects to the gateway's TCP server,
    says hello again and takes commands."""
    from sim import vboard
    from test_light_bench import DARK, duty_for
    pins = {"lamp": 25, "motion": 27, "ambient": 34}
    link = {"kind": "wifi", "uart": -1, "ssid": "park", "psk": "stadtpark-psk", "host": "10.0.0.1", "port": 4710,
            "backoff_max": 2}

    async def scenario():
        async with gateway(tmp_path, [("l001", "light_pole")]) as d:
            srv = d.links[1]
            await until(lambda: srv.port, what="listening")
            hellos = []
            d.subscribe(lambda ev: hellos.append(ev) if ev["kind"] == "hello" else None)
            img = deploy_tree(tmp_path / "img", "light_pole", "l001", pins,
                              {"base": 20, "daynight": "sensor", "hold": 1, "fade_down": 100}, None, link)
            b = vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", realtime=True, console_pty=False,
                                    start_time=T_2026, name="l001",
                                    wifi={"ssid": "park", "psk": "stadtpark-psk", "gateway": ("127.0.0.1", srv.port)})
            await asyncio.to_thread(b.start)
            try:
                b.set_adc(34, DARK)
                await until(lambda: hellos and srv.info()["authenticated"] == 1, what="hello")
                await until(lambda: b.pwm_duty(25) == duty_for(20), what="base level")
                await asyncio.to_thread(b.set_wifi, up=False)
                await until(lambda: srv.info()["connections"] == 0, what="the connection to end")
                await asyncio.sleep(3)
                assert b.pwm_duty(25) == duty_for(20)  # out of range: the path stays lit
                await asyncio.to_thread(b.set_pin, 27, 1)
                await until(lambda: b.pwm_duty(25) == 65535, timeout=5, what="full light on motion, alone")
                await asyncio.to_thread(b.set_pin, 27, 0)
                seen = len(hellos)
                await asyncio.to_thread(b.set_wifi, up=True)
                await until(lambda: len(hellos) > seen and srv.info()["authenticated"] == 1, what="rejoined")
                r = await d.command("l001", {"type": "light_set", "level": 80, "hold": 10})
                assert r["result"] == "ok" and d.device("l001")["link"].startswith("wifi/")
                assert not b.events("fw_crash")
            finally:
                await asyncio.to_thread(b.stop)

    asyncio.run(scenario())
