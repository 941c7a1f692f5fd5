"""light_pole App wiring (commands, config, fail-safe, autonomy, events) with named fake
peripherals and a fake runtime object. Runs under CPython and, unchanged, inside MicroPython
(test_light_mpvm.py). The virtual-board tests (test_light_board.py) prove the same on the
real runtime and the simulated machine module."""

from common import config
from common.errors import CommandError, ConfigError
from common.store import Store
from light_pole import curve
from light_pole.app import App
from light_pole.setup import parse_curfew
from light_pole.control import days_from_civil
from protocol import codes, rules

try:
    import tempfile

    def _tmpdir():
        return tempfile.mkdtemp()
except ImportError:
    _n = [0]

    def _tmpdir():
        _n[0] += 1
        return "/tmp_light_%d" % _n[0]


class FakePin:
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self):
        self.v = 0
        self.handler = None

    def value(self):
        return self.v

    def irq(self, handler=None, trigger=0):
        self.handler = handler

    def set(self, v):
        if v != self.v:
            self.v = v
            if self.handler:
                self.handler(self)


class FakePWM:
    def __init__(self, freq, duty_u16):
        self.f = freq
        self.d = duty_u16
        self.broken = False

    def duty_u16(self, d):
        if self.broken:
            raise OSError(5)
        self.d = d

    def freq(self, f):
        self.f = f


class FakeAdc:
    def __init__(self, u16=0, uv=0):
        self.u16 = u16
        self.uv = uv
        self.broken = False

    def read_u16(self):
        if self.broken:
            raise OSError(5)
        return self.u16

    def read_uv(self):
        if self.broken:
            raise OSError(5)
        return self.uv


class FakeHal:
    def __init__(self, cs=False):
        self.motion = FakePin()
        self.ambient = FakeAdc(1000)  # dark
        self.cs = FakeAdc() if cs else None
        self.pwm_ = None

    def has(self, name):
        return name == "lamp_cs" and self.cs is not None

    def pwm(self, name, freq=1000, duty_u16=0):
        assert name == "lamp"
        self.pwm_ = FakePWM(freq, duty_u16)
        return self.pwm_

    def pin_in(self, name, pull=None):
        assert name == "motion"
        return self.motion

    def adc(self, name):
        return {"ambient": self.ambient, "lamp_cs": self.cs}[name]


BASE = {"base": 20}
"""These tests were written for a 20 % base level (protocol.rules.LIGHT_BASE is 10)."""


class FakeRt:
    """The slice of common.runtime.Runtime an App uses; time is stepped by the test."""

    def __init__(self, cfg=None, cs=False):
        self.hal = FakeHal(cs)
        self.cfg = config.validate(App.SCHEMA, dict(BASE, **(cfg or {})))
        self.store = Store(_tmpdir())
        self.t = 1000
        self.gateway_seen_ms = 1000
        self.unix = None
        self.events = []
        self.unacked = 0
        self.sent = []
        self.logs = []

    def ticks_ms(self):
        return self.t

    def now(self):
        return self.unix

    def event(self, msg, durable=False):
        self.events.append((msg, durable))
        if not self.gateway_alive:
            self.unacked += 1

    def pending_events(self):
        return self.unacked

    link_up = True

    def send(self, msg):
        self.sent.append(msg)

    def log(self, text, keep=False):
        self.logs.append(text)


def _boot(cfg=None, safe=False, cs=False):
    rt = FakeRt(cfg, cs)
    app = App(rt)
    app.start(safe)
    return rt, app


def _run(rt, app, ms, step=20):
    end = rt.t + ms
    while rt.t < end:
        rt.t += step
        if rt.gateway_seen_ms is not None and rt.gateway_alive:
            rt.gateway_seen_ms = rt.t
        app.step(rt.t)


FakeRt.gateway_alive = True


def _pct(rt):
    """Lamp level in % recovered from the PWM duty (inverse of the curve)."""
    d = rt.hal.pwm_.d
    for cl in range(0, 10001, 100):
        if curve.duty(cl) >= d:
            return cl // 100
    return 100


