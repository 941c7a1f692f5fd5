"""Container fill sensor App: each wake takes `pings` readings, turns their median into
a fill level, raises alarms and faults, reports when something changed or a report
is due, and asks the runtime for a deep sleep (shorter as the bin nears full).

State that must survive the sleep (last fill, band, alarm latches, report timer,
stuck detector) lives in RTC memory via rt.retain; the install calibration of the
depth lives on flash (/state/cs_depth.json).
"""

from protocol.codes import (A_EMPTIED, A_FIRE, A_FULL, A_LOW_BATTERY, A_NEAR_FULL, A_TILT, CAP_BATTERY,
                            CAP_TEMPERATURE, CAP_ULTRASONIC_TRIG, CAP_ULTRASONIC_UART, E_NOT_SUPPORTED,
                            F_SENSOR_STUCK, F_TEMP_SENSOR)

from common.config import CHOICE, INT, ConfigError
from common.errors import CommandError

from common.ticks import ticks_add, ticks_diff

from container_sensor import level
from container_sensor.ultrasonic import TrigEcho, UartSensor, median

DEPTH_KEY = "cs_depth"
HOLD_MS = 5000
"""How long a fill report waits for the ack of its wake's fault event (a hello, a welcome and
an ack take well under this); then it goes anyway."""


