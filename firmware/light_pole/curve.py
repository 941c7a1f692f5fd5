"""Perceptual dimming curve and allocation-free fades.

Levels are in centi-percent (0..10000, "cl") so fades are smooth without floats
(a float is a heap object on the ESP32). Level L% maps onto the DALI arc-power
curve: 1% -> 0.1% light, 100% -> 100%, exponential in between, i.e. equal steps
in level look like equal steps in brightness. Fades run linearly in level.
"""
from array import array

from light_pole.tick import ticks_diff

FULL = 10000
DUTY_MAX = 65535
MAX_FADE = 1000000  # ms; (MAX_FADE << 10) < 2**30


def _table():
    t = array("H", [0] * 101)
    for p in range(1, 101):
        # DALI: arc n (1..254) -> 10^((n-1)/(253/3) - 1) %; level p% spans arcs 1..254
        t[p] = int(DUTY_MAX * 10 ** (3 * (p - 1) / 99 - 3) + 0.5)
    return t


_T = _table()


def duty(cl):
    """PWM duty (0..65535) for a level in centi-percent."""
    if cl <= 0:
        return 0
    if cl >= FULL:
        return DUTY_MAX
    i = cl // 100
    a = _T[i]
    return a + (_T[i + 1] - a) * (cl - i * 100) // 100


class Fader:
    """One running fade from the current level to a target over a duration.

    value(now) is pure integer arithmetic on small ints: no allocation per step.
    """

    def __init__(self, cl=0):
        self._from = cl
        self._to = cl
        self._t0 = 0
        self._dur = 0

    def go(self, target, dur_ms, now):
        """Start fading to `target` from wherever the lamp is now (retargeting mid-fade is smooth)."""
        cur = self.value(now)
        self._from = cur
        self._to = target
        self._t0 = now
        if dur_ms > MAX_FADE:
            dur_ms = MAX_FADE
        self._dur = dur_ms if dur_ms > 0 and cur != target else 0

    def value(self, now):
        if self._dur == 0:
            return self._to
        e = ticks_diff(now, self._t0)
        if e >= self._dur:
            self._dur = 0
            return self._to
        if e <= 0:
            return self._from
        # 10-bit fraction: e < dur <= MAX_FADE keeps every product below 2**30 (small ints)
        f = (e << 10) // self._dur
        return self._from + ((self._to - self._from) * f >> 10)

    @property
    def target(self):
        return self._to

    def busy(self):
        return self._dur != 0
