"""Ingress backpressure: the links slow down while the gateway has too much unfinished work.

`level()` counts messages taken in but not finished (the uplink's backlog: not yet
committed, or committed and waiting in memory for a connected broker). Two stages,
with hysteresis:

- above `shed_at`, telemetry for the backbone is coalesced to the newest message per
  device and type (daemon.Out; the control loops still see every message, events are
  never shed);
- above `high`, every link stops reading: TCP and serial leave bytes in the kernel, whose
  window pushes back on the sender; the TCP server also stops reading new connections;
  the BLE pool connects no new device. Devices retransmit the events nobody acked.

Below `low` both stages end. The level is looked at once per read, and every `poll_s`
while a stage lasts (nothing is read then). The broker being away is not pressure: the
outbox keeps that backlog on disk (docs/uplink.md), and the links keep reading.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Protocol

log = logging.getLogger("park.link")

HIGH = 8000  # the daemon's marks come from [session] backpressure (high), half (shed_at), a quarter (low)
SHED_AT = 4000
LOW = 2000
POLL_S = 0.005


class Reader(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Backpressure:
    """See the module docstring. One per daemon; links attach their readers."""

    def __init__(self, level: Callable[[], int], *, high: int = HIGH, shed_at: int = SHED_AT, low: int = LOW,
                 poll_s: float = POLL_S):
        if not 0 <= low <= shed_at <= high:
            raise ValueError("backpressure marks must be 0 <= low <= shed_at <= high, got %d, %d, %d"
                             % (low, shed_at, high))
        self.level = level
        self.high, self.shed_at, self.low, self.poll_s = high, shed_at, low, poll_s
        self.paused = False
        self.shedding = False
        self.pauses = 0
        self.paused_s = 0.0
        self._paused_at = 0.0
        self._readers: set[Reader] = set()
        self._open: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._relief: list[Callable[[], None]] = []

    def on_relief(self, fn: Callable[[], None]) -> None:
        """fn() whenever shedding ends (daemon.Out sends the telemetry it held back)."""
        self._relief.append(fn)

    def attach(self, r: Reader) -> None:
        self._readers.add(r)
        if self.paused:
            r.pause_reading()

    def detach(self, r: Reader) -> None:
        self._readers.discard(r)

    def check(self) -> bool:
        """After a read: enter a stage if the level passed its mark. True while links may read on."""
        if self.paused:
            return False
        lvl = self.level()
        if lvl > self.shed_at and not self.shedding and self.shed_at < self.high:
            self.shedding = True
            self._arm()
        if lvl > self.high:
            self._pause(lvl)
            return False
        return True

    async def wait_open(self) -> None:
        """Return once reading is allowed (at once when it is)."""
        while self.paused:
            if self._open is None:
                self._open = asyncio.Event()
            await self._open.wait()

    def _pause(self, lvl: int) -> None:
        self.paused = True
        self.pauses += 1
        self._paused_at = time.monotonic()
        if self._open is not None:
            self._open.clear()
        log.info("backpressure: %d messages unfinished (high-water mark %d); links stop reading", lvl, self.high)
        for r in list(self._readers):
            r.pause_reading()
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.poll_s, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if self.level() > self.low:
            self._arm()
            return
        if self.paused:
            self.paused = False
            self.paused_s += time.monotonic() - self._paused_at
            if self._open is not None:
                self._open.set()
            for r in list(self._readers):
                r.resume_reading()
        if self.shedding:
            self.shedding = False
            for fn in self._relief:
                fn()

    def info(self) -> dict:
        return {"paused": self.paused, "shedding": self.shedding, "pauses": self.pauses,
                "paused_s": round(self.paused_s + (time.monotonic() - self._paused_at if self.paused else 0.0), 3),
                "level": self.level(), "high": self.high, "shed_at": self.shed_at, "low": self.low}
