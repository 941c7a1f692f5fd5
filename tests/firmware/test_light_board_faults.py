"""light_pole on a virtual board, when things go wrong: gateway gone, lamp fault, crash loop
into safe mode, garbage and forged frames. Unmodified firmware in genuine MicroPython."""
from __future__ import annotations

import pytest

from sim import mpvm

pytest.importorskip("serial")
from sim.vboard import VirtualBoard  # noqa: E402

from protocol import codec, cose, messages, names  # noqa: E402
from test_light_bench import DARK, NO_TIME, PINS, Gateway, deploy_tree, duty_for, repl_exec  # noqa: E402

pytestmark = pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup")

LAMP, MOTION, AMBIENT, CS = PINS["lamp"], PINS["motion"], PINS["ambient"], PINS["lamp_cs"]


@pytest.fixture
def bench(tmp_path):
    made = []

    def make(app=None, rt=None, hb=0):
        d = tmp_path / f"img{len(made)}"
        d.mkdir()
        deploy_tree(d, dict({"base": 20, "fade_up": 400, "fade_down": 1000, "hold": 5, "dn_dwell_s": 5}, **(app or {})), rt)
        b = VirtualBoard(deploy_dir=d, flash_dir=tmp_path / f"flash{len(made)}", start_time=NO_TIME,
                         console_pty=False, name="l001")
        b.start()
        made.append(b)
        b.set_adc(AMBIENT, DARK)
        g = Gateway(b, hb=hb)
        made.append(g)
        return b, g

    yield make
    for x in made:
        try:
            x.close() if isinstance(x, Gateway) else x.stop()
        except Exception:
            pass


def test_gateway_silence_at_night_runs_own_motion_logic_at_safe_level(bench):
    b, g = bench(app={"autonomy_s": 10})
    g.connect()
    g.run(1000)
    assert g.command({"type": "light_set", "level": 0, "hold": 3600})["type"] == "ack"
    g.run(2000)
    assert b.pwm_duty(LAMP) == 0  # the operator switched it off ...
    g.silent = True               # ... and then the gateway died
    g.run(12000)
    assert b.pwm_duty(LAMP) == duty_for(30)  # safe base level, not dark
    b.set_pin(MOTION, 1)
    g.run(1000)
    assert b.pwm_duty(LAMP) == 65535  # still its own motion logic
    b.set_pin(MOTION, 0)
    g.run(8000)
    assert b.pwm_duty(LAMP) == duty_for(30)


def test_quiet_healthy_gateway_is_not_autonomy_a_dead_one_is_found_by_an_unanswered_event(bench):
    b, g = bench(app={"autonomy_s": 10, "hold": 2})
    g.connect()
    g.run(15000)  # the gateway acks and welcomes but has nothing to say: no downlink for 15 s
    assert b.pwm_duty(LAMP) == duty_for(20)  # silence alone is no proof: still the profile's base
    g.silent = True  # now it is gone
    b.set_pin(MOTION, 1)
    g.run(1000)
    b.set_pin(MOTION, 0)
    g.run(16000)  # the motion event is retransmitted unanswered -> autonomy
    assert b.pwm_duty(LAMP) == duty_for(30)
    g.silent = False  # back: its ack of the next retransmission (backoff 2, 4, 8, 16 s) is a downlink
    g.run(20000)
    assert b.pwm_duty(LAMP) == duty_for(20)


def test_lamp_fault_from_current_sense_is_an_acked_event(bench):
    b, g = bench(app={"lamp_ma": 700, "cs_ma_v": 1000})
    g.connect()
    b.set_pin(MOTION, 1)
    b.set_adc(CS, uv=700_000)  # 700 mA at full: healthy
    g.run(6000)
    assert not g.of("fault")
    b.set_adc(CS, uv=0)  # the LED string opened
    g.run(6000)
    f = g.of("fault")
    assert len(f) == 1 and f[0]["code"] == 4 and f[0]["value"] == 0
    g.run(6000)
    assert len(g.of("fault")) == 1  # once per episode, and acked (no retransmission)


