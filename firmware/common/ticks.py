"""Wrap-safe millisecond tick arithmetic on both VMs.

MicroPython's ticks wrap at 2**30 ms (~12.4 days) and differences are only valid
within half of that; the CPython fallback (unit tests) wraps the same way, so
tests can cross the wrap on either VM. On a board the names are time's own.
"""

import time

_PERIOD = 1 << 30
_HALF = 1 << 29


def _diff(a, b):
    return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF


def _add(a, b):
    return (a + b) & (_PERIOD - 1)


ticks_diff = getattr(time, "ticks_diff", _diff)
ticks_add = getattr(time, "ticks_add", _add)
