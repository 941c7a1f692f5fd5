"""Control loops on their own: lighting (graph, dark, curfew, lamp faults), waste, lockers.

The loops act through two callables (cmd, alert); here those record what the
loop decided, which is the loop's whole output.
"""

import asyncio
import datetime as dt
import types

import pytest

from protocol import codes

from gateway.config import parse
from gateway.control.lighting import PathGraph, curfew_cap

from gateway.control import Control

BASE = """
[sites.stadtpark]
latitude = 52.52
longitude = 13.405
timezone = "Europe/Berlin"
[sites.stadtpark.lighting]
hops = 2
prelight = 70
hold = 60
edges = [["l001", "l002"], ["l002", "l003"], ["l003", "l004"], ["l002", "l005"]]
curfew = [{start = "23:00", end = "05:00", max = 30}]
[sites.stadtpark.waste]
near_full = 80
full = 95
[sites.stadtpark.lockers]
loan_hours = 1
"""

NIGHT = dt.datetime(2024, 11, 20, 21, 0, tzinfo=dt.timezone.utc).timestamp()  # 22:00 in Berlin
CURFEW = dt.datetime(2024, 11, 20, 23, 30, tzinfo=dt.timezone.utc).timestamp()  # 00:30 in Berlin
NOON = dt.datetime(2024, 11, 20, 11, 0, tzinfo=dt.timezone.utc).timestamp()


class Rig:
    def __init__(self):
        self.cfg = parse(BASE, "t.toml", env={})
        self.devices = {}
        for i in range(1, 6):
            self.add("l00%d" % i, "light_pole")
        self.add("c001", "container_sensor")
        self.add("k001", "locker")
        self.sent, self.alerts = [], []
        self.ctl = Control(self.cfg, self.devices, self.cmd, self.alert, clock=lambda: NIGHT)

    def add(self, did, role):
        caps = codes.CAP_PIR | codes.CAP_LIGHT_SENSOR | codes.CAP_CURRENT_SENSE if role == "light_pole" else 0
        self.devices[did] = types.SimpleNamespace(id=did, role=role, site="stadtpark", online=True, caps=caps)

    def cmd(self, did, msg):
        self.sent.append((did, msg))
        f = asyncio.get_event_loop().create_future()
        f.set_result({"result": "ok"})
        return f

    def alert(self, s, kind, body, eid, ts):
        self.alerts.append((s.id, kind, body, eid))

    def msg(self, did, msg, now):
        self.ctl.on_message(self.devices[did], msg, now)


@pytest.fixture
def rig():
    return Rig()


def test_path_graph_hops():
    g = PathGraph([("a", "b"), ("b", "c"), ("c", "d"), ("b", "e")])
    assert dict(g.neighbours("a", 2)) == {"b": 1, "c": 2, "e": 2}
    assert dict(g.neighbours("c", 1)) == {"b": 1, "d": 1}
    assert g.neighbours("zz", 3) == ()


async def test_motion_at_night_prelights_neighbours_up_to_n_hops(rig):
    rig.msg("l001", {"type": "motion", "eid": 1, "t": 0, "count": 1}, NIGHT)
    got = {d: m for d, m in rig.sent if m["type"] == "prelight"}
    assert set(got) == {"l002", "l003", "l005"}  # l004 is 3 hops away
    assert got["l002"] == {"type": "prelight", "level": 70, "hold": 60, "hops": 1}
    assert got["l003"]["hops"] == 2
    rig.sent.clear()
    rig.msg("l001", {"type": "motion", "eid": 2, "t": 0, "count": 1}, NIGHT + 5)
    assert rig.sent == []  # still lit for most of the hold: no new frames


