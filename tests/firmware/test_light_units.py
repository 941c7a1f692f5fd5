"""light_pole logic: runs under CPython (pytest) AND, unchanged, inside MicroPython
(test_light_mpvm.py feeds this very file to the VM). So: plain asserts, no pytest,
no fixtures; fakes are the named pins below (the real board is tested in test_light_board*.py)."""

from common.errors import CommandError
from light_pole import control, control as lamp, curve
from light_pole.control import DayNight, Motion, Profile, civil, days_from_civil, eu_summer, local_minute
from light_pole.setup import SunClock, sun_times
from common.ticks import ticks_add, ticks_diff
from protocol import codes


class FakePin:
    """Stands in for machine.Pin: tests flip the level and fire the IRQ like the hardware would."""
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, v=0):
        self.v = v
        self.handler = None
        self.trigger = 0

    def value(self):
        return self.v

    def irq(self, handler=None, trigger=0):
        self.handler = handler
        self.trigger = trigger

    def set(self, v):
        if v != self.v:
            self.v = v
            if self.handler:
                self.handler(self)


class Clock:
    def __init__(self, t=0):
        self.t = t

    def __call__(self):
        return self.t


def _raises(fn, field):
    try:
        fn()
    except CommandError as e:
        assert e.field == field, (e.field, field)
        assert e.code == 3
        return e
    raise AssertionError("no CommandError for " + field)


# -- curve ------------------------------------------------------------------------------
def test_curve_is_dali_logarithmic():
    assert curve.duty(0) == 0
    assert curve.duty(10000) == 65535
    assert curve.duty(100) == 66          # 1% -> 0.1% light (DALI arc 1)
    d50 = curve.duty(5000)                # 50% level -> ~3.3% light (10^(3*49/99-3))
    assert 2000 < d50 < 2300, d50
    prev = 0
    for cl in range(0, 10001, 7):
        d = curve.duty(cl)
        assert d >= prev
        prev = d
    # equal level steps are equal brightness ratios (log curve): 60->70 ~ 80->90
    r1 = curve.duty(7000) / curve.duty(6000)
    r2 = curve.duty(9000) / curve.duty(8000)
    assert abs(r1 - r2) < 0.01, (r1, r2)


def test_curve_table_is_the_dali_formula():
    assert curve.table(0) == 0 and len(curve._T) == 202
    for p in range(1, 101):
        assert curve.table(p) == int(65535 * 10 ** (3 * (p - 1) / 99 - 3) + 0.5), p


def test_fade_is_linear_in_level_and_retargets_smoothly():
    f = curve.Fader(0)
    f.go(10000, 1000, 0)
    assert f.busy()
    assert f.value(0) == 0
    assert abs(f.value(500) - 5000) <= 10
    assert f.value(1000) == 10000 and not f.busy()
    f.go(2000, 4000, 2000)
    mid = f.value(3000)
    f.go(10000, 1000, 3000)  # presence mid-fade: continues from where the lamp is
    assert f.value(3000) == mid
    assert f.value(4000) == 10000


def test_fade_survives_ticks_wrap():
    start = ticks_add(0, -300)  # 300 ms before the 2**30 wrap
    f = curve.Fader(0)
    f.go(10000, 600, start)
    assert abs(f.value(ticks_add(start, 300)) - 5000) <= 20
    assert f.value(ticks_add(start, 600)) == 10000


def test_fade_steps_do_not_allocate():
    try:
        import gc
        import micropython  # noqa: F401
    except ImportError:
        return  # CPython allocates for every int; the claim is about MicroPython
    f = curve.Fader(0)
    f.go(10000, 60000, 0)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for t in range(0, 60000, 20):
        curve.duty(f.value(t))
    b = gc.mem_alloc()
    gc.enable()
    assert b == a, b - a


# -- motion -----------------------------------------------------------------------------
def test_motion_debounce_ignores_glitch_and_counts_real_presence():
    pin, clk = FakePin(0), Clock(0)
    m = Motion(pin, clk, debounce_ms=50)
    assert pin.trigger == 3 and pin.handler is not None
    assert m.poll(0) is False and not m.present
    clk.t = 100
    pin.set(1)
    clk.t = 110
    pin.set(0)  # 10 ms spike
    assert m.poll(200) is False and m.count == 0
    clk.t = 300
    pin.set(1)
    assert m.poll(320) is False  # not yet stable
    assert m.poll(350) is True and m.present and m.count == 1
    assert m.poll(400) is False  # once per edge
    clk.t = 5000
    pin.set(0)
    assert m.poll(5060) is False and not m.present
    m.close()
    assert pin.handler is None


