#!/usr/bin/env python3
"""Device heap during a software update (issue 11): the peak Python heap of a light pole on a
virtual board (--role locker: a two-compartment locker) while it takes an app image (offer, chunks, commit, install into the other slot)
and boots the new version, against the ESP32 heap budget with its radio (Wi-Fi). The pole talks
over its park link, the firmware's Wi-Fi transport on the virtual radio to a test peer on
loopback (--link uart: the bench's cable, without the transport's heap).

The firmware is what `park-device deploy` writes (.mpy from mpy-cross); the image is built
with protocol.bundle.build_image from the same files at a new version. The board runs in heap
mode "live" (a collection before each sample). Reported, as a chip would hold them (the
simulator's own Python, its `machine`, `esp32` and clock, subtracted: bench_footprint's
sim_overhead): the live heap before the update, the peak while chunks arrive, the peak from
the commit to the reboot, the peak of the new version's first minute and of its next boot's
(nothing to confirm: the yardstick for the first), and what the update adds to the idle heap,
against the budget. The WebAssembly port keeps a step's garbage alive until it returns to the
JavaScript event loop, so a sample can count garbage of the step that preceded it: the peaks
are upper bounds. What each phase itself holds is measured apart (phase_costs): the same .mpy
files in a plain VM, each figure taken after a return to the event loop, so only live data
counts. --enforce runs with the budget (MemoryError past it).

    python -m benchmarks.bench_update_device
    python -m benchmarks.bench_update_device --json /tmp/update-heap.json
    python -m benchmarks.bench_update_device --enforce [--link uart] [--squeeze KIB]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from protocol import codes, messages
from protocol.bundle import ImageHeader, build_image
from sim import testbed

ROOT = Path(__file__).resolve().parents[1]
# per role: its id, pins, app config, and the line of its app.py that holds FW (the bench's new version)
DEVICES = {
    "light_pole": (b"l001", {"lamp": 25, "motion": 27, "ambient": 34}, {"base": 20}, "    FW = 10000  # 1.0.0"),
    "locker": (b"k001", {"lock1": 12, "door1": 13, "lock2": 14, "door2": 15, "reader": {"uart": 2, "tx": 17, "rx": 16}},
               {"comps": 2, "open_max_s": 120}, "    FW = 10000\n"),
}
RADIO = "wifi"
WIFI = {"kind": "wifi", "uart": -1, "ssid": "stadtpark", "psk": "bench-only-passphrase", "host": "10.0.0.1",
        "port": 4710, "backoff_max": 1}  # the virtual radio's gateway address, mapped to the peer's loopback port


def artifacts(work: Path, fw: int | None, role: str = "light_pole") -> dict[str, bytes]:
    """The role's firmware as park-device deploy builds it, at version fw (None: as in the tree)."""
    from park_device.build import build
    src = work / f"fw-{fw}"
    shutil.copytree(ROOT / "firmware", src, ignore=shutil.ignore_patterns("__pycache__"))
    if fw is not None:
        app = src / role / "app.py"
        line = DEVICES[role][3]
        text = app.read_text()
        assert line in text, f"{app}: no {line.strip()!r} to set the version"
        app.write_text(text.replace(line, line.replace("10000", str(fw)).replace("  # 1.0.0", ""), 1))
    return {a.dest: a.data for a in build(role, fw_root=src, proto_root=ROOT / "protocol")}


