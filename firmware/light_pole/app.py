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
from protocol.codes import (CAP_CURRENT_SENSE, CAP_LIGHT_SENSOR, CAP_PIR, E_BAD_VALUE, E_NOT_SUPPORTED,
                            F_LAMP, F_SENSOR_STUCK, LS_AUTONOMOUS, LS_BASE, LS_DAY)

from common.config import BOOL, CHOICE, INT, STR
from common.errors import CommandError
from common import forget

from light_pole import control, curve
from light_pole.control import local_minute
from common.ticks import ticks_add, ticks_diff

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

_SLOW_MS = const(1000)
_FADE_STEP_MS = const(20)
_IDLE_STEP_MS = const(50)  # bounds the latency from a debounced edge to the lamp reacting
_EVIDENCE_MS = const(10000)  # an event unacked this long (3 retransmissions) means the gateway is gone


def _setup(fn, app, *args):
    """Runs light_pole.setup's `fn` (boot, config and profile code) and forgets the module again."""
    from light_pole import setup
    try:
        return getattr(setup, fn)(app, *args)
    finally:
        forget("light_pole.setup")


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
    def caps(pins, _rtc, cfg):
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
    dn: "control.DayNight"
    sun: "tuple | None"  # (UTC day, dawn, dusk minute) from setup.sun, or None: recomputed at its next use
    monitor: "control.LampMonitor"
    ctl: "control.Controller"

    def __init__(self, rt):
        self.rt = rt
        self.pwm = None  # made in start(); until then writes go nowhere
        self.motion = None
        self.ambient = None
        self.lamp_cs = None
        self.errors = 0
        self.raw = 0
        self.lamp_ma = 0
        self._duty = -1
        self.night = None
        self.minute = None
        self._due = 0
        self.count = 0  # motion detections not reported yet
        self._sent = None  # ticks of the last motion event (or of its skip while the gateway was away); None: none sent
        self.motion_unreported = 0
        self.stuck = False
        self.mode = -1
        self._cmd_ms = 0  # ticks of the last command, or of start(): what autonomy counts silence from
        self._since = -1  # ticks since when an event is unacked (autonomy's evidence), or -1
        self.auto = False
        _setup("init", self)

    def on_config(self, values):
        """A config command (already range-checked): cross-checks, then applied at once."""
        _setup("on_config", self, values)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, safe):
        _setup("start", self, safe)

    def stop(self):
        """Before the App leaves the heap (an update's install): the lamp keeps its level, the
        motion input lets go of its IRQ."""
        if self.motion is not None:
            self.motion.close()

    def step(self, now):
        try:
            ctl = self.ctl
            rt = self.rt
            c = self.cfg
            m = self.motion
            present = False
            if m is not None:
                if self.stuck and not m.present:
                    self.stuck = False
                    rt.log("light: motion input released", keep=True)
                if m.poll(now):
                    self.count += 1
                present = m.present
                # a sensor active for stuck_s is broken (or taped over): ignored until it lets
                # go, so a dead PIR cannot keep a lamp at full all night
                lim = c["stuck_s"]
                if present and not self.stuck and lim and m.high_ms(now) >= lim * 1000:
                    self.stuck = True
                    rt.log("light: motion input active for %d s: stuck, ignored until it clears" % lim, keep=True)
                    rt.event({"type": "fault", "code": F_SENSOR_STUCK, "value": lim}, durable=True)
                if self.stuck:
                    present = False
            # motion events: the first at once (the gateway lights the neighbours), then at most one per gap
            n = self.count
            if n and (self._sent is None or ticks_diff(now, self._sent) >= c["motion_gap"] * 1000):
                self.count = 0
                if self.auto or not rt.link_up:
                    # only useful live (the light wave); queued they would crowd a lamp fault out of
                    # the runtime's 16-event queue while the gateway is away
                    self.motion_unreported += n
                    if self._sent is not None:
                        self._sent = now
                else:
                    self._sent = now
                    rt.event({"type": "motion", "count": n if n < 255 else 255})
            if ticks_diff(now, self._due) >= 0:
                self._slow(now)
            ctl.update(now, self.night, present, self.autonomous(now), self.minute)
            self._output(now)
            # telemetry when the operating mode changes (dusk, dawn, autonomy, curfew), not per
            # walker: walkers are motion events already
            n = ctl.state
            if n != LS_DAY and n < LS_AUTONOMOUS:
                n = LS_BASE
            if n != self.mode:
                self.mode = n
                if rt.link_up:
                    rt.send(self.telemetry())
            if ctl.fader.busy():
                return _FADE_STEP_MS
            n = _IDLE_STEP_MS
            if m is not None:
                d = m.wait_ms(now)
                if 0 <= d < n:
                    n = d
            return n
        except Exception:
            self.errors += 1
            # at once the safe level, unless it is surely day and a later step will come (in safe
            # mode the runtime drops a failing app: then stay lit); must not raise
            try:
                c = self.cfg
                n = max(c["safe"], c["base"])
                if self.night is False and not self.ctl.safe:
                    n = 0
                self.ctl.fader.go(n * 100, 0, now)
            except Exception:
                n = 100
            try:
                self._duty = -1
                if self.pwm is not None:
                    self.pwm.duty_u16(curve.duty(n * 100))
            except Exception:
                pass
            raise

    def _output(self, now):
        d = curve.duty(self.ctl.level(now))
        if d != self._duty and self.pwm is not None:
            self.pwm.duty_u16(d)
            self._duty = d

    # -- once a second: ambient, clock, current sense -------------------------------------
    def _slow(self, now):
        self._due = ticks_add(now, _SLOW_MS)
        rt = self.rt
        c = self.cfg
        night = None
        if self.ambient is not None:
            try:
                self.raw = self.ambient.read_u16()
                night = self.dn.feed(self.raw, now)
            except Exception as e:
                rt.log("light: ambient read failed: %r" % (e,))
        unix = rt.now()
        if unix is not None:
            self.minute = local_minute(unix, c["tz_min"], c["eu_dst"])
            if c["daynight"] != "sensor":
                s = self.sun
                d = unix // 86400
                if s is None or s[0] != d:
                    s = self.sun = _setup("sun", self, d)  # the sun's arithmetic once a UTC day, with the rare paths
                night = not (s[1] <= unix % 86400 // 60 < s[2])
        else:
            self.minute = None
            if c["daynight"] == "clock":
                night = None  # no valid time: unknown counts as night
        self.night = night
        if self.lamp_cs is not None:
            try:
                d = self.lamp_cs.read_uv()
            except Exception as e:  # a broken sense input must not take the lamp into a crash loop
                rt.log("light: current sense read failed: %r" % (e,))
                return
            self.lamp_ma = (d // 1000) * c["cs_ma_v"] // 1000
            d = self.monitor.feed(self._duty, self.lamp_ma, now)
            if d != control.OK:
                rt.log("light: lamp fault %d (1 open, 2 short, 3 on while off) at %d mA (duty %d)"
                       % (d, self.lamp_ma, self._duty), keep=True)
                rt.event({"type": "fault", "code": F_LAMP, "value": self.lamp_ma}, durable=True)

    def autonomous(self, now):
        """Is the gateway gone? Silence alone is no proof (a healthy gateway may have nothing to
        say on a quiet night, and heartbeats are not acked), so after autonomy_s of silence it
        also takes evidence: no welcome since boot, an event unanswered for 10 s, or a
        gateway override (light_set/prelight) in force that nobody could revoke."""
        rt = self.rt
        seen = rt.gateway_seen_ms
        if seen is None or ticks_diff(self._cmd_ms, seen) > 0:
            seen = self._cmd_ms
        if ticks_diff(now, seen) < self.cfg["autonomy_s"] * 1000:
            self._since = -1
            self.auto = False
            return False
        if self.auto:  # latched until the gateway is heard again
            return True
        if not rt.link_up or self.ctl.overridden(now):
            self.auto = True
        elif rt.pending_events() == 0:
            self._since = -1
        elif self._since == -1:
            self._since = now
        elif ticks_diff(now, self._since) >= _EVIDENCE_MS:
            self.auto = True
        return self.auto

    # -- gateway commands -----------------------------------------------------------------
    def on_command(self, msg):
        t = msg.get("type")
        now = self.rt.ticks_ms()
        self._cmd_ms = now  # a command is proof of life (rt.gateway_seen_ms is updated after this call)
        ctl = self.ctl
        if t == "light_profile":
            _setup("profile", self, msg)
        elif t == "light_set" or t == "prelight":
            v = msg.get("level")
            if type(v) is not int or not 0 <= v <= 100:
                raise CommandError(E_BAD_VALUE, "level", "level must be 0..100 %")
            if v > ctl.profile.max:
                raise CommandError(E_BAD_VALUE, "level", "level above the profile max %d" % ctl.profile.max)
            hold = msg.get("hold")
            if t == "light_set":
                if type(hold) is not int or not 0 <= hold <= 86400:
                    raise CommandError(E_BAD_VALUE, "hold", "hold must be 0..86400 s")
                ctl.set_manual(v, hold, now)
            else:
                if type(hold) is not int or not 1 <= hold <= 3600:
                    raise CommandError(E_BAD_VALUE, "hold", "hold must be 1..3600 s")
                ctl.prelight(v, hold, now)
        else:
            raise CommandError(E_NOT_SUPPORTED, "type", "a light pole does not do %s" % (t,))
        ctl.update(now, self.night, self.motion is not None and self.motion.present and not self.stuck,
                   self.autonomous(now), self.minute)
        self._output(now)

    # -- reporting ------------------------------------------------------------------------
    def telemetry(self):
        return {"type": "light", "level": (self.ctl.level(self.rt.ticks_ms()) + 50) // 100,
                "state": self.ctl.state, "ambient": self.raw, "lamp_ma": min(self.lamp_ma, 0xFFFF)}

    def selftest(self):
        return _setup("selftest", self)
