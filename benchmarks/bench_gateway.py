#!/usr/bin/env python3
"""The whole gateway under load, against one real Mosquitto.

    python -m benchmarks.bench_gateway [--frames 100000] [--soak 60] [--json]
    python -m benchmarks.bench_gateway --only soak --soak 1800     # the 30-minute soak

Four measurements; the last three with `park-gateway run` as its own process (the same
command systemd runs) and the devices played by a load generator in this
process (sim.devsim's frames: a CPython TEST PEER, not the firmware) over
loopback TCP:

  core        the core alone, in this process: link.feed -> deframe -> verify -> session ->
              control loops, with the uplink replaced by a stub that stores nothing.
              Not a delivery figure: it shows what the core costs next to the uplink.
  throughput  authenticated device frames per second through everything: link,
              deframe, verify (HMAC + replay window), session, control loops,
              SQLite WAL outbox (group commit, synchronous=FULL), MQTT QoS 1 until
              PUBACK. 80 % telemetry (fill), 20 % acked events (door). Timed from
              the first frame written to the last message acknowledged by the broker.
              Next to it, on the same broker in the same run: G2's bare paho-mqtt
              QoS 1 loop (benchmarks/bench_mqtt_baseline.py, 100 in flight) over
              the same number of messages, and the careful pipeline (`careful_child`:
              the same libraries in about 150 lines, one thread plus paho's, its own
              process) over the same frames: CPU per frame of each from the kernel's
              accounting (all threads), the ratio is the issue-13 goal (<= 1.1).
  latency     motion frame in -> pre-light frame out, p50/p99, with 1,000 fill
              frames/s of other traffic. Measured at the device side, so it
              includes two loopback TCP hops: an upper bound of the in-gateway time.
  soak        gateway RSS sampled every 5 s under 2,000 frames/s of mixed traffic.
  overload    capacity from a throughput run, then 0.5x and --overload-factor (1.6) times it, alternated
              twice, with walkers timing pre-lights: pre-light p50/p99, door events acked of sent (each
              sent once), gateway RSS against the careful pipeline's over a burst of as many frames, and
              the backpressure counters (pauses, seconds paused, telemetry shed). The bulk frames are
              built before the timed window and the poles run in their own process (pole_child), so
              the generator's loop is not in the figure (--overload-generator inline: the old way).
              BENCH_LOOPTIMER=FILE times every loop callback of the gateway (gateway_child).

Figures are written into docs/gateway.md by hand; re-run to check them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from gateway.api import request
from gateway.registry import Registry
from sim.broker import Mosquitto
from protocol import codec, cose, messages
from protocol.framing import Deframer


UPLINK_PROCESS = "auto"  # [uplink] process of every gateway this run starts (--uplink-process)


def night_longitude() -> float:
    now = dt.datetime.now(dt.timezone.utc)
    lon = ((24 - (now.hour + now.minute / 60)) * 15) % 360
    return lon - 360 if lon > 180 else lon


class Device:
    def __init__(self, did: str, role: str):
        self.id, self.role = did, role
        self.kid = did.encode()
        self.key = secrets.token_bytes(32)
        self.mac = cose.Mac(self.key)
        self.seq = 0

    def frame(self, msg: dict) -> bytes:
        self.seq += 1
        return codec.pack(self.mac, cose.UP, self.kid, self.seq, msg)


class Generator:
    """The device side: a TCP server the gateway connects to; acks commands, times pre-lights."""

    def __init__(self, devices: list[Device]):
        self.devices = {d.kid: d for d in devices}
        self.writer = None
        self.connected = asyncio.Event()
        self.deframer = Deframer()
        self.on_down = None
        self.down = 0
        self.raw: list[bytes] | None = None  # set: downlink bytes are kept unparsed (the timed window's bulk)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return "tcp://127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]

    async def _accept(self, r, w):
        self.writer = w
        self.connected.set()
        try:
            await self._serve(r)
        except (asyncio.CancelledError, ConnectionError):
            pass  # the run ended (asyncio.run cancels this task): nothing to report

    async def _serve(self, r):
        while True:
            data = await r.read(1 << 16)
            if not data:
                return
            if self.raw is not None:
                self.raw.append(data)
                continue
            if self.on_down is None:
                self.down += data.count(0)
                continue
            for env, err in self.deframer.feed(data):
                if err is None:
                    self.on_down(env)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def parse_raw(self) -> None:
        """Hand the downlink kept by `raw` to on_down, and parse what comes from now on."""
        raw, self.raw = self.raw or [], None
        for data in raw:
            for env, err in self.deframer.feed(data):
                if err is None:
                    self.on_down(env)

    def hello_all(self) -> None:
        for d in self.devices.values():
            self.write(d.frame({"type": "hello", "role": messages.ROLE_IDS[d.role], "fw": 10000, "caps": 0,
                                "nonce": secrets.token_bytes(8)}))


def config(work: Path, url: str, broker: int, edges, hold: int = 60, web: str = "", shed: bool = False,
           url2: str = "") -> Path:
    """web: the dashboard's listen address ("" = no dashboard, as in every row here but bench_web's);
    shed: telemetry may be coalesced under overload (only the overload row: the others count every message);
    url2: a second link (the overload row's poles, on their own stream as Wi-Fi poles are)."""
    text = textwrap.dedent(f"""\
        [gateway]
        state_dir = "{work}/state"
        api_socket = "{work}/api.sock"
        log_level = "warning"
        [session]
        shed_telemetry = {"true" if shed else "false"}
        [web]
        listen = "{web}"
        [uplink]
        broker = "mqtt://127.0.0.1:{broker}"
        gateway_id = "bench"
        process = "{UPLINK_PROCESS}"
        [uplink.outbox]
        durability = "full"
        [sites.stadtpark]
        latitude = 0.0
        longitude = {night_longitude()}
        timezone = "UTC"
        [sites.stadtpark.lighting]
        hops = 1
        hold = {hold}
        prelight = 70
        edges = {json.dumps([list(e) for e in edges])}
        [sites.stadtpark.waste]
        near_full = 98
        full = 99
        [roles.container_sensor]
        heartbeat = 3600
        [roles.locker]
        heartbeat = 3600
        [roles.light_pole]
        heartbeat = 3600
        [[links]]
        name = "load"
        type = "tcp"
        url = "{url}"
        """)
    if url2:
        text += '[[links]]\nname = "poles"\ntype = "tcp"\nurl = "%s"\n' % url2
    p = work / "gateway.toml"
    p.write_text(text)
    return p


class Gateway:
    def __init__(self, cfg_path: Path, work: Path, devices: list[Device]):
        self.cfg_path, self.work = cfg_path, work
        (work / "state").mkdir(mode=0o700, exist_ok=True)
        with Registry(str(work / "state" / "registry.sqlite")) as reg:
            for d in devices:
                reg.add(d.id, d.role, "stadtpark", d.key)
        self.sock = str(work / "api.sock")

    async def start(self):
        self.log = open(self.work / "gateway.log", "ab")
        prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        main = ["-m", "gateway.cli"]
        if os.environ.get("BENCH_LOOPTIMER"):  # a file: every loop callback of the gateway timed (gateway_child)
            main = ["-m", "benchmarks.bench_gateway", "--gateway-child", os.environ["BENCH_LOOPTIMER"]]
        self.proc = await asyncio.create_subprocess_exec(sys.executable, *prof, *main, "run", "--config",
                                                         str(self.cfg_path), stdout=self.log, stderr=self.log,
                                                         cwd=str(ROOT))
        for _ in range(400):
            if os.path.exists(self.sock):
                return
            await asyncio.sleep(0.025)
        raise RuntimeError("gateway did not start: " + (self.work / "gateway.log").read_text())

    async def status(self) -> dict:
        return await request(self.sock, {"op": "status"})

    def pids(self) -> list[int]:
        """The gateway and its child processes (the uplink process with `[uplink] process`)."""
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for task in os.listdir("/proc/%d/task" % pid):
                    with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                        todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
        return out

    def cpu_s(self) -> float:
        """User + system CPU of the gateway process and its children, all their threads."""
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def rss_kb(self) -> int:
        """Resident memory of the gateway and its children together."""
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                continue
        return total

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)
        self.log.close()


