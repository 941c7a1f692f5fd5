"""Debounced, interrupt-driven presence input (PIR or radar; active high, or low with active=0).

The pin interrupt only stamps the time of the latest edge (no allocation, safe
as a hard IRQ). poll() accepts a new level once it has been stable for
`debounce_ms`, so contact bounce and RF spikes never count as a walker, and a
sensor that stays high keeps `present` true for as long as it does.
"""
from common.ticks import ticks_diff


class Motion:
    def __init__(self, pin, ticks_ms, debounce_ms=50, active=1):
        self._pin = pin
        self._active = active
        self._ticks = ticks_ms
        self.debounce_ms = debounce_ms
        self._edge = 0
        self._pending = True  # sample the initial level on the first poll
        self.present = False
        self._since = 0  # ticks when the debounced level last changed
        self.count = 0  # debounced detections (rising), wraps never matter: only deltas are used
        self._cb = self._irq  # bind once: a bound method is an allocation
        pin.irq(handler=self._cb, trigger=pin.IRQ_RISING | pin.IRQ_FALLING)

    def _irq(self, _pin):
        self._edge = self._ticks()
        self._pending = True

    def poll(self, now):
        """Return True exactly once per debounced rising edge."""
        e = self._edge
        if not self._pending or ticks_diff(now, e) < self.debounce_ms:
            return False
        self._pending = False
        if self._edge != e:  # an edge came in just now: it gets its own debounce time
            self._pending = True
            return False
        v = self._pin.value() == self._active
        if v == self.present:
            return False
        self.present = v
        self._since = now
        if v:
            self.count += 1
        return v

    def high_ms(self, now):
        """How long the sensor has been continuously active (0 when idle)."""
        return ticks_diff(now, self._since) if self.present else 0

    def wait_ms(self, now):
        """How long until poll() has something to decide (for the main loop's sleep)."""
        if not self._pending:
            return -1
        d = self.debounce_ms - ticks_diff(now, self._edge)
        return d if d > 0 else 0

    def close(self):
        self._pin.irq(handler=None)
