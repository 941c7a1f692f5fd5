# TEST DOUBLE of a role App for runtime tests on a virtual board (deployed as
# /lib/light_pole/app.py so the runtime loads it for role "light_pole"). The test
# drives it through GPIO inputs: crash (12) makes step() raise, bootcrash (14) makes
# start() raise in normal mode, evt (13) rising queues a motion event, hang (26) makes
# step() spin forever once (it never returns to the loop; a mark in RTC memory, which
# survives the watchdog reset, keeps the next boot from spinning again); hog (27) makes
# each step in normal mode keep 2 KB more, until the heap budget refuses it.
import machine
from protocol.codes import E_BAD_VALUE, E_NOT_SUPPORTED

from common.config import BOOL, INT, ConfigError
from common.errors import CommandError


class App:
    ROLE = "light_pole"
    CAPS = 16
    FW = 990102
    SCHEMA = {"base": (INT, 20, 0, 100), "full": (INT, 100, 0, 100), "night": (BOOL, True, None, None),
              "step_ms": (INT, 50, 10, 60000)}

    def __init__(self, rt):
        self.rt = rt
        self.evt_was = 0

    def start(self, safe):
        hal = self.rt.hal
        self.crash = hal.pin_in("crash")
        self.boot_crash = hal.pin_in("bootcrash")
        self.evt = hal.pin_in("evt")
        self.hang = hal.pin_in("hang")
        self.hog = hal.pin_in("hog")
        self.safe = safe
        self.hoard = []
        self.out = hal.pin_out("lamp", 1 if safe else 0)
        if self.boot_crash.value() and not safe:
            raise RuntimeError("probe: start crash")

    def step(self, now):
        if self.crash.value():
            raise RuntimeError("probe: step crash")
        if self.hang.value() and machine.RTC().memory() != b"hung":
            machine.RTC().memory(b"hung")
            while True:
                pass
        if self.hog.value() and not self.safe:
            self.hoard.append(bytearray(2048))
        v = self.evt.value()
        if v and not self.evt_was:
            self.rt.event({"type": "motion", "count": 1})
        self.evt_was = v
        return self.rt.cfg["step_ms"]

    def on_command(self, msg):
        if msg["type"] == "light_set":
            if msg["level"] > self.rt.cfg["full"]:
                raise CommandError(E_BAD_VALUE, "level")
            return None
        raise CommandError(E_NOT_SUPPORTED, "")

    def on_config(self, v):
        if v["base"] > v["full"]:
            raise ConfigError("base", "above full")

    def telemetry(self):
        return {"type": "light", "level": self.rt.cfg["base"], "state": 1, "ambient": 0, "lamp_ma": 0}

    def selftest(self):
        return [("probe", True, "")]
