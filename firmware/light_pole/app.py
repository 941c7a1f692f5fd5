"""The light pole App (contract: docs/firmware.md): wires pins to the pure logic modules.

Pins (logical names in the config's "pins" map): "lamp" PWM to the LED driver's
dim input, "motion" PIR/radar output, "ambient" light sensor ADC (brighter =
higher), optional "lamp_cs" current-sense ADC. The fast step (motion, fade,
PWM) does no allocation; ADC, RTC and current sense are sampled once a second.

Never dark by a software fault: start() puts the lamp at the safe level before
anything else can fail, and a failing step leaves it there (then re-raises so
the runtime counts the fault and, if it persists, reboots into safe mode).
"""
from protocol.rules import LIGHT_BASE, LIGHT_FADE_DOWN_MS, LIGHT_FADE_UP_MS, LIGHT_FULL, LIGHT_HOLD_S, LIGHT_MAX
from protocol.codes import (CAP_CURRENT_SENSE, CAP_LIGHT_SENSOR, CAP_PIR, E_BAD_VALUE, E_NOT_SUPPORTED, F_CONFIG,
                            F_LAMP, F_SENSOR_STUCK, LS_AUTONOMOUS, LS_BASE, LS_DAY)

from common.config import BOOL, CHOICE, INT, STR
from common.errors import CommandError
from common import forget

from light_pole import control, curve, lamp
from light_pole.daynight import DayNight
from light_pole.localtime import local_minute
from light_pole.sun import SunClock
from common.ticks import ticks_add, ticks_diff

SLOW_MS = 1000
FADE_STEP_MS = 20
IDLE_STEP_MS = 50  # bounds the latency from a debounced edge to the lamp reacting
EVIDENCE_MS = 10000  # an event unacked this long (3 retransmissions) means the gateway is gone
PROFILE_KEY = "profile"


class _NoLamp:
    """The lamp before start() has made the PWM: nothing to drive yet."""

    def duty_u16(self, d=None):
        return 0

    def freq(self, f=None):
        return 0


_NO_LAMP = _NoLamp()


def _setup():
    """light_pole.setup: boot, config and profile code, forgotten again after each use."""
    from light_pole import setup
    return setup

