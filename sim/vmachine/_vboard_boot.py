# _vboard_boot: bring-up helpers the vboard worker calls before the firmware runs.
# Not for firmware use. Installs the virtual timebase into `time` and `asyncio` (so
# unmodified code using time.ticks_ms / asyncio.sleep also runs on virtual time),
# provides asyncio.run (missing in the WebAssembly port), runs boot.py/main.py like the
# ESP32 port, and gives the worker a heap sampler.
import sys
import gc
import time
import asyncio
import js

_vb = js.vboard
_heap_live = False
main_globals = {"__name__": "__main__"}


_budget = None
_base = 0  # the simulator's own Python (machine, radios, vclock, this module): C on a chip, not the firmware's
_over = False
_pending = None  # live bytes over the budget found by _recheck: raised at the firmware's next await
_asked = False


def _heap_guard():
    """On a chip an allocation that does not fit fails after a collection. Here the heap grows
    instead, so the live data is checked at each await. A collection made here still sees
    garbage the WebAssembly port keeps alive while the firmware's call chain is on the stack
    (~7 KiB after a boot), so an excess found here is re-measured from the event loop
    (_recheck), where that garbage is gone: only data a chip would hold too is refused, with
    MemoryError at the firmware's next await. Lenient: a chip's fragmentation can fail
    sooner, which the 25 % headroom goal covers."""
    global _pending, _asked
    if _pending is not None:
        used, _pending = _pending, None
        raise MemoryError("memory allocation failed: %d bytes live, heap budget %d" % (used, _budget))
    if _asked or gc.mem_alloc() - _base <= _budget:
        return
    gc.collect()
    if gc.mem_alloc() - _base > _budget:
        _asked = True
        _vb.heap_recheck()


def _recheck(pools=0):
    """Called by the worker from the JavaScript event loop (a fresh stack) after _heap_guard
    asked: the live data as a chip's collector would find it. pools: bytes of name-pool arrays
    the board holds and a chip with the firmware's names alone would not."""
    global _pending, _asked, _over
    _asked = False
    gc.collect()
    used = gc.mem_alloc() - _base - pools
    if used <= _budget:
        return
    _pending = used
    if not _over:
        _over = True
        _vb.event("heap_budget", '{"used": %d, "budget": %d}' % (used, _budget))


def sim_heap(n):
    """The worker measured the simulator's own heap (n bytes, collected from the event loop):
    subtracted from what the budget bounds."""
    global _base
    _base = n


def mem_sample():
    if _heap_live:
        gc.collect()
    return gc.mem_alloc()


def _crash(where, e):
    sys.print_exception(e)
    try:
        import json
        import io
        buf = io.StringIO()
        sys.print_exception(e, buf)
        _vb.event("crash", json.dumps({"where": where, "error": repr(e), "traceback": buf.getvalue()}))
    except Exception:
        pass


def _run(coro):
    """asyncio.run for the WebAssembly port: start the main task on the JS event loop.

    Returns at once (code after asyncio.run() in main.py runs immediately, unlike on a
    device where it blocks forever); an exception that ends the task is printed and
    recorded as a 'fw_crash' event, like a board dropping to the REPL.
    """
    async def _main():
        try:
            return await coro
        except Exception as e:
            _crash("asyncio.run", e)
    return asyncio.create_task(_main())


# The WebAssembly port's file system reports Emscripten errno numbers (ENOENT is 44)
# while its errno module has the standard ones (errno.ENOENT == 2), so firmware doing
# `e.errno == errno.ENOENT` would misbehave. The ESP32's VFS reports standard numbers;
# translate so the virtual flash behaves like the device (and mpremote sees "ENOENT").
_EMS_ERRNO = {63: 1, 44: 2, 29: 5, 8: 9, 2: 13, 20: 17, 43: 19, 54: 20, 31: 21, 28: 22,
              51: 28, 69: 30, 55: 39}


def _errno_fix(fn):
    def wrapped(*args, **kw):
        try:
            return fn(*args, **kw)
        except OSError as e:
            n = _EMS_ERRNO.get(e.errno)
            if n is None:
                raise
            raise OSError(n)
    return wrapped


def _install_errno_fix():
    import os
    import builtins
    for name in ("stat", "listdir", "ilistdir", "mkdir", "rmdir", "remove", "unlink", "rename",
                 "chdir", "statvfs"):
        if hasattr(os, name):
            setattr(os, name, _errno_fix(getattr(os, name)))
    builtins.open = _errno_fix(builtins.open)


def install(patch_time, heap_mode, budget=None):
    global _heap_live, _budget
    _heap_live = heap_mode == "live"
    _budget = budget
    asyncio.run = _run
    _install_errno_fix()
    try:
        import esp32  # noqa: F401  (the bootloader's OTA rollback step runs at import, once per boot)
    except ImportError:  # a board made `without` it
        pass
    if not patch_time:
        return
    import vclock
    gmtime = time.gmtime

    def _gm(secs=None):
        return gmtime(vclock.time() if secs is None else secs)

    def _sleep_ms(ms):
        _vb.busy_sleep(int(ms))

    def _sleep(s):
        _vb.busy_sleep(int(s * 1000))

    def _sleep_us(us):
        _vb.busy_sleep(int(us) // 1000)

    time.ticks_ms = vclock.ticks_ms
    time.ticks_us = vclock.ticks_us
    time.time = vclock.time
    time.time_ns = lambda: vclock.time_ms() * 1000000
    time.gmtime = _gm
    time.localtime = _gm
    time.sleep = _sleep
    time.sleep_ms = _sleep_ms
    time.sleep_us = _sleep_us
    asyncio.sleep = vclock.sleep
    asyncio.sleep_ms = vclock.sleep_ms
    if _budget is not None:
        # the virtual machine and radio modules are C on a chip: imported here, so the worker
        # counts them as the simulator's heap (sim_heap), not the firmware's
        for m in ("machine", "network", "socket", "bluetooth"):
            try:
                __import__(m)
            except ImportError:
                pass
        vclock.heap_guard = _heap_guard


def run_file(name):
    """Run a flash file as the ESP32 port runs boot.py/main.py (__name__ == '__main__')."""
    try:
        f = open(name)
    except OSError:
        return False
    try:
        src = f.read()
    finally:
        f.close()
    try:
        exec(compile(src, name, "exec"), main_globals)
    except Exception as e:
        _crash(name, e)
    except SystemExit:
        pass
    return True
