"""The gateway's update service (issue 11) against the CPython model of SPEC 10's device side
(sim/devsim_ota.py, a simulator): canaries first, halts by itself, resumes after a lost
connection, refuses what the city did not release or what would go below a floor."""

import asyncio
import json

import pytest

from gwharness import connected, load, provision, running, until, write_config

from protocol import bundle, codes
from sim.devsim import SimLink
from sim.devsim_ota import SimOtaDevice

FILES = {"common/runtime.mpy": b"M\x06" + bytes(range(256)) * 6, "light_pole/app.mpy": b"M\x06" + b"pole" * 300}


def make_bundle(key, fw=10100, floor=0, role="light_pole", mpy=6, pad=0):
    rid = bundle.ROLE_IDS[role]
    files = {p.replace("light_pole", role): d for p, d in FILES.items()}
    if pad:
        files[role + "/pad.mpy"] = bytes(i % 251 for i in range(pad))
    h = bundle.ImageHeader(rid, fw, mpy, 11900, 1, floor, [(p, 0, b"") for p in files])
    return bundle.sign(key, bundle.build_image(h, files), 0, role, fw, mpy, 11900, 1, floor)


@pytest.fixture(scope="module")
def key():
    return bundle.new_release_key()


@pytest.fixture
async def park(tmp_path, key):
    pub = tmp_path / "release.pub"
    pub.write_bytes(bundle.public_pem(key.public_key()))
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}],
                            extra='[update]\nrelease_keys = ["%s"]\nstall_s = 3\ntrial_s = 3\nlink_rate = 20000\n' % pub))
    ids = [("l001", "light_pole"), ("l002", "light_pole"), ("l003", "light_pole"), ("c001", "container_sensor")]
    keys = provision(cfg, ids)
    async with running(cfg) as d:
        await connected(link)
        devs = {i: link.add(SimOtaDevice(i, keys[i], r)) for i, r in ids}
        for dev in devs.values():
            await dev.hello()
        yield d, link, devs
    await link.close()


def offered(dev):
    return [m for m in dev.received if m["type"] == "update_offer"]


async def test_the_canary_is_updated_first_and_then_the_rest(park, key):
    d, link, devs = park
    seen = []
    d.subscribe(lambda ev: seen.append(ev) if ev["kind"] in ("update", "rollout") else None)
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark", "canary": 1})
    assert [x["device"] for x in plan["devices"] if x["canary"]] == ["l001"]
    assert {x["device"] for x in plan["devices"]} == {"l001", "l002", "l003"}  # the bundle's role only
    await until(lambda: devs["l001"].ustate == codes.US_RECEIVING, 5, "the canary's transfer")
    assert not offered(devs["l002"]) and not offered(devs["l003"])
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "done", 20, "the rollout")
    st = d.updates.status(plan["rollout"])
    assert st["counts"] == {"valid": 3}
    assert all(x["bytes"] == x["size"] for x in st["devices"])
    first_other = min(seen.index(e) for e in seen if e.get("device") in ("l002", "l003"))
    assert any(e.get("device") == "l001" and e.get("state") == "valid" for e in seen[:first_other])
    assert {dev.fw for i, dev in devs.items() if i != "c001"} == {10100} and devs["c001"].fw == 10000
    assert not offered(devs["c001"])
    assert d.device("l002")["fw"] == 10100
    # a device already at the version is not updated again
    again = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"})
    assert {x["state"] for x in again["devices"]} == {"current"} and again["state"] == "done"


async def test_a_canary_that_rolls_back_halts_the_rollout_and_nothing_else_is_offered(park, key):
    d, link, devs = park
    devs["l001"].trial_ok = False
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"})
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "halted", 20, "the halt")
    st = d.updates.status(plan["rollout"])
    l001 = next(x for x in st["devices"] if x["device"] == "l001")
    assert (l001["state"], l001["reason"]) == ("rolled_back", "trial")
    assert "canary l001 rolled back" in st["reason"]
    assert devs["l001"].fw == 10000 and devs["l001"].reboots == 1
    await asyncio.sleep(0.3)
    assert not offered(devs["l002"]) and not offered(devs["l003"])
    listed = (await d.update({"action": "status"}))["rollouts"]
    assert listed[-1]["state"] == "halted"


