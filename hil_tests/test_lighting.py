"""Scenario: a walker along three poles; motion at the first lights the next ones ahead, all fade back."""
from __future__ import annotations

import datetime as dt

import pytest

from hil_tests import bench as benchmod
from protocol.rules import LIGHT_BASE

LAMP, MOTION, AMBIENT, LAMP_CS = 25, 27, 34, 35  # the reference wiring (park_device.roles.TEMPLATES)
HEALTHY_LAMP_UV = 350_000  # 350 mV at the current-sense input = 350 mA at cs_ma_v 1000 (a lit LED driver)
# The site's night base and prelight levels (gateway config). The base differs from the firmware's
# own default (protocol.rules.LIGHT_BASE), so a pole at it proves the gateway's profile arrived:
# a motion before that could be undone by the profile, a prelight sent to a pole not yet online dropped.
BASE, PRELIGHT = 15, 70


def dark_longitude() -> float:
    """Where it is local solar midnight now (at latitude 0 it is surely dark): night for the gateway."""
    now = dt.datetime.now(dt.timezone.utc)
    lon = ((24 - (now.hour + now.minute / 60)) * 15) % 360
    return lon - 360 if lon > 180 else lon


@pytest.mark.needs("peripherals")
def test_walker_prelights_poles_ahead_then_all_fade_back(boards, gateway, backbone, bench):
    sets = ["app.daynight=\"sensor\"", "app.debounce_ms=20"]
    # wired before power-on, as on a pole: dark for the poles' own light sensors, and a healthy
    # lamp that draws current while lit (set after boot, the first current sample could read 0)
    poles = boards("l001", "l002", "l003", sets=sets,
                   inputs={("adc", AMBIENT): 0, ("adc", LAMP_CS): HEALTHY_LAMP_UV})
    vb = {i: st.res.vb for i, st in poles.items()}
    gateway.write_config(edges=[("l001", "l002"), ("l002", "l003")], latitude=0.0, longitude=dark_longitude(),
                         hold=3, base=BASE, prelight=PRELIGHT)
    gateway.start()
    site = bench.site
    assert BASE != LIGHT_BASE  # see BASE above
    base_duty = benchmod.lamp_duty(BASE)
    # the gateway's night profile reaches every pole; wait until each lamp settled at its base
    backbone.wait(lambda: all(vb[i].pwm_duty(LAMP) == base_duty for i in vb) or None, timeout=60,
                  what=f"all poles at the site's base duty {base_duty}: "
                       f"{ {i: vb[i].pwm_duty(LAMP) for i in vb} }\n{gateway.tail()}")
    vb["l001"].set_pin(MOTION, 1)
    prelit = benchmod.lamp_duty(PRELIGHT)
    full = benchmod.lamp_duty(100)
    backbone.wait(lambda: (vb["l001"].pwm_duty(LAMP) == full and
                           all((vb[i].pwm_duty(LAMP) or 0) >= prelit for i in ("l002", "l003"))) or None,
                  timeout=30, what=f"l001 at full and l002, l003 prelit to {PRELIGHT} %: "
                                   f"{ {i: vb[i].pwm_duty(LAMP) for i in vb} }\n{gateway.tail()}")
    vb["l001"].set_pin(MOTION, 0)
    # hold (3 s) then fade (3 s): every pole comes back to the base level, none goes dark
    backbone.wait(lambda: all(vb[i].pwm_duty(LAMP) == base_duty for i in vb) or None, timeout=40,
                  what=f"all poles back at base duty {base_duty}: { {i: vb[i].pwm_duty(LAMP) for i in vb} }")
    events = backbone.json(f"park/{site}/device/l001/event/motion")
    assert events and events[0]["id"].startswith("l001-") and events[0]["data"]["count"] >= 1
    # each pole reported light telemetry with a lit lamp and its current, and none was called faulty
    for i in vb:
        def lit_pack(i=i):
            for pack in backbone.json(f"park/{site}/device/{i}/telemetry"):
                r = {x["n"]: x.get("v") for x in pack}
                if r.get("level", 0) > 0 and "lamp_current" in r:
                    return r
            return None
        r = backbone.wait(lit_pack, timeout=30, what=f"light telemetry of {i}")
        assert r["lamp_current"] == pytest.approx(0.35, abs=0.01)
    for i in vb:
        assert backbone.topic(f"park/{site}/device/{i}/event/lamp_fault") == [], i
        assert backbone.topic(f"park/{site}/device/{i}/event/fault") == [], i
        if bench.board(i).link == "wifi":  # the wave went over the poles' Wi-Fi
            assert gateway.device(i)["link"].startswith("wifi/"), i
