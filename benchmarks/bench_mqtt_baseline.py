#!/usr/bin/env python3
"""Bare MQTT QoS 1 publish loops next to the gateway's outbox + uplink, on one real Mosquitto.

    python -m benchmarks.bench_mqtt_baseline [--messages 50000] [--inflight 100] [--json]

Rows (all QoS 1, the same ~170-byte event payloads, every message PUBACKed):
  paho        paho-mqtt, its network loop in a thread, <= inflight unacknowledged
  aiomqtt     aiomqtt, <= inflight concurrent `await client.publish(...)`
  outbox      gateway.uplink.Outbox alone: group-committed appends (no broker)
  uplink      gateway.uplink.Uplink end to end: event_nowait -> SQLite WAL commit
              -> MQTT publish -> PUBACK -> row deleted; timed until the outbox is empty

Results are in docs/uplink.md.  The broker runs with set_tcp_nodelay true.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import aiomqtt
import paho.mqtt.client as paho

from gateway.uplink import OutboxConfig, Uplink, UplinkConfig
from gateway.uplink.outbox import Outbox
from sim.broker import Mosquitto

TOPIC = "park/stadtpark/device/l001/event/motion"


def payload(i: int) -> bytes:
    return json.dumps({"id": f"l001-{i}", "ts": 1_800_000_000.0 + i / 1000, "site": "stadtpark", "device": "l001",
                       "kind": "motion", "data": {"count": 1, "eid": i}}, separators=(",", ":")).encode()


def bench_paho(port: int, n: int, inflight: int) -> float:
    payloads = [payload(i) for i in range(n)]
    window = threading.BoundedSemaphore(inflight)
    done = threading.Event()
    acked = 0

    def on_publish(client, userdata, mid, rc, props):  # noqa: ANN001
        nonlocal acked
        acked += 1
        window.release()
        if acked == n:
            done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-paho")
    c.max_inflight_messages_set(inflight)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0, c0 = time.perf_counter(), time.process_time()
    for p in payloads:
        window.acquire()
        c.publish(TOPIC, p, qos=1)
    done.wait(120)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    c.disconnect()
    c.loop_stop()
    return {"msgs_per_s": n / dt, "cpu_us_per_msg": 1e6 * cpu / n}


async def bench_aiomqtt(port: int, n: int, inflight: int) -> float:
    payloads = [payload(i) for i in range(n)]
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-aiomqtt", max_inflight_messages=inflight) as c:
        c.pending_calls_threshold = inflight + 10
        it = iter(payloads)

        async def worker() -> None:
            for p in it:
                await c.publish(TOPIC, p, qos=1)

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return {"msgs_per_s": n / (time.perf_counter() - t0), "cpu_us_per_msg": 1e6 * (time.process_time() - c0) / n}


async def bench_outbox(n: int, durability: str, batch: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        ob = Outbox(Path(d) / "o.sqlite", OutboxConfig(durability=durability))
        await ob.open()
        payloads = [payload(i) for i in range(n)]
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, n, batch):
            fut = None
            for p in payloads[start:start + batch]:
                fut = ob.append(TOPIC, p)
            await fut
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        await ob.close()
    return {"msgs_per_s": n / dt, "cpu_us_per_msg": 1e6 * cpu / n}


async def bench_uplink(port: int, n: int, inflight: int, durability: str, batch: int) -> dict:
    cfg = UplinkConfig.from_mapping({"sites": ["stadtpark"], "broker": f"mqtt://127.0.0.1:{port}",
                                     "gateway_id": "bench", "inflight": inflight,
                                     "outbox": {"durability": durability}})
    bodies = [{"count": 1, "eid": i} for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        async with Uplink(cfg, Path(d) / "outbox.sqlite") as up:
            await up.wait_connected(10)
            t0, c0 = time.perf_counter(), time.process_time()
            durable_lat = []
            for start in range(0, n, batch):
                t1 = time.perf_counter()
                fut = None
                for i in range(start, min(n, start + batch)):
                    fut = up.event_nowait("stadtpark", "l001", "motion", bodies[i], f"l001-{i}", 1_800_000_000.0 + i)
                await fut
                durable_lat.append(time.perf_counter() - t1)
                # Offer load a little faster than it drains instead of filling the disk at once.
                while up.stats().outbox_depth > 20 * batch:
                    await asyncio.sleep(0.001)
            t_durable = time.perf_counter() - t0
            await up.drain(300)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            stats = up.stats()
    durable_lat.sort()
    return {"msgs_per_s": n / dt, "cpu_us_per_msg": 1e6 * cpu / n, "durable_p50_ms": 1000 * durable_lat[len(durable_lat) // 2],
            "durable_p99_ms": 1000 * durable_lat[int(len(durable_lat) * 0.99)], "published": stats.published,
            "append_phase_s": t_durable}


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def soak_uplink(port: int, seconds: float, rate: int, inflight: int) -> dict:
    """A steady `rate` msg/s through the uplink; RSS sampled every tenth of the run."""
    cfg = UplinkConfig.from_mapping({"sites": ["stadtpark"], "broker": f"mqtt://127.0.0.1:{port}",
                                     "gateway_id": "soak", "inflight": inflight})
    samples = []
    with tempfile.TemporaryDirectory() as d:
        async with Uplink(cfg, Path(d) / "outbox.sqlite") as up:
            await up.wait_connected(10)
            t0 = time.monotonic()
            sent = 0
            next_sample = t0
            while (now := time.monotonic()) - t0 < seconds:
                due = int((now - t0) * rate)
                fut = None
                while sent < due:
                    fut = up.event_nowait("stadtpark", "l001", "motion", {"count": 1, "eid": sent},
                                          f"l001-{sent}", time.time())
                    sent += 1
                if fut is not None:
                    await fut
                if now >= next_sample:
                    samples.append((round(now - t0), _rss_kib(), up.stats().outbox_depth))
                    next_sample += seconds / 10
                await asyncio.sleep(0.01)
            await up.drain(60)
            samples.append((round(time.monotonic() - t0), _rss_kib(), up.stats().outbox_depth))
            published = up.stats().published
    return {"sent": sent, "published": published, "rss_kib_samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100, help="events per group commit offered by the caller")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                    help="instead: a steady --rate through the uplink for SECONDS, printing resident memory")
    ap.add_argument("--rate", type=int, default=2000, help="messages per second for --soak")
    args = ap.parse_args()
    if args.soak:
        with Mosquitto() as broker:
            r = asyncio.run(soak_uplink(broker.port, args.soak, args.rate, args.inflight))
        print(json.dumps(r) if args.json else
              f"soak: {r['sent']} sent, {r['published']} published; (s, RSS KiB, outbox depth): {r['rss_kib_samples']}")
        return
    n, w = args.messages, args.inflight
    results: dict = {"messages": n, "inflight": w, "cpus": os.cpu_count()}
    with Mosquitto() as broker:
        results["paho"] = bench_paho(broker.port, n, w)
        results["aiomqtt"] = asyncio.run(bench_aiomqtt(broker.port, n, w))
        results["outbox_full"] = asyncio.run(bench_outbox(n, "full", args.batch))
        results["outbox_normal"] = asyncio.run(bench_outbox(n, "normal", args.batch))
        results["uplink_full"] = asyncio.run(bench_uplink(broker.port, n, w, "full", args.batch))
        results["uplink_normal"] = asyncio.run(bench_uplink(broker.port, n, w, "normal", args.batch))
    results["loadavg_1min"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    bare = results["paho"]["msgs_per_s"]
    print(f"{n} QoS 1 messages, <= {w} in flight, {results['cpus']} CPUs, Mosquitto with set_tcp_nodelay true, "
          f"load average {results['loadavg_1min']:.1f}")
    print("                                         msg/s   CPU us/msg (this process)")
    rows = [("bare paho-mqtt loop", "paho"), ("bare aiomqtt loop", "aiomqtt"),
            ("outbox appends, full (no broker)", "outbox_full"), ("outbox appends, normal (no broker)", "outbox_normal"),
            ("uplink end to end, full", "uplink_full"), ("uplink end to end, normal", "uplink_normal")]
    for label, key in rows:
        r = results[key]
        extra = ""
        if key.startswith("uplink"):
            extra = (f"  = {100 * r['msgs_per_s'] / bare:.0f}% of bare paho; batch durable p50 "
                     f"{r['durable_p50_ms']:.1f} ms p99 {r['durable_p99_ms']:.1f} ms")
        print(f"  {label:36} {r['msgs_per_s']:9.0f} {r['cpu_us_per_msg']:9.1f}{extra}")


if __name__ == "__main__":
    main()
