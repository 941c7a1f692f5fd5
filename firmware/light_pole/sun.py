"""Sunset/sunrise from the date and the pole's position (astronomical clock).

With valid time the pole switches by the sun, not by its light sensor (which
can be dirty, shaded or lit by a neighbour). NOAA's low-precision formulae:
within a couple of minutes at German latitudes. Runs once a day, so floats are
fine here.
"""
import math

_ZENITH = math.cos(math.radians(90.833))  # refraction + solar disc


def sun_times(days, lat, lon):
    """(sunrise, sunset) in minutes after 00:00 UTC of `days` since 1970-01-01.

    Returns (None, None) for polar day, (-1, -1) for polar night.
    """
    n = days - 10957.5 + 0.0008  # days since J2000.0 (noon)
    m = (357.5291 + 0.98560028 * n) % 360.0
    mr = math.radians(m)
    c = 1.9148 * math.sin(mr) + 0.02 * math.sin(2 * mr) + 0.0003 * math.sin(3 * mr)
    lam = math.radians((m + c + 180.0 + 102.9372) % 360.0)
    transit = 720.0 - 4.0 * lon + 1440.0 * (0.0053 * math.sin(mr) - 0.0069 * math.sin(2 * lam))
    sin_d = math.sin(lam) * math.sin(math.radians(23.44))
    cos_d = math.cos(math.asin(sin_d))
    la = math.radians(lat)
    cos_h = (_ZENITH - math.sin(la) * sin_d) / (math.cos(la) * cos_d)
    if cos_h < -1.0:
        return None, None
    if cos_h > 1.0:
        return -1, -1
    h = 4.0 * math.degrees(math.acos(cos_h))
    return int(transit - h + 0.5), int(transit + h + 0.5)


class SunClock:
    """night(unix) with offsets; caches one day's times (recomputed when the UTC day changes)."""

    def __init__(self, lat, lon, dusk_off=0, dawn_off=0):
        self.lat = lat
        self.lon = lon
        self.dusk_off = dusk_off
        self.dawn_off = dawn_off
        self._day = -1
        self._rise = 0
        self._set = 0

    def night(self, unix):
        day = unix // 86400
        if day != self._day:
            r, s = sun_times(day, self.lat, self.lon)
            self._day = day
            if r is None:
                self._rise, self._set = -2000, 4000
            elif r == -1:
                self._rise, self._set = 4000, -2000
            else:
                self._rise, self._set = r + self.dawn_off, s + self.dusk_off
        minute = (unix % 86400) // 60
        return not (self._rise <= minute < self._set)
