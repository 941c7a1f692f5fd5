"""Time for the runtime: monotonic ticks, cooperative sleep, and wall time in the RTC.

Virtual boards replace this module with one of the same names driven by a
virtual clock (sim/vmachine); device code imports only these names.
Wall time lives in the RTC so it survives deep sleep; it counts as valid only
from 2024 on (an RTC after power loss reads 2000-01-01).
"""

import time

try:
    import asyncio
except ImportError:  # MicroPython before 1.21
    import uasyncio as asyncio  # type: ignore[no-redef]

import machine

VALID_FROM = 1704067200
"""2024-01-01T00:00:00Z: earlier RTC readings mean "no valid time"."""

_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_rtc = None

ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
ticks_add = time.ticks_add


async def sleep_ms(ms):
    """Yield to the scheduler for ms milliseconds (the main loop's only wait)."""
    await asyncio.sleep_ms(ms)


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
