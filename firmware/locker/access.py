"""The token decision: from raw reader bytes to an ACCESS result code.

Order matters: a locked-out input is refused before any crypto runs; then the
token's tag (protocol.token.verify checks it first), its fields and the clock;
then single use. The id is written to flash before the caller opens the lock.
Failures count towards the lockout; only authentic tokens report their id.

Lockout throttles the reader: too many failures in a window lock it for a while.
A 64-bit token tag cannot be brute-forced anyway; this stops nuisance and
reader-fuzzing, and each lockout is an alarm. Consecutive lockouts double in
length up to 8 times the configured duration. Ticks, not wall time, so a wrong
clock cannot shorten it.
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from protocol import token
from protocol.codes import (ACC_BUSY, ACC_EXPIRED, ACC_FORGED, ACC_LOCKED_OUT, ACC_MALFORMED, ACC_NO_TIME,
                            ACC_NOT_YET_VALID, ACC_OK_TOKEN, ACC_REPLAYED, ACC_WRONG_COMPARTMENT,
                            ACC_WRONG_LOCKER)
from protocol.errors import TokenError

from common.ticks import ticks_add, ticks_diff

_MAX_ESCALATION = const(8)


class Lockout:
    __slots__ = ("max_fail", "window_ms", "lock_ms", "fails", "_since", "_until", "_level")

    def __init__(self, max_fail, window_ms, lock_ms):
        self.max_fail = max_fail
        self.window_ms = window_ms
        self.lock_ms = lock_ms
        self.fails = 0
        self._since = 0  # the first failure of the window
        self._until = None
        self._level = 1

    def service(self, now):
        """Forget an ended lockout or failure window (call each loop: tick differences only last days)."""
        if self._until is not None and ticks_diff(self._until, now) <= 0:
            self._until = None
        if self.fails and ticks_diff(now, self._since) > self.window_ms:
            self.fails = 0

    def locked(self, now):
        self.service(now)
        return self._until is not None

    def remaining_ms(self, now):
        return ticks_diff(self._until, now) if self.locked(now) else 0

    def fail(self, now):
        """Count a failure; return the lockout length in ms if this one starts a lockout, else 0."""
        self.service(now)
        if self.fails == 0:
            self._since = now
        self.fails += 1
        if self.fails < self.max_fail:
            return 0
        ms = self.lock_ms * self._level
        self._until = ticks_add(now, ms)
        if self._level < _MAX_ESCALATION:
            self._level *= 2
        self.fails = 0
        return ms

    def success(self):
        self.fails = 0
        self._level = 1


class Access:
    """Decides token presentations for one locker (n compartments); mac is None when no booking
    key is provisioned."""

    __slots__ = ("mac", "locker_id", "n", "used", "lockout")

    def __init__(self, mac, locker_id, n, used, lockout):
        self.mac = mac
        self.locker_id = locker_id
        self.n = n
        self.used = used
        self.lockout = lockout

    def decide(self, raw, comp, t, now, ready=True):
        """Return (result, token id or 0, lockout ms started by this failure or 0) for a token
        presented at unix time t (None: no valid time), ticks now.

        ready=False (the lock cannot pulse now): a valid token is answered ACC_BUSY and
        stays unused, so the user can simply present it again.
        """
        if self.lockout.locked(now):
            return ACC_LOCKED_OUT, 0, 0
        tid = 0
        if raw is None:
            res = ACC_MALFORMED
        elif self.mac is None:
            res = ACC_BUSY
        elif t is None:
            res = ACC_NO_TIME
        else:
            try:
                tid, exp = token.verify(self.mac, raw, self.locker_id, comp, t)
            except TokenError as e:
                r = e.reason
                res = (ACC_EXPIRED if r == "expired" else ACC_NOT_YET_VALID if r == "not_yet_valid"
                       else ACC_WRONG_LOCKER if r == "wrong_locker"
                       else ACC_WRONG_COMPARTMENT if r == "wrong_compartment"
                       else ACC_FORGED if r == "forged" else ACC_MALFORMED)
                if res != ACC_FORGED and res != ACC_MALFORMED:
                    tid = token.parse(raw)[1][4]
            else:
                if not 1 <= comp <= self.n:
                    res = ACC_WRONG_COMPARTMENT
                elif tid in self.used:
                    res = ACC_REPLAYED
                elif not ready or not self.used.add(tid, exp, t):
                    res = ACC_BUSY
                else:
                    self.lockout.success()
                    return ACC_OK_TOKEN, tid, 0
        if res == ACC_BUSY or res == ACC_NO_TIME:  # the locker's state, not the user's fault
            return res, tid, 0
        return res, tid, self.lockout.fail(now)
