"""Home Assistant MQTT discovery against the real Mosquitto: retained config messages for each device's entities,
in the AsyncAPI contract, whose value templates (rendered by Jinja as Home Assistant does) read the telemetry the
gateway really publishes; cleared when a device leaves the registry, also while the gateway was stopped."""

import asyncio
import json

import jinja2.sandbox
import pytest

from gwharness import connected, load, provision, running, until, write_config
from test_asyncapi import _channels, _check, _doc

from gateway.config import ConfigError
from gateway.registry import Registry
from gateway.uplink import hass
from sim.devsim import SimDevice, SimLink

ROLES = [("l001", "light_pole"), ("l002", "light_pole"), ("c001", "container_sensor"), ("k001", "locker")]
PREFIX = "homeassistant/sensor/stadtpark_"
ENTITIES = {"l001": {"level", "state"}, "l002": {"level", "state"}, "c001": {"fill", "temperature", "battery"},
            "k001": {"occupied"}}


def _topics(ids) -> set[str]:
    return {"%s%s/%s/config" % (PREFIX, d, o) for d in ids for o in ENTITIES[d]}


async def _retained(mosquitto, subscriber_factory) -> dict[str, bytes]:
    """What a consumer that connects now gets: the retained discovery messages, by topic."""
    s = subscriber_factory(mosquitto, "homeassistant/#")
    n = -1
    while n != len(s.messages):  # they come right after the SUBACK, in one burst
        n = len(s.messages)
        await asyncio.sleep(0.5)
    assert all(m.retain for m in s.messages), [(m.topic, m.payload[:80]) for m in s.messages if not m.retain]
    return {m.topic: m.payload for m in s.messages}


class _This:
    state = "unknown"


def _render(template: str, payload: bytes) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    return env.from_string(template).render(value=payload.decode(), value_json=json.loads(payload), this=_This())


def test_discovery_is_off_by_default_and_its_prefix_is_checked(tmp_path):
    cfg = load(write_config(str(tmp_path), []))
    assert cfg.hass.discovery is False and hass.discovery(cfg, object(), {}, "1") is None
    with pytest.raises(ConfigError) as e:
        load(write_config(str(tmp_path), [], extra='[hass]\ndiscovery = true\nprefix = "home/#"\n'))
    assert e.value.key == "hass.prefix"


async def test_home_assistant_finds_each_device_and_loses_the_removed_ones(mosquitto, subscriber_factory, tmp_path):
    doc = _doc()
    channels = _channels(doc)
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}], broker=mosquitto.url,
                        extra='[hass]\ndiscovery = true\n')
    cfg = load(path)
    keys = provision(cfg, ROLES)
    devs = {d: link.add(SimDevice(d, keys[d], r)) for d, r in ROLES}
    park = subscriber_factory(mosquitto, "park/#")
    live = subscriber_factory(mosquitto, "homeassistant/#")
    try:
        async with running(cfg) as d:
            await d.uplink.wait_connected(10)
            await connected(link)
            for dev in devs.values():
                await dev.hello()
            devs["l001"].send({"type": "light", "level": 70, "state": 4, "ambient": 3, "lamp_ma": 300})
            devs["l001"].send({"type": "heartbeat", "uptime": 1, "heap": 88, "boots": 2, "status": 0, "fw": 10000,
                               "batt": 0, "dropped": 0})
            devs["c001"].send({"type": "fill", "fill": 97, "temp": 14, "batt": 185})
            devs["c001"].send({"type": "heartbeat", "uptime": 60, "heap": 88, "boots": 2, "status": 16,
                               "fw": 10000, "batt": 185, "dropped": 0})
            devs["k001"].send({"type": "locker", "open": 0, "locked": 15, "occupied": 5, "pending": 0})
            await live.until(lambda: _topics(ENTITIES) <= {m.topic for m in live.messages}, 15, "discovery")
            # the hellos' firmware versions come in one republication a moment later (gateway.inventory.SETTLE_S)
            def versioned(t):
                last = [m.payload for m in live.messages if m.topic == t][-1]
                return "sw_version" in json.loads(last)["device"]

            await live.until(lambda: all(versioned(t) for t in _topics(ENTITIES)), 15,
                             "discovery with firmware versions")
            await park.until(lambda: len(park.on("/telemetry")) >= 5 and park.on("/gateway/gw-test/status"), 15,
                             "telemetry")
            configs = await _retained(mosquitto, subscriber_factory)
            assert set(configs) == _topics(ENTITIES)
            for topic, payload in configs.items():
                assert _check(doc, channels, topic, payload, True) == "hassDiscovery"

            # the templates read what the gateway publishes; a heartbeat's pack changes nothing
            def value(dev, obj, kind):
                c = json.loads(configs["%s%s/%s/config" % (PREFIX, dev, obj)])
                packs = [m.payload for m in park.on(c["state_topic"]) if
                         any(r.get("n") == kind for r in json.loads(m.payload))]
                return [_render(c["value_template"], p) for p in packs]

            assert value("c001", "fill", "fill") == ["97"] and value("c001", "fill", "uptime") == [""]
            assert value("c001", "temperature", "fill") == ["14"] and value("c001", "battery", "fill") == ["3.7"]
            assert value("l001", "level", "level") == ["70"] and value("l001", "state", "level") == ["prelight"]
            assert value("l001", "state", "uptime") == ["unknown"]  # Home Assistant keeps the state it has
            assert value("k001", "occupied", "occupied") == ["2"]  # compartments 1 and 3
            c = json.loads(configs[PREFIX + "c001/fill/config"])
            assert c["unit_of_measurement"] == "%" and c["device"]["sw_version"] == "1.0.0"
            assert c["availability_mode"] == "all"
            for a in c["availability"]:
                (last,) = [m.payload for m in park.on(a["topic"])][-1:]
                assert _render(a["value_template"], last) == "online"
            assert len({json.loads(p)["unique_id"] for p in configs.values()}) == len(configs)

            # a device removed by any tool: its entities are cleared (empty retained), the others stay
            with Registry(cfg.registry_path) as reg:
                reg.remove("l002")
            await live.until(lambda: {m.topic for m in live.messages if not m.payload} == _topics(["l002"]), 10,
                             "l002's entities cleared")
        assert set(await _retained(mosquitto, subscriber_factory)) == _topics(["l001", "c001", "k001"])

        # removed while the gateway is stopped: cleared when it starts again
        with Registry(cfg.registry_path) as reg:
            reg.remove("k001")
        async with running(cfg) as d:
            await d.uplink.wait_connected(10)
            await live.until(lambda: any(m.topic == PREFIX + "k001/occupied/config" and not m.payload
                                         for m in live.messages), 10, "k001's entity cleared")
            await until(lambda: d.uplink.stats().outbox_depth == 0, 10, "the outbox drained")
        assert set(await _retained(mosquitto, subscriber_factory)) == _topics(["l001", "c001"])
    finally:
        await link.close()
