"""light_pole on a virtual board: the unmodified firmware (common runtime + light_pole +
protocol) in genuine MicroPython, peripherals driven through sim/vboard, the gateway
played over the link UART by test_light_bench.Gateway."""
from __future__ import annotations

import json

import pytest

from sim import mpvm

pytest.importorskip("serial")
from sim.vboard import VirtualBoard  # noqa: E402

from test_light_bench import BRIGHT, DARK, NO_TIME, NOON_2026_06_21, PINS, Gateway, deploy_tree, duty_for  # noqa: E402

pytestmark = pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup")

LAMP, MOTION, AMBIENT, CS = PINS["lamp"], PINS["motion"], PINS["ambient"], PINS["lamp_cs"]


@pytest.fixture
def bench(tmp_path):
    boards = []

    def make(app=None, rt=None, start_time=NO_TIME, ambient=DARK, welcome_time=0, hb=0):
        d = tmp_path / f"img{len(boards)}"
        d.mkdir()
        deploy_tree(d, dict({"base": 20, "fade_up": 400, "fade_down": 1000, "hold": 5, "dn_dwell_s": 5}, **(app or {})), rt)
        b = VirtualBoard(deploy_dir=d, flash_dir=tmp_path / f"flash{len(boards)}", start_time=start_time,
                         console_pty=False, name="l001")
        b.start()
        boards.append(b)
        b.set_adc(AMBIENT, ambient)
        g = Gateway(b, welcome_time=welcome_time, hb=hb)
        boards.append(g)
        return b, g

    yield make
    for x in boards:
        try:
            x.close() if isinstance(x, Gateway) else x.stop()
        except Exception:
            pass


def test_boots_lit_and_settles_at_base_at_night(bench):
    b, g = bench()
    lp = b.flash_path / "lib" / "light_pole"
    assert (lp / "app.mpy").is_file() and not list(lp.glob("*.py"))  # what park-device deploys: .mpy
    assert b.pwm_duty(LAMP) == duty_for(30)  # safe level from the first instant
    g.connect()
    g.run(3000)
    assert b.pwm_duty(LAMP) == duty_for(20)
    hello = g.of("hello")[0]
    assert hello["role"] == 2 and hello["caps"] == 16 | 64 | 128  # lamp_cs wired: current sense (issue 9 item 11)
    assert not b.events("fw_crash")


def test_motion_full_hold_fade_down_and_motion_event(bench):
    b, g = bench()
    g.connect()
    g.run(2000)
    b.set_pin(MOTION, 1)
    g.run(1000)
    assert b.pwm_duty(LAMP) == 65535
    b.set_pin(MOTION, 0)
    g.run(4000)
    assert b.pwm_duty(LAMP) == 65535  # hold 5 s
    g.run(1500)
    d = b.pwm_duty(LAMP)
    assert duty_for(20) < d < 65535  # fading down along the curve
    g.run(1500)
    assert b.pwm_duty(LAMP) == duty_for(20)
    ev = g.of("motion")
    assert len(ev) == 1 and ev[0]["count"] == 1 and ev[0]["eid"] > 0


def test_debounce_ignores_a_short_glitch(bench):
    b, g = bench()
    g.connect()
    g.run(2000)
    b.set_pin(MOTION, 1)
    b.set_pin(MOTION, 0)
    g.run(2000)
    assert b.pwm_duty(LAMP) == duty_for(20)
    assert not g.of("motion")


def _state(g):
    return g.of("light")[-1]["state"]


def test_light_sensor_day_night_with_hysteresis_and_dwell(bench):
    b, g = bench(hb=10)
    g.connect()
    g.run(2000)
    assert b.pwm_duty(LAMP) == duty_for(20)
    b.set_adc(AMBIENT, BRIGHT)  # headlights for 3 s: shorter than the 5 s dwell
    g.run(3000)
    b.set_adc(AMBIENT, DARK)
    g.run(3000)
    assert b.pwm_duty(LAMP) == duty_for(20)
    b.set_adc(AMBIENT, BRIGHT)  # dawn
    g.run(7000)
    assert b.pwm_duty(LAMP) == 0
    b.set_adc(AMBIENT, 4500)  # between the thresholds: nothing changes
    g.run(8000)
    assert b.pwm_duty(LAMP) == 0
    g.run(3000)
    assert _state(g) == 0 and g.of("light")[-1]["ambient"] == 4500
    b.set_adc(AMBIENT, DARK)
    g.run(7000)
    assert b.pwm_duty(LAMP) == duty_for(20)


