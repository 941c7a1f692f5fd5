#!/usr/bin/env python3
"""Bytes written to disk per frame by the gateway's outbox (issue 13: ten years on a Pi's SD card).

    python -m benchmarks.bench_disk [--seconds 5] [--rates 100,2000] [--commit-ms 50] [--json]

Traffic: 80 % telemetry (fill, fire and forget), 20 % acked events (door; the
"device ack" waits for the outbox future, i.e. until the event is durable), at
a steady rate. A publisher task plays the broker: it takes committed rows and
acks them 1 ms later (PUBACK), so every row is inserted and then deleted, as
with a broker that keeps up.

Two rows per rate, in the same invocation, each measured from /proc/self/io
(`write_bytes`: bytes this process caused to be sent to the block layer,
writer threads included) over the same traffic:
  baseline  the careful pipeline's store: sqlite3 WAL synchronous=FULL, one
            transaction per received chunk (here: per frame), delete on PUBACK
  outbox    gateway.uplink.Outbox with the gateway's group commit window
            (session.commit_ms) and durability "full"
Goals: <= 1 kB per frame at 100 frames/s, <= 500 B at 2,000 frames/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time

from gateway.uplink.config import OutboxConfig
from gateway.uplink.outbox import PRIO_EVENT, PRIO_TELEMETRY, Outbox

TELEMETRY = b'[{"bn":"urn:dev:park:stadtpark:c001:","bt":1800000000.5,"n":"fill","u":"%","v":40}]'
EVENT = b'{"kind":"door","device":"k001","id":"k001-123","ts":1800000000.5,"body":{"comp":3,"open":true}}'


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def is_event(i: int) -> bool:
    return i % 5 == 4  # 20 % events, spread evenly


async def paced(rate: int, seconds: float, send, chunk=lambda: None) -> int:
    loop = asyncio.get_running_loop()
    n = int(rate * seconds)
    t0 = loop.time()
    tick = 0.01  # frames arrive in 10 ms chunks, as a link's reads do
    i = 0
    while i < n:
        due = min(n, int((loop.time() - t0) * rate) + 1)
        while i < due:
            send(i)
            i += 1
        chunk()
        await asyncio.sleep(tick)
    return n


async def run_outbox(path: str, rate: int, seconds: float, commit_ms: float) -> dict:
    ob = Outbox(path, OutboxConfig(durability="full"), commit_window_s=commit_ms / 1000)
    await ob.open()
    acked_events: list[float] = []
    loop = asyncio.get_running_loop()

    async def publisher():
        while True:
            rows = await ob.take(100)
            await asyncio.sleep(0.001)
            for r in rows:
                ob.ack(r.id)

    def send(i: int) -> None:
        if is_event(i):
            t = loop.time()
            ob.append("park/x/event", EVENT, prio=PRIO_EVENT).add_done_callback(
                lambda f, t=t: acked_events.append(loop.time() - t))
        else:
            ob.append("park/x/telemetry", TELEMETRY, prio=PRIO_TELEMETRY)

    pub = asyncio.create_task(publisher())
    await asyncio.sleep(0.2)
    w0 = write_bytes()
    n = await paced(rate, seconds, send)
    while ob.depth or len(acked_events) < n // 5:
        await asyncio.sleep(0.01)
    w1 = write_bytes()
    pub.cancel()
    await asyncio.gather(pub, return_exceptions=True)
    await ob.close()
    acked_events.sort()
    return {"frames": n, "bytes": w1 - w0, "per_frame": (w1 - w0) / n,
            "event_ack_p99_ms": 1000 * acked_events[int(len(acked_events) * 0.99)]}


async def run_baseline(path: str, rate: int, seconds: float) -> dict:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT, payload BLOB)")
    loop = asyncio.get_running_loop()
    pending: list[tuple[str, bytes]] = []
    acks: list[int] = []

    def flush():
        with db:
            db.execute("BEGIN")
            if acks:
                db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in acks])
                acks.clear()
            if pending:
                db.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", pending)
                last = db.execute("SELECT max(id) FROM outbox").fetchone()[0]
                ids = range(last - len(pending) + 1, last + 1)
                pending.clear()
                loop.call_later(0.001, acks.extend, ids)  # PUBACK 1 ms later, deleted with the next chunk

    def send(i: int) -> None:
        pending.append(("park/x/event", EVENT) if is_event(i) else ("park/x/telemetry", TELEMETRY))

    w0 = write_bytes()
    n = await paced(rate, seconds, send, flush)  # one transaction per received chunk (10 ms of frames)
    await asyncio.sleep(0.01)
    flush()
    w1 = write_bytes()
    db.close()
    return {"frames": n, "bytes": w1 - w0, "per_frame": (w1 - w0) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rates", default="100,2000")
    ap.add_argument("--commit-ms", type=float, default=None, help="default: the gateway's session.commit_ms")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.commit_ms is None:
        from gateway.config import SessionConfig
        a.commit_ms = SessionConfig().commit_ms
    res = {"commit_ms": a.commit_ms, "rates": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        for rate in (int(r) for r in a.rates.split(",")):
            base = asyncio.run(run_baseline(os.path.join(tmp, "base%d.sqlite" % rate), rate, a.seconds))
            ob = asyncio.run(run_outbox(os.path.join(tmp, "outbox%d.sqlite" % rate), rate, a.seconds, a.commit_ms))
            res["rates"][rate] = {"baseline": base, "outbox": ob, "ratio": ob["per_frame"] / max(base["per_frame"], 1)}
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print("80 %% telemetry / 20 %% acked events, %.0f s per row, commit window %.0f ms" % (a.seconds, a.commit_ms))
    for rate, r in res["rates"].items():
        print("%5d frames/s: outbox %6.0f B/frame (event ack p99 %.1f ms); careful pipeline's store %6.0f B/frame; "
              "ratio %.3f" % (rate, r["outbox"]["per_frame"], r["outbox"]["event_ack_p99_ms"],
                              r["baseline"]["per_frame"], r["ratio"]))


if __name__ == "__main__":
    main()
