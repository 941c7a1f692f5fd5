"""`sim demo`: a simulated Stadtpark on this machine, with live status until stopped.

What runs: a local Mosquitto (unless --broker points at one), the real gateway
daemon (same code as `park-gateway run`), and virtual boards (sim/vboard) running
the real firmware from firmware/ in the real MicroPython VM: six light poles on
a forked path, three waste containers and a locker bank. They reach the gateway
over their radios, as in the park (`--links radio`, the default): the bins over
BLE through sim.fakeble.FakeBleRadio (a FAKE of the Pi's controller, 5 connections,
30 ms connection interval) to the gateway's BLE pool, the poles and the locker over
Wi-Fi (the virtual station's TCP connection, a real loopback socket) to the
gateway's TCP server. `--links serial` puts every board on its link UART instead.
A scripted story fits in the README's minute: walkers along the path (the lamp
column shows each pole's level as the wave passes), a bin filling up to a pickup,
a loan through the backbone's unlock request that becomes overdue, and l004's
dead lamp. The
daemon serves its dashboard too (`dashboard: URL` on a line of its own). On a
terminal the screen is redrawn each second; piped, the story is printed line by
line with a status line every 10 s.

If Node, the MicroPython VM or the firmware are missing, the demo says so and
uses sim.devsim instead: a CPYTHON DEVICE SIMULATOR (a test peer speaking
the protocol), not the firmware.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from gateway import config as config_mod
from gateway import eventlog, readable
from gateway.registry import Registry, write_private
from gateway.web.server import Live, snapshot

SITE = "stadtpark"
LAT, LON = 52.5146, 13.3501  # Berlin, Großer Tiergarten
POLES = ["l001", "l002", "l003", "l004", "l005", "l006"]
EDGES = [("l001", "l002"), ("l002", "l003"), ("l003", "l004"), ("l003", "l005"), ("l005", "l006")]
WALK = ["l001", "l002", "l003", "l005", "l006"]
CONTAINERS = ["c001", "c002", "c003"]
LOCKERS = ["k001"]
ROOT = Path(__file__).resolve().parents[1]

# reference wiring (park_device.roles.TEMPLATES)
LAMP, MOTION, AMBIENT, LAMP_CS = 25, 27, 34, 35
TRIG, ECHO, TEMP = 5, 18, 34
DOORS = {1: 33, 2: 13, 3: 14, 4: 4}  # switch pulled up: high = open
OCC = {1: 19, 2: 21, 3: 22, 4: 23}  # occupancy sensors: high = a parcel inside
HEALTHY_LAMP_UV = 350_000
# the bins' ultrasonic distances (1200 mm deep, 100 % at 250 mm: fill = (1200 - d) / 9.5)
FILL_MM = {"c001": 582, "c002": 700, "c003": 900}  # 65 %, 53 %, 32 % at boot
NEAR_FULL_MM, FULL_MM = 392, 280  # 85 %, 97 %
LOAN_S = 20  # the demo's loan period: overdue within the minute
LINKS = ("radio", "serial")
BATT, BATT_UV = 35, 3900 * 500  # the bins' battery divider (rt.batt_div 2000): 3.9 V, two lithium cells' worth
WIFI_AP = "stadtpark"
GATEWAY_ADDR = ("10.0.0.1", 7000)  # what a pole's config names; the virtual station connects it to the gateway
BLE_LIMIT, BLE_INTERVAL_MS, BLE_ADV_MS = 5, 30, 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBroker:
    """A Mosquitto for the demo on a free loopback port (Nagle off: QoS 1 acks are not delayed)."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.dir = workdir
        self.proc = None

    def start(self) -> str:
        exe = next((p for p in ("/usr/sbin/mosquitto", shutil.which("mosquitto") or "") if p and os.access(p, os.X_OK)),
                   None)
        if exe is None:
            raise SystemExit("sim demo: mosquitto is not installed (apt install mosquitto, or ./dev setup), "
                             "or pass --broker mqtt://HOST:PORT")
        conf = self.dir / "mosquitto.conf"
        # The log goes to stderr, into a file this process opened: started as root, mosquitto
        # switches to its own user and could not open a log file in our work directory.
        conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"
                        "log_dest stderr\n" % self.port)
        with open(self.dir / "mosquitto.log", "wb") as log:
            self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log,
                                         start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return "mqtt://127.0.0.1:%d" % self.port
            except OSError:
                time.sleep(0.05)
        raise SystemExit("sim demo: mosquitto did not start; see %s" % (self.dir / "mosquitto.log"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def firmware_ready() -> tuple[bool, str]:
    """Can virtual boards run the real firmware here? (reason if not)"""
    try:
        from sim import mpvm
        from sim import vboard  # noqa: F401
    except ImportError as e:
        return False, "sim/vboard is not importable (%s)" % e
    if not mpvm.node_available():
        return False, "Node or the MicroPython VM package is missing (run ./dev setup)"
    for role in ("common", "light_pole", "container_sensor", "locker"):
        if not (ROOT / "firmware" / role / "__init__.py").exists():
            return False, "firmware/%s is not there yet" % role
    return True, ""


def radio_link(role: str, psk: str) -> dict:
    """A board's link section over its radio, as `park-device provision --link ...` writes it: bins
    BLE, mains devices Wi-Fi to the gateway's TCP server; no UART wired, as in the park."""
    if role == "container_sensor":
        return {"kind": "ble", "uart": -1}
    return {"kind": "wifi", "uart": -1, "ssid": WIFI_AP, "psk": psk, "host": GATEWAY_ADDR[0],
            "port": GATEWAY_ADDR[1], "backoff_max": 4}


def _flash(dst: Path, did: str, role: str, key: bytes, app: dict, booking_key: bytes | None = None,
           link: dict | None = None) -> Path:
    """A board's flash as a technician's deploy + provision leaves it (docs/firmware.md layout)."""
    from park_device.roles import template

    from sim.testbed import write_firmware

    dst.mkdir(parents=True, exist_ok=True)
    write_firmware(dst, role)
    t = template(role)
    t["app"].update(app)
    if link is not None:
        t["link"] = dict(t["link"], **link)
    elif role == "container_sensor":
        t["rt"]["batt_div"] = 0  # wired, mains-powered: a board's unset battery ADC would read as a flat battery
        t["rt"]["awake_s"] = 60  # and awake until the gateway, which starts after the boards, has welcomed it
    if role == "locker":
        # pulled down, so a booting board reads every door closed and every compartment empty: no tamper alarm
        t["pins"].update({"door%d" % n: {"pin": p, "pull": "down"} for n, p in DOORS.items()})
        t["pins"].update({"occ%d" % n: {"pin": p, "pull": "down"} for n, p in OCC.items()})
    cfg = {"id": did, "site": SITE, "role": role, "link": t["link"], "rt": t["rt"], "pins": t["pins"], "app": t["app"]}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "key.bin").write_bytes(key)
    if booking_key is not None:
        (dst / "booking.key").write_bytes(booking_key)
    return dst


class VirtualPark:
    """The real firmware on virtual boards; peripheral inputs driven by the park-life script."""

    label = "virtual boards running the real firmware (sim/vboard, MicroPython VM)"

    def __init__(self, work: Path, keys: dict, lat: float, lon: float, links: str = "radio"):
        self.work, self.keys, self.lat, self.lon, self.links = work, keys, lat, lon, links
        self.boards = {}
        self.psk = secrets.token_urlsafe(12)  # the demo's Wi-Fi passphrase: in the boards' flash only

    def start(self, gateway: tuple[str, int] | None = None, radio=None, loop=None) -> dict[str, str]:
        """Boot the boards; over the radios, Wi-Fi boards reach `gateway` (the TCP server's
        address) and BLE boards join `radio` (events handed to `loop`). Returns the link
        URLs of serial boards (none over the radios)."""
        from sim import vboard
        from sim.vboard_ble import VboardPeripheral

        urls = {}
        for did, role in devices():
            app, extra = {}, {}
            if role == "light_pole":
                app = {"lat": round(self.lat * 100), "lon": round(self.lon * 100)}
            elif role == "container_sensor":
                app = {"depth_mm": 1200, "interval_s": 30, "fast_s": 30, "report_s": 60}
                extra = {"ultrasonic": {"trig": TRIG, "echo": ECHO}, "distance_mm": FILL_MM[did]}
            elif role == "locker":
                app = {"occupancy": True}
            bk = secrets.token_bytes(32) if role == "locker" else None
            link = radio_link(role, self.psk) if self.links == "radio" else None
            if link is not None and link["kind"] == "wifi":
                extra["wifi"] = {"ssid": WIFI_AP, "psk": self.psk, "gateway": gateway}
            flash = _flash(self.work / ("flash-" + did), did, role, self.keys[did], app, bk, link)
            b = vboard.VirtualBoard(realtime=True, flash_dir=flash, name=did, console_pty=False, **extra)
            b.start()
            if role == "light_pole":
                b.set_adc(LAMP_CS, uv=0 if did == "l004" else HEALTHY_LAMP_UV)  # l004: a dead lamp
            elif role == "container_sensor":
                b.set_adc(TEMP, uv=500_000 + 10_000 * 14)  # TMP36: 0.5 V + 10 mV/°C -> 14 °C
                b.set_adc(BATT, uv=BATT_UV)
                if link is not None:
                    radio.add(VboardPeripheral(b, loop=loop))
            elif role == "locker":
                for n in DOORS:
                    b.set_pin(DOORS[n], 0)  # closed
                    b.set_pin(OCC[n], 0 if n == 4 else 1)  # compartment 4 is empty
            self.boards[did] = b
            if link is None:
                urls[did] = b.link_url
        return urls

    def stop(self) -> None:
        for b in self.boards.values():
            with contextlib.suppress(Exception):
                b.stop()

    async def motion(self, pole: str, on: bool) -> None:
        await asyncio.to_thread(self.boards[pole].set_pin, MOTION, 1 if on else 0)

    async def fill(self, cid: str, distance_mm) -> None:
        await asyncio.to_thread(self.boards[cid].set_distance_mm, distance_mm)

    async def door(self, comp: int, open_: bool) -> None:
        await asyncio.to_thread(self.boards["k001"].set_pin, DOORS[comp], 1 if open_ else 0)

    async def occupied(self, comp: int, full: bool) -> None:
        await asyncio.to_thread(self.boards["k001"].set_pin, OCC[comp], 1 if full else 0)


class SimulatedPark:
    """FALLBACK: sim.devsim, a CPython device simulator (test peer), NOT the firmware."""

    label = "CPython device simulator (sim.devsim) - NOT the firmware"

    def __init__(self, work: Path, keys: dict, lat: float, lon: float, links: str = "radio"):
        self.keys = keys
        self.links = {}
        self.devs = {}
        self.bins = {}
        self.mode = links
        self.fills = {c: round((1200 - FILL_MM[c]) / 9.5) for c in CONTAINERS}
        self.occ = 0b0111
        self._task = None
        self._wakes: set[asyncio.Task] = set()

    async def start_async(self, gateway: tuple[str, int] | None = None, radio=None) -> dict[str, str]:
        """Serial: one TCP server per device that the gateway's url links connect to. Radio: poles and
        the locker connect to the gateway's TCP server, bins are BlePeers on `radio`."""
        from sim.devsim import SimDevice, SimLink
        from sim.fakeble import BlePeer

        urls = {}
        for n, (did, role) in enumerate(devices()):
            if self.mode == "radio" and role == "container_sensor":
                peer = BlePeer(SimDevice(did, self.keys[did], role), "B0:00:00:00:00:%02X" % n)
                radio.add(peer.periph)
                self.bins[did] = peer
                self.devs[did] = peer.dev
                continue
            if self.mode == "radio":
                link = await SimLink.tcp_client(gateway[0], gateway[1])
            else:
                link = await SimLink.tcp_server()
                urls[did] = link.url
            self.links[did] = link
            self.devs[did] = link.add(SimDevice(did, self.keys[did], role))
        self._task = asyncio.create_task(self._life())
        return urls

    async def _life(self) -> None:
        await asyncio.gather(*(l.connected.wait() for l in self.links.values() if hasattr(l, "connected")))
        for did, d in self.devs.items():
            if did not in self.bins:
                with contextlib.suppress(TimeoutError):
                    await d.hello(timeout=10)
        n = 0
        while True:
            n += 1
            for c in CONTAINERS:
                fill = {"type": "fill", "fill": self.fills[c], "temp": 14, "batt": 185}
                if c in self.bins:  # a wake: advertise, get connected, hello, report, sleep
                    t = asyncio.create_task(self.bins[c].wake(fill, linger=0.1))
                    self._wakes.add(t)
                    t.add_done_callback(self._wakes.discard)
                else:
                    self.devs[c].send(fill)
            for p in POLES:
                self.devs[p].send({"type": "light", "level": 10, "state": 1, "ambient": 100,
                                   "lamp_ma": 0 if p == "l004" else 350})
            self.devs["k001"].send({"type": "locker", "open": 0, "locked": 15, "occupied": self.occ, "pending": 0})
            await asyncio.sleep(5)

    def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def motion(self, pole: str, on: bool) -> None:
        if on:
            with contextlib.suppress(TimeoutError):
                await self.devs[pole].event({"type": "motion", "count": 1})

    async def fill(self, cid: str, distance_mm) -> None:
        self.fills[cid] = None if distance_mm is None else max(0, min(100, round((1200 - distance_mm) / 9.5)))

    async def door(self, comp: int, open_: bool) -> None:
        with contextlib.suppress(TimeoutError):
            await self.devs["k001"].event({"type": "door", "comp": comp, "open": open_, "authorized": True})

    async def occupied(self, comp: int, full: bool) -> None:
        self.occ = self.occ | (1 << (comp - 1)) if full else self.occ & ~(1 << (comp - 1))


def devices() -> list[tuple[str, str]]:
    return ([(p, "light_pole") for p in POLES] + [(c, "container_sensor") for c in CONTAINERS]
            + [(k, "locker") for k in LOCKERS])


RADIO_LINKS = """\
[[links]]
name = "wifi"
type = "tcp"
listen = "127.0.0.1:0"

[[links]]
name = "ble"
type = "ble"
max_connections = %d

""" % BLE_LIMIT


def write_config(work: Path, broker: str, urls: dict[str, str] | None, lat: float, lon: float) -> str:
    """gateway.toml: url links to the boards' UARTs (urls), or the radio links (None)."""
    links = RADIO_LINKS if urls is None else "".join(
        '[[links]]\nname = "%s"\ntype = "url"\nurl = "%s"\nreconnect_max = 1.0\n\n' % (d, u) for d, u in urls.items())
    text = textwrap.dedent("""\
        # generated by `sim demo`
        [gateway]
        state_dir = "{state}"
        api_socket = "{sock}"
        log_level = "warning"
        trust_clock = true  # a laptop or CI VM keeps time without NTP state the gateway can read

        [uplink]
        broker = "{broker}"
        gateway_id = "demo"
        reconnect_max_s = 2.0

        [sites.stadtpark]
        latitude = {lat}
        longitude = {lon}
        timezone = "Europe/Berlin"

        [sites.stadtpark.lighting]
        hops = 2
        base = 10
        prelight = 70
        hold = 20
        edges = {edges}
        curfew = [{{start = "01:00", end = "05:00", max = 40}}]

        [sites.stadtpark.waste]
        near_full = 80
        full = 95

        [sites.stadtpark.lockers]
        loan_hours = {loan}

        [web]
        listen = "127.0.0.1:0"

        [roles.container_sensor]
        heartbeat = 120

        """).format(state=work / "state", sock=work / "api.sock", broker=broker, lat=lat, lon=lon,
                    edges="[" + ", ".join('["%s", "%s"]' % e for e in EDGES) + "]",
                    loan=round(LOAN_S / 3600, 6)) + links
    path = work / "gateway.toml"
    path.write_text(text)
    return str(path)


def night_longitude() -> float:
    now = dt.datetime.now(dt.timezone.utc)
    lon = ((24 - (now.hour + now.minute / 60)) * 15) % 360
    return lon - 360 if lon > 180 else lon


async def park_life(park, uplink_url: str, stop: asyncio.Event, say, near_full=lambda: True) -> None:
    """The story, within a minute: walkers and the light wave, a bin filling to a pickup, a loan that
    becomes overdue (and l004's dead lamp, found when it reports). Then walkers until the end."""
    async def at(t: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, t - (time.monotonic() - t0)))
        return not stop.is_set()

    t0 = time.monotonic()
    tasks = [asyncio.create_task(_walkers(park, stop, say))]
    try:
        if await at(1):
            say("c001 is filling up (a busy afternoon at the playground); c002 and c003 slowly")
            await park.fill("c001", NEAR_FULL_MM)
            await park.fill("c002", FILL_MM["c002"] - 100)
            await park.fill("c003", FILL_MM["c003"] - 100)
        if await at(4):
            tasks.append(asyncio.create_task(_lending(park, uplink_url, say)))
        while not stop.is_set() and not near_full():  # the sensor samples every 30 s
            await at(time.monotonic() - t0 + 1)
        if not stop.is_set():
            await park.fill("c001", FULL_MM)
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()


