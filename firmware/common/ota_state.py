"""Software updates, the state on flash (SPEC 10): the staging record (/ota/stage.json, with the
image in /ota/stage.bin) and the boot pointer, apart from the link and from each phase's code
(common.ota_rx, ota_inst, ota_trial take an Updater as their first argument). On the heap while
an update is being received, staged or installed, and for a trial's confirmation."""

import os
import sys

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from common.ota import STAGE, boot_pointer
from common.store import read_json  # not common.config: it stays off the heap during an update

# SPEC 5.2 and 10 numbers (tests/firmware/test_ota_codes.py holds them equal to protocol.codes)
_UK_RUNTIME = const(1)
_US_IDLE = const(0)
_US_RECEIVING = const(1)
_US_STAGED = const(2)
_UR_NONE = const(0)
_UR_UNKNOWN = const(12)

IMAGE = "/ota/stage.bin"
BLOCK = 512
"""Bytes read from flash at a time: the image is hashed and copied in pieces this size,
through one buffer (readinto, and whole-buffer writes: no allocation per block; the
WebAssembly port of the virtual board also keeps every object passed to a file's write
alive, which a chip does not, so a figure measured there stays honest only this way)."""
def mpy_version():
    return sys.implementation._mpy & 0xFF


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class Updater:
    """The update under way, as flash holds it. `role` is the device's role id,
    `schema` the config-schema version its stored config has (None: read from /config.json
    when the commit needs it)."""

    def __init__(self, role, schema=None):
        self.role = role
        self.schema = schema
        self.ptr = boot_pointer() or {}
        self.st = {}  # type: dict  # the offer being received ({}: none)
        self.off = 0
        self._buf = bytearray()
        self._part = None
        self._f = None  # stage.bin, open for appending while chunks arrive
        self.installing = False
        self._blk = None  # see blk()
        self._chunk = None  # the buffer a chunk's bytes are written through, while chunks arrive
        try:
            st = read_json(STAGE)
        except (OSError, ValueError):
            st = None
        if type(st) is dict and "uid" in st:
            self.st = st
            self.resume()

    def resume(self):
        st = self.st
        if st["kind"] == _UK_RUNTIME:
            from common import ota_part
            ota_part.resume(self)
        else:
            self.off = min(_size(IMAGE), st["size"])

    def blk(self):
        """The one BLOCK-byte buffer of this update (allocated once a phase reads or writes flash)."""
        if self._blk is None:
            self._blk = memoryview(bytearray(BLOCK))
        return self._blk

    @property
    def trial(self):
        p = self.ptr
        return bool(p.get("try") or p.get("img"))

    @property
    def floor(self):
        return self.ptr.get("floor", 0)

    def report(self, uid=None):
        """(uid, state, off, reason) of an update, for the uplink `update`."""
        st = self.st
        if st and (uid is None or uid == st["uid"]):
            if st.get("ok"):
                return (st["uid"], _US_STAGED, st["size"], _UR_NONE)
            return (st["uid"], _US_RECEIVING, self.off, _UR_NONE)
        p = self.ptr
        if p.get("uid") and (uid is None or uid == p["uid"]):
            return (p["uid"], p.get("st", _US_IDLE), 0, p.get("why", _UR_NONE))
        return (uid or 0, _US_IDLE, 0, _UR_UNKNOWN if uid else _UR_NONE)

    def close(self):
        self._chunk = None
        if self._f is not None:
            self._f.close()
            self._f = None

    def discard(self):
        self.close()
        _remove(STAGE)
        _remove(IMAGE)
        self.st = {}
        self.off = 0
        self._buf = bytearray()
