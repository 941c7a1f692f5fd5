"""Lamp fault detection from the driver's current-sense input.

An LED driver dimmed by PWM draws current roughly in proportion to the duty.
After a level has been steady for `settle_ms`, each sample is compared with
nominal_ma * duty: far too little is an open string or dead driver, far too
much a short, current with the lamp off a driver stuck on. `confirm` bad
samples in a row raise a fault once; as many good ones clear it, so a flaky
lamp is reported per episode, not per sample.
"""
from common.ticks import ticks_diff

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

OK = 0
OPEN = 1    # too little current for the duty
SHORT = 2   # too much current
STUCK = 3   # current while commanded off

KIND_NAMES = ("ok", "open", "short", "stuck_on")

_MIN_MA = const(30)  # below this a lamp cannot be told from sensor noise


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
