"""The pole's logic, on pins and ADC values the App hands in: local time, day/night from the
ambient sensor, the presence input, the dimming profile, the lamp state machine and the lamp
fault check. One module, not six: each module a board loads costs its names and its own objects
(docs/firmware.md#footprint).

Local time: curfew windows are set in local time ("dim from 23:00"), the clock is UTC: a fixed
offset plus the EU summer-time rule, integer arithmetic only, independent of the port's epoch and
of time.gmtime.

Day/night: dark below `dark_below`, light above `light_above` (raw read_u16 counts, a brighter sky
reads higher); in between nothing changes. A change needs the new side to hold for `dwell_ms`, so
headlights or a torch never switch a pole off at night. The very first reading decides at once:
after a reboot at night the lamp must not wait a minute in the dark.

Presence (PIR or radar; active high, or low with active=0): the pin interrupt only stamps the
time of the latest edge (no allocation, safe as a hard IRQ). poll() accepts a new level once it
has been stable for `debounce_ms`, so contact bounce and RF spikes never count as a walker, and a
sensor that stays high keeps `present` true for as long as it does.

The profile (base/full levels, hold, fades, max level, curfew windows): one Profile is live at a
time; a light_profile command builds a new one and swaps it in only if every field is valid, so a
refused command changes nothing.

The state machine: inputs are night, presence, autonomy and the local minute; the output is a
Fader target. Priority, highest first:
  manual (light_set, bounded by its hold) > presence (full, then hold) >
  prelight (from the gateway's light wave) > base at night > off by day,
then capped by the profile max and curfew windows. In autonomy (no gateway)
and safe mode the floor at night is the safe level, whatever caps say: a pole
nobody can reach errs on the side of light.
"""
from protocol.rules import LIGHT_BASE, LIGHT_FADE_DOWN_MS, LIGHT_FADE_UP_MS, LIGHT_FULL, LIGHT_HOLD_S, LIGHT_MAX
from protocol.codes import (E_BAD_VALUE, LS_AUTONOMOUS, LS_BASE, LS_CURFEW, LS_DAY, LS_FADING, LS_FULL,
                            LS_PRELIGHT, LS_SAFE)

from common.errors import CommandError
from light_pole.curve import Fader
from common.ticks import ticks_add, ticks_diff

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

_MAX_WINDOWS = const(4)
_MIN_MA = const(30)  # lamp current below this cannot be told from sensor noise