def test_motion_active_low_sensor():
    pin, clk = FakePin(1), Clock(0)  # open collector idles high
    m = Motion(pin, clk, debounce_ms=50, active=0)
    assert m.poll(100) is False and not m.present
    clk.t = 200
    pin.set(0)
    assert m.poll(260) is True and m.present


def test_motion_wait_ms():
    pin, clk = FakePin(0), Clock(0)
    m = Motion(pin, clk, debounce_ms=50)
    m.poll(100)
    assert m.wait_ms(100) == -1
    clk.t = 200
    pin.set(1)
    assert m.wait_ms(210) == 40


# -- day/night ----------------------------------------------------------------------------
def test_daynight_hysteresis_and_dwell():
    dn = DayNight(dark_below=2000, light_above=4000, dwell_ms=60000)
    assert dn.feed(1000, 0) is True  # first reading decides at once: dark -> night
    assert dn.feed(3000, 1000) is True  # inside the band: unchanged
    assert dn.feed(9000, 2000) is True  # headlight: needs the dwell
    assert dn.feed(9000, 30000) is True
    assert dn.feed(1500, 40000) is True  # back dark: dwell restarts
    assert dn.feed(9000, 50000) is True
    assert dn.feed(9000, 109999) is True
    assert dn.feed(9000, 110000) is False  # a minute of daylight
    assert dn.feed(3000, 200000) is False
    assert dn.feed(1900, 210000) is False
    assert dn.feed(1900, 270000) is True
    try:
        DayNight(5000, 4000, 0)
    except ValueError:
        pass
    else:
        raise AssertionError("inverted thresholds accepted")


def test_daynight_first_reading_in_band_uses_midpoint():
    assert DayNight(2000, 4000, 1000).feed(2999, 0) is True
    assert DayNight(2000, 4000, 1000).feed(3001, 0) is False


# -- clock ----------------------------------------------------------------------------------
def test_civil_dates_and_eu_summer_time():
    assert civil(0) == (1970, 1, 1)
    assert civil(20454) == (2026, 1, 1)
    assert days_from_civil(2028, 2, 29) == civil_to_check(2028, 2, 29)
    t = days_from_civil(2026, 3, 29) * 86400 + 3600  # 01:00 UTC, last Sunday of March
    assert not eu_summer(t - 1) and eu_summer(t)
    assert local_minute(t - 1) == 59 + 60  # 01:59 CET
    assert local_minute(t) == 3 * 60       # 03:00 CEST
    t = days_from_civil(2026, 10, 25) * 86400 + 3600
    assert eu_summer(t - 1) and not eu_summer(t)
    assert local_minute(t, 60, False) == 120


