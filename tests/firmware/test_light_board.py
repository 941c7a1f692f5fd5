"""light_pole on a virtual board: the unmodified firmware (common runtime + light_pole +
protocol) in genuine MicroPython, peripherals driven through tools/vboard, the gateway
played over the link UART by test_light_bench.Gateway."""
from __future__ import annotations

import pytest

import mpvm

pytest.importorskip("serial")
from vboard import VirtualBoard  # noqa: E402

from test_light_bench import BRIGHT, DARK, NO_TIME, NOON_2026_06_21, PINS, Gateway, deploy_tree  # noqa: E402

pytestmark = pytest.mark.skipif(not mpvm.node_available(), reason="MicroPython VM not installed: run ./dev setup")

LAMP, MOTION, AMBIENT, CS = PINS["lamp"], PINS["motion"], PINS["ambient"], PINS["lamp_cs"]


def duty_for(pct: int) -> int:
    """The DALI-log duty the firmware should output for pct (same formula, computed here)."""
    return 0 if pct == 0 else int(65535 * 10 ** (3 * (pct - 1) / 99 - 3) + 0.5)


@pytest.fixture
def bench(tmp_path):
    boards = []

    def make(app=None, rt=None, start_time=NO_TIME, ambient=DARK, welcome_time=0, hb=0):
        d = tmp_path / f"img{len(boards)}"
        d.mkdir()
        deploy_tree(d, dict({"fade_up": 400, "fade_down": 1000, "hold": 5, "dn_dwell_s": 5}, **(app or {})), rt)
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
    assert b.pwm_duty(LAMP) == duty_for(30)  # safe level from the first instant
    g.connect()
    g.run(3000)
    assert b.pwm_duty(LAMP) == duty_for(20)
    hello = g.of("hello")[0]
    assert hello["role"] == 2 and hello["caps"] == 16 | 64
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
