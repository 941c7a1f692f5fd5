"""Ingress backpressure: the links slow down while the gateway has too much unfinished work.

`level()` counts messages taken in, not finished and held in memory (the uplink's backlog:
not yet committed, or committed and waiting in memory for a connected broker); `unsent()`
counts what a connected broker still has to take (the outbox's depth, disk included). Two
stages, with hysteresis:

- shedding, with `unsent()` or the level above `shed_at`, or above `low` while the event
  loop runs more than `lag_s` late (the CPU is saturated: pre-lights would wait): telemetry
  for the backbone is coalesced to the newest message per device and type (daemon.Out); the
  control loops still see every message, and events are never shed;
- paused, with the level above `high`: every bulk link stops reading. TCP and serial leave
  the bytes in the kernel, whose window pushes back on the sender; the TCP server also stops
  reading new connections; the BLE pool connects no new bulk device. Devices retransmit
  the events nobody acked. Latency-class links read on, each within an allowance (below).

Latency class: a link (a TCP connection, a stream, a serial port) whose authenticated devices
are all of a role in LATENCY_ROLES by the registry (light poles: motion -> pre-light is a local
control loop; lockers: a person at the door), as the sessions proved by a valid MAC. A link
with no authenticated device yet, or with one of another role, is bulk: nothing a device says
about itself makes it latency class. Each latency link reading through a pause has a token
bucket (ALLOWANCE_RATE frames/s and ALLOWANCE_BURST frames per device on it; a read costs at
least one frame per FRAME_BYTES): a pole sends a few frames a minute, so only a flooding or
compromised one spends it, and that link then pauses like a bulk one until the pause ends
(`over_allowance`). `read_through` counts the frames latency links read while paused.

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
LATENCY_ROLES = frozenset(("light_pole", "locker"))  # registry roles whose links read through a pause
ALLOWANCE_RATE = 1.0  # frames/s per device a latency link may read while paused (a pole sends a few a minute)
ALLOWANCE_BURST = 10  # frames per device: a walker's motion and the acks of its pre-lights
FRAME_BYTES = 256  # a read costs at least one frame per this many bytes: bytes without frames are not free


class Reader(Protocol):
    kids: set[bytes]  # the devices the sessions authenticated on it (its class)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _no_role(kid: bytes) -> str | None:
    return None


class Lane:
    """A latency link's token bucket (frames) while it reads through a pause."""

    __slots__ = ("tokens", "at", "devices")

    def __init__(self, devices: int, now: float, burst: float):
        self.devices = devices  # authenticated devices its class was decided on (the allowance is for at least one)
        self.tokens = burst * max(1, devices)
        self.at = now

    def spend(self, cost: int, now: float, rate: float, burst: float) -> bool:
        n = max(1, self.devices)
        self.tokens = min(burst * n, self.tokens + (now - self.at) * rate * n) - cost
        self.at = now
        return self.tokens >= 0


class Backpressure:
    """See the module docstring. One per daemon; links attach their readers."""

    def __init__(self, level: Callable[[], int], *, high: int = HIGH, shed_at: int = SHED_AT, low: int = LOW,
                 poll_s: float = POLL_S, lag_s: float = LAG_S, unsent: Callable[[], int] | None = None,
                 role_of: Callable[[bytes], str | None] = _no_role, rate: float = ALLOWANCE_RATE,
                 burst: float = ALLOWANCE_BURST):
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
        self._timer: asyncio.TimerHandle | None = None
        self._relief: list[Callable[[], None]] = []
        self.role_of = role_of  # the registry's role of an authenticated kid (the daemon's device table)
        self.rate, self.burst = rate, burst
        self._lanes: dict[Reader, Lane] = {}  # latency links reading through the current pause
        self.read_through = 0
        self.over_allowance = 0

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
        if self.paused and not self._admit(r):
            r.pause_reading()

    def detach(self, r: Reader) -> None:
        self._readers.discard(r)
        self._lanes.pop(r, None)

    def latency(self, r) -> bool:
        """True for a link whose authenticated devices are all of a latency role (none: bulk)."""
        kids = r.kids
        if not kids:
            return False
        roles, role_of = LATENCY_ROLES, self.role_of
        return all(role_of(k) in roles for k in kids)

    def latency_role(self, role: str | None) -> bool:
        return role in LATENCY_ROLES

    def may_read(self, r) -> bool:
        """Whether `r` may read now: no pause, or a latency link within its allowance."""
        return not self.paused or r in self._lanes

    def open_lane(self, r) -> None:
        """Let `r` read through the current pause within one device's allowance, its class decided again
        once a device authenticates on it (the BLE pool's connection of a pole or locker by its advertised
        id; attached links get theirs from the pause itself)."""
        if self.paused and r not in self._lanes:
            self._lanes[r] = Lane(0, time.monotonic(), self.burst)

    def _admit(self, r) -> bool:
        if not self.latency(r):
            return False
        self._lanes[r] = Lane(len(r.kids), time.monotonic(), self.burst)
        return True

    def check(self, r=None, frames: int = 0, nbytes: int = 0) -> bool:
        """After a read of `frames` frames and `nbytes` bytes by `r`: enter a stage if the level passed its mark;
        while paused, charge a latency link's allowance. True while `r` may read on."""
        if self.paused:
            return r is not None and self._spend(r, frames, nbytes)
        lvl = self.level()
        if not self.shedding and self.shed_at < self.high and max(lvl, self.unsent()) > self.shed_at:
            self.shedding = True
            self._arm()
        if lvl > self.high:
            self._pause(lvl)
            return r is not None and r in self._lanes
        return True

    def _spend(self, r, frames: int, nbytes: int) -> bool:
        lane = self._lanes.get(r)
        if lane is None:
            return False
        cost = max(frames, nbytes // FRAME_BYTES)
        self.read_through += frames
        if len(r.kids) != lane.devices:  # another device authenticated on it: the roles decide again
            if not self.latency(r):
                del self._lanes[r]
                r.pause_reading()
                return False
            lane.devices = len(r.kids)
        if lane.spend(cost, time.monotonic(), self.rate, self.burst):
            return True
        del self._lanes[r]
        self.over_allowance += 1
        log.warning("backpressure: link %s read past its allowance (%g frames/s per device) while paused; it "
                    "pauses too", getattr(r, "name", "?"), self.rate)
        r.pause_reading()
        return False

    def _pause(self, lvl: int) -> None:
        self.paused = True
        self.pauses += 1
        self._paused_at = time.monotonic()
        for r in list(self._readers):
            if not self._admit(r):
                r.pause_reading()
        log.info("backpressure: %d messages unfinished (high-water mark %d); bulk links stop reading, %d "
                 "latency links read on within their allowance", lvl, self.high, len(self._lanes))
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
            self._lanes.clear()
            self.paused_s += time.monotonic() - self._paused_at
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
                "reading_through": len(self._lanes), "read_through": self.read_through,
                "over_allowance": self.over_allowance,
                "level": self.level(), "unsent": self.unsent(), "high": self.high, "shed_at": self.shed_at, "low": self.low}
