"""Software updates into an OTA partition (SPEC 10, kind 1: a MicroPython image, behind
CAP_OTA_IMAGE): the partition's side of receiving and of the switch, loaded only for such an
update, so an app update never holds it. Each function takes common.ota_state's Updater."""

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from common.ota import STAGE, boot_module
from common.store import write_json

_US_TRIAL = const(3)
_UR_NONE = const(0)
_UR_DOWNGRADE = const(3)
_UR_SPACE = const(6)
_UR_KIND = const(14)

PART_BLOCK = 4096
"""An OTA partition's erase block: a runtime image is written in blocks this size."""


def next_partition():
    """The OTA partition the running one updates into, or None when the board has none."""
    try:
        from esp32 import Partition
        return Partition(Partition.RUNNING).get_next_update()  # type: ignore[arg-type]  # stub lacks the int id
    except Exception:  # no esp32 module, or no OTA partitions (get_next_update raises OSError)
        return None


def resume(u):
    """The offset of a partition update: the blocks written so far (a partial block is received again)."""
    u._part = next_partition()
    u._buf = bytearray()
    u.off = u.st.get("blk", 0) * PART_BLOCK


def refusal(u, m):
    part = next_partition()
    if part is None:
        return _UR_KIND
    if m["fw"] < u.ptr.get("rfloor", 0):
        return _UR_DOWNGRADE
    if m["size"] > part.info()[3]:
        return _UR_SPACE
    return _UR_NONE


def append(u, data):
    buf = u._buf
    buf.extend(data)
    u.off += len(data)
    last = u.off == u.st["size"]
    while len(buf) >= PART_BLOCK or (last and buf):
        blk = buf[:PART_BLOCK]
        if len(blk) < PART_BLOCK:
            blk.extend(b"\xff" * (PART_BLOCK - len(blk)))
        part = u._part
        if part is None:
            raise OSError(19)  # the partition went away: refused (flash)
        part.writeblocks(u.st["blk"], blk)
        u.st["blk"] += 1
        write_json(STAGE, u.st)  # what is on flash is the offset after a reboot
        u._buf = buf = buf[PART_BLOCK:]


def digest(u, h):
    """Hash the image's bytes in the partition into h."""
    left = u.st["size"]
    part = u._part
    blk = bytearray(PART_BLOCK)
    i = 0
    while left > 0:
        part.readblocks(i, blk)
        h.update(blk if left >= PART_BLOCK else blk[:left])
        left -= PART_BLOCK
        i += 1


def switch(u):
    """Kind 1: boot the written partition next (the bootloader rolls it back unless it is confirmed)."""
    part = u._part
    if part is None:
        raise OSError(19)
    p = dict(u.ptr)
    p.update({"img": part.info()[4], "uid": u.st["uid"], "st": _US_TRIAL, "why": _UR_NONE,
              "rep": 0, "rfw": u.st["fw"]})
    boot_module().write(p)
    u.ptr = p
    part.set_boot()
    u.discard()