async def test_a_device_refusal_is_shown_with_its_reason_and_nothing_changes_on_it(park, key):
    d, link, devs = park
    devs["l001"].space = 100
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"})
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "halted", 10, "the halt")
    l001 = next(x for x in d.updates.status(plan["rollout"])["devices"] if x["device"] == "l001")
    assert (l001["state"], l001["reason"]) == ("refused", "space")
    assert devs["l001"].fw == 10000 and devs["l001"].chunks == 0
    # the operator resumes: the canary stays refused, so the others still wait for a valid canary
    await d.update({"action": "resume", "rollout": plan["rollout"]})
    await asyncio.sleep(0.3)
    assert not offered(devs["l002"])
    with pytest.raises(Exception) as e:
        await d.update({"action": "resume", "rollout": plan["rollout"]})
    assert e.value.code == "not_halted"


async def test_a_transfer_resumes_from_the_device_offset_after_the_connection_drops(park, key):
    d, link, devs = park
    dev = devs["l001"]
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark", "devices": ["l001"]})
    await until(lambda: dev.chunks >= 5, 10, "some chunks")
    dev.ignore_chunks = True  # chunks are lost from here on, then the connection drops
    held = len(dev.buf)
    await asyncio.sleep(0.5)
    link.drop_connection()
    await asyncio.sleep(0.5)
    dev.ignore_chunks = False
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "done", 20, "the rollout")
    offs = [m["off"] for m in dev.received if m["type"] == "update_chunk"]
    assert offs.count(0) == 1, "started again from 0"
    assert held > 0 and dev.fw == 10100
    assert len(offered(dev)) >= 2  # asked again where it stood, and went on from there
    assert offs[offs.index(held, offs.index(held) + 1) - 1] != 0


async def test_a_device_that_stops_answering_fails_its_check_and_halts_the_rollout(park, key):
    d, link, devs = park
    devs["l001"].ignore_chunks = True
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"})
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "halted", 20, "the halt")
    l001 = next(x for x in d.updates.status(plan["rollout"])["devices"] if x["device"] == "l001")
    assert (l001["state"], l001["reason"]) == ("failed", "no_progress")


async def test_what_the_city_did_not_release_or_a_downgrade_is_refused_and_shown(park, key):
    d, link, devs = park
    other = bundle.new_release_key()
    with pytest.raises(Exception) as e:
        await d.update({"action": "import", "bundle": _b64(make_bundle(other)), "name": "evil.bundle"})
    assert e.value.code == "unknown_key"
    data = bytearray(make_bundle(key))
    data[-100] ^= 1
    with pytest.raises(Exception) as e:
        await d.update({"action": "import", "bundle": _b64(bytes(data))})
    assert e.value.code in ("digest", "malformed")
    st = await d.update({"action": "status"})
    assert [r["code"] for r in st["refused"]][-2:] == ["unknown_key", e.value.code]
    assert "evil.bundle" in st["refused"][-2]["what"] and st["bundles"] == []
    # a bundle for lockers cannot be planned onto a pole
    k = await d.update({"action": "import", "bundle": _b64(make_bundle(key, role="locker"))})
    with pytest.raises(Exception) as e:
        await d.update({"action": "plan", "bundle": k["bundle"], "site": "stadtpark", "devices": ["l001"]})
    assert e.value.code == "role"
    # once 1.2.0 with floor 1.2.0 is valid, 1.1.0 is below the floor
    b12 = await d.update({"action": "import", "bundle": _b64(make_bundle(key, fw=10200, floor=10200))})
    plan = await d.update({"action": "plan", "bundle": b12["bundle"], "site": "stadtpark", "devices": ["l001"]})
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "done", 20, "1.2.0")
    b11 = await d.update({"action": "import", "bundle": _b64(make_bundle(key, fw=10100))})
    with pytest.raises(Exception) as e:
        await d.update({"action": "plan", "bundle": b11["bundle"], "site": "stadtpark", "devices": ["l001"]})
    assert e.value.code == "downgrade" and "1.2.0" in e.value.message
    assert not [m for m in offered(devs["l001"]) if m["fw"] == 10100]
    st = await d.update({"action": "status"})
    assert st["refused"][-1]["code"] == "downgrade"


async def test_the_backbone_asks_the_same_operations_at_its_own_site(park, key):
    d, link, devs = park
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    res = await d._backbone_command("stadtpark", None, {"type": "update", "action": "plan", "bundle": b["bundle"],
                                                       "canary": 1}, "r1")
    assert res["site"] == "stadtpark" and res["state"] == "running"
    res = await d._backbone_command("stadtpark", None, {"type": "update", "action": "halt",
                                                       "rollout": res["rollout"]}, "r2")
    assert res["state"] == "halted" and res["reason"] == "operator"
    from gateway.uplink import CommandError
    with pytest.raises(CommandError) as e:
        await d._backbone_command("stadtpark", None, {"type": "update", "action": "fly"}, "r3")
    assert e.value.code == "bad_request"
    json.dumps(d.updates.status())  # what the API and the backbone return is JSON


