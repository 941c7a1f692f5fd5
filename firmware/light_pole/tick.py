"""Wrapping millisecond ticks, so the same logic runs under CPython unit tests.

MicroPython's ticks wrap at 2**30 ms (~12.4 days); every comparison must go
through ticks_diff, and the CPython fallback wraps the same way so tests can
cross the wrap.
"""
try:
    from time import ticks_add, ticks_diff
except ImportError:
    _PERIOD = 1 << 30
    _HALF = 1 << 29

    def ticks_diff(a, b):  # type: ignore[no-redef,misc]
        return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF

    def ticks_add(a, d):  # type: ignore[no-redef,misc]
        return (a + d) & (_PERIOD - 1)
