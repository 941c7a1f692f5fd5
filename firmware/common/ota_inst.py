"""Software updates, the commit (SPEC 10): check the staged image's header and every file,
write the files into the other slot and switch to it (kind 0), or boot the written OTA
partition next (kind 1, through common.ota_part). On the heap only from an accepted update_commit to the reboot (or the
refusal). Each function takes common.ota_state's Updater."""

import hashlib
import os
import sys

try:
    from micropython import const
except ImportError:  # CPython (unit tests)
    def const(x):  # type: ignore[misc]  # the stub's const is generic
        return x

from protocol.errors import CborError

from common import SETUP_ONLY, forget
from common.ota import boot_module, msg
from common.ota_state import IMAGE, mpy_version

# SPEC 5.2 and 10 numbers (tests/firmware/test_ota_codes.py holds them equal to protocol.codes)
_UK_RUNTIME = const(1)
_US_TRIAL = const(3)
_US_REFUSED = const(6)
_UR_NONE = const(0)
_UR_ROLE = const(1)
_UR_MPY = const(2)
_UR_DOWNGRADE = const(3)
_UR_RUNTIME = const(4)
_UR_SCHEMA = const(5)
_UR_IMAGE = const(8)
_UR_FLASH = const(13)

SLOTS = ("s1", "s2")
MAX_PATH = 64


def runtime_version():
    v = sys.implementation.version
    return v[0] * 10000 + v[1] * 100 + v[2]


