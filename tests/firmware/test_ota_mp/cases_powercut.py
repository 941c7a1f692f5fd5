# Power cuts during software updates, run inside genuine MicroPython by tests/firmware/test_ota_powercut.py.
#
# The unmodified common.ota (its state ota_state, its phases ota_offer, ota_rx, ota_inst,
# ota_trial) and otaboot run against a file layer that cuts the power at the K-th flash write
# (an open for writing, a write, a rename, a remove, a mkdir, a rmdir); the write it cuts leaves
# a random prefix of its bytes on flash, like a torn page. After each cut
# the board boots again (otaboot.boot) and must run the old or the new version, complete,
# never a mix and never nothing; then the update is finished from what is on flash.
import builtins
import hashlib
import io
import os
import random
import sys

import otaboot
from protocol import cbor, codes

from common import ota, ota_inst, ota_offer, ota_rx, ota_state, ota_trial

ROLE = codes.ROLE_LIGHT_POLE
MPY = sys.implementation._mpy & 0xFF
CUTS = 200
_open = builtins.open
_fs = {"rename": os.rename, "remove": os.remove, "mkdir": os.mkdir, "rmdir": os.rmdir}


class PowerCut(BaseException):
    """Not an Exception: nothing in the firmware may catch it, as nothing runs after a cut."""


class Flash:
    def __init__(self):
        self.ops = 0
        self.cut_at = None
        self.commit_at = 0

    def op(self):
        """Count one write; True when this one is cut."""
        self.ops += 1
        return self.cut_at is not None and self.ops >= self.cut_at


FLASH = Flash()


class _File(io.IOBase):
    """A file open for writing (io.IOBase: json.dump writes to it as to a stream)."""

    def __init__(self, f):
        self._f = f

    def readinto(self, b):
        return self._f.readinto(b)

    def ioctl(self, req, arg):
        if req == 4:  # close
            self._f.close()
        return 0

    def close(self):
        self._f.close()

    def flush(self):
        self._f.flush()

    def write(self, b):
        if FLASH.op():
            n = random.getrandbits(16) % (len(b) + 1)
            self._f.write(b[:n])
            self._f.close()
            raise PowerCut()
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


def _cut_open(path, mode="r", *a):
    if "w" in mode or "a" in mode:
        if FLASH.op():
            if "w" in mode:
                _open(path, mode).close()  # the truncation happened
            raise PowerCut()
        return _File(_open(path, mode, *a))
    return _open(path, mode, *a)


def _cutting(name):
    real = _fs[name]

    def f(*a):
        if FLASH.op():
            raise PowerCut()
        return real(*a)
    return f


def install_cuts():
    builtins.open = _cut_open
    for name in _fs:
        setattr(os, name, _cutting(name))


def remove_cuts():
    builtins.open = _open
    for name in _fs:
        setattr(os, name, _fs[name])


