"""The token decision: from raw reader bytes to an ACCESS result code.

Order matters: a locked-out input is refused before any crypto runs; then the
token's tag (protocol.token.verify checks it first), its fields and the clock;
then single use. The id is written to flash before the caller opens the lock.
Failures count towards the lockout; only authentic tokens report their id.
"""

from protocol import token
from protocol.errors import TokenError

OK_TOKEN = 0
OK_COMMAND = 1
EXPIRED = 2
REPLAYED = 3
FORGED = 4
WRONG_COMPARTMENT = 5
WRONG_LOCKER = 6
LOCKED_OUT = 7
NOT_YET_VALID = 8
MALFORMED = 9
BUSY = 10
NO_TIME = 11

_REASONS = {"expired": EXPIRED, "forged": FORGED, "wrong_compartment": WRONG_COMPARTMENT,
            "wrong_locker": WRONG_LOCKER, "not_yet_valid": NOT_YET_VALID, "malformed": MALFORMED}


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

        ready=False (the lock cannot pulse now): a valid token is answered BUSY and
        stays unused, so the user can simply present it again.
        """
        if self.lockout.locked(now_ms):
            return LOCKED_OUT, 0, 0
        res, tid = self._check(raw, comp, now_s, ready)
        if res == OK_TOKEN:
            self.lockout.success()
            return res, tid, 0
        if res == BUSY or res == NO_TIME:  # the locker's state, not the user's fault
            return res, tid, 0
        return res, tid, self.lockout.fail(now_ms)

    def _check(self, raw, comp, now_s, ready):
        if raw is None:
            return MALFORMED, 0
        if self.mac is None:
            return BUSY, 0
        if now_s is None:
            return NO_TIME, 0
        try:
            tid, exp = token.verify(self.mac, raw, self.locker_id, comp, now_s)
        except TokenError as e:
            r = _REASONS.get(e.reason, MALFORMED)
            if r == FORGED or r == MALFORMED:
                return r, 0
            return r, token.parse(raw)[1][4]
        if not 1 <= comp <= self.ncomp:
            return WRONG_COMPARTMENT, tid
        if tid in self.used:
            return REPLAYED, tid
        if not ready:
            return BUSY, tid
        if not self.used.add(tid, exp, now_s):
            return BUSY, tid
        return OK_TOKEN, tid
