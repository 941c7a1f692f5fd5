"""Sunset/sunrise from the date and the pole's position (astronomical clock).

With valid time the pole switches by the sun, not by its light sensor (which
can be dirty, shaded or lit by a neighbour). NOAA's low-precision formulae:
within a couple of minutes at German latitudes. Runs once a day, so floats are
fine here; light_pole.app imports this module for that and forgets it again.
"""
import math


def sun_times(day, lat, lon):
    """(sunrise, sunset) in minutes after 00:00 UTC of `day` (days since 1970-01-01).

    Returns (None, None) for polar day, (-1, -1) for polar night.
    """
    n = day - 10957.5 + 0.0008  # days since J2000.0 (noon)
    m = (357.5291 + 0.98560028 * n) % 360.0
    mr = math.radians(m)
    c = 1.9148 * math.sin(mr) + 0.02 * math.sin(2 * mr) + 0.0003 * math.sin(3 * mr)
    lam = math.radians((m + c + 180.0 + 102.9372) % 360.0)
    transit = 720.0 - 4.0 * lon + 1440.0 * (0.0053 * math.sin(mr) - 0.0069 * math.sin(2 * lam))
    sin_d = math.sin(lam) * math.sin(math.radians(23.44))
    cos_d = math.cos(math.asin(sin_d))
    la = math.radians(lat)
    # the zenith at 90.833 degrees: refraction + solar disc
    cos_h = (math.cos(math.radians(90.833)) - math.sin(la) * sin_d) / (math.cos(la) * cos_d)
    if cos_h < -1.0:
        return None, None
    if cos_h > 1.0:
        return -1, -1
    h = 4.0 * math.degrees(math.acos(cos_h))
    return int(transit - h + 0.5), int(transit + h + 0.5)


def window(day, lat, lon, dusk_off=0, dawn_off=0):
    """(day, dawn, dusk): the minutes after 00:00 UTC of `day` between which it is day, offsets
    added (polar day: always day, polar night: never)."""
    r, s = sun_times(day, lat, lon)
    if r is None:
        return day, -2000, 4000
    if r == -1:
        return day, 4000, -2000
    return day, r + dawn_off, s + dusk_off


class SunClock:
    """night(unix) with offsets; caches one day's window (recomputed when the UTC day changes)."""

    def __init__(self, lat, lon, dusk_off=0, dawn_off=0):
        self.lat = lat
        self.lon = lon
        self.dusk_off = dusk_off
        self.dawn_off = dawn_off
        self.sun = None

    def night(self, unix):
        s = self.sun
        if s is None or s[0] != unix // 86400:
            s = self.sun = window(unix // 86400, self.lat, self.lon, self.dusk_off, self.dawn_off)
        return not (s[1] <= unix % 86400 // 60 < s[2])
