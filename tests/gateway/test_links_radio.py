"""The park's radio links: the TCP server Wi-Fi devices connect to, and the BLE scanner + connection pool.

Devices are sim.devsim peers (CPython TEST PEERS); BLE goes through sim.fakeble.FakeBleRadio,
a fake of the Pi's controller and bleak (connection limit, connection-interval latency).
"""

import asyncio
import secrets

import pytest
from gwharness import load, provision, running, sim, until, write_config

from gateway.config import ConfigError, parse
from gateway.downlink import CommandFailed
from gateway.links import BlePool, TcpServerLink, make_link
from sim.devsim import SimDevice, SimLink
from sim.fakeble import BlePeer, FakeBlePeripheral, FakeBleRadio, park_advertisement

FILL = {"type": "fill", "fill": 40, "temp": 12, "batt": 180}


def server_cfg(tmp_path, **kw):
    link = {"type": "tcp", "listen": "127.0.0.1:0", "name": "wifi", "auth_timeout": "0.5"}
    link.update(kw)
    text = open(write_config(str(tmp_path), [link])).read().replace('auth_timeout = "0.5"', "auth_timeout = 0.5")
    return parse(text, "gateway.toml")


def pool_of(d):
    return d.links[0]


def pool_cfg(tmp_path, **kw):
    link = {"type": "ble", "name": "ble", "max_connections": 5, "idle_s": 0.2}
    link.update(kw)
    path = write_config(str(tmp_path), [])
    lines = ["[[links]]"] + ["%s = %s" % (k, '"%s"' % v if isinstance(v, str) else v) for k, v in link.items()]
    text = open(path).read().replace("[sites.stadtpark]\n", "\n".join(lines) + "\n\n[sites.stadtpark]\n", 1)
    return parse(text, "gateway.toml")


async def test_tcp_server_gives_each_device_its_connection_and_closes_strangers(tmp_path):
    cfg = server_cfg(tmp_path)
    keys = provision(cfg, [("l001", "light_pole"), ("k001", "locker")])
    async with running(cfg) as d:
        lk = d.links[0]
        assert isinstance(lk, TcpServerLink)
        await until(lambda: lk.connected, what="listening")
        devs = {}
        for did, role in (("l001", "light_pole"), ("k001", "locker")):
            link = await SimLink.tcp_client("127.0.0.1", lk.port)
            devs[did] = link.add(sim(did, keys, role))
            await devs[did].hello()
        # a stranger: a frame under a key the gateway does not know, and one forged for a known id
        r, w = await asyncio.open_connection("127.0.0.1", lk.port)
        w.write(SimDevice("x999", secrets.token_bytes(32), "light_pole").frame(FILL))
        w.write(SimDevice("l001", secrets.token_bytes(32), "light_pole").frame({"type": "motion", "count": 1,
                                                                               "eid": 1, "t": 0}))
        assert await asyncio.wait_for(r.read(), 5) == b""  # nothing answered, closed after auth_timeout
        assert lk.counters["stranger_frames"] == 2 and lk.counters["auth_timeouts"] == 1
        await asyncio.sleep(0.6)  # past auth_timeout: authenticated connections stay
        assert lk.info()["authenticated"] == 2
        await d.command("l001", {"type": "light_set", "level": 80, "hold": 10})
        await d.command("k001", {"type": "unlock", "comp": 2, "reason": "test"})
        assert [c["type"] for c in devs["l001"].commands if c["type"] != "light_profile"] == ["light_set"]
        assert [c["type"] for c in devs["k001"].commands] == ["unlock"]
        # the pole reconnects (its old socket half-open): the new connection replaces the old
        old = devs["l001"].link
        new = await SimLink.tcp_client("127.0.0.1", lk.port)
        new.add(devs["l001"])
        await devs["l001"].hello()
        await until(lambda: not old.connected.is_set(), what="old connection closed")
        assert lk.counters["replaced_connections"] == 1
        await d.command("l001", {"type": "light_set", "level": 20, "hold": 10})
        assert [c["type"] for c in devs["l001"].commands].count("light_set") == 2
        # a closed connection: commands wait for the device only when asked to (queue_for)
        new.drop_connection()
        await until(lambda: lk.info()["connections"] == 1, what="connection gone")
        with pytest.raises(CommandFailed, match="offline"):
            await d.command("l001", {"type": "light_set", "level": 30, "hold": 10})


