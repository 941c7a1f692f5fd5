#!/usr/bin/env python3
"""Firmware footprint: peak Python heap over a scripted day on a virtual board, and the
size of each firmware as .mpy files.

Each firmware (container_sensor, light_pole, locker) runs unmodified in genuine
MicroPython on a virtual board (sim/vboard) for --hours of virtual time, with a test
peer playing the gateway (welcome, acks, commands) and the day's inputs scripted below.
The heap is sampled at every await of the firmware's main loop (vboard heap_mode):

    live   gc.collect() before each sample: the live-data high-water mark
    alloc  no collect: live data plus garbage not yet collected (depends on GC timing)

Reported per firmware: heap after import + boot (code and tables held in RAM), the
day's peak, and peak minus boot (the working heap that remains when the modules are
frozen into the firmware image, where their bytecode lives in flash). --mpy deploys
mpy-cross output instead of .py sources (what `park-device deploy` would copy).

The virtual board holds Python of its own that a chip does not (the `machine` and radio
modules, the virtual clock: sim_overhead); "chip" figures subtract it. The budget bounds live
data, so each role's live heap after boot is measured too (boot_live: /main.py up to its loop),
collected only after a return to the event loop: before that the WebAssembly port keeps recent
garbage alive (see _LIVE). --enforce / --enforce-headroom run the day under the budget (or 75 %
of it): the board refuses only live data past it, so "exceeded 0 times" is the proof.

    python -m benchmarks.bench_footprint                  # a day each (24 h bin, 4 h mains), .mpy
    python -m benchmarks.bench_footprint --hours 2 --only container_sensor --src py
    python -m benchmarks.bench_footprint --imports        # heap and import time per module
    python -m benchmarks.bench_footprint --boot           # live heap after boot on a chip, per role
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from park_device.build import compile_modules
from park_device.errors import BuildFailed
from sim import testbed as fw

ROOT = Path(__file__).resolve().parents[1]

START = 1782000000  # 2026-06-21T00:06:40Z, a summer day: dusk ~19:30 UTC, dawn ~03:00 UTC
GOAL = 40 * 1024
ROLES = ("container_sensor", "light_pole", "locker")
RADIO = {"container_sensor": "ble", "light_pole": "wifi", "locker": "wifi"}  # each role's radio in the park
HEADROOM = 0.25  # of the budget still free at the day's peak (issue 10)
UNBOUNDED = 1 << 30
"""A budget never reached: the board loads the radio's modules before the firmware, as a board
with a budget does, so sim_overhead subtracts what the board holds."""


def compile_tree(img: Path) -> int:
    """Replace every /lib .py by its .mpy, compiled as `park-device deploy` compiles them
    (park_device.build.compile_modules); returns the total .mpy bytes."""
    pys = sorted((img / "lib").rglob("*.py"))
    mods = [("/" + py.with_suffix(".mpy").relative_to(img).as_posix(), py.read_text(), str(py)) for py in pys]
    try:
        mpys = compile_modules(mods, ROOT / "protocol")
    except BuildFailed as e:
        raise SystemExit(f"build failed: {e}") from None
    for py, (dest, _, _) in zip(pys, mods):
        (img / dest[1:]).write_bytes(mpys[dest])
        py.unlink()
    return sum(len(v) for v in mpys.values())


def place_code(img: Path, src: str) -> None:
    """The firmware's packages as `src` says: "mpy" compiled, "py" sources, "frozen" none on the file
    system (the board's VM has them frozen in: use_frozen_vm), so nothing falls back to /lib."""
    if src == "mpy":
        compile_tree(img)
    elif src == "frozen":
        shutil.rmtree(img / "lib")


def use_frozen_vm(vms: Path, role: str) -> None:
    """Boards started from here on run the role's frozen VM (sim.mpvm.frozen builds it)."""
    from sim.mpvm import frozen
    os.environ["PARK_VBOARD_VM"] = str(frozen.vm_for(vms, role))


def mpy_sizes(role: str) -> dict:
    """Bytes of .mpy per package of one firmware image, as park-device deploy compiles it."""
    with tempfile.TemporaryDirectory() as d:
        img = fw.deploy_tree(Path(d) / "img", role, "x001", {}, mpy=False)
        compile_tree(img)
        out = {pkg: sum(o.stat().st_size for o in (img / "lib" / pkg).glob("*.mpy")) for pkg in ("protocol", "common", role)}
        out["total"] = sum(out.values())
        return out


# The WebAssembly port's gc.collect() keeps garbage alive while the code that made it is still
# on the (JavaScript-driven) call stack: imports measured in one straight run look ~25 KiB
# heavier than they are. Each measurement therefore first returns to the event loop
# (`await asyncio.sleep_ms(0)`, which itself keeps ~35 B, see await_retention) and then collects.
_LIVE = "async def _live():\n    await asyncio.sleep_ms(0)\n    gc.collect()\n    return gc.mem_alloc()\n"


def import_roots(role: str) -> list:
    """The modules a boot imports (common.start pulls in the runtime, the session and the protocol;
    the runtime itself imports the boot code only when it is built)."""
    return ["common.start", "common.runtime", f"{role}.app"]


def import_cost(role: str, src: str) -> int:
    """Heap held after importing the firmware's modules (bytecode, tables, globals), measured
    in a plain MicroPython VM; `machine` is sim/fake_machine.py (imported before the baseline)."""
    from sim import mpvm
    fake = ROOT / "sim" / "fake_machine.py"
    with tempfile.TemporaryDirectory() as d:
        img = fw.deploy_tree(Path(d) / "img", role, "x001", {}, mpy=False)
        if src == "mpy":
            compile_tree(img)
        code = ("import gc, machine, asyncio, json\n" + _LIVE + "a = await _live()\n"
                f"import {', '.join(import_roots(role))}\nprint(await _live() - a)\n")
        r = mpvm.run(code=code, mounts={img / "lib": "/lib", fake: "/vm/machine.py"}, paths=["/vm", "/lib"])
        r.check()
        return int(r.stdout.split()[-1])


def _module_deps(lib: Path) -> dict:
    """Each module of a deployed image and the image's modules it imports at module level."""
    import ast
    mods = {}
    for py in sorted(lib.rglob("*.py")):
        parts = py.relative_to(lib).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = py
    deps = {}
    for name, py in mods.items():
        found = []
        stack = list(ast.parse(py.read_text()).body)
        while stack:
            n = stack.pop(0)
            if isinstance(n, ast.Import):
                found += [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom) and n.module:
                found += [n.module] + [f"{n.module}.{a.name}" for a in n.names]
            elif isinstance(n, (ast.Try, ast.If)):
                stack[:0] = n.body + getattr(n, "orelse", []) + [s for h in getattr(n, "handlers", []) for s in h.body]
        want = []
        for m in found:  # a package before its modules, as the VM imports them
            segs = m.split(".")
            want += [".".join(segs[:i]) for i in range(1, len(segs) + 1)]
        deps[name] = [m for m in dict.fromkeys(want) if m in mods and m != name]
    return deps


def _import_order(deps: dict, roots) -> list:
    order, seen = [], set()

    def visit(m):
        if m in seen:
            return
        seen.add(m)
        for d in deps[m]:
            visit(d)
        order.append(m)
    for r in roots:
        visit(r)
    return order


def import_table(role: str, src: str, repeat: int = 50, batches: int = 8) -> list:
    """Per module of the firmware, in import order with its dependencies imported first:
    the heap it holds after import (collected after a return to the event loop, see _LIVE) and
    its import time in the VM.

    The VM's clock ticks in milliseconds and the machine is shared: each module is re-imported
    `repeat` times per batch (its dependencies stay imported) and the fastest of `batches`
    batches counts, in microseconds per import. The heap column is lumpy: qstr pools grow by
    doubling and land on whichever module fills the last one, so compare sums, or one module
    across runs of the same order."""
    from sim import mpvm
    fake = ROOT / "sim" / "fake_machine.py"
    with tempfile.TemporaryDirectory() as d:
        img = fw.deploy_tree(Path(d) / "img", role, "x001", {}, mpy=False)
        order = _import_order(_module_deps(img / "lib"), import_roots(role))
        if src == "mpy":
            compile_tree(img)
        code = ("import gc, sys, time, machine, asyncio, json\n" + _LIVE +
                f"for m in {order!r}:\n"
                "    a = await _live()\n    __import__(m)\n"
                "    a = await _live() - a\n    keep = sys.modules[m]\n    best = None\n"
                f"    for b in range({batches}):\n"
                "        t = time.ticks_us()\n"
                f"        for i in range({repeat}):\n"
                "            del sys.modules[m]\n            __import__(m)\n"
                "        t = time.ticks_diff(time.ticks_us(), t)\n"
                "        best = t if best is None or t < best else best\n"
                "    sys.modules[m] = keep\n    gc.collect()\n    print('@@', m, a, best)\n")
        r = mpvm.run(code=code, mounts={img / "lib": "/lib", fake: "/vm/machine.py"}, paths=["/vm", "/lib"],
                     timeout=600)
        r.check()
    got = {ln.split()[1]: (int(ln.split()[2]), int(ln.split()[3])) for ln in r.stdout.splitlines()
           if ln.startswith("@@ ")}
    return [{"module": m, "heap": got[m][0], "us": got[m][1] / repeat} for m in order]


def print_import_table(role: str, src: str, rows: list) -> None:
    heap = sum(r["heap"] for r in rows)
    us = sum(r["us"] for r in rows)
    print(f"{role} imports ({src}): {heap} B held, {us / 1000:.1f} ms in the VM")
    for r in sorted(rows, key=lambda r: -r["heap"]):
        print(f"  {r['module']:28s} {r['heap']:7d} B {r['us'] / 1000:7.2f} ms")


SIM_MODULES = ("machine", "network", "socket", "bluetooth")
"""What a board with a budget imports before the firmware (_vboard_boot.install), whatever its radio:
sim_overhead measures the same set, and the boards measured here load it too, so it cancels exactly."""


def sim_overhead(work: Path, radio: str = "wifi") -> int:
    """Heap the virtual board's own Python layer holds that a chip does not: `machine` and the
    radios' modules (`network`, `socket`, `bluetooth`: C on an ESP32), asyncio (asyncio_cost), the
    virtual clock and the boot helper (`radio` only names the probe's files). Measured as a board's live heap after importing them minus a plain VM's after
    the same built-ins, less the growth of the interned-name pools' arrays: a firmware interns more
    names than these modules, so a chip allocates the same pools for the firmware's own (pool_bytes).
    A board with a budget subtracts the same (measured by itself), so its budget is the chip's figure."""
    from sim import mpvm, vboard
    probe = ("import gc, asyncio, json, micropython\n" + _LIVE + "async def _probe():\n"
             + "".join("    __import__(%r)\n" % m for m in SIM_MODULES)
             + "    n = await _live()\n    micropython.qstr_info(1)\n    print('@@', n)\nasyncio.run(_probe())\n")
    img = work / f"probe-img-{radio}"
    img.mkdir(parents=True, exist_ok=True)
    (img / "main.py").write_text(probe)
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=work / f"probe-flash-{radio}", console_pty=False,
                             record_wdt_feeds=False, heap_budget=None) as b:
        b.advance(100)  # virtual time: the probe's await returns
        line = b.wait_log(r"^@@ \d+", timeout=60)
        names, pools = qstr_info(b.log())
        SIM_NAMES[radio] = set(interned(b.log()))
    board = int(line.split()[1])
    r = mpvm.run(code="import gc, asyncio, json, micropython\n" + _LIVE + "print(await _live())\nmicropython.qstr_info()\n")
    r.check()
    plain = int(r.stdout.split("\n")[0])
    SIM_QSTRS[radio] = names - qstr_info(r.stdout.splitlines())[0]
    return board - plain - (pools - qstr_info(r.stdout.splitlines())[1]) + asyncio_cost()


