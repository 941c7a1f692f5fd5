"""Wrap-safe millisecond tick arithmetic on both VMs (CPython has no time.ticks_*)."""

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython fast path for unit tests

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b
