"""Day/night from the ambient light ADC, with hysteresis and a dwell time.

Dark below `dark_below`, light above `light_above` (raw read_u16 counts, a
brighter sky reads higher); in between nothing changes. A change needs the new
side to hold for `dwell_ms`, so headlights or a torch never switch a pole off
at night. The very first reading decides at once: after a reboot at night the
lamp must not wait a minute in the dark.
"""
from common.ticks import ticks_diff


class DayNight:
    def __init__(self, dark_below, light_above, dwell_ms):
        if not 0 <= dark_below < light_above <= 65535:
            raise ValueError("need 0 <= dark_below < light_above <= 65535")
        self.dark_below = dark_below
        self.light_above = light_above
        self.dwell_ms = dwell_ms
        self.night = None  # unknown until the first reading
        self._since = None  # ticks the reading went to the other side, or None while it stays

    def feed(self, raw, now):
        """Take one reading; return the (possibly new) night flag."""
        if self.night is None:
            self.night = raw < (self.dark_below + self.light_above) // 2
            return self.night
        other = raw > self.light_above if self.night else raw < self.dark_below
        if not other:
            self._since = None
        elif self._since is None:
            self._since = now
        elif ticks_diff(now, self._since) >= self.dwell_ms:
            self.night = not self.night
            self._since = None
        return self.night
