"""Faults, with counts proving nothing was lost: broker outage, serial link unplugged and back,
a device brown-out mid-traffic, the gateway killed with -9 and restarted.

Traffic: the doors of locker k001. Every door change is an acked event the firmware first
appends to its audit ring in flash (firmware/locker/audit.py) and keeps pending until the
gateway acks it; its event id (eid) is stored with the record, so a resend after a reboot
keeps it. The bench reads that ring from the board's flash: it is the device's own account
of what happened. The proof at the end: the door events on the backbone, de-duplicated by
event id, are exactly the door records in the device's flash (same eids, one each), and
every one of them was acked.
"""
from __future__ import annotations

import pytest

from hil_tests.bench import LockerAudit, PowerDriver, poll

DOORS = (33, 13, 14, 4)  # the reference wiring's door switches (park_device.roles.TEMPLATES); 0 = closed
DOOR1 = DOORS[0]


@pytest.mark.needs("peripherals", "broker_outage", "link_unplug", "brownout", "gateway_kill")
def test_faults_lose_nothing_broker_outage_unplug_brownout_gateway_kill9(boards, gateway, broker, backbone, bench):
    st = boards("k001", cable=True, inputs={d: 0 for d in DOORS})["k001"]
    vb, cable = st.res.vb, st.cable
    audit = LockerAudit(vb)
    gateway.write_config()
    gateway.start()
    site = bench.site
    backbone.wait(lambda: any(p.get("state") == "online" for p in
                              backbone.json(f"park/{site}/device/k001/availability")),
                  timeout=60, what=f"k001 online\n{gateway.tail()}")
    door_open = [False]
    changes = [0]

    def door_changes(n: int) -> None:
        """Open/close door 1 n times in turn; each change awaited in the device's audit ring."""
        for _ in range(n):
            before = len(audit.of("door"))
            door_open[0] = not door_open[0]
            vb.set_pin(DOOR1, int(door_open[0]))
            poll(lambda: len(audit.of("door")) > before, 20, f"door record {before + 1} in the audit ring")
            changes[0] += 1

    def all_acked() -> bool:
        recs = audit.of("door")
        return len(recs) == changes[0] and all(r["acked"] for r in recs)

    door_changes(2)
    poll(all_acked, 30, lambda: f"all {changes[0]} door records acked: {audit.of('door')}\n{gateway.tail()}")

    # 1. broker outage: the gateway keeps taking events (acks them from its outbox) while the
    #    backbone is unreachable; they arrive once it is back
    poll(lambda: len(backbone.events("k001", "door", site)) == changes[0], 30, "the first door events delivered")
    broker.stop()
    door_changes(4)
    poll(all_acked, 30, lambda: f"all {changes[0]} door records acked: {audit.of('door')}\n{gateway.tail()}")
    assert len(backbone.events("k001", "door", site)) == 2   # held in the gateway's outbox meanwhile
    broker.start()

    # 2. link unplugged: the device keeps its events pending (nothing acked), then delivers
    cable.unplug()
    door_changes(2)
    pend = [r for r in audit.of("door") if not r["acked"]]
    assert len(pend) >= 2, pend
    cable.plug()
    poll(all_acked, 60, lambda: f"all {changes[0]} door records acked: {audit.of('door')}\n{gateway.tail()}")

    # 3. brown-out mid-traffic: two door changes with the link up (in flight or just acked), two more
    #    with the cable pulled (surely unacked), then power lost; the door is closed again at that moment
    door_changes(2)
    cable.unplug()
    door_changes(2)
    assert len([r for r in audit.of("door") if not r["acked"]]) >= 2
    boots = vb.boots
    PowerDriver(st.res, bench.relay).cycle(200)
    cable.plug()
    door_changes(2)
    poll(all_acked, 60, lambda: f"all {changes[0]} door records acked: {audit.of('door')}\n{gateway.tail()}")
    assert vb.boots == boots + 1

    # 4. gateway killed with -9 right after two door changes, more traffic while it is dead
    door_changes(2)
    gateway.kill9()
    door_changes(2)
    gateway.start()
    poll(all_acked, 90, lambda: f"all {changes[0]} door records acked: {audit.of('door')}\n{gateway.tail()}")

    # the count: backbone (de-duplicated by event id) == the device's door records, one each
    recs = audit.of("door")
    assert len(recs) == changes[0] == 18
    want = {f"k001-{r['eid']}": bool(r["a"] & 1) for r in recs}
    assert len(want) == len(recs), "two door records share an event id"
    got = backbone.wait(lambda: (lambda e: e if set(e) >= set(want) else None)(backbone.events("k001", "door", site)),
                        timeout=60, what=f"all {len(want)} door events on the backbone\n{gateway.tail()}")
    assert set(got) == set(want), f"extra door event ids on the backbone: {sorted(set(got) - set(want))}"
    for eid, deliveries in got.items():
        # a redelivery (at-least-once across the outage / kill) repeats the same event, never a new one
        assert all(d["data"] == deliveries[0]["data"] for d in deliveries), deliveries
        assert deliveries[0]["data"]["open"] is want[eid] and deliveries[0]["data"]["comp"] == 1
        assert deliveries[0]["data"]["authorized"] is False
    opened = sum(1 for v in want.values() if v)
    assert opened == 9
    # every forced opening raised the device's tamper alarm, and the gateway's tamper alert
    alarms = [r for r in audit.of("alarm") if r["a"] == 2]
    assert len(alarms) == opened and all(r["acked"] and r["comp"] == 1 for r in alarms)
    alarm_ids = {f"k001-{r['eid']}-tamper" for r in alarms}
    tamper = backbone.wait(lambda: (lambda t: t if set(t) >= alarm_ids else None)(backbone.events("k001", "tamper", site)),
                           timeout=60, what="a tamper alert for each device tamper alarm")
    assert set(tamper) == alarm_ids  # one alert per forced opening, none derived twice
    dup = {k: len(v) for k, v in got.items() if len(v) > 1}
    print(f"door events: {len(want)} distinct ids, redelivered (at-least-once): {dup}")
