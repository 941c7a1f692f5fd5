"""The locker's boot and rare paths: building the App from flash (audit scan, compartments,
used token ids, booking key), a config command, the self test.

locker.app imports this module when one of them runs and forgets it after (common.forget),
so a locker in service holds only its loop, access and audit code (docs/firmware.md#footprint).
"""

from protocol.cose import Mac

from locker import access, audit, compartment, flash
from locker.actuator import LockActuator
from protocol.codes import ACC_OK_COMMAND, ACC_OK_TOKEN, F_FLASH

from locker.app import _REBUILD, KEY_PATH, STATE
from locker.debounce import Debounced
from locker.lockout import Lockout
from locker.usedids import UsedIds


def init(app):
    """The used token ids and the token decision (the booking key read from flash)."""
    app.used = _open_used(app, app.rt.cfg["used_cap"])
    app.access = access.Access(_mac(app), app.rt.id, 0, app.used, app.lockout)


def start(app, safe):
    app.safe = safe
    build(app, app.rt.cfg, app.rt.ticks_ms())
    if app.rt.hal.has("reader"):
        app._reader = app.rt.hal.uart("reader", 9600)


def _last_words(app):
    """comp -> what the audit last recorded for its door or lock (see Compartment.boot)."""
    top = {}  # type: dict
    last = {}  # type: dict

    def see(r):
        k = r.kind
        if k == audit.DOOR:
            w = compartment.LAST_NONE
            if r.a & 1:
                w = compartment.LAST_OPEN_AUTH if r.a & 2 else compartment.LAST_OPEN
        elif k == audit.ACCESS and (r.a == ACC_OK_TOKEN or r.a == ACC_OK_COMMAND):
            w = compartment.LAST_UNLOCK
        else:
            return
        if r.seq > top.get(r.comp, -1):
            top[r.comp] = r.seq
            last[r.comp] = w

    app.audit.scan(see)
    return last


def build(app, cfg, now):
    """(Re)create compartments and the access policy from a config."""
    for c in app.comps:
        c.lock.off()
    hal = app.rt.hal
    if cfg["used_cap"] != app.used.cap:
        app.used = _open_used(app, cfg["used_cap"])
    app.lockout = Lockout(cfg["max_fail"], cfg["fail_win_s"] * 1000, cfg["lockout_s"] * 1000)
    app.access = access.Access(app.access.mac, app.rt.id, cfg["comps"], app.used, app.lockout)
    # (in safe mode no token is ever decided: present() answers busy first)
    comps = []
    db = cfg["debounce_ms"]
    count = cfg["comps"]
    if app.safe:  # config may be the defaults after a bad one: watch what is wired, never fail
        count = 0
        while count < 32 and hal.has("lock%d" % (count + 1)) and hal.has("door%d" % (count + 1)):
            count += 1
    for n in range(1, count + 1):
        lock = LockActuator(hal.pin_out("lock%d" % n, 0), app._arm)
        door = Debounced(hal.pin_in("door%d" % n, "up"), db, cfg["door_inv"], now)
        occ = None
        if cfg["occupancy"] and (not app.safe or hal.has("occ%d" % n)):
            occ = Debounced(hal.pin_in("occ%d" % n, None), db, False, now)
        comps.append(compartment.Compartment(n, lock, door, occ, app._emit, cfg["window_s"] * 1000,
                                             cfg["open_max_s"] * 1000))
    app.comps = comps
    last = _last_words(app)
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


def _open_used(app, cap):
    u = UsedIds(STATE + "/used.bin", cap)
    if u.corrupt:  # replays of tokens used before are possible until they expire: say so
        app._emit(audit.FAULT, 0, F_FLASH, 1)
    return u


def _mac(app):
    try:
        with open(KEY_PATH, "rb") as f:
            key = f.read()
    except OSError:
        key = b""
    if len(key) != 32:
        app.rt.log("locker: %s must hold a 32-byte booking key: tokens refused" % KEY_PATH, True)
        return None
    return Mac(key)


def on_config(app, values):
    now = app.rt.ticks_ms()
    rebuild = False
    for k in _REBUILD:
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
    out = [("booking_key", app.access.mac is not None, KEY_PATH),
           ("used_ids", not app.used.corrupt, "%d/%d" % (len(app.used), app.used.cap)),
           ("audit", app.audit.lost == 0 and app.audit.bad == 0,
            "pending %d lost %d bad %d" % (len(app.audit.pending()), app.audit.lost, app.audit.bad)),
           ("reader", app._reader is not None, "%s, %d refused unrecorded while locked out" % (
               "uart" if app._reader is not None else "none", app.refused_quietly))]
    for c in app.comps:
        out.append(("lock%d" % c.n, not c.lock.energised, "pulses %d" % c.lock.pulses))
        out.append(("door%d" % c.n, True, "open" if c.is_open else "closed"))
    return out


