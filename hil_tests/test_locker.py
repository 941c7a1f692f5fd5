"""Scenario: a locker and its tokens. A valid token opens exactly its compartment, once;
replayed, expired, forged and wrong-compartment tokens do not, and each refusal is reported
on the backbone; a forced door raises a tamper alarm."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from hil_tests.bench import LockerAudit, ReaderDriver, poll
from protocol import token

LOCKS = {1: 25, 2: 26, 3: 27, 4: 32}   # the reference wiring (park_device.roles.TEMPLATES)
DOORS = {1: 33, 2: 13, 3: 14, 4: 4}    # door switches, 0 = closed
READER_UART = 2
READER = '{"uart": %d, "tx": 23, "rx": 22, "baud": 9600}' % READER_UART


@pytest.mark.needs("peripherals")
def test_locker_tokens_valid_once_replayed_expired_forged_wrong_compartment_and_tamper(
        boards, gateway, backbone, bench, tmp_path):
    st = boards("k001", sets=[f"pins.reader={READER}"], inputs={d: 0 for d in DOORS.values()})["k001"]
    vb = st.res.vb
    gateway.write_config()
    gateway.start()
    site = bench.site
    backbone.wait(lambda: any(p.get("state") == "online" for p in
                              backbone.json(f"park/{site}/device/k001/availability")),
                  timeout=60, what=f"k001 online\n{gateway.tail()}")
    key = Path(st.booking_key).read_bytes()           # the site's booking key, as the booking system has it
    reader = ReaderDriver(st.res, READER_UART)
    audit = LockerAudit(vb)
    now = int(time.time())

    def access():
        return sorted(backbone.json(f"park/{site}/device/k001/event/access"), key=lambda e: e["data"]["eid"])

    def present(comp: int, raw: bytes) -> dict:
        """Present at the reader; the locker's access event as the backbone received it."""
        n = len(access())
        reader.present(comp, raw)
        return backbone.wait(lambda: access()[n:] or None, timeout=30,
                             what=f"access event for comp {comp}\n{vb.log()[-5:]}\n{gateway.tail()}")[0]["data"]

    def pulses():
        return [e["pin"] for e in vb.events("pulse") if e["pin"] in LOCKS.values()]

    good = token.issue(key, "k001", 2, now - 60, now + 3600, 5001)
    a = present(2, good)
    assert (a["comp"], a["result_name"], a["token"]) == (2, "ok_token", 5001)
    poll(lambda: pulses(), 10, "a lock pulse")
    assert pulses() == [LOCKS[2]]                       # exactly compartment 2's lock, one pulse
    vb.set_pin(DOORS[2], 1)                             # the user opens it: authorized
    refusals = [
        (3, token.issue(key, "k001", 3, now - 7200, now - 60, 5002), "expired", 5002),
        (4, token.issue(bytes(32), "k001", 4, now - 60, now + 3600, 5003), "forged", 0),
        (3, token.issue(key, "k001", 1, now - 60, now + 3600, 5004), "wrong_compartment", 5004),
        (2, good, "replayed", 5001),
    ]
    for comp, raw, why, tid in refusals:
        a = present(comp, raw)
        assert (a["comp"], a["result_name"], a["token"]) == (comp, why, tid), why
    assert pulses() == [LOCKS[2]]                       # nothing else ever opened
    # every presentation is in the device's own audit too, delivered and acked
    poll(lambda: len([r for r in audit.of("access") if r["acked"]]) == 5, 30, "5 access records acked")
    vb.set_pin(DOORS[2], 0)

    def doors():
        return sorted(backbone.json(f"park/{site}/device/k001/event/door"), key=lambda e: e["data"]["eid"])
    backbone.wait(lambda: len(doors()) >= 2, timeout=30, what="door 2 opened and closed")
    assert [(d["data"]["comp"], d["data"]["open"], d["data"]["authorized"]) for d in doors()] == \
        [(2, True, True), (2, False, True)]
    assert backbone.topic(f"park/{site}/device/k001/event/tamper") == []

    # a forced door: compartment 3 opened while locked
    vb.set_pin(DOORS[3], 1)
    alarm = backbone.wait(lambda: [e for e in backbone.json(f"park/{site}/device/k001/event/alarm")
                                   if e["data"]["alarm"] == "tamper"], timeout=30, what="tamper alarm")
    assert alarm[0]["data"]["comp"] == 3
    forced = backbone.wait(lambda: [d for d in doors() if d["data"]["comp"] == 3], timeout=30, what="door 3 event")
    assert forced[0]["data"]["open"] is True and forced[0]["data"]["authorized"] is False
    # closing door 3 is a barrier: the uplink publishes first deliveries in commit order, so once this
    # door event is on the backbone every alert derived before it is too
    vb.set_pin(DOORS[3], 0)
    backbone.wait(lambda: [d for d in doors() if d["data"]["comp"] == 3 and not d["data"]["open"]], timeout=30,
                  what="door 3 closed")
    tamper = backbone.json(f"park/{site}/device/k001/event/tamper")
    assert tamper and all(t["data"]["comp"] == 3 for t in tamper), tamper
    assert len(tamper) == 1, [t["id"] for t in tamper]  # one forced opening, one alert id
