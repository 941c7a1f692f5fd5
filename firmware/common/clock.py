"""Time for the runtime: monotonic ticks, its loop's sleep, and wall time in the RTC.

On a chip the loop is driven here (run, sleep_ms) without asyncio. On the WebAssembly port
of a virtual board there is no blocking sleep, so the loop is an asyncio task, and the board
puts time.ticks_* and asyncio.sleep_ms on its virtual clock (sim/vmachine); device code
imports only these names.
Wall time lives in the RTC so it survives deep sleep; it counts as valid only
from 2024 on (an RTC after power loss reads 2000-01-01).
"""

import sys
import time

import machine

VALID_FROM = 1704067200
"""2024-01-01T00:00:00Z: earlier RTC readings mean "no valid time"."""

_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_rtc = None

ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add


def _sleep(ms):
    """`await sleep_ms(ms)` on a chip: yields ms to _drive, which sleeps."""
    yield ms


def _drive(main):
    """Run the coroutine `main` (the runtime's loop, common.runtime.serve) on a chip: it yields
    the ms to sleep at each `await sleep_ms`; returns when it ends. No asyncio on the heap (4.3 KiB
    of classes and module dicts on the chip's, though its code is frozen in the image)."""
    try:
        while True:
            time.sleep_ms(main.send(None))
    except StopIteration:
        pass


if sys.platform == "webassembly":  # no blocking sleep there: its JavaScript event loop drives asyncio
    import asyncio

    async def sleep_ms(ms):
        """Yield to the scheduler for ms milliseconds (the main loop's only wait)."""
        await asyncio.sleep_ms(ms)

    def run(main):
        """Start the coroutine `main` on the JavaScript event loop: asyncio.run as a virtual board
        provides it (returns at once, a crash recorded), else a task."""
        getattr(asyncio, "run", asyncio.create_task)(main)
else:
    sleep_ms = _sleep
    run = _drive


def _r():
    global _rtc
    if _rtc is None:
        _rtc = machine.RTC()
    return _rtc


def now():
    """Unix seconds from the RTC, or None while the time is not valid."""
    y, mo, d, _, h, mi, s, _ = _r().datetime()
    t = time.mktime((y, mo, d, h, mi, s, 0, 0)) + _EPOCH
    return t if t >= VALID_FROM else None


def set_time(unix):
    """Set the RTC to unix seconds (UTC); False if the value cannot be a valid time."""
    if type(unix) is not int or unix < VALID_FROM:
        return False
    y, mo, d, h, mi, s, wd, _ = time.gmtime(unix - _EPOCH)
    _r().datetime((y, mo, d, wd, h, mi, s, 0))
    return True