async def test_tcp_server_write_queue_is_bounded():
    """A device that stops reading gets at most write_queue bytes queued; the rest is dropped and counted."""
    kid = b"l001"
    srv = TcpServerLink("wifi", ("127.0.0.1", 0), lambda c, env: kid, lambda c, e: None, write_queue=4096)
    task = asyncio.create_task(srv.run())
    try:
        await until(lambda: srv.connected, what="listening")
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(SimDevice("l001", b"k" * 32, "light_pole").frame(FILL))
        await until(lambda: srv.by_kid, what="bound")
        conn = srv.by_kid[kid]
        for _ in range(20000):  # ~5 MB, more than the socket buffers hold
            conn.write(b"\x55" * 250 + b"\x00")
        assert srv.counters["tx_dropped"] > 0
        assert conn.transport.get_write_buffer_size() <= 4096
        w.close()
    finally:
        srv.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_tcp_server_full_of_strangers_still_takes_a_device():
    """At max_clients a new connection takes the place of the oldest anonymous one; with none, it is refused."""
    from protocol import cose

    fill = {i: SimDevice(i, b"k" * 32, "container_sensor").frame(FILL) for i in ("c001", "c002")}
    srv = TcpServerLink("wifi", ("127.0.0.1", 0), lambda c, env: cose.parse(env).kid, lambda c, e: None,
                        max_clients=2)
    task = asyncio.create_task(srv.run())
    try:
        await until(lambda: srv.connected, what="listening")
        s1 = await asyncio.open_connection("127.0.0.1", srv.port)
        await until(lambda: srv.info()["connections"] == 1, what="first")
        s2 = await asyncio.open_connection("127.0.0.1", srv.port)
        await until(lambda: srv.info()["connections"] == 2, what="second")
        dev = await asyncio.open_connection("127.0.0.1", srv.port)  # full of strangers: the oldest goes
        assert await asyncio.wait_for(s1[0].read(), 5) == b""
        dev[1].write(fill["c001"])
        await until(lambda: srv.by_kid, what="the device bound")
        assert srv.counters["evicted_anonymous"] == 1 and srv.info()["connections"] == 2
        s2[1].write(fill["c002"])  # now both are authenticated: a third is refused
        await until(lambda: not srv.anonymous, what="second bound")
        s3 = await asyncio.open_connection("127.0.0.1", srv.port)
        assert await asyncio.wait_for(s3[0].read(), 5) == b""
        assert srv.counters["refused_connections"] == 1 and srv.info()["connections"] == 2
        for _r, w in (s2, dev, s3):
            w.close()
    finally:
        srv.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_link_config_modes(tmp_path):
    base = open(write_config(str(tmp_path), [])).read()

    def links(body):
        return parse(base.replace("[sites.stadtpark]\n", body + "\n[sites.stadtpark]\n", 1), "gw.toml")

    cfg = links('[[links]]\ntype = "tcp"\nlisten = "0.0.0.0:7000"\n[[links]]\ntype = "ble"\n')
    assert cfg.links[0].listen == "0.0.0.0:7000" and cfg.links[0].auth_timeout == 10.0
    assert cfg.links[1].address == "" and cfg.links[1].max_connections == 5

    class Sink:
        devices = {}
        on_envelope = on_frame_error = None

    assert isinstance(make_link(cfg.links[0], Sink()), TcpServerLink)
    assert isinstance(make_link(cfg.links[1], Sink()), BlePool)
    with pytest.raises(ConfigError, match=r"links\[0\].listen: must be HOST:PORT"):
        links('[[links]]\ntype = "tcp"\nlisten = "7000"\n')
    with pytest.raises(ConfigError, match="one of 'url'.*or 'listen'"):
        links('[[links]]\ntype = "tcp"\nlisten = "0.0.0.0:7000"\nurl = "tcp://a:1"\n')
    with pytest.raises(ConfigError, match=r"links\[0\].max_connections"):
        links('[[links]]\ntype = "ble"\nmax_connections = 0\n')


