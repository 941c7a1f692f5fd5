"""Software updates on a virtual board (issue 11, SPEC 10): the unmodified firmware in genuine
MicroPython takes an app image from a test peer over its link UART: offer, chunks, commit,
the trial boot of the new version, valid; resume after a disconnect and a power cut;
refusals that change nothing; a trial that crashes rolls back by itself.
Images are built with protocol.bundle.build_image from the real firmware files compiled
by mpy-cross, as park-device deploy compiles them."""
from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

import pytest

from protocol import codes
from protocol.bundle import ImageHeader, build_image
from sim.testbed import Peer, deploy_tree, vboard_available

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.skipif(not vboard_available(), reason="virtual boards not installed: run ./dev setup"),
]

ROOT = Path(__file__).resolve().parents[2]
KID = b"l001"
PINS = {"lamp": 25, "motion": 27, "ambient": 34}
APP = {"base": 20}
OLD_FW = 10000
MPY = 6
_BUILDS: dict = {}


def firmware_files(tmp: Path, fw: int, crash: bool = False, check: bool = True) -> dict[str, bytes]:
    """light_pole's slot files (paths relative to the slot) at version fw, compiled by mpy-cross;
    crash: its app module raises at import (a release that cannot start); check False: its
    self-test fails."""
    key = (fw, crash, check)
    if key not in _BUILDS:
        from park_device.build import build
        src = tmp / f"src-{fw}-{int(crash)}-{int(check)}"
        shutil.copytree(ROOT / "firmware", src / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
        app = src / "firmware" / "light_pole" / "app.py"
        text = app.read_text().replace("    FW = 10000  # 1.0.0", f"    FW = {fw}")
        assert f"FW = {fw}" in text
        if crash:
            text += "\nraise RuntimeError('this release cannot start')\n"
        if not check:
            text = text.replace("    def selftest(self):\n", "    def selftest(self):\n        return [('release', False, 'broken')]\n")
            assert "'broken'" in text
        app.write_text(text)
        arts = build("light_pole", fw_root=src / "firmware", proto_root=ROOT / "protocol")
        _BUILDS[key] = {a.dest[len("/lib/"):]: a.data for a in arts if a.dest.startswith("/lib/")}
    return _BUILDS[key]


def app_image(tmp: Path, fw: int, role: int = codes.ROLE_LIGHT_POLE, mpy: int = MPY, floor: int = 0,
              min_runtime: int = 12000, schema: int = 1, crash: bool = False, check: bool = True) -> bytes:
    files = firmware_files(tmp, fw, crash, check)
    hdr = ImageHeader(role, fw, mpy, min_runtime, schema, floor, [(p, 0, b"") for p in sorted(files)])
    return build_image(hdr, files)


def offer(uid: int, img: bytes, fw: int, **kw) -> dict:
    return dict({"type": "update_offer", "uid": uid, "kind": codes.UK_APP, "role": codes.ROLE_LIGHT_POLE,
                 "fw": fw, "mpy": MPY, "size": len(img), "sha": hashlib.sha256(img).digest()}, **kw)


@contextlib.contextmanager
def board(tmp_path, name="flash", rt=None, **kw):
    from sim import vboard
    img = deploy_tree(tmp_path / f"img-{name}", "light_pole", KID.decode(), PINS, APP, dict({"stable_s": 5}, **(rt or {})))
    # under the pole's Wi-Fi budget (89,000 B), with 12 chunks in flight: no allocation refused
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=tmp_path / name, name="l001", console_pty=False, **kw) as b:
        p = Peer(b, KID)
        try:
            yield b, p
            assert b.heap_refusals() == []
        finally:
            p.close()


def updates(p) -> list[tuple[int, int, int, int]]:
    return [(m["uid"], m["state"], m["off"], m["reason"]) for m in p.of("update")]


def ask(p, msg, ms: int = 40) -> tuple[dict, tuple | None]:
    """Send one update message; its ack/nack and the last `update` within ms after it (or None)."""
    n = len(p.of("update"))
    r = p.command(msg)
    p.run(ms, 20)
    new = updates(p)[n:]
    return r, (new[-1] if new else None)