def gateway_child(out: str, argv: list[str]) -> int:
    """`park-gateway ARGV` with every event-loop callback timed; at exit appends one JSON line to `out`: how
    many callbacks ran, a histogram of their durations, and the callbacks that took 2 ms or more by name
    (what a motion frame can wait behind: count, total, longest, and the loop thread's CPU in them, so wall
    time the thread did not run shows). BENCH_SWITCH sets sys.setswitchinterval (s) for the A/B of the GIL."""
    import atexit
    from asyncio import events

    from gateway import cli

    if os.environ.get("BENCH_SWITCH"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH"]))
    edges = (0.5, 1, 2, 5, 10, 20, 50, 1e9)
    hist = [0] * len(edges)
    slow: dict[str, list] = {}
    run = events.Handle._run
    clock = time.perf_counter

    cpu = time.thread_time

    def timed(self):
        t, c = clock(), cpu()
        run(self)
        ms = 1000 * (clock() - t)
        i = 0
        while ms > edges[i]:
            i += 1
        hist[i] += 1
        if ms >= 2:
            cb = self._callback
            name = getattr(cb, "__qualname__", None) or repr(cb)[:80]
            if hasattr(cb, "get_coro"):
                name = "task " + getattr(cb.get_coro(), "__qualname__", "?")
            elif getattr(cb, "__self__", None) is not None and hasattr(cb.__self__, "get_coro"):
                name = "task " + getattr(cb.__self__.get_coro(), "__qualname__", "?")
            e = slow.setdefault(name, [0, 0.0, 0.0, 0.0])
            e[0] += 1
            e[1] += ms
            e[2] = max(e[2], ms)
            e[3] += 1000 * (cpu() - c)

    def dump():
        with open(out, "a") as f:
            f.write(json.dumps({"switch_s": sys.getswitchinterval(), "edges_ms": edges, "hist": hist,
                                "slow": {k: [v[0], round(v[1], 1), round(v[2], 1), round(v[3], 1)]
                                         for k, v in sorted(slow.items(), key=lambda kv: -kv[1][1])[:15]}}) + "\n")

    events.Handle._run = timed
    atexit.register(dump)
    return cli.main(argv)


async def wait_published(gw: Gateway, target: int, timeout: float = 600) -> dict:
    end = time.monotonic() + timeout
    while True:
        st = await gw.status()
        if st["backbone"]["published"] >= target:
            return st
        if time.monotonic() > end:
            raise RuntimeError("only %d of %d published" % (st["backbone"]["published"], target))
        await asyncio.sleep(0.02)


def mix(devs: list[Device], n: int) -> list[bytes]:
    """The docstring's traffic: every fifth frame an acked door event from a locker (20 %), the rest fill."""
    fills = [d for d in devs if d.role == "container_sensor"]
    doors = [d for d in devs if d.role == "locker"]
    frames = []
    for i in range(n):
        if i % 5 == 4:
            d = doors[(i // 5) % len(doors)]
            frames.append(d.frame({"type": "door", "eid": d.seq + 1, "t": 0, "comp": 1 + i % 8,
                                   "open": bool(i & 1), "authorized": True}))
        else:
            c = fills[(i - i // 5) % len(fills)]
            frames.append(c.frame({"type": "fill", "fill": 20 + i % 60, "temp": 12, "batt": 180}))
    return frames


async def throughput(port: int, n: int) -> dict:
    devs = [Device("c%03d" % i, "container_sensor") for i in range(80)] + \
           [Device("k%03d" % i, "locker") for i in range(20)]
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        work = Path(tmp)
        gen = Generator(devs)
        url = await gen.start()
        gw = Gateway(config(work, url, port, []), work, devs)
        await gw.start()
        try:
            await asyncio.wait_for(gen.connected.wait(), 20)
            gen.hello_all()
            await asyncio.sleep(1.0)
            base = (await wait_published(gw, 0))["backbone"]
            while base["outbox_depth"]:
                await asyncio.sleep(0.05)
                base = (await gw.status())["backbone"]
            # pre-build every frame so the generator costs nothing while timed
            blob = b"".join(mix(devs, n))
            cpu0 = gw.cpu_s()
            t0 = time.perf_counter()
            step = 1 << 16
            for o in range(0, len(blob), step):
                gen.write(blob[o:o + step])
                await gen.writer.drain()
            t_sent = time.perf_counter() - t0
            st = await wait_published(gw, base["published"] + n)
            dt_ = time.perf_counter() - t0
            cpu = gw.cpu_s() - cpu0
            c = st["counters"]
            return {"frames": n, "events": n // 5, "frames_per_s": n / dt_, "offer_s": t_sent, "total_s": dt_,
                    "cpu_us_per_frame": 1e6 * cpu / n,
                    "drops": {k: v for k, v in c.items() if k.startswith("drop")},
                    "acks_down": gen.down, "rss_kb": gw.rss_kb(), "processes": len(gw.pids())}
        finally:
            await gw.stop()


def prelight_timer(g: "Generator", sent: dict, lat: list):
    """A generator's downlink callback: a pre-light's latency from its motion (sent[kid] -> lat, in s),
    and an ack for every command, as a device would."""
    def on_down(env: bytes) -> None:
        t = time.perf_counter()
        e = cose.parse(env)
        d = g.devices.get(e.kid)
        if d is None:
            return
        msg = messages.decode(e.payload, cose.DOWN)
        if msg["type"] == "prelight":
            t0 = sent.pop(e.kid, None)
            if t0 is not None:
                lat.append(t - t0)
        if msg["type"] not in ("ack", "nack", "welcome", "resync"):
            g.write(d.frame({"type": "ack", "ref": e.seq}))
    return on_down


async def latency(port: int, seconds: float, background: int, web: str = "") -> dict:
    pairs = 50
    poles = [Device("l%03d" % i, "light_pole") for i in range(2 * pairs)]
    bins = [Device("c%03d" % i, "container_sensor") for i in range(50)]
    edges = [(poles[2 * i].id, poles[2 * i + 1].id) for i in range(pairs)]
    with tempfile.TemporaryDirectory(prefix="bench-lat-") as tmp:
        work = Path(tmp)
        gen = Generator(poles + bins)
        url = await gen.start()
        gw = Gateway(config(work, url, port, edges, hold=2, web=web), work, poles + bins)
        await gw.start()
        sent: dict[bytes, float] = {}
        lat: list[float] = []

        gen.on_down = prelight_timer(gen, sent, lat)
        try:
            await asyncio.wait_for(gen.connected.wait(), 20)
            gen.hello_all()
            await asyncio.sleep(1.5)
            stop = time.monotonic() + seconds

            async def bg():
                i = 0
                tick = 0.01
                per = max(1, background // 100)
                nxt = time.perf_counter()
                while time.monotonic() < stop:
                    for _ in range(per):
                        b = bins[i % len(bins)]
                        gen.write(b.frame({"type": "fill", "fill": 20 + i % 50, "temp": 10, "batt": 170}))
                        i += 1
                    nxt += tick
                    await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
                return i

            async def walkers():
                k = 0
                while time.monotonic() < stop:
                    a, b = poles[2 * (k % pairs)], poles[2 * (k % pairs) + 1]
                    sent[b.kid] = time.perf_counter()
                    gen.write(a.frame({"type": "motion", "eid": a.seq + 1, "t": 0, "count": 1}))
                    k += 1
                    await asyncio.sleep(0.05)
                return k

            nbg, nmo = await asyncio.gather(bg(), walkers())
            await asyncio.sleep(0.5)
            lat.sort()
            ms = [x * 1000 for x in lat]
            return {"motions": nmo, "prelights_timed": len(ms), "background_frames": nbg,
                    "background_per_s": nbg / seconds,
                    "p50_ms": statistics.median(ms), "p99_ms": ms[int(len(ms) * 0.99) - 1], "max_ms": ms[-1]}
        finally:
            await gw.stop()


def _pctl(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[max(0, int(len(xs) * q) - 1)] if xs else float("nan")


def pole_frames(poles: list["Device"], pairs: int, n: int) -> list[tuple[bytes, bytes]]:
    """The walkers' first n motions, built ahead: (the neighbour's kid that should pre-light, the frame)."""
    out = []
    for k in range(n):
        a, b = poles[2 * (k % pairs)], poles[2 * (k % pairs) + 1]
        out.append((b.kid, a.frame({"type": "motion", "eid": a.seq + 1, "t": 0, "count": 1})))
    return out


async def walk(g: "Generator", poles: list["Device"], pairs: int, seconds: float) -> dict:
    """A walker's motion every 50 ms on `pairs` pole pairs, for `seconds`: motion written -> pre-light read, and
    how late each step of this loop woke (what the generator's own loop adds to the figure)."""
    sent: dict[bytes, float] = {}
    lat: list[float] = []
    late: list[float] = []

    g.on_down = prelight_timer(g, sent, lat)
    motions = pole_frames(poles, pairs, int(seconds / 0.05) + 2)
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    due = loop.time()
    k = 0
    while due < stop and k < len(motions):
        kid, frame = motions[k]
        sent[kid] = time.perf_counter()
        g.write(frame)
        k += 1
        due += 0.05
        await asyncio.sleep(max(0.0, due - loop.time()))
        late.append(loop.time() - due)
    await asyncio.sleep(0.5)
    return {"motions": k, "lat_ms": [1000 * x for x in lat], "late_ms": [1000 * x for x in late]}


def pole_child(keys_path: str, pairs: int, seconds: float) -> None:
    """The poles in their own process (devices' CPU is not the gateway's): prints its URL, says hello once the
    gateway connected, walks after a line on stdin, prints the walk's figures as JSON. At nice -10 where
    allowed: on a shared machine, its own wake-up after the pre-light arrived is not the gateway's time."""
    try:
        os.nice(-10)
    except OSError:
        pass  # not allowed: the walker's lateness in the report shows what the machine added
    keys = json.loads(Path(keys_path).read_text())
    poles = []
    for did, key in keys.items():
        d = Device(did, "light_pole")
        d.key, d.mac = bytes.fromhex(key), cose.Mac(bytes.fromhex(key))
        poles.append(d)

    async def run() -> dict:
        g = Generator(poles)
        print(await g.start(), flush=True)
        await asyncio.wait_for(g.connected.wait(), 30)
        g.on_down = lambda env: None
        g.hello_all()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return await walk(g, poles, pairs, seconds)

    print(json.dumps(asyncio.run(run())), flush=True)


async def overload(port: int, seconds: float, rate: int, generator: str = "split") -> dict:
    """`rate` frames/s of the throughput mix (80 % fill, 20 % acked door events) from 100 devices, paced every
    10 ms, and a walker's motion every 50 ms on 50 pole pairs: pre-light latency, door events acked (each sent
    once: an event the gateway did not read stays in the kernel until it does), gateway RSS every 0.5 s, and
    its backpressure counters. After `seconds` the offer stops and the run waits for every ack.

    generator "split" (the default): the bulk frames are built before the timed window and their downlink is
    parsed after it, and the poles run in their own process (pole_child), so the load generator's CPU and
    loop do not stand in the pre-light figure. "inline": every frame built, MACed and parsed in this
    process's loop during the window, the poles too (the figures before 2026-11-30 15:00)."""
    pairs = 50
    poles = [Device("l%03d" % i, "light_pole") for i in range(2 * pairs)]
    fills = [Device("c%03d" % i, "container_sensor") for i in range(80)]
    doors = [Device("k%03d" % i, "locker") for i in range(20)]
    edges = [(poles[2 * i].id, poles[2 * i + 1].id) for i in range(pairs)]
    split = generator == "split"
    with tempfile.TemporaryDirectory(prefix="bench-over-") as tmp:
        work = Path(tmp)
        gen = Generator(fills + doors)
        url = await gen.start()
        child = pgen = None
        if split:
            keys = work / "poles.json"
            keys.write_text(json.dumps({d.id: d.key.hex() for d in poles}))
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.bench_gateway", "--pole-child", str(keys), str(pairs), str(seconds),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT))
            url2 = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        else:
            pgen = Generator(poles)
            url2 = await pgen.start()
        gw = Gateway(config(work, url, port, edges, hold=2, shed=True, url2=url2), work, poles + fills + doors)
        await gw.start()
        waiting: set[tuple[bytes, int]] = set()  # (kid, seq) of door events not acked yet
        acked = [0]

        def on_down(g: Generator, env: bytes) -> None:
            e = cose.parse(env)
            d = g.devices.get(e.kid)
            if d is None:
                return
            msg = messages.decode(e.payload, cose.DOWN)
            if msg["type"] == "ack" and (e.kid, msg["ref"]) in waiting:
                waiting.discard((e.kid, msg["ref"]))
                acked[0] += 1
            if msg["type"] not in ("ack", "nack", "welcome", "resync"):
                g.write(d.frame({"type": "ack", "ref": e.seq}))

        gen.on_down = lambda env: on_down(gen, env)
        rss: list[int] = []
        per = max(1, rate // 100)
        n_doors = [0]

        def chunk(i: int) -> tuple[bytes, int]:
            out = []
            for _ in range(per):
                if i % 5 == 4:
                    d = doors[(i // 5) % len(doors)]
                    out.append(d.frame({"type": "door", "eid": d.seq + 1, "t": 0, "comp": 1 + i % 8,
                                        "open": bool(i & 1), "authorized": True}))
                    waiting.add((d.kid, d.seq))
                    n_doors[0] += 1
                else:
                    c = fills[(i - i // 5) % len(fills)]
                    out.append(c.frame({"type": "fill", "fill": 20 + i % 60, "temp": 12, "batt": 180}))
                i += 1
            return b"".join(out), i

        try:
            await asyncio.wait_for(gen.connected.wait(), 20)
            if pgen is not None:
                await asyncio.wait_for(pgen.connected.wait(), 20)
                pgen.hello_all()
            gen.hello_all()
            chunks = []
            if split:
                i = 0
                for _ in range(int(seconds * 100)):
                    c, i = chunk(i)
                    chunks.append(c)
            await asyncio.sleep(1.5)
            loop = asyncio.get_running_loop()
            stop = loop.time() + seconds

            async def offer():
                i = 0
                nxt = loop.time()
                k = 0
                while k < len(chunks) if split else loop.time() < stop:
                    if split:  # every chunk built goes out (its door events are waited for)
                        gen.write(chunks[k])
                        k += 1
                        i += per
                    else:
                        c, i = chunk(i)
                        gen.write(c)
                    nxt += 0.01
                    await asyncio.sleep(max(0.0, nxt - loop.time()))
                return i

            async def sample():
                while loop.time() < stop:
                    rss.append(gw.rss_kb())
                    await asyncio.sleep(0.5)

            cpu0 = gw.cpu_s()
            t0 = time.perf_counter()
            if split:
                gen.raw = []
                child.stdin.write(b"go\n")
                n, _ = await asyncio.gather(offer(), sample())
            else:
                n, w, _ = await asyncio.gather(offer(), walk(pgen, poles, pairs, seconds), sample())
            st = await gw.status()
            if split:
                gen.parse_raw()
            end = time.monotonic() + 300
            while acked[0] < n_doors[0] and time.monotonic() < end:
                rss.append(gw.rss_kb())
                await asyncio.sleep(0.2)
            dt_ = time.perf_counter() - t0
            if split:
                out, _ = await asyncio.wait_for(child.communicate(), 60)
                w = json.loads(out.decode().strip().splitlines()[-1])
            st_end = await gw.status()
            ms = sorted(w["lat_ms"]) or [float("nan")]
            bp = st["backpressure"] or {}
            return {"rate": rate, "seconds": seconds, "generator": generator, "frames": n, "doors_sent": n_doors[0],
                    "doors_acked": acked[0],
                    "received_per_s": sum(lk["counters"].get("rx_frames", 0) for lk in st["links"]) / seconds,
                    "cpu_us_per_frame": 1e6 * (gw.cpu_s() - cpu0) / max(n, 1), "total_s": dt_,
                    "motions": w["motions"], "prelights_timed": len(w["lat_ms"]), "p50_ms": statistics.median(ms),
                    "p99_ms": _pctl(ms, 0.99), "max_ms": ms[-1], "walker_late_p99_ms": _pctl(w["late_ms"], 0.99),
                    "rss_max_kb": max(rss), "rss_kb": rss, "pauses": bp.get("pauses"), "paused_s": bp.get("paused_s"),
                    "read_through": bp.get("read_through"), "over_allowance": bp.get("over_allowance"),
                    "telemetry_shed": (st_end["backpressure"] or {}).get("telemetry_shed"),
                    "outbox_depth_end": st_end["backbone"]["outbox_depth"]}
        finally:
            if child is not None and child.returncode is None:
                child.kill()
                await child.wait()
            await gw.stop()


async def soak(port: int, seconds: float, rate: int, web: str = "") -> dict:
    """Steady load; with `web`, the dashboard runs and one browser-like client follows its live events."""
    devs = [Device("c%03d" % i, "container_sensor") for i in range(80)] + \
           [Device("k%03d" % i, "locker") for i in range(20)]
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        work = Path(tmp)
        gen = Generator(devs)
        url = await gen.start()
        gw = Gateway(config(work, url, port, [], web=web), work, devs)
        await gw.start()
        samples = []
        seen = [0]
        viewer = asyncio.create_task(_follow_events(web, seen)) if web else None
        try:
            await asyncio.wait_for(gen.connected.wait(), 20)
            gen.hello_all()
            await asyncio.sleep(1.0)
            cpu0 = gw.cpu_s()
            t0 = time.monotonic()
            nxt = time.perf_counter()
            i = 0
            last_sample = 0.0
            while time.monotonic() - t0 < seconds:
                for _ in range(rate // 100):
                    d = devs[i % len(devs)]
                    if d.role == "locker":
                        gen.write(d.frame({"type": "door", "eid": d.seq + 1, "t": 0, "comp": 1 + i % 8,
                                           "open": bool(i & 1), "authorized": True}))
                    else:
                        gen.write(d.frame({"type": "fill", "fill": 20 + i % 60, "temp": 12, "batt": 180}))
                    i += 1
                if time.monotonic() - last_sample >= 5:
                    last_sample = time.monotonic()
                    samples.append((round(last_sample - t0), gw.rss_kb()))
                nxt += 0.01
                await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
            cpu = gw.cpu_s() - cpu0
            st = await gw.status()
        finally:
            if viewer is not None:
                viewer.cancel()
            await gw.stop()
    rss = [s[1] for s in samples]
    warm = rss[len(rss) // 5:] or rss  # after the first fifth (caches, outbox memory rows) settle
    return {"seconds": seconds, "rate": rate, "frames": i, "cpu_us_per_frame": 1e6 * cpu / max(i, 1),
            "sse_bytes": seen[0] if web else None,
            "rss_first_kb": rss[0], "rss_after_warmup_kb": warm[0],
            "rss_last_kb": rss[-1], "rss_max_kb": max(rss), "growth_after_warmup_kb": rss[-1] - warm[0],
            "samples": samples, "published": st["backbone"]["published"], "outbox_depth": st["backbone"]["outbox_depth"],
            "received": st["links"][0]["counters"].get("rx_frames", 0),
            "drops": {k: v for k, v in st["counters"].items() if k.startswith("drop")}}


async def _follow_events(listen: str, seen: list) -> None:
    """A dashboard viewer: GET /events (server-sent events) and read it until cancelled; seen[0] counts bytes."""
    host, port = listen.rsplit(":", 1)
    for _ in range(100):
        try:
            r, w = await asyncio.open_connection(host, int(port))
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError("the dashboard did not listen on %s" % listen)
    w.write(b"GET /events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n" % host.encode())
    await w.drain()
    try:
        while True:
            chunk = await r.read(65536)
            if not chunk:
                return
            seen[0] += len(chunk)
    finally:
        w.close()


class _NoUplink:
    """Stands in for gateway.uplink in the `core` row only: it stores nothing, so the row shows
    what link + verify + session + control loops cost on their own (never a claim about delivery)."""

    def __init__(self, loop):
        self.loop = loop
        self.n = 0

    def _done(self):
        f = self.loop.create_future()
        f.set_result(None)
        self.n += 1
        return f

    def event_nowait(self, *a):
        return self._done()

    def telemetry_nowait(self, *a):
        return self._done()

    def availability_nowait(self, *a):
        return self._done()

    async def availability(self, *a):
        return None


async def core(n: int) -> dict:
    """Link -> deframe -> verify -> session -> control loops, in process, no outbox and no MQTT."""
    from gateway import config as cm
    from gateway.daemon import Parts
    from gateway.downcounter import SyncWriter

    devs = [Device("c%03d" % i, "container_sensor") for i in range(80)] + \
           [Device("k%03d" % i, "locker") for i in range(20)]
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
        work = Path(tmp)
        cfg = cm.load(str(config(work, "tcp://127.0.0.1:9", 1, [])))
        gw = Gateway(Path(cfg.path), work, devs)
        reg = Registry(cfg.registry_path)
        up = _NoUplink(asyncio.get_running_loop())
        sessions = Parts(cfg, reg, SyncWriter(reg), up).sessions

        class Sink:
            name = "bench"
            counters = {}
            sent = 0

            def write(self, frame):
                self.sent += 1

        from gateway.links.base import Link

        link = Link("bench", sessions.on_envelope, sessions.on_frame_error)
        sink = Sink()
        link.write = sink.write
        blob = b"".join(mix(devs, n))
        t0 = time.perf_counter()
        for o in range(0, len(blob), 1 << 16):
            link.feed(blob[o:o + (1 << 16)])
        await asyncio.sleep(0)
        dt_ = time.perf_counter() - t0
        reg.close()
        del gw
    return {"frames": n, "frames_per_s": n / dt_, "handed_to_uplink": up.n, "drops": dict(sessions.counters)}



# -- the careful pipeline: the baseline the gateway's CPU per frame is compared with (issue 13)

def careful_child(url: str, broker: int, keys_path: str, n: int, db_path: str) -> dict:
    """A careful single-threaded pipeline of the same libraries, about as a careful engineer writes it:
    socket read, COBS + CRC, cbor2 envelope, HMAC-SHA256/64, replay top, cbor2 payload, json SenML /
    event JSON, sqlite3 WAL synchronous=FULL with one transaction per received chunk, paho QoS 1 with
    100 in flight, rows deleted on PUBACK, events acked to their device after their commit."""
    import binascii
    import hashlib
    import hmac
    import resource
    import socket
    import sqlite3

    import cbor2
    import paho.mqtt.client as paho
    from cobs import cobs as cobs_

    keys = {bytes.fromhex(k): bytes.fromhex(v) for k, v in json.loads(Path(keys_path).read_text()).items()}
    macs = {k: cose.Mac(v) for k, v in keys.items()}
    names = {c: s[0] for c, s in messages.SCHEMAS.items()}
    host, port = url[len("tcp://"):].rsplit(":", 1)
    db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")
    acked: collections.deque = collections.deque()  # mids PUBACKed, appended by paho's thread
    mids: dict[int, int] = {}

    def on_publish(c, u, mid, rc, props):
        acked.append(mid)

    cl = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="careful", protocol=paho.MQTTv311)
    cl.max_inflight_messages_set(100)
    cl.on_publish = on_publish
    cl.connect("127.0.0.1", broker)
    cl.loop_start()
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    top: dict[bytes, int] = {}
    down = 0
    buf = b""
    done = 0
    t0 = cpu0 = None
    while done < n:
        data = sock.recv(1 << 16)
        if not data:
            break
        if t0 is None:
            t0, r = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            cpu0 = r.ru_utime + r.ru_stime
        *frames, buf = (buf + data).split(b"\0")
        now = time.time()
        rows, acks = [], []
        for f in frames:
            try:
                body = cobs_.decode(f)
                env = body[:-2]
                if binascii.crc_hqx(env, 0xFFFF) != int.from_bytes(body[-2:], "big"):
                    continue
                prot, unprot, payload, tag = cbor2.loads(env)
                kid, piv = unprot[4], unprot[6]
                key = keys[kid]
                mac_in = cbor2.dumps(["MAC0", prot, cbor2.dumps([1, 0, kid, piv]), payload])
                if not hmac.compare_digest(hmac.new(key, mac_in, hashlib.sha256).digest()[:8], tag):
                    continue
                seq = int.from_bytes(piv, "big")
                if seq <= top.get(kid, 0):
                    continue
                top[kid] = seq
                m = cbor2.loads(payload)
            except (ValueError, KeyError, cbor2.CBORDecodeError, cobs_.DecodeError):
                continue
            did = kid.decode()
            t = names.get(m[0])
            if t == "fill":
                rows.append(("park/stadtpark/device/%s/telemetry" % did, json.dumps(
                    [{"bn": "urn:dev:park:stadtpark:%s:" % did, "bt": now, "n": "fill", "u": "%", "v": m[1]},
                     {"n": "temp", "u": "Cel", "v": m[2]}, {"n": "batt", "u": "/", "v": m[3] / 255}],
                    separators=(",", ":")).encode()))
            elif t == "door":
                rows.append(("park/stadtpark/device/%s/event/door" % did, json.dumps(
                    {"id": "%s-%d" % (did, m[1]), "ts": now, "comp": m[3], "open": m[4], "authorized": m[5]},
                    separators=(",", ":")).encode()))
                acks.append((kid, seq))
            else:
                continue
            done += 1
        dels = []
        while acked:
            # paho's mids wrap at 65,535: a burst longer than that reuses the mid of a queued publish
            # (only the overload row's RSS burst gets there; its figure is memory, not deletes)
            i = mids.pop(acked.popleft(), None)
            if i is not None:
                dels.append(i)
        with db:
            db.execute("BEGIN")
            if dels:
                db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in dels])
            first = 0
            if rows:
                db.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", rows)
                first = db.execute("SELECT last_insert_rowid()").fetchone()[0] - len(rows) + 1
        for i, (topic, payload) in enumerate(rows):
            mids[cl.publish(topic, payload, qos=1).mid] = first + i
        if acks:
            out = []
            for kid, seq in acks:
                down += 1
                out.append(codec.pack(macs[kid], cose.DOWN, kid, down, {"type": "ack", "ref": seq}))
            sock.sendall(b"".join(out))
    while mids:
        while acked:
            mids.pop(acked.popleft(), None)
        time.sleep(0.001)
    dt_ = time.perf_counter() - (t0 or 0)
    r = resource.getrusage(resource.RUSAGE_SELF)
    cl.loop_stop()
    cl.disconnect()
    return {"frames": done, "frames_per_s": done / dt_, "cpu_us_per_frame": 1e6 * (r.ru_utime + r.ru_stime - cpu0) / done,
            "rss_max_kb": r.ru_maxrss}


async def careful(port: int, n: int) -> dict:
    devs = [Device("c%03d" % i, "container_sensor") for i in range(80)] + \
           [Device("k%03d" % i, "locker") for i in range(20)]
    with tempfile.TemporaryDirectory(prefix="bench-careful-") as tmp:
        keys = Path(tmp) / "keys.json"
        keys.write_text(json.dumps({d.kid.hex(): d.key.hex() for d in devs}))
        gen = Generator(devs)
        url = await gen.start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.bench_gateway", "--careful-child", url, str(port), str(keys), str(n),
            str(Path(tmp) / "careful.sqlite"), stdout=asyncio.subprocess.PIPE, cwd=str(ROOT))
        await asyncio.wait_for(gen.connected.wait(), 20)
        blob = b"".join(mix(devs, n))
        for o in range(0, len(blob), 1 << 16):
            gen.write(blob[o:o + (1 << 16)])
            await gen.writer.drain()
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        res = json.loads(out)
        res["acks_down"] = gen.down
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--background", type=int, default=1000)
    ap.add_argument("--soak", type=float, default=60, help="soak seconds (the documented soak is 1800)")
    ap.add_argument("--soak-rate", type=int, default=2000)
    ap.add_argument("--only", choices=("core", "throughput", "latency", "soak", "overload"))
    ap.add_argument("--overload-seconds", type=float, default=15)
    ap.add_argument("--overload-factor", type=float, default=1.6, help="offered rate / measured capacity")
    ap.add_argument("--uplink-process", choices=("auto", "on", "off"), default="auto",
                    help="[uplink] process: the MQTT client in its own process (default auto: on with 2+ CPUs)")
    ap.add_argument("--capacity", type=float, help="overload: this capacity (frames/s) instead of measuring it")
    ap.add_argument("--overload-rounds", type=int, default=2, help="overload: 0.5x and the factor, this many times")
    ap.add_argument("--overload-generator", choices=("split", "inline"), default="split",
                    help="split: frames built before the window, poles in their own process; inline: all live here")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pole-child", nargs=3, metavar=("KEYS", "PAIRS", "SECONDS"), help=argparse.SUPPRESS)
    ap.add_argument("--gateway-child", metavar="OUT", help=argparse.SUPPRESS)
    ap.add_argument("--careful-child", nargs=5, metavar=("URL", "BROKER", "KEYS", "N", "DB"), help=argparse.SUPPRESS)
    a, rest = ap.parse_known_args()
    if a.gateway_child:
        sys.exit(gateway_child(a.gateway_child, rest))
    if rest:
        ap.error("unrecognized arguments: %s" % " ".join(rest))
    if a.pole_child:
        keys, pairs, seconds = a.pole_child
        pole_child(keys, int(pairs), float(seconds))
        return
    if a.careful_child:
        url, broker, keys, n, db = a.careful_child
        print(json.dumps(careful_child(url, int(broker), keys, int(n), db)))
        return
    global UPLINK_PROCESS
    UPLINK_PROCESS = a.uplink_process
    res: dict = {"cpus": os.cpu_count(), "uplink_process": a.uplink_process}
    if a.only in (None, "core"):
        res["core"] = asyncio.run(core(a.frames))
    with Mosquitto() as broker:
        if a.only in (None, "throughput"):
            from benchmarks.bench_mqtt_baseline import bench_paho

            bare = bench_paho(broker.port, a.frames, 100)
            res["bare_paho_msgs_per_s"] = bare["msgs_per_s"] if isinstance(bare, dict) else bare
            res["throughput"] = asyncio.run(throughput(broker.port, a.frames))
            res["throughput"]["percent_of_bare"] = 100 * res["throughput"]["frames_per_s"] / res["bare_paho_msgs_per_s"]
            res["careful"] = asyncio.run(careful(broker.port, a.frames))
            res["throughput"]["cpu_ratio_to_careful"] = (res["throughput"]["cpu_us_per_frame"]
                                                         / res["careful"]["cpu_us_per_frame"])
        if a.only in (None, "latency"):
            res["latency"] = asyncio.run(latency(broker.port, a.latency_seconds, a.background))
        if a.only in (None, "overload"):
            # capacity now, then half of it (the baseline) and `factor` times it, alternated twice;
            # the careful pipeline's RSS over a burst of the same number of frames for the memory bound
            cap = a.capacity or asyncio.run(throughput(broker.port, a.frames))["frames_per_s"]
            runs = []
            for _ in range(a.overload_rounds):
                for f in (0.5, a.overload_factor):
                    r = asyncio.run(overload(broker.port, a.overload_seconds, int(cap * f), a.overload_generator))
                    r["factor"] = f
                    runs.append(r)
            k = asyncio.run(careful(broker.port, max(r["frames"] for r in runs)))
            res["overload"] = {"capacity_frames_per_s": cap, "runs": runs, "careful_rss_max_kb": k["rss_max_kb"]}
        if a.only in (None, "soak"):
            res["soak"] = asyncio.run(soak(broker.port, a.soak, a.soak_rate))
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print("%d CPUs, one Mosquitto (set_tcp_nodelay true), gateway = `park-gateway run` process, [uplink] process = %s"
          % (res["cpus"], res["uplink_process"]))
    if "core" in res:
        c = res["core"]
        print("core alone (link, deframe, verify, session, control loops; no outbox, no MQTT): %.0f frames/s"
              % c["frames_per_s"])
    if "throughput" in res:
        t = res["throughput"]
        print("throughput: %d frames in %.2f s = %.0f frames/s through the whole gateway; bare paho QoS 1 loop "
              "%.0f msg/s -> %.0f%% (drops %s)" % (t["frames"], t["total_s"], t["frames_per_s"],
                                                  res["bare_paho_msgs_per_s"], t["percent_of_bare"], t["drops"] or 0))
        k = res["careful"]
        print("CPU per frame: gateway %.1f us (%d processes), careful pipeline %.1f us (%.0f frames/s) -> x%.2f "
              "(goal <= 1.1); traffic 80 %% fill, 20 %% acked door events"
              % (t["cpu_us_per_frame"], t["processes"], k["cpu_us_per_frame"], k["frames_per_s"],
                 t["cpu_ratio_to_careful"]))
    if "latency" in res:
        l = res["latency"]
        print("pre-light latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d motions with %.0f frames/s "
              "background" % (l["p50_ms"], l["p99_ms"], l["max_ms"], l["prelights_timed"], l["background_per_s"]))
    if "overload" in res:
        o = res["overload"]
        print("overload: capacity %.0f frames/s (the throughput run's); careful pipeline RSS over a burst of the "
              "same frames %d kB" % (o["capacity_frames_per_s"], o["careful_rss_max_kb"]))
        for r in o["runs"]:
            print("  x%.1f: %d frames/s offered, %.0f read; pre-light p50 %.2f ms p99 %.2f ms max %.1f ms (%d; "
                  "walker's loop late p99 %.2f ms); doors acked %d/%d; RSS max %d kB (x%.2f careful); paused %s "
                  "times, %s s (poles' frames read through %s, over allowance %s); telemetry shed %s; CPU %.1f us/frame"
                  % (r["factor"], r["rate"], r["received_per_s"], r["p50_ms"], r["p99_ms"], r["max_ms"],
                     r["prelights_timed"], r["walker_late_p99_ms"], r["doors_acked"], r["doors_sent"],
                     r["rss_max_kb"], r["rss_max_kb"] / o["careful_rss_max_kb"], r["pauses"], r["paused_s"],
                     r["read_through"], r["over_allowance"], r["telemetry_shed"], r["cpu_us_per_frame"]))
    if "soak" in res:
        s = res["soak"]
        print("soak: %ds at %d frames/s: RSS %d kB after warm-up -> %d kB at the end (max %d kB), growth %+d kB"
              % (s["seconds"], s["rate"], s["rss_after_warmup_kb"], s["rss_last_kb"], s["rss_max_kb"],
                 s["growth_after_warmup_kb"]))


if __name__ == "__main__":
    main()