def test_schema_is_valid_and_defaults_pass_the_runtime_checks():
    config.check_schema(App.SCHEMA, "app")
    for k in App.SCHEMA:
        assert len(k) <= 12, k


def test_boot_at_night_is_lit_before_the_first_step():
    rt = FakeRt()
    app = App(rt)
    app.start(False)
    assert rt.hal.pwm_.d == curve.duty(30 * 100)  # safe level the moment the PWM exists
    _run(rt, app, 6000)
    assert _pct(rt) == 20 and app.ctl.state == codes.LS_BASE


def test_motion_full_hold_then_fade_and_one_event_per_gap():
    rt, app = _boot({"hold": 5, "motion_gap": 10})
    _run(rt, app, 6000)
    rt.hal.motion.set(1)
    _run(rt, app, 2000)
    assert _pct(rt) == 100 and app.ctl.state == codes.LS_FULL
    assert [e[0]["count"] for e in rt.events if e[0]["type"] == "motion"] == [1]
    rt.hal.motion.set(0)
    _run(rt, app, 1000)
    rt.hal.motion.set(1)
    _run(rt, app, 500)
    rt.hal.motion.set(0)
    assert len(rt.events) == 1  # second walker inside the gap: counted, not sent yet
    _run(rt, app, 4800)  # hold: 5 s after the sensor went low (+ debounce)
    assert app.ctl.state == codes.LS_FULL
    _run(rt, app, 1000)
    assert app.ctl.state == codes.LS_FADING
    _run(rt, app, 5000)
    assert _pct(rt) == 20
    assert [e[0]["count"] for e in rt.events] == [1, 1]
    rt.link_up = False  # gateway away: walkers are counted, not queued as events
    rt.hal.motion.set(1)
    _run(rt, app, 12000)
    rt.hal.motion.set(0)
    _run(rt, app, 1000)
    assert len(rt.events) == 2 and app.motion_unreported == 1


def test_day_by_sensor_turns_off_after_dwell():
    rt, app = _boot({"dn_dwell_s": 10})
    _run(rt, app, 5000)
    assert _pct(rt) == 20
    rt.hal.ambient.u16 = 20000
    _run(rt, app, 9000)
    assert _pct(rt) == 20
    _run(rt, app, 7000)
    assert rt.hal.pwm_.d == 0 and app.ctl.state == codes.LS_DAY
    # telemetry when the mode changes (boot at night, dawn), not on every step or fade
    assert [m["state"] for m in rt.sent] == [codes.LS_FADING, codes.LS_DAY]


def test_valid_time_uses_the_sun_not_the_sensor():
    rt, app = _boot({"lat": 5094, "lon": 696})
    rt.hal.ambient.u16 = 1000  # sensor says dark (dirty)
    rt.unix = days_from_civil(2026, 6, 21) * 86400 + 12 * 3600  # noon
    _run(rt, app, 6000)
    assert rt.hal.pwm_.d == 0
    rt.unix += 10 * 3600  # 22:00 UTC
    _run(rt, app, 6000)
    assert _pct(rt) == 20


def test_commands_validate_and_name_the_field():
    rt, app = _boot()
    _run(rt, app, 5000)
    for msg, field in (({"type": "light_set", "level": 101, "hold": 5}, "level"),
                       ({"type": "light_set", "level": 50, "hold": -1}, "hold"),
                       ({"type": "prelight", "level": 50, "hold": 0, "hops": 1}, "hold"),
                       ({"type": "light_profile", "base": 50, "full": 40, "hold": 5, "fade_up": 0,
                         "fade_down": 0, "max": 100, "curfew": []}, "full"),
                       ({"type": "unlock", "comp": 1, "req": 1, "reason": ""}, "type")):
        try:
            app.on_command(msg)
        except CommandError as e:
            assert e.field == field, (msg, e.field)
        else:
            raise AssertionError("accepted %r" % (msg,))
    assert app.ctl.profile.base == 20  # refused profile changed nothing
    app.on_command({"type": "light_profile", "base": 10, "full": 60, "hold": 5, "fade_up": 0,
                    "fade_down": 0, "max": 60, "curfew": [[1380, 300, 40]]})
    try:
        app.on_command({"type": "light_set", "level": 70, "hold": 5})
    except CommandError as e:
        assert e.field == "level"
    else:
        raise AssertionError("level above max accepted")
    app.on_command({"type": "light_set", "level": 55, "hold": 2})
    _run(rt, app, 100)
    assert _pct(rt) == 55 and app.ctl.state == codes.LS_FULL
    _run(rt, app, 2500)
    assert _pct(rt) == 10
    app.on_command({"type": "prelight", "level": 40, "hold": 3, "hops": 2})
    _run(rt, app, 100)
    assert _pct(rt) == 40 and app.ctl.state == codes.LS_PRELIGHT
    assert rt.store.get("profile")["base"] == 10  # survives a reboot
    rt2 = FakeRt()
    rt2.store = rt.store
    app2 = App(rt2)
    app2.start(False)
    assert app2.ctl.profile.max == 60 and app2.ctl.profile.curfew == ((1380, 300, 40),)