def civil_to_check(y, m, d):
    n = 0
    for yy in range(1970, y):
        n += 366 if (yy % 4 == 0 and (yy % 100 != 0 or yy % 400 == 0)) else 365
    md = (31, 29 if y % 4 == 0 else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    for mm in range(m - 1):
        n += md[mm]
    return n + d - 1


def test_sun_times_cologne():
    # published: 2026-06-21 sunrise 03:19 UTC, sunset 19:51 UTC; 2026-12-21 07:34 / 15:30 UTC
    r, s = sun_times(days_from_civil(2026, 6, 21), 50.94, 6.96)
    assert abs(r - (3 * 60 + 19)) <= 4 and abs(s - (19 * 60 + 51)) <= 4, (r, s)
    r, s = sun_times(days_from_civil(2026, 12, 21), 50.94, 6.96)
    assert abs(r - (7 * 60 + 34)) <= 4 and abs(s - (15 * 60 + 30)) <= 4, (r, s)
    assert sun_times(days_from_civil(2026, 6, 21), 80.0, 0.0) == (None, None)  # polar day
    assert sun_times(days_from_civil(2026, 12, 21), 80.0, 0.0) == (-1, -1)      # polar night
    sc = SunClock(50.94, 6.96, dusk_off=10, dawn_off=-10)
    d = days_from_civil(2026, 12, 21) * 86400
    assert sc.night(d + 12 * 3600) is False
    assert sc.night(d + 22 * 3600) is True
    assert sc.night(d + (7 * 60 + 10) * 60) is True
    assert sc.night(d + (15 * 60 + 20) * 60) is False
    assert sc.night(d + (15 * 60 + 45) * 60) is True


# -- profile --------------------------------------------------------------------------------
def _pmsg(**kw):
    m = {"type": "light_profile", "base": 10, "full": 80, "hold": 30, "fade_up": 500,
         "fade_down": 3000, "max": 90, "curfew": [[1380, 300, 40], [60, 120, 0]]}
    m.update(kw)
    return m


def test_profile_validation_names_the_field():
    p = Profile.from_msg(_pmsg())
    assert p.base == 10 and p.curfew == ((1380, 300, 40), (60, 120, 0))
    assert Profile.from_msg(p.to_msg()).to_msg() == p.to_msg()
    _raises(lambda: Profile.from_msg(_pmsg(base=90, full=50)), "full")
    _raises(lambda: Profile.from_msg(_pmsg(base=101)), "base")
    _raises(lambda: Profile.from_msg(_pmsg(hold=-1)), "hold")
    _raises(lambda: Profile.from_msg(_pmsg(hold="30")), "hold")
    _raises(lambda: Profile.from_msg(_pmsg(fade_down=600001)), "fade_down")
    _raises(lambda: Profile.from_msg(_pmsg(max=0)), "max")
    _raises(lambda: Profile.from_msg(_pmsg(curfew=[[10, 10, 5]])), "curfew")
    _raises(lambda: Profile.from_msg(_pmsg(curfew=[[10, 1440, 5]])), "curfew")
    _raises(lambda: Profile.from_msg(_pmsg(curfew=[[0, 1, 2]] * 5)), "curfew")
    _raises(lambda: Profile.from_msg(_pmsg(curfew=[[0, 1]])), "curfew")
    m = _pmsg()
    del m["fade_up"]
    _raises(lambda: Profile.from_msg(m), "fade_up")


def test_curfew_caps_wrap_midnight_and_take_the_lowest():
    p = Profile.from_msg(_pmsg())
    assert p.cap(None) == 90  # no valid time: no curfew
    assert p.cap(22 * 60) == 90
    assert p.cap(23 * 60) == 40
    assert p.cap(0) == 40
    assert p.cap(90) == 0  # 01:30 inside both windows: the lower wins
    assert p.cap(299) == 40
    assert p.cap(300) == 90


# -- state machine --------------------------------------------------------------------------
def _ctl(**kw):
    p = Profile(base=20, full=100, hold=10, fade_up=1000, fade_down=4000, max=100)
    for k in kw:
        setattr(p, k, kw[k])
    return control.Controller(p, safe_level=30)


def test_day_off_night_base_presence_hold_fade_down():
    c = _ctl()
    assert c.update(0, night=False, present=False) == 0 and c.state == codes.LS_DAY
    assert c.level(0) == 0
    assert c.update(1000, night=True, present=False) == 20 and c.state == codes.LS_BASE
    assert c.level(2000) == 2000  # fade up over 1 s
    assert c.update(3000, night=True, present=True) == 100 and c.state == codes.LS_FULL
    assert c.level(3500) == 6000
    assert c.level(4000) == 10000
    c.update(5000, night=True, present=False)
    assert c.state == codes.LS_FULL  # hold: 10 s after the last presence (3000)
    c.update(12999, night=True, present=False)
    assert c.state == codes.LS_FULL and c.level(12999) == 10000
    assert c.update(13000, night=True, present=False) == 20
    assert c.state == codes.LS_FADING
    assert c.level(15000) == 6000  # halfway down the 4 s fade
    c.update(17000, night=True, present=False)
    assert c.state == codes.LS_BASE and c.level(17000) == 2000
    c.update(20000, night=False, present=True)  # presence by day lights nothing
    assert c.state in (codes.LS_FADING, codes.LS_DAY) and c.fader.target == 0


def test_unknown_day_night_counts_as_night():
    c = _ctl()
    assert c.update(0, night=None, present=False) == 20


def test_prelight_and_manual_are_bounded_in_time():
    c = _ctl()
    c.update(0, True, False)
    c.prelight(60, 5, 100)
    assert c.update(100, True, False) == 60 and c.state == codes.LS_PRELIGHT
    c.prelight(40, 5, 200)  # a weaker wave does not dim an active prelight
    assert c.update(300, True, False) == 60
    assert c.update(5199, True, False) == 60
    assert c.update(5200, True, False) == 20
    c.set_manual(75, 3, 6000)
    assert c.update(6000, True, True) == 75 and c.state == codes.LS_FULL
    assert c.update(9000, True, False) == 100  # manual expired; presence hold still running
    c.set_manual(10, 0, 10000)  # until changed
    assert c.update(10000, True, False) == 10 and c.state == codes.LS_FADING
    assert c.update(20000, True, False) == 10 and c.state == codes.LS_BASE
    assert c.update(500000, False, False) == 10  # day or night: the operator said so
    c.set_manual(0, 0, 500001)
    assert c.update(500001, True, False) == 0 and c.state == codes.LS_FADING
    assert c.update(510000, True, False) == 0 and c.state == codes.LS_DAY
    c.clear_manual()  # a light_profile command
    assert c.update(510001, True, False) == 20


def test_curfew_and_max_cap_everything_but_autonomy_keeps_safe_floor():
    c = _ctl(max=90, curfew=((1380, 300, 0),))
    assert c.update(0, True, True, minute=22 * 60) == 90
    assert c.update(1, True, True, minute=23 * 60) == 0  # insect curfew: off even with presence
    assert c.state == codes.LS_CURFEW
    c.set_manual(100, 60, 2)
    assert c.update(2, True, False, minute=23 * 60) == 0
    assert c.update(3, True, True, autonomous=True, minute=23 * 60) == 30  # gateway gone: safe floor
    assert c.state == codes.LS_AUTONOMOUS
    assert c.update(4, True, True, autonomous=True, minute=22 * 60) == 90  # own motion logic, capped by max


def test_autonomy_drops_gateway_overrides():
    c = _ctl()
    c.set_manual(0, 3600, 0)
    assert c.update(0, True, False) == 0
    assert c.update(1, True, False, autonomous=True) == 30
    assert c.update(2, True, False, autonomous=False) == 20  # manual was dropped, not resumed


def test_safe_mode_is_safe_level_at_night_off_by_day():
    c = _ctl(base=50)
    c.safe = True
    assert c.update(0, True, False) == 50 and c.state == codes.LS_SAFE
    assert c.update(1, None, False) == 50
    assert c.update(2, False, True) == 0
    c.profile.base = 0
    assert c.update(3, True, False) == 30


def test_controller_update_does_not_allocate_in_steady_state():
    try:
        import gc
        import micropython  # noqa: F401
    except ImportError:
        return
    c = _ctl(curfew=((1380, 300, 40),))
    c.update(0, True, True, minute=1400)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for t in range(0, 20000, 20):
        c.update(t, True, t < 5000, False, 1400)
        curve.duty(c.level(t))
    b = gc.mem_alloc()
    gc.enable()
    assert b == a, b - a


# -- lamp fault -----------------------------------------------------------------------------
def test_lamp_open_short_stuck_confirmed_once_and_cleared():
    m = lamp.LampMonitor(nominal_ma=700, settle_ms=1000, confirm=3)
    d = 65535
    assert m.feed(d, 0, 0) == lamp.OK  # level just changed: settling
    assert m.feed(d, 0, 500) == lamp.OK
    assert m.feed(d, 0, 1000) == lamp.OK
    assert m.feed(d, 0, 2000) == lamp.OK
    assert m.feed(d, 0, 3000) == lamp.OPEN and m.faulty
    assert m.feed(d, 0, 4000) == lamp.OK  # reported once
    for t in (5000, 6000, 7000):
        m.feed(d, 690, t)
    assert not m.faulty
    for t in (8000, 9000):
        assert m.feed(d, 1500, t) == lamp.OK
    assert m.feed(d, 1500, 10000) == lamp.SHORT
    m2 = lamp.LampMonitor(nominal_ma=700, settle_ms=0, confirm=2)
    m2.feed(0, 300, 0)
    m2.feed(0, 300, 1)
    assert m2.feed(0, 300, 2) == lamp.STUCK
    m3 = lamp.LampMonitor(nominal_ma=700, settle_ms=0, confirm=1)
    m3.feed(curve.duty(2000), 0, 0)  # 20% level is ~0.4% light: too dim to judge
    assert m3.feed(curve.duty(2000), 0, 1) == lamp.OK


def test_ticks_diff_wraps():
    assert ticks_diff(ticks_add(0, -5), 5) == -10
    assert ticks_diff(5, ticks_add(0, -5)) == 10