def run(work: Path, a_window: int = 1, enforce: bool = False, link: str = "wifi", squeeze: int = 0,
        role: str = "light_pole") -> dict:
    """link "wifi": the pole's park link (the firmware's Wi-Fi transport over the virtual radio to a
    TCP peer on loopback); "uart": the bench's cable. squeeze: bytes taken off the enforced budget
    (the update's margin: it completes with that much less heap)."""
    from sim import vboard
    kid, pins, app, _ = DEVICES[role]
    role_id = messages.ROLE_IDS[role]
    old = artifacts(work, None, role)
    new = artifacts(work, 10001, role)
    files = {d[len("/lib/"):]: b for d, b in new.items() if d.startswith("/lib/")}
    img = build_image(ImageHeader(role_id, 10001, 6, 12000, 1, 0, [(p, 0, b"") for p in sorted(files)]),
                      files)
    tree = work / "img"
    for dest, data in old.items():
        f = tree / dest.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    port = testbed.TcpServerPort() if link == "wifi" else None
    if port is not None:
        lcfg = WIFI
    else:
        lcfg = {"uart": 1, "baud": 115200, "tx": 17, "rx": 16}
    cfg = {"id": kid.decode(), "site": "stadtpark", "role": role, "link": dict(lcfg, hello_max=2),
           "rt": {"wdt_ms": 8000}, "pins": pins, "app": app}
    (tree / "config.json").write_text(json.dumps(cfg))
    (tree / "key.bin").write_bytes(testbed.KEY)
    if role == "locker":
        (tree / "booking.key").write_bytes(bytes(range(100, 132)))  # the city's booking key (a bench value)
    budget = vboard.esp32_heap_budget(RADIO)
    out = {"role": role, "radio": RADIO, "link": link, "budget": budget, "squeeze": squeeze,
           "image_bytes": len(img), "files": len(files), "window": a_window}
    t0 = time.monotonic()
    from benchmarks.bench_footprint import UNBOUNDED, sim_overhead  # UNBOUNDED: the radio's modules loaded, as subtracted
    out["sim_overhead"] = sim_overhead(work)
    out["phases"] = phase_costs(work, img, len(files), role)
    with vboard.VirtualBoard(deploy_dir=tree, flash_dir=work / "flash", name=kid.decode(), console_pty=False,
                             heap_mode="live", heap_budget=budget - squeeze if enforce else UNBOUNDED,
                             record_wdt_feeds=False,
                             wifi={"ssid": WIFI["ssid"], "psk": WIFI["psk"], "gateway": port.address} if port else None) as b:
        p = testbed.Peer(b, kid, port=port)
        try:
            p.connect()
            p.run(5000)
            out["before"] = b.gc_high_water()
            b.reset_gc_high_water()
            uid = 1
            p.command({"type": "update_offer", "uid": uid, "kind": codes.UK_APP, "role": role_id,
                       "fw": 10001, "mpy": 6, "size": len(img), "sha": hashlib.sha256(img).digest()})
            off = 0
            while off < len(img):
                seqs = []
                for _ in range(a_window):
                    if off >= len(img):
                        break
                    seqs.append(p.send({"type": "update_chunk", "uid": uid, "off": off,
                                        "data": img[off:off + codes.UPD_CHUNK_MAX]}))
                    off += codes.UPD_CHUNK_MAX
                spent = 0
                while not all(s in p.replies for s in seqs):
                    if spent > 10_000 or b.heap_refusals():
                        raise SystemExit("chunks at %d not answered (MemoryErrors %s): %s"
                                         % (off, b.heap_refusals(), "\n".join(b.log()[-8:])))
                    p.run(20, 20)
                    spent += 20
            p.run(200)
            out["transfer_peak"] = b.gc_high_water()
            assert p.of("update")[-1]["state"] == codes.US_STAGED, p.of("update")[-1]
            b.reset_gc_high_water()
            boots = b.boots
            p.clear()
            p.send({"type": "update_commit", "uid": uid})
            peak = 0
            for _ in range(3000):
                if b.boots > boots:
                    break
                p.run(20, 20)
                peak = max(peak, b.gc_high_water())
            out["commit_peak"] = peak
            b.reset_gc_high_water()
            p.connect()
            p.run(60_000, step=500)
            out["new_version_peak"] = b.gc_high_water()
            out["new_fw"] = p.of("hello")[-1]["fw"]
            out["valid"] = any(m["state"] == codes.US_VALID for m in p.of("update"))
            b.reset_gc_high_water()
            b.reset()  # the same version again, nothing to confirm: the yardstick for the trial's first minute
            p.connect()
            p.run(60_000, step=500)
            out["normal_boot_peak"] = b.gc_high_water()
            out["refusals"] = b.heap_refusals()  # one per boot at most: the first MemoryError of each
            out["memory_errors"] = len(out["refusals"])
            if not out["valid"]:
                out["log"] = b.log()[-30:]
        finally:
            p.close()
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


