# FAKE `machine` module for runtime tests inside a plain MicroPython VM (mounted as /lib/machine.py).
# Not the virtual board (that is sim/vmachine + sim/vboard): a minimal,
# scriptable stand-in so runtime logic can be tested in genuine MicroPython in-process.
# reset()/deepsleep() raise so a test can "reboot" the firmware with flash kept.

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

cause = PWRON_RESET
uarts = {}
pins = {}
adc_uv = {}
pulses = {}
rtc_dt = [2000, 1, 1, 5, 0, 0, 0, 0]
rtc_mem = [b""]
wdt = []
sleeps = []


class Reset(Exception):
    pass


class DeepSleep(Exception):
    pass


def reset_cause():
    return cause


def reset():
    raise Reset()


def deepsleep(ms=0):
    sleeps.append(ms)
    raise DeepSleep(ms)


def time_pulse_us(pin, level, timeout_us):
    q = pulses.get(pin.id)
    if not q:
        return -1
    v = q.pop(0) if len(q) > 1 else q[0]
    return v


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 2
    PULL_DOWN = 3

    def __init__(self, id, mode=-1, pull=None, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self.v = value or 0
        pins[id] = self

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v

    def on(self):
        self.v = 1

    def off(self):
        self.v = 0

    def irq(self, handler=None, trigger=0):
        self.handler = handler


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self.pin = pin

    def atten(self, a):
        pass

    def read_uv(self):
        return adc_uv.get(self.pin.id, 0)

    def read_u16(self):
        return adc_uv.get(self.pin.id, 0) * 65535 // 3300000


class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0):
        self.pin = pin
        self.f = freq
        self.d = duty_u16

    def duty_u16(self, d=None):
        if d is None:
            return self.d
        self.d = d

    def freq(self, f=None):
        if f is None:
            return self.f
        self.f = f


class UART:
    def __init__(self, id, baudrate=9600, tx=None, rx=None, timeout=0):
        self.id = id
        self.rx = bytearray()
        self.tx = bytearray()
        uarts[id] = self

    def any(self):
        return len(self.rx)

    def read(self, n=-1):
        if not self.rx:
            return None
        if n < 0:
            n = len(self.rx)
        b = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return b

    def write(self, b):
        self.tx.extend(b)
        return len(b)


class RTC:
    def datetime(self, t=None):
        if t is None:
            return tuple(rtc_dt)
        rtc_dt[:] = list(t)

    def memory(self, data=None):
        if data is None:
            return rtc_mem[0]
        rtc_mem[0] = bytes(data)


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        wdt.append(self)

    def feed(self):
        self.feeds += 1
