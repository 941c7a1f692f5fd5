"""A polled digital input that reports a new level only after it held for `ms`.

Polling from the main loop (not an IRQ) keeps it deterministic and allocation
free; a door or occupancy contact changes far slower than the loop runs.
"""

from common.ticks import ticks_diff


class Debounced:
    __slots__ = ("_pin", "_ms", "_inv", "state", "_cand", "_since")

    def __init__(self, pin, ms, invert, now_ms):
        self._pin = pin
        self._ms = ms
        self._inv = invert
        self.state = self._read()
        self._cand = self.state
        self._since = now_ms

    def _read(self):
        return bool(self._pin.value()) != self._inv

    def poll(self, now_ms):
        """Sample once; return True when the debounced state just changed."""
        v = self._read()
        if v != self._cand:
            self._cand = v
            self._since = now_ms
            return False
        if v != self.state and ticks_diff(now_ms, self._since) >= self._ms:
            self.state = v
            return True
        return False