# What each phase holds, measured in a plain MicroPython VM on the same .mpy files: the pole's boot
# modules imported first, then the update driven through common.ota's phases. Every figure is the
# live heap after a return to the event loop (bench_footprint's _LIVE) minus the same before the
# update: what a chip's collector would find, without the WebAssembly port's garbage of the step.
_PHASES = """
import gc, sys, machine, asyncio, json, hashlib
import common.start, common.runtime
__import__(ROLE_NAME + ".app")
from common import forget
IMG = "/vm/img.bin"
with open(IMG, "rb") as f:
    f.seek(0, 2)
    N = f.tell()
async def mark(what):
    print("@@", what, await _live() - base)
def offer():
    f = open(IMG, "rb")
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b[:n])
    f.close()
    return {"type": "update_offer", "uid": 1, "kind": 0, "role": ROLE, "fw": FW, "mpy": sys.implementation._mpy & 0xFF,
            "size": N, "sha": h.digest()}
m = offer()
def chunk(off, f):
    f.seek(off)
    return {"type": "update_chunk", "uid": 1, "off": off, "data": f.read(CHUNK)}
base = await _live()
from common import ota, ota_state
u = ota_state.Updater(ROLE)
await mark("state")
from common import ota_offer
r = ota_offer.offer(u, m, 0)
forget("common.ota_offer")
del ota_offer
from common import ota_rx
await mark("receiving")
off = 0
f = open(IMG, "rb")
while off < N:
    if off >= N // 2 and off - CHUNK < N // 2:
        await mark("chunks")
    nack, r = ota_rx.chunk(u, chunk(off, f))
    assert nack is None, nack
    off += CHUNK
f.close()
await mark("staged")
forget("common.ota_rx")
del ota_rx, r
await mark("staged_idle")
from common import ota_inst
g = ota_inst.verify(u)
for i in range(FILES // 2):
    next(g)
await mark("verify")
for _ in g:
    pass
assert u.why == 0, u.why
g = ota_inst.install(u)
for i in range(FILES // 2):
    next(g)
await mark("install")
for _ in g:
    pass
await mark("switched")
forget("common.ota_inst", "common.ota_state", "common.ota", "common.otaboot")
del u, g, ota, ota_state, ota_inst
await mark("dropped")
from common import ota, ota_trial
r = ota_trial.confirm(ota_trial._Pointer(ota.boot_pointer()), True)
assert r[1] == 4, r
await mark("confirmed")
forget("common.ota_trial", "common.ota", "common.otaboot")
del ota, ota_trial, r
await mark("end")
"""


