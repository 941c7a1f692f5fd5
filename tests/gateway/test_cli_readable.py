"""What a person reads: the CLI's text in words (versions, ages, names), one --json error shape, a journal of the park."""

import asyncio
import json
import logging
import re

from gwharness import connected, load, provision, running, sim, until, write_config
from test_cli import cli

from sim.devsim import SimLink
from gateway import eventlog, readable


def test_words_for_codes_versions_and_ages():
    assert readable.version(10000) == "1.0.0" and readable.version(10203) == "1.2.3"
    assert readable.age(1000.0, now=1012.0) == "12s ago" and readable.age(0) == "never"
    assert readable.age(1000.0, now=1000.0 + 3 * 3600) == "3h ago"
    assert readable.compartments(0b101) == "1, 3" and readable.compartments(0) == "none"
    assert readable.message({"type": "alarm", "eid": 4, "t": 9, "code": 9, "comp": 0, "value": 170}) == \
        "alarm low_battery (value 170)"
    assert readable.message({"type": "access", "eid": 1, "t": 2, "comp": 2, "result": 1, "token": 0}) == \
        "access compartment 2: ok_command"
    assert readable.report({"light": {"level": 70, "state": 4, "ambient": 3, "lamp_ma": 300}}).startswith(
        "lamp 70% (prelight)")
    assert "occupied: 1, 3" in readable.report({"locker": {"open": 0, "locked": 15, "occupied": 5, "pending": 0}})


def test_a_device_refusal_is_a_sentence_without_its_code():
    from gateway.api import _refusal
    from gateway.downlink import CommandFailed

    text = _refusal(CommandFailed("bad_value", "", "nosuchkey"))
    assert not text.startswith("bad_value") and "nosuchkey" in text and "not a setting" in text


def test_journal_lines_name_devices_and_words():
    assert eventlog.line({"kind": "hello", "device": "l001", "fw": 10000}) == "l001 hello: firmware 1.0.0"
    assert eventlog.line({"kind": "event", "device": "k001", "msg": {"type": "door", "eid": 3, "t": 0, "comp": 2,
                                                                     "open": True, "authorized": True}}) \
        == "k001 event: door 2 opened"
    assert eventlog.line({"kind": "telemetry", "device": "l001", "msg": {"type": "light"}}) is None


async def test_cli_text_is_readable_and_errors_share_one_shape(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="park.devices")
    link = await SimLink.tcp_server()
    path = write_config(str(tmp_path), [{"type": "tcp", "url": link.url, "name": "vb0"}])
    cfg = load(path)
    keys = provision(cfg, [("l001", "light_pole"), ("c001", "container_sensor"), ("k001", "locker")])
    pole = link.add(sim("l001", keys, "light_pole"))
    bin_ = link.add(sim("c001", keys, "container_sensor"))
    locker = link.add(sim("k001", keys, "locker"))
    async with running(cfg) as d:
        await connected(link)
        for dev in (pole, bin_, locker):
            await dev.hello()
        rc, out, err = await cli("--config", path, "pickups")
        assert rc == 0 and out.strip() == "nothing to collect", out
        pole.send({"type": "light", "level": 70, "state": 4, "ambient": 3, "lamp_ma": 300})
        bin_.send({"type": "fill", "fill": 97, "temp": 14, "batt": 185})
        locker.send({"type": "locker", "open": 0, "locked": 15, "occupied": 5, "pending": 0})
        await locker.event({"type": "door", "comp": 2, "open": True, "authorized": True})
        await until(lambda: d.pickups()["stadtpark"], what="c001 on the pickup list")
        await until(lambda: "light" in d.sessions.devices["l001"].state, what="l001's report")

        rc, out, err = await cli("--config", path, "device", "l001")
        assert rc == 0, err
        assert "firmware 1.0.0" in out and "last seen" in out and " ago" in out, out
        assert "lamp 70% (prelight)" in out and not re.search(r"\b1[0-9]{9}\b", out), out  # no epoch seconds
        rc, out, err = await cli("--config", path, "device", "k001")
        assert "occupied: 1, 3" in out and "0b" not in out, out
        rc, out, err = await cli("--config", path, "status")
        assert rc == 0, err
        assert "site stadtpark:" in out and "lamp faults: none" in out and "pickups: c001 (full, 97%)" in out, out
        assert "locker k001:" in out and out.startswith("park-gateway "), out
        rc, out, err = await cli("--config", path, "pickups")
        assert out.strip() == "stadtpark: c001 (full, 97%)" and "[]" not in out, out

        # one error shape, the code once, valid choices listed
        rc, out, err = await cli("--config", path, "device", "zz99", "--json")
        doc = json.loads(out)
        assert rc == 1 and doc["ok"] is False and doc["error"]["code"] == "unknown_device", doc
        assert "l001" in doc["error"]["message"] and "k001" in doc["error"]["message"] and doc["error"]["hint"]
        rc, out, err = await cli("--config", path, "device", "zz99")
        assert rc == 1 and err.count("unknown_device") == 1 and "`park-gateway devices`" in err, err
        assert len(err.strip().splitlines()) == 1, err
        rc, out, err = await cli("--config", path, "light", "l001", "--level", "140")
        assert rc == 1 and err.count("bad_value") == 1 and "level" in err, err

    rc, out, err = await cli("--config", path, "status", "--json")
    assert rc == 3 and json.loads(out)["error"]["code"] == "no_daemon" and json.loads(out)["error"]["hint"]
    logged = [r.getMessage() for r in caplog.records if r.name == "park.devices"]
    assert "l001 hello: firmware 1.0.0" in logged and "k001 event: door 2 opened" in logged, logged
    assert "l001 online" in logged, logged
    await link.close()
