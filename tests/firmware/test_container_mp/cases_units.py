# container_sensor pure logic; runs under CPython (test_container_units.py) and inside
# genuine MicroPython (the same file through mpvm). No pytest here: plain asserts.
from container_sensor import level, ultrasonic
from protocol import codes
from container_sensor.ultrasonic import UartSensor, echo_to_mm, median, rescale_mm

CFG = {"min_mm": 200, "max_mm": 4500, "near_pct": 80, "full_pct": 95, "hyst_pct": 5}


class _Uart:
    def __init__(self):
        self.rx = bytearray()

    def any(self):
        return len(self.rx)

    def read(self, n):
        b = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return b


class _Hal:
    def __init__(self):
        self.u = _Uart()

    def uart(self, name, baud):
        assert name == "us"
        return self.u


def _frame(mm):
    h, l = mm >> 8, mm & 0xFF
    return bytes((0xFF, h, l, (0xFF + h + l) & 0xFF))


def test_echo_time_to_mm_follows_temperature():
    # 1 m at 20 °C is a 5824 µs round trip; the same echo time at 0 °C is a shorter distance
    assert echo_to_mm(5824, 20) == 1000
    assert echo_to_mm(5824, 0) == 965
    assert echo_to_mm(5824, 40) == 1035


def test_rescale_uart_distance():
    assert rescale_mm(1000, 20) == 1000
    assert rescale_mm(1000, -20) == 929


def test_median_resists_outliers():
    assert median([700, 702, 4000, 701, 30]) == 701
    assert median([10, 20]) == 15


def test_assess_faults():
    ident = lambda raw, t: raw
    assert level.assess([700, 701, None, 699, 700], ident, 20, CFG, 1200) == (700, 0, 0)
    assert level.assess([None, None, None, 700, 701], ident, 20, CFG, 1200) == (None, codes.F_SENSOR_NO_ECHO, 3)
    assert level.assess([150, 150, 151], ident, 20, CFG, 1200)[1:] == (codes.F_SENSOR_RANGE, 150)
    assert level.assess([4600, 4600, 4600], ident, 20, CFG, 0)[1] == codes.F_SENSOR_RANGE
    assert level.assess([1400, 1400, 1400], ident, 20, CFG, 1200)[1] == codes.F_SENSOR_RANGE
    assert level.assess([1300, 1300, 1300], ident, 20, CFG, 1200)[1] == 0  # within the margin


def test_fill_clamped_and_none_without_depth():
    assert level.fill_pct(725, 1200, 250) == 50
    assert level.fill_pct(1250, 1200, 250) == 0
    assert level.fill_pct(240, 1200, 250) == 100
    assert level.fill_pct(700, 200, 250) is None


def test_band_hysteresis():
    assert level.band(79, 0, CFG) == 0
    assert level.band(80, 0, CFG) == 1
    assert level.band(76, 1, CFG) == 1
    assert level.band(74, 1, CFG) == 0
    assert level.band(95, 1, CFG) == 2
    assert level.band(91, 2, CFG) == 2
    assert level.band(89, 2, CFG) == 1


def test_stuck_needs_identical_raw_and_temperature_swing():
    s = level.Stuck()
    assert not s.update(5000, 10, 3)
    assert not s.update(5000, 10, 3)
    assert not s.update(5000, 11, 3)        # three identical, but the air barely changed
    assert s.update(5000, 13, 3)
    s2 = level.Stuck(s.state())               # survives deep sleep as a list
    assert s2.update(5000, 14, 3)
    assert not s2.update(5001, 14, 3)         # a changing echo resets it
    assert not level.Stuck().update(None, 10, 3)
    t = level.Stuck()
    for c in (0, 10, 20, 30):
        assert not t.update(5000, c, 0)       # 0 = off


def test_temperature_sensors():
    assert level.temp_from_uv(750000, "tmp36") == 25
    assert level.temp_from_uv(300000, "tmp36") == -20
    assert level.temp_from_uv(0, "tmp36") is None          # open input
    assert level.temp_from_uv(3100000, "tmp36") is None     # shorted to the rail
    assert level.temp_from_uv(250000, "lm35") == 25
    assert level.temp_from_uv(250000, "none") is None


def test_uart_sensor_frames():
    h = _Hal()
    s = UartSensor(h)
    assert s.ping() is None
    h.u.rx.extend(b"\x12\x34" + _frame(1234) + _frame(1250)[:2])
    assert s.ping() == 1234
    h.u.rx.extend(_frame(1250)[2:])
    assert s.ping() == 1250
    bad = bytearray(_frame(999))
    bad[3] ^= 1
    h.u.rx.extend(bytes(bad))
    assert s.ping() is None and s.bad >= 1
    h.u.rx.extend(_frame(0))                 # 0 mm: the sensor's "no target"
    assert s.ping() is None
    h.u.rx.extend(b"\xff" * 300)             # junk never grows the buffer without bound
    s.ping()
    assert len(s._buf) < 64
    assert s.to_mm(1000, 20) == 1000
