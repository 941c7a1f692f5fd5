# mptest: a tiny test runner that runs *inside* MicroPython (genuine VM, no pytest there).
# It imports one test module, runs every test_* function (sync or async, sorted by name:
# MicroPython's dir() order is hash order), isolates failures per test, and prints one
# machine-readable line per test plus a summary, parsed by mpvm.run_pytest_style on CPython.
# Must stay MicroPython-compatible: no f-strings with format specs, no typing, no dataclasses.
import sys
import io
import json
import time

PREFIX = "@@MPTEST "


class SkipTest(Exception):
    """Raise in a test to report it as skipped (e.g. feature missing on this port)."""


def skip(reason=""):
    raise SkipTest(reason)


def _tb(exc):
    buf = io.StringIO()
    sys.print_exception(exc, buf)
    return buf.getvalue()


def _emit(kind, **fields):
    fields["kind"] = kind
    sys.stdout.write(PREFIX + json.dumps(fields) + "\n")


def _is_awaitable(obj):
    # MicroPython coroutines are generators; CPython-style objects may define __await__.
    return hasattr(obj, "send") and hasattr(obj, "throw") or hasattr(obj, "__await__")


async def _call(fn):
    r = fn()
    if _is_awaitable(r):
        r = await r
    return r


def _collect(mod, select):
    names = [n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n))]
    names.sort()
    if select:
        names = [n for n in names if n in select or any(s in n for s in select)]
    return names


async def main(modname, select=None):
    """Run all tests in module `modname`; return (passed, failed, skipped)."""
    t0 = time.ticks_ms()
    try:
        mod = __import__(modname)
    except BaseException as e:  # import errors must be reported, not crash the runner
        _emit("collect_error", module=modname, tb=_tb(e))
        _emit("summary", passed=0, failed=0, errors=1, skipped=0, ms=time.ticks_diff(time.ticks_ms(), t0))
        return
    names = _collect(mod, select)
    passed = failed = skipped = errors = 0
    setup = getattr(mod, "setup_module", None)
    if setup:
        try:
            await _call(setup)
        except BaseException as e:
            _emit("collect_error", module=modname, tb=_tb(e))
            _emit("summary", passed=0, failed=0, errors=1, skipped=0, ms=time.ticks_diff(time.ticks_ms(), t0))
            return
    for name in names:
        fn = getattr(mod, name)
        t1 = time.ticks_ms()
        status = "passed"
        tb = ""
        try:
            await _call(fn)
        except SkipTest as e:
            status = "skipped"
            tb = str(e)
        except AssertionError as e:
            status = "failed"
            tb = _tb(e)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit from a test must not end the module run
            status = "error"
            tb = _tb(e)
        if status == "passed":
            passed += 1
        elif status == "skipped":
            skipped += 1
        elif status == "failed":
            failed += 1
        else:
            errors += 1
        _emit("test", name=name, status=status, ms=time.ticks_diff(time.ticks_ms(), t1), tb=tb)
    teardown = getattr(mod, "teardown_module", None)
    if teardown:
        try:
            await _call(teardown)
        except BaseException as e:
            errors += 1
            _emit("test", name="teardown_module", status="error", ms=0, tb=_tb(e))
    _emit("summary", passed=passed, failed=failed, errors=errors, skipped=skipped,
          ms=time.ticks_diff(time.ticks_ms(), t0))