class App:
    ROLE = "light_pole"
    CAPS = CAP_PIR | CAP_LIGHT_SENSOR | CAP_CURRENT_SENSE
    FW = 10000  # 1.0.0
    SCHEMA = {
        # the default profile (a light_profile command overrides it until the next config change)
        "base": (INT, LIGHT_BASE, 0, 100),          # % at night with nobody around
        "full": (INT, LIGHT_FULL, 1, 100),          # % on presence
        "hold": (INT, LIGHT_HOLD_S, 0, 3600),       # s at full after the last presence
        "fade_up": (INT, LIGHT_FADE_UP_MS, 0, 60000),  # ms
        "fade_down": (INT, LIGHT_FADE_DOWN_MS, 0, 600000),
        "max": (INT, LIGHT_MAX, 1, 100),            # % cap at all times
        "curfew": (STR, "", 0, 32),         # local windows "start-end:max,...", e.g. "1380-300:40"
        # never dark
        "safe": (INT, 30, 1, 100),          # % floor at night in safe mode / autonomy
        "autonomy_s": (INT, 300, 10, 86400),  # gateway silence before the pole runs on its own
        # inputs
        "debounce_ms": (INT, 80, 0, 2000),
        "motion_low": (BOOL, False, None, None),  # sensor output active low (open collector: pull-up)
        "motion_gap": (INT, 5, 0, 600),     # s between motion events to the gateway (counts add up)
        "stuck_s": (INT, 1800, 0, 86400),   # motion input active this long = stuck sensor (fault); 0: never
        "daynight": (CHOICE, "auto", ("auto", "sensor", "clock"), None),  # auto: sun clock when time is valid
        "dark_below": (INT, 3000, 0, 65535),   # ambient read_u16: night below ...
        "light_above": (INT, 6000, 0, 65535),  # ... day above, unchanged in between
        "dn_dwell_s": (INT, 60, 0, 3600),
        "lat": (INT, 5100, -9000, 9000),    # 1/100 degree, for the sun clock; set per site
        "lon": (INT, 1000, -18000, 18000),
        "dusk_off": (INT, 0, -120, 120),    # minutes added to sunset / sunrise
        "dawn_off": (INT, 0, -120, 120),
        "tz_min": (INT, 60, -720, 840),     # local standard time offset (curfew windows)
        "eu_dst": (BOOL, True, None, None),
        # outputs
        "pwm_hz": (INT, 1000, 100, 40000),
        "lamp_ma": (INT, 0, 0, 10000),      # driver current at 100 %; 0: no lamp fault check
        "cs_ma_v": (INT, 1000, 1, 20000),   # current-sense scale, mA per volt at "lamp_cs"
    }

    @staticmethod
    def caps(pins, rtc, cfg):
        """What this pole has wired (the hello's caps): without lamp_cs the gateway has no current to check."""
        c = 0
        for name, bit in (("motion", CAP_PIR), ("ambient", CAP_LIGHT_SENSOR),
                          ("lamp_cs", CAP_CURRENT_SENSE)):
            if name in pins:
                c |= bit
        return c

    # set by light_pole.setup (configure, init)
    cfg: "dict"
    curfew: "tuple"
    dn: "DayNight"
    sun: "SunClock"
    monitor: "lamp.LampMonitor"
    ctl: "control.Controller"

    def __init__(self, rt):
        self.rt = rt
        self.pwm = _NO_LAMP  # replaced in start(); until then writes go nowhere
        self.motion = None
        self.ambient = None
        self.cs = None
        self.errors = 0
        self.raw_ambient = 0
        self.lamp_ma = 0
        self._duty = -1
        self._night = None
        self._minute = None
        self._slow_due = 0
        self._mot_sent = 0
        self._mot_pending = 0
        self._mot_last = 0
        self.motion_unreported = 0
        self.stuck = False
        self._mode = -1
        self._cmd_ms = 0  # ticks of the last command, or of start(): what autonomy counts silence from
        self._unacked_since = -1
        self._auto = False
        try:
            _setup().init(self)
        finally:
            forget("light_pole.setup")

    def on_config(self, values):
        """A config command (already range-checked): cross-checks, then applied at once."""
        try:
            _setup().on_config(self, values)
        finally:
            forget("light_pole.setup")

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, safe):
        try:
            _setup().start(self, safe)
        finally:
            forget("light_pole.setup")

    def stop(self):
        """Before the App leaves the heap (an update's install): the lamp keeps its level, the
        motion input lets go of its IRQ."""
        if self.motion is not None:
            self.motion.close()

    def step(self, now):
        try:
            return self._step(now)
        except Exception:
            self.errors += 1
            self._fail_safe(now)
            raise

    def _step(self, now):
        ctl = self.ctl
        detected = False
        m = self.motion
        if self.stuck and m is not None and not m.present:
            self.stuck = False
            self.rt.log("light: motion input released", keep=True)
        if m is not None and m.poll(now):
            detected = True
            self._motion_seen(now)
        present = detected or (m is not None and m.present)
        if present and self._stuck_check(m, now):
            present = False
        if ticks_diff(now, self._slow_due) >= 0:
            self._slow(now)
        if self._mot_pending and ticks_diff(now, self._mot_last) >= self.cfg["motion_gap"] * 1000:
            self._motion_event(now)
        ctl.update(now, self._night, present, self._autonomous(now), self._minute)
        self._output(now)
        self._report_mode()
        if ctl.fader.busy():
            return FADE_STEP_MS
        w = IDLE_STEP_MS
        if m is not None:
            d = m.wait_ms(now)
            if 0 <= d < w:
                w = d
        return w

    def _report_mode(self):
        """Telemetry when the operating mode changes (dusk, dawn, autonomy, curfew), not per walker:
        walkers are motion events already."""
        st = self.ctl.state
        mode = st if st == LS_DAY or st >= LS_AUTONOMOUS else LS_BASE
        if mode != self._mode:
            self._mode = mode
            if self.rt.link_up:
                self.rt.send(self.telemetry())

    def _output(self, now):
        d = curve.duty(self.ctl.level(now))
        if d != self._duty:
            self.pwm.duty_u16(d)
            self._duty = d

    def _fail_safe(self, now):
        """After an exception: at once the safe level, unless it is surely day and a later
        step will come (in safe mode the runtime drops a failing app: then stay lit). Must not raise."""
        try:
            c = self.cfg
            lvl = max(c["safe"], c["base"])
            if self._night is False and not self.ctl.safe:
                lvl = 0
            self.ctl.fader.go(lvl * 100, 0, now)
        except Exception:
            lvl = 100
        try:
            self._duty = -1
            self.pwm.duty_u16(curve.duty(lvl * 100))
        except Exception:
            pass

    # -- once a second: ambient, clock, current sense -------------------------------------
    def _slow(self, now):
        self._slow_due = ticks_add(now, SLOW_MS)
        rt = self.rt
        c = self.cfg
        night = None
        if self.ambient is not None:
            try:
                self.raw_ambient = self.ambient.read_u16()
                night = self.dn.feed(self.raw_ambient, now)
            except Exception as e:
                rt.log("light: ambient read failed: %r" % (e,))
        unix = rt.now()
        if unix is not None:
            self._minute = local_minute(unix, c["tz_min"], c["eu_dst"])
            if c["daynight"] != "sensor":
                night = self.sun.night(unix)
        else:
            self._minute = None
            if c["daynight"] == "clock":
                night = None  # no valid time: unknown counts as night
        self._night = night
        if self.cs is not None:
            try:
                uv = self.cs.read_uv()
            except Exception as e:  # a broken sense input must not take the lamp into a crash loop
                rt.log("light: current sense read failed: %r" % (e,))
                return
            self.lamp_ma = (uv // 1000) * c["cs_ma_v"] // 1000
            k = self.monitor.feed(self._duty, self.lamp_ma, now)
            if k != lamp.OK:
                rt.log("light: lamp fault %s at %d mA (duty %d)" % (lamp.KIND_NAMES[k], self.lamp_ma, self._duty),
                       keep=True)
                rt.event({"type": "fault", "code": F_LAMP, "value": self.lamp_ma}, durable=True)

    def _stuck_check(self, m, now):
        """A sensor active for stuck_s is broken (or taped over): ignore it until it lets go,
        so a dead PIR cannot keep a lamp at full all night."""
        lim = self.cfg["stuck_s"]
        if self.stuck:
            return True
        if lim and m.high_ms(now) >= lim * 1000:
            self.stuck = True
            self.rt.log("light: motion input active for %d s: stuck, ignored until it clears" % lim, keep=True)
            self.rt.event({"type": "fault", "code": F_SENSOR_STUCK, "value": lim}, durable=True)
            return True
        return False

    def _autonomous(self, now):
        """Is the gateway gone? Silence alone is no proof (a healthy gateway may have nothing to
        say on a quiet night, and heartbeats are not acked), so after autonomy_s of silence it
        also takes evidence: no welcome since boot, an event unanswered for EVIDENCE_MS, or a
        gateway override (light_set/prelight) in force that nobody could revoke."""
        rt = self.rt
        seen = rt.gateway_seen_ms
        if seen is None or ticks_diff(self._cmd_ms, seen) > 0:
            seen = self._cmd_ms
        if ticks_diff(now, seen) < self.cfg["autonomy_s"] * 1000:
            self._unacked_since = -1
            self._auto = False
            return False
        if self._auto:  # latched until the gateway is heard again
            return True
        if not rt.link_up or self.ctl.overridden(now):
            self._auto = True
        elif rt.pending_events() == 0:
            self._unacked_since = -1
        elif self._unacked_since == -1:
            self._unacked_since = now
        elif ticks_diff(now, self._unacked_since) >= EVIDENCE_MS:
            self._auto = True
        return self._auto

    # -- motion events: the first at once (the gateway lights the neighbours), then at most one per gap
    def _motion_seen(self, now):
        self._mot_pending += 1
        if ticks_diff(now, self._mot_last) >= self.cfg["motion_gap"] * 1000 or self._mot_sent == 0:
            self._motion_event(now)

    def _motion_event(self, now):
        n = self._mot_pending
        self._mot_pending = 0
        self._mot_last = now
        if self._auto or not self.rt.link_up:
            # only useful live (the light wave); queued they would crowd a lamp fault out of
            # the runtime's 16-event queue while the gateway is away
            self.motion_unreported += n
            return
        self._mot_sent += 1
        self.rt.event({"type": "motion", "count": n if n < 255 else 255})

    # -- gateway commands -----------------------------------------------------------------
    def on_command(self, msg):
        t = msg.get("type")
        now = self.rt.ticks_ms()
        self._cmd_ms = now  # a command is proof of life (rt.gateway_seen_ms is updated after this call)
        ctl = self.ctl
        if t == "light_profile":
            try:
                _setup().profile(self, msg)
            finally:
                forget("light_pole.setup")
        elif t == "light_set":
            level = self._level(msg)
            hold = msg.get("hold")
            if type(hold) is not int or not 0 <= hold <= 86400:
                raise CommandError(E_BAD_VALUE, "hold", "hold must be 0..86400 s")
            ctl.set_manual(level, hold, now)
        elif t == "prelight":
            level = self._level(msg)
            hold = msg.get("hold")
            if type(hold) is not int or not 1 <= hold <= 3600:
                raise CommandError(E_BAD_VALUE, "hold", "hold must be 1..3600 s")
            ctl.prelight(level, hold, now)
        else:
            raise CommandError(E_NOT_SUPPORTED, "type", "a light pole does not do %s" % (t,))
        ctl.update(now, self._night, self.motion is not None and self.motion.present and not self.stuck,
                   self._autonomous(now), self._minute)
        self._output(now)

    def _level(self, msg):
        v = msg.get("level")
        if type(v) is not int or not 0 <= v <= 100:
            raise CommandError(E_BAD_VALUE, "level", "level must be 0..100 %")
        if v > self.ctl.profile.max:
            raise CommandError(E_BAD_VALUE, "level", "level above the profile max %d" % self.ctl.profile.max)
        return v

    # -- reporting ------------------------------------------------------------------------
    def telemetry(self):
        return {"type": "light", "level": (self.ctl.level(self.rt.ticks_ms()) + 50) // 100,
                "state": self.ctl.state, "ambient": self.raw_ambient, "lamp_ma": min(self.lamp_ma, 0xFFFF)}

    def selftest(self):
        try:
            return _setup().selftest(self)
        finally:
            forget("light_pole.setup")
