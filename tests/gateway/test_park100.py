"""A park on one gateway: 60 poles and 10 lockers over Wi-Fi (TCP server), 30 bins over BLE (5 connections).

The crowd is sim.devsim (CPython TEST PEERS, not the firmware), each pole and locker on its
own TCP connection, each bin behind a FakeBleRadio peripheral that holds 5 connections like
a Pi's controller. Checks: every device online and reporting, the pool never above its
slots, a downlink to a sleeping bin delivered at its next wake.
"""

import asyncio

from gwharness import parse_links, provision, running, sim, until

from sim.devsim import SimLink
from sim.fakeble import BlePeer, FakeBleRadio

POLES = ["l%03d" % i for i in range(1, 61)]
LOCKERS = ["k%03d" % i for i in range(1, 11)]
BINS = ["c%03d" % i for i in range(1, 31)]
LINKS = """
[[links]]
name = "wifi"
type = "tcp"
listen = "127.0.0.1:0"

[[links]]
name = "ble"
type = "ble"
max_connections = 5
idle_s = 0.2
"""


async def test_a_hundred_devices_on_one_gateway(tmp_path):
    edges = [(a, b) for a, b in zip(POLES, POLES[1:])]
    cfg = parse_links(tmp_path, LINKS, edges=edges)
    roles = [(i, "light_pole") for i in POLES] + [(i, "locker") for i in LOCKERS] + \
            [(i, "container_sensor") for i in BINS]
    keys = provision(cfg, roles)
    radio = FakeBleRadio(max_connections=5, interval_ms=15, adv_interval_ms=50)
    bins = {i: BlePeer(sim(i, keys, "container_sensor"), "B0:00:00:00:00:%02X" % n) for n, i in enumerate(BINS)}
    for b in bins.values():
        radio.add(b.periph)
    async with running(cfg, ble_factory=radio) as d:
        wifi, pool = d.links
        await until(lambda: wifi.connected and pool.connected, what="links up")
        wired = {}
        for did, role in roles[:70]:
            link = await SimLink.tcp_client("127.0.0.1", wifi.port)
            wired[did] = link.add(sim(did, keys, role))
        await asyncio.gather(*(dev.hello(timeout=30) for dev in wired.values()))
        for did, dev in wired.items():
            if dev.role == "light_pole":
                dev.send({"type": "light", "level": 10, "state": 1, "ambient": 3, "lamp_ma": 150})
            else:
                dev.send({"type": "locker", "open": 0, "locked": 255, "occupied": 15, "pending": 0})

        async def day(peer, n):
            await asyncio.sleep(n * 0.05)  # wakes spread like timers that drifted apart
            await peer.wake({"type": "fill", "fill": 10 + n, "temp": 11, "batt": 180})

        await asyncio.gather(*(day(b, n) for n, b in enumerate(bins.values())))
        await until(lambda: all(len(s.state) for s in d.sessions.devices.values()), timeout=20,
                    what=lambda: "reports from %s" % [s.id for s in d.sessions.devices.values() if not s.state])
        assert all(s.online for s in d.sessions.devices.values())
        assert wifi.info()["authenticated"] == 70
        assert radio.peak <= 5 and radio.refused == 0 and pool.counters["served"] >= 30
        assert all(d.sessions.by_id[i].state["fill"]["fill"] == 10 + n for n, i in enumerate(BINS))

        # motion on the Wi-Fi side: the neighbours are pre-lit over their own connections
        await wired["l030"].event({"type": "motion", "count": 1})
        await until(lambda: all(any(c["type"] == "prelight" for c in wired[p].commands)
                                for p in ("l028", "l029", "l031", "l032")), what="prelights")

        # a downlink to a sleeping bin waits in the gateway and is delivered at its next wake
        sleeper = bins["c007"]
        f = asyncio.ensure_future(d.command("c007", {"type": "reboot", "delay": 0}, queue_for=60))
        await asyncio.sleep(0.5)
        assert not f.done() and sleeper.dev.commands == []
        await sleeper.wake({"type": "fill", "fill": 55, "temp": 11, "batt": 180})
        assert (await asyncio.wait_for(f, 10))["result"] == "ok"
        assert {c["type"] for c in sleeper.dev.commands} == {"reboot"}  # (a retransmission may arrive too)
        for dev in wired.values():
            await dev.link.close()
