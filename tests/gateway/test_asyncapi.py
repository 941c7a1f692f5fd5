"""docs/asyncapi.yaml is the backbone's contract: every message the gateway publishes on a real Mosquitto
matches exactly one channel of it and validates against that channel's payload schema."""

import json
import os
import re
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as paho
import yaml

from gwharness import connected, load, provision, running, until, write_config

from gateway import __version__, tokens
from gateway.registry import write_private
from protocol import codes
from sim.devsim import SimDevice, SimLink

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
# what the scenario below cannot provoke without minutes of waiting or a full disk
NOT_PROVOKED = {"gatewayEvent", "rollout"}  # rollout: tests/gateway/test_update_mqtt.py


def _doc() -> dict:
    return yaml.safe_load(DOC.read_text())


def _channels(doc) -> dict[str, re.Pattern]:
    out = {}
    for name, ch in doc["channels"].items():
        out[name] = re.compile("^" + re.sub(r"\\\{[a-z]+\\\}", "[^/]+", re.escape(ch["address"])) + "$")
    return out


def _resolve(doc, ref: str):
    node = doc
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def test_the_document_is_asyncapi_3_and_every_reference_resolves():
    doc = _doc()
    assert doc["asyncapi"].startswith("3.") and doc["info"]["version"]
    refs = re.findall(r"\$ref': '([^']+)'", repr(doc))
    assert refs
    for ref in refs:
        _resolve(doc, ref)  # KeyError names a dangling reference
    used = {op["channel"]["$ref"].split("/")[-1] for op in doc["operations"].values()}
    assert used == set(doc["channels"]), "every channel has an operation, every operation a channel"
    for name, ch in doc["channels"].items():
        for p in re.findall(r"\{([a-z]+)\}", ch["address"]):
            assert p in ch.get("parameters", {}), (name, p)
        assert ch["messages"], name


def _check(doc, channels, topic: str, payload: bytes, retained: bool) -> str:
    hits = [n for n, rx in channels.items() if rx.match(topic)]
    assert len(hits) == 1, (topic, hits)
    name = hits[0]
    body = json.loads(payload)
    errors = []
    for msg in doc["channels"][name]["messages"].values():
        m = _resolve(doc, msg["$ref"]) if "$ref" in msg else msg
        try:
            jsonschema.validate(body, dict(doc, **{"$ref": "#/components/messages/%s/payload"
                                                    % msg["$ref"].split("/")[-1]}))
            break
        except jsonschema.ValidationError as e:
            errors.append("%s: %s at %s" % (m.get("name"), e.message, list(e.absolute_path)))
    else:
        raise AssertionError("%s on %s does not match %s: %s" % (payload[:300], topic, name, errors))
    ops = [op for op in doc["operations"].values() if op["channel"]["$ref"].endswith("/" + name)]
    want = [op.get("bindings", {}).get("mqtt", {}).get("retain", False) for op in ops if op["action"] == "send"]
    if retained:
        assert any(want), "%s arrived retained but the contract says it is not" % topic
    return name


