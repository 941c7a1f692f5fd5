"""The locker role: compartments, token reader, gateway unlocks, audit delivery.

Flash layout under /state/locker/: audit.bin (ring of events, the locker's
outbox), used.bin (single-use token ids until expiry), reqs.bin (recent
gateway unlock request ids), watched.bin (how many compartments the board has
watched: a door beyond that found open at boot was open already, no tamper). The booking key is /booking.key (32 bytes, never
printed). Pins by logical name: lock<N> (solenoid driver), door<N> (switch,
pulled up; open = high unless door_inv), occ<N> (occupancy, when occupancy is
on), reader (UART of the token reader, optional).

Safe mode: no unlock at all (gateway or token); doors are still watched,
alarms raised and everything audited.
"""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from common.config import BOOL, INT
from common.errors import CommandError
from protocol.codes import (ACC_BUSY, ACC_LOCKED_OUT, ACC_OK_COMMAND, ACC_OK_TOKEN, A_LOCKOUT, CAP_DOOR, CAP_LOCK,
                            CAP_OCCUPANCY, CAP_TOKEN_READER, E_BAD_VALUE, E_BUSY, E_DENIED, E_NOT_SUPPORTED,
                            F_AUDIT_OVERFLOW, F_FLASH)

from common import forget
from common.ticks import ticks_diff
from locker import access, audit, reader, usedids  # access, reader, usedids: for App's annotations
from locker.compartment import MAX_ON_MS, MIN_ON_MS

KEY_PATH = "/booking.key"
STATE = "/state/locker"
TELEMETRY_GAP_MS = 2000
"""Occupancy changes are sent as telemetry at once, but not more often than this."""
_INFLIGHT = const(4)  # audit records handed to the link at once: the runtime's own event queue is small

SCHEMA = {
    "comps": (INT, 4, 1, 32),              # compartments on this locker
    "pulse_ms": (INT, 600, MIN_ON_MS, MAX_ON_MS),  # lock solenoid on-time (hard cap in compartment.py)
    "window_s": (INT, 10, 2, 120),         # after an unlock, the door may open for this long
    "open_max_s": (INT, 300, 10, 86400),   # door open longer raises door_open_too_long
    "debounce_ms": (INT, 50, 5, 2000),     # door/occupancy contact debounce
    "max_fail": (INT, 5, 1, 50),           # refused presentations that lock the reader out
    "fail_win_s": (INT, 60, 5, 3600),      # ... when they fall within this window
    "lockout_s": (INT, 120, 5, 3600),      # first lockout length (doubles up to 8x while attacked)
    "used_cap": (INT, 128, 8, 1024),       # token ids remembered (8 bytes each on flash)
    "occupancy": (BOOL, False, None, None),  # an occupancy sensor per compartment
    "door_inv": (BOOL, False, None, None),   # door switch reads low when open
}


def setup(fn, *a):
    """locker.setup's fn: boot, config and self-test code, forgotten again after each use."""
    try:
        from locker import setup as m

        return getattr(m, fn)(*a)
    finally:
        forget("locker.setup")


def _bits(comps, k):
    """Bitmap (bit n-1 for compartment n) of the doors open (k 0), the compartments locked (1) or occupied (2)."""
    b = 0
    for c in comps:
        if c.is_open if k == 0 else c.locked() if k == 1 else c.occ is not None and c.occ.state:
            b |= 1 << (c.n - 1)
    return b


