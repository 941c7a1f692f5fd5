"""Links over real transports: a pty as a serial port (with unplug/replug), TCP reconnect, BLE through FakeBle.

The device side is sim.devsim (a CPython TEST PEER); FakeBle stands in for
the radio because there is none here.
"""

import asyncio
import os

from gwharness import connected, load, provision, running, sim, until, write_config

from sim.devsim import SimLink
from gateway.links.base import Backoff
from sim.fakeble import FakeBlePeripheral


async def test_serial_pty_unplug_and_replug_without_restart(tmp_path):
    link = SimLink.pty()
    port = str(tmp_path / "ttyPARK0")  # like /dev/serial/by-id/...: a stable name for a changing node
    os.symlink(link.slave_path, port)
    cfg = load(write_config(str(tmp_path), [{"type": "serial", "port": port, "name": "usb0"}]))
    keys = provision(cfg, [("c001", "container_sensor")])
    dev = link.add(sim("c001", keys, "container_sensor"))
    async with running(cfg) as d:
        lk = d.links[0]
        await until(lambda: lk.connected, what="serial open")
        await dev.hello()
        await dev.event({"type": "alarm", "code": 6, "comp": 0, "value": 97})
        link.unplug()
        os.unlink(port)
        await until(lambda: not lk.connected, what="unplug noticed")
        assert "EIO" in lk.last_error or "Errno 5" in lk.last_error or "hang-up" in lk.last_error
        await asyncio.sleep(0.3)  # the board is away for a while; the link keeps retrying
        link.open_pty()  # plugged back: a new tty node behind the same stable name
        os.symlink(link.slave_path, port)
        await until(lambda: lk.connected and lk.connects == 2, what="replug picked up")
        await dev.hello()  # the board rebooted on replug
        eid = await dev.event({"type": "fault", "code": 1, "value": 0})
        assert eid > 0 and d.sessions.by_id["c001"].online
        assert lk.counters["rx_frames"] >= 4
    await link.close()


async def test_tcp_link_reconnects_after_the_peer_drops(tmp_path):
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "wifi"}]))
    keys = provision(cfg, [("l001", "light_pole")])
    dev = link.add(sim("l001", keys, "light_pole"))
    async with running(cfg) as d:
        await connected(link)
        await dev.hello()
        link.drop_connection()
        await until(lambda: d.links[0].connects == 2 and link.connected.is_set(), what="reconnect")
        await dev.event({"type": "motion", "count": 1})
    await link.close()


async def test_ble_link_chunks_frames_and_reconnects_through_fakeble(tmp_path):
    periph = FakeBlePeripheral("AA:BB:CC:00:00:01", mtu=23)
    link = SimLink()
    link._write = periph.notify  # device -> gateway: notifications, chunked to MTU-3
    periph.on_write = link.feed  # gateway -> device: writes, each at most MTU-3 (FakeBle refuses more)
    cfg = load(write_config(str(tmp_path), [{"type": "ble", "address": periph.address, "name": "ble0"}]))
    keys = provision(cfg, [("k001", "locker")])
    dev = link.add(sim("k001", keys, "locker"))
    async with running(cfg, ble_factory=periph.factory) as d:
        lk = d.links[0]
        await until(lambda: lk.connected, what="BLE connected")
        w = await dev.hello()  # welcome is longer than 20 bytes: it arrived in chunks
        assert w["echo"] == dev.nonce
        periph.available = False
        periph.drop()
        await until(lambda: not lk.connected, what="drop noticed")
        await asyncio.sleep(0.3)
        assert periph.connects == 1  # out of range: connects fail, the link backs off and retries
        periph.available = True
        await until(lambda: lk.connected, what="BLE reconnected")
        r = await d.command("k001", {"type": "unlock", "comp": 1, "reason": "ble test"})
        assert r["result"] == "ok" and dev.commands[-1]["type"] == "unlock"
        assert periph.connects == 2


def test_backoff_grows_to_its_cap():
    b = Backoff(cap=2.0, base=0.1)
    xs = [b.next() for _ in range(10)]
    assert xs[0] <= 0.125 and max(xs) <= 2.5 and xs[-1] >= 1.5
    b.reset()
    assert b.next() <= 0.125


async def test_pyserial_url_link_carries_frames_both_ways_and_reconnects():
    """UrlLink (serial_for_url + one reader thread) over pyserial's socket:// transport."""
    from gateway.links.serial import UrlLink
    from protocol import cose

    link = await SimLink.tcp_server()
    got = []
    url = link.url.replace("tcp://", "socket://")
    ul = UrlLink("rfc", url, lambda lk, env: got.append(env), lambda lk, err: got.append(err), reconnect_max=0.2)
    task = asyncio.create_task(ul.run())
    try:
        await connected(link)
        # pyserial's socket:// open() discards what already arrived: write once the link says it is up
        await until(lambda: ul.connected, what="url link up")
        dev = link.add(sim("c001", {"c001": b"k" * 32}, "container_sensor"))
        frame = dev.frame({"type": "fill", "fill": 10, "temp": 5, "batt": None})
        link.write(frame)
        await until(lambda: got, what="frame through the reader thread")
        assert cose.parse(got[0]).kid == b"c001"
        seen = []
        link.feed = lambda data: seen.append(data)
        ul.write(b"\x01\x02\x00")
        await until(lambda: seen, what="frame written back")
        link.drop_connection()
        await until(lambda: ul.connects == 2 and ul.connected, timeout=10,
                    what=lambda: "reconnect (connects %d, connected %s, %s)" % (ul.connects, ul.connected, ul.last_error))
    finally:
        ul.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await link.close()
