"""A park on one gateway: 60 poles and 10 lockers over Wi-Fi (TCP server), 30 bins over BLE (5 connections).

The crowd is sim.devsim (CPython TEST PEERS, not the firmware), each pole and locker on its
own TCP connection, each bin behind a FakeBleRadio peripheral that holds 5 connections like
a Pi's controller. Checks: every device online and reporting, the pool never above its
slots, a downlink to a sleeping bin delivered at its next wake. Beside the crowd, one pole,
one locker and one bin run the real firmware on virtual boards: once on their link UARTs, once
over their radios (Wi-Fi to the TCP server, BLE through sim/vboard_ble.py to the pool).
"""

import asyncio
import json
import secrets

from gwharness import parse_links, provision, running, sim, until

from gateway.registry import Registry
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


async def start_crowd(d, keys, roles):
    """70 Wi-Fi devices on their own connections, said hello and reported; returns them by id."""
    wifi = d.links[0]
    await until(lambda: wifi.connected and d.links[1].connected, what="links up")
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
    return wired


async def bins_wake(bins):
    async def day(peer, n):
        await asyncio.sleep(n * 0.05)  # wakes spread like timers that drifted apart
        await peer.wake({"type": "fill", "fill": 10 + n, "temp": 11, "batt": 180})

    await asyncio.gather(*(day(b, n) for n, b in enumerate(bins.values())))


def crowd_config(tmp_path, extra_links=""):
    edges = [(a, b) for a, b in zip(POLES, POLES[1:])]
    cfg = parse_links(tmp_path, LINKS + extra_links, edges=edges)
    roles = [(i, "light_pole") for i in POLES] + [(i, "locker") for i in LOCKERS] + \
            [(i, "container_sensor") for i in BINS]
    return cfg, roles


def radio_with(bins_keys):
    radio = FakeBleRadio(max_connections=5, interval_ms=15, adv_interval_ms=50)
    bins = {i: BlePeer(sim(i, bins_keys, "container_sensor"), "B0:00:00:00:00:%02X" % n)
            for n, i in enumerate(BINS)}
    for b in bins.values():
        radio.add(b.periph)
    return radio, bins


async def test_a_hundred_devices_on_one_gateway(tmp_path):
    cfg, roles = crowd_config(tmp_path)
    keys = provision(cfg, roles)
    radio, bins = radio_with(keys)
    async with running(cfg, ble_factory=radio) as d:
        wifi, pool = d.links
        await until(lambda: wifi.connected and pool.connected, what="links up")
        wired = await start_crowd(d, keys, roles)
        await bins_wake(bins)
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


REAL = {"l061": "light_pole", "k011": "locker", "c031": "container_sensor"}


def flash(dst, did, role, key):
    """A board's flash as deploy + provision leave it (the role's template wiring, the manifests' files)."""
    from park_device.roles import template
    from sim.testbed import write_firmware

    write_firmware(dst, role)
    t = template(role)
    if role == "container_sensor":
        t["app"].update({"depth_mm": 1200, "interval_s": 30, "fast_s": 30, "report_s": 60})
    cfg = {"id": did, "site": "stadtpark", "role": role, "link": t["link"], "rt": t["rt"], "pins": t["pins"],
           "app": t["app"]}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "key.bin").write_bytes(key)
    return dst


async def test_real_firmware_of_each_kind_beside_the_crowd(tmp_path):
    """One pole, one locker and one bin running the real firmware on virtual boards (sim/vboard, their
    link UART over TCP) on the same gateway as the 100-device crowd."""
    from sim import vboard
    from sim.demo import ECHO, HEALTHY_LAMP_UV, LAMP_CS, TRIG

    boards = {}
    try:
        keys = {did: secrets.token_bytes(32) for did in REAL}
        for did, role in REAL.items():
            extra = {"ultrasonic": {"trig": TRIG, "echo": ECHO}, "distance_mm": 900} if role == "container_sensor" \
                else {}
            b = vboard.VirtualBoard(realtime=True, flash_dir=flash(tmp_path / did, did, role, keys[did]), name=did,
                                    console_pty=False, **extra)
            b.start()
            if role == "light_pole":
                b.set_adc(LAMP_CS, uv=HEALTHY_LAMP_UV)
            boards[did] = b
        links = "".join('\n[[links]]\nname = "%s"\ntype = "url"\nurl = "%s"\nreconnect_max = 1.0\n'
                        % (did, b.link_url) for did, b in boards.items())
        cfg, roles = crowd_config(tmp_path, links)
        keys.update(provision(cfg, roles))
        with Registry(cfg.registry_path) as reg:
            for did, role in REAL.items():
                reg.add(did, role, "stadtpark", keys[did])
        radio, bins = radio_with(keys)
        async with running(cfg, ble_factory=radio) as d:
            wired = await start_crowd(d, keys, roles)
            await bins_wake(bins)
            # each board's own report may follow its heartbeat: wait for both, bounded
            await until(lambda: all("heartbeat" in d.sessions.by_id[i].state for i in REAL)
                        and "light" in d.sessions.by_id["l061"].state and "locker" in d.sessions.by_id["k011"].state,
                        timeout=60, what=lambda: "real boards' reports: %s" % {i: sorted(d.sessions.by_id[i].state)
                                                                              for i in REAL})
            assert all(d.sessions.by_id[i].online for i in REAL)
            assert all(len(s.state) for s in d.sessions.devices.values() if s.id not in REAL)
            r = await d.command("l061", {"type": "light_set", "level": 80, "hold": 10}, queue_for=20)
            assert r["result"] == "ok"
            assert radio.peak <= 5 and d.links[0].info()["authenticated"] == 70
            assert not any(b.heap_refusals() for b in boards.values())  # each under its ESP32 budget
            for dev in wired.values():
                await dev.link.close()
    finally:
        for b in boards.values():
            b.stop()