class App:
    ROLE = "container_sensor"
    CAPS = CAP_ULTRASONIC_TRIG | CAP_ULTRASONIC_UART | CAP_TEMPERATURE | CAP_BATTERY
    FW = 10000
    SCHEMA = {
        "sensor": (CHOICE, "trig", ("trig", "uart"), None),
        "depth_mm": (INT, 0, 0, 8000),       # sensor to bottom; 0 = calibrate on the next good reading
        "top_mm": (INT, 250, 0, 4000),       # sensor to the 100 % line
        "min_mm": (INT, 200, 20, 2000),      # blind zone: closer means blocked
        "max_mm": (INT, 4500, 300, 8000),    # sensor range
        "pings": (INT, 5, 3, 15),
        "ping_gap_ms": (INT, 60, 10, 1000),
        "interval_s": (INT, 900, 30, 86400),  # sampling period
        "fast_s": (INT, 300, 30, 86400),      # sampling period at near-full/full or fire
        "report_s": (INT, 3600, 60, 86400),   # longest time without a fill report
        "delta_pct": (INT, 10, 1, 100),       # report at once on a change this large
        "near_pct": (INT, 80, 1, 100),
        "full_pct": (INT, 95, 1, 100),
        "hyst_pct": (INT, 5, 0, 50),
        "drop_pct": (INT, 40, 5, 100),        # a drop this sudden means emptied
        "fire_c": (INT, 70, 30, 125),
        "temp_kind": (CHOICE, "tmp36", ("tmp36", "lm35", "none"), None),
        "low_mv": (INT, 3300, 0, 20000),
        "stuck_n": (INT, 4, 0, 1000),         # identical raw readings (with temp change) = stuck; 0 = off
    }

    @staticmethod
    def caps(pins, rtc, cfg):
        """What this board has wired (the hello's caps): the gateway applies only checks that fit."""
        c = CAP_ULTRASONIC_UART if cfg["sensor"] == "uart" else CAP_ULTRASONIC_TRIG
        if cfg["temp_kind"] != "none" and "temp" in pins:
            c |= CAP_TEMPERATURE
        if rtc["batt_div"] and "batt" in pins:
            c |= CAP_BATTERY
        return c

    def __init__(self, rt):
        self.rt = rt
        self.last = None
        self.sent = False
        self._held = None  # a fill report waiting for the ack of this wake's fault event
        self._held_until = 0
        self.raws = []
        self.done = False

    def start(self, safe):
        rt = self.rt
        c = rt.cfg
        self.safe = safe
        self.sensor = UartSensor(rt.hal) if c["sensor"] == "uart" else TrigEcho(rt.hal, c["max_mm"])
        self.temp = rt.hal.adc("temp") if c["temp_kind"] != "none" and rt.hal.has("temp") else None
        self.tilt = rt.hal.pin_in("tilt") if rt.hal.has("tilt") else None
        st = rt.retained.get("cs")
        self.fresh = type(st) is not dict
        if self.fresh:
            st = {"f": None, "b": None, "fire": 0, "lb": 0, "fault": 0, "tf": 0, "tilt": 0, "lr": None, "rep": 0,
                  "sk": None, "t": 20}
        self.st = st  # type: dict
        d = c["depth_mm"] or rt.store.get(DEPTH_KEY, 0)
        self.depth = d if type(d) is int else 0

    def step(self, now):
        if self.done:
            if self._held is not None:
                if ticks_diff(now, self._held_until) < 0:
                    return 100
                self._fault_answered(None, None)  # no answer in time: the report goes anyway
            return 60000
        self.raws.append(self.sensor.ping())
        if len(self.raws) < self.rt.cfg["pings"]:
            return self.rt.cfg["ping_gap_ms"]
        self.done = True
        self._evaluate()
        return 60000 if self._held is None else 100

    def _temp(self):
        if self.temp is None:
            return None, 0
        uv = self.temp.read_uv()
        return level.temp_from_uv(uv, self.rt.cfg["temp_kind"]), uv

    def _evaluate(self):
        rt = self.rt
        c = rt.cfg
        st = self.st
        alarms = []
        faults = []
        t, uv = self._temp()
        if t is None and self.temp is not None:
            if not st["tf"]:
                faults.append((F_TEMP_SENSOR, uv // 1000))
            st["tf"] = 1
        else:
            st["tf"] = 0
        if t is not None:
            st["t"] = t
        ts = st["t"]  # speed of sound uses the last good temperature
        d, fault, value = level.assess(self.raws, self.sensor.to_mm, ts, c, self.depth)
        good = [r for r in self.raws if r is not None]
        if not self.safe:
            sk = level.Stuck(st["sk"])
            if sk.update(median(good) if good and not fault else None, t if t is not None else ts, c["stuck_n"]):
                fault, value = F_SENSOR_STUCK, median(good)
            st["sk"] = sk.state()
        fill = None
        if fault:
            if fault != st["fault"]:
                faults.append((fault, value))
        else:
            if not self.depth:
                self.depth = d
                rt.store.put(DEPTH_KEY, d)
                rt.log("container: depth calibrated at %d mm" % d, keep=True)
            fill = level.fill_pct(d, self.depth, c["top_mm"])
        changed = fault != st["fault"]
        st["fault"] = fault
        b = st["b"] or 0
        if fill is not None:
            b = level.band(fill, st["b"] or 0, c)
        if not self.safe:
            if fill is not None:
                if b > (st["b"] or 0):
                    alarms.append((A_FULL if b == 2 else A_NEAR_FULL, fill))
                if st["f"] is not None and st["f"] - fill >= c["drop_pct"]:
                    alarms.append((A_EMPTIED, fill))
            if t is not None:
                if t >= c["fire_c"] and not st["fire"]:
                    alarms.append((A_FIRE, t))
                    st["fire"] = 1
                elif t < c["fire_c"] - 10:
                    st["fire"] = 0
            if self.tilt is not None:
                tl = self.tilt.value()
                if tl and not st["tilt"]:
                    alarms.append((A_TILT, fill if fill is not None else -1))
                st["tilt"] = tl
            mv = rt.battery_mv()
            if mv is not None:
                if mv < c["low_mv"] and not st["lb"]:
                    alarms.append((A_LOW_BATTERY, mv))
                    st["lb"] = 1
                elif mv > c["low_mv"] + 100:
                    st["lb"] = 0
        changed = changed or b != (st["b"] or 0) or bool(alarms) or bool(faults)
        st["b"] = b
        if fill is not None:
            st["f"] = fill
        for code, v in faults:
            rt.event({"type": "fault", "code": code, "value": v}, durable=True, on_ack=self._fault_answered)
        for code, v in alarms:
            rt.event({"type": "alarm", "code": code, "comp": 0, "value": v}, durable=True)
        fast = b >= 1 or st["fire"]
        interval = c["fast_s"] if fast else c["interval_s"]
        msg = self.telemetry_now(fill, t)
        lr = st["lr"]
        if (self.fresh or changed or st["rep"] <= 0 or
                (fill is not None and (lr is None or abs(fill - lr) >= c["delta_pct"]))):
            if faults:
                self._held = msg  # the gateway hears of the fault before it sees a fill without a level
                self._held_until = ticks_add(rt.ticks_ms(), HOLD_MS)
            else:
                rt.send(msg)
            self.sent = True
            st["lr"] = fill
            st["rep"] = c["report_s"] * 1000
        st["rep"] -= interval * 1000
        rt.retain("cs", st)
        rt.sleep_request(interval * 1000)

    def _fault_answered(self, msg, nack):
        if self._held is not None:
            self.rt.send(self._held)
            self._held = None

    def telemetry_now(self, fill, temp):
        mv = self.rt.battery_mv()
        if temp is not None:
            temp = -40 if temp < -40 else 125 if temp > 125 else temp
        self.last = {"type": "fill", "fill": fill, "temp": temp,
                     "batt": None if mv is None else min(mv // 20, 255)}
        return self.last

    def telemetry(self):
        """The heartbeat's companion report, unless this wake already sent one."""
        return None if self.sent else self.last

    def on_command(self, msg):
        raise CommandError(E_NOT_SUPPORTED, "", "container has no %s" % msg["type"])

    def on_config(self, v):
        if v["near_pct"] >= v["full_pct"]:
            raise ConfigError("near_pct", "must be below full_pct")
        if v["min_mm"] >= v["max_mm"]:
            raise ConfigError("min_mm", "must be below max_mm")
        if v["top_mm"] < v["min_mm"]:
            raise ConfigError("top_mm", "inside the sensor's blind zone (min_mm)")
        if v["depth_mm"] and v["depth_mm"] <= v["top_mm"]:
            raise ConfigError("depth_mm", "must be beyond top_mm")
        if v["depth_mm"] == 0 and self.rt.cfg["depth_mm"] != 0:
            self.rt.store.delete(DEPTH_KEY)  # back to 0: calibrate again on the next wake
        self.depth = v["depth_mm"]

    def selftest(self):
        r = self.sensor.ping()
        t, uv = self._temp()
        out = [("ultrasonic", r is not None, "raw %r" % (r,))]
        if self.temp is not None:
            out.append(("temperature", t is not None, "%d uV" % uv))
        mv = self.rt.battery_mv()
        if mv is not None:
            out.append(("battery", mv > self.rt.cfg["low_mv"], "%d mV" % mv))
        return out
