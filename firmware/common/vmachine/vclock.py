# vclock: the board timebase, virtual on a vboard, real on an ESP32.
#
# On a virtual board (tools/vboard) time is owned by the host: tests step it
# (board.advance(ms)) so hours or days of firmware time run in seconds. On a real
# device the same names fall back to time/asyncio, so firmware never branches.
#
# API (same names as firmware/common/clock.py on the device):
#   ticks_ms(), ticks_us(), ticks_diff(a, b), ticks_add(t, d)
#   time() -> int unix seconds (RTC), time_ms() -> int unix milliseconds, now() == time()
#   await sleep_ms(ms), await sleep(s)   (asyncio-compatible awaitables)
#   VIRTUAL -> True on a virtual board
import time as _time

try:
    import js as _js
    _vb = _js.vboard          # set by the vboard worker; absent under plain mpvm or a device
    VIRTUAL = True
except (ImportError, AttributeError):
    _vb = None
    VIRTUAL = False

# ticks arithmetic is pure: the builtins are right for both (same 2**30 period)
ticks_diff = _time.ticks_diff
ticks_add = _time.ticks_add

if VIRTUAL:
    import gc as _gc

    _mem = _gc.mem_alloc

    def ticks_ms():
        return _vb.ticks_ms()

    def ticks_us():
        return _vb.ticks_us()

    def time_ms():
        return int(_vb.unix_ms())

    def time():
        return int(_vb.unix_ms()) // 1000

    async def sleep_ms(ms):
        # the JS side resolves the promise when virtual time reaches the deadline;
        # the heap is sampled here because every task step ends at an await
        await _vb.sleep(int(ms), _mem())

    async def sleep(s):
        await _vb.sleep(int(s * 1000), _mem())

    def set_time(unix_seconds):
        """Set the RTC (what an NTP sync or the gateway's time message would do)."""
        _vb.set_unix_ms(str(int(unix_seconds) * 1000))
else:
    import asyncio as _asyncio

    ticks_ms = _time.ticks_ms
    ticks_us = _time.ticks_us
    sleep_ms = _asyncio.sleep_ms
    sleep = _asyncio.sleep

    def time():
        return int(_time.time())

    def time_ms():
        try:
            return _time.time_ns() // 1000000
        except AttributeError:
            return int(_time.time()) * 1000

    def set_time(unix_seconds):
        import machine
        t = _time.gmtime(int(unix_seconds))
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

now = time
