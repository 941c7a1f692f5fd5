"""The hardware boundary: peripherals by logical name, never by pin number.

Pin numbers live in the config's "pins" map, e.g.

    "pins": {"trig": 5, "echo": {"pin": 18, "pull": "down"}, "temp": 34,
             "us": {"uart": 2, "tx": 17, "rx": 16, "baud": 9600}}

App code asks `rt.hal.pin_in("echo")`; a name missing from the map is a
ConfigError naming "pins.echo". Everything here is a thin call into `machine`,
which a virtual board replaces with its simulated module.
"""

import gc

import machine

from protocol.codes import (CAUSE_BROWNOUT, CAUSE_DEEPSLEEP, CAUSE_HARD, CAUSE_POWER_ON, CAUSE_SOFT,
                            CAUSE_UNKNOWN, CAUSE_WATCHDOG)

from common.errors import ConfigError

class Hal:
    def __init__(self, pins):
        self._pins = pins

    def has(self, name):
        return name in self._pins

    def spec(self, name):
        """The pin map entry as a dict ({"pin": n, ...}); ConfigError if absent."""
        v = self._pins.get(name)
        if v is None:
            raise ConfigError("pins." + name, "not in the pin map")
        return {"pin": v} if type(v) is int else v

    def _gpio(self, name):
        n = self.spec(name).get("pin")
        if type(n) is not int:
            raise ConfigError("pins.%s.pin" % name, "a GPIO number is needed")
        return n

    def pin_in(self, name, pull=None):
        """An input Pin; pull is "up", "down" or None (the map's "pull" overrides)."""
        pull = self.spec(name).get("pull", pull)
        p = None
        if pull == "up":
            p = machine.Pin.PULL_UP
        elif pull == "down":
            p = machine.Pin.PULL_DOWN
        elif pull is not None:
            raise ConfigError("pins.%s.pull" % name, "must be up or down")
        n = self._gpio(name)
        return machine.Pin(n, machine.Pin.IN) if p is None else machine.Pin(n, machine.Pin.IN, p)

    def pin_out(self, name, value=0):
        return machine.Pin(self._gpio(name), machine.Pin.OUT, value=value)

    def adc(self, name):
        """An Adc reading microvolts (11 dB attenuation: 0..~3.1 V on an ESP32)."""
        a = machine.ADC(machine.Pin(self._gpio(name)))
        try:
            a.atten(machine.ADC.ATTN_11DB)
        except AttributeError:
            pass
        return Adc(a)

    def pwm(self, name, freq=1000, duty_u16=0):
        return machine.PWM(machine.Pin(self._gpio(name)), freq=freq, duty_u16=duty_u16)

    def uart(self, name, baud=9600):
        """A UART from a map entry {"uart": id, "tx": n, "rx": n, "baud": b}."""
        s = self.spec(name)
        uid = s.get("uart")
        if type(uid) is not int:
            raise ConfigError("pins.%s.uart" % name, "a UART number is needed")
        return make_uart(uid, s.get("baud", baud), s.get("tx", -1), s.get("rx", -1))

    def pulse_us(self, pin, level, timeout_us):
        """Length of the next pulse at `level` on pin (machine.time_pulse_us; <0 on timeout)."""
        return machine.time_pulse_us(pin, level, timeout_us)


class Adc:
    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    def read_uv(self):
        try:
            return self._a.read_uv()
        except AttributeError:  # ports without calibrated reads
            return self._a.read_u16() * 3300000 // 65535

    def read_u16(self):
        return self._a.read_u16()


def make_uart(uid, baud, tx=-1, rx=-1):
    if tx >= 0 and rx >= 0:
        return machine.UART(uid, baudrate=baud, tx=tx, rx=rx, timeout=0)
    return machine.UART(uid, baudrate=baud, timeout=0)


def reset_cause():
    """machine.reset_cause() as an index of protocol.messages.RESET_CAUSES."""
    c = machine.reset_cause()
    for name, idx in (("PWRON_RESET", CAUSE_POWER_ON), ("HARD_RESET", CAUSE_HARD), ("WDT_RESET", CAUSE_WATCHDOG),
                      ("DEEPSLEEP_RESET", CAUSE_DEEPSLEEP), ("SOFT_RESET", CAUSE_SOFT),
                      ("BROWNOUT_RESET", CAUSE_BROWNOUT)):
        if getattr(machine, name, None) == c:
            return idx
    return CAUSE_UNKNOWN


def watchdog(ms):
    """Start the hardware watchdog (it cannot be stopped); None when ms is 0."""
    return machine.WDT(timeout=ms) if ms else None


def reset():
    machine.reset()


def deepsleep(ms):
    machine.deepsleep(ms)


def mem_free():
    return gc.mem_free()


def rtc_memory(data=None):
    """Bytes kept across deep sleep (RTC slow memory); None where the port has none."""
    try:
        r = machine.RTC()
        if data is None:
            return r.memory()
        r.memory(data)
        return data
    except (AttributeError, OSError, TypeError):
        return None