async def test_ble_pool_connects_on_demand_serves_and_frees_the_slot(tmp_path):
    cfg = pool_cfg(tmp_path)
    keys = provision(cfg, [("c001", "container_sensor")])
    radio = FakeBleRadio(max_connections=5, interval_ms=10, adv_interval_ms=20)
    bin1 = BlePeer(sim("c001", keys, "container_sensor"), "AA:00:00:00:00:01")
    radio.add(bin1.periph)
    stranger = radio.add(FakeBlePeripheral("AA:00:00:00:00:99"))
    stranger.advertisement = park_advertisement("c999", True)  # a park device this gateway does not know
    other = radio.add(FakeBlePeripheral("AA:00:00:00:00:98"))
    other.advertisement = b"\x02\x01\x06\x05\x09lamp"  # not a park device
    async with running(cfg, ble_factory=radio) as d:
        pool = d.links[0]
        await until(lambda: pool.counters["adverts_unknown"] and pool.counters["adverts_foreign"],
                    what="strangers' adverts")
        assert radio.connects == 0  # nobody connected while c001 sleeps
        await bin1.wake(FILL)
        assert d.sessions.by_id["c001"].state["fill"]["fill"] == 40
        assert bin1.gateway_ended == 1 and not radio.connections  # served, then disconnected by the pool
        assert pool.counters["served"] == 1 and radio.connects == 1
        await asyncio.sleep(0.2)
        assert radio.connects == 1  # asleep again: no advert, no connection


async def test_ble_pool_stays_within_its_slots_and_the_controller_limit(tmp_path):
    cfg = pool_cfg(tmp_path, max_connections=3)
    ids = ["c%03d" % i for i in range(1, 9)]
    keys = provision(cfg, [(i, "container_sensor") for i in ids])
    radio = FakeBleRadio(max_connections=7, interval_ms=10, adv_interval_ms=20)
    peers = [BlePeer(sim(i, keys, "container_sensor"), "AA:00:00:00:01:%02d" % n) for n, i in enumerate(ids)]
    for p in peers:
        radio.add(p.periph)
    async with running(cfg, ble_factory=radio) as d:
        await asyncio.gather(*(p.wake(FILL) for p in peers))
        assert all("fill" in d.sessions.by_id[i].state for i in ids)
        assert radio.peak <= 3 and radio.refused == 0


async def test_ble_pool_survives_controller_refusals(tmp_path):
    """A controller that holds fewer connections than configured refuses; the device is served at a later advert."""
    cfg = pool_cfg(tmp_path, max_connections=5)
    ids = ["c%03d" % i for i in range(1, 6)]
    keys = provision(cfg, [(i, "container_sensor") for i in ids])
    radio = FakeBleRadio(max_connections=2, interval_ms=10, adv_interval_ms=20)
    peers = [BlePeer(sim(i, keys, "container_sensor"), "AA:00:00:00:02:%02d" % n) for n, i in enumerate(ids)]
    for p in peers:
        radio.add(p.periph)
    async with running(cfg, ble_factory=radio) as d:
        await asyncio.gather(*(p.wake(FILL) for p in peers))
        assert all("fill" in d.sessions.by_id[i].state for i in ids)
        pool = d.links[0]
        assert radio.refused > 0 and pool.counters["connect_failed"] == radio.refused
        assert radio.peak == 2 and pool.counters["served"] == 5
        assert pool.counters["limit_lowered"] >= 1  # it learnt the controller's real limit
        assert radio.refused < 10, radio.refused


