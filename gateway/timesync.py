"""Is the gateway's own clock synchronised? Devices get time from the gateway only when it is.

Tokens, curfews and every device clock follow the gateway's time, so a Pi that
booted without network (no RTC: its clock starts where it stopped) must not
hand that time out. Synchronised means one of:

- systemd-timesyncd's marker `/run/systemd/timesync/synchronized` exists;
- the kernel's NTP state (adjtimex, what `timedatectl` shows as "System clock
  synchronized") is not unsynchronised: chrony and ntpd set it;
- the operator trusts the clock (`trust_clock = true` in [gateway]: a
  gateway with a battery-backed RTC, or a VM whose host keeps time).

The answer is cached for a few seconds: the session asks per hello and heartbeat.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time

__all__ = ["MARKER", "status", "synchronised", "time_for_device"]

log = logging.getLogger("park.timesync")

MARKER = "/run/systemd/timesync/synchronized"
RECHECK_S = 10.0

_TIME_ERROR = 5  # adjtimex return value: clock not synchronised
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex up to `status`, then room for the rest (its size differs between kernels and ABIs)
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("_rest", ctypes.c_byte * 256)]


def kernel_synchronised() -> bool | None:
    """The kernel's NTP state through adjtimex(2) with modes 0 (read only); None if it cannot be read."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tx = _Timex()
        rc = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if rc < 0:
        return None
    return rc != _TIME_ERROR and not tx.status & _STA_UNSYNC


_cache: dict[bool, tuple[float, str | None]] = {}


def source(trust: bool = False) -> str | None:
    """What makes the clock trustworthy ("timesyncd", "kernel", "trust_clock"), or None."""
    if trust:
        return "trust_clock"
    if os.path.exists(MARKER):
        return "timesyncd"
    if kernel_synchronised():
        return "kernel"
    return None


def _cached(trust: bool) -> str | None:
    now = time.monotonic()
    hit = _cache.get(trust)
    if hit is not None and now - hit[0] < RECHECK_S:
        return hit[1]
    src = source(trust)
    if hit is not None and (hit[1] is None) != (src is None):
        log.warning("gateway clock %s", "synchronised (%s): devices get time again" % src if src else
                    "no longer synchronised: devices get no time until it is")
    _cache[trust] = (now, src)
    return src


def synchronised(trust: bool = False) -> bool:
    return _cached(trust) is not None


def time_for_device(now: float, trust: bool = False) -> int:
    """Unix seconds for a welcome, or 0 (SPEC: below the valid range, the device keeps its own clock)."""
    return int(now) if synchronised(trust) else 0


def status(trust: bool = False) -> dict:
    src = _cached(trust)
    return {"synchronised": src is not None, "source": src}
