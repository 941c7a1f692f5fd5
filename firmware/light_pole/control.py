"""The lamp state machine: what level the lamp should have now, and how to get there.

Pure logic (no pins): inputs are night, presence, autonomy and the local
minute; the output is a Fader target. Priority, highest first:
  manual (light_set, bounded by its hold) > presence (full, then hold) >
  prelight (from the gateway's light wave) > base at night > off by day,
then capped by the profile max and curfew windows. In autonomy (no gateway)
and safe mode the floor at night is the safe level, whatever caps say: a pole
nobody can reach errs on the side of light.
"""
from protocol.codes import (LS_AUTONOMOUS, LS_BASE, LS_CURFEW, LS_DAY, LS_FADING, LS_FULL, LS_PRELIGHT,
                            LS_SAFE)

from light_pole.curve import Fader
from common.ticks import ticks_add, ticks_diff

# The telemetry state (SPEC 5, light): LS_DAY lamp off; LS_BASE night, nobody around; LS_FULL
# presence or its hold, also a light_set above base; LS_FADING after the hold; LS_PRELIGHT lit
# ahead of a walker; LS_AUTONOMOUS night with the gateway silent (own motion logic above the
# safe level); LS_SAFE safe mode; LS_CURFEW a curfew window holds the level below what it would be.


class Controller:
    def __init__(self, profile, safe_level=30, now=0):
        self.profile = profile
        self.safe_level = safe_level
        self.fader = Fader(0)
        self.state = LS_DAY
        self.safe = False
        self._full = None  # presence: ticks its hold ends
        self._pre = None  # prelight: (level, ticks it ends)
        self._man = None  # light_set: (level, ticks it ends, or None until changed)

    # -- inputs from commands -------------------------------------------------------
    def set_manual(self, level, hold, now):
        """light_set: for hold seconds, or with 0 until changed (another light_set, a
        light_profile, autonomy or a reboot: it is not persisted)."""
        self._man = (level, ticks_add(now, hold * 1000) if hold > 0 else None)

    def prelight(self, level, hold, now):
        p = self._pre
        if p is not None and ticks_diff(p[1], now) > 0 and p[0] > level:
            level = p[0]
        self._pre = (level, ticks_add(now, hold * 1000)) if hold > 0 else None

    def clear_manual(self):
        self._man = None

    def overridden(self, now):
        """A gateway decision (light_set, prelight) is in force."""
        m = self._man
        p = self._pre
        return (m is not None and (m[1] is None or ticks_diff(m[1], now) > 0)) or \
            (p is not None and ticks_diff(p[1], now) > 0)

    # -- the step -------------------------------------------------------------------
    def update(self, now, night, present, autonomous=False, minute=None):
        """Recompute the target level (percent) and start a fade if it changed.

        night None (not known yet) counts as night. Returns the target in percent.
        """
        p = self.profile
        if night is None:
            night = True
        m = self._man
        if m is not None and m[1] is not None and ticks_diff(m[1], now) <= 0:
            m = self._man = None
        pre = self._pre
        if pre is not None and ticks_diff(pre[1], now) <= 0:
            pre = self._pre = None
        if present:
            self._full = ticks_add(now, p.hold * 1000)
        elif self._full is not None and ticks_diff(self._full, now) <= 0:
            self._full = None

        if self.safe:
            lvl = max(p.base, self.safe_level) if night else 0
            state = LS_SAFE
        elif autonomous and night:
            self._man = None
            self._pre = None
            floor = max(p.base, self.safe_level)
            lvl = max(floor, p.full) if self._full is not None else floor
            lvl = max(min(lvl, p.cap(minute)), floor)
            state = LS_AUTONOMOUS
        else:
            if night:
                lvl, state = p.base, LS_BASE
                if pre is not None and pre[0] > lvl:
                    lvl, state = pre[0], LS_PRELIGHT
                if self._full is not None and p.full >= lvl:
                    lvl, state = p.full, LS_FULL
            else:
                lvl, state = 0, LS_DAY
            if m is not None:
                lvl = m[0]
                state = LS_FULL if lvl > p.base else (LS_BASE if lvl else LS_DAY)
            if lvl > p.max:
                lvl = p.max
            cap = p.cap(minute)
            if lvl > cap:
                lvl, state = cap, LS_CURFEW
        target = lvl * 100
        f = self.fader
        if target != f.target:
            f.go(target, p.fade_up if target > f.value(now) else p.fade_down, now)
        if (state == LS_BASE or state == LS_DAY) and f.busy() and f.value(now) > target:
            state = LS_FADING
        self.state = state
        return lvl

    def level(self, now):
        """Current lamp level in centi-percent (follows the fade)."""
        return self.fader.value(now)
