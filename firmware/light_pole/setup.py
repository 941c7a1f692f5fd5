"""The light pole's boot and rare paths: building the App, its config (boot and config
command), a new profile, the self test, and once a UTC day the sun's times.

light_pole.app imports this module when one of them runs and forgets it after
(common.forget), so a pole in service holds only its control loop
(docs/firmware.md#footprint).
"""
import math

from common.errors import CommandError, ConfigError

from light_pole import control, curve
from protocol.codes import F_CONFIG

from light_pole.app import const
from light_pole.control import DayNight, LampMonitor, Motion, Profile, windows

_PROFILE_KEY = const("profile")


def parse_curfew(s):
    """"1380-300:40,60-120:0" (local start-end minutes : max level) -> windows; "" -> ()."""
    out = []
    if s:
        for part in s.split(","):
            try:
                se, m = part.split(":")
                a, b = se.split("-")
                out.append((int(a), int(b), int(m)))
            except ValueError:
                raise ConfigError("curfew", "windows look like 1380-300:40,60-120:0")
    try:
        return windows(out)
    except CommandError as e:
        raise ConfigError("curfew", str(e))


def init(app):
    """The App's config (or the schema defaults when it is inconsistent) and its controller."""
    rt = app.rt
    try:
        p = configure(app, rt.cfg, None)
    except ConfigError as e:
        # per-field valid but inconsistent (the runtime checks fields only): run on the
        # defaults rather than crash-loop with the lamp dark, and say so
        rt.log("light: config refused (%s): defaults" % (e,), keep=True)
        rt.event({"type": "fault", "code": F_CONFIG, "value": 0}, durable=True)
        from common.config import defaults  # at boot, before common.start drops the module
        p = configure(app, defaults(app.SCHEMA), None)
    app.ctl = control.Controller(p, app.cfg["safe"])


def configure(app, c, old):
    """Check and apply a whole config; parts whose settings did not change keep their state
    (a day/night decision in its dwell, a reported lamp fault). Returns the config's profile."""
    def changed(keys):
        return old is None or any(old[k] != c[k] for k in keys)

    if c["light_above"] <= c["dark_below"]:
        raise ConfigError("light_above", "must be above dark_below")
    if c["full"] < c["base"]:
        raise ConfigError("full", "must not be below base")
    curfew = parse_curfew(c["curfew"])
    app.cfg = c
    app.curfew = curfew
    if changed(("dark_below", "light_above", "dn_dwell_s")):
        app.dn = DayNight(c["dark_below"], c["light_above"], c["dn_dwell_s"] * 1000)
    if changed(("lat", "lon", "dusk_off", "dawn_off")):
        app.sun = None  # the sun's times for the new place at the next use
    if changed(("lamp_ma",)):
        app.monitor = LampMonitor(c["lamp_ma"])
    return Profile(c["base"], c["full"], c["hold"], c["fade_up"], c["fade_down"], c["max"], curfew)


def on_config(app, values):
    """A config command (already range-checked): cross-checks, then applied at once."""
    old = app.cfg
    try:
        p = configure(app, values, old)
    except Exception:
        configure(app, old, values)
        raise
    app.ctl.safe_level = values["safe"]
    if any(old[k] != values[k] for k in ("base", "full", "hold", "fade_up", "fade_down", "max", "curfew")):
        app.ctl.profile = p
        app.rt.store.delete(_PROFILE_KEY)  # the operator's config is the profile again
    if app.motion is not None:
        app.motion.debounce_ms = values["debounce_ms"]
    if app.pwm is not None:
        app.pwm.freq(values["pwm_hz"])


def start(app, safe):
    rt = app.rt
    c = app.cfg
    now = rt.ticks_ms()
    app._cmd_ms = now
    app.ctl.safe = safe
    # the lamp first, lit: nothing below may leave it dark at night
    app.pwm = rt.hal.pwm("lamp", c["pwm_hz"], curve.duty(c["safe"] * 100))
    app._duty = -1
    try:
        app.ambient = rt.hal.adc("ambient")
    except Exception as e:
        rt.log("light: no ambient sensor (%r): night assumed without valid time" % (e,), keep=True)
    if rt.hal.has("lamp_cs"):
        try:
            app.lamp_cs = rt.hal.adc("lamp_cs")
        except Exception as e:
            rt.log("light: no current sense (%r)" % (e,), keep=True)
    if not safe:
        stored = rt.store.get(_PROFILE_KEY)
        if type(stored) is dict:
            try:
                app.ctl.profile = Profile.from_msg(stored)
            except CommandError as e:
                rt.log("light: stored profile refused (%s): config profile" % (e.field,), keep=True)
        try:
            low = c["motion_low"]
            app.motion = Motion(rt.hal.pin_in("motion", "up" if low else "down"), rt.ticks_ms,
                                c["debounce_ms"], 0 if low else 1)
        except Exception as e:  # no motion input: base level all night, never a crash loop
            rt.log("light: no motion input (%r)" % (e,), keep=True)
            rt.event({"type": "fault", "code": F_CONFIG, "value": 1}, durable=True)
    app.ctl.fader = curve.Fader(c["safe"] * 100)  # the first step fades from the lit boot level
    app._slow(now)
    app._output(now)


def profile(app, msg):
    """A light_profile command: the new profile in force (manual levels cleared) and kept on flash."""
    p = Profile.from_msg(msg)
    app.ctl.profile = p
    app.ctl.clear_manual()
    app.rt.store.put(_PROFILE_KEY, p.to_msg())


def selftest(app):
    out = [("lamp", app.pwm is not None, "pwm duty %d" % app._duty)]
    out.append(("ambient", app.ambient is not None, "raw %d of 65535" % app.raw))
    out.append(("motion", (app.motion is not None or app.ctl.safe) and not app.stuck,
                "stuck" if app.stuck else ("present" if app.motion is not None and app.motion.present
                                           else "idle")))
    if app.lamp_cs is not None:
        out.append(("lamp_cs", not app.monitor.faulty, "%d mA measured" % app.lamp_ma))
    return out

# -- the sun ---------------------------------------------------------------------------------------
# Sunset/sunrise from the date and the pole's position (astronomical clock). With valid time the
# pole switches by the sun, not by its light sensor (which can be dirty, shaded or lit by a
# neighbour). NOAA's low-precision formulae: within a couple of minutes at German latitudes. Runs
# once a day, so floats are fine here.
def sun(app, day):
    """The App's day window (UTC day, dawn, dusk minute) for UTC day `day`, at its configured place."""
    c = app.cfg
    return window(day, c["lat"] / 100, c["lon"] / 100, c["dusk_off"], c["dawn_off"])


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