def asyncio_cost() -> int:
    """Heap that importing asyncio takes in the VM (its classes and module dicts; its code is frozen
    in both images): the WebAssembly port's loop is an asyncio task (common.clock), a chip's
    firmware never imports it, so it is the simulator's share (the plain VM above imports it too)."""
    from sim import mpvm
    r = mpvm.run(code="import gc\ngc.collect()\na = gc.mem_alloc()\nimport asyncio, asyncio.core\n"
                      "gc.collect()\nprint(gc.mem_alloc() - a)\n")
    r.check()
    return int(r.stdout.split()[-1])


def qstr_info(lines) -> tuple[int, int]:
    """(names interned at run time, bytes of their pools' arrays) from `micropython.qstr_info()`."""
    for ln in lines:
        m = re.search(r"n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)", ln)
        if m:
            return int(m.group(1)), int(m.group(3)) - int(m.group(2))
    raise SystemExit("micropython.qstr_info() printed no pool figures")


def interned(lines) -> list[str]:
    """The names `micropython.qstr_info(1)` lists, in the order they were interned."""
    return [ln[2:-1] for ln in lines if ln.startswith("Q(") and ln.endswith(")")]


def pool_bytes(n: int) -> int:
    """What MicroPython 1.27 allocates for the arrays of n names interned at run time: pools of 20,
    40, 80, ... entries (the first twice the ROM pool's 10), each 7 bytes an entry and a 24-byte
    header, in 16-byte heap blocks (py/qstr.c; matches qstr_info on the boards: 4,496 B for five
    pools, 9,008 B for six)."""
    total, alloc, held = 0, 20, 0
    while held < n:
        total += -(-(7 * alloc + 24) // 16) * 16
        held += alloc
        alloc *= 2
    return total


def last_pool(n: int) -> tuple[int, int, int]:
    """(pools n names take, names the pools before the last hold, bytes of the last): a name past a
    pool's end allocates one twice the size, so a firmware that stays in fewer pools saves the last."""
    k, alloc, held, before = 0, 20, 0, 0
    while held < n:
        before, held, alloc, k = held, held + alloc, alloc * 2, k + 1
    return k, before, pool_bytes(n) - pool_bytes(before)


SIM_QSTRS: dict[str, int] = {}
SIM_NAMES: dict[str, set] = {}
BOOT_NAMES: dict[tuple[str, bool], tuple[int, list]] = {}
"""Per (role, over its park radio): how many names the firmware interned by the end of boot_live
(the count pool_bytes takes), and which (those the simulator's modules interned too left out)."""
"""Names the simulator's modules intern (sim_overhead measures them): a chip interns the firmware's only."""


_BOOT_PROBE = """import gc, asyncio
from common import start
rt = start.main()
del start
""" + _LIVE + """async def _probe():
    n = await _live()
    __import__('micropython').qstr_info(1)
    print('@@', n, rt is not None and rt.app is not None)
asyncio.run(_probe())
"""


# Each role's link in the park: no UART wired, the radio's transport loaded (Wi-Fi to a gateway
# address nobody answers: the station joins and the TCP connect is retried with backoff)
PARK_LINK = {"ble": {"kind": "ble", "uart": -1},
             "wifi": {"kind": "wifi", "uart": -1, "ssid": "stadtpark", "psk": "bench-only-passphrase",
                      "host": "127.0.0.1", "port": 9, "backoff_max": 4}}


def boot_live(role: str, src: str, work: Path, park_link: bool = False) -> int:
    """Live heap of a booted firmware (modules imported, Runtime and App built and started, the
    boot-only modules dropped: /main.py up to its loop), collected by the board's worker between
    the firmware's turns (VirtualBoard.live_heap), on a virtual board: the figure the heap budget
    bounds, before the simulator's own heap is subtracted. park_link: over the
    role's radio (PARK_LINK), not the bench's UART."""
    from sim import vboard
    day = DAYS[role]()
    link = PARK_LINK[RADIO[role]] if park_link else None
    tag = "-radio" if park_link else ""
    img = fw.deploy_tree(work / f"{role}-boot-img{tag}", role, day.kid, day.pins, day.app, day.rt, link=link, mpy=False)
    day.prepare(img)
    place_code(img, src)
    # the radio's modules first, whatever the link: sim_overhead subtracts them (C on a chip, loaded
    # with the radio stack), so a board over its UART must hold them too
    (img / "main.py").write_text("".join("import %s\n" % m for m in SIM_MODULES) + _BOOT_PROBE)
    kw = dict(day.board_kw)
    if link and link["kind"] == "wifi":
        kw["wifi"] = {"ssid": link["ssid"], "psk": link["psk"]}
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=work / f"{role}-boot-flash{tag}", start_time=START,
                             heap_budget=None, console_pty=False, record_wdt_feeds=False, name=day.kid, **kw) as b:
        day.setup(b)
        b.advance(500)
        b.wait_log(r"^@@ \d+ True", timeout=60)
        live = b.live_heap()
        names, pools = qstr_info(b.log())
        own = [n for n in interned(b.log()) if n not in SIM_NAMES.get(RADIO[role], ())]
    if RADIO[role] not in SIM_QSTRS:
        return live
    BOOT_NAMES[(role, park_link)] = (names - SIM_QSTRS[RADIO[role]], own)
    # the arrays a chip allocates for the firmware's own names, not the board's for all of them
    # (the simulator's names can take a board past a pool a chip never needs: a locker, 9 KiB)
    return live - pools + pool_bytes(names - SIM_QSTRS[RADIO[role]])