async def test_no_prelight_by_day_and_curfew_caps_the_level(rig):
    rig.msg("l001", {"type": "motion", "eid": 1, "t": 0, "count": 1}, NOON)
    assert rig.sent == []
    rig.ctl.tick(CURFEW)
    rig.sent.clear()
    rig.msg("l003", {"type": "motion", "eid": 2, "t": 0, "count": 1}, CURFEW)
    levels = {m["level"] for d, m in rig.sent if m["type"] == "prelight"}
    assert levels == {30}


async def test_dusk_sends_profiles_with_local_curfew(rig):
    rig.ctl.tick(NOON)
    day = [m for d, m in rig.sent if m["type"] == "light_profile"]
    assert len(day) == 5 and day[0]["base"] == 0
    rig.sent.clear()
    rig.ctl.tick(NOON + 60)
    assert rig.sent == []  # nothing changed
    rig.ctl.tick(NIGHT)
    night = [m for d, m in rig.sent if m["type"] == "light_profile"]
    assert len(night) == 5 and night[0]["base"] == 10 and night[0]["curfew"] == [[23 * 60, 5 * 60, 30]]


def test_curfew_cap_wraps_midnight():
    cfg = parse(BASE, "t", env={})
    w = cfg.sites["stadtpark"].lighting.curfew
    assert curfew_cap(w, 0) == 30 and curfew_cap(w, 23 * 60) == 30 and curfew_cap(w, 12 * 60) == 100


async def test_lamp_faults_become_alerts_once(rig):
    rig.msg("l002", {"type": "light", "level": 80, "state": 2, "ambient": 5, "lamp_ma": 2}, NIGHT)
    rig.msg("l002", {"type": "light", "level": 80, "state": 2, "ambient": 5, "lamp_ma": 1}, NIGHT + 1)
    assert [a[1] for a in rig.alerts] == ["lamp_fault"]
    rig.msg("l002", {"type": "light", "level": 80, "state": 2, "ambient": 5, "lamp_ma": 350}, NIGHT + 2)
    rig.msg("l003", {"type": "fault", "eid": 9, "t": 0, "code": 4, "value": 0}, NIGHT)
    assert [a[1] for a in rig.alerts] == ["lamp_fault", "lamp_ok", "lamp_fault"]
    assert rig.alerts[-1][3] == "l003-9-lamp"
    # a pole wired without current sense reports 0 mA whatever its lamp does: no fault from that
    rig.devices["l004"].caps = codes.CAP_PIR | codes.CAP_LIGHT_SENSOR
    rig.msg("l004", {"type": "light", "level": 80, "state": 2, "ambient": 5, "lamp_ma": 0}, NIGHT + 3)
    assert len(rig.alerts) == 3


def test_waste_thresholds_pickups_fire_and_faults(rig):
    fill = lambda f, t=15: {"type": "fill", "fill": f, "temp": t, "batt": 180}
    rig.msg("c001", fill(50), NOON)
    assert rig.alerts == []
    rig.msg("c001", fill(82), NOON + 1)
    rig.msg("c001", fill(85), NOON + 2)
    rig.msg("c001", fill(96), NOON + 3)
    assert [(a[1], a[2]["level"]) for a in rig.alerts] == [("collection_needed", "near_full"),
                                                          ("collection_needed", "full")]
    assert rig.ctl.waste.pickups()["stadtpark"][0]["id"] == "c001"
    rig.msg("c001", fill(5), NOON + 4)
    assert rig.alerts[-1][1] == "emptied" and rig.ctl.waste.pickups()["stadtpark"] == []
    n = len(rig.alerts)
    rig.msg("c001", {"type": "fault", "eid": 12, "t": 0, "code": codes.F_SENSOR_NO_ECHO, "value": 0}, NOON + 5)
    rig.msg("c001", fill(None), NOON + 5)  # the null fill that comes with the fault: no second alert
    rig.msg("c001", fill(None), NOON + 6)
    assert [a[1] for a in rig.alerts[n:]] == ["sensor_fault"] and rig.alerts[-1][3] == "c001-12-sensor"
    assert rig.ctl.waste.pickups()["stadtpark"][0]["level"] == "inspect"
    rig.add("c002", "container_sensor")
    rig.msg("c002", fill(None, None), NOON + 5)  # no reading at all, no event: flagged quietly, nothing raised
    assert len(rig.alerts) == n + 1 and rig.ctl.waste.pickups()["stadtpark"][1]["id"] == "c002"
    rig.msg("c002", fill(40, None), NOON + 6)  # a fill without temperature is a fill (temp null is not cold)
    assert rig.ctl.waste.containers["stadtpark"]["c002"].fill == 40 and len(rig.alerts) == n + 1
    rig.msg("c001", fill(10, 88), NOON + 6)
    assert rig.alerts[-1][1] == "fire" and rig.alerts[-1][2]["source"] == "gateway"