def stream(p, uid: int, img: bytes, start: int = 0, stop: int | None = None, window: int = 12) -> None:
    """Send the image's chunks from `start` in windows; every one must be acked."""
    stop = len(img) if stop is None else stop
    off = start
    while off < stop:
        seqs = []
        for _ in range(window):
            if off >= stop:
                break
            seqs.append(p.send({"type": "update_chunk", "uid": uid, "off": off,
                                "data": img[off:off + codes.UPD_CHUNK_MAX]}))
            off += codes.UPD_CHUNK_MAX
        spent = 0
        while not all(s in p.replies for s in seqs):
            assert spent < 5000, "chunks not answered"
            p.run(20, 20)
            spent += 20
        for s in seqs:
            r = p.replies.pop(s)
            assert r["type"] == "ack", r


def files_on(b, slot: str) -> dict[str, bytes]:
    root = b.sync_flash() / slot
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def hello_fws(p) -> list[int]:
    return [m["fw"] for m in p.of("hello")]


def test_offer_chunks_commit_trial_valid(tmp_path):
    new = app_image(tmp_path, 10101, floor=10100)
    with board(tmp_path) as (b, p):
        p.connect()
        assert hello_fws(p) == [OLD_FW]
        r, u = ask(p, offer(7, new, 10101))
        assert r["type"] == "ack" and u == (7, codes.US_RECEIVING, 0, 0)
        stream(p, 7, new)
        assert updates(p)[-1] == (7, codes.US_STAGED, len(new), 0)
        p.clear()
        r, _ = ask(p, {"type": "update_commit", "uid": 7})
        assert r["type"] == "ack"
        p.run(3000)
        assert b.boots == 2  # rebooted into the trial
        log = b.log()
        aside = log.index("update 7: checking and installing with the App set aside")
        assert aside < log.index("update 7: switched, rebooting into the trial")
        p.connect()
        p.run(500)
        assert hello_fws(p) == [10101]  # the new version joined
        assert (7, codes.US_VALID, 0, 0) in updates(p)
        assert files_on(b, "s1") == firmware_files(tmp_path, 10101)
        ptr = __import__("json").loads(b.read_flash("/ota/boot.json"))
        assert ptr["slot"] == "s1" and ptr["try"] == 0 and ptr["floor"] == 10100
        assert not (b.flash_path / "ota" / "stage.bin").exists()
        # valid survives reboots; an offer below the floor is refused
        b.power_cycle()
        p.clear()
        p.connect()
        assert hello_fws(p) == [10101]
        r, u = ask(p, offer(8, new, 10099))
        assert r["type"] == "ack" and u == (8, codes.US_REFUSED, 0, codes.UR_DOWNGRADE)
        assert not b.events("fw_crash")


def test_resume_after_disconnect_and_power_cut(tmp_path):
    new = app_image(tmp_path, 10102)
    quarter = len(new) // 4 // codes.UPD_CHUNK_MAX * codes.UPD_CHUNK_MAX
    half = 2 * quarter
    with board(tmp_path) as (b, p):
        p.connect()
        ask(p, offer(21, new, 10102))
        stream(p, 21, new, 0, quarter)
        b.advance(120_000)                          # the gateway goes quiet mid-transfer (nothing pumped)
        p.pump()
        r, u = ask(p, offer(21, new, 10102))        # the same uid again: where it stands
        assert u == (21, codes.US_RECEIVING, quarter, 0)
        stream(p, 21, new, quarter, half)
        b.power_cycle()                             # RAM lost, flash kept
        p.clear()
        p.connect()
        assert hello_fws(p) == [OLD_FW]
        r, u = ask(p, offer(21, new, 10102))
        assert u == (21, codes.US_RECEIVING, half, 0)   # the offset is what is on flash
        stream(p, 21, new, half)
        assert updates(p)[-1] == (21, codes.US_STAGED, len(new), 0)
        p.clear()
        ask(p, {"type": "update_commit", "uid": 21})
        p.run(3000)
        p.connect()
        p.run(500)
        assert hello_fws(p) == [10102] and (21, codes.US_VALID, 0, 0) in updates(p)


