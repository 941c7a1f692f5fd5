"""Lighting: the wave of light ahead of a walker, bounded by night, curfew and maximum windows.

Poles dim and brighten themselves on their own motion sensor (the firmware
does that without the gateway). The gateway adds what one pole cannot know:
the path graph. Motion at a pole pre-lights its neighbours up to `hops` away,
only while it is dark at the site (NOAA sunrise/sunset for its latitude and
longitude, computed locally), and never above the curfew cap in force. At
dusk, dawn and each curfew boundary every pole gets a fresh profile; a lamp
that draws no current while lit is raised as an alert.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging

from gateway.config import CurfewWindow, LightingConfig, SiteConfig
from gateway.control.astro import is_dark
from protocol import codes, rules

log = logging.getLogger("park.lighting")

ROLE = "light_pole"


class PathGraph:
    """Undirected graph of poles; neighbours(p, n) gives {pole: hops} within n hops, BFS order."""

    def __init__(self, edges):
        self.adj: dict[str, list[str]] = collections.defaultdict(list)
        for a, b in edges:
            if b not in self.adj[a]:
                self.adj[a].append(b)
            if a not in self.adj[b]:
                self.adj[b].append(a)
        self._cache: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {}

    def neighbours(self, pole: str, hops: int) -> tuple[tuple[str, int], ...]:
        key = (pole, hops)
        r = self._cache.get(key)
        if r is None:
            seen = {pole: 0}
            frontier = [pole]
            out = []
            for d in range(1, hops + 1):
                nxt = []
                for p in frontier:
                    for q in self.adj.get(p, ()):
                        if q not in seen:
                            seen[q] = d
                            out.append((q, d))
                            nxt.append(q)
                frontier = nxt
            r = self._cache[key] = tuple(out)
        return r


def curfew_cap(windows: list[CurfewWindow], local_minute: int) -> int:
    cap = 100
    for w in windows:
        if w.contains(local_minute):
            cap = min(cap, w.max_level)
    return cap


class SiteLighting:
    def __init__(self, site: SiteConfig):
        self.site = site
        self.cfg: LightingConfig = site.lighting
        self.graph = PathGraph(self.cfg.edges)
        self.dark: bool | None = None
        self.cap: int | None = None
        self.prelit_until: dict[str, float] = {}
        self.lamp_fault: set[str] = set()

    def evaluate(self, now: float) -> bool:
        """Recompute dark/cap; True if either changed (poles need a new profile)."""
        when = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        dark = is_dark(when, self.site.latitude, self.site.longitude, self.cfg.dusk_offset_min, self.cfg.dawn_offset_min)
        local = when.astimezone(self.site.tz)
        cap = curfew_cap(self.cfg.curfew, local.hour * 60 + local.minute)
        changed = dark != self.dark or cap != self.cap
        self.dark, self.cap = dark, cap
        return changed

    def profile(self, now: float) -> dict:
        c = self.cfg
        base = c.base if self.dark else c.day_level
        full = c.full if self.dark else c.day_level
        return {"type": "light_profile", "base": min(base, c.full), "full": full, "hold": min(c.hold, 3600),
                "fade_up": rules.LIGHT_FADE_UP_MS, "fade_down": rules.LIGHT_FADE_DOWN_MS, "max": full,
                "curfew": [[w.start_min, w.end_min, w.max_level] for w in c.curfew]}


class Lighting:
    """The lighting loop for all sites; `cmd(device_id, msg)` sends a command, `alert(...)` raises one."""

    def __init__(self, sites: dict[str, SiteConfig], cmd, alert, devices):
        self.sites = {name: SiteLighting(s) for name, s in sites.items()}
        self.cmd = cmd
        self.alert = alert
        self.devices = devices  # id -> session, for the role and site of neighbours
        self.prelights = 0

    def tick(self, now: float) -> None:
        for name, sl in self.sites.items():
            if sl.evaluate(now):
                log.info("site %s: %s, level cap %d", name, "dark" if sl.dark else "daylight", sl.cap)
                prof = sl.profile(now)
                for s in list(self.devices.values()):
                    if s.role == ROLE and s.site == name and s.online:
                        self._send(s.id, prof)

    def _send(self, pole: str, msg: dict) -> None:
        f = self.cmd(pole, msg)
        f.add_done_callback(_quiet)

    def on_hello(self, s, now: float) -> None:
        sl = self.sites.get(s.site)
        if sl is not None:
            if sl.dark is None:
                sl.evaluate(now)
            self._send(s.id, sl.profile(now))

    def on_message(self, s, msg: dict, now: float) -> None:
        t = msg["type"]
        sl = self.sites.get(s.site)
        if sl is None:
            return
        if t == "motion":
            self._motion(sl, s, now)
        elif t == "light":
            self._lamp_check(sl, s, msg, now)
        elif t == "fault" and msg["code"] == codes.F_LAMP:
            self._lamp_fault(sl, s, now, "device", msg["value"], "%s-%d-lamp" % (s.id, msg["eid"]))

    def _motion(self, sl: SiteLighting, s, now: float) -> None:
        if sl.dark is None:
            sl.evaluate(now)
        if not sl.dark:
            return
        c = sl.cfg
        level = min(c.prelight, sl.cap)
        hold = c.hold
        until = sl.prelit_until
        for pole, hops in sl.graph.neighbours(s.id, c.hops):
            # a neighbour still lit for more than half the hold needs no new frame
            if until.get(pole, 0.0) - now > hold / 2:
                continue
            d = self.devices.get(pole)
            if d is None or d.role != ROLE:
                continue
            until[pole] = now + hold
            self.prelights += 1
            self._send(pole, {"type": "prelight", "level": level, "hold": hold, "hops": hops})

    def _lamp_check(self, sl: SiteLighting, s, msg: dict, now: float) -> None:
        """Only for a pole whose hello says it senses lamp current: without the sense input,
        lamp_ma is 0 whatever the lamp does."""
        if s.caps is None or not s.caps & codes.CAP_CURRENT_SENSE:
            return
        if msg["level"] > 0 and msg["lamp_ma"] < sl.cfg.fault_ma:
            if s.id not in sl.lamp_fault:
                self._lamp_fault(sl, s, now, "no_current", msg["lamp_ma"], "%s-lamp-%d" % (s.id, int(now * 1000)))
        elif msg["level"] > 0 and s.id in sl.lamp_fault:
            sl.lamp_fault.discard(s.id)
            self.alert(s, "lamp_ok", {"lamp_ma": msg["lamp_ma"]}, "%s-lampok-%d" % (s.id, int(now * 1000)), now)

    def _lamp_fault(self, sl, s, now, why, value, event_id) -> None:
        sl.lamp_fault.add(s.id)
        self.alert(s, "lamp_fault", {"reason": why, "value": value}, event_id, now)

    def snapshot(self) -> dict:
        return {name: sorted(sl.lamp_fault) for name, sl in self.sites.items()}

    def restore(self, snap: dict) -> None:
        for name, faults in snap.items():
            if name in self.sites:
                self.sites[name].lamp_fault = set(faults)

    def status(self) -> dict:
        return {name: {"dark": sl.dark, "cap": sl.cap, "lamp_faults": sorted(sl.lamp_fault)}
                for name, sl in self.sites.items()}


def _quiet(f) -> None:
    if not f.cancelled():
        e = f.exception()
        if e is not None:
            log.info("lighting command failed: %s", e)
