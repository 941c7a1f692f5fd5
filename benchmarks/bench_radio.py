#!/usr/bin/env python3
"""One gateway serving a park over its radios: 60 poles and 10 lockers over Wi-Fi, 30 bins over BLE.

    python -m benchmarks.bench_radio [--duration 60] [--wifi-ms 10] [--interval-ms 30] [--json]

Two processes. The GATEWAY process runs the real daemon (gateway.daemon.Daemon, the same
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

async def gateway_main(cfg_path: str, duration: float, bin_every: float, interval_ms: float) -> None:
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
    d.stop()
    await task


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
    keys = {i: secrets.token_bytes(32) for i in POLES + LOCKERS + BINS}
    with Mosquitto() as broker:
        cfg = write_config(work, broker.port)
        (work / "state").mkdir(mode=0o700)
        with Registry(str(work / "state" / "registry.sqlite")) as reg:
            for i, k in keys.items():
                reg.add(i, {"l": "light_pole", "k": "locker", "c": "container_sensor"}[i[0]], "stadtpark", k)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.bench_radio", "--gateway", str(cfg), "--duration", str(a.duration),
            "--bin-every", str(a.bin_every), "--interval-ms", str(a.interval_ms), stdout=asyncio.subprocess.PIPE)
        try:
            port = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))["port"]
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
            await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return {"devices": len(keys), "duration_s": round(wall, 1), "load_average": os.getloadavg(), "wifi_latency_ms_each_way": a.wifi_ms,
            "ble_interval_ms": a.interval_ms,
            "gateway_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
            "gateway_rss_kb": {"start": rss[0], "max": max(rss), "end": rss[-1]},
            "motion_to_neighbour_prelight_ms": {"n": len(lat), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                                                "mean": round(statistics.mean(lat) * 1000, 1) if lat else None},
            "bins": bins}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--wifi-ms", type=float, default=10.0, help="added latency each way on every Wi-Fi connection")
    ap.add_argument("--interval-ms", type=float, default=30.0, help="BLE connection interval of the fake radio")
    ap.add_argument("--bin-every", type=float, default=10.0, help="s between a bin's wakes (a day compressed)")
    ap.add_argument("--motion-every", type=float, default=0.2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--gateway", metavar="CONFIG", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.gateway:
        asyncio.run(gateway_main(a.gateway, a.duration, a.bin_every, a.interval_ms))
        return 0
    res = asyncio.run(park(a))
    print(json.dumps(res, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