def test_crash_loop_ends_in_safe_mode_lit_at_night(bench):
    b, g = bench(rt={"safe_boots": 2, "stable_s": 60})
    g.connect()
    for _ in range(3):  # brown-outs in quick succession: fast boots
        g.run(1000)
        b.power_cycle()
    g.hb = 10
    g.connect()
    g.run(3000)
    assert b.pwm_duty(LAMP) == duty_for(30)  # safe level (base 20 < safe 30)
    faults = [f["code"] for f in g.of("fault")]
    assert names.FAULTS[faults[0]] == "safe_mode"
    r = g.command({"type": "light_set", "level": 0, "hold": 60})
    assert (r["type"], r["code"]) == ("nack", messages.E_NOT_READY)
    b.set_pin(MOTION, 1)
    g.run(12000)
    assert b.pwm_duty(LAMP) == duty_for(30)  # only the safe behaviour: no motion logic
    hb = g.of("heartbeat")[-1]
    assert hb["status"] & messages.ST_SAFE_MODE
    assert g.of("light")[-1]["state"] == 6


def test_garbage_and_forged_frames_are_dropped_counted_and_harmless(bench):
    b, g = bench(hb=10)
    g.connect()
    g.run(2000)
    boots = b.boots
    g.ser.write(b"\x01\x02garbage\x00" + bytes(range(256)) + b"\x00")
    forged = codec.pack(cose.Mac(bytes(32)), cose.DOWN, b"l001", 999, {"type": "light_set", "level": 0, "hold": 60})
    g.ser.write(forged)
    g.run(12000)
    assert b.pwm_duty(LAMP) == duty_for(20)
    assert not [s for s in g.replies.values() if s.get("ref") == 999]
    assert g.of("heartbeat")[-1]["dropped"] >= 2
    assert b.boots == boots and not b.events("fw_crash")


def test_exception_in_the_app_leaves_the_lamp_lit_then_watchdog_recovers(tmp_path):
    """Fault injection from the console (like a technician with mpremote): the live firmware's
    Controller.update starts raising. The lamp must go to the safe level at once, even though
    the operator had switched it off, and the watchdog must then reset the board."""
    d = tmp_path / "img"
    d.mkdir()
    deploy_tree(d, {"base": 20, "fade_up": 400, "fade_down": 1000}, {"wdt_ms": 8000})
    b = VirtualBoard(deploy_dir=d, flash_dir=tmp_path / "flash", start_time=NO_TIME, console_pty=False,
                     console_port=0, record_pwm=True, name="l001")
    b.start()
    g = Gateway(b)
    try:
        b.set_adc(AMBIENT, DARK)
        g.connect()
        assert g.command({"type": "light_set", "level": 0, "hold": 3600})["type"] == "ack"
        g.run(2000)
        assert b.pwm_duty(LAMP) == 0
        boots = b.boots
        out = repl_exec(b.console_port, "import light_pole.control as c\n"
                                         "def boom(*a, **k):\n    raise RuntimeError('injected')\n"
                                         "c.Controller.update = boom\nprint('patched')\n")
        assert "patched" in out, out
        b.clear_events()
        g.run(200, 20)
        assert b.pwm_duty(LAMP) == duty_for(30)
        assert any("injected" in ln for ln in b.log())
        g.run(12000)  # 3 failed steps stop the watchdog feed; it bites after 8 s
        assert b.boots == boots + 1
        assert b.events("wdt_expired") and b.events("boot")[-1]["cause"] == "wdt"
        g.connect()
        g.run(3000)
        assert b.pwm_duty(LAMP) == duty_for(20)  # fresh boot, normal logic, manual level gone
        duties = [e["duty_u16"] for e in b.events("pwm") if e["pin"] == LAMP]
        assert duties and min(d for d in duties if d is not None) >= duty_for(20), duties
    finally:
        g.close()
        b.stop()