class App:
    ROLE = "locker"
    CAPS = CAP_LOCK | CAP_DOOR | CAP_OCCUPANCY | CAP_TOKEN_READER
    FW = 10000
    SCHEMA = SCHEMA

    @staticmethod
    def caps(pins, rt, cfg):
        """What this locker has wired (the hello's caps)."""
        c = CAP_LOCK | CAP_DOOR
        if cfg["occupancy"]:
            c |= CAP_OCCUPANCY
        if "reader" in pins:
            c |= CAP_TOKEN_READER
        return c

    # set by locker.setup (annotations only: MicroPython compiles none of them)
    safe: bool
    comps: list
    audit: "audit.AuditLog"
    reqs: "usedids.RecentReqs"
    used: "usedids.UsedIds"
    lockout: "access.Lockout"
    access: "access.Access"
    _reader: "reader.ReaderParser | None"
    _inflight: list  # [audit seq, msg handed to rt.event, eid saved, answered]
    _lost_seen: int  # audit.lost when last reported
    _occ_sent: int  # the occupancy bitmap last sent
    _tele_at: "int | None"  # when that was
    _lockout_told: bool  # the current lockout's first refusal is recorded
    refused_quietly: int  # refusals not recorded while locked out

    def __init__(self, rt):
        """Flash state and the token decision (no pins yet: those are start()'s)."""
        self.rt = rt
        self._timer = None
        setup("init", self)

    # -- life cycle --

    def start(self, safe):
        setup("start", self, safe)

    def stop(self):
        """Before the App leaves the heap (an update's install): no lock coil stays energised."""
        for c in self.comps:
            c.lock.off()

    def arm(self, ms, off):
        """Hardware one-shot that de-energises the coil even if the main loop hangs (LockActuator.arm)."""
        t = self._timer
        if t is None:
            try:
                from machine import Timer

                t = self._timer = Timer(0)
            except (ImportError, ValueError, OSError):
                return
        t.init(mode=0, period=ms, callback=off)

    # -- the loop --

    def step(self, now):
        r = self._reader
        if r is not None:
            for comp, raw in r.poll():  # a token presented at the reader for compartment comp
                if self.safe:
                    res, tid, ms = ACC_BUSY, 0, 0
                else:
                    ok = 1 <= comp <= len(self.comps) and self._coil_free(now, comp)
                    try:
                        res, tid, ms = self.access.decide(raw, comp, self.rt.now(), now, ok)
                    except Exception as x:  # flash full or a bug: fail closed; reader input never stops the loop
                        self.rt.log("locker: token check failed: %r" % (x,), True)
                        res, tid, ms = ACC_BUSY, 0, 0
                if res == ACC_LOCKED_OUT:
                    if self._lockout_told:  # one record per lockout: a reader flood must not wear the flash
                        self.refused_quietly += 1
                        continue
                    self._lockout_told = True
                self._emit(audit.ACCESS, comp if 0 <= comp <= 32 else 0, res, tid)  # written ahead of the pulse
                if res == ACC_OK_TOKEN:
                    self.comps[comp - 1].unlock(self.rt.cfg["pulse_ms"], now)
                if ms:  # this refusal started a lockout of ms
                    self._emit(audit.ALARM, 0, A_LOCKOUT, ms // 1000)
                    self._lockout_told = False
        self.lockout.service(now)
        wait = 20
        for c in self.comps:
            w = c.step(now)
            if w < wait:
                wait = w
        if self.rt.cfg["occupancy"] and _bits(self.comps, 2) != self._occ_sent and (
                self._tele_at is None or ticks_diff(now, self._tele_at) >= TELEMETRY_GAP_MS):
            # a parcel placed or taken: reported without waiting for the heartbeat
            self.rt.send(self.telemetry())
            self._tele_at = now
        # audit delivery: pending records handed to the link a few at a time, those the gateway answered retired
        lost = self.audit.lost
        if lost != self._lost_seen:  # the ring wrapped onto undelivered records: say how many
            self._lost_seen = lost
            self.rt.log("locker: audit full, %d undelivered records overwritten" % lost, True)
            self.rt.event({"type": "fault", "code": F_AUDIT_OVERFLOW, "value": lost}, True)
        fl = self._inflight
        i = 0
        while i < len(fl):
            e = fl[i]
            if not e[2] and e[1].get("eid") is not None:
                self.audit.set_eid(e[0], e[1]["eid"])
                e[2] = True
            if e[3]:
                self.audit.ack(e[0])
                fl.pop(i)
            else:
                i += 1
        for seq in self.audit.pending():
            if len(fl) >= _INFLIGHT:
                break
            for e in fl:
                if e[0] == seq:
                    break
            else:
                r = self.audit.read(seq)
                if r is None:
                    self.audit.ack(seq)
                    continue
                m = r.msg()
                fl.append([seq, m, "eid" in m, False])
                self.rt.event(m, False, self._answered)
        return wait

    # -- access --

    def _coil_free(self, now, comp):
        """One solenoid at a time (the supply is sized for one), and that one rested."""
        for c in self.comps:
            if c.lock.energised:
                return False
        return self.comps[comp - 1].lock.ready(now)

    def on_command(self, msg):
        if msg["type"] != "unlock":
            raise CommandError(E_NOT_SUPPORTED, "type")
        comp = msg["comp"]
        req = msg["req"]
        if comp > len(self.comps):
            raise CommandError(E_BAD_VALUE, "comp")
        if req in self.reqs:
            return None  # a retransmission of an unlock already done: ack, never open twice
        if self.safe:
            raise CommandError(E_DENIED, "comp", "safe mode: stays locked")
        now = self.rt.ticks_ms()
        if not self._coil_free(now, comp):
            raise CommandError(E_BUSY, "comp")
        self.reqs.add(req)
        self._emit(audit.ACCESS, comp, ACC_OK_COMMAND, req)
        self.comps[comp - 1].unlock(self.rt.cfg["pulse_ms"], now)
        return None

    # -- audit and delivery --

    def _emit(self, kind, comp, a, v):
        try:
            self.audit.append(self.rt.now(), kind, comp, a, v)
        except OSError as e:
            self.rt.log("locker: audit write failed: %r" % (e,))
            self.rt.event({"type": "fault", "code": F_FLASH, "value": kind})

    def _answered(self, msg, nack):
        """The gateway acked (or nacked: it will never take it) an audit event."""
        if nack is not None:
            self.rt.log("locker: gateway refused %s: %r" % (msg["type"], nack))
        for e in self._inflight:
            if e[1] is msg:
                e[3] = True

    # -- config, telemetry, selftest --

    def on_config(self, values):
        setup("on_config", self, values)

    def telemetry(self):
        cs = self.comps
        self._occ_sent = _bits(cs, 2)
        return {"type": "locker", "open": _bits(cs, 0), "locked": _bits(cs, 1),
                "occupied": self._occ_sent, "pending": min(len(self.audit.pending()), 0xFFFF)}

    def selftest(self):
        return setup("selftest", self)

