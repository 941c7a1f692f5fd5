"""NOAA sunrise/sunset against published almanac times (timeanddate.com / USNO), to within 2 minutes."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from gateway.control.astro import is_dark, sun_times

BERLIN = (52.52, 13.405)


@pytest.mark.parametrize("day,rise,sset,lat,lon,tz", [
    (dt.date(2024, 6, 21), "04:43", "21:33", *BERLIN, "Europe/Berlin"),
    (dt.date(2024, 12, 21), "08:15", "15:54", *BERLIN, "Europe/Berlin"),
    (dt.date(2024, 7, 4), "05:30", "20:31", 40.7128, -74.006, "America/New_York"),
])
def test_matches_almanac(day, rise, sset, lat, lon, tz):
    r, s = sun_times(day, lat, lon)
    z = ZoneInfo(tz)
    for got, want in ((r, rise), (s, sset)):
        h, m = map(int, want.split(":"))
        w = dt.datetime(day.year, day.month, day.day, h, m, tzinfo=z)
        assert abs((got - w).total_seconds()) <= 120, (got.astimezone(z), want)


def test_polar_day_and_night():
    assert sun_times(dt.date(2024, 6, 21), 78.2, 15.6) == (None, None)  # Longyearbyen
    assert not is_dark(dt.datetime(2024, 6, 21, 0, 0, tzinfo=dt.timezone.utc), 78.2, 15.6)
    assert is_dark(dt.datetime(2024, 12, 21, 12, 0, tzinfo=dt.timezone.utc), 78.2, 15.6)


def test_is_dark_with_offsets():
    z = ZoneInfo("Europe/Berlin")
    noon = dt.datetime(2024, 6, 21, 12, 0, tzinfo=z)
    late = dt.datetime(2024, 6, 21, 21, 40, tzinfo=z)
    assert not is_dark(noon, *BERLIN)
    assert is_dark(late, *BERLIN)
    assert not is_dark(late, *BERLIN, dusk_offset_min=15)  # lights on 15 min after sunset
    assert is_dark(dt.datetime(2024, 6, 21, 3, 0, tzinfo=z), *BERLIN)