async def _walkers(park, stop: asyncio.Event, say) -> None:
    k = 0
    while not stop.is_set():
        k += 1
        say("walker %d enters the path at %s" % (k, WALK[0]))
        for pole in WALK:
            await park.motion(pole, True)
            await asyncio.sleep(1.0)
            await park.motion(pole, False)
            await asyncio.sleep(2.0)
            if stop.is_set():
                return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 8)


async def _lending(park, broker: str, say) -> None:
    """A borrower: unlock through the backbone, open the door, take the item, close; the loan runs."""
    if await _remote_unlock(broker, say):
        await park.door(2, True)
        await asyncio.sleep(1.5)
        await park.occupied(2, False)
        await asyncio.sleep(1.0)
        await park.door(2, False)
        say("k001: item taken from compartment 2, due back in %d s (a demo loan)" % LOAN_S)


async def _remote_unlock(broker: str, say) -> bool:
    """What the city's booking backend does: a command request with a correlation id, then its response."""
    import aiomqtt
    from urllib.parse import urlsplit

    u = urlsplit(broker)
    try:
        async with aiomqtt.Client(u.hostname, u.port or 1883, identifier="demo-backbone") as c:
            await c.subscribe("park/%s/device/k001/cmd/res" % SITE, qos=1)
            await c.publish("park/%s/device/k001/cmd/req" % SITE, json.dumps(
                {"id": "demo-1", "ts": time.time(), "type": "unlock", "comp": 2,
                 "reason": "demo: parcel pickup"}), qos=1)
            say("backbone: the booking system asks to unlock k001 compartment 2 (request demo-1)")
            async with asyncio.timeout(30):
                async for m in c.messages:
                    res = json.loads(m.payload)
                    if res.get("ok"):
                        say("backbone: k001 opened compartment 2 (%s)" % res["result"].get("result"))
                    else:
                        say("backbone: unlock refused: %s: %s" % (res["error"]["code"], res["error"]["message"]))
                    return res.get("ok") is True
    except Exception as e:  # noqa: BLE001 - the demo goes on without it
        say("backbone: unlock demo failed: %s" % e)
    return False


