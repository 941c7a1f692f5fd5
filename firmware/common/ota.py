"""Software updates, the device side (protocol/SPEC.md section 10).

Imported only when an update message arrives or when the board boots after an update
(common.runtime), so a board in service pays no heap for it. The image never sits in
RAM: chunks are appended to /ota/stage.bin (its size on flash is the offset, so a
transfer resumes after a disconnect, a deep sleep or a reboot), and the header and the
files are read back in BLOCK-byte pieces. An app image (kind 0) is written into the
slot the board does not run (/s1 or /s2; the factory files in /lib are never touched)
and switched to through the pointer otaboot keeps; a MicroPython image (kind 1) goes
block by block into the next OTA partition. See docs/firmware.md, Updates.
"""

import hashlib
import os
import sys
from binascii import hexlify

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio  # type: ignore[no-redef]

from protocol import messages
from protocol.codes import (E_BAD_VALUE, E_BUSY, E_INTERNAL, E_NOT_READY, E_UNKNOWN_TYPE, UK_RUNTIME,
                            UPD_CHUNK_MAX, UR_BUSY, UR_DIGEST, UR_DOWNGRADE, UR_FLASH, UR_IMAGE, UR_KIND, UR_MPY,
                            UR_NONE, UR_ROLE, UR_RUNTIME, UR_SCHEMA, UR_SPACE, UR_TRIAL, UR_UNKNOWN, US_ABORTED,
                            US_IDLE, US_RECEIVING, US_REFUSED, US_ROLLED_BACK, US_STAGED, US_TRIAL, US_VALID)
from protocol.errors import CborError

from common import clock, otaboot
from common.store import read_json, write_json  # not common.config: it stays off the heap during an update

DIR = "/ota"
STAGE = DIR + "/stage.json"
IMAGE = DIR + "/stage.bin"
BLOCK = 512
"""Bytes read from flash at a time: the image is hashed and copied in pieces this size,
through one buffer (readinto, and whole-buffer writes: no allocation per block; the
WebAssembly port of the virtual board also keeps every object passed to a file's write
alive, which a chip does not, so a figure measured there stays honest only this way)."""
PART_BLOCK = 4096
"""An OTA partition's erase block: a runtime image is written in blocks this size."""
SLOTS = ("s1", "s2")
TRIAL_MS = 600000
"""A trial that has not joined and passed its self-check after this long reboots (one
trial boot spent); otaboot switches back after TRIAL_BOOTS of them."""
INSTALL_PAUSE_MS = 5
"""Pause after each file written into the slot: the main loop polls the link and feeds the watchdog."""
SPACE_MARGIN = 16384
MAX_PATH = 64


def mpy_version():
    return sys.implementation._mpy & 0xFF


def runtime_version():
    v = sys.implementation.version
    return v[0] * 10000 + v[1] * 100 + v[2]


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


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


def rmtree(path):
    """Remove a directory and everything in it (a slot being replaced)."""
    try:
        names = os.listdir(path)
    except OSError:
        _remove(path)
        return
    for n in names:
        p = path + "/" + n
        if os.stat(p)[0] & 0x4000:
            rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _free_bytes():
    try:
        s = os.statvfs("/")
        return s[0] * s[4]
    except (AttributeError, OSError):
        return None


def _next_partition():
    """The OTA partition the running one updates into, or None when the board has none."""
    try:
        from esp32 import Partition
        return Partition(Partition.RUNNING).get_next_update()  # type: ignore[arg-type]  # stub lacks the int id
    except Exception:  # no esp32 module, or no OTA partitions (get_next_update raises OSError)
        return None


