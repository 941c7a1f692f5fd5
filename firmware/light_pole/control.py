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
        self._full_until = now
        self._full = False
        self._pre_level = 0
        self._pre_until = now
        self._pre = False
        self._man_level = 0
        self._man_until = now
        self._man = False
        self._man_timed = False

    # -- inputs from commands -------------------------------------------------------
    def set_manual(self, level, hold_s, now):
        """light_set: for hold_s seconds, or with 0 until changed (another light_set, a
        light_profile, autonomy or a reboot: it is not persisted)."""
        self._man_level = level
        self._man = True
        self._man_timed = hold_s > 0
        self._man_until = ticks_add(now, hold_s * 1000)

    def prelight(self, level, hold_s, now):
        if self._pre and ticks_diff(self._pre_until, now) > 0 and self._pre_level > level:
            level = self._pre_level
        self._pre_level = level
        self._pre = hold_s > 0
        self._pre_until = ticks_add(now, hold_s * 1000)

    def clear_manual(self):
        self._man = False

    def overridden(self, now):
        """A gateway decision (light_set, prelight) is in force."""
        return (self._man and (not self._man_timed or ticks_diff(self._man_until, now) > 0)) or \
            (self._pre and ticks_diff(self._pre_until, now) > 0)

    # -- the step -------------------------------------------------------------------
    def update(self, now, night, present, autonomous=False, minute=None):
        """Recompute the target level (percent) and start a fade if it changed.

        night None (not known yet) counts as night. Returns the target in percent.
        """
        p = self.profile
        if night is None:
            night = True
        if self._man and self._man_timed and ticks_diff(self._man_until, now) <= 0:
            self._man = False
        if self._pre and ticks_diff(self._pre_until, now) <= 0:
            self._pre = False
        if present:
            self._full = True
            self._full_until = ticks_add(now, p.hold * 1000)
        elif self._full and ticks_diff(self._full_until, now) <= 0:
            self._full = False

        if self.safe:
            lvl = max(p.base, self.safe_level) if night else 0
            state = LS_SAFE
        elif autonomous and night:
            self._man = False
            self._pre = False
            floor = max(p.base, self.safe_level)
            lvl = max(floor, p.full) if self._full else floor
            lvl = max(min(lvl, p.cap(minute)), floor)
            state = LS_AUTONOMOUS
        else:
            if night:
                lvl, state = p.base, LS_BASE
                if self._pre and self._pre_level > lvl:
                    lvl, state = self._pre_level, LS_PRELIGHT
                if self._full and p.full >= lvl:
                    lvl, state = p.full, LS_FULL
            else:
                lvl, state = 0, LS_DAY
            if self._man:
                lvl = self._man_level
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