def phase_costs(work: Path, img: bytes, files: int, role: str = "light_pole") -> dict:
    """What each phase of an update holds (see _PHASES), in bytes, from a plain VM."""
    from benchmarks.bench_footprint import _LIVE, compile_tree
    from sim import mpvm
    tree = testbed.deploy_tree(work / "phases", role, DEVICES[role][0].decode(), {}, mpy=False)
    compile_tree(tree)
    (work / "img.bin").write_bytes(img)
    code = (_LIVE + f"ROLE = {messages.ROLE_IDS[role]}\nROLE_NAME = {role!r}\nFW = 10001\nCHUNK = {codes.UPD_CHUNK_MAX}\n"
            f"FILES = {files}\n" + _PHASES)
    r = mpvm.run(code=code, mounts={tree / "lib": "/lib", ROOT / "sim" / "fake_machine.py": "/vm/machine.py",
                                    work / "img.bin": "/vm/img.bin"}, paths=["/vm", "/lib"], timeout=300)
    r.check()
    return {ln.split()[1]: int(ln.split()[2]) for ln in r.stdout.splitlines() if ln.startswith("@@ ")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--window", type=int, default=1,
                    help="chunks sent before waiting for their acks (default 1: one chunk per link poll, the "
                         "pace a serial link's 256-byte UART buffer on an ESP32 allows)")
    ap.add_argument("--enforce", action="store_true", help="run with the ESP32 heap budget (MemoryError past it)")
    ap.add_argument("--role", choices=sorted(DEVICES), default="light_pole")
    ap.add_argument("--link", choices=("wifi", "uart"), default="wifi",
                    help="the pole's park link (default) or the bench's UART")
    ap.add_argument("--squeeze", type=float, default=0, metavar="KIB",
                    help="with --enforce: take this much off the budget (the update's margin)")
    a = ap.parse_args(argv)
    from sim import vboard
    least = vboard.esp32_heap_budget(vboard.ROLE_RADIO[a.role]) - 64 * 1024
    if not 0 <= a.squeeze * 1024 <= least:
        ap.error(f"--squeeze must be 0..{least / 1024:.1f} KiB: a board's budget is at least 64 KiB "
                 "(an ESP32's first heap area)")
    with tempfile.TemporaryDirectory(prefix="update-heap-") as d:
        r = run(Path(d), a.window, a.enforce, a.link, int(a.squeeze * 1024), a.role)
    kb = lambda n: f"{(n - r['sim_overhead']) / 1024:.1f} KiB"  # noqa: E731
    for k in ("before", "transfer_peak", "commit_peak", "new_version_peak", "normal_boot_peak"):
        r[k + "_chip"] = r[k] - r["sim_overhead"]
    r["update_adds"] = max(r["transfer_peak"], r["commit_peak"]) - r["before"]
    print(f"{r['role']} over {r['link']} (budget with {r['radio']}: {r['budget'] / 1024:.1f} KiB"
          f"{', %.1f KiB taken off' % (r['squeeze'] / 1024) if a.enforce and r['squeeze'] else ''}): "
          f"image {r['image_bytes']} B, "
          f"{r['files']} files, {r['window']} chunk(s) in flight; simulator's own heap "
          f"{r['sim_overhead'] / 1024:.1f} KiB subtracted")
    print(f"  live heap before the update   {kb(r['before'])}")
    print(f"  peak while chunks arrive      {kb(r['transfer_peak'])}")
    print(f"  peak commit -> reboot         {kb(r['commit_peak'])}")
    print(f"  peak, new version's 1st min   {kb(r['new_version_peak'])}  (fw {r['new_fw']}, valid {r['valid']})")
    print(f"  peak, its next boot's 1st min {kb(r['normal_boot_peak'])}  (nothing to confirm)")
    print(f"  the update adds               {r['update_adds'] / 1024:.1f} KiB")
    print(f"  boots with a MemoryError      {r['memory_errors']}   ({r['seconds']} s)" + "".join(
        f"\n    at {e['t_ms'] / 1000:.1f} s: {e['used']} B live, budget {e['budget']} B "
        f"({(e['used'] - e['budget']) / 1024:+.1f} KiB)" for e in r["refusals"]))
    ph = r["phases"]
    print("what the update holds, live after a return to the event loop (plain VM, the same .mpy files):")
    for k, what in (("state", "the state (common.ota, ota_state)"), ("chunks", "while chunks arrive (+ ota_rx)"),
                    ("staged_idle", "staged, waiting for the commit"), ("verify", "checking the files (ota_inst)"),
                    ("install", "writing them into the slot"), ("switched", "switched, before the reboot"),
                    ("dropped", "after it all left (qstrs)"), ("confirmed", "the trial's confirmation")):
        print(f"  {what:<36}{ph[k] / 1024:5.1f} KiB")
    if "log" in r:
        print("\n".join(r["log"]))
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    return 0 if r["valid"] and not r["memory_errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