RADIO_REAL = {"l062": "light_pole", "k012": "locker", "c032": "container_sensor"}


async def test_real_firmware_of_each_kind_over_its_radio_beside_the_crowd(tmp_path):
    """The same crowd, and a pole and a locker running the real firmware over Wi-Fi (the virtual
    station's TCP connection to the gateway's TCP server) and a bin over BLE (its virtual radio
    on the crowd's 5-connection FakeBleRadio): each reports, the pole takes a command, the bin
    is served by the pool and sleeps."""
    from sim import vboard
    from sim.demo import ECHO, HEALTHY_LAMP_UV, LAMP_CS, TRIG
    from sim.vboard_ble import VboardPeripheral

    psk = "stadtpark-" + secrets.token_hex(4)
    keys = {did: secrets.token_bytes(32) for did in RADIO_REAL}
    cfg, roles = crowd_config(tmp_path)
    keys.update(provision(cfg, roles))
    with Registry(cfg.registry_path) as reg:
        for did, role in RADIO_REAL.items():
            reg.add(did, role, "stadtpark", keys[did])
    radio, bins = radio_with(keys)
    boards = {}
    async with running(cfg, ble_factory=radio) as d:
        try:
            wired = await start_crowd(d, keys, roles)
            wifi = d.links[0]
            for did, role in RADIO_REAL.items():
                dst = flash(tmp_path / did, did, role, keys[did])
                doc = json.loads((dst / "config.json").read_text())
                extra = {}
                if role == "container_sensor":
                    doc["link"].update(kind="ble", uart=-1)
                    extra = {"ultrasonic": {"trig": TRIG, "echo": ECHO}, "distance_mm": 900}
                else:
                    doc["link"].update(kind="wifi", uart=-1, ssid="park", psk=psk, host="10.0.0.1", port=7000)
                    extra = {"wifi": {"ssid": "park", "psk": psk, "gateway": ("127.0.0.1", wifi.port)}}
                (dst / "config.json").write_text(json.dumps(doc))
                b = vboard.VirtualBoard(realtime=True, flash_dir=dst, name=did, console_pty=False, **extra)
                await asyncio.to_thread(b.start)
                boards[did] = b
                if role == "light_pole":
                    b.set_adc(LAMP_CS, uv=HEALTHY_LAMP_UV)
                if role == "container_sensor":
                    radio.add(VboardPeripheral(b))
            await bins_wake(bins)
            await until(lambda: all("heartbeat" in d.sessions.by_id[i].state for i in RADIO_REAL), timeout=60,
                        what=lambda: "real boards' reports: %s" % {i: sorted(d.sessions.by_id[i].state)
                                                                   for i in RADIO_REAL})
            assert "light" in d.sessions.by_id["l062"].state and "locker" in d.sessions.by_id["k012"].state
            assert "fill" in d.sessions.by_id["c032"].state
            links = {i: d.device(i)["link"].split("/")[0] for i in RADIO_REAL}
            assert links == {"l062": "wifi", "k012": "wifi", "c032": "ble"}
            r = await d.command("l062", {"type": "light_set", "level": 80, "hold": 10}, queue_for=20)
            assert r["result"] == "ok"
            await until(lambda: boards["c032"].events("deepsleep"), timeout=30, what="the bin asleep")
            assert radio.peak <= 5 and wifi.info()["authenticated"] == 72
            assert not any(b.events("fw_crash") for b in boards.values())
            assert not any(b.heap_refusals() for b in boards.values())  # each under its ESP32 budget
            for dev in wired.values():
                await dev.link.close()
        finally:
            for b in boards.values():
                await asyncio.to_thread(b.stop)