def test_config_cross_checks_and_profile_reset():
    rt, app = _boot()
    app.on_command({"type": "light_profile", "base": 10, "full": 60, "hold": 5, "fade_up": 0,
                    "fade_down": 0, "max": 60, "curfew": []})
    new = config.validate(App.SCHEMA, {"dark_below": 7000}, base=rt.cfg)
    try:
        app.on_config(new)
    except ConfigError as e:
        assert e.field == "light_above"
    else:
        raise AssertionError("inverted thresholds accepted")
    assert app.dn.dark_below == 3000  # old config kept
    bad = config.validate(App.SCHEMA, {"curfew": "23:00-5:00"}, base=rt.cfg)
    try:
        app.on_config(bad)
    except ConfigError as e:
        assert e.field == "curfew"
    else:
        raise AssertionError("bad curfew accepted")
    dn = app.dn
    app.on_config(config.validate(App.SCHEMA, {"debounce_ms": 20}, base=rt.cfg))
    assert app.ctl.profile.base == 10 and app.motion.debounce_ms == 20  # profile untouched
    assert app.dn is dn  # day/night state kept
    app.on_config(config.validate(App.SCHEMA, {"base": 25, "curfew": "1380-300:40"}, base=rt.cfg))
    assert app.ctl.profile.base == 25 and app.ctl.profile.curfew == ((1380, 300, 40),)
    assert rt.store.get("profile") is None
    assert parse_curfew("") == () and parse_curfew("0-60:0,1380-300:40") == ((0, 60, 0), (1380, 300, 40))


def test_gateway_silence_at_night_means_own_logic_at_safe_floor():
    rt, app = _boot({"autonomy_s": 60})
    _run(rt, app, 5000)
    app.on_command({"type": "light_set", "level": 0, "hold": 3600})
    _run(rt, app, 5000)
    assert rt.hal.pwm_.d == 0
    rt.gateway_alive = False
    _run(rt, app, 61000)
    assert app.ctl.state == codes.LS_AUTONOMOUS and _pct(rt) == 30
    rt.hal.motion.set(1)
    _run(rt, app, 2000)
    assert _pct(rt) == 100  # still its own motion logic


def test_silence_alone_is_not_autonomy_an_unanswered_event_is():
    rt, app = _boot({"autonomy_s": 60, "hold": 5})
    rt.gateway_alive = False  # no downlink from now on: a quiet healthy gateway looks the same ...
    _run(rt, app, 120000)
    assert app.ctl.state == codes.LS_BASE and _pct(rt) == 20  # ... so this is not autonomy yet
    rt.hal.motion.set(1)  # a walker: its motion event goes unanswered -> evidence
    _run(rt, app, 2000)
    assert app.ctl.state == codes.LS_FULL
    rt.hal.motion.set(0)
    _run(rt, app, 20000)
    assert rt.unacked == 1 and app.ctl.state == codes.LS_AUTONOMOUS and _pct(rt) == 30