def _b64(data):
    import base64
    return base64.b64encode(data).decode()


async def test_a_lost_valid_report_is_asked_again_not_taken_for_a_failure(park, key, monkeypatch):
    from gateway.update import service
    monkeypatch.setattr(service, "TRIAL_ASK_S", 0.5)
    d, link, devs = park
    devs["l001"].lose_reports.add(codes.US_VALID)
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark", "devices": ["l001"]})
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "done", 20, "the rollout")
    assert d.updates.status(plan["rollout"])["counts"] == {"valid": 1}
    assert offered(devs["l001"])[-1]["uid"] == offered(devs["l001"])[0]["uid"]  # the same uid: a status query


async def test_after_a_gateway_restart_the_rollout_goes_on_from_the_device_offset(tmp_path, key):
    pub = tmp_path / "release.pub"
    pub.write_bytes(bundle.public_pem(key.public_key()))
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}],
                            extra='[update]\nrelease_keys = ["%s"]\nlink_rate = 3000\n' % pub))
    keys = provision(cfg, [("l001", "light_pole")])
    dev = link.add(SimOtaDevice("l001", keys["l001"], "light_pole"))
    try:
        async with running(cfg) as d:
            await connected(link)
            await dev.hello()
            b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
            rid = (await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"}))["rollout"]
            await until(lambda: dev.chunks >= 4, 10, "some chunks")
        held = len(dev.buf)
        async with running(cfg) as d:
            await connected(link)
            dev.send({"type": "heartbeat", "uptime": 60, "heap": 88, "boots": 1, "status": 16, "fw": 10000,
                      "batt": 0, "dropped": 0})  # the gateway learns which link the device is on
            await until(lambda: d.updates.status(rid)["state"] == "done", 20, "the rollout after the restart")
            assert d.updates.status(rid)["counts"] == {"valid": 1}
    finally:
        await link.close()
    offs = [m["off"] for m in dev.received if m["type"] == "update_chunk"]
    assert offs.count(0) == 1 and held in offs and dev.fw == 10100


async def test_chunks_wait_behind_any_other_command_for_the_device(park, key):
    d, link, devs = park
    dev = devs["l001"]
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark", "devices": ["l001"]})
    await until(lambda: dev.chunks >= 3, 10, "some chunks")
    dev.answer = lambda m: "silent" if m["type"] == "light_set" else None  # its answer is lost: it stays in flight
    pending = d.sessions.command("l001", {"type": "light_set", "level": 50, "hold": 0})
    await asyncio.sleep(0.05)
    before = dev.chunks
    await asyncio.sleep(0.6)  # the light_set is retransmitted meanwhile; no chunk overtakes it
    assert dev.chunks <= before + 1  # at most the one that was in flight already
    dev.answer = lambda m: None
    assert (await asyncio.wait_for(pending, 10))["result"] == "ok"
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "done", 20, "the rollout")


async def test_at_most_per_link_devices_receive_at_once(tmp_path, key):
    pub = tmp_path / "release.pub"
    pub.write_bytes(bundle.public_pem(key.public_key()))
    link = await SimLink.tcp_server()
    cfg = load(write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}],
                            extra='[update]\nrelease_keys = ["%s"]\nper_link = 1\ncanary = 0\nlink_rate = 50000\n'
                            % pub))
    ids = ["l001", "l002", "l003"]
    keys = provision(cfg, [(i, "light_pole") for i in ids])
    order = []
    try:
        async with running(cfg) as d:
            await connected(link)
            devs = [link.add(SimOtaDevice(i, keys[i], "light_pole")) for i in ids]
            for dev in devs:
                dev.on_chunk = lambda dv, off: order.append(dv.id)
                await dev.hello()
            b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
            plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"})
            await until(lambda: d.updates.status(plan["rollout"])["state"] == "done", 30, "the rollout")
            assert d.updates.status(plan["rollout"])["counts"] == {"valid": 3}
    finally:
        await link.close()
    runs = [x for i, x in enumerate(order) if i == 0 or order[i - 1] != x]
    assert sorted(runs) == ids, "one device at a time on the link: %s" % runs


