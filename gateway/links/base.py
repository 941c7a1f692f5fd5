"""What every link does: bytes in -> Deframer -> envelopes to the sessions; frames out.

A link owns its transport and reconnects by itself with capped exponential
backoff; it never gives up and never takes the daemon down with it. Framing
errors are counted per link and the link stays up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from typing import Callable

from protocol.cpython import Deframer  # the host deframer: whole frames split out in C

log = logging.getLogger("park.link")


class Backoff:
    """0.1 s doubling to `cap`, with jitter so boards on one hub do not reconnect in lockstep."""

    def __init__(self, cap: float = 30.0, base: float = 0.1):
        self.cap = cap
        self.base = base
        self.n = 0

    def reset(self) -> None:
        self.n = 0

    def next(self) -> float:
        d = min(self.cap, self.base * (2 ** self.n))
        self.n = min(self.n + 1, 30)
        return d * (0.75 + random.random() * 0.5)


class Link:
    """Base class; subclasses implement _session() (connect, read until lost) and write()."""

    kind = "link"

    def __init__(self, name: str, on_envelope: Callable, on_error: Callable, reconnect_max: float = 30.0):
        self.name = name
        self._on_envelope = on_envelope
        self._on_error = on_error
        self.deframer = Deframer()
        self.counters: collections.Counter = collections.Counter()
        self.connected = False
        self.connects = 0
        self.last_error = ""
        self.backoff = Backoff(reconnect_max)
        self._stopping = False
        self.pressure = None  # gateway.links.pressure.Backpressure, set by make_link: stop reading while it says so
        self.kids: set[bytes] = set()  # devices the sessions authenticated on this connection (its pressure class)

    def feed(self, data: bytes) -> bool:
        """Deframe and hand on; False once the backpressure says this link stops reading."""
        self.counters["rx_bytes"] += len(data)
        n = 0
        for env, err in self.deframer.feed(data):
            n += 1
            if err is None:
                self.counters["rx_frames"] += 1
                kid = self._on_envelope(self, env)
                if kid:
                    self.kids.add(kid)
            else:
                self._on_error(self, err)
        if self.pressure is not None:
            return self.pressure.check(self, n, len(data))
        return True

    def write(self, frame: bytes) -> None:
        raise NotImplementedError

    async def _session(self) -> None:
        """Connect, then read until the transport is lost (return or raise)."""
        raise NotImplementedError

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._session()
                if self.connected:
                    self.last_error = "closed by peer"
            except asyncio.CancelledError:
                self._down()
                raise
            except Exception as e:  # noqa: BLE001 - any transport failure means: reconnect
                self.last_error = "%s: %s" % (type(e).__name__, e)
                log.debug("link %s: %s", self.name, self.last_error)
            was = self.connected
            self._down()
            if was:
                self.backoff.reset()
                log.warning("link %s lost (%s); reconnecting", self.name, self.last_error)
            await asyncio.sleep(self.backoff.next())

    def _up(self) -> None:
        self.connected = True
        self.connects += 1
        self.deframer.reset()
        self.kids.clear()  # a new connection: its devices authenticate again
        log.info("link %s up", self.name)

    def _down(self) -> None:
        self.connected = False
        self.deframer.reset()

    def stop(self) -> None:
        self._stopping = True

    def info(self) -> dict:
        return {"name": self.name, "kind": self.kind, "connected": self.connected, "connects": self.connects,
                "last_error": self.last_error, "counters": dict(self.counters)}