async def test_ble_downlink_waits_for_the_next_wake(tmp_path):
    cfg = pool_cfg(tmp_path)
    keys = provision(cfg, [("c001", "container_sensor")])
    radio = FakeBleRadio(max_connections=5, interval_ms=10, adv_interval_ms=20)
    peer = BlePeer(sim("c001", keys, "container_sensor"), "AA:00:00:00:00:01")
    radio.add(peer.periph)
    async with running(cfg, ble_factory=radio) as d:
        await peer.wake(FILL)
        with pytest.raises(CommandFailed, match="offline"):  # asleep, and the asker would not wait
            await d.command("c001", {"type": "reboot", "delay": 0})
        f = asyncio.ensure_future(d.command("c001", {"type": "reboot", "delay": 0}, queue_for=30))
        await asyncio.sleep(0.3)
        assert not f.done() and peer.dev.commands == [] and radio.connects == 1
        assert d.device("c001")["commands"][0]["state"] == "queued"
        # its next advertisement says nothing is waiting on its side; the gateway connects for the command
        await peer.wake(None, waiting=False)
        r = await asyncio.wait_for(f, 5)
        assert r["result"] == "ok" and [c["type"] for c in peer.dev.commands] == ["reboot"]
        assert radio.connects == 2
        peer.periph.advertisement = park_advertisement("c001", False)
        await asyncio.sleep(0.3)  # nothing waiting on either side: not connected
        assert radio.connects == 2 and pool_of(d).counters["adverts"] > 10


async def test_ble_pool_device_lost_mid_connection(tmp_path):
    cfg = pool_cfg(tmp_path, idle_s=5)
    keys = provision(cfg, [("c001", "container_sensor")])
    radio = FakeBleRadio(max_connections=5, interval_ms=10, adv_interval_ms=20)
    peer = BlePeer(sim("c001", keys, "container_sensor"), "AA:00:00:00:00:01")
    radio.add(peer.periph)
    async with running(cfg, ble_factory=radio) as d:
        pool = d.links[0]
        peer.periph.advertisement = park_advertisement("c001", True)
        # in the exchange: subscribed and READY written (a drop before that is a failed connect)
        await until(lambda: pool.counters["connects"], what="connected")
        peer.periph.available = False
        peer.periph.drop()  # out of range in the middle of the exchange
        await until(lambda: not pool.active, what="slot freed")
        assert pool.counters["lost"] == 1
        peer.periph.advertisement = None
        peer.periph.available = True
        await peer.wake(FILL)
        assert d.sessions.by_id["c001"].state["fill"]["fill"] == 40


def test_advertisements_are_read_by_one_function():
    from gateway.links.ble import SERVICE, parse_advert
    from sim.fakeble import advertisement_data

    assert parse_advert(advertisement_data(park_advertisement("c001", True), -70)) == ("c001", True)
    assert parse_advert(advertisement_data(park_advertisement("c001", False))) == ("c001", False)
    assert len(park_advertisement("abcdefgh", True)) == 17  # legacy advertising (31 bytes): every id fits
    assert parse_advert(advertisement_data(b"\x02\x01\x06\x05\x09c001")) is None  # no park manufacturer data
    bad = park_advertisement("c001", True).replace(b"c001", b"c/01")
    assert parse_advert(advertisement_data(bad)) is None  # not a device id
    ad = advertisement_data(b"\x03\x03\x0f\x18\x05\xff\xff\xff\x01\x02\x02\x0a\xf4", -55)
    assert ad.service_uuids == ["0000180f-0000-1000-8000-00805f9b34fb"]
    assert ad.manufacturer_data == {0xFFFF: b"\x01\x02"}
    assert ad.tx_power == -12 and ad.rssi == -55 and SERVICE not in ad.service_data


