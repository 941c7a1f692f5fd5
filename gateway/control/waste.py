"""Waste: fill levels become collection-needed events and a pickup list per site.

Thresholds are per site (near_full < full). An event is raised when a
container crosses a threshold upwards, once; it is re-armed when the container
is emptied (fill back below near_full minus a hysteresis). Fire alarms go up
the moment they arrive (the device's alarm is itself an uplink event; a hot
temperature reading the device did not flag raises the gateway's own). A
sensor fault is one alert, from the device's fault event (its eid makes the id
stable across retransmissions and restarts); a reading of "not measured"
(fill null, which comes with that event) flags the container quietly until a
good reading arrives. A temperature of null is no reading, not a cold bin.
"""

from __future__ import annotations

from gateway.config import SiteConfig
from protocol import codes
from protocol.names import ALARMS, FAULTS

ROLE = "container_sensor"
HYSTERESIS = 10
SENSOR_FAULTS = {c: FAULTS[c] for c in (codes.F_SENSOR_NO_ECHO, codes.F_SENSOR_STUCK, codes.F_SENSOR_RANGE,
                                        codes.F_TEMP_SENSOR)}


class Container:
    __slots__ = ("id", "fill", "temp", "level", "fault", "since", "hot")

    def __init__(self, cid: str):
        self.id = cid
        self.fill = None
        self.temp = None
        self.level = "ok"  # ok | near_full | full
        self.fault = None
        self.since = None
        self.hot = False


class Waste:
    def __init__(self, sites: dict[str, SiteConfig], alert):
        self.sites = sites
        self.alert = alert
        self.containers: dict[str, dict[str, Container]] = {n: {} for n in sites}

    def _c(self, s) -> Container | None:
        by = self.containers.get(s.site)
        if by is None:
            return None
        c = by.get(s.id)
        if c is None:
            c = by[s.id] = Container(s.id)
        return c

    def on_message(self, s, msg: dict, now: float) -> None:
        t = msg["type"]
        c = self._c(s)
        if c is None:
            return
        if t == "fill":
            self._fill(s, c, msg, now)
        elif t == "alarm":
            code = msg["code"]
            if code == codes.A_FIRE:
                c.hot = True
                self.alert(s, "fire", {"source": "device", "value": msg["value"]}, "%s-%d-fire" % (s.id, msg["eid"]), now)
            elif code == codes.A_NEAR_FULL or code == codes.A_FULL:
                self._level(s, c, ALARMS[code], c.fill, now, "%s-%d" % (s.id, msg["eid"]))
            elif code == codes.A_EMPTIED:
                c.level = "ok"
                c.since = None
        elif t == "fault" and msg["code"] in SENSOR_FAULTS:
            c.fault = SENSOR_FAULTS[msg["code"]]
            self.alert(s, "sensor_fault", {"fault": c.fault, "value": msg["value"]}, "%s-%d-sensor" % (s.id, msg["eid"]), now)

    def _fill(self, s, c: Container, msg: dict, now: float) -> None:
        w = self.sites[s.site].waste
        fill, temp = msg["fill"], msg["temp"]
        c.temp = temp
        if temp is None:
            pass
        elif temp >= w.fire_temp and not c.hot:
            c.hot = True
            self.alert(s, "fire", {"source": "gateway", "temp": temp}, "%s-fire-%d" % (s.id, int(now * 1000)), now)
        elif temp < w.fire_temp - 10:
            c.hot = False
        if fill is None:
            if c.fault is None:
                c.fault = "no_reading"
            return
        if c.fault is not None:
            c.fault = None
        c.fill = fill
        if fill >= w.full:
            self._level(s, c, "full", fill, now, "%s-full-%d" % (s.id, int(now * 1000)))
        elif fill >= w.near_full:
            self._level(s, c, "near_full", fill, now, "%s-near-%d" % (s.id, int(now * 1000)))
        elif fill < w.near_full - HYSTERESIS and c.level != "ok":
            c.level = "ok"
            c.since = None
            self.alert(s, "emptied", {"fill": fill}, "%s-empty-%d" % (s.id, int(now * 1000)), now)

    def _level(self, s, c: Container, level: str, fill, now: float, event_id: str) -> None:
        rank = {"ok": 0, "near_full": 1, "full": 2}
        if rank[level] <= rank[c.level]:
            return
        c.level = level
        c.since = c.since or now
        self.alert(s, "collection_needed", {"level": level, "fill": fill}, event_id, now)

    def snapshot(self) -> dict:
        return {site: {c.id: [c.fill, c.temp, c.level, c.fault, c.since, c.hot] for c in by.values()}
                for site, by in self.containers.items()}

    def restore(self, snap: dict) -> None:
        for site, by in snap.items():
            if site not in self.containers:
                continue
            for cid, v in by.items():
                c = self.containers[site][cid] = Container(cid)
                c.fill, c.temp, c.level, c.fault, c.since, c.hot = v

    def pickups(self, site: str | None = None) -> dict[str, list[dict]]:
        """Per site: containers to collect, fullest first, then flagged sensors to inspect."""
        out = {}
        for name, by in self.containers.items():
            if site is not None and name != site:
                continue
            todo = [c for c in by.values() if c.level != "ok"]
            todo.sort(key=lambda c: (-(c.fill or 0), c.since or 0))
            out[name] = [{"id": c.id, "level": c.level, "fill": c.fill, "since": c.since, "fault": c.fault}
                         for c in todo]
            out[name] += [{"id": c.id, "level": "inspect", "fill": c.fill, "since": None, "fault": c.fault}
                          for c in by.values() if c.level == "ok" and c.fault]
        return out
