"""Software updates, after the boot (SPEC 10): the first welcome confirms a trial that passed its
self-check, or rolls it back; an outcome not reported yet is reported. On the heap only for the
boot's start and that welcome's step (common.ota.started, joined)."""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

import os

from common.ota import STAGE, TRIAL_MS, boot_module, boot_pointer, msg

# SPEC 5.2 and 10 numbers (tests/firmware/test_ota_codes.py holds them equal to protocol.codes)
_US_VALID = const(4)
_US_ROLLED_BACK = const(5)
_UR_NONE = const(0)
_UR_TRIAL = const(11)
_TRIAL_BOOTS = const(3)  # otaboot.TRIAL_BOOTS


class _Pointer:
    """What confirm needs of an Updater when nothing is staged (every trial but one a power
    cut interrupted): the pointer alone, so common.ota_state stays off the heap."""
    st = None

    def __init__(self, p):
        self.ptr = p


def confirm(u, healthy):
    """The board joined: a trial is made valid when healthy; the outcome to report, or None."""
    p = u.ptr
    if not p.get("uid"):
        return None
    q = dict(p)
    if p.get("img"):
        from esp32 import Partition
        running = Partition(Partition.RUNNING)  # type: ignore[arg-type]  # stub lacks the int id
        if running.info()[4] == p["img"] and healthy:
            Partition.mark_app_valid_cancel_rollback()
            q["st"], q["why"] = _US_VALID, _UR_NONE
            q["rfloor"] = max(p.get("rfloor", 0), p.get("rfw", 0))
        elif running.info()[4] == p["img"]:
            return False  # unhealthy: the next reset lets the bootloader roll back
        else:
            q["st"], q["why"] = _US_ROLLED_BACK, _UR_TRIAL
        del q["img"]
    elif p.get("try"):
        if not healthy:
            return False
        q["try"] = 0
        q["prev"] = ""
        q["floor"] = max(p.get("floor", 0), p.get("nfloor", 0))
        q["st"], q["why"] = _US_VALID, _UR_NONE
    elif not p.get("rep"):
        return None
    q["rep"] = 0
    boot_module().write(q)
    u.ptr = q
    if u.st and u.st["uid"] == q["uid"]:
        u.discard()  # staged bytes a power cut left behind after the switch
    return (q["uid"], q["st"], 0, q["why"])


def roll_back(u):
    """A trial that joined but failed its check goes back now (the caller resets)."""
    if u.ptr.get("try"):
        b = boot_module()
        b.write(b.rolled_back(u.ptr))


def started(rt):
    p = boot_pointer() or {}
    if p.get("try") or p.get("img"):
        from common import clock
        rt.log("trial of update %d: boot %d of %d" % (p["uid"], p.get("try", 2) - 1, _TRIAL_BOOTS), keep=True)
        rt._reboot_at = clock.ticks_add(clock.ticks_ms(), TRIAL_MS)  # the runtime's planned reboot


def _holder(rt, p):
    """The update's Updater when one is loaded or something is staged (bytes a power cut left
    after the switch: confirm discards them), else the pointer alone."""
    from common import ota
    if ota._upd is not None:
        return ota._upd
    try:
        os.stat(STAGE)
    except OSError:
        return _Pointer(p)
    return ota._updater(rt)


def joined(rt):
    from common import ota
    p = ota._upd.ptr if ota._upd is not None else (boot_pointer() or {})
    if not p.get("uid") or not (p.get("try") or p.get("img") or p.get("rep")):
        return  # no trial to confirm, no outcome to report
    u = _holder(rt, p)
    r = confirm(u, rt.app is not None and not rt.safe and rt.checks_ok)
    if r is False:
        rt.log("trial of update %d failed its check: rolling back" % u.ptr["uid"], keep=True)
        roll_back(u)
        rt.reboot()
        return
    if r is not None:
        rt._reboot_at = None
        rt.log("update %d: state %d reason %d" % (r[0], r[1], r[3]), keep=True)
        rt.send(msg(r))