def test_the_update_section_names_a_bad_key_file_and_its_line(tmp_path):
    from gateway.config import ConfigError

    (tmp_path / "not-a-key.pub").write_text("hello\n")
    for extra, words in (('[update]\nrelease_keys = ["%s/missing.pub"]\n' % tmp_path, "cannot read"),
                         ('[update]\nrelease_keys = ["%s/not-a-key.pub"]\n' % tmp_path, "not a PEM Ed25519"),
                         ('[update]\ncanary = -1\n', "between"), ('[update]\nrelease_key = []\n', "unknown key")):
        with pytest.raises(ConfigError) as e:
            load(write_config(str(tmp_path), extra=extra))
        assert e.value.key.startswith("update") and words in e.value.message and e.value.line
    cfg = load(write_config(str(tmp_path), extra=""))
    assert cfg.update.keys == [] and cfg.update.store.endswith("updates.sqlite")


async def test_abort_discards_what_devices_staged(park, key):
    d, link, devs = park
    dev = devs["l001"]
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark", "devices": ["l001"]})
    await until(lambda: dev.chunks >= 3, 10, "some chunks")
    st = await d.update({"action": "abort", "rollout": plan["rollout"]})
    assert st["state"] == "aborted" and st["devices"][0]["state"] == "aborted"
    await until(lambda: dev.ustate == codes.US_ABORTED, 5, "the device's abort")
    assert len(dev.buf) == 0 and dev.fw == 10000
    chunks = dev.chunks
    await asyncio.sleep(0.3)
    assert dev.chunks == chunks
    with pytest.raises(Exception) as e:
        await d.update({"action": "resume", "rollout": plan["rollout"]})
    assert e.value.code == "not_halted"


async def test_a_sleeping_bin_is_updated_over_its_wakes_on_the_ble_pool(tmp_path, key):
    """A bin is reachable only while it is awake: the pool connects it when it advertises (or commands wait for
    it), the transfer goes on from its offset at each wake, and the time it sleeps is not counted as a stall."""
    from gwharness import parse_links
    from sim.fakeble import BlePeer, FakeBleRadio

    pub = tmp_path / "release.pub"
    pub.write_bytes(bundle.public_pem(key.public_key()))
    cfg = parse_links(tmp_path, '[[links]]\nname = "ble"\ntype = "ble"\nhold_s = 0.6\nidle_s = 0.2\n',
                      extra='[update]\nrelease_keys = ["%s"]\nlink_rate = 50000\nstall_s = 5\n' % pub)
    keys = provision(cfg, [("c001", "container_sensor")])
    radio = FakeBleRadio(max_connections=5, interval_ms=5, adv_interval_ms=20)
    dev = SimOtaDevice("c001", keys["c001"], "container_sensor")
    peer = BlePeer(dev, "B0:00:00:00:00:01", mtu=247)
    radio.add(peer.periph)
    wakes_with_chunks = set()
    dev.on_chunk = lambda dv, off: wakes_with_chunks.add(peer.wakes)
    async with running(cfg, ble_factory=radio) as d:
        await peer.wake({"type": "fill", "fill": 10, "temp": 10, "batt": 180}, linger=0.1)
        b = await d.update({"action": "import", "bundle": _b64(make_bundle(key, role="container_sensor", pad=30000))})
        plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark"})

        async def life():
            while d.updates.status(plan["rollout"])["state"] == "running":
                await peer.wake({"type": "fill", "fill": 10, "temp": 10, "batt": 180}, linger=0.1, grace=0.5)
                await asyncio.sleep(1.0)  # asleep: nothing reaches it

        await asyncio.wait_for(life(), 60)
        st = d.updates.status(plan["rollout"])
    assert st["counts"] == {"valid": 1}, st
    assert len(wakes_with_chunks) >= 2, "the image came over several wakes"
    offs = [m["off"] for m in dev.received if m["type"] == "update_chunk"]
    assert offs.count(0) == 1


async def test_busy_while_installing_is_not_a_refusal(park, key, monkeypatch):
    from gateway.update import service
    monkeypatch.setattr(service, "TRIAL_ASK_S", 0.2)
    d, link, devs = park
    dev = devs["l001"]
    dev.install_s = 1.5  # the status queries during this get `refused` (busy), as the firmware answers
    b = await d.update({"action": "import", "bundle": _b64(make_bundle(key))})
    plan = await d.update({"action": "plan", "bundle": b["bundle"], "site": "stadtpark", "devices": ["l001"]})
    await until(lambda: d.updates.status(plan["rollout"])["state"] == "done", 30, "the rollout")
    assert d.updates.status(plan["rollout"])["counts"] == {"valid": 1}
    assert any(r["reason"] == codes.UR_BUSY for r in dev.reports)
