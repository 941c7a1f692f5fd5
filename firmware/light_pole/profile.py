"""The dimming profile (base/full levels, hold, fades, max level, curfew windows).

One Profile is live at a time; a light_profile command builds a new one and
swaps it in only if every field is valid, so a refused command changes nothing.
"""
from protocol.rules import LIGHT_BASE, LIGHT_FADE_DOWN_MS, LIGHT_FADE_UP_MS, LIGHT_FULL, LIGHT_HOLD_S, LIGHT_MAX
from protocol.codes import E_BAD_VALUE

from common.errors import CommandError

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

_MAX_WINDOWS = const(4)


def _int(msg, name, lo, hi):
    v = msg.get(name)
    if type(v) is not int or v < lo or v > hi:
        raise CommandError(E_BAD_VALUE, name, "%s must be an integer %d..%d" % (name, lo, hi))
    return v


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
        base = _int(msg, "base", 0, 100)
        full = _int(msg, "full", 1, 100)
        if full < base:
            raise CommandError(E_BAD_VALUE, "full", "full level below base level")
        p = cls(base, full, _int(msg, "hold", 0, 3600), _int(msg, "fade_up", 0, 60000),
                _int(msg, "fade_down", 0, 600000), _int(msg, "max", 1, 100),
                windows(msg.get("curfew", ())))
        return p

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
