"""kill -9 of the daemon in the middle of traffic, then restart: no event that was acked to a device is lost.

The daemon runs as a real process (`park-gateway run`), the backbone is a real
Mosquitto, the devices are sim.devsim TEST PEERS over TCP that keep
sending (and retransmitting unacked events) across the crash.
"""

import asyncio
import json
import signal
import sys

from gwharness import load, provision, write_config

from sim.devsim import SimDevice, SimLink

IDS = ("c001", "c002", "k001", "k002")


async def _start(path, log):
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", "run", "--config", path,
                                                stdout=log, stderr=log)


async def test_kill_9_mid_traffic_loses_nothing_that_was_acked(tmp_path, mosquitto, subscriber_factory):
    sub = subscriber_factory(mosquitto, "park/+/device/+/event/#")
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}], broker=mosquitto.url)
    cfg = load(path)
    keys = provision(cfg, [(i, "container_sensor" if i[0] == "c" else "locker") for i in IDS])
    devs = [link.add(SimDevice(i, keys[i], "container_sensor" if i[0] == "c" else "locker")) for i in IDS]
    log = open(tmp_path / "daemon.log", "ab")
    proc = await _start(path, log)
    acked: list[str] = []
    stop = asyncio.Event()
    tasks = []

    async def traffic(dev):
        n = 0
        while not stop.is_set():
            n += 1
            if dev.role == "locker":
                msg = {"type": "door", "comp": 1 + n % 8, "open": bool(n % 2), "authorized": True}
            else:
                msg = {"type": "alarm", "code": 4, "comp": 0, "value": n}
            eid = await dev.event(msg, retries=40, base=0.1)
            acked.append("%s-%d" % (dev.id, eid))

    try:
        await asyncio.wait_for(link.connected.wait(), 15)
        for d in devs:
            await d.hello(timeout=15)
        tasks += [asyncio.create_task(traffic(d)) for d in devs]

        async def acks_reach(n, what):
            loop = asyncio.get_running_loop()
            end = loop.time() + 30
            while len(acked) < n:
                await asyncio.sleep(0.005)
                failed = [t for t in tasks if t.done()]
                if failed or loop.time() > end or proc.returncode is not None:
                    log.flush()
                    raise AssertionError("%s: %d acks; %s\n%s" % (what, len(acked), failed and failed[0].exception(),
                                                                 (tmp_path / "daemon.log").read_text()[-3000:]))

        await acks_reach(150, "before the kill")
        proc.send_signal(signal.SIGKILL)  # mid-traffic: events are in flight right now
        await proc.wait()
        at_kill = len(acked)
        proc = await _start(path, log)
        await acks_reach(at_kill + 150, "after the restart")
        assert link.unsent > 0  # the devices kept transmitting while no gateway was there
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        want = set(acked)

        def got():
            return {json.loads(m.payload)["id"] for m in sub.on("/event/")}

        await sub.until(lambda: want <= got(), timeout=30, what="every acked event at the backbone")
        assert want <= got()
        # the restart resumed each device's replay window and downlink counter: no resync was needed
        assert all(d.resyncs == 0 for d in devs)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)
        log.close()
        await link.close()