def test_valid_time_follows_the_sun_not_a_dirty_sensor(bench):
    # Cologne; the ambient sensor reads dark all day (dirty), the time is valid
    b, g = bench(app={"lat": 5094, "lon": 696}, start_time=NOON_2026_06_21, welcome_time=NOON_2026_06_21)
    g.connect()
    g.run(3000)
    assert b.pwm_duty(LAMP) == 0
    assert g.command({"type": "time", "time": NOON_2026_06_21 + 8 * 3600 + 40 * 60})["type"] == "ack"  # 20:40 UTC
    g.run(3000)
    assert b.pwm_duty(LAMP) == duty_for(20)


def test_commands_set_level_prelight_profile_and_nacks_name_the_field(bench):
    b, g = bench()
    g.connect()
    g.run(2000)
    r = g.command({"type": "light_set", "level": 60, "hold": 3})
    assert r["type"] == "ack"
    g.run(1000)
    assert b.pwm_duty(LAMP) == duty_for(60)
    g.run(4000)
    assert b.pwm_duty(LAMP) == duty_for(20)
    assert g.command({"type": "prelight", "level": 50, "hold": 2, "hops": 1})["type"] == "ack"
    g.run(1000)
    assert b.pwm_duty(LAMP) == duty_for(50)
    r = g.command({"type": "light_profile", "base": 60, "full": 40, "hold": 5, "fade_up": 0, "fade_down": 0,
                   "max": 100, "curfew": []})
    assert (r["type"], r["code"], r["field"]) == ("nack", 3, "full")
    r = g.command({"type": "prelight", "level": 50, "hold": 0, "hops": 1})
    assert (r["type"], r["code"], r["field"]) == ("nack", 3, "hold")
    r = g.wait_reply(g.send_raw([144, 101, 5]))  # light_set level 101: refused by the protocol schema
    assert (r["type"], r["code"], r["field"]) == ("nack", 1, "level")
    assert g.command({"type": "light_profile", "base": 10, "full": 70, "hold": 2, "fade_up": 0,
                      "fade_down": 0, "max": 70, "curfew": []})["type"] == "ack"
    r = g.command({"type": "light_set", "level": 80, "hold": 5})
    assert (r["type"], r["code"], r["field"]) == ("nack", 3, "level")
    g.run(3000)
    assert b.pwm_duty(LAMP) == duty_for(10)
    b.set_pin(MOTION, 1)
    g.run(500)
    assert b.pwm_duty(LAMP) == duty_for(70)
    b.set_pin(MOTION, 0)
    b.reset()  # the profile survives a reboot
    g.connect()
    g.run(3000)
    assert b.pwm_duty(LAMP) == duty_for(10)
    assert not b.events("fw_crash")


def test_curfew_caps_presence_and_reports_curfew_state(bench):
    # 23:30 local (CEST) on 2026-06-21 = 21:30 UTC; curfew 23:00-05:00 at most 40 %
    t = NOON_2026_06_21 + 9 * 3600 + 30 * 60
    b, g = bench(app={"curfew": "1380-300:40", "lat": 5094, "lon": 696}, start_time=t, welcome_time=t, hb=10)
    g.connect()
    g.run(2000)
    b.set_pin(MOTION, 1)
    g.run(1000)
    assert b.pwm_duty(LAMP) == duty_for(40)
    g.run(10000)
    assert _state(g) == 7


def test_config_command_applies_or_is_refused_naming_the_field(bench):
    b, g = bench()
    g.connect()
    g.run(2000)
    r = g.command({"type": "config", "values": {"dark_below": 9000}})  # above light_above (6000)
    assert (r["type"], r["code"], r["field"]) == ("nack", 3, "light_above")
    r = g.command({"type": "config", "values": {"base": 101}})
    assert (r["type"], r["code"], r["field"]) == ("nack", 3, "base")
    r = g.command({"type": "config", "values": {"curfew": "23:00-05:00"}})
    assert (r["type"], r["code"], r["field"]) == ("nack", 3, "curfew")
    assert json.loads(b.read_flash("/config.json"))["app"].get("dark_below") is None  # old config kept
    assert g.command({"type": "config", "values": {"base": 40}})["type"] == "ack"
    g.run(2000)
    assert b.pwm_duty(LAMP) == duty_for(40)
    assert json.loads(b.read_flash("/config.json"))["app"]["base"] == 40


def test_stuck_motion_sensor_is_a_fault_and_ignored(bench):
    b, g = bench(app={"stuck_s": 10, "hold": 2})
    g.connect()
    b.set_pin(MOTION, 1)
    g.run(9000)
    assert b.pwm_duty(LAMP) == 65535
    g.run(6000)
    assert [f["code"] for f in g.of("fault")] == [2]  # sensor_stuck
    assert b.pwm_duty(LAMP) == duty_for(20)
    b.set_pin(MOTION, 0)
    g.run(1000)
    b.set_pin(MOTION, 1)  # released and triggered again: a walker counts again
    g.run(1000)
    assert b.pwm_duty(LAMP) == 65535
