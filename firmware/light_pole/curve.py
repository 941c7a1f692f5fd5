"""Perceptual dimming curve and allocation-free fades.

Levels are in centi-percent (0..10000, "cl") so fades are smooth without floats
(a float is a heap object on the ESP32). Level L% maps onto the DALI arc-power
curve: 1% -> 0.1% light, 100% -> 100%, exponential in between, i.e. equal steps
in level look like equal steps in brightness. Fades run linearly in level.
"""
from common.ticks import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

_FULL = const(10000)
_DUTY_MAX = const(65535)
_MAX_FADE = const(1000000)  # ms; (_MAX_FADE << 10) < 2**30


# duty at level p% for p = 0..100, little-endian u16: 0, then round(65535 * 10^(3(p-1)/99 - 3)).
# A constant (not computed at import): no float work at boot, identical on a float32 ESP32,
# and it stays in flash when frozen. tests/firmware/test_light_units.py recomputes it.
_T = (
    b"\x00\x00\x42\x00\x46\x00\x4b\x00\x51\x00\x57\x00\x5d\x00\x64\x00\x6b\x00\x73\x00\x7b\x00\x84\x00"
    b"\x8d\x00\x97\x00\xa2\x00\xae\x00\xbb\x00\xc8\x00\xd7\x00\xe6\x00\xf7\x00\x09\x01\x1c\x01\x30\x01"
    b"\x46\x01\x5e\x01\x77\x01\x92\x01\xaf\x01\xce\x01\xf0\x01\x14\x02\x3a\x02\x63\x02\x8f\x02\xbf\x02"
    b"\xf1\x02\x28\x03\x62\x03\xa1\x03\xe4\x03\x2c\x04\x79\x04\xcc\x04\x25\x05\x84\x05\xea\x05\x57\x06"
    b"\xcd\x06\x4a\x07\xd1\x07\x62\x08\xfd\x08\xa3\x09\x56\x0a\x15\x0b\xe2\x0b\xbe\x0c\xa9\x0d\xa6\x0e"
    b"\xb5\x0f\xd8\x10\x0f\x12\x5d\x13\xc4\x14\x44\x16\xe0\x17\x9a\x19\x73\x1b\x6f\x1d\x8f\x1f\xd7\x21"
    b"\x49\x24\xe9\x26\xb9\x29\xbc\x2c\xf8\x2f\x70\x33\x27\x37\x23\x3b\x6a\x3f\xff\x43\xe9\x48\x2d\x4e"
    b"\xd4\x53\xe3\x59\x62\x60\x59\x67\xd1\x6e\xd3\x76\x69\x7f\x9e\x88\x7e\x92\x14\x9d\x6e\xa8\x9a\xb4"
    b"\xa7\xc1\xa5\xcf\xa7\xde\xbe\xee\xff\xff"
)


def table(p):
    """Duty for a whole percent p (0..100)."""
    return _T[2 * p] | _T[2 * p + 1] << 8


def duty(level):
    """PWM duty (0..65535) for a level in centi-percent."""
    if level <= 0:
        return 0
    if level >= _FULL:
        return _DUTY_MAX
    i = level // 100
    a = table(i)
    return a + (table(i + 1) - a) * (level - i * 100) // 100


class Fader:
    """One running fade from the current level to a target over a duration.

    value(now) is pure integer arithmetic on small ints: no allocation per step.
    """

    def __init__(self, level=0):
        self._from = level
        self.target = level  # read-only outside
        self._t0 = 0
        self._dur = 0

    def go(self, target, d, now):
        """Start fading to `target` over d ms from wherever the lamp is now (retargeting mid-fade is smooth)."""
        cur = self.value(now)
        self._from = cur
        self.target = target
        self._t0 = now
        if d > _MAX_FADE:
            d = _MAX_FADE
        self._dur = d if d > 0 and cur != target else 0

    def value(self, now):
        if self._dur == 0:
            return self.target
        e = ticks_diff(now, self._t0)
        if e >= self._dur:
            self._dur = 0
            return self.target
        if e <= 0:
            return self._from
        # 10-bit fraction: e < dur <= _MAX_FADE keeps every product below 2**30 (small ints)
        f = (e << 10) // self._dur
        return self._from + ((self.target - self._from) * f >> 10)

    def busy(self):
        return self._dur != 0