def unchanged(b, before: dict[str, bytes]) -> None:
    after = {str(f.relative_to(b.sync_flash())): f.read_bytes() for f in b.flash_path.rglob("*")
             if f.is_file() and f.parts[-2] != "state"}
    assert after == before


def snapshot(b) -> dict[str, bytes]:
    return {str(f.relative_to(b.sync_flash())): f.read_bytes() for f in b.flash_path.rglob("*")
            if f.is_file() and f.parts[-2] != "state"}


def test_refusals_leave_the_device_unchanged(tmp_path):
    new = app_image(tmp_path, 10103)
    with board(tmp_path) as (b, p):
        p.connect()
        before = snapshot(b)
        for kw, why in (({"role": codes.ROLE_LOCKER}, codes.UR_ROLE), ({"mpy": 5}, codes.UR_MPY),
                        ({"kind": codes.UK_RUNTIME}, codes.UR_KIND), ({"size": 4_000_000}, None)):
            r, u = ask(p, offer(30, new, 10103, **kw))
            assert r["type"] == "ack"
            if why is not None:
                assert u == (30, codes.US_REFUSED, 0, why)
                unchanged(b, before)
        ask(p, {"type": "update_abort", "uid": 30})
        # a chunk for another uid, a chunk at the wrong offset
        ask(p, offer(31, new, 10103))
        r, u = ask(p, {"type": "update_chunk", "uid": 99, "off": 0, "data": new[:10]})
        assert (r["type"], r["code"], r["field"]) == ("nack", codes.E_NOT_READY, "uid")
        stream(p, 31, new, 0, 4 * codes.UPD_CHUNK_MAX)
        r, u = ask(p, {"type": "update_chunk", "uid": 31, "off": 6 * codes.UPD_CHUNK_MAX, "data": new[:10]})
        assert (r["type"], r["code"], r["field"]) == ("nack", codes.E_BAD_VALUE, "off")
        assert u == (31, codes.US_RECEIVING, 4 * codes.UPD_CHUNK_MAX, 0)
        # abort discards what is staged
        r, u = ask(p, {"type": "update_abort", "uid": 31})
        assert r["type"] == "ack" and u == (31, codes.US_ABORTED, 0, 0)
        unchanged(b, before)
        # a corrupted image: the digest at the last byte
        bad = bytearray(new)
        bad[len(bad) // 2] ^= 1
        r, u = ask(p, offer(32, new, 10103))
        stream(p, 32, bytes(bad))
        assert updates(p)[-1] == (32, codes.US_REFUSED, 0, codes.UR_DIGEST)
        unchanged(b, before)
        # an image whose header does not fit the device: refused at commit
        for uid, img, why in ((33, app_image(tmp_path, 10103, role=codes.ROLE_LOCKER), codes.UR_ROLE),
                              (34, app_image(tmp_path, 10103, min_runtime=999999), codes.UR_RUNTIME)):
            ask(p, offer(uid, img, 10103))
            stream(p, uid, img)
            r, u = ask(p, {"type": "update_commit", "uid": uid}, ms=1000)  # checked file by file after the ack
            assert r["type"] == "ack" and u == (uid, codes.US_REFUSED, 0, why)
            unchanged(b, before)
            # checked with the App set aside, which runs again: it takes role commands
            log = b.log()
            refused = log.index("update %d: refused at commit, reason %d" % (uid, why))
            assert log[refused - 1] == "update %d: checking and installing with the App set aside" % uid
            assert "the App runs again" in log[refused:]
            assert p.command({"type": "prelight", "level": 50, "hold": 10, "hops": 1})["type"] == "ack"
        p.run(2000)
        assert hello_fws(p) == [OLD_FW] and b.boots == 1


@pytest.mark.parametrize("safe_boots", [5, 2])
def test_a_trial_that_crashes_at_import_rolls_back_by_itself(tmp_path, safe_boots):
    """safe_boots 2: the third trial boot is in safe mode, where a failing boot would stay in
    the console; a trial resets instead, so otaboot can switch back."""
    bad = app_image(tmp_path, 10104, crash=True)
    with board(tmp_path, rt={"safe_boots": safe_boots}) as (b, p):
        p.connect()
        ask(p, offer(41, bad, 10104))
        stream(p, 41, bad)
        p.clear()
        ask(p, {"type": "update_commit", "uid": 41})
        p.run(3000)                                  # the trial boots crash; after 3 the old slot runs
        p.connect()
        p.run(500)
        assert set(hello_fws(p)) == {OLD_FW}
        assert (41, codes.US_ROLLED_BACK, 0, codes.UR_TRIAL) in updates(p)
        ptr = __import__("json").loads(b.read_flash("/ota/boot.json"))
        assert ptr["slot"] == "" and ptr["try"] == 0
        assert b.boots >= 5
        # the failed uid is remembered; a new offer is taken
        r, u = ask(p, offer(41, bad, 10104))
        assert u == (41, codes.US_ROLLED_BACK, 0, codes.UR_TRIAL)


OTA_TABLE = '{"ota": 2, "size": 262144}'


def runtime_offer(uid: int, img: bytes, fw: int = 12800) -> dict:
    return offer(uid, img, fw, kind=codes.UK_RUNTIME)


def otadata(b) -> dict:
    return __import__("json").loads(b.read_flash("/_esp32/otadata.json"))


def test_runtime_image_into_the_next_ota_partition_confirmed(tmp_path):
    """kind 1 behind CAP_OTA_IMAGE: block by block into ota_1, set_boot, the trial marks it valid."""
    rt_img = bytes((i * 7 + 3) & 0xFF for i in range(10_000))
    with board(tmp_path) as (b, p):
        p.connect()
        assert p.of("hello")[0]["caps"] & codes.CAP_OTA_IMAGE == 0      # no OTA partitions: no capability
    with board(tmp_path, name="ota") as (b, p):
        b.write_flash("/_esp32/table.json", OTA_TABLE)
        b.power_cycle()
        p.connect()
        assert p.of("hello")[-1]["caps"] & codes.CAP_OTA_IMAGE
        assert otadata(b)["running"] == "ota_0"
        r, u = ask(p, runtime_offer(51, rt_img, 12800))
        assert u == (51, codes.US_RECEIVING, 0, 0)
        stream(p, 51, rt_img, 0, 5 * codes.UPD_CHUNK_MAX)
        b.power_cycle()                                   # resumes at the last whole block on flash
        p.clear()
        p.connect()
        r, u = ask(p, runtime_offer(51, rt_img, 12800))
        assert u == (51, codes.US_RECEIVING, 0, 0)        # 960 bytes: no whole 4096-byte block yet
        stream(p, 51, rt_img, 0, 24 * codes.UPD_CHUNK_MAX)
        b.power_cycle()
        p.clear()
        p.connect()
        r, u = ask(p, runtime_offer(51, rt_img, 12800))
        assert u == (51, codes.US_RECEIVING, 4096, 0)
        stream(p, 51, rt_img, 4096)
        assert updates(p)[-1] == (51, codes.US_STAGED, len(rt_img), 0)
        p.clear()
        ask(p, {"type": "update_commit", "uid": 51})
        p.run(3000)
        p.connect()
        p.run(500)
        assert (51, codes.US_VALID, 0, 0) in updates(p)
        od = otadata(b)
        assert od["running"] == "ota_1" and od["states"]["ota_1"] == "valid"
        assert b.read_flash("/_esp32/ota_1.bin")[:len(rt_img)] == rt_img
        b.power_cycle()                                   # confirmed: stays on ota_1
        assert otadata(b)["running"] == "ota_1"


def test_runtime_image_not_confirmed_is_rolled_back_by_the_bootloader(tmp_path):
    rt_img = bytes(range(256)) * 20
    with board(tmp_path) as (b, p):
        b.write_flash("/_esp32/table.json", OTA_TABLE)
        b.power_cycle()
        p.connect()
        ask(p, runtime_offer(52, rt_img))
        stream(p, 52, rt_img)
        p.welcome = False                                 # the trial never reaches its gateway
        p.clear()
        ask(p, {"type": "update_commit", "uid": 52})
        p.run(3000)
        assert otadata(b)["running"] == "ota_1" and otadata(b)["states"]["ota_1"] == "pending"
        b.power_cycle()                                   # reset before it was marked valid
        assert otadata(b)["running"] == "ota_0" and otadata(b)["states"]["ota_1"] == "aborted"
        p.welcome = True
        p.clear()
        p.connect()
        p.run(500)
        assert (52, codes.US_ROLLED_BACK, 0, codes.UR_TRIAL) in updates(p)


def test_a_trial_that_joins_but_fails_its_self_check_rolls_back_at_once(tmp_path):
    bad = app_image(tmp_path, 10105, check=False)
    with board(tmp_path) as (b, p):
        p.connect()
        ask(p, offer(61, bad, 10105))
        stream(p, 61, bad)
        p.clear()
        ask(p, {"type": "update_commit", "uid": 61})
        p.run(3000)
        p.connect()
        p.run(500)
        assert hello_fws(p)[0] == 10105 and hello_fws(p)[-1] == OLD_FW   # joined, failed, went back
        assert (61, codes.US_ROLLED_BACK, 0, codes.UR_TRIAL) in updates(p)
        assert (61, codes.US_VALID, 0, 0) not in updates(p)
        ptr = __import__("json").loads(b.read_flash("/ota/boot.json"))
        assert ptr["slot"] == "" and ptr.get("floor", 0) == 0
        assert any("failed its check" in ln for ln in b.log())


def test_a_sleeping_bin_resumes_after_its_deep_sleep(tmp_path):
    """A container sensor sleeps between wakes: what it received before a deep sleep is on flash,
    and the next wake's answer to the same offer says where to go on."""
    from sim import vboard
    pins = {"trig": 5, "echo": 18, "temp": 34, "batt": 35}
    img_dir = deploy_tree(tmp_path / "img", "container_sensor", "c001", pins, {"depth_mm": 1200, "top_mm": 250},
                          {"batt_div": 2000, "linger_ms": 3000})
    blob = bytes((i * 13) & 0xFF for i in range(8000))
    msg = dict(offer(71, blob, 10200), role=codes.ROLE_CONTAINER_SENSOR)
    with vboard.VirtualBoard(deploy_dir=img_dir, flash_dir=tmp_path / "flash", ultrasonic={"trig": 5, "echo": 18},
                             distance_mm=725, name="c001", console_pty=False) as b:
        b.set_adc(34, uv=700000)
        b.set_adc(35, uv=3900 * 1000 // 2)
        p = Peer(b, b"c001")
        try:
            p.connect()
            r, u = ask(p, msg)
            assert u == (71, codes.US_RECEIVING, 0, 0)
            stream(p, 71, blob, 0, 10 * codes.UPD_CHUNK_MAX)
            sleeps = len(b.events("deepsleep"))
            p.run(10_000)
            assert len(b.events("deepsleep")) > sleeps          # it went to sleep mid-transfer
            b.set_distance_mm(400)                               # near full: the next wake has an alarm to send
            p.clear()
            p.after_welcome.append(msg)                          # what the gateway queued for the sleeper
            spent = 0
            while not p.of("hello"):
                assert spent < 1_000_000, "the bin did not wake"
                p.run(1000, step=1000)
                spent += 1000
            p.run(3000, step=100)
            assert p.of("hello") and b.events("boot")[-1]["cause"] == "deepsleep"
            assert (71, codes.US_RECEIVING, 10 * codes.UPD_CHUNK_MAX, 0) in updates(p), ([m["type"] for s, m in p.up], b.log()[-15:])
            assert b.heap_refusals() == []  # under the bin's BLE budget
        finally:
            p.close()
