"""One compartment: its lock, door switch and optional occupancy sensor.

Door rules: an opening within `window_ms` after an unlock pulse is authorized;
any other opening is a tamper alarm. A door open longer than `limit_ms` raises
door_open_too_long once per opening (value = seconds open). Every door change
is reported as a door event. Events go to `emit(kind, comp, a, v)`.
"""

from protocol.codes import A_DOOR_OPEN_TOO_LONG, A_TAMPER

from locker import audit
from common.ticks import ticks_diff

LAST_NONE = 0
LAST_UNLOCK = 1
LAST_OPEN = 2
LAST_OPEN_AUTH = 3


class Compartment:
    __slots__ = ("n", "lock", "door", "occ", "emit", "window_ms", "limit_ms",
                 "_unlocked_at", "_opened_at", "_auth", "_long")

    def __init__(self, n, lock, door, occ, emit, window_ms, limit_ms):
        self.n = n
        self.lock = lock
        self.door = door
        self.occ = occ
        self.emit = emit
        self.window_ms = window_ms
        self.limit_ms = limit_ms
        self._unlocked_at = None
        self._opened_at = None
        self._auth = False
        self._long = False

    @property
    def is_open(self):
        return self.door.state

    @property
    def occupied(self):
        return self.occ is not None and self.occ.state

    def locked(self):
        return not self.door.state and not self.lock.energised and self._unlocked_at is None

    def unlock(self, pulse_ms, now_ms):
        """Pulse the lock and open the authorization window; False if the coil is busy."""
        if not self.lock.pulse(pulse_ms, now_ms):
            return False
        self._unlocked_at = now_ms
        return True

    def boot(self, now_ms, last, watched=True):
        """Resume after a reset from the audit's last word on this compartment.

        last: LAST_NONE (closed / nothing), LAST_UNLOCK (an unlock was the last thing),
        LAST_OPEN or LAST_OPEN_AUTH (door was open). watched: the board watched this
        door before. A watched door found open that was not open before and had no
        unlock was forced while the board was down: tamper. A door never watched
        (first boot, a compartment added by config) that is open was open already:
        reported as a door event, no alarm.
        """
        if self.door.state:
            if not watched:
                self._opened_at = now_ms
                self._auth = False
                self._long = False
                self.emit(audit.DOOR, self.n, 1, 0)
            elif last == LAST_OPEN or last == LAST_OPEN_AUTH:
                self._opened_at = now_ms
                self._auth = last == LAST_OPEN_AUTH
                self._long = False
            else:
                self._opened(now_ms, last == LAST_UNLOCK)
        elif last == LAST_OPEN or last == LAST_OPEN_AUTH:
            self.emit(audit.DOOR, self.n, 2 if last == LAST_OPEN_AUTH else 0, 0)

    def _opened(self, now_ms, auth):
        self._opened_at = now_ms
        self._auth = auth
        self._long = False
        self.emit(audit.DOOR, self.n, 1 | (2 if auth else 0), 0)
        if not auth:
            self.emit(audit.ALARM, self.n, A_TAMPER, 0)

    def step(self, now_ms):
        """Poll inputs and timers; return ms until this compartment needs the next step."""
        wait = self.lock.service(now_ms)
        u = self._unlocked_at
        if u is not None and ticks_diff(now_ms, u) > self.window_ms:
            self._unlocked_at = u = None
        if self.occ is not None:
            self.occ.poll(now_ms)
        if self.door.poll(now_ms):
            if self.door.state:
                self._opened(now_ms, u is not None)
                self._unlocked_at = None
            else:
                self._opened_at = None
                self.emit(audit.DOOR, self.n, 2 if self._auth else 0, 0)
        o = self._opened_at
        if o is not None and not self._long:
            el = ticks_diff(now_ms, o)
            if el >= self.limit_ms:
                self._long = True
                self.emit(audit.ALARM, self.n, A_DOOR_OPEN_TOO_LONG, el // 1000)
            elif self.limit_ms - el < wait:
                wait = self.limit_ms - el
        return wait
