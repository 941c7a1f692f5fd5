"""`sim demo`: a simulated Stadtpark on this machine, with live status until stopped.

What runs: a local Mosquitto (unless --broker points at one), the real gateway
daemon (same code as `park-gateway run`), and virtual boards (sim/vboard) running
the real firmware from firmware/ in the real MicroPython VM: six light poles on
a forked path, three waste containers and a locker bank. A scripted "park life"
moves walkers along the path, fills a container, pulls a container's sensor and
sends one unlock through the backbone's command topic.

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
from gateway.registry import Registry, write_private

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


def _flash(dst: Path, did: str, role: str, key: bytes, app: dict, booking_key: bytes | None = None) -> Path:
    """A board's flash as a technician's deploy + provision leaves it (docs/firmware.md layout)."""
    from park_device.roles import template

    from sim.testbed import write_firmware

    dst.mkdir(parents=True, exist_ok=True)
    write_firmware(dst, role)
    t = template(role)
    t["app"].update(app)
    if role == "locker":
        t["pins"].update({"occ%d" % n: p for n, p in OCC.items()})
    cfg = {"id": did, "site": SITE, "role": role, "link": t["link"], "rt": t["rt"], "pins": t["pins"], "app": t["app"]}
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "key.bin").write_bytes(key)
    if booking_key is not None:
        (dst / "booking.key").write_bytes(booking_key)
    return dst


class VirtualPark:
    """The real firmware on virtual boards; peripheral inputs driven by the park-life script."""

    label = "virtual boards running the real firmware (sim/vboard, MicroPython VM)"

    def __init__(self, work: Path, keys: dict, lat: float, lon: float):
        self.work, self.keys, self.lat, self.lon = work, keys, lat, lon
        self.boards = {}

    def start(self) -> dict[str, str]:
        from sim import vboard

        urls = {}
        for did, role in devices():
            app, extra = {}, {}
            if role == "light_pole":
                app = {"lat": round(self.lat * 100), "lon": round(self.lon * 100)}
            elif role == "container_sensor":
                app = {"depth_mm": 1200, "interval_s": 30, "fast_s": 30, "report_s": 60}
                extra = {"ultrasonic": {"trig": TRIG, "echo": ECHO}, "distance_mm": 900}
            elif role == "locker":
                app = {"occupancy": True}
            bk = secrets.token_bytes(32) if role == "locker" else None
            flash = _flash(self.work / ("flash-" + did), did, role, self.keys[did], app, bk)
            b = vboard.VirtualBoard(realtime=True, flash_dir=flash, name=did, console_pty=False, **extra)
            b.start()
            if role == "light_pole":
                b.set_adc(LAMP_CS, uv=0 if did == "l004" else HEALTHY_LAMP_UV)  # l004: a dead lamp
            elif role == "container_sensor":
                b.set_adc(TEMP, uv=500_000 + 10_000 * 14)  # TMP36: 0.5 V + 10 mV/°C -> 14 °C
            elif role == "locker":
                for n in DOORS:
                    b.set_pin(DOORS[n], 0)  # closed
                    b.set_pin(OCC[n], 0 if n == 4 else 1)  # compartment 4 is empty
            self.boards[did] = b
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

    def __init__(self, work: Path, keys: dict, lat: float, lon: float):
        self.keys = keys
        self.links = {}
        self.devs = {}
        self.fills = {c: 30 for c in CONTAINERS}
        self.occ = 0b0111
        self._task = None

    async def start_async(self) -> dict[str, str]:
        from sim.devsim import SimDevice, SimLink

        urls = {}
        for did, role in devices():
            link = await SimLink.tcp_server()
            self.links[did] = link
            self.devs[did] = link.add(SimDevice(did, self.keys[did], role))
            urls[did] = link.url
        self._task = asyncio.create_task(self._life())
        return urls

    async def _life(self) -> None:
        await asyncio.gather(*(l.connected.wait() for l in self.links.values()))
        for d in self.devs.values():
            with contextlib.suppress(TimeoutError):
                await d.hello(timeout=10)
        n = 0
        while True:
            n += 1
            for c in CONTAINERS:
                f = self.fills[c]
                self.devs[c].send({"type": "fill", "fill": f, "temp": 14, "batt": 185})
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


def write_config(work: Path, broker: str, urls: dict[str, str], lat: float, lon: float) -> str:
    links = "".join('[[links]]\nname = "%s"\ntype = "url"\nurl = "%s"\nreconnect_max = 1.0\n\n' % (d, u)
                    for d, u in urls.items())
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
        loan_hours = 0.025

        [roles.container_sensor]
        heartbeat = 120

        """).format(state=work / "state", sock=work / "api.sock", broker=broker, lat=lat, lon=lon,
                    edges="[" + ", ".join('["%s", "%s"]' % e for e in EDGES) + "]") + links
    path = work / "gateway.toml"
    path.write_text(text)
    return str(path)


def night_longitude() -> float:
    now = dt.datetime.now(dt.timezone.utc)
    lon = ((24 - (now.hour + now.minute / 60)) * 15) % 360
    return lon - 360 if lon > 180 else lon


async def park_life(park, uplink_url: str, stop: asyncio.Event, say) -> None:
    """Walkers along the path, one container filling up, one sensor failing, one remote unlock."""
    t0 = time.monotonic()
    fill_mm = 900
    unlocked = False
    k = 0
    while not stop.is_set():
        k += 1
        say("walker enters the path at %s" % WALK[0])
        for pole in WALK:
            await park.motion(pole, True)
            await asyncio.sleep(1.0)
            await park.motion(pole, False)
            await asyncio.sleep(2.0)
            if stop.is_set():
                return
        fill_mm = max(260, fill_mm - 150)
        await park.fill("c001", fill_mm)
        await park.fill("c002", 700 + 7 * (k % 5))  # a bin whose level barely moves
        if k == 2:
            await park.fill("c003", None)  # the ultrasonic sensor stops answering
        if not unlocked and time.monotonic() - t0 > 10:
            unlocked = True
            asyncio.create_task(_lending(park, uplink_url, say))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 6)


