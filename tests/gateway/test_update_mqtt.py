"""Every step of a rollout reaches the backbone (a real Mosquitto) as docs/asyncapi.yaml says: each device's
steps on park/<site>/device/<id>/event/update, the rollout's state retained on park/<site>/gateway/update."""

import json

import pytest

from gwharness import connected, load, provision, running, until, write_config
from test_asyncapi import _channels, _check, _doc
from test_update import make_bundle

from protocol import bundle
from sim.devsim import SimLink
from sim.devsim_ota import SimOtaDevice


@pytest.fixture(scope="module")
def key():
    return bundle.new_release_key()


async def test_rollout_steps_are_published_as_the_contract_says(tmp_path, key, mosquitto, subscriber_factory):
    pub = tmp_path / "release.pub"
    pub.write_bytes(bundle.public_pem(key.public_key()))
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}], broker=mosquitto.url,
                            extra='[update]\nrelease_keys = ["%s"]\nlink_rate = 20000\n' % pub))
    keys = provision(cfg, [("l001", "light_pole"), ("l002", "light_pole")])
    seen = subscriber_factory(mosquitto, "park/stadtpark/#")
    try:
        async with running(cfg) as d:
            await d.uplink.wait_connected(10)
            await connected(link)
            devs = [link.add(SimOtaDevice(i, keys[i], "light_pole")) for i in ("l001", "l002")]
            devs[1].trial_ok = False
            for dev in devs:
                await dev.hello()
            b = await d.update({"action": "import", "bundle": __import__("base64").b64encode(make_bundle(key)).decode()})
            plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"})
            await until(lambda: d.updates.status(plan["rollout"])["state"] == "halted", 20, "the halt")

            def steps():
                return [json.loads(m.payload) for m in seen.messages if m.topic.endswith("/gateway/update")]
            await until(lambda: any(s["step"] == "halted" for s in steps()), 10, "the halted step on MQTT")
    finally:
        await link.close()
    doc = _doc()
    channels = _channels(doc)
    ups = [m for m in seen.messages if "/event/update" in m.topic or m.topic.endswith("/gateway/update")]
    for m in ups:
        _check(doc, channels, m.topic, m.payload, m.retain)
    by_dev = {}
    for m in ups:
        if "/event/update" in m.topic:
            e = json.loads(m.payload)
            by_dev.setdefault(e["device"], []).append(e["data"]["state"])
    assert by_dev["l001"][-1] == "valid" and "receiving" in by_dev["l001"] and "trial" in by_dev["l001"]
    assert by_dev["l002"][-1] == "rolled_back"
    assert [s["step"] for s in steps()] == ["planned", "halted"]
    assert "device l002 rolled back" in steps()[-1]["reason"]
