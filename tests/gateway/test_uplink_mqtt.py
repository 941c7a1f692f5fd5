"""The uplink against a real Mosquitto: publish path, outages, kill -9, commands, availability, will."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from gateway.uplink import CommandError, Uplink, UplinkConfig
from sim.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


MODE = {"process": "off"}  # [uplink] process of every uplink a test here makes; set by the fixture below


@pytest.fixture(autouse=True, params=["off", "on"], ids=["inline", "process"])
def uplink_process(request):
    """Every test in both modes: the MQTT client in the gateway's loop, and in its own process."""
    MODE["process"] = request.param
    yield request.param
    MODE["process"] = "off"


def config(broker, **kw) -> UplinkConfig:
    table = {"sites": ["stadtpark"], "broker": broker.url, "gateway_id": kw.pop("gateway_id", "gw-test"),
             "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "keepalive_s": 5, "process": MODE["process"]}
    table.update(kw)
    return UplinkConfig.from_mapping(table)


def first_seen_order(values: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


async def wait_until(pred, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_event_telemetry_and_availability_reach_the_backbone(mosquitto, subscriber_factory, tmp_path):
    sub = subscriber_factory(mosquitto, "park/#")
    async with Uplink(config(mosquitto), tmp_path / "outbox.sqlite") as up:
        await up.wait_connected(10)
        await up.event("stadtpark", "c001", "alarm", {"alarm": "fire", "value": 71}, "c001-17", 1_800_000_000.5)
        await up.telemetry("stadtpark", "c001", "container_sensor",
                           {"type": "fill", "fill": 80, "temp": 22, "batt": None}, ts=1_800_000_001.0)
        await up.availability("stadtpark", "c001", True, ts=1_800_000_002.0)
        await up.drain(10)
        assert up.stats().published == 3 and up.stats().outbox_depth == 0
    sub.wait(lambda: len(sub.on("/status")) >= 2 and sub.on("availability"), what="all messages")
    [event] = sub.json_on("park/stadtpark/device/c001/event/alarm")
    assert event == {"id": "c001-17", "ts": 1_800_000_000.5, "site": "stadtpark", "device": "c001",
                     "kind": "alarm", "data": {"alarm": "fire", "value": 71}}
    [pack] = sub.json_on("park/stadtpark/device/c001/telemetry")
    assert pack == [{"bn": "urn:dev:park:stadtpark:c001:", "bt": 1_800_000_001.0, "n": "fill", "v": 80, "u": "%"},
                    {"n": "temp", "v": 22, "u": "Cel"}]
    [avail] = sub.on("park/stadtpark/device/c001/availability")
    assert json.loads(avail.payload) == {"state": "online", "ts": 1_800_000_002.0}
    states = [json.loads(m.payload)["state"] for m in sub.on("park/gateway/gw-test/status")]
    assert states == ["online", "offline"]  # online on connect, offline on a clean stop


@pytest.mark.parametrize("direct", [True, False], ids=["paho-callback", "aiomqtt-publish"])
async def test_both_drain_paths_keep_order_with_a_full_window(mosquitto, subscriber_factory, tmp_path, direct):
    sub = subscriber_factory(mosquitto, "park/stadtpark/device/+/event/#")
    async with Uplink(config(mosquitto, inflight=20, process="off"), tmp_path / "outbox.sqlite") as up:
        up._link.direct = direct  # both paths of the in-loop client (the process uses the first)
        await up.wait_connected(10)
        for b in range(10):
            futs = [up.event_nowait("stadtpark", "l002", "motion", {}, str(b * 200 + i), 1.8e9) for i in range(200)]
            await futs[-1]
        await up.drain(20)
        assert up.stats().published == 2000 and up.stats().inflight == 0
    await sub.until(lambda: len(sub.messages) >= 2000, what="2000 events")
    assert [int(json.loads(m.payload)["id"]) for m in sub.messages] == list(range(2000))


async def test_broker_outage_outbox_grows_then_drains_in_order(mosquitto, subscriber_factory, tmp_path):
    # A persistent subscriber session (the broker has persistence on), like a backbone consumer.
    sub = subscriber_factory(mosquitto, "park/stadtpark/device/+/event/#", client_id="consumer", clean=False)
    async with Uplink(config(mosquitto), tmp_path / "outbox.sqlite") as up:
        await up.wait_connected(10)
        n = 0

        async def send(count):
            nonlocal n
            futs = [up.event_nowait("stadtpark", "l001", "motion", {"count": 1}, str(n + i), 1_800_000_000.0 + n + i)
                    for i in range(count)]
            n += count
            await futs[-1]

        await send(200)
        await sub.until(lambda: len(sub.messages) >= 200, what="the first 200 events")

        mosquitto.stop()
        await wait_until(lambda: not up.stats().connected, what="the uplink to notice the outage")
        for _ in range(15):
            await send(100)
        stats = up.stats()
        assert not stats.connected
        assert stats.outbox_depth >= 1500  # everything sent during the outage is stored
        assert stats.oldest_age_s is not None

        mosquitto.start()
        await up.drain(30)
        assert up.stats().reconnects >= 1

    sub.wait(lambda: len({int(json.loads(m.payload)["id"]) for m in sub.messages}) >= 1700, what="the backlog")
    ids = [int(json.loads(m.payload)["id"]) for m in sub.messages]
    assert first_seen_order(ids) == list(range(1700))  # nothing lost, and in order


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from gateway.uplink import Uplink, UplinkConfig
    port, outbox, mode, inflight, process = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    cfg = UplinkConfig.from_mapping({"sites": ["stadtpark"], "broker": "mqtt://127.0.0.1:" + port,
        "gateway_id": "gw-child", "inflight": inflight, "reconnect_min_s": 0.05, "keepalive_s": 5,
        "process": process})
    async def main():
        async with Uplink(cfg, outbox) as up:
            await up.wait_connected(10)
            print("connected", flush=True)
            if mode == "produce":
                for b in range(30, 50):
                    futs = [up.event_nowait("stadtpark", "k001", "door", {"n": b * 100 + i},
                                            str(b * 100 + i), 1.8e9) for i in range(100)]
                    await futs[-1]
                    print("durable", b * 100 + 99, flush=True)  # what a device would now be acked for
                await asyncio.sleep(3600)
            elif mode == "drain":
                await up.drain(60)
                print("drained", flush=True)
            else:
                await asyncio.sleep(3600)
    asyncio.run(main())
""")


def spawn(broker, outbox, mode, inflight=100):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(broker.port), str(outbox), mode, str(inflight),
                             MODE["process"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    line = proc.stdout.readline()
    if line.strip() != "connected":
        proc.kill()
        raise AssertionError(f"child did not connect: {line!r} {proc.stderr.read()}")
    return proc


async def _prefill(outbox, n):
    cfg = UplinkConfig.from_mapping({"sites": ["stadtpark"], "broker": f"mqtt://127.0.0.1:{free_port()}",
                                     "gateway_id": "gw-child", "reconnect_min_s": 5, "process": MODE["process"]})
    async with Uplink(cfg, outbox) as up:
        for b in range(0, n, 100):
            futs = [up.event_nowait("stadtpark", "k001", "door", {"n": i}, str(i), 1.8e9) for i in range(b, b + 100)]
            await futs[-1]
        assert up.stats().outbox_depth == n and not up.stats().connected


def test_kill_9_with_a_half_drained_outbox_then_restart_loses_nothing(mosquitto, subscriber_factory, tmp_path):
    outbox = tmp_path / "outbox.sqlite"
    sub = subscriber_factory(mosquitto, "park/stadtpark/device/k001/event/#")
    # A backlog from an earlier outage (events 0-2999, stored while no broker answered) ...
    asyncio.run(_prefill(outbox, 3000))
    # ... then a gateway that drains it while storing events 3000-4999; a small
    # window slows the drain so the kill lands in the middle of it.
    proc = spawn(mosquitto, outbox, "produce", inflight=2)
    sub.wait(lambda: len(sub.messages) >= 300, what="the drain to start")
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    durable = [int(line.split()[1]) for line in out.splitlines() if line.startswith("durable")]
    acked_upto = durable[-1] if durable else 2999  # the prefilled backlog was durable anyway
    with contextlib.closing(sqlite3.connect(outbox)) as db:
        left = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    received = len(sub.messages)
    assert left > 0 and received < acked_upto + 1, "the kill should land mid-drain"

    proc = spawn(mosquitto, outbox, "drain")
    assert proc.stdout.readline().strip() == "drained"
    proc.terminate()
    proc.wait(10)
    sub.wait(lambda: len({json.loads(m.payload)["data"]["n"] for m in sub.messages}) >= acked_upto + 1,
             what="every durable event")
    ids = first_seen_order([json.loads(m.payload)["data"]["n"] for m in sub.messages])
    assert ids[: acked_upto + 1] == list(range(acked_upto + 1))
    assert ids == list(range(len(ids)))  # and nothing out of order beyond that either


def test_last_will_marks_a_killed_gateway_offline(mosquitto, subscriber_factory, tmp_path):
    sub = subscriber_factory(mosquitto, "park/gateway/gw-child/status")
    proc = spawn(mosquitto, tmp_path / "outbox.sqlite", "idle")
    sub.wait(lambda: sub.json_on("status"), what="online status")
    assert sub.json_on("status")[0]["state"] == "online"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    sub.wait(lambda: len(sub.on("status")) >= 2, what="the last will")
    will = sub.json_on("status")[-1]
    assert will == {"state": "offline", "gateway": "gw-child", "sites": ["stadtpark"], "reason": "connection lost"}
    # Retained: a consumer that connects later learns the gateway is offline.
    late = subscriber_factory(mosquitto, "park/gateway/gw-child/status")
    late.wait(lambda: late.messages, what="the retained status")
    assert late.messages[0].retain and json.loads(late.messages[0].payload)["state"] == "offline"


async def test_availability_is_retained_per_device(mosquitto, subscriber_factory, tmp_path):
    async with Uplink(config(mosquitto), tmp_path / "outbox.sqlite") as up:
        await up.wait_connected(10)
        await up.availability("stadtpark", "l001", True)
        await up.availability("stadtpark", "l002", True)
        await up.availability("stadtpark", "l002", False)
        await up.drain(10)
    late = subscriber_factory(mosquitto, "park/stadtpark/device/+/availability")
    late.wait(lambda: len(late.messages) >= 2, what="retained availability")
    time.sleep(0.2)
    got = {m.topic.split("/")[3]: (m.retain, json.loads(m.payload)["state"]) for m in late.messages}
    assert got == {"l001": (True, "online"), "l002": (True, "offline")}
    assert len(late.messages) == 2  # only the last state per device is retained


async def test_commands_are_answered_with_their_correlation_id(mosquitto, subscriber_factory, tmp_path):
    calls = []

    async def handler(site, device_id, command, corr):
        calls.append((site, device_id, command, corr))
        if command["type"] == "unlock" and command.get("comp") == 99:
            raise CommandError("bad_value", "no compartment 99")
        if command["type"] == "slow":
            await asyncio.sleep(5)
        return {"queued": True, "device": device_id}

    responses = subscriber_factory(mosquitto, "park/stadtpark/+/+/cmd/res")
    gw_responses = subscriber_factory(mosquitto, "park/stadtpark/gateway/cmd/res")
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        async with Uplink(config(mosquitto, command_timeout_s=0.5), tmp_path / "outbox.sqlite") as up:
            up.on_command(handler)
            await up.wait_connected(10)
            req = "park/stadtpark/device/l001/cmd/req"
            pub.publish(req, json.dumps({"id": "r1", "ts": time.time(), "type": "light_set", "level": 40}), qos=1).wait_for_publish()
            pub.publish(req, json.dumps({"id": "r1", "ts": time.time(), "type": "light_set", "level": 40}), qos=1).wait_for_publish()
            pub.publish("park/stadtpark/device/k001/cmd/req",
                        json.dumps({"id": "r2", "ts": time.time(), "type": "unlock", "comp": 99}), qos=1).wait_for_publish()
            pub.publish(req, b"{not json", qos=1).wait_for_publish()
            pub.publish(req, json.dumps({"ts": time.time(), "type": "reboot"}), qos=1).wait_for_publish()
            pub.publish(req, json.dumps({"id": "r3", "ts": time.time(), "type": "slow"}), qos=1).wait_for_publish()
            pub.publish("park/stadtpark/gateway/cmd/req", json.dumps({"id": "g1", "ts": time.time(), "type": "status"}),
                        qos=1).wait_for_publish()
            await responses.until(lambda: len(responses.messages) >= 6, 10, "6 responses")
            await gw_responses.until(lambda: gw_responses.messages, 10, "gateway response")
    finally:
        pub.loop_stop()
        pub.disconnect()

    by_id: dict = {}
    for m in responses.messages:
        body = json.loads(m.payload)
        by_id.setdefault(body["id"], []).append((m.topic, body))
    # r1 was delivered twice but run once; both deliveries got the same answer.
    assert [c for c in calls if c[3] == "r1"] == [("stadtpark", "l001", {"type": "light_set", "level": 40}, "r1")]
    assert len(by_id["r1"]) == 2 and by_id["r1"][0] == by_id["r1"][1]
    topic, r1 = by_id["r1"][0]
    assert topic == "park/stadtpark/device/l001/cmd/res"
    assert r1["ok"] is True and r1["result"] == {"queued": True, "device": "l001"}
    [(topic, r2)] = by_id["r2"]
    assert topic == "park/stadtpark/device/k001/cmd/res"
    assert r2["ok"] is False and r2["error"] == {"code": "bad_value", "message": "no compartment 99"}
    [(_, r3)] = by_id["r3"]
    assert r3["ok"] is False and r3["error"]["code"] == "timeout"
    malformed = [b for _, b in by_id[None]]
    assert sorted(b["error"]["code"] for b in malformed) == ["malformed", "malformed"]
    assert any("id must be" in b["error"]["message"] for b in malformed)
    [g1] = [json.loads(m.payload) for m in gw_responses.messages]
    assert g1["id"] == "g1" and g1["ok"] is True
    assert ("stadtpark", None, {"type": "status"}, "g1") in calls


async def test_drops_are_counted_and_announced_to_the_backbone(mosquitto, subscriber_factory, tmp_path):
    sub = subscriber_factory(mosquitto, "park/gateway/gw-test/event/#", client_id="ops", clean=False)
    port = mosquitto.port
    mosquitto.stop()
    cfg = config(mosquitto, outbox={"max_messages": 10})
    async with Uplink(cfg, tmp_path / "outbox.sqlite") as up:
        for i in range(25):
            await up.telemetry("stadtpark", "c001", "container_sensor", [{"n": "fill", "u": "%", "v": i}],
                               ts=1.8e9 + i)
        stats = up.stats()
        assert stats.outbox_depth == 10
        # 25 packs + the drop announcement, 10 kept: 16 dropped, telemetry first.
        assert stats.dropped == {"size_telemetry": 16} and stats.dropped_total == 16
        mosquitto.start()
        assert mosquitto.port == port
        await up.drain(20)
    await sub.until(lambda: sub.on("outbox_drop"), what="the outbox_drop event")
    body = sub.json_on("outbox_drop")[0]
    assert body["kind"] == "outbox_drop" and body["data"]["dropped"]["size_telemetry"] >= 1


async def test_the_drain_takes_its_pubacks_without_paho_s_per_packet_objects(mosquitto, subscriber_factory, tmp_path,
                                                                             monkeypatch):
    import paho.mqtt._packet as packet

    decoded = []
    real = packet.decode_puback
    monkeypatch.setattr(packet, "decode_puback", lambda *a: decoded.append(a) or real(*a))
    sub = subscriber_factory(mosquitto, "park/stadtpark/device/+/event/#")
    async with Uplink(config(mosquitto, process="off"), tmp_path / "outbox.sqlite") as up:
        await up.wait_connected(10)
        futs = [up.event_nowait("stadtpark", "k001", "door", {}, str(i), 1.8e9) for i in range(500)]
        await futs[-1]
        await up.drain(20)
        assert up.stats().published == 500 and up.stats().inflight == 0
        pc = up._link._client._client
        assert not pc._out_messages and pc._inflight_messages == 0  # paho's books agree: nothing left in flight
    await sub.until(lambda: len(sub.messages) >= 500, what="500 events")
    assert [int(json.loads(m.payload)["id"]) for m in sub.messages] == list(range(500))
    assert len(decoded) == 2  # only aiomqtt's own publishes (the `online` and `offline` status) took paho's path
