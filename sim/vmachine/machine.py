# machine (virtual-board build): the ESP32 `machine` API subset park-edge firmware uses.
#
# The MicroPython WebAssembly port has no `machine`; on a virtual board (sim/vboard)
# this module stands in for the hardware. Every call goes to the board's JS side
# (js.vboard) where the host reads and drives the simulated peripherals. Only the
# silicon is simulated: the firmware calling this is the unmodified device code.
# Constants use the ESP32 port's values. MicroPython-compatible (runs in the VM).
import js as _js
import binascii as _binascii
import time as _time

try:
    _vb = _js.vboard
except AttributeError:
    raise ImportError("machine: this is the virtual-board machine module and no vboard is "
                      "running it (use sim/vboard, or the real machine module on a device)")

# reset causes (ESP32 port values)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
# wake reasons
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6
IDLE = 0
SLEEP = 2
DEEPSLEEP = 4

_freq = 160000000


def _pin_id(p):
    if isinstance(p, Pin):
        return p._id
    return p


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, value=None, **kw):
        self._id = id
        self._mode = None
        self._pull = None
        self._irq = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        m = {1: "in", 3: "out", 7: "od"}.get(self._mode, "in") if self._mode is not None else "in"
        pu = {2: "up", 1: "down"}.get(self._pull) if self._pull is not None else None
        _vb.pin_init(self._id, m, pu, value)

    def value(self, v=None):
        if v is None:
            return _vb.pin_read(self._id)
        _vb.pin_write(self._id, 1 if v else 0)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        _vb.pin_write(self._id, 1)

    def off(self):
        _vb.pin_write(self._id, 0)

    high = on
    low = off

    def irq(self, handler=None, trigger=3, wake=None, hard=False):
        """Edge interrupt; the handler runs between firmware steps (soft IRQ, like hard=False)."""
        if handler is None:
            _vb.pin_irq(self._id, 0, None)
            self._irq = None
            return None
        pin = self

        def _fire(_id):
            handler(pin)

        self._irq = _fire
        _vb.pin_irq(self._id, trigger, _fire)
        return self

    def __repr__(self):
        return "Pin(%s)" % (self._id,)


class Signal:
    def __init__(self, pin, *args, invert=False, **kw):
        if not isinstance(pin, Pin):
            pin = Pin(pin, *args, **kw)
        self._pin = pin
        self._inv = invert

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ (1 if self._inv else 0)
        self._pin.value((1 if v else 0) ^ (1 if self._inv else 0))

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, v=None):
        return self.value(v)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12

    def __init__(self, pin, atten=None):
        self._id = _pin_id(pin)
        self.atten(3 if atten is None else atten)

    def atten(self, a):
        _vb.adc_atten(self._id, a)

    def width(self, w):
        pass

    def read_u16(self):
        return _vb.adc_read_u16(self._id)

    def read_uv(self):
        return _vb.adc_read_uv(self._id)

    def read(self):
        return _vb.adc_read_u16(self._id) >> 4


class PWM:
    def __init__(self, pin, freq=5000, duty_u16=None, duty=None, duty_ns=None, **kw):
        self._id = _pin_id(pin)
        self._freq = freq
        self._duty = 0
        if duty is not None:
            self._duty = (duty * 65535) // 1023
        if duty_u16 is not None:
            self._duty = duty_u16
        self._push()

    def _push(self):
        _vb.pwm_set(self._id, self._freq, self._duty)

    def init(self, freq=None, duty_u16=None, duty=None, **kw):
        if freq is not None:
            self._freq = freq
        if duty is not None:
            self._duty = (duty * 65535) // 1023
        if duty_u16 is not None:
            self._duty = duty_u16
        self._push()

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        self._push()

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 must be 0-65535")
        self._duty = d
        self._push()

    def duty(self, d=None):
        if d is None:
            return (self._duty * 1023 + 32767) // 65535
        self.duty_u16((d * 65535) // 1023)

    def deinit(self):
        _vb.pwm_deinit(self._id)


class UART:
    INV_TX = 1
    INV_RX = 2
    RTS = 1
    CTS = 2

    def __init__(self, id, baudrate=115200, **kw):
        self._id = id
        self._baud = baudrate

    def init(self, baudrate=115200, **kw):
        self._baud = baudrate

    def deinit(self):
        pass

    def write(self, buf):
        if isinstance(buf, str):
            buf = buf.encode()
        if not buf:
            return 0
        return _vb.uart_write(self._id, _binascii.hexlify(bytes(buf)).decode())

    def any(self):
        return _vb.uart_any(self._id)

    def read(self, n=-1):
        h = _vb.uart_read(self._id, n)
        if not h:
            return None
        return _binascii.unhexlify(h)

    def readinto(self, buf, n=None):
        if n is None:
            n = len(buf)
        h = _vb.uart_read(self._id, n)
        if not h:
            return None
        data = _binascii.unhexlify(h)
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        out = b""
        while _vb.uart_any(self._id):
            c = self.read(1)
            out += c
            if c == b"\n":
                break
        return out or None

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        """(year, month, day, weekday, hours, minutes, seconds, subseconds), UTC."""
        if dt is None:
            ms = int(_vb.unix_ms())
            t = _time.gmtime(ms // 1000)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], (ms % 1000) * 1000)
        secs = _time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        sub = dt[7] if len(dt) > 7 else 0
        _vb.set_unix_ms(str(secs * 1000 + sub // 1000))

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        """RTC slow memory: survives deep sleep and resets, lost on power-off (as on the ESP32)."""
        if data is None:
            h = _vb.rtc_memory(None)
            return _binascii.unhexlify(h) if h else b""
        if len(data) > 2048:
            raise ValueError("RTC memory is 2048 bytes")
        _vb.rtc_memory(_binascii.hexlify(bytes(data)).decode())


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("timeout")
        _vb.wdt_start(int(timeout))

    def feed(self):
        _vb.wdt_feed()


class Timer:
    """Soft timer on the virtual clock (ESP32 hardware timers run callbacks as soft IRQs)."""
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        self._task = None
        if kw:
            self.init(**kw)

    def init(self, mode=PERIODIC, period=-1, freq=-1, callback=None, **kw):
        import asyncio
        import vclock
        self.deinit()
        if freq > 0:
            period = 1000 // freq
        if period < 0:
            period = 1000
        tim = self

        async def _run():
            while True:
                await vclock.sleep_ms(period)
                if callback:
                    callback(tim)
                if mode == 0:
                    return

        self._task = asyncio.create_task(_run())

    def deinit(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None


def deepsleep(ms=-1):
    """Never returns: the board records the call and reboots (DEEPSLEEP_RESET) after `ms`."""
    _vb.deepsleep(int(ms))


def lightsleep(ms=-1):
    _vb.lightsleep(int(ms))


def reset():
    """Never returns: hard reset (HARD_RESET), flash kept."""
    _vb.reset("hard")


def soft_reset():
    _vb.reset("soft")


def reset_cause():
    return _vb.reset_cause()


def wake_reason():
    return _vb.wake_reason()


def unique_id():
    return _binascii.unhexlify(_vb.unique_id())


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq = hz


def idle():
    pass


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    """Echo pulse of the simulated ultrasonic sensor: 2*distance/speed_of_sound(T).

    Returns -1 if no pulse started (never triggered / no echo), -2 if it exceeds timeout_us.
    """
    return _vb.pulse_us(_pin_id(pin), pulse_level, timeout_us)


def bootloader():
    _vb.reset("hard")