async def _lending(park, broker: str, say) -> None:
    """A borrower: unlock through the backbone, open the door, take the item, close; the loan runs."""
    if await _remote_unlock(broker, say):
        await park.door(2, True)
        await asyncio.sleep(1.5)
        await park.occupied(2, False)
        await asyncio.sleep(1.0)
        await park.door(2, False)
        say("k001: item taken from compartment 2 (loan period in this demo: 90 s)")


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
            say("backbone: unlock k001 compartment 2 requested (id demo-1)")
            async with asyncio.timeout(30):
                async for m in c.messages:
                    say("backbone: response %s" % m.payload.decode())
                    return json.loads(m.payload).get("ok") is True
    except Exception as e:  # noqa: BLE001 - the demo goes on without it
        say("backbone: unlock demo failed: %s" % e)
    return False


def render(st: dict, devs: list[dict], notes: list[str], label: str, started: float) -> str:
    bb = st["backbone"]
    light = st["control"]["lighting"].get(SITE, {})
    lines = ["sim demo: Stadtpark  (%ds)   devices: %s" % (time.time() - started, label),
             "backbone %s %s | outbox %d | published %d | dropped %d | site %s, level cap %s" % (
                 bb["broker"], "connected" if bb["connected"] else "DISCONNECTED", bb["outbox_depth"],
                 bb["published"], bb.get("dropped_total", 0), "dark" if light.get("dark") else "daylight",
                 light.get("cap")),
             "%-5s %-16s %-8s %s" % ("ID", "ROLE", "STATE", "LAST REPORT")]
    for d in devs:
        s = d.get("state") or {}
        if "light" in s:
            x = s["light"]
            rep = "lamp %3d%%  %4d mA  state %s" % (x["level"], x["lamp_ma"], x["state"])
        elif "fill" in s:
            x = s["fill"]
            rep = "fill %s%%  %d°C" % ("--" if x["fill"] is None else x["fill"], x["temp"])
        elif "locker" in s:
            x = s["locker"]
            rep = "occupied %s  open %s" % (bin(x["occupied"]), bin(x["open"]))
        else:
            rep = "-"
        lines.append("%-5s %-16s %-8s %s" % (d["id"], d["role"], "online" if d["online"] else "offline", rep))
    pk = st["control"]["pickups"].get(SITE, [])
    lines.append("pickups: " + (", ".join("%s (%s)" % (p["id"], p["level"]) for p in pk) or "none"))
    faults = light.get("lamp_faults") or []
    lines.append("lamp faults: " + (", ".join(faults) or "none"))
    lines.append("recent:")
    lines += ["  " + n for n in notes[-12:]]
    return "\n".join(lines)


async def run(duration: float, broker: str | None, state_dir: str | None, as_json: bool, night: bool) -> int:
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
    park = VirtualPark(work, keys, lat, lon) if ok else SimulatedPark(work, keys, lat, lon)
    if not ok:
        say("FALLBACK: %s -> using the CPython device simulator, NOT the firmware" % why)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    daemon = None
    task = None
    try:
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
        daemon = Daemon(cfg)
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)

        def watch(ev: dict) -> None:
            if ev["kind"] == "alert":
                say("ALERT %s %s %s" % (ev["device"], ev["alert"], json.dumps(ev["body"], default=str)))
            elif ev["kind"] == "event":
                m = ev["msg"]
                say("event %s %s %s" % (ev["device"], m["type"], " ".join(
                    "%s=%s" % (k, v) for k, v in m.items() if k not in ("type", "eid", "t"))))
            elif ev["kind"] in ("online", "offline", "hello", "resync"):
                say("%s %s" % (ev["device"], ev["kind"]))

        daemon.subscribe(watch)
        say("gateway up; config %s; try: park-gateway --socket %s status" % (cfg_path, cfg.api_socket))
        life = asyncio.create_task(park_life(park, broker, stop, say))
        started = time.time()
        end = time.monotonic() + duration if duration else None
        tty = sys.stdout.isatty() and not as_json
        while not stop.is_set() and (end is None or time.monotonic() < end):
            if task.done():
                task.result()
            st = daemon.status()
            devs = daemon.devices()
            if as_json:
                print(json.dumps({"t": time.time(), "status": st, "devices": devs, "notes": notes[-8:]},
                                 default=str), flush=True)
            else:
                screen = render(st, devs, notes, park.label, started)
                print(("\x1b[H\x1b[2J" if tty else "\n") + screen, flush=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
        stop.set()
        life.cancel()
        st = daemon.status()
        summary = {"devices_online": st["devices"]["online"], "devices": st["devices"]["total"],
                   "published": st["backbone"]["published"], "outbox_depth": st["backbone"]["outbox_depth"],
                   "prelights": daemon.control.lighting.prelights, "firmware": isinstance(park, VirtualPark)}
        print(json.dumps({"summary": summary}) if as_json else "demo finished: %s" % summary, flush=True)
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
         night: bool = False) -> int:
    if broker is not None and not broker.startswith(("mqtt://", "mqtts://")):
        print("sim demo: --broker must be mqtt://HOST:PORT", file=sys.stderr)
        return 2
    return asyncio.run(run(duration, broker, state_dir, as_json, night))