def rmtree(path):
    """Remove a directory and everything in it (a slot being replaced)."""
    try:
        names = os.listdir(path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _schema(u):
    """The config-schema version of the stored config (1 when it says none)."""
    if u.schema is None:
        u.schema = 1
        try:
            from common.store import read_json
            u.schema = read_json("/config.json").get("schema", 1)
        except (OSError, ValueError, AttributeError):
            pass
    return u.schema


def _files(u, root=None):
    """The staged image's files in turn, read from flash in BLOCK pieces through one buffer and the
    header one entry at a time (neither the image nor its header is ever in RAM): each checked
    against its SHA-256 (root None) or written under root. A generator that yields each path and
    leaves u.head; CborError when the image is not what its header says."""
    b = u.blk()
    k = len(b)
    with open(IMAGE, "rb") as hf, open(IMAGE, "rb") as body:
        r = _Header(hf, bytearray(64))
        u.head = r.fields()
        body.seek(r.end)
        at = r.end
        for i in range(r.count):
            path, size, digest = r.entry()
            h = out = None
            if root is None:
                h = hashlib.sha256()
            else:
                d = root
                for part in path.split("/")[:-1]:
                    d = d + "/" + part
                    try:
                        os.mkdir(d)
                    except OSError:
                        pass
                out = open(root + "/" + path, "wb")
            try:
                left = size
                while left > 0:
                    n = body.readinto(b if left >= k else b[:left])
                    if not n:
                        raise CborError("image shorter than its header says")
                    c = b if n == k else b[:n]
                    if h is not None:
                        h.update(c)
                    elif out is not None:
                        out.write(c)
                    left -= n
            finally:
                if out is not None:
                    out.close()
            if h is not None and h.digest() != digest:
                raise CborError("a file does not match its sha256")
            at += size
            yield path
        if hf.tell() - r.left != r.end or at != u.st["size"]:
            raise CborError("the header's length or the files' sizes do not add up")


def verify(u):
    """Check the staged image's header and every file's SHA-256 (SPEC 10, commit). A generator
    that yields after each file, so the main loop keeps running; it leaves u.why (UR_NONE when
    the image fits this device) and u.head."""
    u.why = _UR_IMAGE
    try:
        for path in _files(u):
            yield path
    except (OSError, CborError, IndexError, UnicodeError):  # unreadable, not the header SPEC 10 defines
        return
    st = u.st
    role, fw, mpy, min_rt, schema, floor = u.head
    if role != u.role:
        u.why = _UR_ROLE
    elif mpy != mpy_version():
        u.why = _UR_MPY
    elif min_rt > runtime_version():
        u.why = _UR_RUNTIME
    elif schema < _schema(u):
        u.why = _UR_SCHEMA
    elif fw != st["fw"] or floor > fw:
        u.why = _UR_IMAGE
    elif fw < u.floor:
        u.why = _UR_DOWNGRADE
    else:
        u.why = _UR_NONE


def check(u):
    """verify() at once; the reason (UR_NONE: fit to install)."""
    for _ in verify(u):
        pass
    return u.why


def refuse(u):
    """The staged image does not fit (u.why): discard it; the report."""
    uid = u.st["uid"]
    u.discard()
    return (uid, _US_REFUSED, 0, u.why)


def target(u):
    return SLOTS[1] if u.ptr.get("slot") == SLOTS[0] else SLOTS[0]


def install(u):
    """Write the verified files into the other slot and switch to it; a generator that
    yields after each file, so the main loop (and its watchdog) keeps running."""
    slot = target(u)
    root = "/" + slot
    rmtree(root)
    os.mkdir(root)
    for path in _files(u, root):
        yield path
    p = dict(u.ptr)
    p.update({"slot": slot, "prev": u.ptr.get("slot", ""), "try": 1, "uid": u.st["uid"],
              "st": _US_TRIAL, "why": _UR_NONE, "rep": 0, "fw": u.head[1],
              "nfloor": u.head[5]})
    boot_module().write(p)
    u.ptr = p
    u.discard()


def run(rt, u, aside=False):
    """What an accepted commit starts (the runtime's job, common.ota.installing): verify, install,
    report, reboot into the trial. Yields after each file, so the main loop polls the link and
    feeds the watchdog in between. aside: the App was set aside for it (common.ota._aside), so a
    refusal or a flash error starts it again."""
    try:
        if u.st["kind"] == _UK_RUNTIME:
            from common import ota_part
            ota_part.switch(u)
        else:
            yield from verify(u)
            if u.why:
                r = refuse(u)
                u.installing = False
                forget("common.ota_inst")
                rt.log("update %d: refused at commit, reason %d" % (r[0], r[3]))
                rt.send(msg(r))
                if aside:
                    _resume(rt)
                return
            yield from install(u)
    except OSError as e:
        uid = u.st["uid"] if u.st else 0
        rt.log("update %d: install failed: %r" % (uid, e), keep=True)
        u.discard()
        u.installing = False
        forget("common.ota_inst")
        rt.send(msg((uid, _US_REFUSED, 0, _UR_FLASH)))
        if aside:
            _resume(rt)
        return
    rt.log("update %d: switched, rebooting into the trial" % u.ptr["uid"], keep=True)
    rt.send(msg(u.report(u.ptr["uid"])))
    rt.reboot()


def _resume(rt):
    """The App again after _aside when no reboot follows (an image refused at its commit, a flash
    error): imported and started as at boot."""
    rt.app_cls = __import__(rt.dev.role + ".app", None, None, ["App"]).App
    rt.app = rt.app_cls(rt)
    rt.app.start(rt.safe)
    forget(*SETUP_ONLY)
    rt.log("the App runs again")


class _Header:
    """The image header (SPEC 10: CBOR [1, role, fw, mpy, min_runtime, schema, floor,
    [[path, size, sha256], ...]]) read item by item from a file through a small buffer."""

    def __init__(self, f, buf):
        self.f = f
        self.b = buf
        self.n = 0  # bytes in the buffer
        self.i = 0  # next byte to use
        self.left = 0  # bytes read from the file but not used yet
        hl = self._take(2)
        self.end = 2 + (hl[0] << 8 | hl[1])  # where the files begin
        self.count = 0

    def _byte(self):
        if self.i >= self.n:
            self.n = self.f.readinto(self.b) or 0
            self.i = 0
            if not self.n:
                raise CborError("image ends inside its header")
        v = self.b[self.i]
        self.i += 1
        self.left = self.n - self.i
        return v

    def _take(self, k):
        out = bytearray(k)
        for j in range(k):
            out[j] = self._byte()
        return out

    def _head(self, major):
        ib = self._byte()
        if ib >> 5 != major:
            raise CborError("header item of major type %d, not %d" % (ib >> 5, major))
        ai = ib & 31
        if ai < 24:
            return ai
        if ai > 27:
            raise CborError("indefinite or reserved length in the header")
        v = 0
        for _ in range(1 << (ai - 24)):
            v = v << 8 | self._byte()
        return v

    def fields(self):
        """(role, fw, mpy, min_runtime, schema, floor); then entry() count times."""
        if self._head(4) != 8 or self._head(0) != 1:
            raise CborError("not an image header of format 1")
        v = tuple(self._head(0) for _ in range(6))
        self.count = self._head(4)
        if not self.count:
            raise CborError("the header lists no files")
        return v

    def entry(self):
        if self._head(4) != 3:
            raise CborError("a file entry is not [path, size, sha256]")
        n = self._head(3)
        if n > MAX_PATH:
            raise CborError("path longer than %d bytes" % MAX_PATH)
        path = bytes(self._take(n)).decode()
        if not _path_ok(path):
            raise CborError("bad path")
        size = self._head(0)
        if self._head(2) != 32:
            raise CborError("sha256 is not 32 bytes")
        return path, size, bytes(self._take(32))


def _path_ok(p):
    if type(p) is not str or not p or len(p) > MAX_PATH or p[0] == "/":
        return False
    for part in p.split("/"):
        if part in ("", ".", ".."):
            return False
    return True