async def test_what_the_gateway_publishes_matches_the_contract(mosquitto, subscriber_factory, tmp_path):
    doc = _doc()
    channels = _channels(doc)
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}], broker=mosquitto.url,
                        edges=[("l001", "l002")], lighting="fault_ma = 50", extra="[hass]\ndiscovery = true\n")
    cfg = load(path)
    keys = provision(cfg, [("l001", "light_pole"), ("l002", "light_pole"), ("c001", "container_sensor"),
                           ("k001", "locker")])
    os.makedirs(os.path.dirname(tokens.key_path(cfg.state_dir, "k001")), mode=0o700)
    write_private(tokens.key_path(cfg.state_dir, "k001"), os.urandom(32).hex())
    devs = {d: link.add(SimDevice(d, keys[d], r, caps=codes.CAP_CURRENT_SENSE if r == "light_pole" else 0))
            for d, r in (("l001", "light_pole"), ("l002", "light_pole"), ("c001", "container_sensor"),
                         ("k001", "locker"))}
    seen = subscriber_factory(mosquitto, "#")  # park/# and Home Assistant's discovery
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()

    def request(topic, body):
        pub.publish(topic, json.dumps(dict(body, ts=time.time())), qos=1).wait_for_publish()

    try:
        async with running(cfg) as d:
            await d.uplink.wait_connected(10)
            await connected(link)
            for dev in devs.values():
                await dev.hello()
            devs["l001"].send({"type": "light", "level": 70, "state": 4, "ambient": 3, "lamp_ma": 300})
            devs["l002"].send({"type": "light", "level": 70, "state": 2, "ambient": 3, "lamp_ma": 0})
            devs["c001"].send({"type": "fill", "fill": 97, "temp": 14, "batt": 185})
            devs["c001"].send({"type": "heartbeat", "uptime": 60, "heap": 88, "boots": 2, "status": 16,
                               "fw": 10000, "batt": 185, "dropped": 0})
            devs["k001"].send({"type": "locker", "open": 0, "locked": 15, "occupied": 5, "pending": 0})
            await devs["l001"].event({"type": "motion", "count": 1})
            await devs["k001"].event({"type": "door", "comp": 2, "open": True, "authorized": True})
            await devs["k001"].event({"type": "access", "comp": 2, "result": 1, "token": 0})
            await devs["c001"].event({"type": "alarm", "code": 9, "comp": 0, "value": 170})
            await devs["c001"].event({"type": "fault", "code": 1, "value": 0})
            request("park/stadtpark/device/l001/cmd/req", {"id": "r1", "type": "light_set", "level": 40})
            request("park/stadtpark/device/l001/cmd/req", {"id": "r2", "type": "light_set", "level": 400})
            request("park/stadtpark/gateway/cmd/req", {"id": "r3", "type": "status"})
            request("park/stadtpark/gateway/cmd/req", {"id": "r4", "type": "pickups"})
            request("park/stadtpark/gateway/cmd/req", {"id": "r5", "type": "token", "locker": "k001", "comp": 1,
                                                       "until": "now+1h"})
            request("park/stadtpark/gateway/cmd/req", {"id": "r6"})

            def topics():
                return {m.topic for m in seen.messages}

            want = {"park/stadtpark/gateway/devices", "park/gateway/gw-test/status",
                    "homeassistant/sensor/stadtpark_k001/occupied/config",
                    "park/stadtpark/device/l002/event/lamp_fault", "park/stadtpark/device/c001/event/collection_needed"}
            def versions():  # the hellos' firmware reaches the inventory within gateway.inventory.SETTLE_S
                inv = [json.loads(m.payload) for m in seen.messages if m.topic == "park/stadtpark/gateway/devices"]
                return [x["fw"] for x in inv[-1]["devices"]] if inv else []

            await until(lambda: want <= topics() and sum(t.endswith("/cmd/res") for t in topics()) >= 2
                        and len([m for m in seen.messages if m.topic.endswith("/cmd/res")]) >= 6
                        and versions() == ["1.0.0"] * 4, 20,
                        lambda: "messages; got %s, inventory %s" % (sorted(topics()), versions()))
        await until(lambda: any(json.loads(m.payload).get("state") == "offline" for m in seen.messages
                                if m.topic == "park/gateway/gw-test/status"), 10, "the offline status")
    finally:
        pub.loop_stop()
        pub.disconnect()
        await link.close()
    covered = set()
    for m in list(seen.messages):
        if m.topic.endswith("/cmd/req") and json.loads(m.payload).get("id") in ("r2", "r6"):
            continue  # the backbone's own mistakes, sent on purpose: their answers are checked
        covered.add(_check(doc, channels, m.topic, m.payload, m.retain))
    assert covered | NOT_PROVOKED == set(doc["channels"]), set(doc["channels"]) - covered
    inv = [json.loads(m.payload) for m in seen.messages if m.topic == "park/stadtpark/gateway/devices"][-1]
    assert inv["version"] == __version__ and {x["id"] for x in inv["devices"]} == {"l001", "l002", "c001", "k001"}
    assert [x["fw"] for x in inv["devices"]] == ["1.0.0"] * 4
    status = [json.loads(m.payload) for m in seen.messages if m.topic.endswith("/gateway/cmd/res")]
    assert any(s.get("ok") and s["result"].get("version") == __version__ for s in status if s["id"] == "r3")
