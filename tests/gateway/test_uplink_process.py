"""The uplink's MQTT client in its own process: supervision, a clean stop, no orphans (gateway/uplink/process.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from gateway.uplink import Uplink, UplinkConfig
from gateway.uplink.config import UplinkConfigError

from gwharness import ROOT, write_config


def config(broker, **kw) -> UplinkConfig:
    table = {"sites": ["stadtpark"], "broker": broker.url, "gateway_id": "gw-proc", "reconnect_min_s": 0.05,
             "reconnect_max_s": 0.5, "keepalive_s": 5, "process": "on"}
    table.update(kw)
    return UplinkConfig.from_mapping(table)


def first_seen_order(values: list[int]) -> list[int]:
    return list(dict.fromkeys(values))


async def wait_until(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, task)) as f:
            out += [int(c) for c in f.read().split()]
    return out


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("process %d outlived its gateway by %.0f s" % (pid, timeout))
        time.sleep(0.02)


def test_the_setting_is_validated_and_auto_follows_the_cpus(monkeypatch):
    assert UplinkConfig.from_mapping({"sites": ["s"]}).process == "auto"
    with pytest.raises(UplinkConfigError) as e:
        UplinkConfig.from_mapping({"sites": ["s"], "process": "maybe"})
    assert e.value.key == "uplink.process"
    auto = UplinkConfig.from_mapping({"sites": ["s"]})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert not auto.use_process  # one core: the hand-over would cost without a second core to gain
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert auto.use_process
    assert not UplinkConfig.from_mapping({"sites": ["s"], "process": "off"}).use_process


async def test_a_killed_uplink_process_is_restarted_with_its_reason_logged_and_loses_nothing(
        mosquitto, subscriber_factory, tmp_path, caplog):
    sub = subscriber_factory(mosquitto, "park/stadtpark/device/+/event/#")
    caplog.set_level(logging.INFO, "park.uplink")
    async with Uplink(config(mosquitto, inflight=5), tmp_path / "outbox.sqlite") as up:
        await up.wait_connected(10)
        first = up._link.pid
        assert first in children(os.getpid())
        futs = [up.event_nowait("stadtpark", "k001", "door", {}, str(i), 1.8e9) for i in range(3000)]
        await futs[-1]  # durable: a device would be acked now, whatever happens to the uplink process
        await sub.until(lambda: len(sub.messages) >= 100, what="the drain to start")
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: up._link.pid not in (None, first) and up.stats().connected, 10,
                         "a new uplink process")
        assert up._link.restarts == 1 and up.stats().reconnects >= 1
        assert up.stats().as_dict()["process"] == {"pid": up._link.pid, "restarts": 1}  # `park-gateway status`
        assert any("uplink process killed by SIGKILL; restarting it" in r.getMessage() for r in caplog.records)
        futs = [up.event_nowait("stadtpark", "k001", "door", {}, str(i), 1.8e9) for i in range(3000, 3100)]
        await futs[-1]
        await up.drain(30)
    await sub.until(lambda: len({m.payload for m in sub.messages}) >= 3100, what="every event")
    assert first_seen_order([int(json.loads(m.payload)["id"]) for m in sub.messages]) == list(range(3100))


async def test_commands_and_errors_cross_the_process_boundary(mosquitto, subscriber_factory, tmp_path):
    import paho.mqtt.client as paho

    async def handler(site, device_id, command, corr):
        return {"pid": os.getpid(), "device": device_id}

    res = subscriber_factory(mosquitto, "park/stadtpark/device/+/cmd/res")
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        async with Uplink(config(mosquitto), tmp_path / "outbox.sqlite") as up:
            up.on_command(handler)
            await up.wait_connected(10)
            pub.publish("park/stadtpark/device/l001/cmd/req",
                        json.dumps({"id": "r1", "ts": time.time(), "type": "reboot"}), qos=1).wait_for_publish()
            await res.until(lambda: res.messages, 10, "the response")
            mosquitto.stop()
            await wait_until(lambda: not up.stats().connected and up.stats().last_error, 10, "the outage reported")
    finally:
        pub.loop_stop()
    body = json.loads(res.messages[0].payload)
    assert body["id"] == "r1" and body["ok"] and body["result"] == {"pid": os.getpid(), "device": "l001"}


GATEWAY_STATUS = "park/gateway/gw-test/status"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_gateway_leaves_no_orphan_uplink_process(mosquitto, subscriber_factory, tmp_path, sig):
    cfg = write_config(tmp_path, broker=mosquitto.url)
    with open(cfg) as f:
        text = f.read().replace('gateway_id = "gw-test"\n', 'gateway_id = "gw-test"\nprocess = "on"\n', 1)
    with open(cfg, "w") as f:
        f.write(text)
    sub = subscriber_factory(mosquitto, GATEWAY_STATUS)
    log = open(tmp_path / "gw.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", cfg], cwd=ROOT,
                            stdout=log, stderr=log)
    try:
        sub.wait(lambda: sub.json_on("status"), 20, "the gateway online")
        [child] = children(proc.pid)
        proc.send_signal(sig)
        assert proc.wait(15) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        wait_gone(child)
        sub.wait(lambda: len(sub.on("status")) >= 2, 15, "the offline status")
        # a clean stop says so; a killed gateway's uplink vanishes with it and the broker sends the will
        reason = "stopped" if sig == signal.SIGTERM else "connection lost"
        assert sub.json_on("status")[-1]["reason"] == reason, (tmp_path / "gw.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