class Updater:
    """The update state machine on flash, apart from the link: each method returns what
    to answer. `role` is the device's role id, `schema` the config-schema version its
    stored config has."""

    def __init__(self, role, schema=1):
        self.role = role
        self.schema = schema
        self.ptr = otaboot.read() or {}
        self.st = {}  # type: dict  # the offer being received ({}: none)
        self.off = 0
        self._buf = bytearray()
        self._part = None
        self._f = None  # stage.bin, open for appending while chunks arrive
        self.installing = False
        self._blk = memoryview(bytearray(BLOCK))
        self._chunk = self._blk[:UPD_CHUNK_MAX]
        try:
            st = read_json(STAGE)
        except (OSError, ValueError):
            st = None
        if type(st) is dict and "uid" in st:
            self.st = st
            self._resume()

    def _resume(self):
        st = self.st
        if st["kind"] == UK_RUNTIME:
            self._part = _next_partition()
            self._buf = bytearray()
            self.off = st.get("blk", 0) * PART_BLOCK
        else:
            self.off = min(_size(IMAGE), st["size"])

    # ---- what the board runs ----

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
                return (st["uid"], US_STAGED, st["size"], UR_NONE)
            return (st["uid"], US_RECEIVING, self.off, UR_NONE)
        p = self.ptr
        if p.get("uid") and (uid is None or uid == p["uid"]):
            return (p["uid"], p.get("st", US_IDLE), 0, p.get("why", UR_NONE))
        return (uid or 0, US_IDLE, 0, UR_UNKNOWN if uid else UR_NONE)

    # ---- offer ----

    def offer(self, m, fw_running):
        """Check an offer; the new staging area when it is accepted. Returns the report."""
        uid = m["uid"]
        st = self.st
        if st and st["uid"] == uid:  # the same uid again: a status query
            if not st.get("ok") and self.off >= st["size"]:
                return self._complete()  # every byte arrived before a reset cut the check short
            return self.report(uid)
        if not st and self.ptr.get("uid") == uid:
            return self.report(uid)
        why = self._refusal(m, fw_running)
        if why:
            return (uid, US_REFUSED, 0, why)
        self.discard()
        _mkdir(DIR)
        st = {"uid": uid, "kind": m["kind"], "fw": m["fw"], "size": m["size"],
              "sha": hexlify(m["sha"]).decode(), "ok": 0}
        if m["kind"] == UK_RUNTIME:
            st["blk"] = 0
        else:
            open(IMAGE, "wb").close()
        write_json(STAGE, st)
        self.st = st
        self._resume()
        return (uid, US_RECEIVING, 0, UR_NONE)

    def _refusal(self, m, fw_running):
        if self.trial:
            return UR_BUSY
        if m["role"] != self.role:
            return UR_ROLE
        if m["mpy"] != mpy_version():
            return UR_MPY
        kind, size = m["kind"], m["size"]
        if kind == UK_RUNTIME:
            part = _next_partition()
            if part is None:
                return UR_KIND
            if m["fw"] < self.ptr.get("rfloor", 0):
                return UR_DOWNGRADE
            if size > part.info()[3]:
                return UR_SPACE
            return UR_NONE
        if m["fw"] < self.floor:
            return UR_DOWNGRADE
        free = _free_bytes()
        held = _size(IMAGE)
        if free is not None and free + held < 2 * size + SPACE_MARGIN:  # the staged image, then its files
            return UR_SPACE
        return UR_NONE

    # ---- chunks ----

    def chunk(self, m):
        """Append one chunk. Returns (nack, report): nack (code, field) or None; report or None."""
        st = self.st
        if not st or st["uid"] != m["uid"]:
            return (E_NOT_READY, "uid"), None
        data = m["data"]
        if st.get("ok") or m["off"] != self.off:
            return (E_BAD_VALUE, "off"), self.report()
        if self.off + len(data) > st["size"]:
            return (E_BAD_VALUE, "data"), None
        try:
            if st["kind"] == UK_RUNTIME:
                self._part_append(data)
            else:
                f = self._f
                if f is None:
                    f = self._f = open(IMAGE, "ab")
                n = len(data)
                if n == UPD_CHUNK_MAX:
                    self._chunk[:] = data
                    f.write(self._chunk)
                else:
                    f.write(data)
                f.flush()  # on flash before the ack (littlefs: a sync)
                self.off += len(data)
        except OSError:
            self.discard()
            return (E_INTERNAL, ""), (m["uid"], US_REFUSED, 0, UR_FLASH)
        if self.off < st["size"]:
            return None, None
        self._close()
        return None, self._complete()

    def _complete(self):
        """Every byte is on flash: check the image's SHA-256 (staged) or discard it (refused)."""
        st = self.st
        if self._digest() != st["sha"]:
            uid = st["uid"]
            self.discard()
            return (uid, US_REFUSED, 0, UR_DIGEST)
        st["ok"] = 1
        write_json(STAGE, st)
        return self.report()

    def _part_append(self, data):
        buf = self._buf
        buf.extend(data)
        self.off += len(data)
        last = self.off == self.st["size"]
        while len(buf) >= PART_BLOCK or (last and buf):
            blk = buf[:PART_BLOCK]
            if len(blk) < PART_BLOCK:
                blk.extend(b"\xff" * (PART_BLOCK - len(blk)))
            part = self._part
            if part is None:
                raise OSError(19)  # the partition went away: refused (flash)
            part.writeblocks(self.st["blk"], blk)
            self.st["blk"] += 1
            write_json(STAGE, self.st)  # what is on flash is the offset after a reboot
            self._buf = buf = buf[PART_BLOCK:]

    def _digest(self):
        h = hashlib.sha256()
        left = self.st["size"]
        part = self._part
        if self.st["kind"] == UK_RUNTIME and part is not None:
            blk = bytearray(PART_BLOCK)
            i = 0
            while left > 0:
                part.readblocks(i, blk)
                h.update(blk if left >= PART_BLOCK else blk[:left])
                left -= PART_BLOCK
                i += 1
        else:
            b = self._blk
            with open(IMAGE, "rb") as f:
                while left > 0:
                    n = f.readinto(b if left >= BLOCK else b[:left])
                    if not n:
                        break
                    h.update(b if n == BLOCK else b[:n])
                    left -= n
        return hexlify(h.digest()).decode()

    # ---- commit ----

    def verify(self):
        """Check the staged image's header and every file's SHA-256 (SPEC 10, commit), reading
        flash in BLOCK pieces and the header one entry at a time (neither the image nor its
        header is ever in RAM). A generator that yields after each file, so the main loop keeps
        running; it leaves self.why (UR_NONE when the image fits this device) and self.head."""
        self.why = UR_IMAGE
        st = self.st
        b = self._blk
        try:
            with open(IMAGE, "rb") as hf, open(IMAGE, "rb") as body:
                r = _Header(hf, bytearray(64))
                head = r.fields()
                body.seek(r.end)
                at = r.end
                for i in range(r.count):
                    path, size, digest = r.entry()
                    h = hashlib.sha256()
                    left = size
                    while left > 0:
                        got = body.readinto(b if left >= BLOCK else b[:left])
                        if not got:
                            return
                        h.update(b if got == BLOCK else b[:got])
                        left -= got
                    if h.digest() != digest:
                        return
                    at += size
                    yield path
                if hf.tell() - r.left != r.end or at != st["size"]:
                    return  # the header's length or the files' sizes do not add up
        except (OSError, CborError, IndexError, UnicodeError):  # unreadable, not the header SPEC 10 defines
            return
        role, fw, mpy, min_rt, schema, floor = head
        if role != self.role:
            self.why = UR_ROLE
        elif mpy != mpy_version():
            self.why = UR_MPY
        elif min_rt > runtime_version():
            self.why = UR_RUNTIME
        elif schema < self.schema:
            self.why = UR_SCHEMA
        elif fw != st["fw"] or floor > fw:
            self.why = UR_IMAGE
        elif fw < self.floor:
            self.why = UR_DOWNGRADE
        else:
            self.why = UR_NONE
            self.head = head

    def check(self):
        """verify() at once; the reason (UR_NONE: fit to install)."""
        for _ in self.verify():
            pass
        return self.why

    def commit(self, m):
        """A commit for the staged image: None (ack; the caller runs verify and install) or a nack."""
        st = self.st
        if not st or st["uid"] != m["uid"] or not st.get("ok") or self.trial:
            return (E_NOT_READY, "uid")
        return None

    def refuse(self):
        """The staged image does not fit (self.why): discard it; the report."""
        uid = self.st["uid"]
        self.discard()
        return (uid, US_REFUSED, 0, self.why)

    def target(self):
        return SLOTS[1] if self.ptr.get("slot") == SLOTS[0] else SLOTS[0]

    def install(self):
        """Write the verified files into the other slot and switch to it; a generator that
        yields after each file, so the main loop (and its watchdog) keeps running."""
        slot = self.target()
        root = "/" + slot
        rmtree(root)
        os.mkdir(root)
        buf = self._blk
        with open(IMAGE, "rb") as hf, open(IMAGE, "rb") as src:
            r = _Header(hf, bytearray(64))
            r.fields()
            src.seek(r.end)
            for i in range(r.count):
                path, size, _ = r.entry()
                d = root
                for part in path.split("/")[:-1]:
                    d = d + "/" + part
                    _mkdir(d)
                with open(root + "/" + path, "wb") as out:
                    left = size
                    while left > 0:
                        n = src.readinto(buf if left >= BLOCK else buf[:left])
                        if not n:
                            raise OSError(5)  # shorter than its header says: verify makes this unreachable
                        out.write(buf if n == BLOCK else buf[:n])
                        left -= n
                yield path
        p = dict(self.ptr)
        p.update({"slot": slot, "prev": self.ptr.get("slot", ""), "try": 1, "uid": self.st["uid"],
                  "st": US_TRIAL, "why": UR_NONE, "rep": 0, "fw": self.head[1],
                  "nfloor": self.head[5]})
        otaboot.write(p)
        self.ptr = p
        self.discard()

    def switch_runtime(self):
        """Kind 1: boot the written partition next (the bootloader rolls it back unless it is confirmed)."""
        part = self._part
        if part is None:
            raise OSError(19)
        p = dict(self.ptr)
        p.update({"img": part.info()[4], "uid": self.st["uid"], "st": US_TRIAL, "why": UR_NONE,
                  "rep": 0, "rfw": self.st["fw"]})
        otaboot.write(p)
        self.ptr = p
        part.set_boot()
        self.discard()

    def abort(self, m):
        if self.trial:
            return (E_NOT_READY, "uid"), None
        if not self.st or self.st["uid"] != m["uid"]:
            return (E_NOT_READY, "uid"), None
        self.discard()
        return None, (m["uid"], US_ABORTED, 0, UR_NONE)

    def _close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    def discard(self):
        self._close()
        _remove(STAGE)
        _remove(IMAGE)
        self.st = {}
        self.off = 0
        self._buf = bytearray()

    # ---- after the boot ----

    def confirm(self, healthy):
        """The board joined: a trial is made valid when healthy; the outcome to report, or None."""
        p = self.ptr
        if not p.get("uid"):
            return None
        q = dict(p)
        if p.get("img"):
            from esp32 import Partition
            running = Partition(Partition.RUNNING)  # type: ignore[arg-type]  # stub lacks the int id
            if running.info()[4] == p["img"] and healthy:
                Partition.mark_app_valid_cancel_rollback()
                q["st"], q["why"] = US_VALID, UR_NONE
                q["rfloor"] = max(p.get("rfloor", 0), p.get("rfw", 0))
            elif running.info()[4] == p["img"]:
                return False  # unhealthy: the next reset lets the bootloader roll back
            else:
                q["st"], q["why"] = US_ROLLED_BACK, UR_TRIAL
            del q["img"]
        elif p.get("try"):
            if not healthy:
                return False
            q["try"] = 0
            q["prev"] = ""
            q["floor"] = max(p.get("floor", 0), p.get("nfloor", 0))
            q["st"], q["why"] = US_VALID, UR_NONE
        elif not p.get("rep"):
            return None
        q["rep"] = 0
        otaboot.write(q)
        self.ptr = q
        if self.st and self.st["uid"] == q["uid"]:
            self.discard()  # staged bytes a power cut left behind after the switch
        return (q["uid"], q["st"], 0, q["why"])

    def roll_back(self):
        """A trial that joined but failed its check goes back now (the caller resets)."""
        if self.ptr.get("try"):
            otaboot.write(otaboot.rolled_back(self.ptr))


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


