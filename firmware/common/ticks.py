"""Wrap-safe millisecond tick arithmetic on both VMs.

MicroPython's ticks wrap at 2**30 ms (~12.4 days) and differences are only valid
within half of that; the CPython fallback (unit tests) wraps the same way, so
tests can cross the wrap on either VM.
"""

try:
    from time import ticks_add, ticks_diff
except ImportError:
    _PERIOD = 1 << 30
    _HALF = 1 << 29

    def ticks_diff(a, b):  # type: ignore[no-redef,misc]
        return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF

    def ticks_add(a, b):  # type: ignore[no-redef,misc]
        return (a + b) & (_PERIOD - 1)
