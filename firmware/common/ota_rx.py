"""Software updates, receiving (SPEC 10: chunks, the image's digest once every byte arrived): on
the heap only while an image is being received (common.ota drops it once the image is staged or
discarded). Each function takes common.ota_state's Updater and returns what to answer."""

import hashlib
from binascii import hexlify

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from common.ota_state import IMAGE, STAGE
from common.store import write_json

# SPEC 5.2 and 10 numbers (tests/firmware/test_ota_codes.py holds them equal to protocol.codes)
_E_BAD_VALUE = const(3)
_E_NOT_READY = const(7)
_E_INTERNAL = const(8)
_UK_RUNTIME = const(1)
_UPD_CHUNK_MAX = const(192)
_US_REFUSED = const(6)
_UR_DIGEST = const(7)
_UR_FLASH = const(13)


def chunk(u, m):
    """Append one chunk. Returns (nack, report): nack (code, field) or None; report or None."""
    st = u.st
    if not st or st["uid"] != m["uid"]:
        return (_E_NOT_READY, "uid"), None
    data = m["data"]
    if st.get("ok") or m["off"] != u.off:
        return (_E_BAD_VALUE, "off"), u.report()
    n = len(data)
    if u.off + n > st["size"]:
        return (_E_BAD_VALUE, "data"), None
    try:
        if st["kind"] == _UK_RUNTIME:
            from common import ota_part
            ota_part.append(u, data)
        else:
            f = u._f
            if f is None:
                f = u._f = open(IMAGE, "ab")
            if n == _UPD_CHUNK_MAX:  # through one buffer (see common.ota_state.BLOCK)
                c = u._chunk
                if c is None:
                    c = u._chunk = memoryview(bytearray(_UPD_CHUNK_MAX))
                c[:] = data
                f.write(c)
            else:
                f.write(data)
            f.flush()  # on flash before the ack (littlefs: a sync)
            u.off += n
    except OSError:
        u.discard()
        return (_E_INTERNAL, ""), (m["uid"], _US_REFUSED, 0, _UR_FLASH)
    if u.off < st["size"]:
        return None, None
    u.close()
    return None, complete(u)


def complete(u):
    """Every byte is on flash: check the image's SHA-256 (staged) or discard it (refused)."""
    st = u.st
    if _digest(u) != st["sha"]:
        uid = st["uid"]
        u.discard()
        return (uid, _US_REFUSED, 0, _UR_DIGEST)
    st["ok"] = 1
    write_json(STAGE, st)
    return u.report()


def _digest(u):
    h = hashlib.sha256()
    left = u.st["size"]
    if u.st["kind"] == _UK_RUNTIME and u._part is not None:
        from common import ota_part
        ota_part.digest(u, h)
    else:
        b = u.blk()
        k = len(b)
        with open(IMAGE, "rb") as f:
            while left > 0:
                n = f.readinto(b if left >= k else b[:left])
                if not n:
                    break
                h.update(b if n == k else b[:n])
                left -= n
    return hexlify(h.digest()).decode()
