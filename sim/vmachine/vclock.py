# vclock: the board timebase, virtual on a vboard, real on an ESP32.
#
# On a virtual board (sim/vboard) time is owned by the host: tests step it
# (board.advance(ms)) so hours or days of firmware time run in seconds. On a real
# device the same names fall back to time/asyncio, so firmware never branches.
#
# API (the names of firmware/common/clock.py, plus a few):
#   ticks_ms(), ticks_us(), ticks_diff(a, b), ticks_add(t, d)
#   await sleep_ms(ms), await sleep(s)   (asyncio-compatible awaitables)
#   now() -> unix seconds from the RTC, or None before VALID_FROM (RTC not set)
#   set_time(unix) -> bool (False for an impossible time)
#   time() -> raw RTC unix seconds, time_ms() -> raw RTC unix milliseconds
#   VIRTUAL -> True on a virtual board
# On a board, firmware/common/clock.py itself also runs on virtual time: the board
# patches time.ticks_*/time.time/asyncio.sleep* and provides machine.RTC.
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
    heap_guard = None  # set by _vboard_boot on a board with a heap budget: raises MemoryError

    def ticks_ms():
        return _vb.ticks_ms()

    def ticks_us():
        return _vb.ticks_us()

    def time_ms():
        return int(_vb.unix_ms())

    def time():
        return int(_vb.unix_ms()) // 1000

    import asyncio as _asyncio

    # A sleeper waits on an asyncio.Event that the board sets (through _wake) when
    # virtual time reaches its deadline. Awaiting a JS promise per sleep would work
    # too, but the WebAssembly port keeps every awaited promise's Python callbacks
    # alive until the JS garbage collector runs: ~50 B per await, hundreds of KB
    # over a long run, which would pollute the heap high-water mark.
    _waiters = {}
    _seq = [0]

    def _wake(n):
        e = _waiters.pop(n, None)
        if e is not None:
            e.set()

    _vb.set_waker(_wake)

    async def sleep_ms(ms):
        # the heap is sampled (and its budget enforced) here: every task step ends at an await
        if heap_guard is not None:
            heap_guard()
        n = (_seq[0] + 1) & 0x3FFFFFFF
        _seq[0] = n
        e = _asyncio.Event()
        _waiters[n] = e
        _vb.sleep_at(n, int(ms), _mem())
        try:
            await e.wait()
        finally:
            _waiters.pop(n, None)

    async def sleep(s):
        await sleep_ms(int(s * 1000))

    def _set_rtc(unix_seconds):
        _vb.set_unix_ms(str(int(unix_seconds) * 1000))
else:
    import asyncio as _asyncio

    ticks_ms = _time.ticks_ms
    ticks_us = _time.ticks_us
    sleep_ms = _asyncio.sleep_ms
    sleep = _asyncio.sleep

    _EPOCH = 946684800 if _time.gmtime(0)[0] == 2000 else 0  # older ports count from 2000

    def time():
        return int(_time.time()) + _EPOCH

    def time_ms():
        try:
            return _time.time_ns() // 1000000 + _EPOCH * 1000
        except AttributeError:
            return time() * 1000

    def _set_rtc(unix_seconds):
        import machine
        epoch = 946684800 if _time.gmtime(0)[0] == 2000 else 0
        t = _time.gmtime(int(unix_seconds) - epoch)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

VALID_FROM = 1704067200  # 2024-01-01: an RTC earlier than this was never set


def now():
    t = time()
    return t if t >= VALID_FROM else None


def set_time(unix_seconds):
    """Set the RTC (what an NTP sync or the gateway's time message would do)."""
    if type(unix_seconds) is not int or unix_seconds < VALID_FROM:
        return False
    _set_rtc(unix_seconds)
    return True
