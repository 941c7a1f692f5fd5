"""The light pole's boot and rare paths: building the App, its config (boot and config
command), a new profile, the self test.

light_pole.app imports this module when one of them runs and forgets it after
(common.forget), so a pole in service holds only its control loop
(docs/firmware.md#footprint).
"""
from common.errors import CommandError, ConfigError

from light_pole import control, curve, lamp
from protocol.codes import F_CONFIG

from light_pole.app import _NO_LAMP, PROFILE_KEY
from light_pole.daynight import DayNight
from light_pole.motion import Motion
from light_pole.profile import Profile, windows
from light_pole.sun import SunClock

PROFILE_KEYS = ("base", "full", "hold", "fade_up", "fade_down", "max", "curfew")


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


def _changed(old, new, keys):
    if old is None:
        return True
    for k in keys:
        if old[k] != new[k]:
            return True
    return False


def init(app):
    """The App's config (or the schema defaults when it is inconsistent) and its controller."""
    rt = app.rt
    try:
        configure(app, rt.cfg, None)
    except ConfigError as e:
        # per-field valid but inconsistent (the runtime checks fields only): run on the
        # defaults rather than crash-loop with the lamp dark, and say so
        rt.log("light: config refused (%s): defaults" % (e,), keep=True)
        rt.event({"type": "fault", "code": F_CONFIG, "value": 0}, durable=True)
        from common.config import defaults  # at boot, before common.start drops the module
        configure(app, defaults(app.SCHEMA), None)
    app.ctl = control.Controller(_config_profile(app), app.cfg["safe"])


def configure(app, c, old):
    """Check and apply a whole config; parts whose settings did not change keep their state
    (a day/night decision in its dwell, a reported lamp fault)."""
    if c["light_above"] <= c["dark_below"]:
        raise ConfigError("light_above", "must be above dark_below")
    if c["full"] < c["base"]:
        raise ConfigError("full", "must not be below base")
    curfew = parse_curfew(c["curfew"])
    app.cfg = c
    app.curfew = curfew
    if _changed(old, c, ("dark_below", "light_above", "dn_dwell_s")):
        app.dn = DayNight(c["dark_below"], c["light_above"], c["dn_dwell_s"] * 1000)
    if _changed(old, c, ("lat", "lon", "dusk_off", "dawn_off")):
        app.sun = SunClock(c["lat"] / 100, c["lon"] / 100, c["dusk_off"], c["dawn_off"])
    if _changed(old, c, ("lamp_ma",)):
        app.monitor = lamp.LampMonitor(c["lamp_ma"])


def _config_profile(app):
    c = app.cfg
    return Profile(c["base"], c["full"], c["hold"], c["fade_up"], c["fade_down"], c["max"], app.curfew)


def on_config(app, values):
    """A config command (already range-checked): cross-checks, then applied at once."""
    old = app.cfg
    try:
        configure(app, values, old)
    except Exception:
        configure(app, old, values)
        raise
    app.ctl.safe_level = values["safe"]
    if _changed(old, values, PROFILE_KEYS):
        app.ctl.profile = _config_profile(app)
        app.rt.store.delete(PROFILE_KEY)  # the operator's config is the profile again
    if app.motion is not None:
        app.motion.debounce_ms = values["debounce_ms"]
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
            app.cs = rt.hal.adc("lamp_cs")
        except Exception as e:
            rt.log("light: no current sense (%r)" % (e,), keep=True)
    if not safe:
        stored = rt.store.get(PROFILE_KEY)
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
    app.rt.store.put(PROFILE_KEY, p.to_msg())


def selftest(app):
    out = [("lamp", app.pwm is not _NO_LAMP, "pwm duty %d" % app._duty)]
    out.append(("ambient", app.ambient is not None, "raw %d" % app.raw_ambient))
    out.append(("motion", (app.motion is not None or app.ctl.safe) and not app.stuck,
                "stuck" if app.stuck else ("present" if app.motion is not None and app.motion.present
                                           else "idle")))
    if app.cs is not None:
        out.append(("lamp_cs", not app.monitor.faulty, "%d mA" % app.lamp_ma))
    return out
