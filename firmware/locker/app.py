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

from common.config import BOOL, INT
from common.errors import CommandError
from protocol import codes
from protocol.cose import Mac

from locker import access, audit, compartment, flash, reader
from locker.actuator import MAX_ON_MS, MIN_ON_MS, LockActuator
from locker.debounce import Debounced
from locker.lockout import Lockout
from locker.recent import RecentReqs
from common.ticks import ticks_diff
from locker.usedids import UsedIds

FW = 10000
KEY_PATH = "/booking.key"
STATE = "/state/locker"
TELEMETRY_GAP_MS = 2000
"""Occupancy changes are sent as telemetry at once, but not more often than this."""
INFLIGHT = 4
"""Audit records handed to the link at once: the runtime's own event queue is small."""

SCHEMA = {
    "comps": (INT, 4, 1, 32),              # compartments on this locker
    "pulse_ms": (INT, 600, MIN_ON_MS, MAX_ON_MS),  # lock solenoid on-time (hard cap in actuator.py)
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
_REBUILD = ("comps", "occupancy", "door_inv", "debounce_ms", "used_cap")


def _bits(comps, attr):
    b = 0
    for c in comps:
        if attr(c):
            b |= 1 << (c.n - 1)
    return b


class App:
    ROLE = "locker"
    CAPS = codes.CAP_LOCK | codes.CAP_DOOR | codes.CAP_OCCUPANCY | codes.CAP_TOKEN_READER
    FW = FW
    SCHEMA = SCHEMA

    @staticmethod
    def caps(pins, rtc, cfg):
        """What this locker has wired (the hello's caps)."""
        c = codes.CAP_LOCK | codes.CAP_DOOR
        if cfg["occupancy"]:
            c |= codes.CAP_OCCUPANCY
        if "reader" in pins:
            c |= codes.CAP_TOKEN_READER
        return c

    def __init__(self, rt):
        """Flash state and the token decision (no pins yet: those are start()'s)."""
        self.rt = rt
        self.safe = False
        self.comps = []  # type: list
        self.audit = audit.AuditLog(STATE + "/audit.bin")
        self.reqs = RecentReqs(STATE + "/reqs.bin")
        self.lockout = Lockout(1, 0, 0)
        self.used = self._open_used(rt.cfg["used_cap"])
        self.access = access.Access(self._mac(), rt.id, 0, self.used, self.lockout)
        self._reader = None
        self._parser = reader.ReaderParser()
        self._inflight = []  # type: list  # [audit seq, msg handed to rt.event, eid saved, answered]
        self._lost_seen = 0
        self._timer = None
        self._occ_sent = 0
        self._tele_at = None
        self._lockout_told = False
        self.refused_quietly = 0

    # -- life cycle --

    def start(self, safe):
        self.safe = safe
        self._build(self.rt.cfg, self.rt.ticks_ms())
        if self.rt.hal.has("reader"):
            self._reader = self.rt.hal.uart("reader", 9600)

    def _last_words(self):
        """comp -> what the audit last recorded for its door or lock (see Compartment.boot)."""
        top = {}  # type: dict
        last = {}  # type: dict

        def see(r):
            k = r.kind
            if k == audit.DOOR:
                w = compartment.LAST_NONE
                if r.a & 1:
                    w = compartment.LAST_OPEN_AUTH if r.a & 2 else compartment.LAST_OPEN
            elif k == audit.ACCESS and (r.a == codes.ACC_OK_TOKEN or r.a == codes.ACC_OK_COMMAND):
                w = compartment.LAST_UNLOCK
            else:
                return
            if r.seq > top.get(r.comp, -1):
                top[r.comp] = r.seq
                last[r.comp] = w

        self.audit.scan(see)
        return last

    def _build(self, cfg, now):
        """(Re)create compartments and the access policy from a config."""
        for c in self.comps:
            c.lock.off()
        hal = self.rt.hal
        if cfg["used_cap"] != self.used.cap:
            self.used = self._open_used(cfg["used_cap"])
        self.lockout = Lockout(cfg["max_fail"], cfg["fail_win_s"] * 1000, cfg["lockout_s"] * 1000)
        self.access = access.Access(self.access.mac, self.rt.id, cfg["comps"], self.used, self.lockout)
        # (in safe mode no token is ever decided: present() answers busy first)
        comps = []
        db = cfg["debounce_ms"]
        count = cfg["comps"]
        if self.safe:  # config may be the defaults after a bad one: watch what is wired, never fail
            count = 0
            while count < 32 and hal.has("lock%d" % (count + 1)) and hal.has("door%d" % (count + 1)):
                count += 1
        for n in range(1, count + 1):
            lock = LockActuator(hal.pin_out("lock%d" % n, 0), self._arm)
            door = Debounced(hal.pin_in("door%d" % n, "up"), db, cfg["door_inv"], now)
            occ = None
            if cfg["occupancy"] and (not self.safe or hal.has("occ%d" % n)):
                occ = Debounced(hal.pin_in("occ%d" % n, None), db, False, now)
            comps.append(compartment.Compartment(n, lock, door, occ, self._emit, cfg["window_s"] * 1000,
                                                 cfg["open_max_s"] * 1000))
        self.comps = comps
        last = self._last_words()
        path = STATE + "/watched.bin"
        try:
            raw = flash.load(path)
        except flash.CorruptError:
            raw = None  # unknown: no alarm for a door found open, which errs on the quiet side once
        watched = raw[0] if raw else 0
        for c in comps:
            c.boot(now, last.get(c.n, compartment.LAST_NONE), c.n <= watched)
        if len(comps) != watched:
            flash.ensure_dir(path)
            flash.save(path, bytes((len(comps),)))

    def _open_used(self, cap):
        u = UsedIds(STATE + "/used.bin", cap)
        if u.corrupt:  # replays of tokens used before are possible until they expire: say so
            self._emit(audit.FAULT, 0, codes.F_FLASH, 1)
        return u

    def _mac(self):
        try:
            with open(KEY_PATH, "rb") as f:
                key = f.read()
        except OSError:
            key = b""
        if len(key) != 32:
            self.rt.log("locker: %s must hold a 32-byte booking key: tokens refused" % KEY_PATH, True)
            return None
        return Mac(key)

    def _arm(self, ms, off):
        """Hardware one-shot that de-energises the coil even if the main loop hangs."""
        t = self._timer
        if t is None:
            try:
                from machine import Timer

                t = self._timer = Timer(0)
            except (ImportError, ValueError, OSError):
                return
        t.init(mode=0, period=ms, callback=off)

    # -- the loop --

    def step(self, now_ms):
        if self._reader is not None:
            n = self._reader.any()
            if n:
                for comp, raw in self._parser.feed(self._reader.read(n) or b""):
                    self.present(comp, raw, now_ms)
        self.lockout.service(now_ms)
        wait = 20
        for c in self.comps:
            w = c.step(now_ms)
            if w < wait:
                wait = w
        self._pump()
        if self.rt.cfg["occupancy"]:
            self._occupancy(now_ms)
        return wait

    def _occupancy(self, now_ms):
        """Report a changed occupancy (a parcel placed or taken) without waiting for the heartbeat."""
        if _bits(self.comps, _is_occ) == self._occ_sent:
            return
        if self._tele_at is None or ticks_diff(now_ms, self._tele_at) >= TELEMETRY_GAP_MS:
            self.rt.send(self.telemetry())
            self._tele_at = now_ms

    # -- access --

    def _coil_free(self, now_ms, comp):
        """One solenoid at a time (the supply is sized for one), and that one rested."""
        for c in self.comps:
            if c.lock.energised:
                return False
        return self.comps[comp - 1].lock.ready(now_ms)

    def present(self, comp, raw, now_ms):
        """A token presented at the reader for compartment `comp`; returns the ACCESS result."""
        if self.safe:
            res, tid, lock_ms = codes.ACC_BUSY, 0, 0
        else:
            ready = 1 <= comp <= len(self.comps) and self._coil_free(now_ms, comp)
            try:
                res, tid, lock_ms = self.access.decide(raw, comp, self.rt.now(), now_ms, ready)
            except Exception as e:  # flash full or a bug: fail closed; reader input never stops the loop
                self.rt.log("locker: token check failed: %r" % (e,), True)
                res, tid, lock_ms = codes.ACC_BUSY, 0, 0
        if res == codes.ACC_LOCKED_OUT:
            if self._lockout_told:  # one record per lockout: a reader flood must not wear the flash
                self.refused_quietly += 1
                return res
            self._lockout_told = True
        self._emit(audit.ACCESS, comp if 0 <= comp <= 32 else 0, res, tid)  # written ahead of the pulse
        if res == codes.ACC_OK_TOKEN:
            self.comps[comp - 1].unlock(self.rt.cfg["pulse_ms"], now_ms)
        if lock_ms:
            self._emit(audit.ALARM, 0, codes.A_LOCKOUT, lock_ms // 1000)
            self._lockout_told = False
        return res

    def on_command(self, msg):
        if msg["type"] != "unlock":
            raise CommandError(codes.E_NOT_SUPPORTED, "type")
        comp = msg["comp"]
        req = msg["req"]
        if comp > len(self.comps):
            raise CommandError(codes.E_BAD_VALUE, "comp")
        if req in self.reqs:
            return None  # a retransmission of an unlock already done: ack, never open twice
        if self.safe:
            raise CommandError(codes.E_DENIED, "comp", "safe mode: stays locked")
        now = self.rt.ticks_ms()
        if not self._coil_free(now, comp):
            raise CommandError(codes.E_BUSY, "comp")
        self.reqs.add(req)
        self._emit(audit.ACCESS, comp, codes.ACC_OK_COMMAND, req)
        self.comps[comp - 1].unlock(self.rt.cfg["pulse_ms"], now)
        return None

    # -- audit and delivery --

    def _emit(self, kind, comp, a, v):
        try:
            self.audit.append(self.rt.now(), kind, comp, a, v)
        except OSError as e:
            self.rt.log("locker: audit write failed: %r" % (e,))
            self.rt.event({"type": "fault", "code": codes.F_FLASH, "value": kind})

    def _pump(self):
        """Hand pending audit records to the link, a few at a time; retire those the gateway answered."""
        lost = self.audit.lost
        if lost != self._lost_seen:  # the ring wrapped onto undelivered records: say how many
            self._lost_seen = lost
            self.rt.log("locker: audit full, %d undelivered records overwritten" % lost, True)
            self.rt.event({"type": "fault", "code": codes.F_AUDIT_OVERFLOW, "value": lost}, True)
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
        if len(fl) >= INFLIGHT:
            return
        for seq in self.audit.pending():
            if len(fl) >= INFLIGHT:
                break
            if self._inflight_has(seq):
                continue
            r = self.audit.read(seq)
            if r is None:
                self.audit.ack(seq)
                continue
            msg = r.msg()
            fl.append([seq, msg, "eid" in msg, False])
            self.rt.event(msg, False, self._answered)

    def _inflight_has(self, seq):
        for e in self._inflight:
            if e[0] == seq:
                return True
        return False

    def _answered(self, msg, nack):
        """The gateway acked (or nacked: it will never take it) an audit event."""
        if nack is not None:
            self.rt.log("locker: gateway refused %s: %r" % (msg["type"], nack))
        for e in self._inflight:
            if e[1] is msg:
                e[3] = True

    # -- config, telemetry, selftest --

    def on_config(self, values):
        now = self.rt.ticks_ms()
        rebuild = False
        for k in _REBUILD:
            if values.get(k) != self.rt.cfg.get(k):
                rebuild = True
        if rebuild:
            self._build(values, now)
        else:
            self.lockout.max_fail = values["max_fail"]
            self.lockout.window_ms = values["fail_win_s"] * 1000
            self.lockout.lock_ms = values["lockout_s"] * 1000
            for c in self.comps:
                c.window_ms = values["window_s"] * 1000
                c.limit_ms = values["open_max_s"] * 1000

    def telemetry(self):
        cs = self.comps
        self._occ_sent = _bits(cs, _is_occ)
        return {"type": "locker", "open": _bits(cs, _is_open), "locked": _bits(cs, _is_locked),
                "occupied": self._occ_sent, "pending": min(len(self.audit.pending()), 0xFFFF)}

    def selftest(self):
        out = [("booking_key", self.access.mac is not None, KEY_PATH),
               ("used_ids", not self.used.corrupt, "%d/%d" % (len(self.used), self.used.cap)),
               ("audit", self.audit.lost == 0 and self.audit.bad == 0,
                "pending %d lost %d bad %d" % (len(self.audit.pending()), self.audit.lost, self.audit.bad)),
               ("reader", self._reader is not None, "%s, %d refused unrecorded while locked out" % (
                   "uart" if self._reader is not None else "none", self.refused_quietly))]
        for c in self.comps:
            out.append(("lock%d" % c.n, not c.lock.energised, "pulses %d" % c.lock.pulses))
            out.append(("door%d" % c.n, True, "open" if c.is_open else "closed"))
        return out


def _is_open(c):
    return c.is_open


def _is_locked(c):
    return c.locked()


def _is_occ(c):
    return c.occupied
