"""Ultrasonic distance: raw readings from a trigger/echo or a UART sensor, and the
speed-of-sound correction that turns them into millimetres.

A reading that fails (no echo, bad frame) is None, never a distance.
"""

import time

C0 = 331300   # speed of sound at 0 °C, mm/s
DC = 606      # mm/s per °C
C20 = C0 + 20 * DC


def echo_to_mm(echo_us, temp_c):
    """Round-trip echo time -> distance in mm at air temperature temp_c."""
    return (echo_us * (C0 + DC * temp_c) + 1000000) // 2000000


def rescale_mm(mm, temp_c):
    """A distance a sensor computed at 20 °C, corrected to temp_c."""
    return (mm * (C0 + DC * temp_c) + C20 // 2) // C20


def median(vals):
    s = sorted(vals)
    n = len(s)
    return s[n // 2] if n & 1 else (s[n // 2 - 1] + s[n // 2]) // 2


class TrigEcho:
    """HC-SR04 / JSN-SR04T style: a 10 µs trigger pulse, then the echo pin's high time.

    ping() returns the echo time in µs (raw: it depends on temperature), or None.
    """

    RAW_IS_TIME = True

    def __init__(self, hal, max_mm):
        self._trig = hal.pin_out("trig", 0)
        self._echo = hal.pin_in("echo")
        self._hal = hal
        self._timeout = max_mm * 2 * 1000000 // (C0 - 40 * DC) + 1000

    def ping(self):
        t = self._trig
        t.value(0)
        time.sleep_us(2)
        t.value(1)
        time.sleep_us(10)
        t.value(0)
        us = self._hal.pulse_us(self._echo, 1, self._timeout)
        return us if us > 0 else None

    def to_mm(self, raw, temp_c):
        return echo_to_mm(raw, temp_c)


class UartSensor:
    """A02YYUW-style UART sensor: frames 0xFF, H, L, SUM with distance H*256+L in mm
    (computed by the sensor for 20 °C; to_mm rescales). ping() returns the newest
    valid frame's distance since the last call, or None."""

    RAW_IS_TIME = False

    def __init__(self, hal):
        self._u = hal.uart("us", 9600)
        self._buf = bytearray()
        self.bad = 0

    def ping(self):
        n = self._u.any()
        if n:
            self._buf.extend(self._u.read(n))
        b = self._buf
        got = None
        i = 0
        while i + 4 <= len(b):
            if b[i] != 0xFF:
                i += 1
                continue
            if (b[i] + b[i + 1] + b[i + 2]) & 0xFF == b[i + 3]:
                got = (b[i + 1] << 8) | b[i + 2]
                i += 4
            else:
                self.bad += 1
                i += 1
        self._buf = b[i:] if len(b) - i < 64 else bytearray()
        return got if got else None

    def to_mm(self, raw, temp_c):
        return rescale_mm(raw, temp_c)