# ---- the runtime's side (common.runtime calls these) ----

_upd = None


def _updater(rt):
    global _upd
    if _upd is None:
        schema = 1
        try:
            schema = read_json("/config.json").get("schema", 1)
        except (OSError, ValueError, AttributeError):
            pass
        _upd = Updater(messages.ROLE_IDS.get(rt.dev.role, 0), schema)
    return _upd


def _msg(r):
    return {"type": "update", "uid": r[0], "state": r[1], "off": r[2], "reason": r[3]}


def _after(rt, r):
    """Send `update` right after the ack/nack of the message being handled (SPEC 10)."""
    if r is not None:
        rt.session.after_reply = _msg(r)
        rt.log("update %d: state %d off %d reason %d" % r)


def command(rt, m):
    """One update_* downlink; returns None (ack) or (code, field) (nack)."""
    u = _updater(rt)
    t = m["type"]
    if u.installing:  # the files are being written: nothing may change the staged image now
        if t == "update_offer":
            _after(rt, (m["uid"], US_REFUSED, 0, UR_BUSY))
            return None
        return (E_BUSY, "uid")
    if t == "update_offer":
        _after(rt, u.offer(m, rt.fw))
        return None
    if t == "update_chunk":
        nack, r = u.chunk(m)
    elif t == "update_commit":
        nack, r = u.commit(m), None
        if nack is None:
            u.installing = True
            asyncio.create_task(_install(rt, u))
    elif t == "update_abort":
        nack, r = u.abort(m)
    else:
        return (E_UNKNOWN_TYPE, "")
    _after(rt, r)
    return nack


