"""Lamp fault detection from the driver's current-sense input.

An LED driver dimmed by PWM draws current roughly in proportion to the duty.
After a level has been steady for `settle_ms`, each sample is compared with
nominal_ma * duty: far too little is an open string or dead driver, far too
much a short, current with the lamp off a driver stuck on. `confirm` bad
samples in a row raise a fault once; as many good ones clear it, so a flaky
lamp is reported per episode, not per sample.
"""
from common.ticks import ticks_diff

OK = 0
OPEN = 1    # too little current for the duty
SHORT = 2   # too much current
STUCK = 3   # current while commanded off

KIND_NAMES = ("ok", "open", "short", "stuck_on")


class LampMonitor:
    def __init__(self, nominal_ma, settle_ms=2000, confirm=3, min_check_ma=30):
        self.nominal_ma = nominal_ma
        self.settle_ms = settle_ms
        self.confirm = confirm
        self.min_check_ma = min_check_ma
        self.faulty = False
        self.kind = OK
        self._duty = -1
        self._since = 0
        self._bad = 0
        self._good = 0

    def classify(self, duty, ma):
        exp = self.nominal_ma * duty // 65535
        if duty == 0:
            return STUCK if ma > self.nominal_ma // 10 + self.min_check_ma else OK
        if exp < self.min_check_ma:
            return OK  # too dim to tell a lamp from sensor noise
        if ma * 2 < exp:
            return OPEN
        if ma * 2 > exp * 3 + 2 * self.min_check_ma:
            return SHORT
        return OK

    def feed(self, duty, ma, now):
        """One sample; returns the fault kind when a fault is newly confirmed, else OK."""
        if self.nominal_ma <= 0:
            return OK
        if duty != self._duty:
            self._duty = duty
            self._since = now
            return OK
        if ticks_diff(now, self._since) < self.settle_ms:
            return OK
        k = self.classify(duty, ma)
        if k == OK:
            self._bad = 0
            if self.faulty:
                self._good += 1
                if self._good >= self.confirm:
                    self.faulty = False
                    self.kind = OK
            return OK
        self._good = 0
        self._bad += 1
        if self._bad >= self.confirm and not self.faulty:
            self.faulty = True
            self.kind = k
            return k
        return OK
