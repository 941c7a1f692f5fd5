"""Software updates, an offer or an abort (SPEC 10): check an offer and open the staging area,
or drop it. On the heap only for the step of such a message. Each function takes
common.ota_state's Updater and returns what to answer."""

import os
from binascii import hexlify

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from common.ota_state import IMAGE, STAGE, _size, mpy_version
from common.store import write_json

# SPEC 5.2 and 10 numbers (tests/firmware/test_ota_codes.py holds them equal to protocol.codes)
_E_NOT_READY = const(7)
_UK_RUNTIME = const(1)
_US_RECEIVING = const(1)
_US_REFUSED = const(6)
_US_ABORTED = const(7)
_UR_NONE = const(0)
_UR_ROLE = const(1)
_UR_MPY = const(2)
_UR_DOWNGRADE = const(3)
_UR_SPACE = const(6)
_UR_BUSY = const(10)
_SPACE_MARGIN = const(16384)


def _free_bytes():
    try:
        s = os.statvfs("/")
        return s[0] * s[4]
    except (AttributeError, OSError):
        return None


def offer(u, m, fw_running):
    """Check an offer; the new staging area when it is accepted. Returns the report."""
    uid = m["uid"]
    st = u.st
    if st and st["uid"] == uid:  # the same uid again: a status query
        if not st.get("ok") and u.off >= st["size"]:
            from common import ota_rx
            return ota_rx.complete(u)  # every byte arrived before a reset cut the check short
        return u.report(uid)
    if not st and u.ptr.get("uid") == uid:
        return u.report(uid)
    why = _refusal(u, m, fw_running)
    if why:
        return (uid, _US_REFUSED, 0, why)
    u.discard()
    try:
        os.mkdir("/ota")
    except OSError:
        pass
    st = {"uid": uid, "kind": m["kind"], "fw": m["fw"], "size": m["size"],
          "sha": hexlify(m["sha"]).decode(), "ok": 0}
    if m["kind"] == _UK_RUNTIME:
        st["blk"] = 0
    else:
        open(IMAGE, "wb").close()
    write_json(STAGE, st)
    u.st = st
    u.resume()
    return (uid, _US_RECEIVING, 0, _UR_NONE)


def _refusal(u, m, fw_running):
    if u.trial:
        return _UR_BUSY
    if m["role"] != u.role:
        return _UR_ROLE
    if m["mpy"] != mpy_version():
        return _UR_MPY
    if m["kind"] == _UK_RUNTIME:
        from common import ota_part
        return ota_part.refusal(u, m)
    if m["fw"] < u.floor:
        return _UR_DOWNGRADE
    free = _free_bytes()
    held = _size(IMAGE)
    if free is not None and free + held < 2 * m["size"] + _SPACE_MARGIN:  # the staged image, then its files
        return _UR_SPACE
    return _UR_NONE


def abort(u, m):
    if u.trial:
        return (_E_NOT_READY, "uid"), None
    if not u.st or u.st["uid"] != m["uid"]:
        return (_E_NOT_READY, "uid"), None
    u.discard()
    return None, (m["uid"], _US_ABORTED, 0, _UR_NONE)