def files_of(v):
    """The files of version v: sizes from a few bytes to a few KB, every byte depends on v."""
    out = []
    for i, (path, n) in enumerate((("common/__init__.py", 40), ("common/ver.py", 12), ("protocol/x.py", 700),
                                   ("light_pole/app.py", 2500), ("light_pole/curve.py", 900))):
        seed = ("%s:%d:" % (path, v)).encode()
        body = (seed * (n // len(seed) + 1))[:n]
        out.append((path, body))
    return out


def image_of(v):
    files = files_of(v)
    hdr = cbor.dumps([1, ROLE, v, MPY, 0, 1, 0, [[p, len(b), hashlib.sha256(b).digest()] for p, b in files]])
    return bytes([len(hdr) >> 8, len(hdr) & 0xFF]) + hdr + b"".join(b for _, b in files)


def offer(uid, img, v):
    return {"type": "update_offer", "uid": uid, "kind": codes.UK_APP, "role": ROLE, "fw": v, "mpy": MPY,
            "size": len(img), "sha": hashlib.sha256(img).digest()}


def boot(*versions):
    """A reset: RAM is gone, otaboot picks the slot again; which of `versions` runs."""
    os.chdir("/")
    otaboot.boot()
    return running(*versions)


def running(*versions):
    """The one of `versions` whose files the chosen slot holds completely; 0 for the factory
    files, -1 for anything else (a mix, a missing file)."""
    slot = os.getcwd() if os.getcwd() in ("/s1", "/s2") else None
    if slot is None:
        return 0  # the factory files in /lib
    for v in versions:
        if _slot_is(slot, v):
            return v
    return -1


def _slot_is(slot, v):
    for path, body in files_of(v):
        try:
            with _open(slot + "/" + path, "rb") as f:
                if f.read() != body:
                    return False
        except OSError:
            return False
    return True


def update(uid, v, img):
    """One update from wherever the flash stands: offer, chunks, commit, install, trial boot, confirm."""
    u = ota_state.Updater(ROLE)
    r = ota_offer.offer(u, offer(uid, img, v), 0)
    assert r[1] in (codes.US_RECEIVING, codes.US_STAGED, codes.US_TRIAL, codes.US_VALID), r
    if r[1] in (codes.US_RECEIVING, codes.US_STAGED):
        off = r[2] if r[1] == codes.US_RECEIVING else len(img)
        while off < len(img):
            nack, _ = ota_rx.chunk(u, {"uid": uid, "off": off, "data": img[off:off + codes.UPD_CHUNK_MAX]})
            assert nack is None, nack
            off = min(off + codes.UPD_CHUNK_MAX, len(img))
        assert u.st is not None and u.st.get("ok"), "not staged"
        FLASH.commit_at = FLASH.ops
        assert ota.commit(u, {"uid": uid}) is None
        assert ota_inst.check(u) == codes.UR_NONE
        for _ in ota_inst.install(u):
            pass
    os.chdir("/")
    otaboot.boot()
    ota_trial.confirm(ota_state.Updater(ROLE), True)


def finish(uid, v, img):
    """After a cut: boot, then carry the update through; returns the version that boots at the end."""
    for _ in range(4):
        got = boot(v - 1, v)
        if got == v:
            ota_trial.confirm(ota_state.Updater(ROLE), True)
            if otaboot.read()["st"] == codes.US_VALID:
                return boot(v - 1, v)
            continue
        update(uid, v, img)
    return running(v - 1, v)


def staged(uid, v):
    """An Updater holding version v's image, offered and received whole (not committed)."""
    u = ota_state.Updater(ROLE)
    img = image_of(v)
    ota_offer.offer(u, offer(uid, img, v), 0)
    off = 0
    while off < len(img):
        ota_rx.chunk(u, {"uid": uid, "off": off, "data": img[off:off + codes.UPD_CHUNK_MAX]})
        off += codes.UPD_CHUNK_MAX
    return u


def wipe():
    os.chdir("/")
    for d in ("s1", "s2", "ota"):
        ota_inst.rmtree("/" + d)


def test_two_hundred_power_cuts_end_on_the_old_or_the_new_version():
    wipe()
    random.seed(11)
    # how many flash writes one whole update takes
    FLASH.ops, FLASH.cut_at = 0, None
    install_cuts()
    try:
        update(1, 1, image_of(1))
    finally:
        remove_cuts()
    assert boot(1) == 1
    total, commit = FLASH.ops, FLASH.commit_at
    assert total > 40 and 0 < commit < total, (commit, total)
    seen = {"old": 0, "new": 0}
    v = 1
    # every write from the commit on (install, switch, trial boot, confirm), then CUTS at random anywhere
    plan = list(range(commit, total + 1)) + [1 + random.getrandbits(16) % total for _ in range(CUTS)]
    for i, at in enumerate(plan):
        v += 1
        img = image_of(v)
        FLASH.ops, FLASH.cut_at = 0, at
        install_cuts()
        try:
            update(1000 + v, v, img)
            cut = False
        except PowerCut:
            cut = True
        finally:
            remove_cuts()
        got = boot(v - 1, v)
        assert got in (v - 1, v), "cut %d at write %d of %d: version %d runs, not %d or %d" % (
            i, FLASH.cut_at, total, got, v - 1, v)
        seen["old" if got == v - 1 else "new"] += 1
        assert cut or got == v
        assert finish(1000 + v, v, img) == v, "cut %d: the update did not complete after the cut" % i
        p = otaboot.read()
        assert p["st"] == codes.US_VALID and p["try"] == 0 and p["fw"] == v
    assert seen["old"] > 20 and seen["new"] > 20, seen
    print("power cuts: %d (%d at random), ended on the old version %d, on the new %d, writes per update %d, "
          "commit from %d" % (len(plan), CUTS, seen["old"], seen["new"], total, commit))


def _stage(u, uid, img, v):
    ota_offer.offer(u, offer(uid, img, v), 0)
    off = 0
    while off < len(img):
        ota_rx.chunk(u, {"uid": uid, "off": off, "data": img[off:off + codes.UPD_CHUNK_MAX]})
        off += codes.UPD_CHUNK_MAX
    return u.report(uid)


def test_malformed_images_are_refused_at_commit_and_discarded():
    """Bad input (issue 11): whatever the header holds, the commit answers `image` and the
    staged bytes are gone; nothing else on flash changed."""
    wipe()
    good = image_of(5)
    n = good[0] << 8 | good[1]
    hdr = cbor.loads(good[2:2 + n])
    bad_fw = hdr[:2] + ["5"] + hdr[3:]
    files_swapped = hdr[:7] + [[hdr[7][1], hdr[7][0]] + hdr[7][2:]]
    evil_path = hdr[:7] + [[["../main.py"] + hdr[7][0][1:]] + hdr[7][1:]]
    body = good[2 + n:]

    def with_header(h, extra=b""):
        raw = cbor.dumps(h)
        return bytes([len(raw) >> 8, len(raw) & 0xFF]) + raw + body + extra

    for i, img in enumerate((b"\x00\x04\xff\xff\xff\xff" + body, b"\xff\xff" + good[2:], with_header(bad_fw),
                             with_header(files_swapped), with_header(evil_path), with_header(hdr, b"tail"))):
        u = ota_state.Updater(ROLE)
        assert _stage(u, 50 + i, img, 5)[1] == codes.US_STAGED, i
        assert ota.commit(u, {"uid": 50 + i}) is None
        assert ota_inst.check(u) == codes.UR_IMAGE, (i, u.why)
        assert ota_inst.refuse(u) == (50 + i, codes.US_REFUSED, 0, codes.UR_IMAGE)
        for p in (ota_state.STAGE, ota_state.IMAGE):
            try:
                os.stat(p)
                raise AssertionError("%s left behind (case %d)" % (p, i))
            except OSError:
                pass
    for d in ("/s1", "/s2"):
        try:
            os.stat(d)
            raise AssertionError(d + " was written")
        except OSError:
            pass


def test_a_cut_trial_still_counts_its_boots_and_rolls_back():
    """Cuts during the trial's own boots (before it could join) spend its boots: after
    TRIAL_BOOTS the previous slot runs again, and the outcome is rolled_back (trial)."""
    wipe()
    update(1, 1, image_of(1))
    assert boot(1) == 1
    u = staged(2, 2)
    assert ota.commit(u, {"uid": 2}) is None and ota_inst.check(u) == codes.UR_NONE
    for _ in ota_inst.install(u):
        pass
    busy = ota_offer.offer(ota_state.Updater(ROLE), offer(3, image_of(3), 3), 0)
    assert busy == (3, codes.US_REFUSED, 0, codes.UR_BUSY)  # no new offer while a trial runs
    assert [boot(1, 2) for _ in range(otaboot.TRIAL_BOOTS)] == [2] * otaboot.TRIAL_BOOTS
    assert boot(1, 2) == 1
    p = otaboot.read()
    assert (p["st"], p["why"], p["rep"], p["slot"]) == (codes.US_ROLLED_BACK, codes.UR_TRIAL, 1, "s1")
    r = ota_trial.confirm(ota_state.Updater(ROLE), True)
    assert r == (2, codes.US_ROLLED_BACK, 0, codes.UR_TRIAL)
    assert otaboot.read()["rep"] == 0


class _Boot:
    fast = 0

    def _save(self):
        pass


class _Session:
    events = ()

    def persist_events(self):
        pass


class _Dev:
    role = "light_pole"


class _Rt:
    """What common.runtime's out-of-memory path reads of a Runtime."""

    def __init__(self, safe):
        self.safe, self.app, self.app_cls, self.dev = safe, None, None, _Dev()
        self.boot, self.session, self._rtc = _Boot(), _Session(), {"safe_boots": 3}
        self.logs, self.events = [], []

    def log(self, text, keep=False):
        self.logs.append(text)

    def event(self, msg, durable=False, on_ack=None):
        self.events.append(msg)

    def send(self, msg):
        self.events.append(msg)


def _drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration:
        pass


def test_an_install_that_runs_out_of_memory_resets_and_is_not_left_installing():
    """A MemoryError while the files are written (the heap of a pole during an update is tight)
    ends as in the main loop: the fault reported and a reset in normal mode, the board goes on in
    safe mode; never an install task dead with `installing` still set, refusing every update."""
    import machine
    from common import ota
    wipe()
    update(1, 1, image_of(1))
    assert boot(1) == 1
    real = ota_inst.install

    def out_of_memory(u):
        yield "first file"
        raise MemoryError("memory allocation failed, allocating 4096 bytes")

    for safe in (False, True):
        u = staged(2, 2)
        assert ota.commit(u, {"uid": 2}) is None
        u.installing = True
        rt = _Rt(safe)
        from common import ota_inst as inst  # the module installing() imports (the last round forgot it)
        inst.install = out_of_memory
        try:
            _drive(ota.installing(rt, u))
            reset = False
        except machine.Reset:
            reset = True
        finally:
            inst.install = real
        assert u.installing is False
        assert reset is (not safe), (safe, rt.logs)
        assert [e["code"] for e in rt.events if e.get("type") == "fault"] == [codes.F_MEMORY]
        assert boot(1, 2) == 1  # the pointer was not switched: the old version runs


class _App:
    seen = None

    def stop(self):
        import sys
        self.seen = "common.ota_inst" in sys.modules


def test_the_app_leaves_the_heap_before_the_install_code_loads():
    """On a chip an allocation fails where it happens: the App and common.ota_inst together do not
    fit a locker over Wi-Fi, so the App is set aside (its stop() called, its code forgotten) before
    that module is imported."""
    import sys
    from common import forget
    wipe()
    update(1, 1, image_of(1))
    assert boot(1) == 1
    u = staged(2, 2)
    assert ota.commit(u, {"uid": 2}) is None
    u.installing = True
    rt = _Rt(False)
    app = rt.app = _App()
    rt.app_cls = _App
    forget("common.ota_inst")
    job = ota.installing(rt, u)
    next(job)  # the first file checked
    assert app.seen is False and rt.app is None and rt.app_cls is None
    assert "common.ota_inst" in sys.modules
    assert rt.logs == ["update 2: checking and installing with the App set aside"]
    job.close()
