"""Sunrise and sunset from latitude and longitude, no network: the NOAA solar calculator.

The equations are NOAA's (Global Monitoring Laboratory "General Solar
Position Calculations", after Meeus, Astronomical Algorithms): good to about a
minute between +-72 degrees latitude. Each event is computed twice, the
second time with the Sun's position at the first estimate.
"""

from __future__ import annotations

import datetime as _dt
import math

ZENITH = 90.833  # geometric centre 50' below the horizon: refraction + the Sun's radius


def _julian_day(d: _dt.date) -> float:
    return d.toordinal() + 1721424.5


def _sun(jc: float) -> tuple[float, float]:
    """(declination in degrees, equation of time in minutes) at Julian century jc."""
    l0 = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    m = 357.52911 + jc * (35999.05029 - 0.0001537 * jc)
    e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    mr = math.radians(m)
    c = (math.sin(mr) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
         + math.sin(2 * mr) * (0.019993 - 0.000101 * jc) + math.sin(3 * mr) * 0.000289)
    omega = math.radians(125.04 - 1934.136 * jc)
    app_long = l0 + c - 0.00569 - 0.00478 * math.sin(omega)
    eps0 = 23 + (26 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60) / 60
    eps = math.radians(eps0 + 0.00256 * math.cos(omega))
    decl = math.degrees(math.asin(math.sin(eps) * math.sin(math.radians(app_long))))
    y = math.tan(eps / 2) ** 2
    l0r = math.radians(l0)
    eqt = 4 * math.degrees(y * math.sin(2 * l0r) - 2 * e * math.sin(mr) + 4 * e * y * math.sin(mr) * math.cos(2 * l0r)
                           - 0.5 * y * y * math.sin(4 * l0r) - 1.25 * e * e * math.sin(2 * mr))
    return decl, eqt


def _event_minutes(day: _dt.date, lat: float, lon: float, rising: bool) -> float | None:
    """Minutes after 00:00 UTC of `day`, or None when the Sun does not cross the horizon."""
    jd = _julian_day(day)
    t = 720.0 - 4 * lon  # first guess: solar noon
    for _ in range(3):
        decl, eqt = _sun((jd + t / 1440.0 - 2451545.0) / 36525.0)
        la, de = math.radians(lat), math.radians(decl)
        x = math.cos(math.radians(ZENITH)) / (math.cos(la) * math.cos(de)) - math.tan(la) * math.tan(de)
        if x < -1.0 or x > 1.0:
            return None
        ha = math.degrees(math.acos(x))
        t = 720.0 - 4 * (lon + (ha if rising else -ha)) - eqt
    return t


def sun_times(day: _dt.date, lat: float, lon: float) -> tuple[_dt.datetime | None, _dt.datetime | None]:
    """(sunrise, sunset) of the UTC date `day` as aware UTC datetimes; None during polar day/night."""
    base = _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc)
    out = []
    for rising in (True, False):
        m = _event_minutes(day, lat, lon, rising)
        out.append(None if m is None else base + _dt.timedelta(minutes=m))
    return out[0], out[1]


def polar_state(day: _dt.date, lat: float) -> str:
    """'day' or 'night' for a date without sunrise/sunset at this latitude."""
    decl, _ = _sun((_julian_day(day) + 0.5 - 2451545.0) / 36525.0)
    return "day" if (lat >= 0) == (decl >= 0) else "night"


def is_dark(when: _dt.datetime, lat: float, lon: float, dusk_offset_min: int = 0, dawn_offset_min: int = 0) -> bool:
    """True between sunset+dusk_offset and the next sunrise+dawn_offset at `when` (aware)."""
    u = when.astimezone(_dt.timezone.utc)
    # the local solar day, so a night is not split at UTC midnight west/east of Greenwich
    day = (u + _dt.timedelta(minutes=4 * lon)).date()
    rise, sset = sun_times(day, lat, lon)
    if rise is None or sset is None:
        return polar_state(day, lat) == "night"
    rise += _dt.timedelta(minutes=dawn_offset_min)
    sset += _dt.timedelta(minutes=dusk_offset_min)
    return u < rise or u >= sset
