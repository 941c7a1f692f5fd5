"""From distance readings to a fill level, faults and alarms (pure logic, no hardware).

Fill is 0 % at depth_mm (sensor to the bottom, calibrated at install) and 100 % at
top_mm (sensor to the full line). A measurement that cannot be trusted gives a
fault and no fill: never a fake 0 % or 100 %.
"""

from protocol.codes import F_SENSOR_NO_ECHO, F_SENSOR_RANGE

from container_sensor.ultrasonic import median

RANGE_MARGIN_MM = 150
"""How far beyond the calibrated depth a reading may be before it is out of range."""
STUCK_DT_C = 3
"""Air temperature swing over which a frozen raw reading proves the sensor stuck."""


def assess(raws, to_mm, temp_c, cfg, depth):
    """Median of the raw pings -> (distance_mm, fault, value); fault 0 when good.

    Fewer than half the pings answering is no_echo; a distance inside the blind
    zone (something on the sensor), beyond its range or well below the bottom is
    out of range.
    """
    good = [r for r in raws if r is not None]
    if len(good) * 2 < len(raws) or not good:
        return None, F_SENSOR_NO_ECHO, len(raws) - len(good)
    d = to_mm(median(good), temp_c)
    if d < cfg["min_mm"] or d > cfg["max_mm"] or (depth and d > depth + RANGE_MARGIN_MM):
        return d, F_SENSOR_RANGE, d
    return d, 0, 0


def fill_pct(d, depth, top):
    if depth <= top:
        return None
    f = (depth - d) * 100 // (depth - top)
    return 0 if f < 0 else 100 if f > 100 else f


class Stuck:
    """A raw reading (echo time) that stays bit-identical while the air temperature moves
    by STUCK_DT_C cannot come from sound: the sensor (or its UART) is frozen."""

    def __init__(self, state=None):
        s = state or [None, 0, 0, 0]
        self.raw, self.n, self.tmin, self.tmax = s

    def state(self):
        return [self.raw, self.n, self.tmin, self.tmax]

    def update(self, raw, temp_c, limit):
        if raw is None or raw != self.raw:
            self.raw, self.n, self.tmin, self.tmax = raw, 1, temp_c, temp_c
            return False
        self.n += 1
        if temp_c < self.tmin:
            self.tmin = temp_c
        if temp_c > self.tmax:
            self.tmax = temp_c
        return limit > 0 and self.n >= limit and self.tmax - self.tmin >= STUCK_DT_C


def band(fill, prev, cfg):
    """0 normal, 1 near full, 2 full, with hysteresis hyst_pct on the way down."""
    h = cfg["hyst_pct"]
    if fill >= cfg["full_pct"]:
        return 2
    if prev == 2 and fill >= cfg["full_pct"] - h:
        return 2
    if fill >= cfg["near_pct"]:
        return 1
    if prev >= 1 and fill >= cfg["near_pct"] - h:
        return 1
    return 0


def temp_from_uv(uv, kind):
    """°C from an analog sensor's output, or None when the reading is implausible."""
    if kind == "tmp36":
        c = (uv - 500000) // 10000
    elif kind == "lm35":
        c = uv // 10000
    else:
        return None
    if uv <= 0 or c < -40 or c > 125:
        return None
    return c
