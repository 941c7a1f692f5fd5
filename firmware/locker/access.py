"""The token decision: from raw reader bytes to an ACCESS result code.

Order matters: a locked-out input is refused before any crypto runs; then the
token's tag (protocol.token.verify checks it first), its fields and the clock;
then single use. The id is written to flash before the caller opens the lock.
Failures count towards the lockout; only authentic tokens report their id.
"""

from protocol import token
from protocol.codes import (ACC_BUSY, ACC_EXPIRED, ACC_FORGED, ACC_LOCKED_OUT, ACC_MALFORMED, ACC_NO_TIME,
                            ACC_NOT_YET_VALID, ACC_OK_TOKEN, ACC_REPLAYED, ACC_WRONG_COMPARTMENT,
                            ACC_WRONG_LOCKER)
from protocol.errors import TokenError

_REASONS = {"expired": ACC_EXPIRED, "forged": ACC_FORGED, "wrong_compartment": ACC_WRONG_COMPARTMENT,
            "wrong_locker": ACC_WRONG_LOCKER, "not_yet_valid": ACC_NOT_YET_VALID, "malformed": ACC_MALFORMED}


class Access:
    """Decides token presentations for one locker; mac is None when no booking key is provisioned."""

    __slots__ = ("mac", "locker_id", "ncomp", "used", "lockout")

    def __init__(self, mac, locker_id, ncomp, used, lockout):
        self.mac = mac
        self.locker_id = locker_id
        self.ncomp = ncomp
        self.used = used
        self.lockout = lockout

    def decide(self, raw, comp, now_s, now_ms, ready=True):
        """Return (result, token id or 0, lockout ms started by this failure or 0).

        ready=False (the lock cannot pulse now): a valid token is answered ACC_BUSY and
        stays unused, so the user can simply present it again.
        """
        if self.lockout.locked(now_ms):
            return ACC_LOCKED_OUT, 0, 0
        res, tid = self._check(raw, comp, now_s, ready)
        if res == ACC_OK_TOKEN:
            self.lockout.success()
            return res, tid, 0
        if res == ACC_BUSY or res == ACC_NO_TIME:  # the locker's state, not the user's fault
            return res, tid, 0
        return res, tid, self.lockout.fail(now_ms)

    def _check(self, raw, comp, now_s, ready):
        if raw is None:
            return ACC_MALFORMED, 0
        if self.mac is None:
            return ACC_BUSY, 0
        if now_s is None:
            return ACC_NO_TIME, 0
        try:
            tid, exp = token.verify(self.mac, raw, self.locker_id, comp, now_s)
        except TokenError as e:
            r = _REASONS.get(e.reason, ACC_MALFORMED)
            if r == ACC_FORGED or r == ACC_MALFORMED:
                return r, 0
            return r, token.parse(raw)[1][4]
        if not 1 <= comp <= self.ncomp:
            return ACC_WRONG_COMPARTMENT, tid
        if tid in self.used:
            return ACC_REPLAYED, tid
        if not ready:
            return ACC_BUSY, tid
        if not self.used.add(tid, exp, now_s):
            return ACC_BUSY, tid
        return ACC_OK_TOKEN, tid
