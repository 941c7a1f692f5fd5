"""Lock solenoid driver: every energisation is a bounded pulse.

A solenoid held on burns out, so the bound lives here, not in config: pulse()
clamps to MAX_ON_MS whatever it is asked, a pulse in progress is never extended,
and after each pulse the coil rests REST_FACTOR times its on-time (duty <= 20 %).
service() ends the pulse from the main loop; an optional one-shot `arm(ms, off)`
(a hardware timer) ends it even if the loop hangs, and the watchdog reboot
re-runs __init__, which drives the pin off first. Tick differences are only
valid for days, so service() (called every loop) turns old times into flags.
"""

from common.ticks import ticks_diff

MAX_ON_MS = 1500
MIN_ON_MS = 50
REST_FACTOR = 4


class LockActuator:
    __slots__ = ("_pin", "_on", "_resting", "_t_on", "_ms", "_arm", "pulses")

    def __init__(self, pin, arm=None):
        self._pin = pin
        pin.value(0)
        self._on = False
        self._resting = False
        self._t_on = 0
        self._ms = 0
        self._arm = arm
        self.pulses = 0

    @property
    def energised(self):
        return self._on

    def ready(self, now_ms):
        """True if a pulse may start now: not on and the previous pulse's rest is over."""
        return not self._on and not (self._resting and ticks_diff(now_ms, self._t_on) < self._ms * (1 + REST_FACTOR))

    def pulse(self, ms, now_ms):
        """Energise for min(ms, MAX_ON_MS); False (nothing done) if on or resting."""
        if not self.ready(now_ms):
            return False
        if ms > MAX_ON_MS:
            ms = MAX_ON_MS
        elif ms < MIN_ON_MS:
            ms = MIN_ON_MS
        self._ms = ms
        self._t_on = now_ms
        self._on = True
        self._resting = True
        self.pulses += 1
        self._pin.value(1)
        if self._arm is not None:
            self._arm(ms, self.off)
        return True

    def off(self, *_):
        """De-energise; safe any time, also from a timer interrupt (allocates nothing)."""
        self._pin.value(0)
        self._on = False

    def service(self, now_ms):
        """End a pulse whose time is up; return ms until this actuator needs service again."""
        el = ticks_diff(now_ms, self._t_on)
        if self._on:
            if 0 <= el < self._ms:
                return self._ms - el
            self.off()
        if self._resting and el >= self._ms * (1 + REST_FACTOR):
            self._resting = False
        return 60000
