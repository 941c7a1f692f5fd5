"""container_sensor on a virtual board: the unmodified firmware in genuine MicroPython
(sim/vboard), its ultrasonic echo, temperature and battery ADCs driven by the test, and
a gateway peer speaking the protocol over the board's link UART."""
from __future__ import annotations

import contextlib

import pytest

from sim.testbed import Peer, deploy_tree, vboard_available
from protocol import codes

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not vboard_available(), reason="virtual boards not installed: run ./dev setup"),
]

KID = b"c001"
TRIG, ECHO, TEMP, BATT, TILT = 5, 18, 34, 35, 4
PINS = {"trig": TRIG, "echo": ECHO, "temp": TEMP, "batt": BATT, "tilt": {"pin": TILT, "pull": "down"}}
APP = {"depth_mm": 1200, "top_mm": 250, "interval_s": 900, "fast_s": 300}
WAKE = 3000  # virtual ms enough for one wake: pings, hello/welcome, linger


def tmp36(c: float) -> int:
    return int(500000 + c * 10000)


@contextlib.contextmanager
def board(tmp_path, app=None, rt=None, distance=725, air_c=20, temp_c=20, batt_mv=3900, heap_budget="role",
          mpy=True, **peer):
    from sim import vboard
    img = deploy_tree(tmp_path / "img", "container_sensor", KID.decode(), PINS, dict(APP, **(app or {})),
                      dict({"batt_div": 2000}, **(rt or {})), mpy=mpy)
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / "flash", ultrasonic={"trig": TRIG, "echo": ECHO},
                             distance_mm=distance, temperature_c=air_c, name="c001", heap_budget=heap_budget) as b:
        b.set_adc(TEMP, uv=tmp36(temp_c))
        if batt_mv is not None:  # None: the battery input reads nothing (open divider)
            b.set_adc(BATT, uv=batt_mv * 1000 // 2)
        p = Peer(b, KID, **peer)
        try:
            yield b, p
        finally:
            p.close()


def sleeps(b):
    return [e["ms"] for e in b.events("deepsleep")]


def wake_cycle(b, p, ms=900_000):
    """Sleep out one interval and run the next wake."""
    p.run(ms - WAKE, step=10_000)
    p.run(WAKE)


def alarms(p):
    return [(m["code"], m["value"]) for m in p.of("alarm")]


def test_measures_reports_and_deep_sleeps(tmp_path):
    with board(tmp_path) as (b, p):
        p.run(WAKE)
        fills = p.of("fill")
        assert fills[0] == {"type": "fill", "fill": 50, "temp": 20, "batt": 3900 // 20}
        hb = p.of("heartbeat")[0]
        assert hb["boots"] == 1 and hb["batt"] == 195 and hb["status"] & 16  # time valid after welcome
        assert sleeps(b) == [900_000]
        # a median of several pings: each wake triggers `pings` echoes
        p.clear()
        wake_cycle(b, p)
        assert sleeps(b) == [900_000, 900_000]
        assert p.of("fill") == [] and p.of("hello") == []  # nothing changed: the radio stays quiet
        assert b.boots == 2


def test_speed_of_sound_corrected_by_temperature(tmp_path):
    # 900 mm to the rubbish in a 1200 mm bin: without correction a cold or hot day would
    # read up to 6 % wrong; with it the fill stays 31 %.
    for air in (-10, 20, 40):
        with board(tmp_path / str(air), distance=900, air_c=air, temp_c=air) as (b, p):
            p.run(WAKE)
            assert p.of("fill")[0]["fill"] == 31, air
            assert p.of("fill")[0]["temp"] == air


@pytest.mark.parametrize("distance,code", [(None, 1), (9000, 1), (5000, 3), (80, 3), (1500, 3)])
def test_sensor_fault_reported_never_as_fill(tmp_path, distance, code):
    # no echo; far beyond range (the echo times out); beyond max_mm; inside the blind zone
    # (blocked); below the bottom
    with board(tmp_path, distance=distance) as (b, p):
        p.run(WAKE)
        assert p.of("fill")[0]["fill"] is None
        f = p.of("fault")
        assert [x["code"] for x in f] == [code]
        if code == 3:
            assert abs(f[0]["value"] - distance) <= 3
        # the same fault on the next wake is not reported again, and a recovery is
        p.clear()
        wake_cycle(b, p)
        assert p.of("fault") == []
        b.set_distance_mm(725)
        p.clear()
        wake_cycle(b, p)
        assert p.of("fill")[0]["fill"] == 50


def test_near_full_full_alarms_and_faster_sampling(tmp_path):
    with board(tmp_path, distance=725) as (b, p):
        p.run(WAKE)
        assert alarms(p) == []
        b.set_distance_mm(400)                       # 84 %
        wake_cycle(b, p)
        assert alarms(p) == [(5, 84)]
        assert p.of("fill")[-1]["fill"] == 84
        assert sleeps(b)[-1] == 300_000              # near full: every 5 min
        b.set_distance_mm(280)                       # 96 %
        wake_cycle(b, p, 300_000)
        assert alarms(p) == [(5, 84), (6, 96)]
        b.set_distance_mm(290)                       # 95 %: still full, no repeat
        wake_cycle(b, p, 300_000)
        assert alarms(p) == [(5, 84), (6, 96)]


def test_emptied_is_a_sudden_drop(tmp_path):
    with board(tmp_path, distance=400) as (b, p):
        p.run(WAKE)
        assert alarms(p) == [(5, 84)]
        b.set_distance_mm(1150)                      # emptied by the truck: 5 %
        wake_cycle(b, p, 300_000)
        assert (7, 5) in alarms(p)
        assert p.of("fill")[-1]["fill"] == 5
        assert sleeps(b)[-1] == 900_000              # back to the slow period


def test_fire_alarm_once_and_fast_sampling(tmp_path):
    with board(tmp_path) as (b, p):
        p.run(WAKE)
        b.set_adc(TEMP, uv=tmp36(85))
        wake_cycle(b, p)
        assert alarms(p) == [(1, 85)]
        assert sleeps(b)[-1] == 300_000
        wake_cycle(b, p, 300_000)
        assert alarms(p) == [(1, 85)]                # latched until it cools below fire_c - 10


def test_alarm_retransmitted_until_acked_across_deep_sleep(tmp_path):
    with board(tmp_path, ack_events=False) as (b, p):
        p.run(WAKE)
        b.set_adc(TEMP, uv=tmp36(90))
        wake_cycle(b, p)
        p.run(20_000)                                 # awake_s (15 s) passes without an ack
        first = p.of("alarm")
        assert len(first) >= 3 and len({a["eid"] for a in first}) == 1
        assert len(b.events("deepsleep")) == 2        # it gave up waiting and slept
        p.ack_events = True
        p.clear()
        wake_cycle(b, p, 300_000)
        again = p.of("alarm")
        assert again and again[0]["eid"] == first[0]["eid"]   # same event from flash, same eid
        p.clear()
        wake_cycle(b, p, 300_000)
        assert p.of("alarm") == []


def test_low_battery_and_tilt(tmp_path):
    with board(tmp_path, batt_mv=3200) as (b, p):
        p.run(WAKE)
        assert (9, 3200) in alarms(p)
        b.set_pin(TILT, 1)
        wake_cycle(b, p)
        assert (4, 50) in alarms(p)
        assert [c for c, v in alarms(p)].count(9) == 1


def test_stuck_sensor_does_not_follow_the_speed_of_sound(tmp_path):
    # the echo time stays bit-identical while the air warms by 6 °C: not a real echo
    with board(tmp_path, app={"stuck_n": 3}, temp_c=10, air_c=10) as (b, p):
        p.run(WAKE)
        for c in (13, 16):
            b.set_adc(TEMP, uv=tmp36(c))             # the board's sensor sees it; the echo does not
            wake_cycle(b, p)
        assert [f["code"] for f in p.of("fault")] == [2]
        assert p.of("fill")[-1]["fill"] is None


def test_depth_calibrated_at_install(tmp_path):
    with board(tmp_path, app={"depth_mm": 0}, distance=1180) as (b, p):
        p.run(WAKE)
        assert p.of("fill")[0]["fill"] == 0
        assert abs(int(b.read_flash("state/cs_depth.json")) - 1180) <= 1
        b.set_distance_mm(715)
        wake_cycle(b, p)
        assert p.of("fill")[-1]["fill"] == 50


def test_config_delivered_after_welcome_validated_and_kept(tmp_path):
    with board(tmp_path) as (b, p):
        p.after_welcome = [{"type": "config", "values": {"near_pct": 99}},   # not below full_pct
                           {"type": "config", "values": {"pings": 99}},      # out of range
                           {"type": "config", "values": {"interval_s": 600}}]
        p.run(WAKE)
        r = [p.replies[s] for s in p.after_welcome_seqs]
        assert [(m["type"], m.get("code"), m.get("field")) for m in r] == [
            ("nack", 3, "near_pct"), ("nack", 3, "pings"), ("ack", None, None)]
        assert sleeps(b) == [900_000]               # this wake had measured with the old config
        wake_cycle(b, p, 900_000)
        assert sleeps(b)[-1] == 600_000
        cfg = __import__("json").loads(b.read_flash("config.json"))
        assert cfg["app"]["interval_s"] == 600 and cfg["app"]["near_pct"] == 80


def test_heartbeat_every_hb_across_sleeps(tmp_path):
    with board(tmp_path, hb=1800) as (b, p):
        p.run(WAKE)
        assert len(p.of("heartbeat")) == 1
        wake_cycle(b, p)
        assert len(p.of("heartbeat")) == 1
        wake_cycle(b, p)                             # 30 min after the first
        hbs = p.of("heartbeat")
        assert len(hbs) == 2 and hbs[1]["boots"] == 1   # deep-sleep wakes are not boots


def test_no_battery_reading_is_null_never_zero_volts(tmp_path):
    """issue 9 item 11: an open battery input is "no reading" (null), not 0.0 V and low_battery."""
    with board(tmp_path, batt_mv=None) as (b, p):
        p.run(WAKE)
        assert p.of("fill")[0]["batt"] is None
        assert p.of("heartbeat")[0]["batt"] is None
        assert alarms(p) == []


def test_sensor_fault_event_reaches_the_gateway_before_its_null_fill(tmp_path):
    """issue 9 item 11: the gateway hears of the failed sensor (one fault, its eid a stable id)
    before it sees a fill without a level, so it never raises a second, "no reading" alert."""
    with board(tmp_path, distance=None) as (b, p):
        p.run(WAKE)
        types = [m["type"] for s, m in p.up if m["type"] in ("fault", "fill")]
        assert types == ["fault", "fill"]
        assert p.of("fill")[0]["fill"] is None


def test_hello_caps_say_what_is_wired(tmp_path):
    """issue 9 item 11: the hello's caps follow the board's pins and config, so the gateway
    knows which checks apply."""
    with board(tmp_path) as (b, p):
        p.run(WAKE)
        assert p.of("hello")[0]["caps"] == codes.CAP_ULTRASONIC_TRIG | codes.CAP_TEMPERATURE | codes.CAP_BATTERY
    with board(tmp_path / "2", app={"temp_kind": "none"}, rt={"batt_div": 0}) as (b, p):
        p.run(WAKE)
        assert p.of("hello")[0]["caps"] == codes.CAP_ULTRASONIC_TRIG


def test_runs_under_its_esp32_budget_by_default(tmp_path):
    from sim import vboard
    with board(tmp_path) as (b, p):
        assert b.heap_budget == vboard.esp32_heap_budget("ble")  # the bin's radio: NimBLE active
        p.run(WAKE)
        assert p.of("fill") and not b.heap_refusals()


def test_a_heap_too_small_is_a_fault_report_and_safe_mode_not_a_hang(tmp_path):
    """issue 10, bad input: on a board whose heap cannot hold the bin's code the firmware gets
    MemoryError, reboots into safe mode at once, drops its App there and reports fault memory
    over the link alone. The bin as .mpy now fits the smallest budget a board takes (64 KiB), so
    this board runs its sources: 72,000 B (since session 12's cuts in common the sources fit
    78,000 B; this test holds from about 69,000 to 76,000 B), with the qstr pools charged to
    the firmware (docs/virtual-boards.md)."""
    with board(tmp_path, heap_budget=72_000, mpy=False) as (b, p):
        p.run(6000)
        assert b.heap_refusals()
        assert b.boots == 2                                        # one reset, straight into safe mode
        faults = [f["code"] for f in p.of("fault")]
        assert codes.F_MEMORY in faults and codes.F_SAFE_MODE in faults
        st = p.of("heartbeat")[-1]["status"]
        assert st & codes.ST_SAFE_MODE and st & codes.ST_LINK_ONLY
        assert any("out of memory" in ln for ln in b.log())
        p.run(5000)
        assert b.boots == 2                                        # up, on the link alone
