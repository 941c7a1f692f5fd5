"""Local minute of day from unix time: fixed offset plus the EU summer-time rule.

Curfew windows are set in local time ("dim from 23:00"), the clock is UTC.
Integer arithmetic only, independent of the port's epoch and of time.gmtime.
"""


def civil(days):
    """(year, month, day) for days since 1970-01-01 (H. Hinnant's algorithm)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def days_from_civil(y, m, d):
    y -= 1 if m <= 2 else 0
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def eu_summer(unix):
    """True between 01:00 UTC on the last Sunday of March and of October."""
    y = civil(unix // 86400)[0]
    a = days_from_civil(y, 3, 31)
    b = days_from_civil(y, 10, 31)
    # the last Sunday of each (both months have 31 days); 1970-01-01 was a Thursday: (days + 4) % 7 == 0 on Sundays
    return (a - (a + 4) % 7) * 86400 + 3600 <= unix < (b - (b + 4) % 7) * 86400 + 3600


def local_minute(unix, tz_min=60, eu_dst=True):
    """Minute of the local day (0..1439)."""
    off = tz_min + (60 if eu_dst and eu_summer(unix) else 0)
    return ((unix + off * 60) // 60) % 1440
