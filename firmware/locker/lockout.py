"""Throttle a credential input: too many failures in a window lock it for a while.

A 64-bit token tag cannot be brute-forced anyway; this stops nuisance and
reader-fuzzing, and each lockout is an alarm. Consecutive lockouts double in
length up to MAX_ESCALATION times the configured duration. Ticks, not wall
time, so a wrong clock cannot shorten it.
"""

from common.ticks import ticks_add, ticks_diff

MAX_ESCALATION = 8


class Lockout:
    __slots__ = ("max_fail", "window_ms", "lock_ms", "fails", "_first", "_until", "_level")

    def __init__(self, max_fail, window_ms, lock_ms):
        self.max_fail = max_fail
        self.window_ms = window_ms
        self.lock_ms = lock_ms
        self.fails = 0
        self._first = 0
        self._until = None
        self._level = 1

    def service(self, now_ms):
        """Forget an ended lockout or failure window (call each loop: tick differences only last days)."""
        if self._until is not None and ticks_diff(self._until, now_ms) <= 0:
            self._until = None
        if self.fails and ticks_diff(now_ms, self._first) > self.window_ms:
            self.fails = 0

    def locked(self, now_ms):
        self.service(now_ms)
        return self._until is not None

    def remaining_ms(self, now_ms):
        return ticks_diff(self._until, now_ms) if self.locked(now_ms) else 0

    def fail(self, now_ms):
        """Count a failure; return the lockout length in ms if this one starts a lockout, else 0."""
        self.service(now_ms)
        if self.fails == 0:
            self._first = now_ms
        self.fails += 1
        if self.fails < self.max_fail:
            return 0
        ms = self.lock_ms * self._level
        self._until = ticks_add(now_ms, ms)
        if self._level < MAX_ESCALATION:
            self._level *= 2
        self.fails = 0
        return ms

    def success(self):
        self.fails = 0
        self._level = 1
