"""The locker's boot and rare paths: building the App from flash (audit ring, recent unlock
requests, booking key, compartments, used token ids), a config command, the self test.

locker.app imports this module when one of them runs and forgets it after (common.forget),
so a locker in service holds only its loop, access and audit code (docs/firmware.md#footprint).
Its names stay interned once loaded; its literals longer than 10 characters leave with its code,
so its file names are written as such ("%s/used.bin") rather than as short suffixes.
"""

from protocol.cose import Mac

from locker import audit, flash
from locker.access import Access, Lockout
from locker.compartment import Compartment, Debounced, LockActuator
from locker.usedids import RecentReqs, UsedIds
from protocol.codes import A_TAMPER, ACC_OK_COMMAND, ACC_OK_TOKEN, F_FLASH

from locker.app import KEY_PATH, STATE


def init(app):
    """App.__init__: the audit ring, the recent unlock requests and the booking key (the used token ids
    are build()'s)."""
    app.safe = False
    app.comps = []
    app._reader = None
    app._inflight = []
    app._lost_seen = 0
    app._occ_sent = 0
    app._tele_at = None
    app._lockout_told = False
    app.refused_quietly = 0
    app.audit = audit.AuditLog("%s/audit.bin" % STATE)
    app.reqs = RecentReqs("%s/reqs.bin" % STATE)
    try:
        with open(KEY_PATH, "rb") as f:
            key = f.read()
    except OSError:
        key = b""
    mac = None
    if len(key) == 32:
        mac = Mac(key)
    else:
        app.rt.log("locker: %s must hold a 32-byte booking key: tokens refused" % KEY_PATH, True)
    app.access = Access(mac, app.rt.id, 0, None, None)


def start(app, safe):
    app.safe = safe
    build(app, app.rt.cfg, app.rt.ticks_ms())
    if app.rt.hal.has("reader"):
        from locker.reader import ReaderParser
        app._reader = ReaderParser(app.rt.hal.uart("reader", 9600))


def build(app, cfg, now):
    """(Re)create compartments, the used token ids (first time or a new capacity) and the access
    policy from a config; resume each door from the audit's last word on it."""
    for c in app.comps:
        c.lock.off()
    hal = app.rt.hal
    cap = cfg["used_cap"]
    if app.access.used is None or cap != app.used.cap:
        app.used = UsedIds("%s/used.bin" % STATE, cap)
        if app.used.corrupt:  # replays of tokens used before are possible until they expire: say so
            app._emit(audit.FAULT, 0, F_FLASH, 1)
    app.lockout = Lockout(cfg["max_fail"], cfg["fail_win_s"] * 1000, cfg["lockout_s"] * 1000)
    app.access = Access(app.access.mac, app.rt.id, cfg["comps"], app.used, app.lockout)
    # (in safe mode no token is ever decided: App.step answers busy first)
    comps = []
    db = cfg["debounce_ms"]
    count = cfg["comps"]
    if app.safe:  # config may be the defaults after a bad one: watch what is wired, never fail
        count = 0
        while count < 32 and hal.has("lock" + str(count + 1)) and hal.has("door" + str(count + 1)):
            count += 1
    for n in range(1, count + 1):
        lock = LockActuator(hal.pin_out("lock" + str(n), 0), app.arm)
        door = Debounced(hal.pin_in("door" + str(n), "up"), db, cfg["door_inv"], now)
        occ = None
        if cfg["occupancy"] and (not app.safe or hal.has("occ" + str(n))):
            occ = Debounced(hal.pin_in("occ" + str(n), None), db, False, now)
        comps.append(Compartment(n, lock, door, occ, app._emit, cfg["window_s"] * 1000, cfg["open_max_s"] * 1000))
    app.comps = comps
    # Each door resumes from the audit's last word on its compartment: the `a` of its last door
    # record (bit 0 open, bit 1 authorized), or 4 if an unlock came after it. A door found open
    # that the board watched before (watched.bin) and that was not open before and had no
    # unlock was forced while the board was down: tamper. A door never watched (first boot, a
    # compartment added by config) that is open was open already: a door event, no alarm.
    last = {}  # type: dict  # comp -> (seq, word)

    def fn(r):
        k = r.kind
        if k == audit.DOOR:
            w = r.a & 3
        elif k == audit.ACCESS and (r.a == ACC_OK_TOKEN or r.a == ACC_OK_COMMAND):
            w = 4
        else:
            return
        if r.seq > last.get(r.comp, (-1,))[0]:
            last[r.comp] = (r.seq, w)

    app.audit.scan(fn)
    path = "%s/watched.bin" % STATE
    try:
        raw = flash.load(path)
    except flash.CorruptError:
        raw = None  # unknown: no alarm for a door found open, which errs on the quiet side once
    watched = raw[0] if raw else 0
    for c in comps:
        w = last.get(c.n, (0, 0))[1]
        if c.door.state:
            c._since = now
            if c.n > watched:  # never watched: open already
                c.emit(audit.DOOR, c.n, 1, 0)
            elif w & 1:  # open before the reset: that opening goes on
                c._auth = bool(w & 2)
            else:  # opened while the board was down: after an unlock, or forced
                c._auth = w == 4
                c.emit(audit.DOOR, c.n, 3 if w == 4 else 1, 0)
                if w != 4:
                    c.emit(audit.ALARM, c.n, A_TAMPER, 0)
        elif w & 1:
            c.emit(audit.DOOR, c.n, w & 2, 0)
    if len(comps) != watched:
        flash.ensure_dir(path)
        flash.save(path, bytes((len(comps),)))


def on_config(app, values):
    now = app.rt.ticks_ms()
    rebuild = False
    for k in ("comps", "occupancy", "door_inv", "debounce_ms", "used_cap"):
        if values.get(k) != app.rt.cfg.get(k):
            rebuild = True
    if rebuild:
        build(app, values, now)
    else:
        app.lockout.max_fail = values["max_fail"]
        app.lockout.window_ms = values["fail_win_s"] * 1000
        app.lockout.lock_ms = values["lockout_s"] * 1000
        for c in app.comps:
            c.window_ms = values["window_s"] * 1000
            c.limit_ms = values["open_max_s"] * 1000


def selftest(app):
    r = app._reader is not None
    out = [("booking_key", app.access.mac is not None, KEY_PATH),
           ("used_ids", not app.used.corrupt, "%d/%d" % (len(app.used), app.used.cap)),
           ("audit", app.audit.lost == 0 and app.audit.bad == 0,
            "pending %d lost %d bad %d" % (len(app.audit.pending()), app.audit.lost, app.audit.bad)),
           ("reader", r, ("uart, %d refused unrecorded while locked out" if r
                          else "none, %d refused unrecorded while locked out") % app.refused_quietly)]
    for c in app.comps:
        out.append(("lock" + str(c.n), not c.lock.energised, "pulses %d" % c.lock.pulses))
        out.append(("door" + str(c.n), True, "open" if c.is_open else "closed"))
    return out
