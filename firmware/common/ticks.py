"""Wrap-safe millisecond tick arithmetic on both VMs.

MicroPython's ticks wrap at 2**30 ms (~12.4 days) and differences are only valid
within half of that; the CPython fallback (unit tests) wraps the same way, so
tests can cross the wrap on either VM. On a board the names are time's own.
"""

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython
    def ticks_diff(a, b):  # type: ignore[no-redef]
        return ((a - b + (1 << 29)) & ((1 << 30) - 1)) - (1 << 29)

    def ticks_add(a, b):  # type: ignore[misc]
        return (a + b) & ((1 << 30) - 1)