# -- local time ------------------------------------------------------------------------------------
def civil(days):
    """(year, month, day) for days since 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def days_from_civil(y, m, d):
    y -= 1 if m <= 2 else 0
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def eu_summer(unix):
    """True between 01:00 UTC on the last Sunday of March and of October."""
    y = civil(unix // 86400)[0]
    a = days_from_civil(y, 3, 31)
    b = days_from_civil(y, 10, 31)
    # the last Sunday of each (both months have 31 days); 1970-01-01 was a Thursday: (days + 4) % 7 == 0 on Sundays
    return (a - (a + 4) % 7) * 86400 + 3600 <= unix < (b - (b + 4) % 7) * 86400 + 3600


def local_minute(unix, tz_min=60, eu_dst=True):
    """Minute of the local day (0..1439)."""
    off = tz_min + (60 if eu_dst and eu_summer(unix) else 0)
    return ((unix + off * 60) // 60) % 1440


# -- day/night -------------------------------------------------------------------------------------
class DayNight:
    def __init__(self, dark_below, light_above, dwell_ms):
        if not 0 <= dark_below < light_above <= 65535:
            raise ValueError("need 0 <= dark_below < light_above <= 65535")
        self.dark_below = dark_below
        self.light_above = light_above
        self.dwell_ms = dwell_ms
        self.night = None  # unknown until the first reading
        self._since = None  # ticks the reading went to the other side, or None while it stays

    def feed(self, raw, now):
        """Take one reading; return the (possibly new) night flag."""
        if self.night is None:
            self.night = raw < (self.dark_below + self.light_above) // 2
            return self.night
        other = raw > self.light_above if self.night else raw < self.dark_below
        if not other:
            self._since = None
        elif self._since is None:
            self._since = now
        elif ticks_diff(now, self._since) >= self.dwell_ms:
            self.night = not self.night
            self._since = None
        return self.night


# -- presence --------------------------------------------------------------------------------------
class Motion:
    def __init__(self, pin, ticks_ms, debounce_ms=50, active=1):
        self._pin = pin
        self._active = active
        self._ticks = ticks_ms
        self.debounce_ms = debounce_ms
        self._edge = 0
        self._pending = True  # sample the initial level on the first poll
        self.present = False
        self._since = 0  # ticks when the debounced level last changed
        self.count = 0  # debounced detections (rising), wraps never matter: only deltas are used
        pin.irq(handler=self._irq, trigger=pin.IRQ_RISING | pin.IRQ_FALLING)  # bound once, here

    def _irq(self, _pin):
        self._edge = self._ticks()
        self._pending = True

    def poll(self, now):
        """Return True exactly once per debounced rising edge."""
        e = self._edge
        if not self._pending or ticks_diff(now, e) < self.debounce_ms:
            return False
        self._pending = False
        if self._edge != e:  # an edge came in just now: it gets its own debounce time
            self._pending = True
            return False
        v = self._pin.value() == self._active
        if v == self.present:
            return False
        self.present = v
        self._since = now
        if v:
            self.count += 1
        return v

    def high_ms(self, now):
        """How long the sensor has been continuously active (0 when idle)."""
        return ticks_diff(now, self._since) if self.present else 0

    def wait_ms(self, now):
        """How long until poll() has something to decide (for the main loop's sleep)."""
        if not self._pending:
            return -1
        d = self.debounce_ms - ticks_diff(now, self._edge)
        return d if d > 0 else 0

    def close(self):
        self._pin.irq(handler=None)


# -- the profile -----------------------------------------------------------------------------------
def windows(v, field="curfew"):
    """Validated curfew windows as a tuple of (start_min, end_min, max_level)."""
    if type(v) not in (list, tuple) or len(v) > _MAX_WINDOWS:
        raise CommandError(E_BAD_VALUE, field, "at most %d windows" % _MAX_WINDOWS)
    out = []
    for w in v:
        if type(w) not in (list, tuple) or len(w) != 3:
            raise CommandError(E_BAD_VALUE, field, "window must be [start_min, end_min, max_level]")
        s, e, m = w[0], w[1], w[2]
        for x, hi in ((s, 1439), (e, 1439), (m, 100)):
            if type(x) is not int or x < 0 or x > hi:
                raise CommandError(E_BAD_VALUE, field, "window value out of range")
        if s == e:
            raise CommandError(E_BAD_VALUE, field, "window start equals end")
        out.append((s, e, m))
    return tuple(out)


class Profile:
    """Levels in percent, hold in s, fades in ms; curfew: ((start_min, end_min, max), ...) local time."""

    def __init__(self, base=LIGHT_BASE, full=LIGHT_FULL, hold=LIGHT_HOLD_S,
                 fade_up=LIGHT_FADE_UP_MS, fade_down=LIGHT_FADE_DOWN_MS, max=LIGHT_MAX, curfew=()):
        self.base = base
        self.full = full
        self.hold = hold
        self.fade_up = fade_up
        self.fade_down = fade_down
        self.max = max
        self.curfew = curfew

    @classmethod
    def from_msg(cls, msg):
        """Build from a light_profile message (or a config dict with the same names)."""
        def get(name, lo, hi):
            v = msg.get(name)
            if type(v) is not int or v < lo or v > hi:
                raise CommandError(E_BAD_VALUE, name, "%s must be an integer %d..%d" % (name, lo, hi))
            return v

        base = get("base", 0, 100)
        full = get("full", 1, 100)
        if full < base:
            raise CommandError(E_BAD_VALUE, "full", "full level below base level")
        return cls(base, full, get("hold", 0, 3600), get("fade_up", 0, 60000), get("fade_down", 0, 600000),
                   get("max", 1, 100), windows(msg.get("curfew", ())))

    def to_msg(self):
        return {"type": "light_profile", "base": self.base, "full": self.full, "hold": self.hold,
                "fade_up": self.fade_up, "fade_down": self.fade_down, "max": self.max,
                "curfew": [list(w) for w in self.curfew]}

    def cap(self, minute):
        """Highest level allowed now: the profile max, lowered by every curfew window covering `minute`.

        minute is the local minute of day, or None without valid time (then no curfew:
        a pole that does not know the time errs on the side of light).
        """
        c = self.max
        if minute is None:
            return c
        for s, e, m in self.curfew:
            if (s <= minute < e) if s < e else (minute >= s or minute < e):
                if m < c:
                    c = m
        return c


# -- the state machine -----------------------------------------------------------------------------
# The telemetry state (SPEC 5, light): LS_DAY lamp off; LS_BASE night, nobody around; LS_FULL
# presence or its hold, also a light_set above base; LS_FADING after the hold; LS_PRELIGHT lit
# ahead of a walker; LS_AUTONOMOUS night with the gateway silent (own motion logic above the
# safe level); LS_SAFE safe mode; LS_CURFEW a curfew window holds the level below what it would be.


class Controller:
    def __init__(self, profile, safe_level=30):
        self.profile = profile
        self.safe_level = safe_level
        self.fader = Fader(0)
        self.state = LS_DAY
        self.safe = False
        self._full = None  # presence: ticks its hold ends
        self._pre = None  # prelight: (level, ticks it ends)
        self._man = None  # light_set: (level, ticks it ends, or None until changed)

    # -- inputs from commands -------------------------------------------------------
    def set_manual(self, level, hold, now):
        """light_set: for hold seconds, or with 0 until changed (another light_set, a
        light_profile, autonomy or a reboot: it is not persisted)."""
        self._man = (level, ticks_add(now, hold * 1000) if hold > 0 else None)

    def prelight(self, level, hold, now):
        p = self._pre
        if p is not None and ticks_diff(p[1], now) > 0 and p[0] > level:
            level = p[0]
        self._pre = (level, ticks_add(now, hold * 1000)) if hold > 0 else None

    def clear_manual(self):
        self._man = None

    def overridden(self, now):
        """A gateway decision (light_set, prelight) is in force."""
        m = self._man
        p = self._pre
        return (m is not None and (m[1] is None or ticks_diff(m[1], now) > 0)) or \
            (p is not None and ticks_diff(p[1], now) > 0)

    # -- the step -------------------------------------------------------------------
    def update(self, now, night, present, autonomous=False, minute=None):
        """Recompute the target level (percent) and start a fade if it changed.

        night None (not known yet) counts as night. Returns the target in percent.
        """
        p = self.profile
        if night is None:
            night = True
        m = self._man
        if m is not None and m[1] is not None and ticks_diff(m[1], now) <= 0:
            m = self._man = None
        pre = self._pre
        if pre is not None and ticks_diff(pre[1], now) <= 0:
            pre = self._pre = None
        if present:
            self._full = ticks_add(now, p.hold * 1000)
        elif self._full is not None and ticks_diff(self._full, now) <= 0:
            self._full = None

        if self.safe:
            lvl = max(p.base, self.safe_level) if night else 0
            state = LS_SAFE
        elif autonomous and night:
            self._man = None
            self._pre = None
            floor = max(p.base, self.safe_level)
            lvl = max(floor, p.full) if self._full is not None else floor
            lvl = max(min(lvl, p.cap(minute)), floor)
            state = LS_AUTONOMOUS
        else:
            if night:
                lvl, state = p.base, LS_BASE
                if pre is not None and pre[0] > lvl:
                    lvl, state = pre[0], LS_PRELIGHT
                if self._full is not None and p.full >= lvl:
                    lvl, state = p.full, LS_FULL
            else:
                lvl, state = 0, LS_DAY
            if m is not None:
                lvl = m[0]
                state = LS_FULL if lvl > p.base else (LS_BASE if lvl else LS_DAY)
            if lvl > p.max:
                lvl = p.max
            cap = p.cap(minute)
            if lvl > cap:
                lvl, state = cap, LS_CURFEW
        target = lvl * 100
        f = self.fader
        if target != f.target:
            f.go(target, p.fade_up if target > f.value(now) else p.fade_down, now)
        if (state == LS_BASE or state == LS_DAY) and f.busy() and f.value(now) > target:
            state = LS_FADING
        self.state = state
        return lvl

    def level(self, now):
        """Current lamp level in centi-percent (follows the fade)."""
        return self.fader.value(now)


# -- the lamp fault check --------------------------------------------------------------------------
# An LED driver dimmed by PWM draws current roughly in proportion to the duty. After a level has
# been steady for `settle_ms`, each sample is compared with nominal_ma * duty: far too little is
# an open string or dead driver, far too much a short, current with the lamp off a driver stuck
# on. `confirm` bad samples in a row raise a fault once; as many good ones clear it, so a flaky
# lamp is reported per episode, not per sample.
OK = 0
OPEN = 1    # too little current for the duty
SHORT = 2   # too much current
STUCK = 3   # current while commanded off



class LampMonitor:
    def __init__(self, nominal_ma, settle_ms=2000, confirm=3):
        self.nominal_ma = nominal_ma
        self.settle_ms = settle_ms
        self.confirm = confirm
        self.faulty = False
        self.kind = OK
        self._duty = -1
        self._since = 0
        self._bad = 0  # samples in a row that contradict `faulty`

    def feed(self, duty, value, now):
        """One sample (value: mA); returns the fault kind when a fault is newly confirmed, else OK."""
        if self.nominal_ma <= 0:
            return OK
        if duty != self._duty:
            self._duty = duty
            self._since = now
            return OK
        if ticks_diff(now, self._since) < self.settle_ms:
            return OK
        exp = self.nominal_ma * duty // 65535
        k = OK
        if duty == 0:
            if value > self.nominal_ma // 10 + _MIN_MA:
                k = STUCK
        elif exp >= _MIN_MA:
            if value * 2 < exp:
                k = OPEN
            elif value * 2 > exp * 3 + 2 * _MIN_MA:
                k = SHORT
        if (k != OK) != self.faulty:
            self._bad += 1
            if self._bad >= self.confirm:
                self._bad = 0
                self.faulty = k != OK
                self.kind = k
                return k
        else:
            self._bad = 0
        return OK
