#!/usr/bin/env python3
"""One gateway serving a park over its radios: the crowd, and the real firmware's scenarios.

    python -m benchmarks.bench_radio [--scenario all|crowd|bin|range|wave] [--duration 60] [--wifi-ms 10]
                                     [--interval-ms 30] [--json]

Scenarios (all: each in turn; --json prints one object keyed by scenario):

  crowd   60 poles and 10 lockers over Wi-Fi, 30 bins over BLE, on one gateway (below), and
          beside them REAL FIRMWARE of each kind over its radio (l061, k011 over Wi-Fi from this
          process, c031 over BLE in the gateway's; --no-real leaves them out)
  bin     REAL FIRMWARE: a container sensor on a virtual board wakes, connects over BLE
          (FakeBleRadio, --interval-ms) to the gateway's pool, reports and sleeps:
          wake-to-sleep time and radio on-time per report (benchmarks/bench_energy.py's
          measurement, its model in docs/energy.md)
  range   REAL FIRMWARE: a pole on Wi-Fi (--wifi-ms each way) goes out of range (the
          virtual access point goes away) for --away s, keeps its base level meanwhile,
          comes back: time from the access point's return to the gateway's welcome of
          its hello (link.backoff_max 16 s)
  wave    REAL FIRMWARE: three poles on a path over Wi-Fi (--wifi-ms each way); motion
          on an end pole -> the middle pole's lamp leaves its base level (pre-light),
          p50/p99 over --motions walkers; the firmware's input debounce set to 0

crowd: two processes. The GATEWAY process runs the real daemon (gateway.daemon.Daemon, the same
parts `park-gateway run` wires) with a TCP server link and a BLE pool of 5 connections
over sim.fakeble.FakeBleRadio (a FAKE of the Pi's controller: 5 connections, one
connection interval of latency per write and per notification, 100 ms advertising),
and in the same process the 30 bins (sim.devsim peers behind fake peripherals,
each waking every --bin-every s: advertise, get connected, hello, fill report, sleep).
This process (the PARK) plays the 60 poles and 10 lockers (sim.devsim peers, CPython
TEST PEERS, not the firmware), each on its own TCP connection to the gateway with
--wifi-ms of added latency each way, reporting every 10 s, and a walker every
--motion-every s at the next pole. Measured:

  gateway CPU and RSS   /proc of the gateway process over the run (it includes the 30
                        simulated bins and the fake radio: an upper bound for the gateway)
  motion -> prelight    motion event written by a pole -> prelight frame received by its
                        neighbour, p50/p99, so it includes two Wi-Fi hops of --wifi-ms
  bin serve             advertisement -> connected, connected -> disconnected (the pool's
                        own figures) and advertisement -> disconnected seen by the bin

A real Mosquitto (sim.broker) takes the uplink. Figures go into docs/benchmarks.md and
docs/gateway.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from gateway.registry import Registry

POLES = ["l%03d" % i for i in range(1, 61)]
LOCKERS = ["k%03d" % i for i in range(1, 11)]
BINS = ["c%03d" % i for i in range(1, 31)]
REAL = {"l061": "light_pole", "k011": "locker", "c031": "container_sensor"}
"""Beside the crowd, real firmware of each kind on virtual boards over its radio (--no-real: none)."""


def night_longitude() -> float:
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    lon = ((24 - (now.hour + now.minute / 60)) * 15) % 360
    return lon - 360 if lon > 180 else lon


def write_config(work: Path, broker: int) -> Path:
    edges = [list(e) for e in zip(POLES, POLES[1:])]
    text = textwrap.dedent(f"""\
        [gateway]
        state_dir = "{work}/state"
        api_socket = "{work}/api.sock"
        log_level = "warning"
        trust_clock = true
        [uplink]
        broker = "mqtt://127.0.0.1:{broker}"
        gateway_id = "bench-radio"
        [sites.stadtpark]
        latitude = 0.0
        longitude = {night_longitude()}
        timezone = "UTC"
        [sites.stadtpark.lighting]
        hops = 1
        hold = 1
        edges = {json.dumps(edges)}
        [[links]]
        name = "wifi"
        type = "tcp"
        listen = "127.0.0.1:0"
        [[links]]
        name = "ble"
        type = "ble"
        max_connections = 5
        """)
    p = work / "gateway.toml"
    p.write_text(text)
    return p


def pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 1) if xs else None


# ---------------------------------------------------------------- the gateway process

async def gateway_main(cfg_path: str, duration: float, bin_every: float, interval_ms: float,
                       real: bool = True) -> None:
    from gateway import config as config_mod
    from gateway.daemon import Daemon
    from sim.devsim import SimDevice
    from sim.fakeble import BlePeer, FakeBleRadio

    cfg = config_mod.load(cfg_path)
    radio = FakeBleRadio(max_connections=5, interval_ms=interval_ms, adv_interval_ms=100)
    with Registry(cfg.registry_path) as reg:
        peers = [BlePeer(SimDevice(i, reg.find(i).key, "container_sensor"), "B0:00:00:00:00:%02X" % n)
                 for n, i in enumerate(BINS)]
    for p in peers:
        radio.add(p.periph)
    d = Daemon(cfg, ble_factory=radio)
    task = asyncio.create_task(d.run())
    while not (d.ready.is_set() and d.links and d.links[0].connected):
        await asyncio.sleep(0.01)
    wifi, pool = d.links
    real_bin = await asyncio.to_thread(start_real_bin, Path(cfg.state_dir).parent, radio,
                                       asyncio.get_running_loop()) if real else None
    print(json.dumps({"port": wifi.port}), flush=True)
    seen: list[float] = []

    async def life(n, peer):
        await asyncio.sleep(bin_every * n / len(peers))
        end = time.monotonic() + duration
        while time.monotonic() < end:
            t = time.monotonic()
            _c, total = await peer.wake({"type": "fill", "fill": n, "temp": 10, "batt": 180}, linger=0.1)
            seen.append(total)
            await asyncio.sleep(max(0.0, bin_every - (time.monotonic() - t)))

    await asyncio.gather(*(life(n, p) for n, p in enumerate(peers)))
    st = pool.serve_times
    print(json.dumps({"bins": {
        "wakes": len(seen), "served": pool.counters["served"], "connect_failed": pool.counters["connect_failed"],
        "peak_connections": radio.peak, "refused_by_controller": radio.refused,
        "advert_to_connected_ms": {"p50": pct([a for a, _ in st], 0.5), "p99": pct([a for a, _ in st], 0.99)},
        "connected_ms": {"p50": pct([b for _, b in st], 0.5), "p99": pct([b for _, b in st], 0.99)},
        "advert_to_asleep_ms": {"p50": pct(seen, 0.5), "p99": pct(seen, 0.99)}}}), flush=True)
    if real_bin is not None:
        print(json.dumps({"real": {i: real_state(d, i) for i in REAL}}), flush=True)
        await asyncio.to_thread(real_bin.stop)
    d.stop()
    await task


def real_state(d, did: str) -> dict:
    dev = d.device(did) or {}
    return {"online": bool(dev.get("online")), "link": (dev.get("link") or "").split("/")[0],
            "reports": sorted((dev.get("state") or {}))}


def real_board(work: Path, did: str, role: str, key: bytes, wifi_gateway=None):
    """A board running the real firmware as the demo provisions it (sim/demo.py): its radio link,
    the reference wiring, healthy inputs."""
    from sim import demo, vboard

    app, extra = {}, {}
    if role == "container_sensor":
        app = {"depth_mm": 1200, "interval_s": 30, "fast_s": 30, "report_s": 60}
        extra = {"ultrasonic": {"trig": demo.TRIG, "echo": demo.ECHO}, "distance_mm": 800}
    elif role == "locker":
        app = {"occupancy": True}
    psk = "bench-radio-psk"
    bk = secrets.token_bytes(32) if role == "locker" else None
    flash = demo._flash(work / ("flash-" + did), did, role, key, app, bk, demo.radio_link(role, psk))
    if wifi_gateway is not None:
        extra["wifi"] = {"ssid": demo.WIFI_AP, "psk": psk, "gateway": wifi_gateway}
    b = vboard.VirtualBoard(realtime=True, flash_dir=flash, name=did, console_pty=False, **extra)
    b.start()
    if role == "light_pole":
        b.set_adc(demo.LAMP_CS, uv=demo.HEALTHY_LAMP_UV)
    elif role == "container_sensor":
        b.set_adc(demo.TEMP, uv=640_000)
        b.set_adc(demo.BATT, uv=demo.BATT_UV)
    elif role == "locker":
        for n in demo.DOORS:
            b.set_pin(demo.DOORS[n], 0)
            b.set_pin(demo.OCC[n], 1)
    return b


def start_real_bin(work: Path, radio, loop):
    from sim.vboard_ble import VboardPeripheral

    with Registry(str(work / "state" / "registry.sqlite")) as reg:
        key = reg.find("c031").key
    b = real_board(work, "c031", "container_sensor", key)
    radio.add(VboardPeripheral(b, loop=loop))
    return b


# ---------------------------------------------------------------- this process: the park

def proc_cpu_s(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def park(a) -> dict:
    from sim.broker import Mosquitto
    from sim.devsim import SimDevice, SimLink

    work = Path(tempfile.mkdtemp(prefix="bench-radio-"))
    keys = {i: secrets.token_bytes(32) for i in POLES + LOCKERS + BINS + (list(REAL) if a.real else [])}
    with Mosquitto() as broker:
        cfg = write_config(work, broker.port)
        (work / "state").mkdir(mode=0o700)
        with Registry(str(work / "state" / "registry.sqlite")) as reg:
            for i, k in keys.items():
                reg.add(i, {"l": "light_pole", "k": "locker", "c": "container_sensor"}[i[0]], "stadtpark", k)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.bench_radio", "--gateway", str(cfg), "--duration", str(a.duration),
            "--bin-every", str(a.bin_every), "--interval-ms", str(a.interval_ms), *(() if a.real else ("--no-real",)),
            stdout=asyncio.subprocess.PIPE)
        boards, hop = [], None
        try:
            port = json.loads(await asyncio.wait_for(proc.stdout.readline(), 90))["port"]
            if a.real:  # the real pole and locker over Wi-Fi, through an access point's latency
                hop = WifiHop(("127.0.0.1", port), a.wifi_ms)
                gw = await hop.start()
                for i, role in REAL.items():
                    if role != "container_sensor":
                        boards.append(await asyncio.to_thread(real_board, work, i, role, keys[i], gw))
            devs = {}
            for i in POLES + LOCKERS:
                link = await SimLink.tcp_client("127.0.0.1", port, a.wifi_ms / 1000)
                devs[i] = link.add(SimDevice(i, keys[i], "light_pole" if i[0] == "l" else "locker"))
            await asyncio.gather(*(dev.hello(timeout=60) for dev in devs.values()))
            asked: dict[str, float] = {}
            lat: list[float] = []

            def prelit(pole):
                def on_command(msg):
                    t0 = asked.pop(pole, None)
                    if msg["type"] == "prelight" and t0 is not None:
                        lat.append(time.monotonic() - t0)
                return on_command

            for n, p in enumerate(POLES):
                devs[p].on_command = prelit(p)
            cpu0, t0 = proc_cpu_s(proc.pid), time.monotonic()
            rss = [proc_rss_kb(proc.pid)]
            k = 0
            next_report = 0.0
            while time.monotonic() - t0 < a.duration:
                now = time.monotonic()
                if now >= next_report:  # every device reports every 10 s, spread over the 10 s
                    next_report = now + 10
                    for m, (i, dev) in enumerate(devs.items()):
                        msg = ({"type": "light", "level": 10, "state": 1, "ambient": 3, "lamp_ma": 150} if i[0] == "l"
                               else {"type": "locker", "open": 0, "locked": 255, "occupied": 3, "pending": 0})
                        asyncio.get_running_loop().call_later(10 * m / len(devs), dev.send, msg)
                    rss.append(proc_rss_kb(proc.pid))
                k = (k + 7) % (len(POLES) - 2) + 1  # a walker somewhere along the path
                here, ahead = POLES[k], POLES[k + 1]
                asked[ahead] = time.monotonic()
                devs[here].event_nowait({"type": "motion", "count": 1, "t": int(time.time())})
                await asyncio.sleep(a.motion_every)
            cpu = proc_cpu_s(proc.pid) - cpu0
            wall = time.monotonic() - t0
            rss.append(proc_rss_kb(proc.pid))
            bins = json.loads(await asyncio.wait_for(proc.stdout.readline(), a.duration + 120))["bins"]
            real = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))["real"] if a.real else None
            await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for b in boards:
                await asyncio.to_thread(b.stop)
            if hop is not None:
                hop.close()
    return {"devices": len(keys), "duration_s": round(wall, 1), "load_average": os.getloadavg(), "wifi_latency_ms_each_way": a.wifi_ms,
            "ble_interval_ms": a.interval_ms,
            "gateway_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
            "gateway_rss_kb": {"start": rss[0], "max": max(rss), "end": rss[-1]},
            "motion_to_neighbour_prelight_ms": {"n": len(lat), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                                                "mean": round(statistics.mean(lat) * 1000, 1) if lat else None},
            "bins": bins, "real_firmware_over_radio": real}


# ---------------------------------------------------------------- real firmware scenarios

class WifiHop:
    """A park access point's latency on a board's TCP connection: a loopback proxy that hands
    each chunk on `ms` later, in order, both ways."""

    def __init__(self, target: tuple[str, int], ms: float):
        self.target, self.delay = target, ms / 1000
        self.server = None
        self.port = 0

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return "127.0.0.1", self.port

    async def _conn(self, r, w) -> None:
        try:
            gr, gw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        await asyncio.gather(self._pipe(r, gw), self._pipe(gr, w), return_exceptions=True)

    async def _pipe(self, r, w) -> None:
        q: asyncio.Queue = asyncio.Queue()

        async def late():
            loop = asyncio.get_running_loop()
            while True:
                at, data = await q.get()
                if data is None:
                    break
                await asyncio.sleep(max(0.0, at - loop.time()))
                w.write(data)
        task = asyncio.create_task(late())
        try:
            while data := await r.read(4096):
                q.put_nowait((asyncio.get_running_loop().time() + self.delay, data))
        finally:
            q.put_nowait((0, None))
            await task
            w.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


FW_CONFIG = """\
[gateway]
state_dir = "{work}/state"
api_socket = "{work}/api.sock"
log_level = "error"
trust_clock = true
[uplink]
broker = "mqtt://127.0.0.1:{broker}"
gateway_id = "bench-radio-fw"
[sites.stadtpark]
latitude = 0.0
longitude = {lon}
timezone = "UTC"
[sites.stadtpark.lighting]
hops = 1
base = 20
prelight = 70
hold = 1
edges = [["l001", "l002"], ["l002", "l003"]]
[web]
listen = ""
[[links]]
name = "wifi"
type = "tcp"
listen = "127.0.0.1:0"
"""
POLE_PINS = {"lamp": 25, "motion": 27, "ambient": 34}
MOTION, LAMP, AMBIENT = 27, 25, 34


async def fw_gateway(work: Path, broker: int, devices: list[str]):
    from gateway import config as config_mod
    from gateway.daemon import Daemon

    (work / "state").mkdir(mode=0o700, exist_ok=True)
    cfg = config_mod.parse(FW_CONFIG.format(work=work, broker=broker, lon=night_longitude()), "gateway.toml")
    with Registry(cfg.registry_path) as reg:
        for i in devices:
            reg.add(i, "light_pole", "stadtpark", pole_key(i))
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.ready.wait(), 30)
    while not d.links[0].port:
        await asyncio.sleep(0.02)
    return d, task


def pole_key(did: str) -> bytes:
    return hashlib.sha256(b"bench-radio " + did.encode()).digest()


def pole_board(work: Path, did: str, gateway: tuple[str, int], psk: str = "stadtpark-psk"):
    from sim import vboard
    from sim.testbed import deploy_tree

    lon = round(night_longitude() * 100)
    img = deploy_tree(work / ("img-" + did), "light_pole", did, POLE_PINS,
                      {"base": 20, "fade_up": 0, "fade_down": 200, "hold": 1, "debounce_ms": 0, "motion_gap": 1,
                       "lat": 0, "lon": lon}, None,
                      {"kind": "wifi", "uart": -1, "ssid": "park", "psk": psk, "host": "10.0.0.1", "port": 7000,
                       "backoff_max": 16})
    (img / "key.bin").write_bytes(pole_key(did))
    b = vboard.VirtualBoard(deploy_dir=img, flash_dir=work / ("flash-" + did), realtime=True, console_pty=False,
                            name=did, wifi={"ssid": "park", "psk": psk, "gateway": gateway})
    b.start()
    b.set_adc(AMBIENT, 1000)  # dark
    return b


async def until(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError("bench_radio: timed out waiting for " + what)
        await asyncio.sleep(0.01)


async def scenario_range(a) -> dict:
    from sim.broker import Mosquitto

    work = Path(tempfile.mkdtemp(prefix="bench-radio-range-"))
    with Mosquitto() as broker:
        d, task = await fw_gateway(work, broker.port, ["l001"])
        hop = WifiHop(("127.0.0.1", d.links[0].port), a.wifi_ms)
        gw = await hop.start()
        hellos: list[float] = []
        d.subscribe(lambda ev: hellos.append(time.monotonic()) if ev["kind"] == "hello" else None)
        b = await asyncio.to_thread(pole_board, work, "l001", gw)
        rows = []
        try:
            await until(lambda: hellos, 60, "the pole's first hello")
            await asyncio.sleep(2)
            base = await asyncio.to_thread(b.pwm_duty, LAMP)
            for n in range(a.rounds):
                await asyncio.to_thread(b.set_wifi, up=False)
                away = []
                t_end = time.monotonic() + a.away
                while time.monotonic() < t_end:
                    away.append(await asyncio.to_thread(b.pwm_duty, LAMP))
                    await asyncio.sleep(0.5)
                seen = len(hellos)
                t0 = time.monotonic()
                await asyncio.to_thread(b.set_wifi, up=True)
                await until(lambda: len(hellos) > seen, 60, "the pole's hello after it came back")
                r = await d.command("l001", {"type": "light_set", "level": 20, "hold": 1})
                rows.append({"away_s": a.away, "base_kept": all(x == base for x in away),
                             "rejoin_ms": round((hellos[seen] - t0) * 1000), "command": r["result"]})
                await asyncio.sleep(3)
        finally:
            await asyncio.to_thread(b.stop)
            hop.close()
            d.stop()
            await asyncio.wait_for(task, 15)
    rj = [r["rejoin_ms"] for r in rows]
    return {"wifi_latency_ms_each_way": a.wifi_ms, "backoff_max_s": 16, "rounds": rows,
            "rejoin_ms": {"min": min(rj), "max": max(rj), "median": statistics.median(rj)}}


async def scenario_wave(a) -> dict:
    from sim.broker import Mosquitto

    work = Path(tempfile.mkdtemp(prefix="bench-radio-wave-"))
    poles = ["l001", "l002", "l003"]
    with Mosquitto() as broker:
        d, task = await fw_gateway(work, broker.port, poles)
        hop = WifiHop(("127.0.0.1", d.links[0].port), a.wifi_ms)
        gw = await hop.start()
        boards = {}
        lat: list[float] = []
        try:
            for p in poles:
                boards[p] = await asyncio.to_thread(pole_board, work, p, gw)
            await until(lambda: all((d.device(p) or {}).get("online") for p in poles), 60, "three poles online")
            await asyncio.sleep(3)
            mid = boards["l002"]
            base = await asyncio.to_thread(mid.pwm_duty, LAMP)
            for n in range(a.motions):
                end = boards["l001" if n % 2 == 0 else "l003"]
                t0 = time.monotonic()
                await asyncio.to_thread(end.set_pin, MOTION, 1)
                try:
                    while await asyncio.to_thread(mid.pwm_duty, LAMP) == base:
                        if time.monotonic() - t0 > 5:
                            raise TimeoutError
                        await asyncio.sleep(0.002)
                    lat.append(time.monotonic() - t0)
                except TimeoutError:
                    pass
                await asyncio.to_thread(end.set_pin, MOTION, 0)
                await until(lambda: mid.pwm_duty(LAMP) == base, 10, "the middle pole back at its base level")
                await asyncio.sleep(1.2)  # the end pole's own hold and fade
        finally:
            for b in boards.values():
                await asyncio.to_thread(b.stop)
            hop.close()
            d.stop()
            await asyncio.wait_for(task, 15)
    return {"wifi_latency_ms_each_way": a.wifi_ms, "motions": a.motions, "prelit": len(lat),
            "motion_to_neighbour_prelight_ms": {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                                                "max": pct(lat, 1.0)}}


async def scenario_bin(a) -> dict:
    from benchmarks.bench_energy import measure

    out = {}
    for ms in sorted({a.interval_ms, 50.0}):
        r = await measure(argparse.Namespace(wakes=3, interval_ms=ms))  # first boot, a report, a quiet wake
        out["ble_interval_%d_ms" % ms] = {"report_wake_ms": r["report_wake_ms"], "quiet_wake_ms": r["quiet_wake_ms"],
                                          "pool_served": r["pool_served"]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--scenario", choices=("all", "crowd", "bin", "range", "wave"), default="all")
    ap.add_argument("--duration", type=float, default=60.0, help="crowd: seconds of the run")
    ap.add_argument("--wifi-ms", type=float, default=10.0, help="added latency each way on every Wi-Fi connection")
    ap.add_argument("--interval-ms", type=float, default=30.0, help="BLE connection interval of the fake radio")
    ap.add_argument("--bin-every", type=float, default=10.0, help="crowd: s between a bin's wakes (a day compressed)")
    ap.add_argument("--motion-every", type=float, default=0.2, help="crowd: s between walkers")
    ap.add_argument("--no-real", dest="real", action="store_false",
                    help="crowd: without the real firmware of each kind beside the crowd")
    ap.add_argument("--away", type=float, default=20.0, help="range: s out of range per round")
    ap.add_argument("--rounds", type=int, default=2, help="range: out-of-range rounds")
    ap.add_argument("--motions", type=int, default=20, help="wave: walkers")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--gateway", metavar="CONFIG", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.gateway:
        asyncio.run(gateway_main(a.gateway, a.duration, a.bin_every, a.interval_ms, a.real))
        return 0
    runs = {"crowd": park, "bin": scenario_bin, "range": scenario_range, "wave": scenario_wave}
    if a.scenario != "all":
        res = asyncio.run(runs[a.scenario](a))
    else:
        res = {name: asyncio.run(fn(a)) for name, fn in runs.items()}
    print(json.dumps(res, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
