"""One compartment: its lock, door switch and optional occupancy sensor.

LockActuator: every energisation of the solenoid is a bounded pulse. A solenoid held on
burns out, so the bound lives here, not in config: pulse() clamps to MAX_ON_MS whatever
it is asked, a pulse in progress is never extended, and after each pulse the coil rests
REST_FACTOR times its on-time (duty <= 20 %). service() ends the pulse from the main
loop; an optional one-shot `arm(ms, off)` (a hardware timer) ends it even if the loop
hangs, and the watchdog reboot re-runs __init__, which drives the pin off first. Tick
differences are only valid for days, so service() (called every loop) forgets a rest
that is over.

Debounced: a polled digital input that reports a new level only after it held for `ms`
(polled from the main loop, not an IRQ: deterministic and allocation free; a door or
occupancy contact changes far slower than the loop runs).

Compartment door rules: an opening within `window_ms` after an unlock pulse is
authorized; any other opening is a tamper alarm. A door open longer than `limit_ms`
raises door_open_too_long once per opening (value = seconds open). Every door change
is reported as a door event. Events go to `emit(kind, comp, a, v)`. How a door
resumes after a reset is locker.setup's (boot only).
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from protocol.codes import A_DOOR_OPEN_TOO_LONG, A_TAMPER

from common.ticks import ticks_add, ticks_diff
from locker import audit

MAX_ON_MS = const(1500)
MIN_ON_MS = const(50)
REST_FACTOR = const(4)

class LockActuator:
    # _since: when the last pulse started, None once its rest is over
    __slots__ = ("_pin", "energised", "_since", "_ms", "arm", "pulses")

    def __init__(self, pin, arm=None):
        self._pin = pin
        pin.value(0)
        self.energised = False
        self._since = None
        self._ms = 0
        self.arm = arm
        self.pulses = 0

    def ready(self, now):
        """True if a pulse may start now: not on and the previous pulse's rest is over."""
        return not self.energised and (self._since is None
                                       or ticks_diff(now, self._since) >= self._ms * (1 + REST_FACTOR))

    def pulse(self, ms, now):
        """Energise for min(ms, MAX_ON_MS); False (nothing done) if on or resting."""
        if not self.ready(now):
            return False
        if ms > MAX_ON_MS:
            ms = MAX_ON_MS
        elif ms < MIN_ON_MS:
            ms = MIN_ON_MS
        self._ms = ms
        self._since = now
        self.energised = True
        self.pulses += 1
        self._pin.value(1)
        if self.arm is not None:
            self.arm(ms, self.off)
        return True

    def off(self, *_):
        """De-energise; safe any time, also from a timer interrupt (allocates nothing)."""
        self._pin.value(0)
        self.energised = False

    def service(self, now):
        """End a pulse whose time is up; return ms until this actuator needs service again."""
        t = self._since
        if t is not None:
            el = ticks_diff(now, t)
            if self.energised:
                if 0 <= el < self._ms:
                    return self._ms - el
                self.off()
            if el >= self._ms * (1 + REST_FACTOR):
                self._since = None
        return 60000


class Debounced:
    # _since: when the input was first seen at the other level (None: at `state`); the input is
    # binary, so a bounce back resets it
    __slots__ = ("_pin", "_ms", "_inv", "state", "_since")

    def __init__(self, pin, ms, invert, now):
        self._pin = pin
        self._ms = ms
        self._inv = invert
        self.state = bool(pin.value()) != invert
        self._since = None

    def poll(self, now):
        """Sample once; return True when the debounced state just changed."""
        if (bool(self._pin.value()) != self._inv) == self.state:
            self._since = None
        elif self._since is None:
            self._since = now
        elif ticks_diff(now, self._since) >= self._ms:
            self.state = not self.state
            self._since = None
            return True
        return False


class Compartment:
    # _until: end of the authorization window after an unlock; _since: door open since (None once
    # closed, or once door_open_too_long was raised for this opening); _auth: this opening's
    __slots__ = ("n", "lock", "door", "occ", "emit", "window_ms", "limit_ms", "_until", "_since", "_auth")

    def __init__(self, n, lock, door, occ, emit, window_ms, limit_ms):
        self.n = n
        self.lock = lock
        self.door = door
        self.occ = occ
        self.emit = emit
        self.window_ms = window_ms
        self.limit_ms = limit_ms
        self._until = None
        self._since = None
        self._auth = False

    @property
    def is_open(self):
        return self.door.state

    def locked(self):
        return not self.door.state and not self.lock.energised and self._until is None

    def unlock(self, pulse_ms, now):
        """Pulse the lock and open the authorization window; False if the coil is busy."""
        if not self.lock.pulse(pulse_ms, now):
            return False
        self._until = ticks_add(now, self.window_ms)
        return True

    def step(self, now):
        """Poll inputs and timers; return ms until this compartment needs the next step."""
        wait = self.lock.service(now)
        u = self._until
        if u is not None and ticks_diff(now, u) > 0:
            self._until = u = None
        if self.occ is not None:
            self.occ.poll(now)
        if self.door.poll(now):
            if self.door.state:  # opened: authorized within the window after an unlock, else tamper
                self._since = now
                self._auth = u is not None
                self.emit(audit.DOOR, self.n, 3 if u is not None else 1, 0)
                if u is None:
                    self.emit(audit.ALARM, self.n, A_TAMPER, 0)
                self._until = None
            else:
                self._since = None
                self.emit(audit.DOOR, self.n, 2 if self._auth else 0, 0)
        o = self._since
        if o is not None:
            el = ticks_diff(now, o)
            if el >= self.limit_ms:
                self._since = None
                self.emit(audit.ALARM, self.n, A_DOOR_OPEN_TOO_LONG, el // 1000)
            elif self.limit_ms - el < wait:
                wait = self.limit_ms - el
        return wait