def await_retention(n: int = 2000) -> float:
    """Bytes the WebAssembly port keeps per `await asyncio.sleep_ms(0)` even after gc.collect()
    (references held on the JavaScript side): a VM artifact that grows long runs, not an ESP32 cost."""
    from sim import mpvm
    code = ("import gc, asyncio\ngc.collect()\na = gc.mem_alloc()\n"
            f"for i in range({n}):\n    await asyncio.sleep_ms(0)\n"
            "gc.collect()\nprint(gc.mem_alloc() - a)\n")
    r = mpvm.run(code=code)
    r.check()
    return int(r.stdout.split()[-1]) / n


# ---------------------------------------------------------------- the scripted days

class Day:
    role = ""
    kid = ""
    pins: dict = {}
    app: dict = {}
    rt: dict = {}
    board_kw: dict = {}

    def prepare(self, img: Path) -> None:
        pass

    def setup(self, b) -> None:
        pass

    w = None  # Windows for mains devices

    def hour(self, b, p, h: int, ms: int) -> None:
        """Day hour h, played in ms of virtual time."""
        p.run(ms, step=10_000)


class ContainerDay(Day):
    """Fills from 10 % to full over the day, a hot afternoon, one fire scare, emptied at 18:00."""
    role, kid = "container_sensor", "c001"
    pins = {"trig": 5, "echo": 18, "temp": 34, "batt": 35}
    app = {"depth_mm": 1200, "top_mm": 250}
    rt = {"batt_div": 2000}
    board_kw = {"ultrasonic": {"trig": 5, "echo": 18}, "distance_mm": 1100}

    def setup(self, b):
        b.set_adc(35, uv=3900 * 1000 // 2)
        b.set_adc(34, uv=500000 + 15 * 10000)

    def hour(self, b, p, h, ms):
        fill = 10 + min(h, 18) * 5 if h < 18 else 5 + (h - 18) * 3
        b.set_distance_mm(1200 - (1200 - 250) * fill / 100)
        air = 15 + 10 * math.sin((h - 9) / 24 * 2 * math.pi)
        b.set_temperature_c(air)
        b.set_adc(34, uv=int(500000 + (85 if h == 15 else air) * 10000))
        serve_sleeper(b, p, ms)


class Windows:
    """Heap excess of event bursts on mains devices: each window resets the high-water mark,
    takes the level just before the burst, runs it and keeps peak - level. Windows are a few
    seconds long: whatever the VM itself leaves on the heap over hours (plain WebAssembly-port
    awaits of JS promises do, see await_retention) cannot inflate them."""

    def __init__(self):
        self.excess = 0
        self.n = 0
        self.peak = 0  # whole-run mark, kept across the per-window resets

    def mark(self, b):
        self.peak = max(self.peak, b.gc_high_water())
        return self.peak

    def run(self, b, p, ms, step=200):
        self.mark(b)
        b.reset_gc_high_water()
        p.run(20, 20)
        base = b.gc_high_water()
        p.run(ms, step)
        top = b.gc_high_water()
        self.excess = max(self.excess, top - base)
        self.peak = max(self.peak, top)
        self.n += 1
        b.reset_gc_high_water()  # the next segment starts from here; mark() keeps the maximum


def serve_sleeper(b, p, ms):
    """Answer promptly while the board is awake (a gateway replies in milliseconds) and skip
    ahead while it deep-sleeps."""
    end = b.now_ms + ms
    while True:
        st = b.state()
        left = end - st["now_ms"]
        if left <= 0:
            return
        if st["state"] == "asleep" and st.get("wake_at"):
            p.run(max(1, min(st["wake_at"] - st["now_ms"], left)), step=10_000_000)
        else:
            p.run(min(100, left), step=50)


class LightDay(Day):
    """Night with a walker every 6 minutes, prelights, a profile change, dawn, a day, dusk."""
    role, kid = "light_pole", "l001"
    pins = {"lamp": 25, "motion": 27, "ambient": 34, "lamp_cs": 35}
    app = {"lamp_ma": 700, "cs_ma_v": 1000}

    def setup(self, b):
        b.set_adc(34, 1000)
        b.set_adc(35, uv=0)

    def hour(self, b, p, h, ms):
        night = h < 3 or h >= 20
        b.set_adc(34, 1000 if night else 40000)
        if h in (3, 20):
            self.w.run(b, p, 5000, 500)  # dawn / dusk transition
        if h == 21:
            p.send({"type": "light_profile", "base": 15, "full": 90, "hold": 45, "fade_up": 800,
                    "fade_down": 4000, "max": 100, "curfew": [[1380, 300, 40]]})
        for k in range(10):  # a walker every tenth of the hour
            if night:
                b.set_pin(27, 1)
                b.set_adc(35, uv=600000)
                self.w.run(b, p, 2000)
                b.set_pin(27, 0)
                if k % 3 == 0:
                    p.send({"type": "prelight", "level": 80, "hold": 30, "hops": 2})
                self.w.run(b, p, 3000)
                p.run(ms // 10 - 5020, step=10_000)
                b.set_adc(35, uv=150000)
            else:
                p.run(ms // 10, step=20_000)


class LockerDay(Day):
    """Two compartments: gateway unlocks every 20 min in daytime, doors opened and shut,
    one forced door (tamper) and one door left open too long."""
    role, kid = "locker", "k001"
    pins = {"lock1": 12, "door1": 13, "lock2": 14, "door2": 15, "reader": {"uart": 2, "tx": 17, "rx": 16}}
    app = {"comps": 2, "open_max_s": 120}
    req = 1

    def prepare(self, img):
        (img / "booking.key").write_bytes(bytes(range(100, 132)))

    def setup(self, b):
        b.set_pin(13, 0)
        b.set_pin(15, 0)

    def hour(self, b, p, h, ms):
        if not 7 <= h < 22:
            p.run(ms, step=20_000)
            return
        for k in range(3):
            comp = 1 + (k & 1)
            door = 13 if comp == 1 else 15
            p.send({"type": "unlock", "comp": comp, "req": self.req, "reason": "booking"})
            self.req += 1
            self.w.run(b, p, 3000)
            b.set_pin(door, 1)
            self.w.run(b, p, 2000)
            p.run(28_000 if not (h == 16 and k == 0) else 198_000, step=1000)  # 16:00 left open
            b.set_pin(door, 0)
            self.w.run(b, p, 2000)
            if h == 12 and k == 2:
                b.set_pin(13, 1)  # forced open, no unlock: tamper
                self.w.run(b, p, 5000, 500)
                b.set_pin(13, 0)
            p.run(max(ms // 3 - 35_000, 1000), step=20_000)


DAYS = {"container_sensor": ContainerDay, "light_pole": LightDay, "locker": LockerDay}


def run_day(role: str, hours: float, src: str, heap_mode: str, work: Path, enforce: float = 0,
            overhead: int = 0, park_link: bool = False) -> dict:
    """One scripted day. With enforce (a fraction: 1 the whole budget, 0.75 the 25 % headroom
    goal) the board's budget is that share of the ESP32's free heap with the role's radio active;
    the board subtracts its own Python (the simulator's modules, C on a chip; `overhead` here is
    the same measured by sim_overhead, for the chip figures) and collects from the event loop
    before it refuses, so this bounds the live data, as on the chip. park_link: a mains device over
    its Wi-Fi (the firmware's transport on the virtual radio, the peer on a loopback TCP port: its
    frames and buffers on the heap as in the park), not the bench's UART."""
    from sim import vboard
    day = DAYS[role]()
    day.w = Windows()
    port = fw.TcpServerPort() if park_link and RADIO[role] == "wifi" else None
    link = dict(PARK_LINK["wifi"], host="10.0.0.1", port=4710) if port else None  # mapped to port's address
    img = fw.deploy_tree(work / f"{role}-img", role, day.kid, day.pins, day.app, day.rt, link=link, mpy=False)
    day.prepare(img)
    place_code(img, src)
    t0 = time.monotonic()
    with vboard.VirtualBoard(deploy_dir=img, flash_dir=work / f"{role}-flash", start_time=START,
                             heap_mode=heap_mode, record_wdt_feeds=False, console_pty=False,
                             name=day.kid, heap_budget=int(vboard.esp32_heap_budget(RADIO[role]) * enforce) if enforce else UNBOUNDED,
                             wifi={"ssid": link["ssid"], "psk": link["psk"], "gateway": port.address} if port else None,
                             **day.board_kw) as b:
        day.setup(b)
        p = fw.Peer(b, day.kid.encode(), welcome_time=None, hb=3600, port=port)
        try:
            p.connect()
            boot = b.gc_high_water()
            ms_per_hour = int(hours * 3_600_000 / 24)
            for h in range(24):
                day.hour(b, p, h, ms_per_hour)
            day.w.mark(b)
            peak = max(b.gc_high_water(), day.w.peak)
            st = b.state()
            up = [m["type"] for s, m in p.up]
            crashes = b.events("fw_crash")
            over = b.heap_refusals()
        finally:
            p.close()
    return {"role": role, "src": src, "heap_mode": heap_mode, "hours": hours, "boot_peak": boot, "peak": peak,
            "windows": day.w.n, "event_excess": day.w.excess,
            "working": peak - boot, "boots": st.get("boots"), "crashes": len(crashes),
            "radio": RADIO[role], "budget": vboard.esp32_heap_budget(RADIO[role]), "enforced": enforce,
            "budget_exceeded": len(over), "sim_overhead": overhead, "chip_peak": peak - overhead,
            "uplink": {t: up.count(t) for t in sorted(set(up))}, "seconds": round(time.monotonic() - t0, 1)}


def boot_table(roles, src: str, out: Path | None, vms: Path | None = None, names_dir: Path | None = None) -> int:
    """Live heap after boot on a chip (boot_live less sim_overhead) per role, against its budget."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="footprint-boot-") as d:
        overheads = {radio: sim_overhead(Path(d), radio) for radio in sorted({RADIO[r] for r in roles})} if not vms else {}
        for role in roles:
            from sim import vboard
            if vms:  # each role's own VM: the simulator's share measured on it
                use_frozen_vm(vms, role)
                overheads[RADIO[role]] = sim_overhead(Path(d) / role, RADIO[role])
            budget = vboard.esp32_heap_budget(RADIO[role])
            goal = int(budget * (1 - HEADROOM))
            row = {"role": role, "radio": RADIO[role], "budget": budget, "goal": goal, "src": src}
            for key, park, how in (("chip_boot_live", False, "over the bench's UART"),
                                   ("chip_boot_live_radio", True, f"over its {RADIO[role]} link")):
                live = row[key] = boot_live(role, src, Path(d), park) - overheads[RADIO[role]]
                verdict = "meets" if live <= goal else f"misses by {(live - goal) / 1024:.1f} KiB"
                print(f"{role:17s} live after boot on a chip {how:22s} {live / 1024:5.1f} KiB of "
                      f"{budget / 1024:.1f} KiB ({RADIO[role]} active): {1 - live / budget:.0%} free; "
                      f"goal <= {goal / 1024:.1f} KiB {verdict}", flush=True)
                if (role, park) in BOOT_NAMES:
                    n, own = BOOT_NAMES[(role, park)]
                    row[key + "_names"] = n
                    if names_dir:
                        names_dir.mkdir(parents=True, exist_ok=True)
                        (names_dir / f"{role}{'-radio' if park else ''}.names").write_text("\n".join(own) + "\n")
                    k, before, last = last_pool(n)
                    print(f"{'':17s} {n} names interned in {k} pools ({pool_bytes(n)} B): {n - before} past the "
                          f"{before} of the first {k - 1}, whose pool costs {last} B", flush=True)
            rows.append(row)
    if out:
        out.write_text(json.dumps(rows, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=None,
                    help="virtual hours the scripted day is played in (default: 24 for the sleeping container, "
                         "4 for mains devices, whose 20 ms loop makes a real-time day take ~30 min of CPU here)")
    ap.add_argument("--only", choices=ROLES, action="append")
    ap.add_argument("--src", choices=("mpy", "py"), default="mpy")
    ap.add_argument("--vm", type=Path, help="run each role on its VM with the firmware frozen in (built by "
                    "`python -m sim.mpvm.frozen --out DIR`): the custom image's figures; implies --src frozen")
    ap.add_argument("--heap", choices=("live", "alloc"), default="alloc")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--enforce", action="store_const", const=1.0, default=0,
                    help="run each board with its ESP32 heap budget (MemoryError past it), not only report it")
    ap.add_argument("--enforce-headroom", dest="enforce", action="store_const", const=1 - HEADROOM,
                    help="run each board with 75 %% of its budget: no MemoryError means the live data "
                         "leaves the 25 %% headroom free all day")
    ap.add_argument("--vm-artifact", action="store_true",
                    help="also measure what a plain WebAssembly-port await keeps on the heap")
    ap.add_argument("--names", type=Path, metavar="DIR", help="with --boot: write the names each firmware "
                    "interns (ROLE[-radio].names, in order; the simulator's own left out) to DIR")
    ap.add_argument("--park-link", action="store_true", help="run a pole's or a locker's day over its Wi-Fi "
                    "(the firmware's transport on the virtual radio), not the bench's UART")
    ap.add_argument("--boot", action="store_true",
                    help="only each role's live heap after boot on a chip against its budget and the 25 %% goal, no day")
    ap.add_argument("--imports", action="store_true",
                    help="only the per-module import table (heap held and VM import time per module), no day")
    a = ap.parse_args(argv)
    if a.vm:
        a.src = "frozen"
    if a.imports:
        tables = {}
        for role in a.only or ROLES:
            tables[role] = import_table(role, a.src)
            print_import_table(role, a.src, tables[role])
        if a.json:
            a.json.write_text(json.dumps(tables, indent=1))
        return 0
    if a.boot:
        return boot_table(a.only or ROLES, a.src, a.json, a.vm, a.names)
    results = []
    with tempfile.TemporaryDirectory(prefix="footprint-") as d:
        overheads = {} if a.vm else {radio: sim_overhead(Path(d), radio) for radio in sorted({RADIO[r] for r in a.only or ROLES})}
        for radio, overhead in overheads.items():
            print(f"simulator's own heap with {radio} (virtual machine and radio modules, clock, boot helper; "
                  f"none on a chip): {overhead / 1024:.1f} KiB, subtracted for the chip figures", flush=True)
        for role in a.only or ROLES:
            if a.vm:  # the role's frozen VM: the simulator's share measured on it
                use_frozen_vm(a.vm, role)
                overheads[RADIO[role]] = sim_overhead(Path(d) / role, RADIO[role])
                print(f"{role} on its frozen VM ({os.environ['PARK_VBOARD_VM']}): simulator's own heap "
                      f"{overheads[RADIO[role]] / 1024:.1f} KiB", flush=True)
            overhead = overheads[RADIO[role]]
            hours = a.hours if a.hours is not None else (24 if role == "container_sensor" else 4)
            park = a.park_link and RADIO[role] == "wifi"
            if a.park_link and not park:
                print(f"{role}: --park-link runs Wi-Fi roles only; its day runs over the bench's UART", flush=True)
            r = run_day(role, hours, a.src, a.heap, Path(d), a.enforce, overhead, park)
            r["link"] = "wifi" if park else "uart"
            r["mpy"] = mpy_sizes(role)
            r["import"] = import_cost(role, a.src) if a.src != "frozen" else 0  # frozen: no module on the heap
            r["boot_live"] = boot_live(role, a.src, Path(d), park)
            r["chip_boot_live"] = r["boot_live"] - overhead
            results.append(r)
            ok = "meets" if r["peak"] <= GOAL else "misses"
            print(f"{role:17s} over {'its Wi-Fi' if park else 'the UART'}: heap after boot {r['boot_peak']/1024:6.1f} KiB  peak over {r['hours']} h "
                  f"{r['peak']/1024:6.1f} KiB ({ok} the 40 KiB goal)  working {r['working']/1024:5.1f} KiB  "
                  f".mpy {r['mpy']['total']/1024:5.1f} KiB (role {r['mpy'][role]/1024:.1f})  "
                  f"boots {r['boots']} crashes {r['crashes']}  {r['seconds']} s", flush=True)
            if r["windows"]:
                print(f"{'':17s} event bursts: {r['windows']} windows, largest heap excess over the level before "
                      f"{r['event_excess']/1024:.1f} KiB -> estimated peak <= boot + excess = "
                      f"{(r['boot_peak'] + r['event_excess'])/1024:.1f} KiB", flush=True)
            print(f"{'':17s} import cost ({a.src}) {r['import']/1024:.1f} KiB; "
                  f"chip peak minus import (frozen-module estimate) {(r['chip_peak'] - r['import'])/1024:.1f} KiB", flush=True)
            print(f"{'':17s} live after boot (collected at the event loop) {r['boot_live']/1024:.1f} KiB, "
                  f"on a chip {r['chip_boot_live']/1024:.1f} KiB: {1 - r['chip_boot_live'] / r['budget']:.0%} "
                  f"of the budget free", flush=True)
            free = 1 - r["chip_peak"] / r["budget"]
            if r["enforced"]:
                held = "held" if r["budget_exceeded"] == 0 else "NOT held"
                verdict = (f"; live data enforced under {r['enforced']:.0%} of it all day: exceeded "
                           f"{r['budget_exceeded']} times ({held})")
            else:
                verdict = "; not enforced (--enforce-headroom proves the 25 % goal)"
            print(f"{'':17s} ESP32 budget with {r['radio']} active {r['budget']/1024:.1f} KiB: chip peak "
                  f"{r['chip_peak']/1024:.1f} KiB (raw, with garbage: {free:.0%} free){verdict}", flush=True)
            print(f"{'':17s} uplink: {r['uplink']}", flush=True)
    if a.vm_artifact:
        print(f"a plain `await asyncio.sleep_ms(0)` in the WebAssembly port keeps {await_retention():.1f} bytes "
              f"on the heap after gc.collect() until JavaScript's GC runs (not an ESP32 cost)")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
