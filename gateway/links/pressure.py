"""Ingress backpressure: the links slow down while the gateway has too much unfinished work.

`level()` counts messages taken in, not finished and held in memory (the uplink's backlog:
not yet committed, or committed and waiting in memory for a connected broker); `unsent()`
counts what a connected broker still has to take (the outbox's depth, disk included). Two
stages, with hysteresis:

- shedding, with `unsent()` or the level above `shed_at`, or above `low` while the event
  loop runs more than `lag_s` late (the CPU is saturated: pre-lights would wait): telemetry
  for the backbone is coalesced to the newest message per device and type (daemon.Out); the
  control loops still see every message, and events are never shed;
- paused, with the level above `high`: every link stops reading. TCP and serial leave the
  bytes in the kernel, whose window pushes back on the sender; the TCP server also stops
  reading new connections; the BLE pool connects no new device. Devices retransmit the
  events nobody acked.

Each stage ends when what it watches is below `low` (shedding also after `CALM_TICKS` ticks
on time, so the stages do not flap). The level is looked at after every read and every
`poll_s` while a stage lasts; the loop's lateness every `TICK_S` once start() was called.
A broker that is away is no pressure: the outbox keeps that backlog on disk
(docs/uplink.md) and the links read on; while a returning broker drains it, new telemetry
is shed, so the backbone gets the newest values sooner.
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
TICK_S = 0.05
LAG_S = 0.02
CALM_TICKS = 20  # a second on time before shedding ends, so the stages do not flap


class Reader(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Backpressure:
    """See the module docstring. One per daemon; links attach their readers."""

    def __init__(self, level: Callable[[], int], *, high: int = HIGH, shed_at: int = SHED_AT, low: int = LOW,
                 poll_s: float = POLL_S, lag_s: float = LAG_S, unsent: Callable[[], int] | None = None):
        if not 0 <= low <= shed_at <= high:
            raise ValueError("backpressure marks must be 0 <= low <= shed_at <= high, got %d, %d, %d"
                             % (low, shed_at, high))
        self.level = level
        self.unsent = unsent or level  # what the shedding stage watches (the backlog a connected broker has to take)
        self.high, self.shed_at, self.low, self.poll_s, self.lag_s = high, shed_at, low, poll_s, lag_s
        self.lag = 0.0  # how late the last tick ran (s)
        self.lagging = 0  # ticks that ran more than lag_s late
        self._calm = CALM_TICKS
        self._tick_at = 0.0
        self._ticker: asyncio.TimerHandle | None = None
        self.paused = False
        self.shedding = False
        self.pauses = 0
        self.paused_s = 0.0
        self._paused_at = 0.0
        self._readers: set[Reader] = set()
        self._open: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._relief: list[Callable[[], None]] = []

    def start(self) -> None:
        """Watch the event loop's lateness (the daemon calls this; stop() ends it)."""
        loop = asyncio.get_running_loop()
        self._tick_at = loop.time() + TICK_S
        self._ticker = loop.call_at(self._tick_at, self._tick)

    def stop(self) -> None:
        for h in (self._ticker, self._timer):
            if h is not None:
                h.cancel()
        self._ticker = self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.lag = now - self._tick_at
        if self.lag > self.lag_s:
            self.lagging += 1
            self._calm = 0
            if not self.shedding and self.shed_at < self.high and self.unsent() > self.low:
                self.shedding = True  # late with a backlog building: saturated, not a passing hiccup
                self._arm()
        else:
            self._calm += 1
        self._tick_at = now + TICK_S
        self._ticker = loop.call_at(self._tick_at, self._tick)

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
        if not self.shedding and self.shed_at < self.high and max(lvl, self.unsent()) > self.shed_at:
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
        lvl = self.level()
        if self.paused and lvl > self.low:
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
            if self._calm < CALM_TICKS or max(lvl, self.unsent()) > self.low:
                self._arm()
                return
            self.shedding = False
            for fn in self._relief:
                fn()

    def info(self) -> dict:
        return {"paused": self.paused, "shedding": self.shedding, "pauses": self.pauses,
                "lag_ms": round(1000 * self.lag, 1), "lagging_ticks": self.lagging,
                "paused_s": round(self.paused_s + (time.monotonic() - self._paused_at if self.paused else 0.0), 3),
                "level": self.level(), "unsent": self.unsent(), "high": self.high, "shed_at": self.shed_at, "low": self.low}
