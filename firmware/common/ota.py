"""Software updates, the device side (protocol/SPEC.md section 10): what common.runtime calls.

Imported only when an update message arrives or when the board boots after an update
(common.runtime), so a board in service pays no heap for it; and split by phase, so an update
pays only for the phase under way: ota_state holds the update on flash (the staging record,
the boot pointer), ota_rx receives (offer, chunks, the image's digest), ota_inst commits
(checks the header and every file, installs into the other slot, switches), ota_trial
confirms or rolls back once the new version joined. Each phase leaves the heap when it ends
(common.forget), this module and ota_state once nothing is under way (idle). The image never
sits in RAM: chunks are appended to /ota/stage.bin (its size on flash is the offset, so a
transfer resumes after a disconnect, a deep sleep or a reboot), and the header and the files
are read back in BLOCK-byte pieces. An app image (kind 0) is written into the slot the board
does not run (/s1 or /s2; the factory files in /lib are never touched) and switched to through
the pointer otaboot keeps; a MicroPython image (kind 1) goes block by block into the next OTA
partition. See docs/firmware.md, Updates.
"""

import sys

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from common import forget

# SPEC 5.2 and 10 numbers as private constants: compiled into the code, no table on the heap
# (tests/firmware/test_ota_codes.py holds them equal to protocol.codes)
_E_UNKNOWN_TYPE = const(2)
_E_BUSY = const(6)
_E_NOT_READY = const(7)
_UK_APP = const(0)
_US_REFUSED = const(6)
_UR_BUSY = const(10)

STAGE = "/ota/stage.json"
"""The staging record of the update being received or staged (common.ota_state)."""
TRIAL_MS = 600000
"""A trial that has not joined and passed its self-check after this long reboots (one
trial boot spent); otaboot switches back after TRIAL_BOOTS of them."""


def boot_module():
    """otaboot: main.py's when this board booted through it (already on the heap), else the
    package's (common.runtime drops it with this module)."""
    if "otaboot" in sys.modules:
        return sys.modules["otaboot"]
    from common import otaboot
    return otaboot


def boot_pointer():
    """otaboot's pointer; the package's otaboot, when it had to be loaded for it, leaves the heap at once."""
    loaded = "otaboot" in sys.modules or "common.otaboot" in sys.modules
    p = boot_module().read()
    if not loaded:
        forget("common.otaboot")
    return p


# ---- the runtime's side (common.runtime calls these) ----

_upd = None


def _updater(rt):
    global _upd
    if _upd is None:
        from protocol.messages import ROLE_IDS

        from common.ota_state import Updater
        _upd = Updater(ROLE_IDS.get(rt.dev.role, 0))
    return _upd


def msg(r):
    return {"type": "update", "uid": r[0], "state": r[1], "off": r[2], "reason": r[3]}


def _after(rt, r):
    """Send `update` right after the ack/nack of the message being handled (SPEC 10)."""
    if r is not None:
        rt.session.after_reply = msg(r)
        rt.log("update %d: state %d off %d reason %d" % r)


def command(rt, m):
    """One update_* downlink; returns None (ack) or (code, field) (nack)."""
    u = _updater(rt)
    t = m["type"]
    if u.installing:  # the files are being written: nothing may change the staged image now
        if t == "update_offer":
            _after(rt, (m["uid"], _US_REFUSED, 0, _UR_BUSY))
            return None
        return (_E_BUSY, "uid")
    if t == "update_commit":
        nack = commit(u, m)
        if nack is None:
            u.installing = True
            rt.job = installing(rt, u)
        return nack
    if t == "update_chunk":
        from common import ota_rx
        nack, r = ota_rx.chunk(u, m)
    elif t == "update_offer" or t == "update_abort":
        from common import ota_offer
        try:
            if t == "update_offer":
                nack, r = None, ota_offer.offer(u, m, rt.fw)
            else:
                nack, r = ota_offer.abort(u, m)
        finally:
            forget("common.ota_offer")
    else:
        nack, r = (_E_UNKNOWN_TYPE, ""), None
    if not u.st or u.st.get("ok"):
        forget("common.ota_rx", "common.ota_part")  # nothing being received: that code leaves the heap
    _after(rt, r)
    return nack


def commit(u, m):
    """A commit for the staged image: None (ack; the caller starts installing) or a nack."""
    st = u.st
    if not st or st["uid"] != m["uid"] or not st.get("ok") or u.trial:
        return (_E_NOT_READY, "uid")
    return None


def installing(rt, u):
    """The commit's work (common.ota_inst.run), the runtime's job: a generator the loop advances a
    file at a time. An app image is checked and installed with the App set aside, before
    common.ota_inst is even imported: on a chip an allocation fails where it happens, and the App
    and that code together do not fit a locker over Wi-Fi. Anything but a flash error there
    (reported by run itself), a MemoryError above all, ends as it would in the main loop: the
    fault reported and a reset in normal mode; in safe mode the board goes on. The boot pointer is
    written last, so the reset boots the version the board has (as after a power cut) and nothing
    stays 'installing'."""
    try:
        aside = _aside(rt, u) if u.st["kind"] == _UK_APP else False
        from common import ota_inst
        yield from ota_inst.run(rt, u, aside)
    except Exception as e:
        u.installing = False
        forget("common.ota_inst")
        from common import runtime
        if isinstance(e, MemoryError):
            runtime.failed("update install", e, rt.safe, rt)
        else:
            runtime.failed("update install", e, rt.safe)


def _aside(rt, u):
    """Take the role's App and its code off the heap for the check and the install, which need
    ~10 KiB more than a board in service holds and end in a reboot into the trial: a mains device
    over Wi-Fi would not fit both (docs/firmware.md, Updates). App.stop(), where an App has one,
    leaves its hardware safe first (a lamp keeps its level, no lock coil stays energised); the
    session keeps the events the App queued, without the App's callbacks (common.ota_inst._resume
    starts the App again after a refusal). False: no App to set aside."""
    app = rt.app
    if app is None:
        return False
    rt.app = None
    rt.app_cls = None
    stop = getattr(app, "stop", None)
    if stop is not None:
        stop()
    for e in rt.session.events:
        e[5] = None  # an on_ack would keep the App alive; what it tracked is on flash (an audit ring)
    del app, stop
    role = rt.dev.role
    forget(*[n for n in sys.modules if n == role or n.startswith(role + ".")])
    rt.log("update %d: checking and installing with the App set aside" % u.st["uid"])
    return True


def idle():
    """Nothing in progress (no offer being received or staged, no install): the runtime may drop
    this module and ota_state from the heap; the next update_* message or the trial's welcome
    loads the state from flash again."""
    u = _upd
    return u is None or not (u.st or u.installing)


def started(rt):
    """A trial boot reboots after TRIAL_MS unless it is confirmed before (ota_trial)."""
    _trial("started", rt)


def joined(rt):
    """The first welcome of this boot: confirm a trial, report an outcome not reported yet (ota_trial)."""
    _trial("joined", rt)


def _trial(what, rt):
    from common import ota_trial
    try:
        getattr(ota_trial, what)(rt)
    finally:
        forget("common.ota_trial")
