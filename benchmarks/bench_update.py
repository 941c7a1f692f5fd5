#!/usr/bin/env python3
"""Software updates (issue 11): bundle sizes, transfer times per transport, pre-light latency while an update streams.

    python -m benchmarks.bench_update [--sizes] [--transfer] [--prelight] [--seconds 20] [--json]

  sizes       park-device bundle for each role (real mpy-cross, the manifests): files, image and bundle
              bytes, chunks of 192 bytes
  transfer    one rollout of the light_pole bundle to one device, plan -> `valid`, over each transport:
              serial (a pty: no baud limit of its own), Wi-Fi (the gateway's TCP server, 10 ms added each
              way) and BLE (sim.fakeble: a FAKE controller, 30 ms connection interval, MTU 247), at the
              default `[update] link_rate` and with the rate limit lifted
  prelight    motion -> neighbour's pre-light frame, p50/p99, ten poles on Wi-Fi (5 ms each way), one
              walker step every 0.2 s (hold 2 s, so each step pre-lights), without and with a rollout
              streaming to every pole (per_link 2, link_rate 4096: the Wi-Fi server is one link)

The devices are sim.devsim_ota.SimOtaDevice, a CPython MODEL of SPEC 10's device side, not the
firmware; the gateway is the real daemon in this process. Figures go into docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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

ROLES = ("container_sensor", "light_pole", "locker")


class _Quiet:
    json = True
    quiet = True

    def progress(self, label, total):
        import contextlib

        class _P:
            total = 0

            def set(self, *a):
                pass
        return contextlib.nullcontext(_P())

    def note(self, text):
        pass


def build_bundles(work: Path) -> dict:
    from park_device.bundle import make_bundle
    from park_device.release import new_key
    from protocol import bundle

    key = str(work / "release.pem")
    new_key(_Quiet(), key)
    out = {}
    for role in ROLES:
        path = work / (role + ".bundle")
        _, r = make_bundle(_Quiet(), role, "1.0.0", key, str(path))
        out[role] = {"path": str(path), "files": r["files"], "image_bytes": r["image_bytes"],
                     "bundle_bytes": r["bundle_bytes"], "chunks": -(-r["image_bytes"] // 192)}
    out["_pub"] = key + ".pub"
    out["_key"] = bundle.load_private_key(key)
    return out


def write_config(work: Path, links: str, rate: int, per_link: int = 2, canary: int = 1) -> Path:
    text = textwrap.dedent(f"""\
        [gateway]
        state_dir = "{work}/state"
        api_socket = "{work}/api.sock"
        trust_clock = true
        [uplink]
        broker = "mqtt://127.0.0.1:1"
        gateway_id = "bench"
        [web]
        listen = ""
        [sites.stadtpark]
        latitude = 0
        longitude = {night_longitude()}
        timezone = "UTC"
        [sites.stadtpark.lighting]
        hops = 1
        prelight = 70
        hold = 2
        edges = {json.dumps([["l%03d" % i, "l%03d" % (i + 1)] for i in range(1, 10)])}
        [update]
        release_keys = ["{work}/release.pem.pub"]
        link_rate = {rate}
        per_link = {per_link}
        canary = {canary}
        stall_s = 600
        trial_s = 600
        """) + links
    p = work / "gateway.toml"
    p.write_text(text)
    return p


def night_longitude() -> float:
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    lon = ((24 - (now.hour + now.minute / 60)) * 15) % 360
    return lon - 360 if lon > 180 else lon


def provision(state: Path, devices) -> dict:
    state.mkdir(mode=0o700, exist_ok=True)
    keys = {}
    with Registry(str(state / "registry.sqlite")) as reg:
        for did, role in devices:
            keys[did] = secrets.token_bytes(32)
            reg.add(did, role, "stadtpark", keys[did])
    return keys


async def _roll(d, bundle_path: str, devices=None) -> int:
    data = Path(bundle_path).read_bytes()
    b = await d.update({"action": "import", "bundle": base64.b64encode(data).decode()})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark", "devices": devices})
    return plan["rollout"]


async def _ready(d, task):
    while not d.ready.is_set() or any(getattr(lk, "port", 1) == 0 for lk in d.links):
        if task.done():
            task.result()
        await asyncio.sleep(0.01)


async def transfer(work: Path, bundles: dict, transport: str, rate: int) -> dict:
    from gateway import config as config_mod
    from gateway.daemon import Daemon
    from sim.devsim import SimLink
    from sim.devsim_ota import SimOtaDevice
    from sim.fakeble import BlePeer, FakeBleRadio, park_advertisement

    work.mkdir()
    (work / "release.pem.pub").write_bytes(Path(bundles["_pub"]).read_bytes())
    role = "light_pole"
    keys = provision(work / "state", [("l001", role)])
    radio = None
    if transport == "serial":
        link = SimLink.pty()
        links = f'[[links]]\ntype = "serial"\nport = "{link.slave_path}"\nname = "serial0"\n'
    elif transport == "wifi":
        links = '[[links]]\ntype = "tcp"\nlisten = "127.0.0.1:0"\nname = "wifi"\n'
    else:
        links = '[[links]]\ntype = "ble"\nname = "ble"\nmax_connections = 5\n'
        radio = FakeBleRadio(max_connections=5, interval_ms=30, adv_interval_ms=100)
    cfg = config_mod.load(str(write_config(work, links, rate)))
    dev = SimOtaDevice("l001", keys["l001"], role, fw=9900)
    if transport == "ble":
        peer = BlePeer(dev, "B0:00:00:00:00:01", mtu=247)
        radio.add(peer.periph)
        peer.periph.advertisement = park_advertisement("l001", True)  # awake for the whole update
    d = Daemon(cfg, ble_factory=radio)
    task = asyncio.create_task(d.run())
    await _ready(d, task)
    try:
        if transport == "serial":
            link.add(dev)
        elif transport == "wifi":
            link = await SimLink.tcp_client("127.0.0.1", d.links[0].port, latency=0.010)
            link.add(dev)
        if transport != "ble":
            await dev.hello()
        else:
            while not peer._up.is_set():
                await asyncio.sleep(0.01)
            await dev.hello()
        t0 = time.monotonic()
        rid = await _roll(d, bundles[role]["path"])
        while d.updates.status(rid)["state"] != "done":
            if time.monotonic() - t0 > float(os.environ.get("BENCH_UPDATE_BOUND", 300)):
                extra = ""
                if radio is not None:
                    pool = d.links[0]
                    s = d.sessions.by_id["l001"]
                    extra = " pool %s active %s wanted %s radio %s up %s queue %d inflight %d" % (
                        dict(pool.counters), list(pool.active), list(pool._wanted), list(radio.connections),
                        peer._up.is_set(), len(s.queue), len(s.inflight))
                raise TimeoutError("%s: the rollout did not end in 300 s: %s%s" % (transport, d.updates.status(rid),
                                                                                   extra))
            await asyncio.sleep(0.05)
        dt = time.monotonic() - t0
        st = d.updates.status(rid)
        assert st["counts"] == {"valid": 1}, st
        size = bundles[role]["image_bytes"]
        return {"transport": transport, "link_rate": rate, "image_bytes": size, "seconds": round(dt, 2),
                "bytes_per_s": round(size / dt), "chunks_sent": dev.chunks,
                "chunks_resent": sum(1 for m in dev.received if m["type"] == "update_chunk") - dev.chunks}
    finally:
        d.stop()
        await task


async def prelight(work: Path, bundles: dict, seconds: float, streaming: bool) -> dict:
    from gateway import config as config_mod
    from gateway.daemon import Daemon
    from sim.devsim import SimLink
    from sim.devsim_ota import SimOtaDevice

    work.mkdir()
    (work / "release.pem.pub").write_bytes(Path(bundles["_pub"]).read_bytes())
    poles = ["l%03d" % i for i in range(1, 11)]
    keys = provision(work / "state", [(p, "light_pole") for p in poles])
    links = '[[links]]\ntype = "tcp"\nlisten = "127.0.0.1:0"\nname = "wifi"\n'
    cfg = config_mod.load(str(write_config(work, links, 4096, per_link=2, canary=0)))
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    await _ready(d, task)
    lat: list[float] = []
    sent: dict[str, float] = {}
    devs = {}
    try:
        for p in poles:
            link = await SimLink.tcp_client("127.0.0.1", d.links[0].port, latency=0.005)
            dev = SimOtaDevice(p, keys[p], "light_pole", fw=9900)
            link.add(dev)

            def on_command(msg, p=p):
                t0 = sent.pop(p, None)
                if msg["type"] == "prelight" and t0 is not None:
                    lat.append((time.monotonic() - t0) * 1000)
            dev.on_command = on_command
            devs[p] = dev
            await dev.hello()
        await asyncio.sleep(1.0)  # the profiles the lighting loop sends after each hello
        rid = await _roll(d, bundles["light_pole"]["path"]) if streaming else None
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            src, dst = poles[i % 9], poles[i % 9 + 1]
            sent[dst] = time.monotonic()
            devs[src].event_nowait({"type": "motion", "count": 1})
            i += 1
            await asyncio.sleep(0.2)
        chunks = sum(dv.chunks for dv in devs.values())
        state = d.updates.status(rid)["counts"] if rid else None
    finally:
        d.stop()
        await task
    lat.sort()
    return {"streaming": streaming, "motions": i, "prelights_timed": len(lat),
            "p50_ms": round(statistics.median(lat), 1), "p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)], 1),
            "max_ms": round(lat[-1], 1), "chunks_during_run": chunks, "image_bytes_during_run": chunks * 192,
            "rollout": state}


async def main_async(a) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
        work = Path(tmp)
        bundles = build_bundles(work)
        if a.sizes:
            out["sizes"] = {r: {k: v for k, v in bundles[r].items() if k != "path"} for r in ROLES}
        if a.transfer:
            out["transfer"] = []
            for n, (transport, rate) in enumerate([(t, r) for t in ("serial", "wifi", "ble") for r in (4096, 1_000_000)]):
                out["transfer"].append(await transfer(work / ("t%d" % n), bundles, transport, rate))
                print(json.dumps(out["transfer"][-1]), file=sys.stderr, flush=True)
        if a.prelight:
            out["prelight"] = []
            for n, streaming in enumerate((False, True, False, True)):  # alternated
                out["prelight"].append(await prelight(work / ("p%d" % n), bundles, a.seconds, streaming))
                print(json.dumps(out["prelight"][-1]), file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", action="store_true")
    ap.add_argument("--transfer", action="store_true")
    ap.add_argument("--prelight", action="store_true")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if not (a.sizes or a.transfer or a.prelight):
        a.sizes = a.transfer = a.prelight = True
    res = asyncio.run(main_async(a))
    print(json.dumps(res, indent=None if a.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