def render(snap: dict, notes: list[str], label: str, elapsed: float, duration: float, url: str) -> str:
    """The whole screen, in words: each pole's level now (the wave), bins, lockers, the story so far."""
    site = snap["sites"][SITE]
    bb = snap["backbone"]
    light = site["lighting"]
    lines = ["park-edge demo: Stadtpark, %ds%s   devices: %s" % (elapsed, " of %ds" % duration if duration else "",
                                                                  label),
             "dashboard %s   backbone %s %s, outbox %d, %d published" % (
                 url or "(not started)", bb["broker"], "connected" if bb["connected"] else "DISCONNECTED",
                 bb["outbox_depth"], bb["published"]),
             "lights: %s%s" % ("night" if light.get("dark") else "daylight: the poles rest (--night shows the wave)",
                               ", level cap %s %%" % light.get("cap") if light.get("dark") else ""),
             ""]
    for p in site["poles"]:
        lvl = p["level"] or 0
        lines.append("  %-5s %-10s %3s  %-26s %s" % (p["id"], "#" * ((lvl + 9) // 10), "--" if p["level"] is None
                                                       else "%d%%" % lvl, p["why"],
                                                       "LAMP FAULT" if p["fault"] else ""))
    for b in site["bins"]:
        lines.append("  %-5s %-10s %3s  %s%s" % (b["id"], "#" * (((b["fill"] or 0) + 9) // 10),
                                                 "--" if b["fill"] is None else "%d%%" % b["fill"], b["status"],
                                                 ", " + b["trend"] if b["trend"] != "not enough reports" else ""))
    for k in site["lockers"]:
        lines.append("  %-5s %s" % (k["id"], "; ".join("%d %s" % (c["n"], c["text"]) for c in k["comps"])))
    lines.append("")
    lines.append("story so far:")
    lines += ["  " + n for n in notes[-12:]]
    return "\n".join(lines)


def status_line(snap: dict, elapsed: float) -> str:
    """One line for a pipe: the lamps, the bins' fill and the lockers, without repeating a screen."""
    site = snap["sites"][SITE]
    lamps = " ".join("%s %s" % (p["id"], "--" if p["level"] is None else p["level"]) for p in site["poles"])
    bins = " ".join("%s %s" % (b["id"], "--" if b["fill"] is None else "%d%%" % b["fill"]) for b in site["bins"])
    return "%6.0fs  lamps %% %s | bins %s | %d/%d online" % (elapsed, lamps, bins, snap["devices"]["online"],
                                                            snap["devices"]["total"])


def ending(st: dict, snap: dict, prelights: int, duration: float) -> str:
    site = snap["sites"][SITE]
    pk = st["control"]["pickups"].get(SITE, [])
    overdue = ["%s compartment %s" % (lid, ", ".join(map(str, k["overdue"])))
               for lid, k in st["control"]["lockers"].items() if k["overdue"]]
    return ("demo finished after %ds: %d of %d devices online, %d messages published to the backbone, %d pre-lights; "
            "pickups: %s; overdue: %s; lamp faults: %s" % (
                duration, st["devices"]["online"], st["devices"]["total"], st["backbone"]["published"], prelights,
                ", ".join("%s (%s)" % (p["id"], p["level"].replace("_", " ")) for p in pk) or "none",
                ", ".join(overdue) or "none", ", ".join(site["lighting"].get("lamp_faults") or []) or "none"))


async def run(duration: float, broker: str | None, state_dir: str | None, as_json: bool, night: bool,
              links: str = "radio") -> int:
    from gateway.daemon import Daemon

    tmp = None
    if state_dir:
        work = Path(state_dir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="park-demo-")
        work = Path(tmp)
    os.chmod(work, 0o700)
    notes: list[str] = []

    def say(msg: str) -> None:
        notes.append("%s %s" % (time.strftime("%H:%M:%S"), msg))

    local = None
    if broker is None:
        local = LocalBroker(work)
        broker = local.start()
        say("started Mosquitto on %s" % broker)
    lat, lon = (0.0, night_longitude()) if night else (LAT, LON)
    keys = {did: secrets.token_bytes(32) for did, _ in devices()}
    ok, why = firmware_ready()
    park = VirtualPark(work, keys, lat, lon, links) if ok else SimulatedPark(work, keys, lat, lon, links)
    if not ok:
        say("FALLBACK: %s -> using the CPython device simulator, NOT the firmware" % why)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    daemon = None
    task = None
    radio = None
    try:
        if links == "radio":
            from sim.fakeble import FakeBleRadio

            radio = FakeBleRadio(max_connections=BLE_LIMIT, interval_ms=BLE_INTERVAL_MS, adv_interval_ms=BLE_ADV_MS)
            cfg_path = write_config(work, broker, None, lat, lon)
        else:
            if isinstance(park, VirtualPark):
                print("sim demo: booting %d virtual boards (real firmware in MicroPython)..." % len(keys),
                      file=sys.stderr, flush=True)
                urls = await asyncio.to_thread(park.start)
            else:
                urls = await park.start_async()
            cfg_path = write_config(work, broker, urls, lat, lon)
        cfg = config_mod.load(cfg_path)
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        with Registry(cfg.registry_path) as reg:
            for did, role in devices():
                reg.add(did, role, SITE, keys[did], position=did, replace=True)
        write_private(str(work / "keys.json"), json.dumps({d: k.hex() for d, k in keys.items()}))
        daemon = Daemon(cfg, ble_factory=radio)
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)
        live = Live(720)
        daemon.subscribe(live.on_event)
        hellos = set()

        def watch(ev: dict) -> None:
            if ev["kind"] == "hello":  # ten boards saying hello is one line
                if ev["device"] in hellos:
                    return
                hellos.add(ev["device"])
                if len(hellos) == len(keys):
                    say("all %d devices said hello (firmware %s)" % (len(keys), readable.version(ev.get("fw"))))
                return
            if ev["kind"] == "online":
                return
            text = eventlog.line(ev)
            if text is not None:
                say(text)

        daemon.subscribe(watch)
        if links == "radio":  # the boards boot now: the story hears their first reports
            wifi = daemon.links[0]
            async with asyncio.timeout(10):
                while not wifi.port:
                    await asyncio.sleep(0.02)
            gw = ("127.0.0.1", wifi.port)
            if isinstance(park, VirtualPark):
                print("sim demo: booting %d virtual boards (real firmware in MicroPython), bins over BLE, "
                      "poles and the locker over Wi-Fi..." % len(keys), file=sys.stderr, flush=True)
                await asyncio.to_thread(park.start, gw, radio, loop)
            else:
                await park.start_async(gw, radio)
            say("radios: bins over BLE (fake radio, %d connections, %d ms interval), poles and k001 over Wi-Fi to "
                "the gateway's TCP server on port %d" % (BLE_LIMIT, BLE_INTERVAL_MS, wifi.port))
        url = daemon.dashboard.url if daemon.dashboard is not None else ""
        if url:
            print("dashboard: %s" % url, flush=True)
        say("gateway up; try: park-gateway --socket %s status" % cfg.api_socket)
        life = asyncio.create_task(park_life(park, broker, stop, say, lambda: bool(daemon.pickups(SITE)[SITE])))
        t0 = time.monotonic()
        end = t0 + duration if duration else None
        tty = sys.stdout.isatty() and not as_json
        shown = 0
        last_line = -10.0
        while not stop.is_set() and (end is None or time.monotonic() < end):
            if task.done():
                task.result()
            elapsed = time.monotonic() - t0
            if as_json:
                print(json.dumps({"t": time.time(), "status": daemon.status(), "devices": daemon.devices(),
                                  "notes": notes[-8:]}, default=str), flush=True)
            elif tty:
                screen = render(snapshot(daemon, live), notes, park.label, elapsed, duration, url)
                print("\x1b[H\x1b[2J" + screen, flush=True)
            else:  # a pipe or a file: the story once, and a status line every 10 s
                for n in notes[shown:]:
                    print(n, flush=True)
                shown = len(notes)
                if elapsed - last_line >= 10:
                    last_line = elapsed
                    print(status_line(snapshot(daemon, live), elapsed), flush=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0 if as_json else 1.0)
        stop.set()
        life.cancel()
        elapsed = time.monotonic() - t0
        st = daemon.status()
        summary = {"devices_online": st["devices"]["online"], "devices": st["devices"]["total"], "links": links,
                   "published": st["backbone"]["published"], "outbox_depth": st["backbone"]["outbox_depth"],
                   "prelights": daemon.control.lighting.prelights, "firmware": isinstance(park, VirtualPark),
                   "pickups": [p["id"] for p in st["control"]["pickups"].get(SITE, [])],
                   "overdue": {lid: k["overdue"] for lid, k in st["control"]["lockers"].items() if k["overdue"]},
                   "lamp_faults": st["control"]["lighting"].get(SITE, {}).get("lamp_faults", [])}
        if not as_json and not tty:
            for n in notes[shown:]:
                print(n, flush=True)
        print(json.dumps({"summary": summary}) if as_json
              else ending(st, snapshot(daemon, live), daemon.control.lighting.prelights, elapsed), flush=True)
        return 0
    finally:
        if daemon is not None:
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
        park.stop()
        if local is not None:
            local.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def main(duration: float = 0, broker: str | None = None, state_dir: str | None = None, as_json: bool = False,
         night: bool = False, links: str = "radio") -> int:
    if broker is not None and not broker.startswith(("mqtt://", "mqtts://")):
        print("sim demo: --broker must be mqtt://HOST:PORT", file=sys.stderr)
        return 2
    if links not in LINKS:
        print("sim demo: --links must be one of: %s" % ", ".join(LINKS), file=sys.stderr)
        return 2
    return asyncio.run(run(duration, broker, state_dir, as_json, night, links))