async def _install(rt, u):
    try:
        if u.st["kind"] == UK_RUNTIME:
            u.switch_runtime()
        else:
            for _ in u.verify():
                await asyncio.sleep_ms(INSTALL_PAUSE_MS)
            if u.why:
                r = u.refuse()
                u.installing = False
                rt.log("update %d: refused at commit, reason %d" % (r[0], r[3]))
                rt.send(_msg(r))
                return
            for _ in u.install():
                await asyncio.sleep_ms(INSTALL_PAUSE_MS)
    except OSError as e:
        uid = u.st["uid"] if u.st else 0
        rt.log("update %d: install failed: %r" % (uid, e), keep=True)
        u.discard()
        u.installing = False
        rt.send(_msg((uid, US_REFUSED, 0, UR_FLASH)))
        return
    rt.log("update %d: switched, rebooting into the trial" % u.ptr["uid"], keep=True)
    rt.send(_msg(u.report(u.ptr["uid"])))
    rt.reboot()


def idle():
    """Nothing in progress (no offer being received, no trial, no install): the runtime may drop
    this module from the heap; the next update_* message loads the state from flash again."""
    u = _upd
    return u is None or not (u.st or u.trial or u.installing)


def started(rt):
    """A trial boot reboots after TRIAL_MS unless it is confirmed before."""
    u = _updater(rt)
    if u.trial:
        rt.log("trial of update %d: boot %d of %d" % (
            u.ptr["uid"], u.ptr.get("try", 2) - 1, otaboot.TRIAL_BOOTS), keep=True)
        rt._reboot_at = clock.ticks_add(clock.ticks_ms(), TRIAL_MS)  # the runtime's planned reboot


def joined(rt):
    """The first welcome of this boot: confirm a trial, report an outcome not reported yet."""
    u = _updater(rt)
    r = u.confirm(rt.app is not None and not rt.safe and rt.checks_ok)
    if r is False:
        rt.log("trial of update %d failed its check: rolling back" % u.ptr["uid"], keep=True)
        u.roll_back()
        rt.reboot()
        return
    if r is not None:
        rt._reboot_at = None
        rt.log("update %d: state %d reason %d" % (r[0], r[1], r[3]), keep=True)
        rt.send(_msg(r))
