"""The gateway's one observer mechanism: events for `tail`, the demo and tests.

Sessions publish device events (hello, online, event, telemetry, resync,
reboot) and the uplink adapter publishes alerts. A listener that raises is
counted and logged once per kind; it never reaches the link or the loop.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable

from gateway.seams import Listener

log = logging.getLogger("park.events")


class Faults:
    """Errors contained at a seam, counted by name and logged once per (where, kind, type)."""

    def __init__(self, name: str = "park.faults"):
        self.counts: collections.Counter = collections.Counter()
        self._seen: set = set()
        self._log = logging.getLogger(name)

    def record(self, where: str, exc: BaseException, device: str = "", what: str = "") -> None:
        kind = type(exc).__name__
        self.counts["%s_%s" % (where, kind)] += 1
        key = (where, kind, what)
        if key not in self._seen:
            self._seen.add(key)
            self._log.error("%s failed (%s) for device %s, message %s: %s; counted, not logged again",
                            where, kind, device or "-", what or "-", exc, exc_info=exc)

    def as_dict(self) -> dict:
        return dict(self.counts)


class EventBus:
    """Publish/subscribe for dict events; listeners run in the publisher's call."""

    def __init__(self, faults: Faults | None = None):
        self.listeners: list[Listener] = []
        self.faults = faults or Faults()

    def subscribe(self, fn: Listener) -> Callable[[], None]:
        self.listeners.append(fn)

        def unsubscribe() -> None:
            if fn in self.listeners:
                self.listeners.remove(fn)
        return unsubscribe

    def __bool__(self) -> bool:
        return bool(self.listeners)

    def publish(self, ev: dict) -> None:
        for fn in list(self.listeners):
            try:
                fn(ev)
            except Exception as e:  # noqa: BLE001 - an observer's bug must not stop the gateway
                self.faults.record("observer", e, ev.get("device", ""), ev.get("kind", ""))