def test_safe_mode_lights_safe_level_without_motion():
    rt, app = _boot({"base": 10}, safe=True)
    assert app.motion is None
    _run(rt, app, 6000)
    assert _pct(rt) == 30 and app.ctl.state == codes.LS_SAFE
    rt.hal.motion.set(1)
    _run(rt, app, 1000)
    assert _pct(rt) == 30


def test_exception_in_step_leaves_lamp_at_safe_level_and_is_raised():
    rt, app = _boot()
    _run(rt, app, 6000)
    app.on_command({"type": "light_set", "level": 0, "hold": 3600})
    _run(rt, app, 5000)
    assert rt.hal.pwm_.d == 0

    def boom(*a):
        raise RuntimeError("bug")
    app.ctl.update = boom
    try:
        app.step(rt.t + 20)
    except RuntimeError:
        pass
    else:
        raise AssertionError("exception swallowed: the runtime must see it")
    assert rt.hal.pwm_.d == curve.duty(3000) and app.errors == 1


def test_lamp_fault_event_from_current_sense():
    rt, app = _boot({"lamp_ma": 700, "cs_ma_v": 1000, "full": 100}, cs=True)
    rt.hal.motion.set(1)
    _run(rt, app, 3000)
    rt.hal.cs.uv = 700000  # 700 mA at full: healthy
    _run(rt, app, 5000)
    assert not [e for e in rt.events if e[0]["type"] == "fault"]
    rt.hal.cs.uv = 0  # string open
    _run(rt, app, 5000)
    faults = [e for e in rt.events if e[0]["type"] == "fault"]
    assert len(faults) == 1 and faults[0][0]["code"] == 4 and faults[0][0]["value"] == 0 and faults[0][1]
    t = app.telemetry()
    assert t["type"] == "light" and t["level"] == 100 and t["lamp_ma"] == 0 and t["state"] == codes.LS_FULL
    assert [n for n, ok, _ in app.selftest() if not ok] == ["lamp_cs"]


def test_stuck_motion_sensor_is_reported_and_ignored_until_released():
    rt, app = _boot({"stuck_s": 60, "hold": 5})
    _run(rt, app, 5000)
    rt.hal.motion.set(1)
    _run(rt, app, 59000, step=50)
    assert _pct(rt) == 100 and not app.stuck
    _run(rt, app, 2000)
    assert app.stuck
    faults = [e[0] for e in rt.events if e[0]["type"] == "fault"]
    assert len(faults) == 1 and faults[0]["code"] == 2
    _run(rt, app, 10000)
    assert _pct(rt) == 20  # back to base although the input is still high
    assert ("motion", False) in [(n, ok) for n, ok, _ in app.selftest()]
    rt.hal.motion.set(0)
    _run(rt, app, 1000)
    assert not app.stuck
    rt.hal.motion.set(1)
    _run(rt, app, 2000)
    assert _pct(rt) == 100


def test_inconsistent_boot_config_runs_on_defaults_and_reports():
    rt = FakeRt({"dark_below": 9000, "light_above": 8000})
    app = App(rt)
    app.start(False)
    assert app.dn.dark_below == 3000
    assert [e[0]["code"] for e in rt.events] == [8]
    _run(rt, app, 6000)
    assert _pct(rt) == rules.LIGHT_BASE  # the schema default: 20 before it moved to protocol.rules


def test_missing_motion_pin_is_a_fault_not_a_crash_loop():
    rt = FakeRt()

    def no_pin(name, pull=None):
        raise ConfigError("pins." + name, "not in the pin map")
    rt.hal.pin_in = no_pin
    app = App(rt)
    app.start(False)
    assert app.motion is None and [e[0]["code"] for e in rt.events] == [8]
    _run(rt, app, 6000)
    assert _pct(rt) == 20


def test_broken_adcs_are_logged_not_a_crash():
    rt, app = _boot({"lamp_ma": 700}, cs=True)
    _run(rt, app, 3000)
    rt.hal.cs.broken = True
    rt.hal.ambient.broken = True
    _run(rt, app, 3000)  # would raise out of step() if a read error escaped
    assert app.errors == 0 and _pct(rt) == 20
    assert any("current sense read failed" in x for x in rt.logs)