async def test_fake_radio_refuses_like_bluez_and_delays_by_the_connection_interval():
    radio = FakeBleRadio(max_connections=1, interval_ms=20)
    a, b = radio.add(FakeBlePeripheral("AA:01", mtu=23)), radio.add(FakeBlePeripheral("AA:02", mtu=23))
    ca = radio.BleakClient("AA:01")
    await ca.connect()
    with pytest.raises(Exception, match="le-connection-abort-by-local"):
        await radio.BleakClient("AA:02").connect()
    assert radio.refused == 1
    got = []
    loop = asyncio.get_running_loop()
    await ca.start_notify("7061726b-0001-4c69-6e6b-000000000003", lambda _c, d: got.append((loop.time(), bytes(d))))
    t0 = loop.time()
    a.notify(bytes(range(1, 50)))  # three chunks of at most 20 bytes, in order, one interval later
    await until(lambda: len(got) == 3, what="notifications")
    assert b"".join(d for _t, d in got) == bytes(range(1, 50)) and got[0][0] - t0 >= 0.019
    with pytest.raises(ValueError, match="exceeds MTU-3"):
        await ca.write_gatt_char("7061726b-0001-4c69-6e6b-000000000002", b"x" * 21)
    a.drop()
    assert not ca.is_connected and not radio.connections
    cb = radio.BleakClient("AA:02")
    await cb.connect()  # the slot is free again
    await cb.disconnect()
    b.available = False
    with pytest.raises(Exception, match="out of range"):
        await radio.BleakClient("AA:02").connect()


async def test_fake_radio_takes_notifications_from_another_thread():
    """A virtual board's host side may notify from its reader thread; the central gets it on its loop."""
    radio = FakeBleRadio(max_connections=1, interval_ms=5)
    p = radio.add(FakeBlePeripheral("AA:01"))
    c = radio.BleakClient("AA:01")
    await c.connect()
    got = []
    loop = asyncio.get_running_loop()
    await c.start_notify("7061726b-0001-4c69-6e6b-000000000003",
                         lambda _c, d: got.append((asyncio.get_running_loop() is loop, bytes(d))))
    import time

    await loop.run_in_executor(None, lambda: (p.notify(b"abc"), time.sleep(0.1), p.drop()))
    await until(lambda: got and not c.is_connected, what="notification and drop")
    assert got == [(True, b"abc")] and not radio.connections


async def test_ble_impostor_of_a_known_id_is_never_authenticated_and_released_after_hold_s(tmp_path):
    """Advertisements are not authenticated: a peripheral may claim a registered id and stream frames
    under a key it does not have. Its frames are counted as strangers' and change nothing; the pool
    ends the connection after hold_s although it is never quiet, and the real device is served next."""
    from protocol import codec, cose
    cfg = pool_cfg(tmp_path, hold_s=0.6)
    keys = provision(cfg, [("c001", "container_sensor")])
    radio = FakeBleRadio(max_connections=5, interval_ms=10, adv_interval_ms=20)
    fake = radio.add(FakeBlePeripheral("AA:00:00:00:00:66"))
    fake.advertisement = park_advertisement("c001", True)
    forged = codec.pack(cose.Mac(secrets.token_bytes(32)), cose.UP, b"c001", 1,
                        {"type": "fill", "fill": 99, "temp": 20, "batt": 180})

    async def chatter():
        while True:
            if fake.client is not None and fake.client._notify is not None:
                fake.notify(forged)
            await asyncio.sleep(0.05)

    async with running(cfg, ble_factory=radio) as d:
        pool = d.links[0]
        task = asyncio.create_task(chatter())
        try:
            await until(lambda: pool.counters["hold_expired"] >= 1, timeout=10, what="the impostor released")
            assert pool.counters["stranger_frames"] >= 3 and "fill" not in d.sessions.by_id["c001"].state
            assert not d.device("c001").get("online")
        finally:
            task.cancel()
        fake.advertisement = None
        real = BlePeer(sim("c001", keys, "container_sensor"), "AA:00:00:00:00:01")
        radio.add(real.periph)
        await real.wake(FILL)
        assert d.sessions.by_id["c001"].state["fill"]["fill"] == 40