async def test_lockers_unlock_forced_door_and_overdue(rig):
    f = rig.ctl.lockers.unlock("k001", 3, "support ticket 12")
    assert (await f)["result"] == "ok"
    (did, m), = rig.sent
    assert did == "k001" and m["type"] == "unlock" and m["comp"] == 3 and 0 <= m["req"] < 2 ** 32
    with pytest.raises(LookupError):
        rig.ctl.lockers.unlock("l001", 1, "not a locker")
    rig.msg("k001", {"type": "door", "eid": 5, "t": 0, "comp": 2, "open": True, "authorized": False}, NOON)
    assert rig.alerts == []  # the door event alone is not the alert: the locker's alarm is
    rig.msg("k001", {"type": "alarm", "eid": 6, "t": 0, "code": 2, "comp": 2, "value": 0}, NOON)
    assert [a[1] for a in rig.alerts] == ["tamper"]
    lk = lambda occ: {"type": "locker", "open": 0, "locked": 0xFF, "occupied": occ, "pending": 0}
    rig.msg("k001", lk(0b111), NOON)
    rig.msg("k001", lk(0b101), NOON + 10)  # compartment 2 lent out
    rig.ctl.tick(NOON + 1800)
    assert rig.alerts[-1][1] == "tamper"  # not yet overdue
    rig.ctl.tick(NOON + 3700)
    assert rig.alerts[-1][1] == "overdue" and rig.alerts[-1][2]["comp"] == 2
    rig.ctl.tick(NOON + 7200)
    assert [a[1] for a in rig.alerts].count("overdue") == 1
    rig.msg("k001", lk(0b111), NOON + 8000)
    assert rig.alerts[-1][1] == "returned" and rig.alerts[-1][2]["late"] is True


async def test_loop_state_survives_a_restart(rig):
    """Loans run for days and a full container is reported once: a gateway restart must not forget either."""
    import json

    lk = lambda occ: {"type": "locker", "open": 0, "locked": 0xFF, "occupied": occ, "pending": 0}
    rig.msg("k001", lk(0b11), NOON)
    rig.msg("k001", lk(0b01), NOON + 10)  # compartment 2 lent out
    rig.msg("c001", {"type": "fill", "fill": 97, "temp": 10, "batt": 180}, NOON)
    rig.msg("l002", {"type": "light", "level": 80, "state": 2, "ambient": 5, "lamp_ma": 0}, NIGHT)
    saved = json.loads(json.dumps(rig.ctl.snapshot()))  # as the registry stores it
    after = Rig()
    after.ctl.restore(saved)
    after.msg("c001", {"type": "fill", "fill": 98, "temp": 10, "batt": 180}, NOON + 60)
    after.msg("l002", {"type": "light", "level": 80, "state": 2, "ambient": 5, "lamp_ma": 0}, NIGHT + 60)
    assert after.alerts == []  # already reported before the restart
    after.ctl.tick(NOON + 3700)
    assert [(a[1], a[2]["comp"]) for a in after.alerts] == [("overdue", 2)]
    assert after.ctl.waste.pickups()["stadtpark"][0]["level"] == "full"
