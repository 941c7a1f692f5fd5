"""Scenario: a container fills up; near-full and full reach the backbone and the pickup list.
On the virtual bench the bin talks BLE to the gateway's pool, as in the park."""
from __future__ import annotations

import json
import time

import pytest

from hil_tests.bench import poll

TEMP, BATT = 34, 35  # the reference wiring's TMP36 and battery divider ADCs (park_device.roles.TEMPLATES)
DEPTH = 1200         # sensor to the bin's bottom; 100 % line at top_mm 250


def tmp36_uv(c: float) -> int:
    return int(500_000 + c * 10_000)


@pytest.mark.needs("peripherals", "power")
def test_container_fills_near_full_and_full_reach_backbone_and_pickup_list(boards, gateway, backbone, bench):
    inputs = {"distance_mm": 725, ("adc", TEMP): tmp36_uv(20), ("adc", BATT): 3_900_000 // 2}
    st = boards("c001", sets=[f"app.depth_mm={DEPTH}"], inputs=inputs)["c001"]
    vb = st.res.vb
    gateway.write_config()
    gateway.start()
    site = bench.site
    tele = f"park/{site}/device/c001/telemetry"

    def fills():
        return [{r["n"]: r.get("v") for r in p} for p in backbone.json(tele) if any(r.get("n") == "fill" for r in p)]

    # c001 measured 50 % (725 mm in a 1200 mm bin, 100 % line at 250 mm) on its first wake, which may
    # have been over before the gateway listened (telemetry is not acked, by design): not awaited here

    def fill_up(mm: int) -> None:
        """The bin fills to `mm` below the sensor; the sensor's next wake (woken early) measures it."""
        poll(lambda: vb.state().get("state") == "asleep", 60, "c001 in deep sleep")
        vb.set_distance_mm(mm)
        assert vb.wake()

    def alarm(name):
        return [e for e in backbone.json(f"park/{site}/device/c001/event/alarm") if e["data"]["alarm"] == name]

    fill_up(400)                                                   # 84 %: near full
    near = backbone.wait(lambda: alarm("near_full"), timeout=60, what=f"near_full alarm\n{gateway.tail()}")
    assert near[0]["data"]["value"] == 84 and near[0]["id"] == "c001-%d" % near[0]["data"]["eid"]
    rep = backbone.wait(lambda: [f for f in fills() if f["fill"] == 84], timeout=30, what="the 84 % fill report")
    assert rep[0]["temp"] == 20 and rep[0]["batt"] == 3.9  # 3.9 V, carried in 20 mV steps
    unit = {r["n"]: r.get("u") for p in backbone.json(tele) for r in p}
    assert unit["fill"] == "%" and unit["temp"] == "Cel" and unit["batt"] == "V"
    fill_up(280)                                                   # 96 %: full
    full = backbone.wait(lambda: alarm("full"), timeout=60, what=f"full alarm\n{gateway.tail()}")
    assert full[0]["data"]["value"] == 96
    assert len(alarm("near_full")) == len({e["id"] for e in alarm("near_full")})  # each once (no new id)
    # the waste loop derived collection_needed for both thresholds
    coll = backbone.wait(lambda: (lambda c: c if {e["data"]["level"] for e in c} >= {"near_full", "full"} else None)(
        backbone.json(f"park/{site}/device/c001/event/collection_needed")), timeout=30, what="collection_needed")
    assert [e["data"]["level"] for e in coll] == ["near_full", "full"]
    backbone.wait(lambda: any(f["fill"] == 96 for f in fills()), timeout=30, what="the 96 % fill report")
    # the pickup list, asked over the backbone as the city's collection planner would
    res_t = f"park/{site}/gateway/cmd/res"
    backbone.c.publish(f"park/{site}/gateway/cmd/req", json.dumps({"id": "pick-1", "ts": time.time(), "type": "pickups"}), qos=1)

    def pickup_entry():
        for r in backbone.json(res_t):
            if r.get("id") == "pick-1":
                return r
        return None
    res = backbone.wait(pickup_entry, timeout=30, what=f"pickups answer\n{gateway.tail()}")
    assert res["ok"] is True
    entries = res["result"][site]
    assert [(e["id"], e["level"]) for e in entries] == [("c001", "full")]
    assert entries[0]["fill"] == 96 and entries[0]["fault"] is None
    if bench.board("c001").link == "ble":  # the bin reported over its radio, served by the gateway's pool
        assert st.results["provision"]["link"]["kind"] == "ble"
        assert gateway.device("c001")["link"].startswith("ble/")
